"""Two versions of pqkit in one process, timed in alternation (a refactor's "no slowdown" check).

    python bench/ab_versions.py --old /path/to/old/checkout --pqkit IVF1024,PQ50x4,RFlat \\
        --nprobe 16 --k-factor 4
    python bench/ab_versions.py --old ../old --pqkit IVF1024,PQ10 --nprobe 16

``--old`` is a checkout of another pqkit version whose ``src/pqkit`` holds its Python sources and
its compiled core (``_core*.so``, beside the package or under ``engine/``; build it there first).
That package is copied to a scratch folder under the name ``pqkit_ab_old`` (its absolute module
names rewritten), so both versions load side by side; the current one is the installed ``pqkit``.
Each builds the same index on the same base vectors with the same seed, so both hold the same
codes; the same query batch is then searched by each in turn, ``--rounds`` times, 1 thread.
Prints both versions' minimum and median microseconds per query, the median of the per-round
ratios old/new (> 1: the current version is faster) and whether the ids are identical.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ALIAS = "pqkit_ab_old"


def import_old(checkout: Path):
    """The pqkit package of ``checkout`` imported as ``pqkit_ab_old``."""
    source = checkout / "src" / "pqkit"
    if not (source / "__init__.py").is_file():
        sys.exit(f"ab_versions: error: no pqkit package at {source}")
    scratch = Path(tempfile.mkdtemp(prefix="pqkit-ab-"))
    target = scratch / ALIAS
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    if not list(target.rglob("_core*.so")):
        sys.exit(f"ab_versions: error: {source} holds no compiled _core*.so; build that checkout first")
    for path in target.rglob("*.py"):
        text = path.read_text()
        renamed = re.sub(r"\bpqkit(?=[._])", ALIAS, text.replace('"pqkit"', f'"{ALIAS}"'))
        if renamed != text:
            path.write_text(renamed)
    sys.path.insert(0, str(scratch))
    return importlib.import_module(ALIAS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, type=Path, help="checkout of the other pqkit version")
    parser.add_argument("--dataset", default="glove-50-angular", help="a bench/datasets.py name")
    parser.add_argument("--pqkit", required=True, help="factory string, e.g. IVF1024,PQ50x4,RFlat")
    parser.add_argument("--nprobe", type=int, default=1)
    parser.add_argument("--k-factor", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    import datasets

    import pqkit

    old = import_old(args.old.resolve())
    ds = datasets.load(args.dataset)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries[:args.queries], dtype=np.float32)
    indexes = {}
    for name, lib in (("old", old), ("new", pqkit)):
        lib.set_num_threads(1)
        index = lib.index_factory(base.shape[1], args.pqkit)
        index.train(base)
        index.add(base)
        ivf = getattr(index, "base_index", index)
        if hasattr(ivf, "nprobe"):
            ivf.nprobe = args.nprobe
        if hasattr(index, "k_factor"):
            index.k_factor = args.k_factor
        indexes[name] = index
    results = {name: index.search(queries, 10) for name, index in indexes.items()}
    same = all(np.array_equal(results["old"][i], results["new"][i]) for i in (0, 1))
    times = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name in ("old", "new"):
            start = time.perf_counter()
            indexes[name].search(queries, 10)
            times[name].append((time.perf_counter() - start) / len(queries) * 1e6)
    ratios = [o / n for o, n in zip(times["old"], times["new"])]
    print(f"{args.dataset} {args.pqkit} nprobe={args.nprobe} k_factor={args.k_factor}, "
          f"{len(queries)} queries x {args.rounds} rounds, 1 thread, simd {pqkit.simd_level()}")
    for name in ("old", "new"):
        print(f"  {name}: min {min(times[name]):.2f} us/query, median {np.median(times[name]):.2f}")
    print(f"  old/new: ratio of minima {min(times['old']) / min(times['new']):.3f}, median of "
          f"per-round ratios {np.median(ratios):.3f} (> 1: new faster); identical D and I: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
