"""bench/gpu/run.py --cpu-smoke: the whole GPU benchmark script on CPU torch, tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pqkit import engine
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_smoke_run_and_report(tmp_path):
    if "torch" not in engine.available_backends():
        skip_or_fail("the gpu extra is not installed: pip install 'pqkit[gpu]'")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "run.py"), "--cpu-smoke",
                           "--out", str(tmp_path), "--repeats", "1"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    raw = json.loads((tmp_path / "gpu-smoke.json").read_text())
    assert raw["smoke"] is True and set(raw["datasets"]) == {"glove-50", "synthetic-10m-96"}
    assert set(raw["missing"]) == {"faiss-gpu", "cuvs"}
    for name, entry in raw["datasets"].items():
        assert entry["d"] == (60 if name == "glove-50" else 96) and not entry.get("errors")
        rows = entry["rows"]
        assert {r["library"] for r in rows} == {"pqkit-torch"}
        assert {(r["nprobe"], r["k_factor"]) for r in rows} == {(1, 1), (8, 1), (1, 4), (8, 4)}
        assert all(0 <= r["recall10"] <= 1 and r["qps"] > 0 for r in rows)
        # every list probed and the exact re-ranking: the recall of an exhaustive search
        assert max(r["recall10"] for r in rows if r["k_factor"] == 4) >= 0.95
        assert entry["kmeans"]["pqkit-torch"] > 0 and entry["build"]["pqkit-torch"]["add_s"] > 0
    assert "| pqkit-torch |" in done.stdout and "QPS at recall >= 0.95" in done.stdout
    report = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "report.py"),
                             str(tmp_path / "gpu-smoke.json")], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0 and "CPU smoke run" in report.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "report.py"),
                              str(tmp_path / "none.json")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("bench/gpu/report.py: error:")
