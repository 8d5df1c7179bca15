"""Shared fixtures: small cached data sets, SIMD level and thread-count switches.

Real data sets are optional on a developer machine (the tests that need them skip with the
install command) but required in CI (``CI`` set in the environment): there a missing set fails.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import pqkit
from pqkit.datasets import DatasetNotFoundError, load_fashion_mnist, load_glove50, make_clustered

IN_CI = bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where every optional dependency must be present."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: this must not be skipped in CI)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------
# data (cached per process: loaders run once, fixtures hand out read-only views)


def bench_module(name: str):
    """The script ``bench/<name>.py`` as a module (with ``bench/`` importable while it loads, for
    the scripts' own helper imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(bench))


def _read_only(*arrays: np.ndarray):
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        out.append(a)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def clustered_split(n_base: int, n_queries: int, d: int, seed: int = 7, n_clusters: int = 50):
    """Synthetic clustered base and queries from one mixture (read-only float32 arrays)."""
    x = make_clustered(n_base + n_queries, d, n_clusters=n_clusters, seed=seed)
    return _read_only(x[:n_base], x[n_base:])


@functools.lru_cache(maxsize=None)
def fashion_split(n_base: int, n_queries: int, seed: int = 0):
    """A seeded random subset of Fashion-MNIST base vectors and of its queries."""
    try:
        base, queries, _ = load_fashion_mnist()
    except DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    # Random order (not sorted), so that any prefix is itself a random sample (e.g. a training set).
    rng = np.random.default_rng(seed)
    base_rows = rng.choice(base.shape[0], n_base, replace=False)
    query_rows = rng.choice(queries.shape[0], n_queries, replace=False)
    return _read_only(base[base_rows], queries[query_rows])


@functools.lru_cache(maxsize=None)
def glove_split(n_base: int, n_queries: int, seed: int = 0):
    """Disjoint seeded random subsets of normalised GloVe-50 as base and queries."""
    try:
        vectors = load_glove50(normalize=True)
    except DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    # Random order, not sorted: GloVe rows are sorted by word frequency, so a sorted subset's
    # prefix would be a biased training set.
    rng = np.random.default_rng(seed)
    rows = rng.choice(vectors.shape[0], n_base + n_queries, replace=False)
    return _read_only(vectors[rows[:n_base]], vectors[rows[n_base:]])


@pytest.fixture(scope="session")
def faiss():
    try:
        import faiss as faiss_module
    except ImportError as exc:
        skip_or_fail(f"faiss-cpu is not installed ({exc}); install the test extra: pip install \".[test]\"")
    return faiss_module


@pytest.fixture(scope="session")
def clustered():
    """(base (20000, 32), queries (200, 32)) float32 from a 50-component Gaussian mixture."""
    return clustered_split(20_000, 200, 32)


@pytest.fixture(scope="session")
def small_clustered():
    """(base (3000, 16), queries (50, 16)): for tests that build many indexes."""
    return clustered_split(3_000, 50, 16, seed=11, n_clusters=20)


@pytest.fixture(scope="session")
def fashion():
    """(base (20000, 784), queries (200, 784)) float32 subset of Fashion-MNIST."""
    return fashion_split(20_000, 200)


@pytest.fixture(scope="session")
def glove():
    """(base (20000, 50), queries (200, 50)) float32 subset of normalised GloVe-50."""
    return glove_split(20_000, 200)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------------------------------------
# engine switches (always restored)


@pytest.fixture(params=pqkit.available_simd_levels())
def simd_level(request):
    """Run the test once per SIMD level this CPU supports; the previous level is restored."""
    previous = pqkit.simd_level()
    pqkit.set_simd_level(request.param)
    try:
        yield request.param
    finally:
        pqkit.set_simd_level(previous)


@pytest.fixture
def restore_threads():
    """Restore the global default thread count after the test."""
    previous = pqkit.get_num_threads()
    try:
        yield
    finally:
        pqkit.set_num_threads(None if previous == (os.cpu_count() or 1) else previous)


@pytest.fixture
def restore_simd():
    """Restore the SIMD level after a test that switches it itself."""
    previous = pqkit.simd_level()
    try:
        yield
    finally:
        pqkit.set_simd_level(previous)
