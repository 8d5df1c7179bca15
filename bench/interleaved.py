"""pqkit vs faiss on one configuration, timed in alternation in one process.

    python bench/interleaved.py --dataset glove-50-angular --pqkit IVF1024,PQ50x4,RFlat \\
        --faiss IVF1024,PQ50x4fs,RFlat --nprobe 16 --k-factor 4
    python bench/interleaved.py --pqkit PQ10 --faiss PQ10 --queries 200   # no IVF: nprobe unused

Both libraries build their index from the same base vectors (each trains its own), then the same
query batch is searched by pqkit and by faiss in turn, ``--rounds`` times, 1 thread each. Machine
noise that lasts seconds hits both alike, which a harness running the libraries one after the
other (``run.py``) cannot promise. Prints each library's recall (10-recall@10), the minimum and
median microseconds per query, the ratio of the minima and the median of the per-round ratios
(> 1: pqkit is faster). faiss runs at the SIMD level it picked at import (``FAISS_SIMD_LEVEL``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="glove-50-angular", help="a bench/datasets.py name")
    parser.add_argument("--pqkit", required=True, help="pqkit factory string, e.g. IVF1024,PQ50x4,RFlat")
    parser.add_argument("--faiss", required=True, help="faiss factory string, e.g. IVF1024,PQ50x4fs,RFlat")
    parser.add_argument("--nprobe", type=int, default=1)
    parser.add_argument("--k-factor", type=float, default=1.0, help="refine factor (both libraries)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per batch")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    if min(args.nprobe, args.queries, args.rounds) < 1 or args.k_factor < 1:
        parser.error("--nprobe, --queries, --rounds must be >= 1 and --k-factor >= 1")

    import datasets
    import faiss
    from run import recall_at

    import pqkit

    faiss.omp_set_num_threads(1)
    pqkit.set_num_threads(1)
    ds = datasets.load(args.dataset)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries[:args.queries], dtype=np.float32)
    truth = ds.ground_truth[:len(queries), :10]
    d = base.shape[1]

    ours = pqkit.index_factory(d, args.pqkit)
    ours.train(base)
    ours.add(base)
    ivf = getattr(ours, "base_index", ours)
    if hasattr(ivf, "nprobe"):  # IVF indexes only (an IndexPQ scans every code)
        ivf.nprobe = args.nprobe
    if hasattr(ours, "k_factor"):
        ours.k_factor = args.k_factor
    theirs = faiss.index_factory(d, args.faiss)
    theirs.train(base)
    theirs.add(base)
    inner = faiss.downcast_index(theirs.base_index) if hasattr(theirs, "base_index") else theirs
    inner_ivf = faiss.try_extract_index_ivf(inner)
    if inner_ivf is not None:
        inner_ivf.nprobe = args.nprobe
    if hasattr(theirs, "k_factor"):
        theirs.k_factor = args.k_factor

    times = {"pqkit": [], "faiss": []}
    found = {}
    for _ in range(args.rounds):
        for name, index in (("pqkit", ours), ("faiss", theirs)):
            start = time.perf_counter()
            found[name] = index.search(queries, 10)[1]
            times[name].append(time.perf_counter() - start)
    level = faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else "unknown"
    print(f"{args.dataset}: pqkit {args.pqkit} vs faiss {args.faiss} (level {level}), nprobe {args.nprobe}, "
          f"k_factor {args.k_factor:g}, {len(queries)} queries x {args.rounds} rounds, 1 thread")
    us = {name: np.array(t) / len(queries) * 1e6 for name, t in times.items()}
    for name in ("pqkit", "faiss"):
        recall = recall_at(found[name], truth)
        print(f"  {name}: 10-recall@10 {recall:.3f}, min {us[name].min():.1f} us/query, "
              f"median {np.median(us[name]):.1f}")
    print(f"  speed ratio (faiss time / pqkit time): of the minima {us['faiss'].min() / us['pqkit'].min():.2f}, "
          f"median per round {np.median(us['faiss'] / us['pqkit']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
