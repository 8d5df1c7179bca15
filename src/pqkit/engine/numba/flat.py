"""Exact search (the compiled core's ``cpp/search/flat``): squared norms, blocked top-k search of every
row, and its variant on transposed rows used for coarse quantizers.
"""

from __future__ import annotations

import numpy as np

from ._common import (_F32_INF, _checked, _heap_buffers, _heap_push, _heap_write, _jit,
                      _parallel_rows, _parse_metric, _positive, _threshold)
from ._kernels import _dot, _l2_key, _sqnorms, _to_centroids_t
from .selector import (RangeCollector, _accepts, _range_buffers, _range_push, _set_bounds,
                       range_threshold, selector_args)

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


@_jit
def _search_block_selected(x, y, ynorms, l2, q0, kind, bits, start, sids, offsets, per_query,
                           exclude, D, I):
    """``_search_block`` over the rows the selector allows (row numbers; query q0 + q's set): a
    disallowed row gets no key at all; an allowed row's key is the one ``_search_block`` gives."""
    acc = np.empty(16, dtype=np.float32)
    hk, hi = _heap_buffers(D.shape[1])
    for q in range(x.shape[0]):
        lo, hi_ = _set_bounds(offsets, per_query, q0 + q)
        xq = x[q]
        xnorm = _dot(xq, xq, acc) if l2 else np.float32(0.0)
        size = 0
        th = _F32_INF
        for j in range(y.shape[0]):
            if not _accepts(kind, bits, start, sids, lo, hi_, exclude, j):
                continue
            ip = _dot(xq, y[j], acc)
            key = _l2_key(xnorm, ynorms[j], ip) if l2 else -ip
            if key <= th:
                size = _heap_push(hk, hi, size, key, j)
                th = _threshold(hk, size)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


@_jit
def _range_block(x, y, ynorms, l2, tau, q0, kind, bits, start, sids, offsets, per_query, exclude,
                 limit):
    """Every allowed row with key <= tau, per query: (counts, keys, rows, n, overflow)."""
    acc = np.empty(16, dtype=np.float32)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    keys, rows = _range_buffers()
    n = 0
    for q in range(x.shape[0]):
        lo, hi_ = _set_bounds(offsets, per_query, q0 + q)
        xq = x[q]
        xnorm = _dot(xq, xq, acc) if l2 else np.float32(0.0)
        for j in range(y.shape[0]):
            if not _accepts(kind, bits, start, sids, lo, hi_, exclude, j):
                continue
            ip = _dot(xq, y[j], acc)
            key = _l2_key(xnorm, ynorms[j], ip) if l2 else -ip
            if key <= tau:
                keys, rows, n = _range_push(keys, rows, n, key, j)
                counts[q] += 1
                if n > limit:
                    return counts, keys, rows, n, True
    return counts, keys, rows, n, False


def sqnorms(x, n_threads):
    """Squared norms of the rows, as the exact search computes them (float32 (n,))."""
    x = _checked(x, np.float32, "x", (-1, -1))
    out = np.empty(x.shape[0], dtype=np.float32)
    _sqnorms(x, out)
    return out


def _flat_norms(y, l2, norms):
    if l2 and norms is not None:
        return _checked(norms, np.float32, "norms", (y.shape[0],))
    out = np.zeros(y.shape[0], dtype=np.float32)
    if l2:
        _sqnorms(y, out)
    return out


def flat_search(x, y, k, metric, n_threads, norms=None, selector=None):
    """Exact top-k rows of ``y`` for each row of ``x``: (D float32 (nq, k), I int64 row numbers).
    ``norms``: y's squared norms from :func:`sqnorms`, if the caller keeps them (used for L2 only).
    ``selector``: the rows each query may return (an :class:`IDSelector` over row numbers)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    y = _checked(y, np.float32, "y", (-1, x.shape[1]))
    l2 = _parse_metric(metric)
    k = _positive(k, "k")
    sel = selector_args(selector, x.shape[0])
    D = np.empty((x.shape[0], k), dtype=np.float32)
    I = np.empty((x.shape[0], k), dtype=np.int64)
    norms = _flat_norms(y, l2, norms)
    if selector is None:
        _parallel_rows(lambda b, e: _search_block(x[b:e], y, norms, l2, D[b:e], I[b:e]),
                       x.shape[0], n_threads, 16)
    else:
        _parallel_rows(lambda b, e: _search_block_selected(x[b:e], y, norms, l2, b, *sel, D[b:e],
                                                           I[b:e]), x.shape[0], n_threads, 16)
    return D, I


def flat_range_search(x, y, radius, metric, n_threads, max_results, norms=None, selector=None):
    """Every allowed row of ``y`` whose key is below the radius key, per query sorted by
    (key, row): (lims int64 (nq + 1,), D float32, I int64 row numbers)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    y = _checked(y, np.float32, "y", (-1, x.shape[1]))
    l2 = _parse_metric(metric)
    sel = selector_args(selector, x.shape[0])
    norms = _flat_norms(y, l2, norms)
    tau = range_threshold(radius, l2)
    out = RangeCollector(x.shape[0], max_results)

    def scan(b, e):
        for begin in range(b, e, 16):
            end = min(e, begin + 16)
            out.add(begin, *_range_block(x[begin:end], y, norms, l2, tau, begin, *sel,
                                         out.budget.left()))

    _parallel_rows(scan, x.shape[0], n_threads, 16)
    return out.result(not l2)
