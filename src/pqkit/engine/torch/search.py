"""Searches of the torch engine: exact search and re-ranking, the coarse quantizer, the PQ and
IVF scans, range searches and the per-code bias of L2 IVF-PQ.

A scan works on a batch of queries at once. The probed lists of each query are laid end to
end as one row of candidate positions (``_candidates``: a ``searchsorted`` over the running
list sizes maps each column to its list and its row in the flat list tensors), padded to the
longest row of the batch; batches are sized so that the widest row times the batch stays
within the device's work budget. An ADC key is gathered one sub-quantizer at a time from the
query's flattened distance table and summed left to right in float32, after the per-code
bias, then added to the coarse term, as the other engines sum it:

    L2:  ||q - y_l||^2 + (bias_r + sum_m -2 <q_m, c_m(r)>)
    IP:  -<q, y_l>     + (0      + sum_m  -<q_m, c_m(r)>)

Padding and ids the selector refuses get the key ``+inf`` before the top-k, so they can never
be returned; ``torch.topk`` then keeps the ``k`` smallest keys and the result is ordered by
``(key, id)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import (INF, RangeCollector, budget, checked, finish, finite_bound,
                      merge_topk, parse_metric, positive, query_batches, to_device, to_host, topk)
from . import exact
from .pq import check_pq, lane_dot, lane_sum, sqnorms, sub_tables, unpack_codes
from .selector import check_selector


# ------------------------------------------------------------------------------ checks
def all_finite(x, max_abs=math.inf) -> bool:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
        got = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"x must be a C-contiguous float32 array, got {got}; try "
                        "numpy.ascontiguousarray(x, dtype=numpy.float32)")
    bound = finite_bound(max_abs)
    t = torch.from_numpy(x) if x.flags.writeable else torch.from_numpy(x.copy())
    if t.numel() == 0:
        return True
    return bool(torch.isfinite(t).all()) and (math.isinf(bound)
                                               or float(t.abs().max()) <= bound)


def engine_sqnorms(device, x, n_threads):
    x = checked(x, np.float32, "x", (-1, -1))
    xt = to_device(x, device)
    return to_host(lane_sum(xt * xt))  # the 16-lane order, as the exact search uses them


def _keys(xq: torch.Tensor, y: torch.Tensor, ynorms, l2: bool) -> torch.Tensor:
    """Search keys ``(a, b)``: ``max(||x||^2 + ||y||^2 - 2 <x, y>, 0)`` or ``-<x, y>``."""
    dots = xq @ y.T
    if l2:
        return (sqnorms(xq)[:, None] + ynorms[None, :] - 2 * dots).clamp_min_(0)
    return -dots


_direct_keys = exact.direct_keys  # keys of per-query candidates, in the core's order


def _masked(keys, valid):
    return torch.where(valid, keys, torch.full_like(keys, INF))


# ------------------------------------------------------------------------------ exact search
def _flat(device, x, y, metric, norms, selector, sink):
    l2 = parse_metric(metric)
    x = checked(x, np.float32, "x", (-1, -1))
    d = x.shape[1]
    y = checked(y, np.float32, "y", (-1, d))
    ny = y.shape[0]
    if norms is not None:
        norms = checked(norms, np.float32, "norms", (ny,))
    selector = check_selector(selector, x.shape[0])
    xt, yt = to_device(x, device), to_device(y, device)
    ynorms = None
    if l2:
        ynorms = to_device(norms, device) if norms is not None else sqnorms(yt)
    ystep = max(min(ny, budget(device) // 4), 1)
    qstep = max(budget(device) // ystep, 1)
    for qb in range(0, x.shape[0], qstep):
        xq = xt[qb:qb + qstep]
        for yb in range(0, ny, ystep):
            keys = _keys(xq, yt[yb:yb + ystep], ynorms[yb:yb + ystep] if l2 else None, l2)
            rows = torch.arange(yb, yb + keys.shape[1], device=device)
            if selector is not None:
                ok = selector.allowed(rows if not selector.per_query
                                      else rows.expand(keys.shape[0], -1), qb)
                keys = _masked(keys, ok)
            sink(keys, rows.expand(keys.shape[0], -1), qb, yb)
    return l2


class _TopK:
    """A running top-k per query batch, written into host-sized result tensors."""

    def __init__(self, device, nq, k):
        self.k = k
        self.keys = torch.full((nq, k), INF, dtype=torch.float32, device=device)
        self.ids = torch.full((nq, k), -1, dtype=torch.int64, device=device)

    def __call__(self, keys, ids, qb, part=0):
        e = qb + keys.shape[0]
        if part == 0:  # the first part of a batch replaces the padding
            best = topk(keys, ids, self.k)
        else:
            best = merge_topk((self.keys[qb:e], self.ids[qb:e]), keys, ids, self.k)
        self.keys[qb:e], self.ids[qb:e] = best

    def result(self, l2):
        return finish(self.keys, self.ids, l2)


def flat_search(device, x, y, k, metric, n_threads, norms=None, selector=None):
    k = positive(k, "k")
    nq = checked(x, np.float32, "x", (-1, -1)).shape[0]
    wide = k + exact.MARGIN
    best = _TopK(device, nq, wide)
    l2 = _flat(device, x, y, metric, norms, selector, best)
    # The matrix product chose the candidates; their keys in the core's order decide.
    xt, yt = to_device(x, device), to_device(y, device)
    ynorms = to_device(norms, device) if (l2 and norms is not None) else None
    out = _TopK(device, nq, k)
    for qb, qe in query_batches(torch.full((nq,), wide * x.shape[1]), budget(device)):
        ids = best.ids[qb:qe]
        rows = yt[ids.clamp_min(0)]
        keys = exact.norm_keys(xt[qb:qe], rows, None if ynorms is None else
                               ynorms[ids.clamp_min(0)], l2, False)
        out(_masked(keys, ids >= 0), ids, qb)
    return out.result(l2)


#: Relative bound of a matrix product's rounding error, per dimension: any float32 summation
#: order of ``d`` products is within ``d * 2**-24 * sum |x_j y_j|`` of the true inner product,
#: and ``sum |x_j y_j| <= (||x||^2 + ||y||^2) / 2``; twice that covers the norms' own rounding.
_PRODUCT_ERROR = 2.0 ** -22


def flat_range_search(device, x, y, radius, metric, n_threads, max_results, norms=None,
                      selector=None):
    """Range search: the matrix product picks every row that could lie within the radius (its
    key within the product's rounding bound of it), and the core-order key of each such row
    decides, so the results are those of the exact search's keys."""
    l2 = parse_metric(metric)
    x = checked(x, np.float32, "x", (-1, -1))
    nq, d = x.shape
    y = checked(y, np.float32, "y", (-1, d))
    out = RangeCollector(nq, radius, l2, max_results, device)
    xt, yt = to_device(x, device), to_device(y, device)
    ynorms = to_device(checked(norms, np.float32, "norms", (y.shape[0],)), device) \
        if (l2 and norms is not None) else None
    xn_all = lane_sum(xt * xt)
    yn_all = lane_sum(yt * yt)
    threshold = float(radius) if l2 else -float(radius)

    def sink(keys, ids, qb, part):
        rows = ids[0]
        slack = _PRODUCT_ERROR * d * (xn_all[qb:qb + keys.shape[0], None] + yn_all[rows][None, :]) + 1e-30
        maybe = ~torch.isinf(keys) & (keys.double() < threshold + slack.double())
        q, col = torch.nonzero(maybe, as_tuple=True)
        if not q.numel():
            return
        row = rows[col]
        exact_keys = exact.norm_keys(xt[qb + q], yt[row][:, None, :],
                                     None if ynorms is None else ynorms[row][:, None], l2, False)[:, 0]
        out.keep_pairs(qb + q, exact_keys, row)

    _flat(device, x, y, metric, norms, selector, sink)
    return out.result()


def coarse_assign(device, x, centroids, metric, n_threads):
    l2 = parse_metric(metric)
    x = checked(x, np.float32, "x", (-1, -1))
    centroids = checked(centroids, np.float32, "centroids", (-1, x.shape[1]))
    positive(centroids.shape[0], "nlist")
    ct = to_device(centroids, device)
    xt = to_device(x, device)
    n, nlist = xt.shape[0], ct.shape[0]
    wide = min(nlist, 1 + exact.MARGIN)
    cnorms = lane_sum(ct * ct) if l2 else None
    labels = torch.empty(n, dtype=torch.int64, device=device)
    dist = torch.empty(n, dtype=torch.float32, device=device)
    step = max(budget(device) // max(nlist, wide * x.shape[1]), 1)
    for b in range(0, n, step):
        xq = xt[b:b + step]
        cand = torch.topk(_keys(xq, ct, sqnorms(ct) if l2 else None, l2), wide, dim=1,
                          largest=False).indices
        # The core's keys for the few nearest by the matrix product; the first smallest wins.
        keys = (exact.nearest_keys(xq, ct[cand], cnorms[cand]) if l2
                else exact.norm_keys(xq, ct[cand], None, False, False))
        keys, cand = exact.sort_by_key_then_index(keys, cand)
        labels[b:b + step] = cand[:, 0]
        dist[b:b + step] = keys[:, 0] if l2 else -keys[:, 0]
    return to_host(labels), to_host(dist)


# ------------------------------------------------------------------------------ re-ranking
def _rerank(device, x, rows, ids, k, metric, ny, reconstruct):
    l2 = parse_metric(metric)
    k = positive(k, "k")
    nq = x.shape[0]
    rows = checked(rows, np.int64, "rows", (nq, -1))
    ids = checked(ids, np.int64, "ids", (nq, rows.shape[1]))
    if rows.size and (int(rows.min()) < -1 or int(rows.max()) >= ny):
        raise ValueError(f"candidate rows must be in -1..{ny - 1}, got values in "
                         f"{int(rows.min())}..{int(rows.max())}")
    xt, rt, it = to_device(x, device), to_device(rows, device), to_device(ids, device)
    best = _TopK(device, nq, k)
    c = max(rows.shape[1], 1)
    for qb, qe in query_batches(torch.full((nq,), c * x.shape[1]), budget(device)):
        r = rt[qb:qe]
        keys = _direct_keys(xt[qb:qe], reconstruct(r.clamp_min(0)), l2)
        best(_masked(keys, r >= 0), it[qb:qe], qb)
    return best.result(l2)


def rerank(device, x, y, rows, ids, k, metric, n_threads):
    x = checked(x, np.float32, "x", (-1, -1))
    y = checked(y, np.float32, "y", (-1, x.shape[1]))
    yt = to_device(y, device)
    return _rerank(device, x, rows, ids, k, metric, y.shape[0], lambda r: yt[r])


def rerank_pq(device, x, pq, lists, rows, ids, k, metric, n_threads, pq_cls, lists_cls):
    check_pq(pq, pq_cls)
    _check_lists(lists, lists_cls, 1, pq.code_size, None, None)
    x = checked(x, np.float32, "x", (-1, pq.d))
    codes = lists.scan_codes(pq.M, pq.nbits)
    m = torch.arange(pq.M, device=device)

    def reconstruct(r):
        idx = codes[:, r].long()  # (M, a, c)
        return pq.codebooks[m[:, None, None], idx].permute(1, 2, 0, 3).reshape(
            r.shape[0], r.shape[1], pq.d)

    return _rerank(device, x, rows, ids, k, metric, lists.ntotal, reconstruct)


def rerank_sq(device, x, codes, vmin, step, rows, ids, k, metric, n_threads):
    x = checked(x, np.float32, "x", (-1, -1))
    d = x.shape[1]
    codes = checked(codes, np.uint8, "codes", (-1, d))
    vmin = to_device(checked(vmin, np.float32, "vmin", (d,)), device)
    step = to_device(checked(step, np.float32, "step", (d,)), device)
    ct = to_device(codes, device)
    # a float32 product, then a sum: the compiled core's decode, rounded alike
    return _rerank(device, x, rows, ids, k, metric, codes.shape[0],
                   lambda r: vmin + ct[r].to(torch.float32) * step)


# ------------------------------------------------------------------------------ coarse quantizer
class CoarseQuantizer:
    """Coarse centroids (a copy) and their squared norms on the device."""

    device = torch.device("cpu")  # the engine's subclass sets its device

    def __init__(self, centroids, metric):
        centroids = checked(centroids, np.float32, "centroids", (-1, -1))
        positive(centroids.shape[0], "nlist")
        positive(centroids.shape[1], "d")
        self.l2 = parse_metric(metric)
        self.centroids = to_device(centroids.copy(), self.device)
        self.norms = sqnorms(self.centroids)
        self.lane_norms = lane_sum(self.centroids * self.centroids)

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def d(self) -> int:
        return int(self.centroids.shape[1])

    def probe(self, xt: torch.Tensor, n: int):
        """The ``n`` nearest lists of each query, nearest first, and their coarse keys
        (``||q - y_l||^2``, or ``-<q, y_l>``)."""
        nq = xt.shape[0]
        wide = min(self.nlist, n + exact.MARGIN)
        keys = torch.empty((nq, n), dtype=torch.float32, device=xt.device)
        lists = torch.empty((nq, n), dtype=torch.int64, device=xt.device)
        step = max(budget(xt.device) // max(self.nlist, wide * self.d), 1)
        sequential = self.d <= exact.SEQUENTIAL_MAX_DIM
        for b in range(0, nq, step):
            xq = xt[b:b + step]
            k = _keys(xq, self.centroids, self.norms, self.l2)
            cand = torch.topk(k, wide, dim=1, largest=False).indices
            # The matrix product picked the lists; the core's keys rank them (ties: lower list).
            exact_keys = exact.norm_keys(xq, self.centroids[cand], self.lane_norms[cand], self.l2,
                                         sequential)
            exact_keys, cand = exact.sort_by_key_then_index(exact_keys, cand)
            keys[b:b + step], lists[b:b + step] = exact_keys[:, :n], cand[:, :n]
        return keys, lists


def _check_lists(lists, cls, nlist, code_size, layout, with_bias):
    if not isinstance(lists, cls):
        raise TypeError(f"invlists must be InvertedLists of this engine, got "
                        f"{type(lists).__name__}")
    if (lists.nlist != nlist or lists.code_size != code_size
            or (layout is not None and lists.layout != layout)
            or (with_bias is not None and lists.with_bias != with_bias)):
        raise ValueError(
            f"inverted lists do not fit this search: expected nlist={nlist}, code_size="
            f"{code_size}, layout={layout}, with_bias={with_bias}; got nlist={lists.nlist}, "
            f"code_size={lists.code_size}, layout={lists.layout}, with_bias={lists.with_bias}")


# ------------------------------------------------------------------------------ list scans
def _candidates(lists, probes: torch.Tensor):
    """Each query's probed lists laid end to end: for a batch ``probes`` ``(a, P)``, the flat
    row of every candidate ``(a, C)``, the probe it came from and whether it is real (not
    padding)."""
    a, P = probes.shape
    sizes_all = lists.offsets[1:] - lists.offsets[:-1]
    starts, sizes = lists.offsets[probes], sizes_all[probes]
    cum = sizes.cumsum(1)
    total = cum[:, -1]
    width = int(total.max()) if a else 0
    pos = torch.arange(width, device=probes.device).expand(a, width).contiguous()
    which = torch.searchsorted(cum, pos, right=True).clamp_(max=P - 1)
    valid = pos < total[:, None]
    rows = starts.gather(1, which) + pos - (cum.gather(1, which) - sizes.gather(1, which))
    return torch.where(valid, rows, torch.zeros_like(rows)), which, valid


def _probe_limit(which, valid, nprobe: int, P: int, k: int):
    """For ``max_probe``: keep the first ``p`` probed lists of each query, ``p`` the smallest
    count from ``nprobe`` on whose allowed candidates reach ``k`` (else all ``P``)."""
    counts = torch.zeros((which.shape[0], P), dtype=torch.int64, device=which.device)
    counts.scatter_add_(1, which, valid.long())
    enough = counts.cumsum(1) >= k
    enough[:, :nprobe - 1] = False
    limit = torch.where(enough.any(1), enough.int().argmax(1) + 1,
                        torch.full_like(counts[:, 0], P))
    return which < limit[:, None]


def _ivf_scan(device, xt, coarse, lists, nprobe, max_probe, k, selector, per_candidate, key_of,
              sink):
    nprobe = min(positive(nprobe, "nprobe"), coarse.nlist)
    P = min(max(nprobe, int(max_probe)), coarse.nlist)
    ckeys, probes = coarse.probe(xt, P)
    sizes_all = lists.offsets[1:] - lists.offsets[:-1]
    totals = sizes_all[probes].sum(1)
    for qb, qe in query_batches(totals, max(budget(device) // per_candidate, 1)):
        rows, which, valid = _candidates(lists, probes[qb:qe])
        ids = lists.ids[rows]
        if selector is not None:
            valid &= selector.allowed(ids, qb)
        if P > nprobe:
            valid &= _probe_limit(which, valid, nprobe, P, k)
        keys = key_of(qb, qe, rows, ckeys[qb:qe].gather(1, which))
        sink(_masked(keys, valid), ids, qb)


def _adc(tables: torch.Tensor, codes: torch.Tensor, rows: torch.Tensor, start: torch.Tensor):
    """``start + sum_m tables[:, m, code_m(row)]`` summed left to right; ``tables`` ``(a, M,
    ksub)``, ``codes`` ``(M, ntotal)``, ``rows`` ``(a, C)`` or ``(C,)`` shared."""
    a, M, ksub = tables.shape
    acc = start
    for m in range(M):
        idx = codes[m][rows].long()
        if rows.dim() == 1:
            acc = acc + tables[:, m].index_select(1, idx)
        else:
            acc = acc + tables[:, m].gather(1, idx)
    return acc


def _search_tables(xq, pq, l2: bool, residual: bool):
    """The tables a scan sums: ``||q_m - c||^2`` (PQ, L2), ``-2 <q_m, c>`` (IVF-PQ, L2, whose
    bias holds the rest), or ``-<q_m, c>`` (IP)."""
    if l2 and not residual:
        return sub_tables(xq, pq, True)
    ip = sub_tables(xq, pq, False)
    return -2 * ip if l2 else -ip


def _pq_scan(device, x, pq, lists, metric, selector, sink, pq_cls, lists_cls):
    l2 = parse_metric(metric)
    check_pq(pq, pq_cls)
    _check_lists(lists, lists_cls, lists.nlist, pq.code_size, "blocked", None)
    x = checked(x, np.float32, "x", (-1, pq.d))
    selector = check_selector(selector, x.shape[0])
    xt = to_device(x, device)
    codes = lists.scan_codes(pq.M, pq.nbits)
    n = lists.ntotal
    step = max(min(n, budget(device) // 4), 1)
    qstep = max(budget(device) // (step * 4), 1)
    for qb in range(0, x.shape[0], qstep):
        tables = _search_tables(xt[qb:qb + qstep], pq, l2, False)
        a = tables.shape[0]
        for b in range(0, n, step):
            rows = torch.arange(b, min(b + step, n), device=device)
            keys = _adc(tables, codes, rows, torch.zeros((a, rows.numel()), device=device))
            ids = lists.ids[rows]
            if selector is not None:
                ok = selector.allowed(ids if not selector.per_query else ids.expand(a, -1), qb)
                keys = _masked(keys, ok)
            sink(keys, ids.expand(a, -1), qb, b)
    return l2


def pq_search(device, x, pq, invlists, k, metric, n_threads, selector, pq_cls, lists_cls):
    k = positive(k, "k")
    nq = checked(x, np.float32, "x", (-1, -1)).shape[0]
    best = _TopK(device, nq, k)
    l2 = _pq_scan(device, x, pq, invlists, metric, selector, best, pq_cls, lists_cls)
    return best.result(l2)


def pq_range_search(device, x, pq, invlists, radius, metric, n_threads, max_results, selector,
                    pq_cls, lists_cls):
    nq = checked(x, np.float32, "x", (-1, -1)).shape[0]
    out = RangeCollector(nq, radius, parse_metric(metric), max_results, device)
    _pq_scan(device, x, pq, invlists, metric, selector,
             lambda keys, ids, qb, part: out.keep(keys, ids, qb), pq_cls, lists_cls)
    return out.result()


def _ivfpq_setup(device, x, coarse, pq, lists, metric, selector, coarse_cls, pq_cls, lists_cls):
    l2 = parse_metric(metric)
    if not isinstance(coarse, coarse_cls):
        raise TypeError(f"coarse must be a CoarseQuantizer of this engine, got "
                        f"{type(coarse).__name__}")
    check_pq(pq, pq_cls)
    if pq.d != coarse.d:
        raise ValueError(f"codebooks and coarse quantizer disagree: pq.d = {pq.d}, coarse.d = "
                         f"{coarse.d}")
    _check_lists(lists, lists_cls, coarse.nlist, pq.code_size, "blocked", l2)
    x = checked(x, np.float32, "x", (-1, coarse.d))
    selector = check_selector(selector, x.shape[0])
    xt = to_device(x, device)
    codes = lists.scan_codes(pq.M, pq.nbits)

    def key_of(qb, qe, rows, base):
        tables = _search_tables(xt[qb:qe], pq, l2, True)
        start = lists.bias[rows] if l2 else torch.zeros_like(base)
        return base + _adc(tables, codes, rows, start)

    return l2, xt, selector, key_of


def ivfpq_search(device, x, coarse, pq, invlists, nprobe, k, metric, n_threads, estimates,
                 max_probe, selector, coarse_cls, pq_cls, lists_cls):
    k = positive(k, "k")
    l2, xt, selector, key_of = _ivfpq_setup(device, x, coarse, pq, invlists, metric, selector,
                                            coarse_cls, pq_cls, lists_cls)
    best = _TopK(device, xt.shape[0], k)
    _ivf_scan(device, xt, coarse, invlists, nprobe, max_probe, k, selector, 4, key_of, best)
    return best.result(l2)


def ivfpq_range_search(device, x, coarse, pq, invlists, nprobe, radius, metric, n_threads,
                       max_results, selector, coarse_cls, pq_cls, lists_cls):
    l2, xt, selector, key_of = _ivfpq_setup(device, x, coarse, pq, invlists, metric, selector,
                                            coarse_cls, pq_cls, lists_cls)
    out = RangeCollector(xt.shape[0], radius, l2, max_results, device)
    _ivf_scan(device, xt, coarse, invlists, nprobe, 0, 1, selector, 4, key_of, out.keep)
    return out.result()


def _ivfflat_setup(device, x, coarse, lists, metric, selector, coarse_cls, lists_cls):
    l2 = parse_metric(metric)
    if not isinstance(coarse, coarse_cls):
        raise TypeError(f"coarse must be a CoarseQuantizer of this engine, got "
                        f"{type(coarse).__name__}")
    _check_lists(lists, lists_cls, coarse.nlist, 4 * coarse.d, "rows", False)
    x = checked(x, np.float32, "x", (-1, coarse.d))
    selector = check_selector(selector, x.shape[0])
    xt = to_device(x, device)
    vectors = lists.vectors(coarse.d)

    def key_of(qb, qe, rows, base):
        return _direct_keys(xt[qb:qe], vectors[rows], l2)

    return l2, xt, selector, key_of


def ivfflat_search(device, x, coarse, invlists, nprobe, k, metric, n_threads, max_probe,
                   selector, coarse_cls, lists_cls):
    k = positive(k, "k")
    l2, xt, selector, key_of = _ivfflat_setup(device, x, coarse, invlists, metric, selector,
                                              coarse_cls, lists_cls)
    best = _TopK(device, xt.shape[0], k)
    _ivf_scan(device, xt, coarse, invlists, nprobe, max_probe, k, selector, 2 * coarse.d,
              key_of, best)
    return best.result(l2)


def ivfflat_range_search(device, x, coarse, invlists, nprobe, radius, metric, n_threads,
                         max_results, selector, coarse_cls, lists_cls):
    l2, xt, selector, key_of = _ivfflat_setup(device, x, coarse, invlists, metric, selector,
                                              coarse_cls, lists_cls)
    out = RangeCollector(xt.shape[0], radius, l2, max_results, device)
    _ivf_scan(device, xt, coarse, invlists, nprobe, 0, 1, selector, 2 * coarse.d, key_of,
              out.keep)
    return out.result()


def ivfpq_code_bias(device, codes, list_nos, coarse, pq, n_threads, coarse_cls, pq_cls):
    check_pq(pq, pq_cls)
    if not isinstance(coarse, coarse_cls):
        raise TypeError(f"coarse must be a CoarseQuantizer of this engine, got "
                        f"{type(coarse).__name__}")
    if pq.d != coarse.d:
        raise ValueError(f"codebooks and coarse quantizer disagree: pq.d = {pq.d}, coarse.d = "
                         f"{coarse.d}")
    codes = checked(codes, np.uint8, "codes", (-1, pq.code_size))
    list_nos = checked(list_nos, np.int64, "list_nos", (codes.shape[0],))
    if list_nos.size and (int(list_nos.min()) < 0 or int(list_nos.max()) >= coarse.nlist):
        raise ValueError(f"list number out of range: expected 0 <= list_no < {coarse.nlist}")
    idx = unpack_codes(to_device(codes, device), pq.M, pq.nbits).long()
    y = coarse.centroids[to_device(list_nos, device)]
    # sum_m (||c_m||^2 + 2 <y_l,m, c_m>), in the core's order (its 16-lane dot products).
    acc = torch.zeros(codes.shape[0], dtype=torch.float32, device=device)
    for m in range(pq.M):
        c = pq.codebooks[m][idx[:, m]]
        ip = lane_dot(y[:, m * pq.dsub:(m + 1) * pq.dsub].contiguous(), c)
        acc = acc + (pq.sqnorms[m][idx[:, m]] + 2 * ip)
    return to_host(acc)

