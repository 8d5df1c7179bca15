"""Parity with faiss on injected codebooks and centroids (copied both ways).

Given the same codebooks (and coarse centroids), pqkit and faiss must produce the same codes, the
same ADC distance tables (rtol 1e-5) and the same top-k ids. Float rounding may legitimately differ
between two implementations, so a difference is accepted only where it is a near-tie: both
candidates within relative 1e-5 of each other (and such codes must be < 0.1% of all sub-codes).
"""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from tests import reference as ref
from tests.conftest import clustered_split, glove_split
from tests.parity import helpers as h

pytestmark = pytest.mark.parity

K = 10
DIRECTIONS = ["faiss_to_pqkit", "pqkit_to_faiss"]


@pytest.fixture(scope="module", params=["clustered-32", "glove-50"])
def data(request):
    """(train (10000, d), base (10000, d), queries (200, d), M)."""
    if request.param == "clustered-32":
        vectors, queries = clustered_split(20_000, 200, 32, seed=3)
        M = 8
    else:
        vectors, queries = glove_split(20_000, 200, seed=1)
        M = 10
    return vectors[:10_000], vectors[10_000:], queries, M


def _atol(*arrays) -> float:
    return ref.distance_tolerance(*arrays, rel=h.RTOL)


# ---------------------------------------------------------------------------------------------
# IndexPQ


def _pq_pair(faiss, data, nbits, metric, direction):
    train, base, queries, M = data
    d = base.shape[1]
    ours = pqkit.IndexPQ(d, M, nbits, metric=metric)
    theirs = faiss.IndexPQ(d, M, nbits, h.faiss_metric(faiss, metric))
    if direction == "faiss_to_pqkit":
        theirs.train(train)
        ours.pq.set_codebooks(h.faiss_codebooks(faiss, theirs.pq))
    else:
        ours.train(train)
        h.set_faiss_codebooks(faiss, theirs.pq, ours.pq.codebooks)
        theirs.is_trained = True
    np.testing.assert_array_equal(ours.pq.codebooks, h.faiss_codebooks(faiss, theirs.pq))
    return ours, theirs


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nbits", [4, 8])
def test_index_pq(faiss, data, nbits, metric, direction):
    train, base, queries, M = data
    ours, theirs = _pq_pair(faiss, data, nbits, metric, direction)
    codebooks = ours.pq.codebooks

    # codes
    our_codes = ours.pq.encode(base)
    their_codes = theirs.pq.compute_codes(base)
    assert our_codes.shape == their_codes.shape == (base.shape[0], theirs.code_size)
    h.assert_codes_match(base, codebooks, our_codes, their_codes, nbits)

    # ADC tables
    our_tables = ours.pq.distance_table(queries, metric)
    their_tables = h.faiss_tables(faiss, theirs.pq, queries, metric)
    np.testing.assert_allclose(our_tables, their_tables, rtol=h.RTOL, atol=h.RTOL * np.abs(their_tables).max())

    # search over the very same codes
    ours.add(base)
    theirs.add_sa_codes(our_codes)
    assert ours.ntotal == theirs.ntotal == base.shape[0]
    np.testing.assert_array_equal(faiss.vector_to_array(theirs.codes).reshape(our_codes.shape), our_codes)
    D_ours, I_ours = ours.search(queries, K)
    D_theirs, I_theirs = theirs.search(queries, K + 1)
    h.assert_same_neighbours(D_ours, I_ours, D_theirs[:, :K], I_theirs[:, :K], D_theirs[:, K],
                             atol=_atol(queries, base))


# ---------------------------------------------------------------------------------------------
# IndexIVFPQ


def _ivfpq_pair(faiss, data, metric, direction, nlist=64):
    train, base, queries, M = data
    d = base.shape[1]
    ours = pqkit.IndexIVFPQ(d, nlist, M, 8, metric=metric)
    quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    theirs = faiss.IndexIVFPQ(quantizer, d, nlist, M, 8, h.faiss_metric(faiss, metric))
    if direction == "faiss_to_pqkit":
        theirs.train(train)
        ours.set_centroids(quantizer.reconstruct_n(0, nlist))
        ours.pq.set_codebooks(h.faiss_codebooks(faiss, theirs.pq))
    else:
        ours.train(train)
        quantizer.add(ours.centroids)
        h.set_faiss_codebooks(faiss, theirs.pq, ours.pq.codebooks)
        theirs.is_trained = True
        theirs.precompute_table()
    assert ours.is_trained and theirs.is_trained
    np.testing.assert_array_equal(ours.centroids, quantizer.reconstruct_n(0, nlist))
    np.testing.assert_array_equal(ours.pq.codebooks, h.faiss_codebooks(faiss, theirs.pq))
    return ours, theirs, quantizer


def _coarse_scores(x, centroids, metric):
    """float64 coarse distances (L2) or negated inner products: smaller is better."""
    scores = ref.pairwise(x, centroids, "l2" if metric == "l2" else "ip")
    return scores if metric == "l2" else -scores


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_index_ivfpq(faiss, data, metric, direction):
    train, base, queries, M = data
    ours, theirs, quantizer = _ivfpq_pair(faiss, data, metric, direction)
    centroids, codebooks = ours.centroids, ours.pq.codebooks
    nlist = ours.nlist

    ours.add(base)
    theirs.add(base)
    assert ours.ntotal == theirs.ntotal == base.shape[0]

    # inverted lists: the same list for every vector (up to coarse near-ties), the same codes
    ours_map, theirs_map = h.pqkit_invlists(ours), h.faiss_invlists(faiss, theirs)
    assert ours_map.keys() == theirs_map.keys() == set(range(base.shape[0]))
    ids = np.arange(base.shape[0])
    our_lists = np.array([ours_map[i][0] for i in ids])
    their_lists = np.array([theirs_map[i][0] for i in ids])
    moved = np.flatnonzero(our_lists != their_lists)
    if moved.size:
        scores = _coarse_scores(base[moved], centroids, metric)
        a = scores[np.arange(moved.size), our_lists[moved]]
        b = scores[np.arange(moved.size), their_lists[moved]]
        scale = np.maximum(np.abs(a), (base[moved].astype(np.float64) ** 2).sum(1))
        assert np.all(np.abs(a - b) <= h.RTOL * scale), f"vectors {moved[:5]} went to different lists"
        assert moved.size <= 1e-3 * base.shape[0], f"{moved.size} coarse near-ties"
    same = our_lists == their_lists
    residuals = base[same] - centroids[our_lists[same]]
    our_codes = np.stack([ours_map[i][1] for i in ids[same]])
    their_codes = np.stack([theirs_map[i][1] for i in ids[same]])
    h.assert_codes_match(residuals, codebooks, our_codes, their_codes, 8)
    np.testing.assert_array_equal(ours.list_sizes()[:nlist].sum(), base.shape[0])

    # tables of the residual quantizer
    query_lists = np.argmin(_coarse_scores(queries, centroids, metric), axis=1)
    query_residuals = (queries - centroids[query_lists]).astype(np.float32)
    table_metric = "l2" if metric == "l2" else "ip"
    their_tables = h.faiss_tables(faiss, theirs.pq, query_residuals, table_metric)
    np.testing.assert_allclose(ours.pq.distance_table(query_residuals, table_metric), their_tables,
                               rtol=h.RTOL, atol=h.RTOL * np.abs(their_tables).max())

    # search: identical ids up to near-ties; queries whose nprobe-th and next coarse centroid are
    # near-tied may probe different lists, and are allowed to differ
    coarse = np.sort(_coarse_scores(queries, centroids, metric), axis=1)
    for nprobe in (1, 8, nlist):
        ours.nprobe = nprobe
        theirs.nprobe = nprobe
        boundary_ties = np.zeros(queries.shape[0], dtype=bool)
        if nprobe < nlist:
            gap = np.abs(coarse[:, nprobe] - coarse[:, nprobe - 1])
            boundary_ties = gap <= h.RTOL * np.abs(coarse[:, nprobe]) + _atol(queries, centroids)
        assert boundary_ties.sum() <= 0.01 * queries.shape[0]
        D_ours, I_ours = ours.search(queries, K)
        D_theirs, I_theirs = theirs.search(queries, K + 1)
        h.assert_same_neighbours(D_ours, I_ours, D_theirs[:, :K], I_theirs[:, :K], D_theirs[:, K],
                                 atol=_atol(queries, base, centroids), exempt_rows=boundary_ties)
