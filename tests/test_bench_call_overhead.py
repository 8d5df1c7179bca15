"""bench/call_overhead.py --quick (a correctness run of the per-call benchmark, not a timing) and
its section of docs/performance.md (bench/report.py)."""

from __future__ import annotations

import json

from tests.conftest import bench_module


def test_quick_run_stores_raw_results_and_draws_the_report(tmp_path, capsys):
    out = tmp_path / "call_overhead.json"
    raw = bench_module("call_overhead").main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(raw))
    assert raw["meta"]["quick"] is True and raw["meta"]["faiss_simd_level"]
    assert [r["case"] for r in raw["rows"]] == ["IndexFlat", "IVF-PQ", "IVF-PQ re-ranked"]
    for row in raw["rows"]:
        assert set(row["seconds"]) == {"pqkit", "faiss"}
        assert all(len(s) == raw["meta"]["repeats"] and min(s) > 0 for s in row["seconds"].values())
    # exact search finds the same neighbours in both libraries
    assert raw["rows"][0]["same_ids"] is True
    lines = bench_module("report").call_overhead_lines(raw)
    assert len(lines) == 4 + len(raw["rows"])
    assert lines[4].startswith("| IndexFlat (`Flat`) | 100 | 128 |") and lines[4].endswith("x |")
    assert "nprobe 1, k_factor 4" in lines[6]
