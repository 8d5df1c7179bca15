"""The command line: ``python -m pqkit demo`` and ``pqkit.__main__.main``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pqkit.__main__ import main, recall_at_k


def test_demo_prints_the_table(capsys):
    assert main(["demo", "--n", "3000", "--d", "16", "--nq", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("IndexFlat", "IndexPQ", "IndexIVFFlat", "IndexIVFPQ", "10-recall@10", "QPS", "ms/query",
                 "memory MB", "simd level", "threads"):
        assert name in out, (name, out)
    flat_row = next(line for line in out.splitlines() if line.startswith("IndexFlat"))
    assert "1.000" in flat_row


def test_demo_via_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "pqkit", "demo", "--n", "2000", "--d", "8", "--nq", "10"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "IndexIVFPQ" in result.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_option_exits_with_usage():
    with pytest.raises(SystemExit) as err:
        main(["demo", "--n", "0"])
    assert err.value.code == 2


def test_recall_at_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [-1, -1, -1]])
    assert recall_at_k(found, truth) == pytest.approx(2 / 6)
