"""Product quantization (the compiled core's ``cpp/search/pq`` and the ADC scan of ``cpp/search/scan``):
codebook training, packed codes, encode/decode, distance tables and PQ search.

Codes are packed little-endian: sub-quantizer ``m`` occupies bits ``[m*nbits, (m+1)*nbits)``
of a ``ceil(M*nbits/8)``-byte code.
"""

from __future__ import annotations

import numpy as np

from ._common import (_alloc_result, _checked, _heap_buffers, _heap_push, _heap_write, _jit,
                      _parallel_rows, _parse_metric, _positive, _threshold)
from ._kernels import _sqnorms, _to_centroids_t
from .kmeans import _kmeans_train, _NearestCentroid
from .selector import (RangeCollector, _accepts, _range_buffers, _range_push, _set_bounds,
                       range_threshold, selector_args)


def _pq_shape(d: int, M: int, nbits: int):
    if M < 1 or d < 1 or d % M != 0:
        raise ValueError(f"d must be a positive multiple of M: got d = {d}, M = {M}")
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must be in 1..16, got {nbits}")
    return d // M, 1 << nbits, (M * nbits + 7) // 8


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
def _scan_run(codes, ids, bias, has_bias, begin, end, table, nbits, base, hk, hi, size,
              kind, bits, start, sids, lo, hi_, exclude):
    """Pushes the allowed codes begin..end (the selector's set sids[lo:hi_] or bitmap)."""
    th = _threshold(hk, size)
    for i in range(begin, end):
        if not _accepts(kind, bits, start, sids, lo, hi_, exclude, ids[i]):
            continue
        b = bias[i] if has_bias else np.float32(0.0)
        key = _adc_key(codes[i], table, nbits, b, base)
        if key <= th:
            size = _heap_push(hk, hi, size, key, ids[i])
            th = _threshold(hk, size)
    return size


@_jit
def _range_run(codes, ids, bias, has_bias, begin, end, table, nbits, base, tau,
               kind, bits, start, sids, lo, hi_, exclude, keys, out_ids, n):
    """Appends every allowed code begin..end whose key is <= tau; returns the buffers and n."""
    for i in range(begin, end):
        if not _accepts(kind, bits, start, sids, lo, hi_, exclude, ids[i]):
            continue
        b = bias[i] if has_bias else np.float32(0.0)
        key = _adc_key(codes[i], table, nbits, b, base)
        if key <= tau:
            keys, out_ids, n = _range_push(keys, out_ids, n, key, ids[i])
    return keys, out_ids, n


@_jit
def _query_table(xq, transposed, l2, table):
    """The search table of one query ("smaller is better": the L2 table or the negated IP one)."""
    M, dsub, ksub = transposed.shape
    for m in range(M):
        _to_centroids_t(xq[m * dsub:(m + 1) * dsub], transposed[m], l2, table[m])
    if not l2:
        for m in range(M):
            for c in range(ksub):
                table[m, c] = -table[m, c]


@_jit
def _pq_range(x, transposed, nbits, codes, ids, l2, tau, q0, kind, bits, start, sids, offsets,
              per_query, exclude, limit):
    M, dsub, ksub = transposed.shape
    table = np.empty((M, ksub), dtype=np.float32)
    no_bias = np.empty(0, dtype=np.float32)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    keys, out_ids = _range_buffers()
    n = 0
    for q in range(x.shape[0]):
        _query_table(x[q], transposed, l2, table)
        lo, hi_ = _set_bounds(offsets, per_query, q0 + q)
        before = n
        keys, out_ids, n = _range_run(codes, ids, no_bias, False, 0, codes.shape[0], table, nbits,
                                      np.float32(0.0), tau, kind, bits, start, sids, lo, hi_,
                                      exclude, keys, out_ids, n)
        counts[q] = n - before
        if n > limit:
            return counts, keys, out_ids, n, True
    return counts, keys, out_ids, n, False


@_jit
def _pq_search(x, transposed, nbits, codes, ids, l2, D, I, q0, kind, bits, start, sids, offsets,
               per_query, exclude):
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
        lo, hi_ = _set_bounds(offsets, per_query, q0 + q)
        size = _scan_run(codes, ids, no_bias, False, 0, codes.shape[0], table, nbits,
                         np.float32(0.0), hk, hi, 0, kind, bits, start, sids, lo, hi_, exclude)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


def _check_pq_lists(pq, invlists):
    if invlists.code_size != pq.code_size or invlists.layout != "blocked":
        raise ValueError("code store does not match the quantizer: expected blocked codes of "
                         f"{pq.code_size} bytes")


def pq_search(x, pq, invlists, k, metric, n_threads, selector=None):
    """ADC search over every code of ``invlists`` (IndexPQ keeps one list); I holds ids.
    Only the ids ``selector`` allows are scanned (None: all)."""
    x = _checked(x, np.float32, "x", (-1, pq.d))
    _check_pq_lists(pq, invlists)
    sel = selector_args(selector, x.shape[0])
    l2 = _parse_metric(metric)
    D, I = _alloc_result(x.shape[0], _positive(k, "k"))
    codes, ids, _, _ = invlists.scan_arrays(None)  # as rows (read-only blocked lists: a copy)
    _parallel_rows(lambda b, e: _pq_search(x[b:e], pq.transposed, pq.nbits, codes, ids, l2,
                                           D[b:e], I[b:e], b, *sel), x.shape[0], n_threads, 1)
    return D, I


def pq_range_search(x, pq, invlists, radius, metric, n_threads, max_results, selector=None):
    """Every allowed code whose ADC key is below the radius key, per query sorted by (key, id):
    (lims int64 (nq + 1,), D float32, I int64)."""
    x = _checked(x, np.float32, "x", (-1, pq.d))
    _check_pq_lists(pq, invlists)
    sel = selector_args(selector, x.shape[0])
    l2 = _parse_metric(metric)
    tau = range_threshold(radius, l2)
    out = RangeCollector(x.shape[0], max_results)
    codes, ids, _, _ = invlists.scan_arrays(None)  # as rows (read-only blocked lists: a copy)

    def scan(b, e):
        for begin in range(b, e, 8):
            end = min(e, begin + 8)
            out.add(begin, *_pq_range(x[begin:end], pq.transposed, pq.nbits, codes, ids, l2, tau,
                                      begin, *sel, out.budget.left()))

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return out.result(not l2)
