"""bench/speed2.py and bench/speed2_report.py: the picking logic on made-up rows, and the quick run.

The quick run builds every library of ``bench/configs/speed2/quick.json`` on 4,000 vectors,
times two short rounds and writes the raw file, the Markdown report and the plot. Its timings
mean nothing; the test checks the harness, not speed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def report_module():
    sys.path.insert(0, str(BENCH))
    try:
        import speed2_report

        yield speed2_report
    finally:
        sys.path.remove(str(BENCH))


def row(library, recall, batch_qps, bytes_per_vector=100.0, latency_us=100.0, timed=True, config="c"):
    return {"library": library, "recall": recall, "batch_qps": batch_qps, "single_latency_us": latency_us,
            "bytes_per_vector": bytes_per_vector, "timed": timed, "config": config, "query_params": {}}


def test_pick_fastest_takes_the_fastest_row_that_reaches_the_target(report_module):
    rows = [row("a", 0.95, 500.0), row("a", 0.85, 900.0), row("a", 0.9, 700.0), row("a", 0.99, 100.0)]
    pick = report_module.pick_fastest
    assert pick(rows, 0.8, "batch") is rows[1]
    assert pick(rows, 0.9, "batch") is rows[2]
    assert pick(rows, 0.95, "batch") is rows[0]
    assert pick(rows, 0.99, "batch") is rows[3]
    assert pick(rows, 0.995, "batch") is None  # no row reaches it


def test_pick_fastest_counts_a_row_exactly_at_the_target(report_module):
    rows = [row("a", 0.9, 10.0), row("a", 0.9 - 1e-6, 1000.0)]
    assert report_module.pick_fastest(rows, 0.9, "batch") is rows[0]


def test_pick_fastest_ignores_untimed_rows_and_filters_library_and_memory(report_module):
    rows = [row("pqkit", 0.9, 100.0, 50.0), row("pqkit", 0.9, 900.0, 300.0),
            row("faiss", 0.9, 5000.0, timed=False), row("faiss", 0.92, 400.0, 240.0)]
    pick = report_module.pick_fastest
    assert pick(rows, 0.9, "batch", exclude="pqkit") is rows[3]  # the untimed faiss row never counts
    assert pick(rows, 0.9, "batch", library="pqkit") is rows[1]
    assert pick(rows, 0.9, "batch", library="pqkit", max_bytes_per_vector=80.0) is rows[0]
    assert pick(rows, 0.9, "batch", library="pqkit", max_bytes_per_vector=10.0) is None


def test_single_mode_picks_the_lowest_latency(report_module):
    rows = [row("a", 0.9, 900.0, latency_us=50.0), row("a", 0.9, 100.0, latency_us=20.0)]
    assert report_module.pick_fastest(rows, 0.9, "single") is rows[1]
    assert report_module.pick_fastest(rows, 0.9, "batch") is rows[0]
    with pytest.raises(ValueError, match="unknown mode"):
        report_module.pick_fastest(rows, 0.9, "median")


def test_tables_give_the_ratio_to_the_best_other_library(report_module):
    rows = [row("pqkit", 0.96, 3000.0, 30.0), row("pqkit", 0.91, 8000.0, 300.0),
            row("faiss", 0.95, 2000.0, 240.0), row("scann", 0.9, 4000.0, 120.0), row("hnswlib", 0.99, 500.0, 400.0)]
    speed = {entry["target"]: entry for entry in report_module.speed_table(rows, (0.9, 0.95, 0.99), "batch")}
    assert speed[0.9]["other"] is rows[3] and speed[0.9]["ours"] is rows[1]
    assert speed[0.9]["ratio"] == pytest.approx(2.0)
    assert speed[0.95]["other"] is rows[2] and speed[0.95]["ratio"] == pytest.approx(1.5)
    assert speed[0.99]["ours"] is None and speed[0.99]["ratio"] is None
    assert speed[0.99]["picks"]["hnswlib"] is rows[4]
    memory = {entry["target"]: entry for entry in report_module.memory_table(rows, (0.9, 0.95), "batch")}
    assert memory[0.9]["ours"] is rows[0]  # 30 B <= 120 / 3; the 300 B row is too big
    assert memory[0.9]["ratio"] == pytest.approx(0.75)
    assert memory[0.95]["ours"] is rows[0] and memory[0.95]["ratio"] == pytest.approx(1.5)


def test_keep_step_drops_only_points_beaten_at_no_more_memory():
    sys.path.insert(0, str(BENCH))
    try:
        import speed2
    finally:
        sys.path.remove(str(BENCH))
    rows = [{"recall": 0.95, "pilot_qps": 1000.0, "bytes_per_vector": 100.0},
            {"recall": 0.95, "pilot_qps": 500.0, "bytes_per_vector": 100.0},   # beaten: dropped
            {"recall": 0.95, "pilot_qps": 500.0, "bytes_per_vector": 30.0},    # slower but smaller: kept
            {"recall": 0.96, "pilot_qps": 900.0, "bytes_per_vector": 100.0}]   # within the slack: kept
    assert speed2.keep_points(rows, [0.9, 0.95], slack=1.25) == {0, 2, 3}


def test_quick_run_writes_raw_rows_report_and_plot(tmp_path):
    for module in ("faiss", "scann", "hnswlib", "usearch", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            skip_or_fail(f"{module} is not installed: pip install '.[bench]'")
    out = tmp_path / "raw" / "speed2-quick.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / "speed2.py"), "--quick", "--rounds", "2", "--queries", "200",
         "--single-queries", "10", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads(out.read_text())
    assert raw["kind"] == "speed2" and raw["completed"] == "threads"
    assert raw["unavailable"] == {}
    libraries = {r["library"] for r in raw["rows"]}
    assert libraries == {"pqkit", "faiss", "scann", "hnswlib", "usearch"}
    for r in raw["rows"]:
        assert 0.0 <= r["recall"] <= 1.0 and r["bytes_per_vector"] > 0
        if r["timed"]:
            assert len(r["batch_seconds"]) == 2 and r["batch_qps"] > 0 and r["single_latency_us"] > 0
    assert {r["library"] for r in raw["rows"] if r["timed"]} == libraries
    faiss_levels = {r["simd_level"] for r in raw["rows"] if r["library"] == "faiss"}
    assert "NONE" in faiss_levels and len(faiss_levels) >= 2  # every level searched the same index
    assert raw["threads"] and all(t["batch_qps_2"] > 0 and t["single_latency_us_2"] > 0 for t in raw["threads"])
    # the thread step again, alone, on the stored rows: new timings, the same points, other rows kept
    again = subprocess.run(
        [sys.executable, str(BENCH / "speed2.py"), "--quick", "--rounds", "1", "--threads-only",
         "--no-report", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads(out.read_text())
    assert rerun["rows"] == raw["rows"] and rerun["settings"]["threads_rounds"] == 1
    assert [(t["config"], t["query_params"]) for t in rerun["threads"]] == \
        [(t["config"], t["query_params"]) for t in raw["threads"]]
    assert all(len(t["seconds"]["batch_1"]) == 1 for t in rerun["threads"])
    text = (tmp_path / "speed2-quick.md").read_text()
    assert "Fastest configuration per target, batch QPS" in text and "At a third of the memory" in text
    header = text.split("**Fastest configuration per target, batch QPS**")[1].split("\n")[2]
    assert all(f" {library} |" in header for library in libraries)
    assert (tmp_path / "speed2-quick.png").stat().st_size > 1000
    # report.py --docs draws the same tables into the documentation page, with the plot linked
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    section = "\n".join(report.speed2_section(tmp_path / "raw", tmp_path / "out", tmp_path / "docs" / "page.md"))
    assert "### quick-4k-16" in section and "](../out/speed2-quick.png)" in section
    assert "Fastest configuration per target, single-query latency" in section
    assert "No results stored yet" in "\n".join(report.speed2_section(tmp_path / "empty", tmp_path, tmp_path))


def test_unavailable_library_is_reported_not_raised(tmp_path, monkeypatch):
    import argparse

    monkeypatch.syspath_prepend(str(BENCH))
    import adapters
    import speed2

    assert Path(speed2.datasets.__file__).parent == BENCH  # the bench module, not a namesake
    monkeypatch.setattr(adapters.ScannIndex, "requires", "no_such_module_for_pqkit_bench")
    config = {"targets": [0.5, 0.9], "algorithms": [
        {"adapter": "scann", "build": {"num_leaves": 8}, "query": {"leaves_to_search": [2]}},
        {"adapter": "pqkit-factory", "build": {"factory": "IVF8,PQ4x4,RFlat"},
         "query": {"nprobe": [1, 8], "k_factor": [4]}}]}
    args = argparse.Namespace(queries=50, batch_size=1000, single_queries=5, rounds=1, slack=1.25,
                              build_threads=1, no_threads=False)
    data = speed2.quick_dataset()
    raw = speed2.run(config, data, args, tmp_path / "raw.json", log=lambda message: None)
    assert "no_such_module_for_pqkit_bench" in raw["unavailable"]["scann"]
    assert {r["library"] for r in raw["rows"]} == {"pqkit"} and len(raw["rows"]) == 2
    assert json.loads((tmp_path / "raw.json").read_text())["completed"] == "threads"
    text = "\n".join(speed2.speed2_report.markdown_lines(raw))
    assert "Not measured: scann:" in text


@pytest.mark.parametrize("name,d", [("glove", 50), ("fashion", 784), ("synthetic", 128), ("quick", 16)])
def test_dataset_grids_name_known_adapters_and_valid_factory_strings(name, d, monkeypatch):
    import faiss

    import pqkit

    monkeypatch.syspath_prepend(str(BENCH))
    import adapters
    import speed2

    config = json.loads((BENCH / "configs" / "speed2" / f"{name}.json").read_text())
    assert config["targets"] == [0.8, 0.9, 0.95, 0.99]
    pqkit_factories = [build["factory"] for spec in config["algorithms"] if spec["adapter"] == "pqkit-factory"
                       for build in speed2.expand(spec["build"])]
    assert any("Refine(PQ" in factory for factory in pqkit_factories)  # configurations without raw vectors
    for spec in config["algorithms"]:
        assert spec["adapter"] in adapters.ADAPTERS
        assert speed2.query_grid(spec["adapter"], spec.get("query", {}))
        for build in speed2.expand(spec["build"]):
            adapters.make_adapter(spec["adapter"], **build)  # the constructor accepts every parameter
            if spec["adapter"] == "pqkit-factory":
                pqkit.index_factory(d, build["factory"])
            elif spec["adapter"] == "faiss-factory":
                faiss.index_factory(d, build["factory"])


def test_pqkit_adapter_build_options_reach_the_first_stage_pq():
    """A build option of the pqkit adapter sets the first-stage PQ's attribute (it once landed
    on the index as a stray attribute and the build ran plain PQ); an unknown one raises."""
    import numpy as np

    sys.path.insert(0, str(BENCH))
    try:
        import adapters
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1000, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    built = adapters.PqkitFactory("IVF4,PQ4x4,RFlat", metric="ip", anisotropic_eta=3.0)
    built.fit(base)
    assert built.index.base_index.pq.anisotropic_eta == 3.0
    assert "anisotropic_eta" not in vars(built.index.base_index)
    with pytest.raises(ValueError, match="no_such_option"):
        adapters.PqkitFactory("IVF4,PQ4x4", metric="ip", no_such_option=1).fit(base)
