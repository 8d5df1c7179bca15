"""Quick, load-tolerant speed check: pqkit vs faiss on the *same* index, one process per faiss level.

    python bench/spot_check.py [--levels AVX512_SPR AVX2] [--out bench/results/raw/spot_check.json]

faiss trains IndexPQ (PQ16x8, PQ56x8) and IndexIVFPQ (IVF100,PQ16x8) on Fashion-MNIST; pqkit gets
the same codebooks, centroids and codes through ``pqkit.from_faiss``, so recall is equal by
construction and only speed differs. Times are the minimum over repeats (robust to other work on
the machine; the full harness, ``bench/run.py``, reports medians), 1 thread, batch (200 queries)
and single-query (one query per call). faiss picks its SIMD level once per process, so every level
runs in its own child process (``FAISS_SIMD_LEVEL``); the parent only collects the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tmin(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _child() -> list[dict]:
    import faiss
    import numpy as np

    import pqkit
    from pqkit.datasets import load_fashion_mnist

    base, queries = load_fashion_mnist()[:2]
    queries = np.ascontiguousarray(queries[:200])
    faiss.omp_set_num_threads(1)
    pqkit.set_num_threads(1)
    level = faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else "?"
    singles = [queries[i:i + 1] for i in range(50)]
    rows = []

    def measure(name, theirs, ours, params):
        _, ids_f = theirs.search(queries, 10)
        _, ids_p = ours.search(queries, 10)
        batch_f = _tmin(lambda: theirs.search(queries, 10), 20) / len(queries)
        batch_p = _tmin(lambda: ours.search(queries, 10), 20) / len(queries)
        single_f = _tmin(lambda: [theirs.search(q, 10) for q in singles], 10) / len(singles)
        single_p = _tmin(lambda: [ours.search(q, 10) for q in singles], 10) / len(singles)
        row = {"index": name, **params, "faiss_simd_level": level, "same_ids": float(np.mean(ids_f == ids_p)),
               "batch_us_faiss": batch_f * 1e6, "batch_us_pqkit": batch_p * 1e6,
               "single_us_faiss": single_f * 1e6, "single_us_pqkit": single_p * 1e6}
        rows.append(row)
        print(f"{level:10s} {name:22s} {params} same ids {row['same_ids']:.4f} | batch us/query faiss "
              f"{row['batch_us_faiss']:7.1f} pqkit {row['batch_us_pqkit']:7.1f} ({batch_f / batch_p:4.2f}x) | "
              f"single us faiss {row['single_us_faiss']:7.1f} pqkit {row['single_us_pqkit']:7.1f} "
              f"({single_f / single_p:4.2f}x)", flush=True)

    for M in (16, 56):
        theirs = faiss.IndexPQ(784, M, 8)
        theirs.train(base[:20000])
        theirs.add(base)
        measure(f"IndexPQ PQ{M}x8", theirs, pqkit.from_faiss(theirs), {})
    theirs = faiss.IndexIVFPQ(faiss.IndexFlatL2(784), 784, 100, 16, 8)
    theirs.train(base[:20000])
    theirs.add(base)
    ours = pqkit.from_faiss(theirs)
    for nprobe in (1, 4, 16, 64):
        theirs.nprobe = ours.nprobe = nprobe
        measure("IndexIVFPQ IVF100,PQ16x8", theirs, ours, {"nprobe": nprobe})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", nargs="+", default=["AVX512_SPR", "AVX2"], help="FAISS_SIMD_LEVEL values")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "raw" / "spot_check.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("ROWS " + json.dumps(_child()))
        return 0
    rows = []
    for level in args.levels:
        env = {**os.environ, "FAISS_SIMD_LEVEL": level}
        proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("ROWS "):
                rows.extend(json.loads(line[5:]))
            else:
                print(line)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1))
    print(f"raw rows: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
