"""Inverted-file search (the compiled core's ``cpp/search/ivf``): the coarse quantizer, IVF-Flat and
IVF-PQ list scans, and the per-code bias of L2 IVF-PQ.
"""

from __future__ import annotations

import numpy as np

from ._common import (_F32_INF, _alloc_result, _checked, _heap_buffers, _heap_push, _heap_write,
                      _jit, _parallel_rows, _parse_metric, _positive, _threshold)
from ._kernels import _dot, _l2sqr, _sqnorms, _to_centroids_t
from .flat import _IP_DIRECT_MAX_DIM, _search_block, _search_block_t
from .pq import _code_index, _range_run, _scan_run
from .selector import (RangeCollector, _accepts, _range_buffers, _range_push, _set_bounds,
                       range_threshold, selector_args)


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


def _ranked_lists(nprobe, max_probe, nlist):
    """Lists ranked per query: nprobe, or up to max_probe when probing may widen."""
    return max(min(nprobe, nlist), min(int(max_probe), nlist))


@_jit
def _flat_key(xq, v, l2, acc):
    return _l2sqr(xq, v, acc) if l2 else -_dot(xq, v, acc)


@_jit
def _ivfflat_scan(x, probes, nprobe, vectors, ids, offsets, l2, D, I, q0, kind, bits, start, sids,
                  sel_offsets, per_query, exclude):
    """Top-k over the allowed vectors of the first nprobe probes of each query; while fewer
    than k were found, the next probes one at a time (max_probe)."""
    k = D.shape[1]
    acc = np.empty(16, dtype=np.float32)
    hk, hi = _heap_buffers(k)
    for q in range(x.shape[0]):
        lo, hi_ = _set_bounds(sel_offsets, per_query, q0 + q)
        size = 0
        th = _F32_INF
        for j in range(probes.shape[1]):
            if j >= nprobe and size >= k:
                break
            l = probes[q, j]
            if l < 0:
                continue
            for i in range(offsets[l], offsets[l + 1]):
                if not _accepts(kind, bits, start, sids, lo, hi_, exclude, ids[i]):
                    continue
                key = _flat_key(x[q], vectors[i], l2, acc)
                if key <= th:
                    size = _heap_push(hk, hi, size, key, ids[i])
                    th = _threshold(hk, size)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


@_jit
def _ivfflat_range(x, probes, vectors, ids, offsets, l2, tau, q0, kind, bits, start, sids,
                   sel_offsets, per_query, exclude, limit):
    acc = np.empty(16, dtype=np.float32)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    keys, out_ids = _range_buffers()
    n = 0
    for q in range(x.shape[0]):
        lo, hi_ = _set_bounds(sel_offsets, per_query, q0 + q)
        for j in range(probes.shape[1]):
            l = probes[q, j]
            if l < 0:
                continue
            for i in range(offsets[l], offsets[l + 1]):
                if not _accepts(kind, bits, start, sids, lo, hi_, exclude, ids[i]):
                    continue
                key = _flat_key(x[q], vectors[i], l2, acc)
                if key <= tau:
                    keys, out_ids, n = _range_push(keys, out_ids, n, key, ids[i])
                    counts[q] += 1
        if n > limit:
            return counts, keys, out_ids, n, True
    return counts, keys, out_ids, n, False


def ivfflat_search(x, coarse, invlists, nprobe, k, metric, n_threads, max_probe=0, selector=None):
    x = _checked(x, np.float32, "x", (-1, coarse.d))
    nprobe, k, l2 = _ivf_params(nprobe, k, metric)
    _check_lists(invlists, coarse.nlist, 4 * coarse.d, "rows", False)
    sel = selector_args(selector, x.shape[0])
    nprobe = min(nprobe, coarse.nlist)
    nrank = _ranked_lists(nprobe, max_probe, coarse.nlist)
    D, I = _alloc_result(x.shape[0], k)
    codes, ids, _, offsets = invlists.scan_arrays(None)  # rows in list order: no copy
    vectors = codes.view(np.float32).reshape(-1, coarse.d)

    def scan(begin, end):
        _, probes = coarse.probe(x[begin:end], nrank)
        _ivfflat_scan(x[begin:end], probes, nprobe, vectors, ids, offsets, l2, D[begin:end],
                      I[begin:end], begin, *sel)

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return D, I


def ivfflat_range_search(x, coarse, invlists, nprobe, radius, metric, n_threads, max_results,
                         selector=None):
    x = _checked(x, np.float32, "x", (-1, coarse.d))
    nprobe, _, l2 = _ivf_params(nprobe, 1, metric)
    _check_lists(invlists, coarse.nlist, 4 * coarse.d, "rows", False)
    sel = selector_args(selector, x.shape[0])
    nprobe = min(nprobe, coarse.nlist)
    tau = range_threshold(radius, l2)
    out = RangeCollector(x.shape[0], max_results)
    codes, ids, _, offsets = invlists.scan_arrays(None)  # rows in list order: no copy
    vectors = codes.view(np.float32).reshape(-1, coarse.d)

    def scan(b, e):
        for begin in range(b, e, 8):
            end = min(e, begin + 8)
            _, probes = coarse.probe(x[begin:end], nprobe)
            out.add(begin, *_ivfflat_range(x[begin:end], probes, vectors, ids, offsets, l2, tau,
                                           begin, *sel, out.budget.left()))

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return out.result(not l2)


@_jit
def _ivfpq_table(xq, transposed, l2, table):
    """L2: T = -2 <q_m, c_mk>; IP: T = -<q_m, c_mk> (both exact scalings of the IP table)."""
    M, dsub, ksub = transposed.shape
    for m in range(M):
        _to_centroids_t(xq[m * dsub:(m + 1) * dsub], transposed[m], False, table[m])
    factor = np.float32(-2.0) if l2 else np.float32(-1.0)
    for m in range(M):
        for c in range(ksub):
            table[m, c] = factor * table[m, c]


@_jit
def _ivfpq_scan(x, coarse_dist, probes, nprobe, transposed, nbits, codes, ids, bias, has_bias,
                offsets, l2, D, I, q0, kind, bits, start, sids, sel_offsets, per_query, exclude):
    """IVF-PQ keys (see ivfpq_search): base + (bias + sum_m T[m, code_m]); past nprobe, the next
    probes one at a time while fewer than k were found (max_probe)."""
    M, dsub, ksub = transposed.shape
    k = D.shape[1]
    table = np.empty((M, ksub), dtype=np.float32)
    hk, hi = _heap_buffers(k)
    for q in range(x.shape[0]):
        _ivfpq_table(x[q], transposed, l2, table)
        lo, hi_ = _set_bounds(sel_offsets, per_query, q0 + q)
        size = 0
        for j in range(probes.shape[1]):
            if j >= nprobe and size >= k:
                break
            l = probes[q, j]
            if l < 0:
                continue
            base = coarse_dist[q, j] if l2 else -coarse_dist[q, j]
            size = _scan_run(codes, ids, bias, has_bias, offsets[l], offsets[l + 1], table, nbits,
                             base, hk, hi, size, kind, bits, start, sids, lo, hi_, exclude)
        _heap_write(hk, hi, size, not l2, D[q], I[q])


@_jit
def _ivfpq_range(x, coarse_dist, probes, transposed, nbits, codes, ids, bias, has_bias, offsets,
                 l2, tau, q0, kind, bits, start, sids, sel_offsets, per_query, exclude, limit):
    M, dsub, ksub = transposed.shape
    table = np.empty((M, ksub), dtype=np.float32)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    keys, out_ids = _range_buffers()
    n = 0
    for q in range(x.shape[0]):
        _ivfpq_table(x[q], transposed, l2, table)
        lo, hi_ = _set_bounds(sel_offsets, per_query, q0 + q)
        before = n
        for j in range(probes.shape[1]):
            l = probes[q, j]
            if l < 0:
                continue
            base = coarse_dist[q, j] if l2 else -coarse_dist[q, j]
            keys, out_ids, n = _range_run(codes, ids, bias, has_bias, offsets[l], offsets[l + 1],
                                          table, nbits, base, tau, kind, bits, start, sids, lo,
                                          hi_, exclude, keys, out_ids, n)
        counts[q] = n - before
        if n > limit:
            return counts, keys, out_ids, n, True
    return counts, keys, out_ids, n, False


def _ivfpq_checks(x, coarse, pq, invlists, nprobe, k, metric):
    x = _checked(x, np.float32, "x", (-1, coarse.d))
    if pq.d != coarse.d:
        raise ValueError("quantizer and coarse centroids differ in d")
    nprobe, k, l2 = _ivf_params(nprobe, k, metric)
    _check_lists(invlists, coarse.nlist, pq.code_size, "blocked", l2)
    return x, min(nprobe, coarse.nlist), k, l2


def ivfpq_search(x, coarse, pq, invlists, nprobe, k, metric, n_threads, estimates=False,
                 max_probe=0, selector=None):
    """IVF-PQ over residual codes.

    L2 key of a code r in list l: ``||q - y_l||^2 + (bias_r + sum_m -2 <q_m, c_m(r)>)`` with
    ``bias_r = ||r||^2 + 2 <y_l, r>`` stored per code; inner product:
    ``-<q, y_l> + (0 + sum_m -<q_m, c_m(r)>)`` (see cpp/search/ivf.cpp).

    ``estimates`` is accepted for the compiled engine's signature and ignored: this engine has no
    quantized table, so it always ranks by the exact keys.
    """
    x, nprobe, k, l2 = _ivfpq_checks(x, coarse, pq, invlists, nprobe, k, metric)
    sel = selector_args(selector, x.shape[0])
    nrank = _ranked_lists(nprobe, max_probe, coarse.nlist)
    D, I = _alloc_result(x.shape[0], k)
    def scan(begin, end):
        coarse_dist, probes = coarse.probe(x[begin:end], nrank)
        # The probed lists as rows (a copy only for read-only lists of blocked codes).
        codes, ids, bias, offsets = invlists.scan_arrays(probes)
        bias = bias if l2 else np.empty(0, dtype=np.float32)
        _ivfpq_scan(x[begin:end], coarse_dist, probes, nprobe, pq.transposed, pq.nbits, codes, ids,
                    bias, l2, offsets, l2, D[begin:end], I[begin:end], begin, *sel)

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return D, I


def ivfpq_range_search(x, coarse, pq, invlists, nprobe, radius, metric, n_threads, max_results,
                       selector=None):
    """Every allowed code of the nprobe probed lists whose IVF-PQ key (see
    :func:`ivfpq_search`) is below the radius key, per query sorted by (key, id)."""
    x, nprobe, _, l2 = _ivfpq_checks(x, coarse, pq, invlists, nprobe, 1, metric)
    sel = selector_args(selector, x.shape[0])
    tau = range_threshold(radius, l2)
    out = RangeCollector(x.shape[0], max_results)
    def scan(b, e):
        for begin in range(b, e, 8):
            end = min(e, begin + 8)
            coarse_dist, probes = coarse.probe(x[begin:end], nprobe)
            # The probed lists as rows (a copy only for read-only lists of blocked codes).
            codes, ids, bias, offsets = invlists.scan_arrays(probes)
            bias = bias if l2 else np.empty(0, dtype=np.float32)
            out.add(begin, *_ivfpq_range(x[begin:end], coarse_dist, probes, pq.transposed,
                                         pq.nbits, codes, ids, bias, l2, offsets, l2, tau, begin,
                                         *sel, out.budget.left()))

    _parallel_rows(scan, x.shape[0], n_threads, 8)
    return out.result(not l2)


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
