"""Filtered search (``search(x, k, filter=...)``) on every index type and both engines.

Three oracles: the search of an index holding only the allowed vectors (same codebooks and
centroids, so the same keys: results must be bit-identical), a NumPy reference over the stored
reconstructions restricted to the allowed ids (and, for IVF, to the probed lists), and the
other engine, SIMD levels and thread counts (bit-identical again).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pqkit
from tests import reference as ref
from tests.conftest import clustered_split

D_DIM, NLIST, K, NPROBE = 16, 16, 10, 4
KINDS = ("Flat", "PQ", "IVFFlat", "IVFPQ4", "IVFPQ8")
BACKENDS = pqkit.available_backends()


@pytest.fixture(scope="module")
def data():
    base, queries = clustered_split(3_000, 40, D_DIM, seed=23, n_clusters=30)
    ids = np.arange(base.shape[0], dtype=np.int64) * 7 + 3  # ids are not row numbers
    return base, queries, ids


@pytest.fixture(scope="module")
def trained(data):
    """Centroids and codebooks trained once (compiled engine), injected into every index."""
    base, _, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        centroids = pqkit.KMeans(D_DIM, NLIST, niter=8, backend="cpp").train(base).centroids
        assign = pqkit.KMeans(D_DIM, NLIST).set_centroids(centroids).assign(base)[1]
        residuals = base - centroids[assign]
        books = {
            "PQ": pqkit.ProductQuantizer(D_DIM, 4, 8, niter=5, backend="cpp").train(base).codebooks,
            "IVFPQ4": pqkit.ProductQuantizer(D_DIM, 8, 4, niter=5, backend="cpp").train(
                residuals).codebooks,
            "IVFPQ8": pqkit.ProductQuantizer(D_DIM, 4, 8, niter=5, backend="cpp").train(
                residuals).codebooks,
        }
    return centroids, books


def make(kind, backend, metric, trained):
    centroids, books = trained
    index = {
        "Flat": lambda: pqkit.IndexFlat(D_DIM, metric, backend=backend),
        "PQ": lambda: pqkit.IndexPQ(D_DIM, 4, 8, metric, backend=backend),
        "IVFFlat": lambda: pqkit.IndexIVFFlat(D_DIM, NLIST, metric, nprobe=NPROBE, backend=backend),
        "IVFPQ4": lambda: pqkit.IndexIVFPQ(D_DIM, NLIST, 8, 4, metric, nprobe=NPROBE, backend=backend),
        "IVFPQ8": lambda: pqkit.IndexIVFPQ(D_DIM, NLIST, 4, 8, metric, nprobe=NPROBE, backend=backend),
    }[kind]()
    if kind.startswith("IVF"):
        index.set_centroids(centroids)
    if kind in books:
        index.pq.set_codebooks(books[kind])
    return index


def filled(kind, backend, metric, trained, data, rows=None):
    base, _, ids = data
    rows = np.arange(base.shape[0]) if rows is None else rows
    index = make(kind, backend, metric, trained)
    index.add_with_ids(base[rows], ids[rows])
    return index


def shared_filters(ids):
    """(name, filter, allowed rows) of filters shared by every query."""
    rng = np.random.default_rng(5)
    n = ids.size
    sparse = np.sort(rng.choice(n, n // 10, replace=False))  # 10 %: IndexFlat's per-row path
    dense = rng.random(n) < 0.5  # 50 %: the blocked paths with masks
    mask = np.zeros(ids.max() + 1, dtype=bool)
    mask[ids[dense]] = True
    excluded = rng.choice(n, n // 3, replace=False)
    keep = np.ones(n, dtype=bool)
    keep[excluded] = False
    return [
        ("batch", ids[sparse][::-1].copy(), sparse),  # any order, a shorthand
        ("bitmap", pqkit.IDSelectorBitmap(mask), np.flatnonzero(dense)),
        ("not", pqkit.IDSelectorNot(ids[excluded]), np.flatnonzero(keep)),
    ]


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_filtered_search_equals_the_search_of_the_allowed_vectors(backend, kind, metric, trained,
                                                                   data):
    """The filter skips codes inside the scan: the result is bit for bit that of an index that
    holds the allowed vectors only (same keys, same order by (distance, id))."""
    _, queries, ids = data
    index = filled(kind, backend, metric, trained, data)
    for name, selector, rows in shared_filters(ids):
        D, I = index.search(queries, K, filter=selector)
        subset = filled(kind, backend, metric, trained, data, rows)
        D_sub, I_sub = subset.search(queries, K)
        np.testing.assert_array_equal(I, I_sub, err_msg=name)
        np.testing.assert_array_equal(D, D_sub, err_msg=name)
        assert np.isin(I[I >= 0], ids[rows]).all(), name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_query_filter_equals_one_search_per_query(backend, kind, trained, data):
    """A different set per query: each row equals the search of an index holding that query's
    set; the four ways to write the filter give the same result."""
    base, queries, ids = data
    queries = queries[:5]
    rng = np.random.default_rng(9)
    sets = [np.sort(rng.choice(base.shape[0], size, replace=False))
            for size in (3, 40, 400, 1500, 0)]  # from fewer than k to half the index, and none
    index = filled(kind, backend, "l2", trained, data)
    lists = [ids[rows] for rows in sets]
    offsets = np.concatenate(([0], np.cumsum([s.size for s in sets])))
    D, I = index.search(queries, K, filter=lists)
    for other in (pqkit.IDSelectorPerQuery(lists), (offsets, np.concatenate(lists)),
                  pqkit.IDSelectorPerQuery.from_csr(offsets, np.concatenate([s[::-1] for s in lists]))):
        D2, I2 = index.search(queries, K, filter=other)
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_array_equal(D2, D)
    for q, rows in enumerate(sets):
        if rows.size:
            D_sub, I_sub = filled(kind, backend, "l2", trained, data, rows).search(queries[q:q + 1], K)
        else:
            D_sub, I_sub = make(kind, backend, "l2", trained).search(queries[q:q + 1], K)
        np.testing.assert_array_equal(I[q], I_sub[0])
        np.testing.assert_array_equal(D[q], D_sub[0])
    assert (I[0, 3:] == -1).all() and (I[4] == -1).all()  # 3 allowed, then none: padding


def _probed(index, queries, nprobe):
    """(nq, nlist) bool: the lists each query probes, by float64 distances to the centroids, and
    the queries whose nprobe-th and next centroids are near-tied (their probes may differ)."""
    scores = ref.pairwise(queries, index.centroids, "l2" if index.metric == "l2" else "ip")
    scores = scores if index.metric == "l2" else -scores
    order = np.argsort(scores, axis=1, kind="stable")
    probed = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(probed, order[:, :nprobe], True, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    ties = np.abs(ranked[:, nprobe] - ranked[:, nprobe - 1]) <= 1e-4 * (1 + np.abs(ranked[:, nprobe]))
    return probed, ties


def candidates_of(index, queries, ids, allowed):
    """(nq, n) bool: what each query may return (allowed ids, and for IVF in a probed list), and
    the queries to skip (near-tied probes)."""
    cand = np.broadcast_to(allowed, (queries.shape[0], ids.size)).copy()
    skip = np.zeros(queries.shape[0], dtype=bool)
    if hasattr(index, "centroids"):
        probed, skip = _probed(index, queries, index.nprobe)
        list_nos = np.asarray(index._invlists.locate(ids)[0])
        cand &= probed[:, list_nos]
    return cand, skip


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_filtered_search_matches_numpy(backend, kind, metric, trained, data):
    """The k best allowed vectors (by their distance to the stored reconstruction, restricted to
    the probed lists for IVF) up to near-ties, with exactly min(k, allowed) results."""
    base, queries, ids = data
    index = filled(kind, backend, metric, trained, data)
    recon = index.reconstruct_n(ids)
    dist = ref.pairwise(queries, recon, metric)
    atol = ref.distance_tolerance(queries, base)
    rng = np.random.default_rng(3)
    for fraction in (0.01, 0.1, 0.5):
        allowed = rng.random(ids.size) < fraction
        D, I = index.search(queries, K, filter=ids[allowed])
        cand, skip = candidates_of(index, queries, ids, allowed)
        ref.assert_filtered_knn(D[~skip], I[~skip], dist[~skip], cand[~skip], K, metric, atol,
                                ids=ids)
        # a query finds k allowed results whenever k allowed vectors lie in its lists
        enough = cand.sum(axis=1) >= K
        assert (I[enough] >= 0).all()


@pytest.mark.parametrize("kind", ["Flat", "PQ", "IVFFlat", "IVFPQ4", "IVFPQ8"])
def test_filters_identical_at_every_simd_level_thread_count_and_engine(kind, trained, data,
                                                                       simd_level):
    """Filtered results do not depend on the SIMD level, the thread count (including one query
    split over threads) or the engine."""
    base, queries, ids = data
    index = filled(kind, "cpp", "l2", trained, data)
    rng = np.random.default_rng(1)
    sets = [ids[rng.random(ids.size) < 0.05] for _ in range(queries.shape[0])]
    filters = [ids[rng.random(ids.size) < 0.2], pqkit.IDSelectorPerQuery(sets)]
    core = pqkit.engine.core("cpp")
    previous = core._set_min_split_bytes(0)  # one query's scan is split over threads
    try:
        for selector in filters:
            nprobe = {"nprobe": 8} if kind.startswith("IVF") else {}
            index.n_threads = 1
            expected = index.search(queries, K, filter=selector, **nprobe)
            index.n_threads = 3
            got = index.search(queries, K, filter=selector, **nprobe)
            np.testing.assert_array_equal(got[1], expected[1])
            np.testing.assert_array_equal(got[0], expected[0])
            for q in range(4):  # single queries: the split paths
                D1, I1 = index.search(queries[q:q + 1], K, filter=_row(selector, q), **nprobe)
                np.testing.assert_array_equal(I1[0], expected[1][q])
                np.testing.assert_array_equal(D1[0], expected[0][q])
    finally:
        core._set_min_split_bytes(previous)
    if "numba" in BACKENDS:
        other = filled(kind, "numba", "l2", trained, data)
        for selector in filters:
            nprobe = {"nprobe": 8} if kind.startswith("IVF") else {}
            D, I = index.search(queries, K, filter=selector, **nprobe)
            D2, I2 = other.search(queries, K, filter=selector, **nprobe)
            np.testing.assert_array_equal(I2, I)
            np.testing.assert_array_equal(D2, D)


def _row(selector, q):
    """The filter of query q alone (a per-query filter's set q; a shared one as it is)."""
    if isinstance(selector, pqkit.IDSelectorPerQuery):
        return [selector.ids[selector.offsets[q]:selector.offsets[q + 1]]]
    return selector


@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_forms_agree_with_their_numpy_meaning(backend, trained, data):
    """A batch and the bitmap of the same ids, an exclusion and the bitmap of the complement,
    a bitmap with an offset start: the same results, and ``accepts`` says what the engine
    does."""
    base, queries, ids = data
    index = filled("IVFPQ8", backend, "l2", trained, data)
    rng = np.random.default_rng(2)
    allowed = rng.random(ids.size) < 0.3
    start = int(ids.min())
    mask = np.zeros(int(ids.max()) - start + 1, dtype=bool)
    mask[ids[allowed] - start] = True
    forms = [ids[allowed], pqkit.IDSelectorBatch(ids[allowed]),
             pqkit.IDSelectorBitmap(mask, start=start),
             pqkit.IDSelectorNot(ids[~allowed]),
             pqkit.IDSelectorNot(pqkit.IDSelectorNot(ids[allowed]))]
    expected = index.search(queries, K, filter=forms[0])
    for form in forms:
        selector = pqkit.filters.as_selector(form)
        np.testing.assert_array_equal(selector.accepts(ids), allowed)
        got = index.search(queries, K, filter=form)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    # a bool array is a bitmap over ids 0..len-1: none of these ids (all > 3) is allowed
    assert (index.search(queries, K, filter=np.ones(3, dtype=bool))[1] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_filters_pass_through_wrappers(backend, trained, data):
    """IndexRefine filters its base index's scan (and its candidates), IndexPreTransform its
    wrapped index's: every id returned is allowed, and the results equal the wrappers over the
    allowed vectors only."""
    base, queries, ids = data
    rng = np.random.default_rng(4)
    rows = np.flatnonzero(rng.random(ids.size) < 0.2)

    def refine(rows_):
        index = pqkit.IndexRefine(make("IVFPQ4", backend, "l2", trained), k_factor=3)
        index.add_with_ids(base[rows_], ids[rows_])
        return index

    def pretransform(rows_):
        pca = pqkit.PCA(D_DIM, 8).train(base)
        index = pqkit.IndexPreTransform(pca, pqkit.IndexFlat(8, backend=backend))
        index.add_with_ids(base[rows_], ids[rows_])
        return index

    every = np.arange(ids.size)
    for build in (refine, pretransform):
        D, I = build(every).search(queries, K, filter=ids[rows], **(
            {"nprobe": 6} if build is refine else {}))
        D_sub, I_sub = build(rows).search(queries, K, **({"nprobe": 6} if build is refine else {}))
        np.testing.assert_array_equal(I, I_sub)
        np.testing.assert_array_equal(D, D_sub)
        assert np.isin(I[I >= 0], ids[rows]).all()


def test_filter_objects_validate_and_describe_themselves():
    batch = pqkit.IDSelectorBatch(np.array([5, 1, 5], dtype=np.uint16))
    assert batch.ids.tolist() == [1, 5] and not batch.ids.flags.writeable
    assert repr(batch) == "IDSelectorBatch(2 ids)"
    per_query = pqkit.IDSelectorPerQuery.from_csr([0, 2, 2, 5], [9, 3, 4, 4, 1])
    assert per_query.offsets.tolist() == [0, 2, 2, 4] and per_query.ids.tolist() == [3, 9, 1, 4]
    assert per_query.accepts([[3, 4], [3, 9], [1, 9]]).tolist() == [[True, False], [False, False],
                                                                    [True, False]]
    assert pqkit.IDSelectorNot(per_query).accepts([[3]], queries=[[2]]).tolist() == [[True]]
    with pytest.raises(ValueError, match="holds 3 id sets.*expected 5 offsets"):
        per_query.check_queries(4)
    with pytest.raises(TypeError, match="abstract"):
        pqkit.filters.IDSelector()


@pytest.mark.parametrize("kind", ["Flat", "PQ", "IVFPQ8"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_ids_spread_over_a_huge_range_use_sorted_ids(backend, kind, trained, data):
    """Ids up to 2**62: a batch is passed as sorted ids (a bitmap of their range would not fit),
    searched by binary search, with the same results as the allowed vectors' own index."""
    base, queries, _ = data
    huge = np.sort(np.random.default_rng(8).choice(2**62, base.shape[0], replace=False))
    huge_data = (base, queries, huge.astype(np.int64))
    index = filled(kind, backend, "l2", trained, huge_data)
    rows = np.flatnonzero(np.random.default_rng(2).random(base.shape[0]) < 0.3)
    for selector, allowed_rows in ((pqkit.IDSelectorBatch(huge[rows]), rows),
                                   (pqkit.IDSelectorNot(huge[rows]),
                                    np.setdiff1d(np.arange(base.shape[0]), rows))):
        spec = (selector.selector if isinstance(selector, pqkit.IDSelectorNot) else selector)._spec()
        assert spec["bitmap"] is None and spec["ids"] is not None
        D, I = index.search(queries, K, filter=selector)
        D_sub, I_sub = filled(kind, backend, "l2", trained, huge_data, allowed_rows).search(queries, K)
        np.testing.assert_array_equal(I, I_sub)
        np.testing.assert_array_equal(D, D_sub)


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_selectors_check_their_arguments(backend):
    core = pqkit.engine.core(backend)
    ids = np.array([1, 5, 9], dtype=np.int64)
    bits = np.ones(2, dtype=np.uint8)
    for args, match in [
        ((bits, 0, ids, None, False), "a bitmap or an id array, not both nor neither"),
        ((None, 0, None, None, False), "a bitmap or an id array, not both nor neither"),
        ((None, 0, ids[::-1].copy(), None, False), "sorted within each set"),
        ((None, 0, ids, np.array([0, 2, 1, 3], dtype=np.int64), False), "non-decreasing"),
        ((None, 0, ids, np.array([0, 2], dtype=np.int64), False), "end at the number of ids"),
        ((bits, -1, None, None, False), "start must be >= 0"),
        ((bits, 0, None, np.array([0, 0], dtype=np.int64), False), "shared by every query"),
    ]:
        with pytest.raises(ValueError, match=match):
            core.IDSelector(*args)
    selector = core.IDSelector(None, 0, np.array([3, 1], dtype=np.int64), np.array([0, 1, 2],
                                                                                   dtype=np.int64), False)
    assert selector.n_sets == 2 and not selector.exclude
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="one id set per query for 2 queries, got 3 queries"):
        core.flat_search(x, x, 1, "l2", 1, None, selector)
