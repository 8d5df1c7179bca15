"""bench/flat_blas.py --quick (a correctness run of the exact-search benchmark, not a timing) and
its section of docs/performance.md (bench/report.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import bench_module


def test_quick_run_stores_raw_results_and_draws_the_report(tmp_path, capsys):
    pytest.importorskip("faiss")
    pytest.importorskip("threadpoolctl")
    out = tmp_path / "flat_blas.json"
    assert bench_module("flat_blas").main(["--quick", "--out", str(out), "--dims", "50", "1280"]) == 0
    raw = json.loads(out.read_text())
    assert raw["meta"]["quick"] is True and raw["meta"]["faiss_simd_level"]
    rows = raw["rows"]
    # 2 dims x 2 metrics x 2 thread counts, every method timed in both modes
    assert [(r["d"], r["metric"], r["threads"]) for r in rows] == [
        (d, m, t) for d in (50, 1280) for m in ("l2", "ip") for t in (1, 2)]
    for row in rows:
        assert row["dataset"] == f"gaussian-{row['d']}"
        for mode in ("batch", "single"):
            assert sorted(row["seconds"][mode]) == ["faiss", "numpy", "pqkit"]
            assert all(len(s) == 1 and s[0] > 0 for s in row["seconds"][mode].values())
        assert row["ids_equal_to_faiss"] > 0.99  # Gaussian data: no near-ties at k = 10
    lines = bench_module("report").flat_blas_lines(raw)
    assert len(lines) == 4 + len(rows)
    assert lines[4].startswith("| gaussian-50 (2,000 rows, 20 queries) | 50 | l2 | 1 |")
    assert "raw results" in capsys.readouterr().out
