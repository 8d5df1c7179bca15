"""Exact search speed: pqkit's ``IndexFlat`` against faiss's ``IndexFlatL2``/``IndexFlatIP`` and a
NumPy GEMM brute force, batch and single query, d = 50, 128, 784, 1280, 1 and 2 threads.

    python bench/flat_blas.py [--quick] [--n-base 100000] [--queries 1000] [--single 100]
                              [--repeats 5] [--out bench/results/raw/flat_blas.json]

Data: GloVe-50 (d = 50) and Fashion-MNIST (d = 784) as ``bench/datasets.py`` loads them (a seeded
``--n-base`` rows of the base, the first queries); d = 128 and 1280 are synthetic Gaussian (named
``gaussian-<d>``: no real set at that d). Each metric (L2, IP) runs three methods on the same
arrays, alternating within each repeat (one warm-up round untimed): pqkit ``IndexFlat`` (its
exact result, identical at every SIMD level and thread count), faiss at the SIMD level it chose at
import (recorded), and NumPy: ``x @ y.T`` with the base's squared norms (L2), ``argpartition`` for
the top k, then a sort of those k. "batch" searches ``--queries`` queries in one call; "single"
searches ``--single`` queries one call each. Threads: pqkit ``n_threads``, faiss
``omp_set_num_threads``, NumPy's BLAS through threadpoolctl. Every repeat's seconds are stored raw
(JSON) before medians and ratios are printed; ``bench/report.py --docs`` draws the table of
docs/performance.md from the raw file. The share of result ids equal to faiss's is stored too
(differences are float near-ties only). ``--quick`` runs Gaussian data of every d, small, once:
a correctness run, not a timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import datasets  # noqa: E402  (bench/datasets.py)

DIMS = (50, 128, 784, 1280)
REAL = {50: "glove-50-angular", 784: "fashion-mnist-784-euclidean"}
K = 10
METHODS = ("pqkit", "faiss", "numpy")


def load(d: int, n_base: int, n_queries: int, quick: bool) -> tuple:
    """(name, base, queries): the real set at this d, else seeded Gaussian data."""
    rng = np.random.default_rng(datasets.SEED)
    if d in REAL and not quick:
        base, queries = datasets.LOADERS[REAL[d]]()
        base = base[np.sort(rng.choice(len(base), min(n_base, len(base)), replace=False))]
        name = REAL[d]
    else:
        base = rng.standard_normal((n_base, d))
        queries = rng.standard_normal((n_queries, d))
        name = f"gaussian-{d}"
    return (name, np.ascontiguousarray(base, dtype=np.float32),
            np.ascontiguousarray(queries[:n_queries], dtype=np.float32))


class NumpyBruteForce:
    """Exact top-k through one GEMM per call: ``x @ y.T`` plus the base's squared norms."""

    def __init__(self, base: np.ndarray, metric: str):
        self.base, self.metric = base, metric
        self.norms = np.einsum("ij,ij->i", base, base) if metric == "l2" else None

    def search(self, x: np.ndarray, k: int) -> tuple:
        scores = x @ self.base.T
        if self.metric == "l2":
            keys = self.norms[None, :] - 2.0 * scores  # + ||x||^2, added to the k kept only
        else:
            keys = -scores
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        kept = np.take_along_axis(keys, part, axis=1)
        order = np.argsort(kept, axis=1, kind="stable")
        ids = np.take_along_axis(part, order, axis=1)
        kept = np.take_along_axis(kept, order, axis=1)
        if self.metric == "l2":
            return kept + np.einsum("ij,ij->i", x, x)[:, None], ids
        return -kept, ids


def run_case(searchers: dict, queries: np.ndarray, single: int, repeats: int, limits) -> dict:
    """Seconds per method for the batch and the single-query mode, alternating methods."""
    seconds = {mode: {name: [] for name in searchers} for mode in ("batch", "single")}
    ids = {}
    for round_no in range(repeats + 1):  # round 0 warms up, untimed
        for name, search in searchers.items():
            with limits():
                start = time.perf_counter()
                _, found = search(queries, K)
                batch = time.perf_counter() - start
                start = time.perf_counter()
                for q in range(single):
                    search(queries[q:q + 1], K)
                one = time.perf_counter() - start
            if round_no:
                seconds["batch"][name].append(batch)
                seconds["single"][name].append(one)
            ids[name] = np.asarray(found)
    agree = float(np.mean(ids["pqkit"] == ids["faiss"]))
    return {"seconds": seconds, "ids_equal_to_faiss": agree}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small correctness run, not a timing")
    parser.add_argument("--n-base", type=int, default=None, help="default 100,000 (2,000 with --quick)")
    parser.add_argument("--queries", type=int, default=None, help="batch size, default 1000 (20 with --quick)")
    parser.add_argument("--single", type=int, default=None, help="single queries, default 100 (3 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/raw/flat_blas.json (flat_blas_quick.json with --quick)")
    args = parser.parse_args(argv)

    import faiss
    from threadpoolctl import threadpool_limits

    import pqkit

    quick = args.quick
    n_base = args.n_base or (2_000 if quick else 100_000)
    n_queries = args.queries or (20 if quick else 1000)
    single = min(args.single or (3 if quick else 100), n_queries)
    repeats = args.repeats or (1 if quick else 5)
    out = args.out or ROOT / "bench" / "results" / "raw" / ("flat_blas_quick.json" if quick else "flat_blas.json")
    faiss_level = faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else "unknown"
    rows = []
    for d in args.dims:
        name, base, queries = load(d, n_base, n_queries, quick)
        for metric in ("l2", "ip"):
            ours = pqkit.IndexFlat(d, metric=metric)
            ours.add(base)
            theirs = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
            theirs.add(base)
            brute = NumpyBruteForce(base, metric)
            for threads in args.threads:
                ours.n_threads = threads
                faiss.omp_set_num_threads(threads)
                searchers = {"pqkit": ours.search, "faiss": theirs.search, "numpy": brute.search}
                case = run_case(searchers, queries, single, repeats, lambda: threadpool_limits(threads))
                rows.append({"dataset": name, "d": d, "n_base": len(base), "metric": metric, "threads": threads,
                             "batch_queries": len(queries), "single_queries": single, **case})
                med = {mode: {m: float(np.median(case["seconds"][mode][m])) for m in METHODS}
                       for mode in ("batch", "single")}
                print(f"{name} {metric} {threads}t: batch pqkit {med['batch']['pqkit']:.3f}s "
                      f"faiss {med['batch']['faiss']:.3f}s ({med['batch']['faiss'] / med['batch']['pqkit']:.2f}x) "
                      f"numpy {med['batch']['numpy']:.3f}s ({med['batch']['numpy'] / med['batch']['pqkit']:.2f}x); "
                      f"single pqkit {med['single']['pqkit'] / single * 1e3:.2f} ms "
                      f"({med['single']['faiss'] / med['single']['pqkit']:.2f}x faiss, "
                      f"{med['single']['numpy'] / med['single']['pqkit']:.2f}x numpy); "
                      f"ids equal to faiss {case['ids_equal_to_faiss']:.4f}")
    meta = {"k": K, "repeats": repeats, "quick": quick, "pqkit": pqkit.__version__,
            "pqkit_simd_level": pqkit.simd_level(), "faiss": faiss.__version__, "faiss_simd_level": faiss_level,
            "numpy": np.__version__, "machine": platform.machine(), "processor": platform.processor(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
