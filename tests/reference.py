"""Tiny NumPy reimplementations that the compiled kernels are checked against.

Everything here is computed in float64 and written for clarity, not speed: inputs stay small.
Comparisons with float32 results from pqkit/faiss go through the tie-tolerant helpers at the end,
which accept a different order only where two candidates are equally good within rounding.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------
# distances and exact search


def pairwise(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Distance matrix (nx, ny) in float64: squared L2, or inner product for "ip"/"cosine".

    For "cosine" the rows of x and y are L2-normalised first (pqkit's definition).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    if metric in ("ip", "cosine"):
        return x @ y.T
    # The expansion is exact enough in float64 for float32-sized inputs.
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(sq, 0.0)


def higher_is_better(metric: str) -> bool:
    return metric in ("ip", "cosine")


def knn(dist: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a distance matrix, padded like pqkit: (D float64 (nq,k), I int64 (nq,k)).

    Ties are broken by the smaller column (a stable sort), padding is inf/-1 for L2 and -inf/-1
    for inner-product metrics.
    """
    nq, n = dist.shape
    order = np.argsort(-dist if higher_is_better(metric) else dist, axis=1, kind="stable")[:, :k]
    kv = min(k, n)
    D = np.full((nq, k), -np.inf if higher_is_better(metric) else np.inf)
    I = np.full((nq, k), -1, dtype=np.int64)
    D[:, :kv] = np.take_along_axis(dist, order[:, :kv], axis=1)
    I[:, :kv] = order[:, :kv]
    return D, I


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """k-recall@k: mean fraction of the true k neighbours found among the k returned."""
    nq, k = truth.shape
    return sum(np.intersect1d(found[r], truth[r]).size for r in range(nq)) / (nq * k)


# ---------------------------------------------------------------------------------------------
# k-means


def kmeans_objective(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over points of the squared L2 distance to the nearest centroid."""
    return float(pairwise(x, centroids, "l2").min(axis=1).sum())


# ---------------------------------------------------------------------------------------------
# product quantization (Jegou, Douze, Schmid, "Product quantization for nearest neighbor search",
# TPAMI 2011): x = [x_1 .. x_M], each sub-vector of dsub = d / M dims is replaced by its nearest
# sub-centroid; the code is the M sub-centroid numbers.


def split(x: np.ndarray, M: int) -> np.ndarray:
    """(n, d) -> (n, M, dsub) in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], M, x.shape[1] // M)


def pq_sub_distances(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Squared L2 from every sub-vector to every sub-centroid: (n, M, ksub) float64."""
    M = codebooks.shape[0]
    xs = split(x, M)
    cb = codebooks.astype(np.float64)
    return ((xs[:, :, None, :] - cb[None]) ** 2).sum(-1)


def pq_assign(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Nearest sub-centroid per sub-vector: int64 (n, M) (ties to the smaller number)."""
    return pq_sub_distances(x, codebooks).argmin(axis=2)


def pq_decode(indices: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Concatenate the chosen sub-centroids: float32 (n, d)."""
    M = codebooks.shape[0]
    parts = codebooks[np.arange(M)[None, :], indices]  # (n, M, dsub)
    return parts.reshape(indices.shape[0], -1).astype(np.float32)


def pq_tables(x: np.ndarray, codebooks: np.ndarray, metric: str) -> np.ndarray:
    """ADC look-up tables (n, M, ksub) float64: ||x_m - c_mk||^2 for "l2", <x_m, c_mk> for "ip"."""
    if metric == "l2":
        return pq_sub_distances(x, codebooks)
    xs = split(x, codebooks.shape[0])
    return np.einsum("nmd,mkd->nmk", xs, codebooks.astype(np.float64))


def adc(tables: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Asymmetric distances (nq, n): sum_m tables[q, m, indices[i, m]]."""
    M = tables.shape[1]
    # tables[:, m, indices[:, m]] has shape (nq, n) for each m.
    return sum(tables[:, m, indices[:, m]] for m in range(M))


def code_size(M: int, nbits: int) -> int:
    return (M * nbits + 7) // 8


def pack_codes(indices: np.ndarray, nbits: int) -> np.ndarray:
    """FAISS bit layout: code m occupies bits [m*nbits, (m+1)*nbits), least significant bit first.

    Bit b of the code stream is bit (b % 8) of byte b // 8.
    """
    indices = np.asarray(indices, dtype=np.int64)
    n, M = indices.shape
    bits = (indices[:, :, None] >> np.arange(nbits)) & 1  # (n, M, nbits), LSB first
    bits = bits.reshape(n, M * nbits).astype(np.uint8)
    padded = np.zeros((n, code_size(M, nbits) * 8), dtype=np.uint8)
    padded[:, : M * nbits] = bits
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_codes(codes: np.ndarray, M: int, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: int64 (n, M)."""
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : M * nbits].reshape(-1, M, nbits)
    return (bits.astype(np.int64) << np.arange(nbits)).sum(axis=2)


# ---------------------------------------------------------------------------------------------
# tie-tolerant comparisons


def distance_tolerance(*arrays: np.ndarray, rel: float = 1e-5) -> float:
    """An absolute tolerance for float32 distances computed from these vectors.

    float32 squared distances computed through ||x||^2 + ||y||^2 - 2<x,y> carry an absolute error
    of a few ulps of the norms squared, so the tolerance scales with the largest squared norm.
    """
    scale = max(float(np.max(np.sum(np.asarray(a, dtype=np.float64) ** 2, axis=-1))) for a in arrays)
    return rel * max(scale, 1e-30)


def assert_codes_equal_up_to_ties(
    x: np.ndarray, codebooks: np.ndarray, got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5,
    max_mismatch_fraction: float = 1e-3,
) -> int:
    """Sub-codes (n, M) must be equal, except where both candidates are equally near.

    A mismatch is accepted only when ||x_m - c_got||^2 and ||x_m - c_expected||^2 agree within
    ``rtol`` (relative to the larger of the two plus the sub-vector's squared norm scale) and such
    near-ties make up less than ``max_mismatch_fraction`` of all sub-codes. Returns the number of
    tolerated mismatches.
    """
    got = np.asarray(got, dtype=np.int64)
    expected = np.asarray(expected, dtype=np.int64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    rows, subs = np.nonzero(got != expected)
    if rows.size == 0:
        return 0
    xs = split(x, codebooks.shape[0])[rows, subs]
    cb = codebooks.astype(np.float64)
    d_got = ((xs - cb[subs, got[rows, subs]]) ** 2).sum(-1)
    d_exp = ((xs - cb[subs, expected[rows, subs]]) ** 2).sum(-1)
    scale = np.maximum(np.maximum(d_got, d_exp), (xs * xs).sum(-1)) + 1e-30
    gap = np.abs(d_got - d_exp) / scale
    worst = int(np.argmax(gap))
    assert gap.max() <= rtol, (
        f"{rows.size} sub-codes differ and they are not near-ties: vector {rows[worst]}, sub-quantizer "
        f"{subs[worst]}: got code {got[rows[worst], subs[worst]]} at distance {d_got[worst]!r}, expected "
        f"{expected[rows[worst], subs[worst]]} at distance {d_exp[worst]!r} (relative gap {gap[worst]:.3g})"
    )
    assert rows.size <= max_mismatch_fraction * got.size, (
        f"{rows.size} of {got.size} sub-codes are near-ties that resolved differently (limit "
        f"{max_mismatch_fraction:.2%})"
    )
    return int(rows.size)


def assert_knn_equal_up_to_ties(
    D: np.ndarray,
    I: np.ndarray,
    dist: np.ndarray,
    k: int,
    metric: str,
    atol: float,
    rtol: float = 1e-5,
    ids: np.ndarray | None = None,
) -> None:
    """Check a search result (D, I) against the full reference distance matrix ``dist`` (nq, n).

    Requirements:
    - shapes (nq, k), D float32, I int64; padding (inf or -inf, -1) exactly after min(k, n) columns;
    - each row holds distinct ids, and the distance reported for an id is its true distance;
    - the reported distances equal the k best true distances (so the id set is right up to ties);
    - ``ids`` (optional, (n,)) maps reference columns to the ids the index returns.
    """
    nq, n = dist.shape
    assert D.shape == (nq, k) and I.shape == (nq, k), (D.shape, I.shape, (nq, k))
    assert D.dtype == np.float32, D.dtype
    assert I.dtype == np.int64, I.dtype
    kv = min(k, n)
    pad = -np.inf if higher_is_better(metric) else np.inf
    assert np.all(I[:, kv:] == -1), "ids past min(k, ntotal) must be -1"
    assert np.all(D[:, kv:] == pad), f"distances past min(k, ntotal) must be {pad}"
    if kv == 0:
        return
    valid = I[:, :kv]
    assert np.all(valid >= 0), "fewer results than min(k, ntotal)"
    if ids is None:
        columns = valid
    else:
        lookup = {int(v): c for c, v in enumerate(ids)}
        columns = np.vectorize(lambda v: lookup.get(int(v), -1), otypes=[np.int64])(valid)
        assert np.all(columns >= 0), "search returned ids that were never added"
    for row in range(nq):
        assert np.unique(columns[row]).size == kv, f"row {row} repeats an id: {valid[row]}"
    true_of_found = np.take_along_axis(dist, columns, axis=1)
    np.testing.assert_allclose(
        D[:, :kv], true_of_found, rtol=rtol, atol=atol,
        err_msg="reported distance differs from the true distance of the reported id",
    )
    best = np.sort(-dist if higher_is_better(metric) else dist, axis=1)[:, :kv]
    if higher_is_better(metric):
        best = -best
    np.testing.assert_allclose(
        D[:, :kv], best, rtol=rtol, atol=atol,
        err_msg="the reported neighbours are not the k best (beyond near-ties)",
    )
    step = np.diff(D[:, :kv].astype(np.float64), axis=1)
    assert np.all(step <= 0) if higher_is_better(metric) else np.all(step >= 0), "rows are not sorted best first"


# ---------------------------------------------------------------------------------------------
# filtered and range searches


def _columns_of(I: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """Reference columns of returned ids (the ids themselves when ``ids`` is None)."""
    if ids is None:
        return I
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids[order], I), ids.size - 1)
    columns = order[pos]
    assert np.all(ids[columns] == I), "search returned ids that were never added"
    return columns


def assert_filtered_knn(D, I, dist, candidates, k, metric, atol, rtol=1e-5, ids=None) -> None:
    """A filtered top-k search against the reference distances ``dist`` (nq, n), where
    ``candidates`` (nq, n) bool marks the columns query q may return (allowed by the filter and,
    for IVF, in a probed list): each row holds min(k, #candidates) distinct candidates with their
    true distances, the best ones up to near-ties, sorted, then padding."""
    nq, n = dist.shape
    assert D.shape == I.shape == (nq, k) and D.dtype == np.float32 and I.dtype == np.int64
    hib = higher_is_better(metric)
    pad = -np.inf if hib else np.inf
    for q in range(nq):
        kv = min(k, int(candidates[q].sum()))
        assert np.all(I[q, kv:] == -1) and np.all(D[q, kv:] == pad), (
            f"query {q}: expected {kv} results then padding, got ids {I[q]}")
        if kv == 0:
            continue
        assert np.all(I[q, :kv] >= 0), f"query {q}: fewer than {kv} results: {I[q]}"
        cols = _columns_of(I[q, :kv], ids)
        assert np.unique(cols).size == kv, f"query {q} repeats an id"
        assert candidates[q, cols].all(), (
            f"query {q} returned ids the filter excludes or outside its lists: "
            f"{I[q, :kv][~candidates[q, cols]]}")
        np.testing.assert_allclose(D[q, :kv], dist[q, cols], rtol=rtol, atol=atol,
                                   err_msg=f"query {q}: reported distances are not the true ones")
        values = dist[q, candidates[q]]
        best = (-np.sort(-values) if hib else np.sort(values))[:kv]
        np.testing.assert_allclose(D[q, :kv], best, rtol=rtol, atol=atol,
                                   err_msg=f"query {q}: not the {kv} best allowed neighbours")
        step = np.diff(D[q, :kv].astype(np.float64))
        assert np.all(step <= 0) if hib else np.all(step >= 0), f"query {q} is not sorted"


def assert_range_matches(lims, D, I, dist, candidates, radius, metric, atol, rtol=1e-5,
                         ids=None) -> int:
    """A range search against the reference distances ``dist`` (nq, n), ``candidates`` as for
    :func:`assert_filtered_knn`: FAISS's layout, each query's results the candidates with
    ``dist < radius`` (L2) or ``dist > radius`` (ip, cosine) up to a tolerance at the boundary,
    with their true distances, sorted best first (ties: smaller id). Returns the total number
    of results."""
    nq, n = dist.shape
    assert lims.dtype == np.int64 and lims.shape == (nq + 1,) and lims[0] == 0
    assert np.all(np.diff(lims) >= 0)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (lims[-1],)
    hib = higher_is_better(metric)
    tol = rtol * abs(radius) + atol if np.isfinite(radius) else 0.0
    for q in range(nq):
        got_I, got_D = I[lims[q]:lims[q + 1]], D[lims[q]:lims[q + 1]]
        cols = _columns_of(got_I, ids) if got_I.size else got_I
        assert np.unique(cols).size == cols.size, f"query {q} repeats an id"
        assert candidates[q, cols].all(), f"query {q} returned excluded ids"
        np.testing.assert_allclose(got_D, dist[q, cols], rtol=rtol, atol=atol,
                                   err_msg=f"query {q}: reported distances are not the true ones")
        inside = dist[q] > radius if hib else dist[q] < radius
        surely_in = candidates[q] & ((dist[q] > radius + tol) if hib else (dist[q] < radius - tol))
        assert np.isin(np.flatnonzero(surely_in), cols).all(), f"query {q} misses results"
        assert (inside[cols] | (np.abs(dist[q, cols] - radius) <= tol)).all(), (
            f"query {q} returned results outside the radius")
        key = -got_D.astype(np.float64) if hib else got_D.astype(np.float64)
        assert np.all((np.diff(key) > 0) | ((np.diff(key) == 0) & (np.diff(got_I) > 0))), (
            f"query {q}: results are not sorted by (distance, id)")
    return int(lims[-1])
