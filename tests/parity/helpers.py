"""Moving codebooks, centroids and codes between pqkit and faiss, and tie-tolerant comparisons."""

from __future__ import annotations

import numpy as np

import pqkit
from tests import reference as ref

RTOL = 1e-5


def faiss_metric(faiss, metric: str):
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def faiss_codebooks(faiss, pq) -> np.ndarray:
    """faiss ProductQuantizer centroids as (M, ksub, dsub) float32."""
    return faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).copy()


def set_faiss_codebooks(faiss, pq, codebooks: np.ndarray) -> None:
    assert codebooks.shape == (pq.M, pq.ksub, pq.dsub)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), pq.centroids)


def faiss_tables(faiss, pq, x: np.ndarray, metric: str) -> np.ndarray:
    """faiss ADC tables (n, M, ksub): squared L2 or inner products of sub-vectors."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], pq.M * pq.ksub), dtype=np.float32)
    compute = pq.compute_distance_tables if metric == "l2" else pq.compute_inner_prod_tables
    compute(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(out))
    return out.reshape(x.shape[0], pq.M, pq.ksub)


def faiss_invlists(faiss, index) -> dict:
    """id -> (list number, code bytes) of a faiss IndexIVF."""
    invlists = faiss.extract_index_ivf(index).invlists
    out = {}
    for list_no in range(invlists.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * invlists.code_size).copy()
        codes = codes.reshape(size, invlists.code_size)
        for i, c in zip(ids, codes):
            out[int(i)] = (list_no, c)
    return out


def pqkit_invlists(index: pqkit.IndexIVFPQ) -> dict:
    """id -> (list number, code bytes) of a pqkit IVF index.

    pqkit has no public per-list accessor; the inverted lists object (core ``InvertedLists``) is
    read through the index's private attribute, as faiss tests read ``index.invlists``.
    """
    out = {}
    invlists = index._invlists
    for list_no in range(index.nlist):
        ids = np.asarray(invlists.list_ids(list_no))
        codes = np.asarray(invlists.list_codes(list_no))
        for i, c in zip(ids, codes):
            out[int(i)] = (list_no, c)
    return out


def assert_codes_match(x: np.ndarray, codebooks: np.ndarray, codes_a: np.ndarray, codes_b: np.ndarray,
                       nbits: int) -> int:
    """Packed codes identical; where not, every differing sub-code must be a float near-tie
    (both candidate distances within rel 1e-5) and those must be < 0.1% of all sub-codes."""
    M = codebooks.shape[0]
    a = ref.unpack_codes(codes_a, M, nbits)
    b = ref.unpack_codes(codes_b, M, nbits)
    n_ties = ref.assert_codes_equal_up_to_ties(x, codebooks, a, b, rtol=RTOL, max_mismatch_fraction=1e-3)
    same_rows = (a == b).all(1)
    np.testing.assert_array_equal(codes_a[same_rows], codes_b[same_rows], err_msg="byte layout differs")
    return n_ties


def faiss_padding_to_inf(D: np.ndarray, I: np.ndarray) -> np.ndarray:
    """faiss pads missing results with +-FLT_MAX; pqkit (and the tests) use +-inf."""
    D = np.array(D)
    missing = I < 0
    D[missing] = np.copysign(np.inf, D[missing])
    return D


def assert_same_neighbours(D_a, I_a, D_b, I_b, D_b_next, atol: float, rtol: float = RTOL,
                           exempt_rows=None) -> int:
    """Two top-k results of the same search agree up to near-ties.

    ``D_b_next`` (nq,) is b's (k+1)-th distance, to judge ties at the boundary. Distances must be
    allclose rank by rank; ids may differ only at a rank whose distance is near-tied (within
    ``rtol * |D| + atol``) with a neighbouring rank of b. ``exempt_rows`` (bool (nq,)) marks
    queries whose candidate sets may legitimately differ (e.g. a near-tie between the last probed
    and the first unprobed coarse centroid); they are not compared. Returns the number of
    tolerated id swaps.
    """
    nq, k = D_b.shape
    assert D_a.dtype == np.float32 and I_a.dtype == np.int64
    D_b = faiss_padding_to_inf(D_b, I_b)
    D_b_next = np.where(np.isfinite(D_b_next) & (np.abs(D_b_next) < 3e38), D_b_next, np.copysign(np.inf, D_b_next))
    keep = np.ones(nq, dtype=bool) if exempt_rows is None else ~np.asarray(exempt_rows)
    D_a, I_a, D_b, I_b, D_b_next = D_a[keep], I_a[keep], D_b[keep], I_b[keep], D_b_next[keep]
    np.testing.assert_allclose(D_a, D_b, rtol=rtol, atol=atol, err_msg="distances differ rank by rank")
    extended = np.concatenate([D_b, D_b_next[:, None]], axis=1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        tol = rtol * np.abs(extended) + atol
    rows, cols = np.nonzero(I_a != I_b)
    bad = []
    for r, j in zip(rows, cols):
        neighbours = [jj for jj in (j - 1, j + 1) if 0 <= jj <= k]
        if not any(extended[r, j] == extended[r, jj] or abs(extended[r, j] - extended[r, jj]) <= tol[r, j]
                   for jj in neighbours):
            bad.append((int(r), int(j), int(I_a[r, j]), int(I_b[r, j]), float(D_a[r, j]), float(D_b[r, j])))
    assert not bad, (
        f"{len(bad)} id mismatches without a near-tie, first ones (row among compared, rank, id a, id b, "
        f"D a, D b): {bad[:5]}"
    )
    return int(rows.size)
