"""Exact re-ranking of candidate lists (the compiled core's ``cpp/search/refine``): from stored floats
(:func:`rerank`), or from PQ codes (:func:`rerank_pq`) or 8-bit scalar-quantizer codes (:func:`rerank_sq`)
decoded first.
"""

from __future__ import annotations

import numpy as np

from ._common import (_alloc_result, _checked, _heap_buffers, _heap_push, _heap_write, _jit,
                      _parallel_rows, _parse_metric, _positive)
from ._kernels import _dot, _l2sqr
from .pq import pq_decode


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
    return _rerank_decoded(x, rows, ids, k, metric, n_threads, lists.ntotal,
                           lambda wanted: pq_decode(np.ascontiguousarray(lists.code_rows(wanted)),
                                                    pq, n_threads))


def _rerank_decoded(x, rows, ids, k, metric, n_threads, ny, decode):
    """:func:`rerank` of candidates stored as codes: ``decode(wanted)`` gives the float rows of
    the distinct stored rows ``wanted`` (sorted), and only those are decoded."""
    rows = _checked(rows, np.int64, "rows", (x.shape[0], -1))
    if rows.size and (int(rows.min()) < -1 or int(rows.max()) >= ny):
        bad = int(rows.min()) if int(rows.min()) < -1 else int(rows.max())
        raise ValueError(f"candidate row {bad} is outside -1..{ny - 1}")
    wanted, local = np.unique(rows[rows >= 0], return_inverse=True)
    local_rows = np.full(rows.shape, -1, dtype=np.int64)
    local_rows[rows >= 0] = local
    return rerank(x, decode(wanted), local_rows, ids, k, metric, n_threads)


def rerank_sq(x, codes, vmin, step, rows, ids, k, metric, n_threads):
    """As :func:`rerank`, with the candidates stored as 8-bit scalar-quantizer codes: row ``r``
    of ``codes`` decodes to ``vmin + codes[r] * step`` (a float32 product, then a sum)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    codes = _checked(codes, np.uint8, "codes", (-1, x.shape[1]))
    vmin = _checked(vmin, np.float32, "vmin", (x.shape[1],))
    step = _checked(step, np.float32, "step", (x.shape[1],))
    return _rerank_decoded(x, rows, ids, k, metric, n_threads, codes.shape[0],
                           lambda wanted: vmin + codes[wanted].astype(np.float32) * step)
