"""The per-core rates the billion-vector plan (docs/scale.md) extrapolates from, measured here.

    python bench/distributed/rates.py          # writes bench/distributed/results/rates.json

- k-means: one Lloyd iteration's FLOP rate (``2 n k d`` per iteration) of pqkit's k-means,
  163,840 x 128 vectors into 4,096 centroids (4 iterations minus 1, so the set-up is not counted).
- coarse search: the FLOP rate (``2 nq nlist d``) of ranking 65,536 centroids of d = 128 for
  2,000 queries and keeping 64 (an IVF65536 coarse search at nprobe = 64).
- save / load / SHA-256: seconds per GiB of writing, reading and hashing a pqkit file of an
  IVF-PQ index (1M x 128, PQ32x8, about 45 MiB), from the page cache (a shared file system is
  slower: the plan says so).

Each rate is measured with 1 thread and with every core (``os.cpu_count()``); the best of three
runs. Nothing else may run on the machine meanwhile. Never imported by the package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def best_of(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; rates mean nothing)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import pqkit

    n, k, d, n_file = (40 * 4096, 4096, 128, 1_000_000) if not args.quick else (40 * 64, 64, 16, 20_000)
    nq, nlist, nprobe = (2000, 65536, 64) if not args.quick else (50, 512, 8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    centroids = rng.standard_normal((nlist, d), dtype=np.float32)
    queries = rng.standard_normal((nq, d), dtype=np.float32)
    result = {"name": "rates", "pqkit": pqkit.__version__, "simd": pqkit.simd_level(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_start": list(os.getloadavg())}, "rows": []}
    for threads in sorted({1, os.cpu_count() or 1}):
        # the rate of the iterations alone: (time of 4 iterations - time of 1) / 3
        one = best_of(lambda: pqkit.KMeans(d, k, niter=1, seed=0, n_threads=threads).train(x))
        four = best_of(lambda: pqkit.KMeans(d, k, niter=4, seed=0, n_threads=threads).train(x))
        seconds = (four - one) / 3
        result["rows"].append({"what": "kmeans_iteration", "threads": threads, "seconds": seconds,
                               "gflops": 2 * n * k * d / seconds / 1e9, "shape": [n, k, d]})
        flat = pqkit.IndexFlat(d, n_threads=threads)
        flat.add(centroids)
        seconds = best_of(lambda: flat.search(queries, nprobe))
        result["rows"].append({"what": "coarse_search", "threads": threads, "seconds": seconds,
                               "gflops": 2 * nq * nlist * d / seconds / 1e9,
                               "ms_per_query": 1e3 * seconds / nq, "shape": [nq, nlist, d, nprobe]})
        print(json.dumps(result["rows"][-2:]), flush=True)

    index = pqkit.IndexIVFPQ(d, 1024 if not args.quick else 16, d // 4, 8)
    index.train(rng.standard_normal((40 * 1024 if not args.quick else 40 * 256, d), dtype=np.float32))
    for start in range(0, n_file, 200_000):
        index.add(rng.standard_normal((min(200_000, n_file - start), d), dtype=np.float32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.pqkit"
        save_s = best_of(lambda: pqkit.io.save(index, path, overwrite=True))
        size = path.stat().st_size
        load_s = best_of(lambda: pqkit.io.load(path))

        def digest():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            return h.hexdigest()

        sha_s = best_of(digest)
    gib = size / 2**30
    for what, seconds in (("save", save_s), ("load", load_s), ("sha256", sha_s)):
        result["rows"].append({"what": what, "threads": 1, "seconds": seconds, "bytes": size,
                               "seconds_per_gib": seconds / gib})
    print(json.dumps(result["rows"][-3:]), flush=True)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    out = Path(args.out) if args.out else HERE / "results" / ("rates-quick.json" if args.quick else "rates.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
