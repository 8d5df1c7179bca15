"""Every SIMD level and every thread count gives bit-identical codes, distances and ids."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pqkit
from tests.conftest import clustered_split


def _one_query_at_a_time(index, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Search each query alone (with more threads than queries, the engine splits one query's work
    over threads); D and I side by side as float64."""
    rows = []
    for row in range(queries.shape[0]):
        distances, ids = index.search(queries[row:row + 1], k)
        rows.append(np.concatenate([distances.astype(np.float64), ids.astype(np.float64)], axis=1))
    return np.concatenate(rows)


def _compute_all() -> dict:
    """Train, encode and search with every kernel family; return every output array."""
    base, queries = clustered_split(10_000, 200, 32, seed=21)
    out = {}
    km = pqkit.KMeans(32, 64, niter=5, seed=1).train(base)
    out["kmeans.centroids"] = km.centroids
    out["kmeans.assign"] = np.concatenate([a.astype(np.float64).ravel() for a in km.assign(queries)])

    for nbits in (4, 5, 8):
        pq = pqkit.ProductQuantizer(32, 8, nbits, niter=4, seed=2).train(base)
        out[f"pq{nbits}.codebooks"] = pq.codebooks
        out[f"pq{nbits}.codes"] = pq.encode(base)
        out[f"pq{nbits}.decode"] = pq.decode(out[f"pq{nbits}.codes"][:500])
        for metric in ("l2", "ip"):
            out[f"pq{nbits}.table.{metric}"] = pq.distance_table(queries, metric)
            index = pqkit.IndexPQ(32, 8, nbits, metric=metric)
            index.pq.set_codebooks(pq.codebooks)
            index.add(base)
            out[f"indexpq{nbits}.{metric}.D"], out[f"indexpq{nbits}.{metric}.I"] = index.search(queries, 10)
            out[f"indexpq{nbits}.{metric}.single"] = _one_query_at_a_time(index, queries[:6])

    for metric in ("l2", "ip", "cosine"):
        flat = pqkit.IndexFlat(32, metric=metric)
        flat.add(base)
        out[f"flat.{metric}.D"], out[f"flat.{metric}.I"] = flat.search(queries, 10)

    ivfflat = pqkit.IndexIVFFlat(32, 32, nprobe=4)
    ivfflat.train(base)
    ivfflat.add(base)
    out["ivfflat.centroids"] = ivfflat.centroids
    out["ivfflat.D"], out["ivfflat.I"] = ivfflat.search(queries, 10)

    # nbits 8 and 4 (quantized-table scans, with the per-code bias under L2), nbits 10 (exact
    # float scan of every code), and inner product.
    for nbits, metric, n_train in ((8, "l2", 10_000), (8, "ip", 10_000), (4, "l2", 10_000),
                                   (10, "l2", 10_000)):
        ivfpq = pqkit.IndexIVFPQ(32, 32, 8, nbits, metric=metric, nprobe=4, seed=3)
        ivfpq.pq.niter = 2 if nbits > 8 else 4  # few iterations: only bit-identity matters here
        if nbits > 8:
            with pytest.warns(pqkit.TrainingWarning):  # 10k points for 1024 sub-centroids
                ivfpq.train(base[:n_train])
        else:
            ivfpq.train(base[:n_train])
        ivfpq.add(base)
        key = f"ivfpq{nbits}.{metric}"
        out[f"{key}.centroids"] = ivfpq.centroids
        out[f"{key}.codebooks"] = ivfpq.pq.codebooks
        out[f"{key}.recon"] = ivfpq.reconstruct_n(np.arange(0, 10_000, 7))
        out[f"{key}.D"], out[f"{key}.I"] = ivfpq.search(queries, 10)
        ivfpq.nprobe = 16
        out[f"{key}.single"] = _one_query_at_a_time(ivfpq, queries[:6])
        out[f"{key}.pair"] = np.concatenate([a.astype(np.float64) for a in ivfpq.search(queries[:2], 10)], axis=1)

    # exact re-ranking of a 4-bit shortlist (ids as add assigns them, and custom ids)
    # (candidates ranked by the quantized table's integer estimates, 4 and 8 bits)
    for metric, nbits in (("l2", 4), ("ip", 4), ("l2", 8)):
        for custom in (False, True):
            refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, nbits, metric=metric, nprobe=4, seed=3),
                                       k_factor=4)
            refine.train(base)
            if custom:
                refine.add_with_ids(base, np.arange(base.shape[0], dtype=np.int64)[::-1] * 3 + 5)
            else:
                refine.add(base)
            key = f"refine{nbits}.{metric}.{'custom' if custom else 'dense'}"
            out[f"{key}.D"], out[f"{key}.I"] = refine.search(queries, 10)
            out[f"{key}.single"] = _one_query_at_a_time(refine, queries[:6])  # candidates split
    # re-ranking with finer PQ codes (decoded candidates), 8 and 5 bits
    for metric, refine_bits in (("l2", 8), ("ip", 8), ("l2", 5)):
        refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, 4, metric=metric, nprobe=4, seed=3), 4,
                                   pqkit.IndexPQ(32, 16, refine_bits, metric=metric, seed=4))
        refine.refine_index.pq.niter = 4
        refine.train(base)
        refine.add(base)
        key = f"refine_pq{refine_bits}.{metric}"
        out[f"{key}.D"], out[f"{key}.I"] = refine.search(queries, 10)
        out[f"{key}.single"] = _one_query_at_a_time(refine, queries[:6])
    # re-ranking with 8-bit scalar-quantizer codes, and the scalar quantizer's own exact search
    for metric in ("l2", "ip"):
        refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, 4, metric=metric, nprobe=4, seed=3), 4,
                                   pqkit.IndexScalarQuantizer(32, metric=metric))
        refine.train(base)
        refine.add(base)
        key = f"refine_sq.{metric}"
        out[f"{key}.D"], out[f"{key}.I"] = refine.search(queries, 10)
        out[f"{key}.single"] = _one_query_at_a_time(refine, queries[:6])
        out[f"sq.{metric}.D"], out[f"sq.{metric}.I"] = refine.refine_index.search(queries, 10)
    return out


def _assert_identical(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys()
    differing = []
    for key in expected:
        a, b = np.asarray(got[key]), np.asarray(expected[key])
        if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b):
            n_diff = int((a != b).sum()) if a.shape == b.shape else -1
            differing.append(f"{key} ({n_diff} of {b.size} entries differ)")
    assert not differing, f"{what}: results not bit-identical to the reference: {differing}"


@pytest.fixture(scope="module")
def scalar_reference():
    previous = pqkit.simd_level()
    pqkit.set_simd_level("scalar")
    try:
        return _compute_all()
    finally:
        pqkit.set_simd_level(previous)


def test_levels_are_reported():
    levels = pqkit.available_simd_levels()
    assert levels[0] == "scalar"
    assert set(levels) <= {"scalar", "avx2", "avx512"}
    assert pqkit.simd_level() in levels


def test_every_simd_level_is_bit_identical(scalar_reference, simd_level):
    assert pqkit.simd_level() == simd_level
    _assert_identical(_compute_all(), scalar_reference, f"SIMD level {simd_level}")


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
def test_every_thread_count_is_bit_identical(scalar_reference, restore_threads, restore_simd, n_threads):
    pqkit.set_simd_level(pqkit.available_simd_levels()[-1])
    pqkit.set_num_threads(n_threads)
    assert pqkit.get_num_threads() == n_threads
    _assert_identical(_compute_all(), scalar_reference, f"{n_threads} thread(s)")


@pytest.mark.parametrize("n_threads", [2, 3, 5])
def test_single_queries_split_over_threads_are_bit_identical(scalar_reference, restore_threads, restore_simd,
                                                              n_threads):
    """With fewer queries than threads, one query's lists or code blocks, and its re-ranked
    candidates, are shared out to the threads (only for large scans by default; forced here on
    small data)."""
    from pqkit.engine import _core

    pqkit.set_simd_level(pqkit.available_simd_levels()[-1])
    pqkit.set_num_threads(n_threads)
    previous = _core._set_min_split_bytes(0)
    try:
        got = _compute_all()
    finally:
        _core._set_min_split_bytes(previous)
    _assert_identical(got, scalar_reference, f"{n_threads} threads, split single queries")


def test_unknown_simd_level_is_refused(restore_simd):
    with pytest.raises(ValueError):
        pqkit.set_simd_level("sse9")


@pytest.mark.parametrize("level", pqkit.available_simd_levels())
def test_environment_variable_selects_the_level(level):
    env = dict(os.environ, PQKIT_SIMD=level)
    result = subprocess.run(
        [sys.executable, "-c", "import pqkit; print(pqkit.simd_level())"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.stdout.strip() == level


def test_default_is_the_best_level():
    env = {k: v for k, v in os.environ.items() if k != "PQKIT_SIMD"}
    result = subprocess.run(
        [sys.executable, "-c", "import pqkit; print(pqkit.simd_level())"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.stdout.strip() == pqkit.available_simd_levels()[-1]


def test_thread_setting_validation(restore_threads):
    with pytest.raises(ValueError):
        pqkit.set_num_threads(0)
    with pytest.raises(TypeError):
        pqkit.set_num_threads(1.5)
    with pytest.raises(ValueError):
        pqkit.IndexFlat(4, n_threads=0)
