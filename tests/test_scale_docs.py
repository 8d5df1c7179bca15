"""docs/scale.md is generated from the stored distributed results: it must be current, and its
extrapolations must follow from the stored rates by the arithmetic the page states."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "distributed" / "results"


def _report():
    spec = importlib.util.spec_from_file_location("distributed_report", ROOT / "bench" / "distributed" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stored():
    return [json.loads((RESULTS / f"{name}.json").read_text()) for name in ("bench", "synthetic-10m", "rates")]


def test_scale_page_is_generated_from_the_stored_results():
    report = _report()
    assert (ROOT / "docs" / "scale.md").read_text() == report.render_docs(), (
        "docs/scale.md is stale: run python bench/distributed/report.py --docs")


def test_build_time_follows_from_the_measured_add_rate():
    report = _report()
    bench, tenm, rates = _stored()
    values = report.scale_values(bench, tenm, rates)
    by_id = next(r for r in tenm["rows"] if r["by"] == "id")
    per_core = by_id["add_vectors_per_s_per_shard"] / tenm["shard_cpus"] / 16
    assert float(values["build_h_id"]) == pytest.approx(1e9 / (64 * per_core) / 3600, abs=0.05)
    # twice the add rate halves the extrapolated build time
    faster = copy.deepcopy(tenm)
    for row in faster["rows"]:
        row["add_vectors_per_s_per_shard"] *= 2
    halved = report.scale_values(bench, faster, rates)
    assert float(halved["build_h_id"]) == pytest.approx(float(values["build_h_id"]) / 2, abs=0.06)


def test_a_missing_rate_is_named():
    report = _report()
    bench, tenm, rates = _stored()
    rates = {**rates, "rows": [r for r in rates["rows"] if r["what"] != "sha256"]}
    with pytest.raises(SystemExit, match="sha256"):
        report.scale_values(bench, tenm, rates)
