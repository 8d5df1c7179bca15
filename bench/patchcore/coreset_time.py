"""Time of the greedy k-center coreset (``pqkit.patchcore.coreset_indices``, method "v1") on a
synthetic bank the size the issue names: 200,000 patch features of 128 dimensions, keeping 1 %
(and optionally more). Prints one Markdown row per setting; the median of ``--repeats`` runs.

    python bench/patchcore/coreset_time.py [--n 200000] [--d 128] [--keep 0.01 0.1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import pqkit
from pqkit.patchcore.coreset import coreset_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--keep", type=float, nargs="+", default=[0.01])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pqkit.set_num_threads(args.threads)
    features = np.random.default_rng(0).standard_normal((args.n, args.d), dtype=np.float32)
    print(f"| patches | dim | kept | centres | threads | median s (of {args.repeats}) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for keep in args.keep:
        n_select = max(1, round(keep * args.n))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            coreset_indices(features, n_select, method="v1", seed=0)
            times.append(time.perf_counter() - start)
        print(f"| {args.n} | {args.d} | {keep:.1%} | {n_select} | {args.threads} | "
              f"{statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
