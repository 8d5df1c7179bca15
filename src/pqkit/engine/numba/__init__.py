"""The portable engine: the subset of ``pqkit._core`` that the Python layer uses, in Numba.

Same function and class names, argument order and results as the C++ core (``cpp/bindings.cpp``),
so an index picks either module through :func:`pqkit.engine.core` and runs unchanged. It is
used when the compiled extension cannot be imported, or when asked for (``backend="numba"``,
:func:`pqkit.set_backend`, ``PQKIT_BACKEND=numba``).

Same results, not just similar ones. Every float result is computed in the order the C++ kernels
document in ``cpp/kernels.h`` (and with no FMA contraction; Numba does not contract without
``fastmath``):

* long dot products and squared norms use 16 lanes (element ``j`` into lane ``j % 16``) reduced
  by the tree ``(l + l+8), (l + l+4), (l + l+2), (l + l+1)``;
* squared L2 through norms is ``max(||x||^2 + ||y||^2 - 2 <x, y>, 0)``, except where the core
  computes it directly (nearest centroid for ``d <= 32``, IVF-Flat list scans);
* ADC keys are ``base + (bias + sum_m T[m, code_m])`` summed left to right in float32;
* top-k keeps the k smallest ``(key, id)`` pairs in that total order (ties: smaller id).

The C++ scans skip most codes with a byte-quantized table but give every code that can enter
the top-k its exact key, so their results equal this plain exact scan (the tests check codes,
ids and distances against the C++ backend as an independent oracle).

What differs: k-means training (``kmeans``, ``pq_train``) follows the same algorithm
(seeded subsample, k distinct initial points, Lloyd iterations with a sequential update in
double, the same empty-cluster repair) but draws its random numbers from NumPy's generator, so
trained centroids differ from the C++ backend's; with the same centroids and codebooks every
other result is identical. There are no SIMD levels: ``simd_level()`` reports ``"scalar"``.

Kernels are compiled on first use (``cache=True`` keeps them on disk next to this file) and run
with the GIL released (``nogil=True``); ``n_threads > 1`` splits the rows over a shared thread
pool. Results never depend on the thread count (rows are independent).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

__all__ = [
    "CoarseQuantizer",
    "InvertedLists",
    "PQCodebooks",
    "available_simd_levels",
    "coarse_assign",
    "flat_search",
    "sqnorms",
    "hardware_concurrency",
    "ivfflat_search",
    "ivfpq_code_bias",
    "ivfpq_search",
    "kmeans",
    "pq_decode",
    "pq_distance_tables",
    "pq_encode",
    "pq_pack_codes",
    "pq_search",
    "pq_train",
    "pq_unpack_codes",
    "set_simd_level",
    "simd_level",
]

_jit = numba.njit(cache=True, nogil=True)

_LANES = 16
_DIRECT_MAX_DIM = 33  # the core computes nearest-centroid L2 directly below this dimension
_IP_DIRECT_MAX_DIM = 256  # and up to this one through norms and sequential inner products
# (and coarse quantizers up to this dimension are searched on sequential inner products)
_F32_INF = np.float32(np.inf)


# ============================================================================ SIMD level API
def simd_level() -> str:
    """The Numba engine has one code path, reported as ``"scalar"``."""
    return "scalar"


def available_simd_levels() -> list:
    return ["scalar"]


def set_simd_level(level: str) -> None:
    if level not in ("scalar", "none", "NONE"):
        raise ValueError(
            f"SIMD level {level!r} is not available with the numba backend (it has one code "
            "path, 'scalar'); use backend='cpp' for the compiled SIMD kernels"
        )


def hardware_concurrency() -> int:
    return os.cpu_count() or 1


# ============================================================================ argument checks
def _checked(a, dtype, name: str, shape: tuple) -> np.ndarray:
    """The engine's last line of defence (as in bindings.cpp): dtype, C order, shape (-1: any)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(
            f"{name} must be a {np.dtype(dtype)} array, got {got}; convert with "
            f"numpy.asarray(..., dtype=numpy.{np.dtype(dtype)})"
        )
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; try numpy.ascontiguousarray")
    if a.ndim != len(shape):
        raise ValueError(f"{name} must have {len(shape)} dimensions, got shape {a.shape}")
    for axis, want in enumerate(shape):
        if want >= 0 and a.shape[axis] != want:
            raise ValueError(
                f"{name} has shape {a.shape}, expected size {want} in dimension {axis}"
            )
    return a


def _positive(value, name: str) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _parse_metric(metric: str) -> bool:
    """True for L2, False for inner product."""
    if metric == "l2":
        return True
    if metric == "ip":
        return False
    raise ValueError(f"metric must be 'l2' or 'ip' at the engine level, got {metric!r}")


def _pq_shape(d: int, M: int, nbits: int):
    if M < 1 or d < 1 or d % M != 0:
        raise ValueError(f"d must be a positive multiple of M: got d = {d}, M = {M}")
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must be in 1..16, got {nbits}")
    return d // M, 1 << nbits, (M * nbits + 7) // 8


# ============================================================================ threads
_pool = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=hardware_concurrency(),
                                       thread_name_prefix="pqkit-numba")
        return _pool


def _parallel_rows(kernel, n: int, n_threads: int, block: int) -> None:
    """Call ``kernel(begin, end)`` over [0, n) in blocks; the kernels release the GIL.

    Blocks run in order in the calling thread when ``n_threads == 1``; otherwise over a shared
    pool, the caller waiting (interruptibly) for them. Each block writes its own rows only.
    """
    if n == 0:
        return
    n_threads = max(1, int(n_threads))
    if n_threads == 1 or n <= block:
        for begin in range(0, n, block):
            kernel(begin, min(n, begin + block))
        return
    n_parts = min(n_threads, (n + block - 1) // block)
    step = (n + n_parts - 1) // n_parts
    futures = [_executor().submit(kernel, b, min(n, b + step)) for b in range(0, n, step)]
    try:
        for f in futures:
            f.result()
    except BaseException:
        for f in futures:
            f.cancel()
        raise


# ============================================================================ float kernels
@_jit
def _reduce_lanes(acc):
    a0 = acc[0] + acc[8]
    a1 = acc[1] + acc[9]
    a2 = acc[2] + acc[10]
    a3 = acc[3] + acc[11]
    a4 = acc[4] + acc[12]
    a5 = acc[5] + acc[13]
    a6 = acc[6] + acc[14]
    a7 = acc[7] + acc[15]
    b0 = a0 + a4
    b1 = a1 + a5
    b2 = a2 + a6
    b3 = a3 + a7
    c0 = b0 + b2
    c1 = b1 + b3
    return c0 + c1


@_jit
def _dot(x, y, acc):
    """<x, y> in the 16-lane order; ``acc`` is a float32[16] scratch buffer."""
    d = x.shape[0]
    for lane in range(16):
        acc[lane] = np.float32(0.0)
    j = 0
    while j + 16 <= d:
        for lane in range(16):
            p = x[j + lane] * y[j + lane]
            acc[lane] = acc[lane] + p
        j += 16
    lane = 0
    while j + lane < d:
        p = x[j + lane] * y[j + lane]
        acc[lane] = acc[lane] + p
        lane += 1
    return _reduce_lanes(acc)


@_jit
def _l2sqr(x, y, acc):
    """||x - y||^2 computed directly, in the 16-lane order."""
    d = x.shape[0]
    for lane in range(16):
        acc[lane] = np.float32(0.0)
    j = 0
    while j + 16 <= d:
        for lane in range(16):
            diff = x[j + lane] - y[j + lane]
            p = diff * diff
            acc[lane] = acc[lane] + p
        j += 16
    lane = 0
    while j + lane < d:
        diff = x[j + lane] - y[j + lane]
        p = diff * diff
        acc[lane] = acc[lane] + p
        lane += 1
    return _reduce_lanes(acc)


@_jit
def _sqnorms(x, out):
    acc = np.empty(16, dtype=np.float32)
    for i in range(x.shape[0]):
        out[i] = _dot(x[i], x[i], acc)


@_jit
def _l2_key(x_norm, y_norm, ip):
    v = x_norm + y_norm - np.float32(2.0) * ip
    return np.float32(0.0) if v < np.float32(0.0) else v


@_jit
def _to_centroids_t(q, ct, l2, out):
    """out[c] = sum_j (q_j - ct[j, c])^2 (l2) or sum_j q_j ct[j, c], sequential over j."""
    dsub, ksub = ct.shape
    for c in range(ksub):
        out[c] = np.float32(0.0)
    for j in range(dsub):
        qj = q[j]
        for c in range(ksub):
            if l2:
                diff = qj - ct[j, c]
                p = diff * diff
            else:
                p = qj * ct[j, c]
            out[c] = out[c] + p


# ============================================================================ top-k
@_jit
def _better(k1, i1, k2, i2):
    return k1 < k2 or (k1 == k2 and i1 < i2)


@_jit
def _heap_buffers(k):
    """Keys and ids of a top-k heap (filled by _heap_push, emptied by _heap_write)."""
    return np.empty(k, dtype=np.float32), np.empty(k, dtype=np.int64)


@_jit
def _heap_push(hk, hi, size, key, idx):
    """Keep the k = len(hk) best (key, id) pairs; the worst sits at the root. Returns the size."""
    k = hk.shape[0]
    if size < k:
        pos = size
        while pos > 0:
            parent = (pos - 1) // 2
            if _better(hk[parent], hi[parent], key, idx):
                hk[pos] = hk[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hk[pos] = key
        hi[pos] = idx
        return size + 1
    if _better(key, idx, hk[0], hi[0]):
        _sift_down(hk, hi, size, key, idx)
    return size


@_jit
def _sift_down(hk, hi, size, key, idx):
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _better(hk[child], hi[child], hk[child + 1], hi[child + 1]):
            child += 1
        if _better(key, idx, hk[child], hi[child]):
            hk[pos] = hk[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hk[pos] = key
    hi[pos] = idx


@_jit
def _threshold(hk, size):
    return _F32_INF if size < hk.shape[0] else hk[0]


@_jit
def _heap_write(hk, hi, size, negate, D, I):
    """Best first into D, I (length k); padding (+-inf, -1); keys negated back for IP."""
    k = hk.shape[0]
    pad = -_F32_INF if negate else _F32_INF
    for pos in range(size, k):
        D[pos] = pad
        I[pos] = -1
    n = size
    while n > 0:  # pop the worst into the last free slot
        key, idx = hk[0], hi[0]
        D[n - 1] = -key if negate else key
        I[n - 1] = idx
        n -= 1
        if n > 0:
            _sift_down(hk, hi, n, hk[n], hi[n])


# ============================================================================ exact search
@_jit
def _top_k_of_ips(xnorm, ips, ynorms, l2, hk, hi, Dq, Iq):
    """One query's top-k from its inner products with every row: keys via norms (L2) or -ip."""
    size = 0
    th = _F32_INF
    for j in range(ips.shape[0]):
        key = _l2_key(xnorm, ynorms[j], ips[j]) if l2 else -ips[j]
        if key <= th:
            size = _heap_push(hk, hi, size, key, j)
            th = _threshold(hk, size)
    _heap_write(hk, hi, size, not l2, Dq, Iq)


@_jit
def _search_block(x, y, ynorms, l2, D, I):
    """Top-k (k = D.shape[1]) rows of y for each row of x; keys via norms (L2) or -<x, y>."""
    acc = np.empty(16, dtype=np.float32)
    ips = np.empty(y.shape[0], dtype=np.float32)
    hk, hi = _heap_buffers(D.shape[1])
    for q in range(x.shape[0]):
        xq = x[q]
        xnorm = _dot(xq, xq, acc) if l2 else np.float32(0.0)
        for j in range(y.shape[0]):
            ips[j] = _dot(xq, y[j], acc)
        _top_k_of_ips(xnorm, ips, ynorms, l2, hk, hi, D[q], I[q])


@_jit
def _search_block_t(x, ct, ynorms, l2, D, I):
    """``_search_block`` with each inner product summed sequentially over the dimension on the
    transposed rows ct (d x n), as the core searches a VectorSet that keeps them transposed."""
    acc = np.empty(16, dtype=np.float32)
    ips = np.empty(ct.shape[1], dtype=np.float32)
    hk, hi = _heap_buffers(D.shape[1])
    for q in range(x.shape[0]):
        xq = x[q]
        xnorm = _dot(xq, xq, acc) if l2 else np.float32(0.0)
        _to_centroids_t(xq, ct, False, ips)
        _top_k_of_ips(xnorm, ips, ynorms, l2, hk, hi, D[q], I[q])


@_jit
def _assign_direct(x, ct, labels, dist):
    """Nearest centroid by direct squared L2 on transposed centroids (the core's d <= 32 path)."""
    buf = np.empty(ct.shape[1], dtype=np.float32)
    for i in range(x.shape[0]):
        _to_centroids_t(x[i], ct, True, buf)
        best = 0
        for c in range(1, buf.shape[0]):
            if buf[c] < buf[best]:
                best = c
        labels[i] = best
        dist[i] = buf[best]


@_jit
def _assign_ip_direct(x, ct, norms, labels, dist):
    """Nearest centroid by norms and sequential inner products on transposed centroids (the core's
    33 <= d <= 256 path): keys as ``_search_block`` makes them, the first smallest wins, NaN never."""
    buf = np.empty(ct.shape[1], dtype=np.float32)
    acc = np.empty(16, dtype=np.float32)
    for i in range(x.shape[0]):
        xnorm = _dot(x[i], x[i], acc)
        _to_centroids_t(x[i], ct, False, buf)
        best = -1
        best_key = _F32_INF
        for c in range(buf.shape[0]):
            key = _l2_key(xnorm, norms[c], buf[c])
            if key == key and (best < 0 or key < best_key):
                best = c
                best_key = key
        labels[i] = best
        dist[i] = best_key


class _NearestCentroid:
    """Centroids prepared for nearest-centroid assignment, as the core's NearestCentroid."""

    def __init__(self, centroids: np.ndarray, l2: bool):
        self.centroids = centroids
        self.l2 = l2
        self.direct = l2 and centroids.shape[1] < _DIRECT_MAX_DIM
        self.ip_direct = l2 and _DIRECT_MAX_DIM <= centroids.shape[1] <= _IP_DIRECT_MAX_DIM
        if self.direct or self.ip_direct:
            self.transposed = np.ascontiguousarray(centroids.T)
        self.norms = np.zeros(centroids.shape[0], dtype=np.float32)
        if l2:
            _sqnorms(centroids, self.norms)

    def assign_rows(self, x, labels, dist, begin, end) -> None:
        if self.direct:
            _assign_direct(x[begin:end], self.transposed, labels[begin:end], dist[begin:end])
            return
        if self.ip_direct:
            _assign_ip_direct(x[begin:end], self.transposed, self.norms, labels[begin:end], dist[begin:end])
            return
        D = dist[begin:end].reshape(-1, 1)
        I = labels[begin:end].reshape(-1, 1)
        _search_block(x[begin:end], self.centroids, self.norms, self.l2, D, I)

    def assign(self, x, n_threads):
        n = x.shape[0]
        labels = np.empty(n, dtype=np.int64)
        dist = np.empty(n, dtype=np.float32)
        _parallel_rows(lambda b, e: self.assign_rows(x, labels, dist, b, e), n, n_threads, 256)
        return labels, dist


@numba.njit(cache=True, nogil=True)
def _all_within(bits, limit):
    bad = 0
    for i in range(bits.size):
        bad |= (bits[i] & 0x7FFFFFFF) > limit
    return bad == 0


def all_finite(x, max_abs=np.inf):
    """Whether every value of a C-contiguous float32 array is finite with |value| <= max_abs
    (one integer compare per value on the bit patterns, as the compiled core does)."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous):
        raise TypeError(f"all_finite takes a C-contiguous float32 array, got {getattr(x, 'dtype', type(x))}")
    if not max_abs >= 0:
        raise ValueError(f"all_finite: max_abs must be >= 0, got {max_abs}")
    bound = np.float32(min(float(max_abs), float(np.finfo(np.float32).max)))
    limit = np.uint32(np.array([bound], dtype=np.float32).view(np.uint32)[0])
    return bool(_all_within(x.reshape(-1).view(np.uint32), limit))


def sqnorms(x, n_threads):
    """Squared norms of the rows, as the exact search computes them (float32 (n,))."""
    x = _checked(x, np.float32, "x", (-1, -1))
    out = np.empty(x.shape[0], dtype=np.float32)
    _sqnorms(x, out)
    return out


def flat_search(x, y, k, metric, n_threads, norms=None):
    """Exact top-k rows of ``y`` for each row of ``x``: (D float32 (nq, k), I int64 row numbers).
    ``norms``: y's squared norms from :func:`sqnorms`, if the caller keeps them (L2)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    y = _checked(y, np.float32, "y", (-1, x.shape[1]))
    l2 = _parse_metric(metric)
    k = _positive(k, "k")
    D = np.empty((x.shape[0], k), dtype=np.float32)
    I = np.empty((x.shape[0], k), dtype=np.int64)
    if l2 and norms is not None:
        norms = _checked(norms, np.float32, "norms", (y.shape[0],))
    else:
        norms = np.zeros(y.shape[0], dtype=np.float32)
        if l2:
            _sqnorms(y, norms)
    _parallel_rows(lambda b, e: _search_block(x[b:e], y, norms, l2, D[b:e], I[b:e]),
                   x.shape[0], n_threads, 16)
    return D, I


@_jit
def _rerank(x, y, rows, ids, l2, D, I):
    """Top-k (k = D.shape[1]) of each query's candidate rows by direct squared L2 or -<x, y>."""
    k = D.shape[1]
    acc = np.empty(16, dtype=np.float32)
    hk, hi = _heap_buffers(k)
    for q in range(x.shape[0]):
        size = 0
        for j in range(rows.shape[1]):
            r = rows[q, j]
            if r < 0:
                continue
            key = _l2sqr(x[q], y[r], acc) if l2 else -_dot(x[q], y[r], acc)
            size = _heap_push(hk, hi, size, key, ids[q, j])
        _heap_write(hk, hi, size, not l2, D[q], I[q])


def rerank(x, y, rows, ids, k, metric, n_threads):
    """Exact re-ranking: for each query the best ``k`` of its candidate rows of ``y``
    (``rows``, -1 for none), reported under ``ids``; ties by the smaller id."""
    x = _checked(x, np.float32, "x", (-1, -1))
    y = _checked(y, np.float32, "y", (-1, x.shape[1]))
    rows = _checked(rows, np.int64, "rows", (x.shape[0], -1))
    ids = _checked(ids, np.int64, "ids", rows.shape)
    l2 = _parse_metric(metric)
    k = _positive(k, "k")
    if rows.size and (int(rows.min()) < -1 or int(rows.max()) >= y.shape[0]):
        bad = int(rows.min()) if int(rows.min()) < -1 else int(rows.max())
        raise ValueError(f"candidate row {bad} is outside -1..{y.shape[0] - 1}")
    D, I = _alloc_result(x.shape[0], k)
    _parallel_rows(lambda b, e: _rerank(x[b:e], y, rows[b:e], ids[b:e], l2, D[b:e], I[b:e]),
                   x.shape[0], n_threads, 16)
    return D, I


def rerank_pq(x, pq, lists, rows, ids, k, metric, n_threads):
    """As :func:`rerank`, with the candidates stored as PQ codes: ``rows`` are offsets into list 0
    of ``lists`` (an IndexPQ's store), each decoded to its reconstruction first."""
    if lists.nlist != 1 or lists.code_size != pq.code_size:
        raise ValueError(f"rerank_pq needs one list of codes of {pq.code_size} bytes")
    x = _checked(x, np.float32, "x", (-1, pq.d))
    rows = _checked(rows, np.int64, "rows", (x.shape[0], -1))
    ny = lists.ntotal
    if rows.size and (int(rows.min()) < -1 or int(rows.max()) >= ny):
        bad = int(rows.min()) if int(rows.min()) < -1 else int(rows.max())
        raise ValueError(f"candidate row {bad} is outside -1..{ny - 1}")
    # Decode only the rows asked for, then re-rank those floats.
    wanted, local = np.unique(rows[rows >= 0], return_inverse=True)
    decoded = pq_decode(np.ascontiguousarray(lists.codes[wanted]), pq, n_threads)
    local_rows = np.full(rows.shape, -1, dtype=np.int64)
    local_rows[rows >= 0] = local
    return rerank(x, decoded, local_rows, ids, k, metric, n_threads)


def coarse_assign(x, centroids, metric, n_threads):
    """Nearest centroid of each row: (labels int64 (n,), distance float32 (n,))."""
    x = _checked(x, np.float32, "x", (-1, -1))
    centroids = _checked(centroids, np.float32, "centroids", (-1, x.shape[1]))
    _positive(centroids.shape[0], "nlist")
    return _NearestCentroid(centroids, _parse_metric(metric)).assign(x, n_threads)


# ============================================================================ k-means
@_jit
def _accumulate(x, labels, sums, counts):
    """Sequential per-cluster sums in double (deterministic, as the core's update)."""
    sums[:] = 0.0
    counts[:] = 0
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for j in range(x.shape[1]):
            sums[c, j] += x[i, j]


def _repair_empty_clusters(centroids, counts, rng) -> None:
    """An empty cluster takes over half of a cluster drawn with probability ~ (size - 1); the
    two centroids are pushed apart by a tiny symmetric perturbation (as the core does)."""
    eps = np.float32(1.0 / 1024.0)
    up, down = np.float32(1) + eps, np.float32(1) - eps
    for ci in np.flatnonzero(counts == 0):
        weights = np.maximum(counts - 1, 0)
        total = int(weights.sum())
        if total == 0:
            return
        r = int(rng.integers(0, total))
        cj = int(np.searchsorted(np.cumsum(weights), r, side="right"))
        centroids[ci] = centroids[cj]
        even = np.arange(centroids.shape[1]) % 2 == 0
        centroids[ci] *= np.where(even, up, down)
        centroids[cj] *= np.where(even, down, up)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def _kmeans_train(x, k, niter, seed, max_points_per_centroid, n_threads):
    n, d = x.shape
    if n < k:
        raise ValueError(
            "k-means needs at least as many training points as centroids: expected n >= "
            f"{k}, got n = {n}"
        )
    cap = n if max_points_per_centroid == 0 else min(n, k * max_points_per_centroid)
    if cap < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
        x = np.ascontiguousarray(x[rows])
        n = cap
    init = np.random.default_rng(seed + 1).choice(n, k, replace=False)
    centroids = np.ascontiguousarray(x[init])
    rng = np.random.default_rng(seed + 2)
    sums = np.empty((k, d), dtype=np.float64)
    counts = np.empty(k, dtype=np.int64)
    objective = 0.0
    for _ in range(max(int(niter), 1)):
        labels, dist = _NearestCentroid(centroids, True).assign(x, n_threads)
        objective = float(np.sum(dist, dtype=np.float64))
        _accumulate(x, labels, sums, counts)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        _repair_empty_clusters(centroids, counts, rng)
    return centroids, objective


def kmeans(x, k, niter, seed, max_points_per_centroid, n_threads):
    """L2 k-means: (centroids float32 (k, d), objective float)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    k = _positive(k, "k")
    return _kmeans_train(x, k, niter, int(seed), max(int(max_points_per_centroid), 0), n_threads)


def pq_train(x, M, nbits, niter, seed, max_points_per_centroid, n_threads):
    """Codebooks float32 (M, 2**nbits, d/M): k-means on each block of d/M columns."""
    x = _checked(x, np.float32, "x", (-1, -1))
    M, nbits = _positive(M, "M"), _positive(nbits, "nbits")
    dsub, ksub, _ = _pq_shape(x.shape[1], M, nbits)
    if x.shape[0] < ksub:
        raise ValueError(
            f"PQ training needs at least ksub = 2^nbits = {ksub} points, got {x.shape[0]}"
        )
    codebooks = np.empty((M, ksub, dsub), dtype=np.float32)
    for m in range(M):
        sub = np.ascontiguousarray(x[:, m * dsub:(m + 1) * dsub])
        codebooks[m], _ = _kmeans_train(sub, ksub, niter, int(seed),
                                        max(int(max_points_per_centroid), 0), n_threads)
    return codebooks


# ============================================================================ PQ codes
@_jit
def _code_index(code, m, nbits):
    """Sub-quantizer index m of one packed code (bits [m*nbits, (m+1)*nbits), little-endian)."""
    if nbits == 8:
        return np.int64(code[m])
    bit = m * nbits
    first = bit // 8
    last = (bit + nbits - 1) // 8
    word = np.uint32(0)
    for b in range(first, last + 1):
        word |= np.uint32(code[b]) << np.uint32(8 * (b - first))
    return np.int64((word >> np.uint32(bit % 8)) & np.uint32((1 << nbits) - 1))


@_jit
def _unpack(codes, M, nbits, out):
    for i in range(codes.shape[0]):
        for m in range(M):
            out[i, m] = _code_index(codes[i], m, nbits)


@_jit
def _pack(idx, nbits, codes):
    """Returns -1 on success, else the row of the first index out of [0, 2**nbits)."""
    ksub = 1 << nbits
    for i in range(idx.shape[0]):
        code = codes[i]
        code[:] = 0
        for m in range(idx.shape[1]):
            v = idx[i, m]
            if v < 0 or v >= ksub:
                return i
            bit = m * nbits
            word = np.uint32(v) << np.uint32(bit % 8)
            for b in range(bit // 8, (bit + nbits - 1) // 8 + 1):
                code[b] |= np.uint8(word & np.uint32(0xFF))
                word >>= np.uint32(8)
    return -1


class PQCodebooks:
    """Codebooks (copied) prepared for encoding and tables: transposed copies and norms.

    Parameters
    ----------
    codebooks : numpy.ndarray of float32, shape (M, ksub, dsub)
    nbits : int
    """

    def __init__(self, codebooks, nbits):
        if not isinstance(codebooks, np.ndarray) or codebooks.ndim != 3:
            shape = getattr(codebooks, "shape", None)
            raise ValueError(f"codebooks must have shape (M, ksub, dsub), got {shape}")
        M, ksub, dsub = codebooks.shape
        self.dsub, self.ksub, self.code_size = _pq_shape(M * dsub, M, _positive(nbits, "nbits"))
        _checked(codebooks, np.float32, "codebooks", (M, self.ksub, self.dsub))
        self.M, self.nbits, self.d = M, int(nbits), M * dsub
        self.codebooks = codebooks.copy()
        self.transposed = np.ascontiguousarray(self.codebooks.transpose(0, 2, 1))
        self.sqnorms = np.empty((M, self.ksub), dtype=np.float32)
        for m in range(M):
            _sqnorms(self.codebooks[m], self.sqnorms[m])
        self.assigners = [_NearestCentroid(self.codebooks[m], True) for m in range(M)]


def pq_unpack_codes(codes, M, nbits):
    M = _positive(M, "M")
    _, _, code_size = _pq_shape(M, M, _positive(nbits, "nbits"))
    codes = _checked(codes, np.uint8, "codes", (-1, code_size))
    out = np.empty((codes.shape[0], M), dtype=np.int32)
    _unpack(codes, M, int(nbits), out)
    return out


def pq_pack_codes(idx, nbits):
    idx = _checked(idx, np.int32, "idx", (-1, -1))
    M = _positive(idx.shape[1], "M")
    _, ksub, code_size = _pq_shape(M, M, _positive(nbits, "nbits"))
    codes = np.empty((idx.shape[0], code_size), dtype=np.uint8)
    bad = _pack(idx, int(nbits), codes)
    if bad >= 0:
        raise ValueError(
            f"code index out of range: expected 0 <= index < {ksub}, got row {bad}: {idx[bad]}"
        )
    return codes


def pq_encode(x, pq, n_threads):
    x = _checked(x, np.float32, "x", (-1, pq.d))
    n = x.shape[0]
    codes = np.empty((n, pq.code_size), dtype=np.uint8)

    def encode_rows(begin, end):
        nb = end - begin
        idx = np.empty((nb, pq.M), dtype=np.int32)
        labels = np.empty(nb, dtype=np.int64)
        dist = np.empty(nb, dtype=np.float32)
        for m in range(pq.M):
            sub = np.ascontiguousarray(x[begin:end, m * pq.dsub:(m + 1) * pq.dsub])
            pq.assigners[m].assign_rows(sub, labels, dist, 0, nb)
            idx[:, m] = labels
        _pack(idx, pq.nbits, codes[begin:end])

    _parallel_rows(encode_rows, n, n_threads, 256)
    return codes


@_jit
def _decode(codes, codebooks, nbits, out):
    M, _, dsub = codebooks.shape
    for i in range(codes.shape[0]):
        for m in range(M):
            c = _code_index(codes[i], m, nbits)
            out[i, m * dsub:(m + 1) * dsub] = codebooks[m, c]


def pq_decode(codes, pq, n_threads):
    codes = _checked(codes, np.uint8, "codes", (-1, pq.code_size))
    out = np.empty((codes.shape[0], pq.d), dtype=np.float32)
    _parallel_rows(lambda b, e: _decode(codes[b:e], pq.codebooks, pq.nbits, out[b:e]),
                   codes.shape[0], n_threads, 256)
    return out


@_jit
def _tables(x, transposed, l2, out):
    """out[q, m] = the distance table of query q against sub-codebook m."""
    M, dsub, _ = transposed.shape
    for q in range(x.shape[0]):
        for m in range(M):
            _to_centroids_t(x[q, m * dsub:(m + 1) * dsub], transposed[m], l2, out[q, m])


def pq_distance_tables(x, pq, metric, n_threads):
    x = _checked(x, np.float32, "x", (-1, pq.d))
    l2 = _parse_metric(metric)
    out = np.empty((x.shape[0], pq.M, pq.ksub), dtype=np.float32)
    _parallel_rows(lambda b, e: _tables(x[b:e], pq.transposed, l2, out[b:e]),
                   x.shape[0], n_threads, 16)
    return out


# ============================================================================ ADC scans
@_jit
def _adc_key(code, table, nbits, bias, base):
    """base + (bias + sum_m T[m, code_m]), left to right in float32."""
    acc = bias
    for m in range(table.shape[0]):
        acc = acc + table[m, _code_index(code, m, nbits)]
    return base + acc


@_jit
def _scan_run(codes, ids, bias, has_bias, begin, end, table, nbits, base, hk, hi, size):
    th = _threshold(hk, size)
    for i in range(begin, end):
        b = bias[i] if has_bias else np.float32(0.0)
        key = _adc_key(codes[i], table, nbits, b, base)
        if key <= th:
            size = _heap_push(hk, hi, size, key, ids[i])
            th = _threshold(hk, size)
    return size


@_jit
def _pq_search(x, transposed, nbits, codes, ids, l2, D, I):
    M, dsub, ksub = transposed.shape
    k = D.shape[1]
    table = np.empty((M, ksub), dtype=np.float32)
    hk, hi = _heap_buffers(k)
    no_bias = np.empty(0, dtype=np.float32)
    for q in range(x.shape[0]):
        for m in range(M):
            _to_centroids_t(x[q, m * dsub:(m + 1) * dsub], transposed[m], l2, table[m])
        if not l2:  # the search table is "smaller is better"
            for m in range(M):
                for c in range(ksub):
                    table[m, c] = -table[m, c]
        size = _scan_run(codes, ids, no_bias, False, 0, codes.shape[0], table, nbits,
                         np.float32(0.0), hk, hi, 0)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


def _alloc_result(nq: int, k: int):
    return np.empty((nq, k), dtype=np.float32), np.empty((nq, k), dtype=np.int64)


def pq_search(x, pq, invlists, k, metric, n_threads):
    """ADC search over every code of ``invlists`` (IndexPQ keeps one list); I holds ids."""
    x = _checked(x, np.float32, "x", (-1, pq.d))
    if invlists.code_size != pq.code_size or invlists.layout != "blocked":
        raise ValueError("code store does not match the quantizer: expected blocked codes of "
                         f"{pq.code_size} bytes")
    l2 = _parse_metric(metric)
    D, I = _alloc_result(x.shape[0], _positive(k, "k"))
    codes, ids = invlists.codes, invlists.ids
    _parallel_rows(lambda b, e: _pq_search(x[b:e], pq.transposed, pq.nbits, codes, ids, l2,
                                           D[b:e], I[b:e]), x.shape[0], n_threads, 1)
    return D, I


# ============================================================================ IVF
class CoarseQuantizer:
    """Coarse centroids (copied) with their norms, prepared once per index."""

    def __init__(self, centroids, metric):
        centroids = _checked(centroids, np.float32, "centroids", (-1, -1))
        _positive(centroids.shape[0], "nlist")
        _positive(centroids.shape[1], "d")
        self.l2 = _parse_metric(metric)
        self.centroids = centroids.copy()
        self.norms = np.zeros(centroids.shape[0], dtype=np.float32)
        if self.l2:
            _sqnorms(self.centroids, self.norms)
        # The core keeps centroids of d <= 256 transposed and sums inner products sequentially.
        self.transposed = (np.ascontiguousarray(self.centroids.T)
                           if self.centroids.shape[1] <= _IP_DIRECT_MAX_DIM else None)

    @property
    def nlist(self) -> int:
        return self.centroids.shape[0]

    @property
    def d(self) -> int:
        return self.centroids.shape[1]

    def probe(self, x, nprobe: int):
        """The nprobe nearest lists of each query and their coarse distances (as search_block)."""
        dist = np.empty((x.shape[0], nprobe), dtype=np.float32)
        lists = np.empty((x.shape[0], nprobe), dtype=np.int64)
        if self.transposed is not None:
            _search_block_t(x, self.transposed, self.norms, self.l2, dist, lists)
        else:
            _search_block(x, self.centroids, self.norms, self.l2, dist, lists)
        return dist, lists


def _ivf_params(nprobe, k, metric):
    return _positive(nprobe, "nprobe"), _positive(k, "k"), _parse_metric(metric)


def _check_lists(lists, nlist, code_size, layout, with_bias):
    if (lists.nlist != nlist or lists.code_size != code_size or lists.layout != layout
            or lists.with_bias != with_bias):
        raise ValueError(
            f"inverted lists do not match the index: expected nlist {nlist} and code_size "
            f"{code_size}, got {lists.nlist} and {lists.code_size}"
        )


@_jit
def _ivfflat_scan(x, probes, vectors, ids, offsets, l2, D, I):
    k = D.shape[1]
    acc = np.empty(16, dtype=np.float32)
    hk, hi = _heap_buffers(k)
    for q in range(x.shape[0]):
        size = 0
        th = _F32_INF
        for j in range(probes.shape[1]):
            l = probes[q, j]
            if l < 0:
                continue
            for i in range(offsets[l], offsets[l + 1]):
                if l2:
                    key = _l2sqr(x[q], vectors[i], acc)
                else:
                    key = -_dot(x[q], vectors[i], acc)
                if key <= th:
                    size = _heap_push(hk, hi, size, key, ids[i])
                    th = _threshold(hk, size)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


def ivfflat_search(x, coarse, invlists, nprobe, k, metric, n_threads):
    x = _checked(x, np.float32, "x", (-1, coarse.d))
    nprobe, k, l2 = _ivf_params(nprobe, k, metric)
    _check_lists(invlists, coarse.nlist, 4 * coarse.d, "rows", False)
    nprobe = min(nprobe, coarse.nlist)
    D, I = _alloc_result(x.shape[0], k)
    vectors = invlists.codes.view(np.float32).reshape(-1, coarse.d)
    ids, offsets = invlists.ids, invlists.offsets

    def scan(begin, end):
        _, probes = coarse.probe(x[begin:end], nprobe)
        _ivfflat_scan(x[begin:end], probes, vectors, ids, offsets, l2, D[begin:end], I[begin:end])

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return D, I


@_jit
def _ivfpq_scan(x, coarse_dist, probes, transposed, nbits, codes, ids, bias, has_bias, offsets,
                l2, D, I):
    """IVF-PQ keys (see ivfpq_search): base + (bias + sum_m T[m, code_m])."""
    M, dsub, ksub = transposed.shape
    k = D.shape[1]
    table = np.empty((M, ksub), dtype=np.float32)
    hk, hi = _heap_buffers(k)
    for q in range(x.shape[0]):
        # L2: T = -2 <q_m, c_mk>; IP: T = -<q_m, c_mk> (both exact scalings of the IP table).
        for m in range(M):
            _to_centroids_t(x[q, m * dsub:(m + 1) * dsub], transposed[m], False, table[m])
        factor = np.float32(-2.0) if l2 else np.float32(-1.0)
        for m in range(M):
            for c in range(ksub):
                table[m, c] = factor * table[m, c]
        size = 0
        for j in range(probes.shape[1]):
            l = probes[q, j]
            if l < 0:
                continue
            base = coarse_dist[q, j] if l2 else -coarse_dist[q, j]
            size = _scan_run(codes, ids, bias, has_bias, offsets[l], offsets[l + 1], table, nbits,
                             base, hk, hi, size)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


def ivfpq_search(x, coarse, pq, invlists, nprobe, k, metric, n_threads, estimates=False):
    """IVF-PQ over residual codes.

    L2 key of a code r in list l: ``||q - y_l||^2 + (bias_r + sum_m -2 <q_m, c_m(r)>)`` with
    ``bias_r = ||r||^2 + 2 <y_l, r>`` stored per code; inner product:
    ``-<q, y_l> + (0 + sum_m -<q_m, c_m(r)>)`` (see cpp/ivf.cpp).

    ``estimates`` is accepted for the compiled engine's signature and ignored: this engine has no
    quantized table, so it always ranks by the exact keys.
    """
    x = _checked(x, np.float32, "x", (-1, coarse.d))
    if pq.d != coarse.d:
        raise ValueError("quantizer and coarse centroids differ in d")
    nprobe, k, l2 = _ivf_params(nprobe, k, metric)
    _check_lists(invlists, coarse.nlist, pq.code_size, "blocked", l2)
    nprobe = min(nprobe, coarse.nlist)
    D, I = _alloc_result(x.shape[0], k)
    codes, ids, offsets = invlists.codes, invlists.ids, invlists.offsets
    bias = invlists.bias if l2 else np.empty(0, dtype=np.float32)

    def scan(begin, end):
        coarse_dist, probes = coarse.probe(x[begin:end], nprobe)
        _ivfpq_scan(x[begin:end], coarse_dist, probes, pq.transposed, pq.nbits, codes, ids, bias,
                    l2, offsets, l2, D[begin:end], I[begin:end])

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return D, I


@_jit
def _code_bias(codes, list_nos, centroids, codebooks, sqnorms, nbits, out):
    M, _, dsub = codebooks.shape
    acc16 = np.empty(16, dtype=np.float32)
    for i in range(codes.shape[0]):
        yl = centroids[list_nos[i]]
        acc = np.float32(0.0)
        for m in range(M):
            c = _code_index(codes[i], m, nbits)
            ip = _dot(yl[m * dsub:(m + 1) * dsub], codebooks[m, c], acc16)
            acc = acc + (sqnorms[m, c] + np.float32(2.0) * ip)
        out[i] = acc


def ivfpq_code_bias(codes, list_nos, coarse, pq, n_threads):
    """bias[i] = ||r_i||^2 + 2 <y_l, r_i>, summed over sub-quantizers (L2 IVF-PQ)."""
    list_nos = _checked(list_nos, np.int64, "list_nos", (-1,))
    codes = _checked(codes, np.uint8, "codes", (list_nos.shape[0], pq.code_size))
    if pq.d != coarse.d:
        raise ValueError("quantizer and coarse centroids differ in d")
    if list_nos.size and (list_nos.min() < 0 or list_nos.max() >= coarse.nlist):
        bad = list_nos[(list_nos < 0) | (list_nos >= coarse.nlist)][0]
        raise ValueError(
            f"list number out of range: expected 0 <= list_no < {coarse.nlist}, got {bad}")
    out = np.empty(list_nos.shape[0], dtype=np.float32)
    _parallel_rows(lambda b, e: _code_bias(codes[b:e], list_nos[b:e], coarse.centroids,
                                           pq.codebooks, pq.sqnorms, pq.nbits, out[b:e]),
                   list_nos.shape[0], n_threads, 256)
    return out


# ============================================================================ inverted lists
class InvertedLists:
    """Codes and int64 ids per list (and a float bias per code for L2 IVF-PQ).

    Kept as flat arrays ordered by list (list 0 first), each list in insertion order, with
    ``offsets[l]:offsets[l + 1]`` the rows of list l: the order the core's lists keep, so scans
    visit codes in the same order. Codes are stored as rows; ``layout`` is recorded only to
    match the core's checks. Mutations replace the arrays (never resize them in place), so a
    scan that holds the previous arrays reads a consistent snapshot.
    """

    def __init__(self, nlist, code_size, layout, with_bias=False):
        if layout not in ("rows", "blocked"):
            raise ValueError(f"layout must be 'rows' or 'blocked', got {layout!r}")
        if int(nlist) < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        if int(code_size) < 1:
            raise ValueError(f"code_size must be >= 1, got {code_size}")
        self.nlist, self.code_size = int(nlist), int(code_size)
        self.layout, self.with_bias = layout, bool(with_bias)
        self.reset()

    @property
    def ntotal(self) -> int:
        return int(self.ids.shape[0])

    def reset(self) -> None:
        self.codes = np.empty((0, self.code_size), dtype=np.uint8)
        self.ids = np.empty(0, dtype=np.int64)
        self.bias = np.empty(0, dtype=np.float32)
        self.list_nos = np.empty(0, dtype=np.int64)
        self.offsets = np.zeros(self.nlist + 1, dtype=np.int64)

    def _set(self, list_nos, ids, codes, bias) -> None:
        self.offsets = np.concatenate(
            ([0], np.cumsum(np.bincount(list_nos, minlength=self.nlist)))).astype(np.int64)
        self.codes, self.ids, self.bias, self.list_nos = codes, ids, bias, list_nos

    def add(self, list_nos, ids, codes, bias=None) -> None:
        list_nos = _checked(list_nos, np.int64, "list_nos", (-1,))
        n = list_nos.shape[0]
        ids = _checked(ids, np.int64, "ids", (n,))
        codes = _checked(codes, np.uint8, "codes", (n, self.code_size))
        if bias is not None:
            bias = _checked(bias, np.float32, "bias", (n,))
        if self.with_bias and bias is None and n > 0:
            raise ValueError("these lists keep a bias per code; none given")
        bad = (list_nos < 0) | (list_nos >= self.nlist)
        if bad.any():
            raise ValueError(f"list number out of range: expected 0 <= list_no < {self.nlist}, "
                             f"got {int(list_nos[bad][0])}")
        if n == 0:
            return
        all_lists = np.concatenate((self.list_nos, list_nos))
        order = np.argsort(all_lists, kind="stable")  # stable: insertion order within a list
        new_bias = self.bias
        if self.with_bias:
            new_bias = np.concatenate((self.bias, bias))[order]
        self._set(all_lists[order], np.concatenate((self.ids, ids))[order],
                  np.concatenate((self.codes, codes))[order], new_bias)

    def set_bias(self, bias) -> None:
        if not self.with_bias:
            raise ValueError("these lists keep no bias")
        self.bias = _checked(bias, np.float32, "bias", (self.ntotal,)).copy()

    def list_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def _list_range(self, list_no) -> slice:
        list_no = int(list_no)
        if not 0 <= list_no < self.nlist:
            raise IndexError(f"list number out of range: expected 0 <= list_no < {self.nlist}, "
                             f"got {list_no}")
        return slice(self.offsets[list_no], self.offsets[list_no + 1])

    def list_ids(self, list_no) -> np.ndarray:
        return self.ids[self._list_range(list_no)].copy()

    def list_codes(self, list_no) -> np.ndarray:
        return self.codes[self._list_range(list_no)].copy()

    def remove_ids(self, ids) -> int:
        ids = _checked(ids, np.int64, "ids", (-1,))
        doomed = np.isin(self.ids, ids)
        removed = int(doomed.sum())
        if removed:
            keep = ~doomed
            self._set(self.list_nos[keep], self.ids[keep], self.codes[keep],
                      self.bias[keep] if self.with_bias else self.bias)
        return removed

    def locate(self, ids):
        """(list_nos, offsets within the list) of each id, -1/-1 where absent."""
        ids = _checked(ids, np.int64, "ids", (-1,))
        list_nos = np.full(ids.shape[0], -1, dtype=np.int64)
        offsets = np.full(ids.shape[0], -1, dtype=np.int64)
        if self.ntotal and ids.size:
            order = np.argsort(self.ids, kind="stable")
            pos = np.minimum(np.searchsorted(self.ids[order], ids), self.ntotal - 1)
            found = self.ids[order[pos]] == ids
            rows = order[pos[found]]
            list_nos[found] = self.list_nos[rows]
            offsets[found] = rows - self.offsets[self.list_nos[rows]]
        return list_nos, offsets

    def memory_usage_bytes(self) -> int:
        total = self.codes.nbytes + self.ids.nbytes
        return int(total + (self.bias.nbytes if self.with_bias else 0))

    def export(self):
        """(list sizes int64 (nlist,), ids int64 (ntotal,), codes uint8 (ntotal, code_size))."""
        return self.list_sizes(), self.ids.copy(), self.codes.copy()
