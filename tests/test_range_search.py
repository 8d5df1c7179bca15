"""``range_search(x, radius)`` on every index type and both engines: FAISS's (lims, D, I)
layout, a NumPy reference (sets and distances, with a float tolerance at the radius), the
filter and per-call parameters, results independent of SIMD level, threads and engine, and the
bounded-memory cap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pqkit
from tests import reference as ref
from tests.test_filters import (BACKENDS, D_DIM, K, KINDS, candidates_of, data, filled,  # noqa: F401
                                trained)


def _radius(dist, metric, per_query=30):
    """A radius that keeps about ``per_query`` results per query."""
    column = min(per_query, dist.shape[1] - 1)
    if metric == "l2":
        return float(np.median(np.sort(dist, axis=1)[:, column]))
    return float(np.median(-np.sort(-dist, axis=1)[:, column]))


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_range_search_matches_numpy(backend, kind, metric, trained, data):
    base, queries, ids = data
    index = filled(kind, backend, metric, trained, data)
    dist = ref.pairwise(queries, index.reconstruct_n(ids), metric)
    atol = ref.distance_tolerance(queries, base)
    radius = _radius(dist, metric)
    everyone = np.ones(ids.size, dtype=bool)
    cand, skip = candidates_of(index, queries, ids, everyone)
    lims, D, I = index.range_search(queries, radius)
    keep = np.flatnonzero(~skip)
    sub_lims = np.concatenate(([0], np.cumsum(np.diff(lims)[keep])))
    pick = np.concatenate([np.arange(lims[q], lims[q + 1]) for q in keep]).astype(np.int64)
    total = ref.assert_range_matches(sub_lims, D[pick], I[pick], dist[keep], cand[keep], radius,
                                     metric, atol, ids=ids)
    assert total > 5 * queries.shape[0]
    # with a filter: the allowed ones among them
    allowed = np.random.default_rng(6).random(ids.size) < 0.3
    lims_f, D_f, I_f = index.range_search(queries, radius, filter=ids[allowed])
    cand_f = cand & allowed
    pick = np.concatenate([np.arange(lims_f[q], lims_f[q + 1]) for q in keep]).astype(np.int64)
    sub_lims = np.concatenate(([0], np.cumsum(np.diff(lims_f)[keep])))
    ref.assert_range_matches(sub_lims, D_f[pick], I_f[pick], dist[keep], cand_f[keep], radius,
                             metric, atol, ids=ids)
    # the filtered results are exactly the unfiltered ones the filter allows
    for q in range(queries.shape[0]):
        mine = I[lims[q]:lims[q + 1]]
        keep_q = np.isin(mine, ids[allowed])
        np.testing.assert_array_equal(I_f[lims_f[q]:lims_f[q + 1]], mine[keep_q])
        np.testing.assert_array_equal(D_f[lims_f[q]:lims_f[q + 1]], D[lims[q]:lims[q + 1]][keep_q])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_range_search_agrees_with_the_top_k_search(backend, kind, trained, data):
    """The results within the radius of a k-NN search are the first ones of the range search,
    with the same distances, bit for bit (both use the same keys)."""
    _, queries, _ = data
    index = filled(kind, backend, "l2", trained, data)
    D, I = index.search(queries, K)
    radius = float(np.median(D[:, K // 2]))
    lims, RD, RI = index.range_search(queries, radius)
    for q in range(queries.shape[0]):
        inside = D[q] < radius
        count = int(inside.sum())
        np.testing.assert_array_equal(RI[lims[q]:lims[q] + count], I[q, inside])
        np.testing.assert_array_equal(RD[lims[q]:lims[q] + count], D[q, inside])
        if count < K:  # the top-k went past the radius: nothing else is inside
            assert lims[q + 1] - lims[q] == count


@pytest.mark.parametrize("kind", KINDS)
def test_range_search_identical_at_every_simd_level_thread_count_and_engine(kind, trained, data,
                                                                            simd_level):
    _, queries, ids = data
    index = filled(kind, "cpp", "ip", trained, data)
    radius = float(np.median(index.search(queries, 40)[0][:, 30]))
    selector = pqkit.IDSelectorPerQuery([ids[::q + 2] for q in range(queries.shape[0])])
    core = pqkit.engine.core("cpp")
    previous = core._set_min_split_bytes(0)
    try:
        runs = []
        for n_threads in (1, 3):
            index.n_threads = n_threads
            runs.append(index.range_search(queries, radius, filter=selector))
            runs.append(index.range_search(queries[:1], radius, filter=[ids[::2]]))  # split paths
    finally:
        core._set_min_split_bytes(previous)
    for a, b in zip(runs[:2], runs[2:]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    if "numba" in BACKENDS:
        other = filled(kind, "numba", "ip", trained, data)
        for x, y in zip(runs[0], other.range_search(queries, radius, filter=selector)):
            np.testing.assert_array_equal(x, y)
    assert runs[0][0][-1] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_range_search_cap_and_edge_cases(backend, trained, data):
    base, queries, ids = data
    for kind in ("Flat", "IVFPQ8"):
        index = filled(kind, backend, "l2", trained, data)
        nprobe = {"nprobe": 16} if kind.startswith("IVF") else {}
        # a radius that matches everything: every vector for every query, within the default cap
        lims, D, I = index.range_search(queries[:3], np.inf, **nprobe)
        assert lims.tolist() == [0, ids.size, 2 * ids.size, 3 * ids.size]
        # the cap: a clear error, not an out-of-memory
        with pytest.raises(ValueError, match=r"range search found more than max_results = 100 "
                                             r"results; lower the radius"):
            index.range_search(queries, np.inf, max_results=100, **nprobe)
        assert index.range_search(queries[:1], np.inf, max_results=ids.size, **nprobe)[0][-1] == ids.size
        with pytest.raises(ValueError, match=r"max_results=\d+ range-search results .* GiB, more "
                                             r"than"):
            index.range_search(queries, 1.0, max_results=2**60)
        # nothing inside, nothing allowed, no query
        assert index.range_search(queries, -1.0)[0].tolist() == [0] * (queries.shape[0] + 1)
        assert index.range_search(queries, np.inf, filter=[])[0][-1] == 0
        lims, D, I = index.range_search(queries[:0], 1.0)
        assert lims.tolist() == [0] and D.dtype == np.float32 and I.dtype == np.int64
        if backend == "cpp":  # one query split over threads: the parts' counts add up exactly
            core = pqkit.engine.core("cpp")
            previous = core._set_min_split_bytes(0)
            index.n_threads = 4
            try:
                with pytest.raises(ValueError, match="more than max_results"):
                    index.range_search(queries[:1], np.inf, max_results=ids.size - 1, **nprobe)
                assert index.range_search(queries[:1], np.inf, max_results=ids.size,
                                          **nprobe)[0][-1] == ids.size
            finally:
                core._set_min_split_bytes(previous)
    empty = pqkit.IndexFlat(D_DIM, backend=backend)
    lims, D, I = empty.range_search(queries, 10.0)
    assert lims.shape == (queries.shape[0] + 1,) and lims[-1] == 0 and D.shape == I.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_range_search_of_wrappers_and_cosine(backend, data):
    """IndexRefine: the base index's range results re-ranked, kept within the radius by their
    refined distance; IndexPreTransform: the wrapped index's over transformed queries; cosine:
    similarities above the radius."""
    base, queries, ids = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(D_DIM, 16, 4, 8, nprobe=16, backend=backend))
        refine.train(base)
    refine.add_with_ids(base, ids)
    exact = ref.pairwise(queries, base, "l2")
    radius = _radius(exact, "l2")
    lims, D, I = refine.range_search(queries, radius)
    base_lims, _, base_I = refine.base_index.range_search(queries, radius)
    for q in range(queries.shape[0]):
        got = I[lims[q]:lims[q + 1]]
        candidates = base_I[base_lims[q]:base_lims[q + 1]]
        rows = (candidates - 3) // 7
        expected = np.sort(candidates[exact[q, rows] < radius - 1e-4])
        assert set(expected) <= set(got) <= set(candidates)
        np.testing.assert_allclose(D[lims[q]:lims[q + 1]], exact[q, (got - 3) // 7], rtol=1e-5,
                                   atol=1e-4)
        assert (D[lims[q]:lims[q + 1]] < radius).all()

    pca = pqkit.PCA(D_DIM, 8).train(base)
    pre = pqkit.IndexPreTransform(pca, pqkit.IndexFlat(8, "cosine", backend=backend))
    pre.add(base)
    transformed = pca.apply(base)
    sims = ref.pairwise(pca.apply(queries), transformed, "cosine")
    lims, D, I = pre.range_search(queries, 0.9)
    cand = np.ones(sims.shape, dtype=bool)
    ref.assert_range_matches(lims, D, I, sims, cand, 0.9, "cosine", atol=1e-5)
    assert lims[-1] > 0
