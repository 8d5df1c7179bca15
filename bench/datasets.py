"""Named benchmark datasets with exact top-100 ground truth cached on disk (bench only).

=============================  ==========================================================
name                           base / queries
=============================  ==========================================================
fashion-mnist-784-euclidean    60,000 train images / 10,000 test images (ann-benchmarks split)
glove-50-angular               GloVe 6B 50d, rows L2-normalised, seeded shuffle, last 10,000
                               rows are the queries, the rest (390,000) the base
synthetic-1m-128               pqkit.datasets.make_clustered(1,010,000, 128): 1M base, 10k
                               queries from the same mixture (synthetic: no real data)
=============================  ==========================================================

All sets are searched with squared L2 (GloVe is normalised, so L2 ranks as cosine). Ground
truth is the exact top-100 of ``pqkit.IndexFlat``, cached as ``bench/results/cache/<name>.npz``
(``<name>-small`` for ``small=True``, which keeps a seeded 10,000-row base and 500 queries).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / "results" / "cache"
GT_K = 100
SEED = 0
SMALL_BASE = 10_000
SMALL_QUERIES = 500


class Dataset(NamedTuple):
    name: str
    base: np.ndarray  # float32 (n, d), C order
    queries: np.ndarray  # float32 (nq, d), C order
    ground_truth: np.ndarray  # int64 (nq, GT_K), exact neighbours, nearest first
    metric: str


def _fashion():
    from pqkit.datasets import load_fashion_mnist

    base, queries, _ = load_fashion_mnist()
    return base, queries


def _glove():
    from pqkit.datasets import load_glove50

    vectors = load_glove50(normalize=True)
    order = np.random.default_rng(SEED).permutation(len(vectors))
    vectors = vectors[order]
    return vectors[:-10_000], vectors[-10_000:]


def _synthetic():
    from pqkit.datasets import make_clustered

    vectors = make_clustered(1_000_000 + 10_000, 128, seed=SEED)
    return vectors[:1_000_000], vectors[1_000_000:]


LOADERS = {
    "fashion-mnist-784-euclidean": _fashion,
    "glove-50-angular": _glove,
    "synthetic-1m-128": _synthetic,
}


def exact_ground_truth(base: np.ndarray, queries: np.ndarray, k: int = GT_K) -> np.ndarray:
    import pqkit

    exact = pqkit.IndexFlat(base.shape[1])
    exact.add(base)
    _, ids = exact.search(queries, min(k, len(base)))
    return ids


def load(name: str, small: bool = False) -> Dataset:
    """Load a named dataset and its ground truth (computed once, then read from the cache)."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(LOADERS)}")
    base, queries = LOADERS[name]()
    if small:
        rng = np.random.default_rng(SEED)
        base = base[np.sort(rng.choice(len(base), min(SMALL_BASE, len(base)), replace=False))]
        queries = queries[np.sort(rng.choice(len(queries), min(SMALL_QUERIES, len(queries)), replace=False))]
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    key = name + ("-small" if small else "")
    cache = CACHE_DIR / f"{key}.npz"
    ground_truth = None
    if cache.is_file():
        stored = np.load(cache)
        if stored["shape"].tolist() == [len(base), len(queries), base.shape[1]]:
            ground_truth = stored["ground_truth"]
    if ground_truth is None:
        ground_truth = exact_ground_truth(base, queries)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ground_truth=ground_truth, shape=np.array([len(base), len(queries), base.shape[1]]))
    return Dataset(key, base, queries, ground_truth, "l2")
