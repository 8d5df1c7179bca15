"""Two versions of pqkit timed against each other (a refactor's "no slowdown" check).

    python bench/ab_versions.py --old /path/to/old/checkout --pqkit IVF1024,PQ50x4,RFlat \\
        --nprobe 16 --k-factor 4
    python bench/ab_versions.py --old ../old --pqkit IVF1024,PQ10 --nprobe 16
    python bench/ab_versions.py --old ../old --pqkit IVF1024,PQ25x4,RFlat --nprobe 16 \
        --k-factor 4 --single

``--old`` is a checkout of another pqkit version whose ``src/pqkit`` holds its Python sources and
its compiled core (``_core*.so`` beside the package or under ``engine/``: build it there first);
the current version is the installed ``pqkit``. Two builds of the compiled core cannot share one
process (pybind11 registers each C++ class once per process), so the versions run in alternating
worker processes, ``--processes`` of each: every worker builds the same index on the same base
vectors with the same seed (both versions then hold the same codes), searches the same query
batch ``--rounds`` times on 1 thread (``--single``: one query per call) and reports its minimum time and its ids. Machine noise
that lasts longer than a worker hits both sides in turn. Prints each version's median over
workers of their minimum microseconds per query, the median of the paired ratios old/new
(> 1: the current version is faster) and whether the two versions return identical D and I.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent


def worker(args) -> None:
    """Build, search and time one version in this process; print a JSON line."""
    if args.worker == "old":
        # the installed (editable) pqkit must not shadow the old checkout's sources
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
        sys.path.insert(0, str(args.old.resolve() / "src"))
    sys.path.insert(0, str(BENCH))
    import datasets

    import pqkit

    pqkit.set_num_threads(1)
    ds = datasets.load(args.dataset)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries[:args.queries], dtype=np.float32)
    index = pqkit.index_factory(base.shape[1], args.pqkit)
    index.train(base)
    index.add(base)
    ivf = getattr(index, "base_index", index)
    if hasattr(ivf, "nprobe"):
        ivf.nprobe = args.nprobe
    if hasattr(index, "k_factor"):
        index.k_factor = args.k_factor
    D, I = index.search(queries, 10)
    singles = [queries[i:i + 1] for i in range(len(queries))]
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        if args.single:
            for q in singles:
                index.search(q, 10)
        else:
            index.search(queries, 10)
        times.append((time.perf_counter() - start) / len(queries) * 1e6)
    digest = hashlib.sha256(D.tobytes() + I.tobytes()).hexdigest()
    print(json.dumps({"us": min(times), "digest": digest, "file": pqkit.__file__,
                      "simd": pqkit.simd_level()}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, type=Path, help="checkout of the other pqkit version")
    parser.add_argument("--dataset", default="glove-50-angular", help="a bench/datasets.py name")
    parser.add_argument("--pqkit", required=True, help="factory string, e.g. IVF1024,PQ50x4,RFlat")
    parser.add_argument("--nprobe", type=int, default=1)
    parser.add_argument("--k-factor", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="timed searches per worker")
    parser.add_argument("--single", action="store_true",
                        help="time one query per call (search(q[i:i + 1], 10) for each query)")
    parser.add_argument("--processes", type=int, default=5, help="workers per version")
    parser.add_argument("--worker", choices=["old", "new"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not (args.old / "src" / "pqkit" / "__init__.py").is_file():
        parser.error(f"--old: no pqkit package under {args.old / 'src'}")
    runs = {"old": [], "new": []}
    base_argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    for _ in range(args.processes):
        for side in ("old", "new"):
            out = subprocess.run([sys.executable, __file__, *base_argv, "--worker", side],
                                 capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    old_us = [r["us"] for r in runs["old"]]
    new_us = [r["us"] for r in runs["new"]]
    ratios = [o / n for o, n in zip(old_us, new_us)]
    same = len({r["digest"] for r in runs["old"] + runs["new"]}) == 1
    print(f"{args.dataset} {args.pqkit} nprobe={args.nprobe} k_factor={args.k_factor}, "
          f"{args.queries} queries, {args.processes} workers x {args.rounds} rounds per version, "
          f"1 thread, simd {runs['new'][0]['simd']}")
    for side, values in (("old", old_us), ("new", new_us)):
        print(f"  {side} ({Path(runs[side][0]['file']).parent}): median of minima "
              f"{np.median(values):.2f} us/query (range {min(values):.2f}-{max(values):.2f})")
    print(f"  old/new: median of paired ratios {np.median(ratios):.3f} (range {min(ratios):.3f}-"
          f"{max(ratios):.3f}; > 1: new faster); identical D and I in every worker: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
