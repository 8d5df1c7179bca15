"""Exact search (the compiled core's ``cpp/search/flat``): squared norms, blocked top-k search of every
row, and its variant on transposed rows used for coarse quantizers.
"""

from __future__ import annotations

import numpy as np

from ._common import (_F32_INF, _checked, _heap_buffers, _heap_push, _heap_write, _jit,
                      _parallel_rows, _parse_metric, _positive, _threshold)
from ._kernels import _dot, _l2_key, _sqnorms, _to_centroids_t

# The core keeps a searched set of dimension <= this transposed and sums inner products
# sequentially over the dimension (nearest-centroid assignment and coarse quantizers).
_IP_DIRECT_MAX_DIM = 256


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
