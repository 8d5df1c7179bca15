"""Search results of every index against NumPy brute force (exact distances or ADC on the same codes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pqkit
from pqkit.indexes.params import SearchParams
from tests import reference as ref

METRICS = ["l2", "ip", "cosine"]


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# IndexFlat


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 10, 57])
def test_flat_matches_brute_force(clustered, metric, k):
    base, queries = clustered
    base = base[:5000]
    index = pqkit.IndexFlat(32, metric=metric)
    index.add(base)
    D, I = index.search(queries, k)
    dist = ref.pairwise(queries, base, metric)
    ref.assert_knn_equal_up_to_ties(D, I, dist, k, metric, atol=ref.distance_tolerance(queries, base))
    # Away from near-ties the ids are exactly the stable-sorted reference.
    _, I_ref = ref.knn(dist, k, metric)
    assert (I == I_ref).mean() > 0.99


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("near_rows", ["sampled", "others"])
def test_flat_block_selection_whatever_the_row_pattern(near_rows, backend, simd_level):
    """The core finds each block's k-th key below a cut from every 8th key (both selected by a
    kernel of each SIMD level); rows laid out so the cut is too tight (only every 8th row near the
    query) or loose must give the same top-k."""
    rng = np.random.default_rng(8)
    n, d, k = 2048, 16, 32
    near = (np.arange(n) % 8 == 0) if near_rows == "sampled" else (np.arange(n) % 8 != 0)
    base = np.where(near[:, None], 0.0, 5.0) + rng.standard_normal((n, d)) * 0.1
    queries = rng.standard_normal((3, d)) * 0.1
    index = pqkit.IndexFlat(d, backend=backend)
    index.add(base.astype(np.float32))
    D, I = index.search(queries.astype(np.float32), k)
    dist = ref.pairwise(queries.astype(np.float32), base.astype(np.float32), "l2")
    ref.assert_knn_equal_up_to_ties(D, I, dist, k, "l2", atol=1e-4)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("near_rows", ["one_set", "all_but_one_set", "every_row"])
def test_flat_small_k_bound_whatever_the_row_pattern(near_rows, k, backend, simd_level):
    """For small k the core bounds each block's k-th key by the k-th smallest minimum of 32 key
    sets (row j in set j mod 32, selected by a kernel of each SIMD level); rows laid out so that
    the near rows fill one set, every set but one, or all rows must give the brute-force top-k."""
    rng = np.random.default_rng(9)
    n, d = 1500, 16
    j = np.arange(n)
    near = {"one_set": j % 32 == 0, "all_but_one_set": j % 32 != 0, "every_row": np.ones(n, bool)}[near_rows]
    base = (np.where(near[:, None], 0.0, 5.0) + rng.standard_normal((n, d)) * 0.1).astype(np.float32)
    queries = (rng.standard_normal((20, d)) * 0.1).astype(np.float32)
    index = pqkit.IndexFlat(d, backend=backend)
    index.add(base)
    D, I = index.search(queries, k)
    dist = ref.pairwise(queries, base, "l2")
    ref.assert_knn_equal_up_to_ties(D, I, dist, k, "l2", atol=1e-4)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_flat_small_k_ties_across_many_rows(k, backend, simd_level):
    """Forty copies of five rows (enough rows for the small-k bound; every key set's minimum is
    the same tied key): each query's k results are its own copies, smallest ids first."""
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((5, 8)).astype(np.float32)
    index = pqkit.IndexFlat(8, backend=backend)
    index.add(np.tile(rows, (40, 1)))  # row i is a copy of rows[i % 5]
    D, I = index.search(rows, k)
    for q in range(5):
        np.testing.assert_array_equal(I[q], q + 5 * np.arange(k))
        assert np.all(D[q] == D[q, 0])


def test_flat_self_search_finds_itself(clustered):
    base, _ = clustered
    index = pqkit.IndexFlat(32)
    index.add(base[:3000])
    D, I = index.search(base[:100], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(100))
    assert np.all(np.abs(D[:, 0]) <= 1e-3)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_flat_kept_norms_follow_every_change(clustered, backend):
    """IndexFlat keeps its rows' squared norms between searches; after each add, remove and reset
    its results still equal a freshly built index's, bit for bit."""
    base, queries = clustered
    a, b = base[:700], base[700:1500]
    index = pqkit.IndexFlat(32, backend=backend)

    def same_as_fresh(rows, ids):
        fresh = pqkit.IndexFlat(32, backend=backend)
        fresh.add_with_ids(rows, ids)
        for got, want in zip(index.search(queries, 7), fresh.search(queries, 7)):
            np.testing.assert_array_equal(got, want)

    index.add(a)
    same_as_fresh(a, np.arange(700))
    index.add(b)
    same_as_fresh(base[:1500], np.arange(1500))
    index.remove_ids(np.arange(0, 1500, 3))
    keep = np.setdiff1d(np.arange(1500), np.arange(0, 1500, 3))
    same_as_fresh(base[keep], keep)
    index.reset()
    index.add(b)
    same_as_fresh(b, np.arange(800))
    index.remove_ids(np.arange(100))  # as many rows out as in: kept norms of the old rows would fit
    index.add_with_ids(a[:100], np.arange(800, 900))
    same_as_fresh(np.vstack([b[100:], a[:100]]), np.arange(100, 900))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_flat_exact_ties_broken_by_smaller_id(metric):
    """Duplicated rows have equal distances: the smaller id comes first."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 8)).astype(np.float32)
    base = np.vstack([rows, rows, rows])  # ids i, i+5, i+10 hold the same vector
    index = pqkit.IndexFlat(8, metric=metric)
    index.add(base)
    D, I = index.search(rows, 15)
    if metric == "l2":
        for q in range(5):
            np.testing.assert_array_equal(I[q, :3], [q, q + 5, q + 10])
    # Within any run of equal distances the ids ascend.
    for q in range(5):
        for j in range(14):
            if D[q, j] == D[q, j + 1]:
                assert I[q, j] < I[q, j + 1], (q, j, D[q], I[q])


@pytest.mark.parametrize("kind", ["flat", "pq2", "pq8", "ivfpq4", "ivfpq4-estimates"])
def test_top_k_is_the_prefix_of_the_full_ranking_under_heavy_ties(kind, simd_level):
    """Many equal distances (duplicated rows, or few distinct codes): the top k, for k on both
    sides of the small-k selection structure's limit (64), is the first k of the full ranking
    by (distance, id), ties by ascending id. "ivfpq4-estimates": IndexRefine's candidate
    ranking by the quantized table's integer estimates, whose first step pushes into a sorted
    array (k <= 64) or a heap (larger k) in different orders."""
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((30, 8)).astype(np.float32)
    base = np.repeat(rows, 100, axis=0)[rng.permutation(3000)]  # each vector 100 times
    queries = rng.standard_normal((6, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        if kind == "flat":
            index = pqkit.IndexFlat(8)
        elif kind.startswith("ivfpq4"):
            index = pqkit.IndexIVFPQ(8, 4, 4, 4, nprobe=4, seed=2)
            index.train(base)
        else:
            index = pqkit.IndexPQ(8, 2, 2 if kind == "pq2" else 8, seed=2)
            index.train(base)
    index.add(base)
    search = index.search
    if kind == "ivfpq4-estimates":
        search = lambda x, k: index._search_candidates(x, k, SearchParams())  # noqa: E731
    D_all, I_all = search(queries, index.ntotal)
    for q in range(len(queries)):
        np.testing.assert_array_equal(np.lexsort((I_all[q], D_all[q])), np.arange(index.ntotal))
    assert (np.diff(D_all, axis=1) == 0).mean() > 0.5  # mostly ties
    for k in (1, 10, 63, 64, 65, 200):
        D, I = search(queries, k)
        np.testing.assert_array_equal(I, I_all[:, :k], err_msg=f"k={k}")
        np.testing.assert_array_equal(D, D_all[:, :k], err_msg=f"k={k}")


# ---------------------------------------------------------------------------------------------
# IndexPQ: ADC on the very codes the index stores


@pytest.fixture(scope="module")
def trained_pq(clustered):
    base, _ = clustered
    return pqkit.ProductQuantizer(32, 8, nbits=8, seed=1).train(base[:10_000]).codebooks


@pytest.mark.parametrize("metric", METRICS)
def test_index_pq_matches_numpy_adc(clustered, trained_pq, metric):
    base, queries = clustered
    base = base[:8000]
    index = pqkit.IndexPQ(32, 8, 8, metric=metric)
    index.pq.set_codebooks(trained_pq)
    assert index.is_trained
    index.add(base)
    stored = _unit(base).astype(np.float32) if metric == "cosine" else base
    q = _unit(queries).astype(np.float32) if metric == "cosine" else queries
    codes = index.pq.encode(stored)
    indices = ref.unpack_codes(codes, 8, 8)
    np.testing.assert_array_equal(index.reconstruct_n(np.arange(base.shape[0])), ref.pq_decode(indices, trained_pq))
    tables = ref.pq_tables(q, trained_pq, "l2" if metric == "l2" else "ip")
    dist = ref.adc(tables, indices)
    D, I = index.search(queries, 10)
    ref.assert_knn_equal_up_to_ties(D, I, dist, 10, metric, atol=ref.distance_tolerance(q, stored))


@pytest.mark.parametrize("nbits", [4, 5])
def test_index_pq_small_nbits_matches_numpy_adc(clustered, nbits):
    base, queries = clustered
    base = base[:4000]
    index = pqkit.IndexPQ(32, 16, nbits)
    index.train(base)
    index.add(base)
    codes = index.pq.encode(base)
    dist = ref.adc(ref.pq_tables(queries, index.pq.codebooks, "l2"), ref.unpack_codes(codes, 16, nbits))
    D, I = index.search(queries, 20)
    ref.assert_knn_equal_up_to_ties(D, I, dist, 20, "l2", atol=ref.distance_tolerance(queries, base))


# ---------------------------------------------------------------------------------------------
# IVF with nprobe = nlist: every list is scanned, so the result is the flat one over the stored data


@pytest.mark.parametrize("metric", METRICS)
def test_ivfflat_full_probe_equals_exact(clustered, metric):
    base, queries = clustered
    base = base[:6000]
    index = pqkit.IndexIVFFlat(32, 32, metric=metric)
    index.train(base)
    index.add(base)
    index.nprobe = 32
    D, I = index.search(queries, 10)
    ref.assert_knn_equal_up_to_ties(D, I, ref.pairwise(queries, base, metric), 10, metric,
                                    atol=ref.distance_tolerance(queries, base))
    assert int(index.list_sizes().sum()) == base.shape[0]


@pytest.mark.parametrize("metric", METRICS)
def test_ivfpq_full_probe_equals_flat_over_reconstructions(clustered, metric):
    base, queries = clustered
    base = base[:10_000]
    index = pqkit.IndexIVFPQ(32, 16, 8, 8, metric=metric)
    index.train(base)
    index.add(base)
    index.nprobe = 16
    recon = index.reconstruct_n(np.arange(base.shape[0]))
    q = _unit(queries) if metric == "cosine" else queries
    # Reconstructions are already normalised-then-quantized for cosine: compare by inner product.
    dist = ref.pairwise(q, recon, "l2" if metric == "l2" else "ip")
    D, I = index.search(queries, 10)
    ref.assert_knn_equal_up_to_ties(D, I, dist, 10, metric, atol=ref.distance_tolerance(q, recon), rtol=1e-4)


def test_ivfpq_fewer_probes_is_a_subset_search(clustered):
    """With nprobe < nlist, every returned id lies in one of the nprobe lists nearest the query."""
    base, queries = clustered
    base = base[:10_000]
    index = pqkit.IndexIVFPQ(32, 16, 8, 8, nprobe=3)
    index.train(base)
    index.add(base)
    km = pqkit.KMeans(32, 16).set_centroids(index.centroids)
    _, lists_of_base = km.assign(base)
    probe = np.argsort(ref.pairwise(queries, index.centroids, "l2"), axis=1, kind="stable")[:, :3]
    _, I = index.search(queries, 10)
    for q in range(queries.shape[0]):
        found = I[q][I[q] >= 0]
        assert np.isin(lists_of_base[found], probe[q]).all()


# ---------------------------------------------------------------------------------------------
# hypothesis: random small shapes


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    d=st.integers(1, 12),
    nq=st.integers(1, 5),
    k=st.integers(1, 50),
    metric=st.sampled_from(["l2", "ip"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_flat_random_shapes(n, d, nq, k, metric, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    index = pqkit.IndexFlat(d, metric=metric)
    index.add(base)
    D, I = index.search(queries, k)
    dist = ref.pairwise(queries, base, metric) if n else np.zeros((nq, 0))
    ref.assert_knn_equal_up_to_ties(D, I, dist, k, metric, atol=ref.distance_tolerance(queries, base if n else queries))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    M=st.integers(1, 4),
    dsub=st.integers(1, 4),
    nbits=st.integers(1, 6),
    nq=st.integers(1, 4),
    k=st.integers(1, 50),
    metric=st.sampled_from(["l2", "ip"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_pq_search_random_shapes(n, M, dsub, nbits, nq, k, metric, seed):
    rng = np.random.default_rng(seed)
    d = M * dsub
    codebooks = rng.standard_normal((M, 1 << nbits, dsub)).astype(np.float32)
    base = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    index = pqkit.IndexPQ(d, M, nbits, metric=metric)
    index.pq.set_codebooks(codebooks)
    index.add(base)
    D, I = index.search(queries, k)
    if n:
        indices = ref.unpack_codes(index.pq.encode(base), M, nbits)
        dist = ref.adc(ref.pq_tables(queries, codebooks, metric), indices)
    else:
        dist = np.zeros((nq, 0))
    # float32 rounding of M table entries, each of the order of ||q||^2 + ||c||^2
    atol = 1e-5 * M * (1.0 + ref.distance_tolerance(queries, codebooks.reshape(-1, d // M), rel=1.0))
    ref.assert_knn_equal_up_to_ties(D, I, dist, k, metric, atol=atol)


def test_reconstruct_after_changes_uses_fresh_id_order():
    """IndexFlat keeps its ids' sort order between lookups; it must follow removals and additions
    (here the row count stays the same, so a stale order would fit)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 8), dtype=np.float32)
    index = pqkit.IndexFlat(8)
    index.add_with_ids(base, np.arange(300)[::-1].copy())
    wanted = np.arange(0, 300, 7)
    np.testing.assert_array_equal(index.reconstruct_n(wanted), base[299 - wanted])
    index.remove_ids(np.arange(20))
    index.add_with_ids(base[:20], np.arange(1000, 1020))
    ids = np.concatenate([np.arange(1000, 1020), np.arange(20, 300, 9)])
    np.testing.assert_array_equal(index.reconstruct_n(ids), np.vstack([base[:20], base[299 - np.arange(20, 300, 9)]]))
