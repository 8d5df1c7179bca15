"""Id selectors (the compiled core's ``cpp/search/selector``) and the growable buffers of range
search results (its ``cpp/common/range.h``).

A selector holds one set of ids for every query, or one per query (CSR ``offsets``); a set is
a bitmap over ``[start, start + 8 * len(bitmap))`` (least significant bit first) or a sorted id
array, and ``exclude`` inverts it. The scans pass a selector to their jitted loops as the seven
values of :meth:`IDSelector.args` and test each candidate id with :func:`_accepts` before its key
is computed, so a disallowed id never enters a top-k or a range result.
"""

from __future__ import annotations

import threading

import numpy as np

from .._selector_args import check_selector_arguments
from ._common import _checked, _jit

_NO_BITS = np.empty(0, dtype=np.uint8)
_NO_IDS = np.empty(0, dtype=np.int64)
_ONE_EMPTY_SET = np.zeros(2, dtype=np.int64)

#: The selector arguments of a search without one (kind 0 accepts every id).
NO_SELECTOR = (0, _NO_BITS, 0, _NO_IDS, _ONE_EMPTY_SET, False, False)


class IDSelector:
    """Which ids a search may return (arguments as the compiled core's ``IDSelector``)."""

    def __init__(self, bitmap, start, ids, offsets, exclude):
        self._exclude = bool(exclude)
        self.start = int(start)
        self.per_query = offsets is not None
        bitmap, ids, offsets = check_selector_arguments(bitmap, self.start, ids, offsets, _checked)
        if bitmap is not None:
            self.kind, self.bits, self.ids = 1, bitmap.copy(), _NO_IDS
            self.offsets = _ONE_EMPTY_SET
            return
        self.kind, self.bits, self.ids, self.offsets = 2, _NO_BITS, ids.copy(), offsets

    @property
    def n_sets(self) -> int:
        return self.offsets.shape[0] - 1 if self.per_query else 0

    @property
    def exclude(self) -> bool:
        return self._exclude

    def args(self) -> tuple:
        """(kind, bits, start, ids, offsets, per_query, exclude) for the jitted scans."""
        return (self.kind, self.bits, self.start, self.ids, self.offsets, self.per_query,
                self._exclude)


def selector_args(selector, nq: int) -> tuple:
    """The jitted scans' arguments of a selector (or None), checked against ``nq`` queries."""
    if selector is None:
        return NO_SELECTOR
    if not isinstance(selector, IDSelector):
        raise TypeError(f"selector must be an IDSelector of this engine or None, got "
                        f"{type(selector).__name__}")
    if selector.per_query and selector.n_sets != nq:
        raise ValueError(f"the selector holds one id set per query for {selector.n_sets} queries, "
                         f"got {nq} queries")
    return selector.args()


@_jit
def _set_bounds(offsets, per_query, q):
    """The slice of the ids array holding query q's set."""
    s = q if per_query else 0
    return offsets[s], offsets[s + 1]


@_jit
def _accepts(kind, bits, start, ids, lo, hi, exclude, id_):
    """Whether the selector (kind 0: none) allows id_, its set being ids[lo:hi] or the bitmap."""
    if kind == 0:
        return True
    if kind == 1:
        inside = False
        if id_ >= start:
            rel = id_ - start
            if rel < bits.shape[0] * 8:
                inside = ((bits[rel >> 3] >> (rel & 7)) & 1) == 1
    else:
        a = lo
        b = hi
        while a < b:
            m = (a + b) >> 1
            if ids[m] < id_:
                a = m + 1
            else:
                b = m
        inside = a < hi and ids[a] == id_
    return inside != exclude


# ============================================================================ range results
@_jit
def _range_buffers():
    return np.empty(256, dtype=np.float32), np.empty(256, dtype=np.int64)


@_jit
def _range_push(keys, ids, n, key, id_):
    """Appends (key, id_) at n, growing the buffers; returns them (maybe new) and n + 1."""
    if n == keys.shape[0]:
        grown_keys = np.empty(2 * n, dtype=np.float32)
        grown_ids = np.empty(2 * n, dtype=np.int64)
        grown_keys[:n] = keys
        grown_ids[:n] = ids
        keys, ids = grown_keys, grown_ids
    keys[n] = key
    ids[n] = id_
    return keys, ids, n + 1


def range_threshold(radius: float, l2: bool) -> np.float32:
    """The largest float32 strictly below the radius key (radius for L2, -radius for IP)."""
    key = float(radius) if l2 else -float(radius)
    with np.errstate(over="ignore"):
        tau = np.float32(key)
    if float(tau) >= key:
        tau = np.nextafter(tau, np.float32(-np.inf))
    return np.float32(tau)


class RangeBudget:
    """The cap of one range search: chunks report their counts, and a chunk stops once it alone
    passes what is left (then the total passes the cap too)."""

    def __init__(self, cap: int):
        self.cap = int(cap)
        self.used = 0
        self._lock = threading.Lock()

    def left(self) -> int:
        with self._lock:
            return self.cap - self.used

    def take(self, n: int) -> None:
        with self._lock:
            self.used += int(n)
            if self.used > self.cap:
                raise limit_error(self.cap)


def limit_error(cap: int) -> ValueError:
    return ValueError(f"range search found more than max_results = {cap} results; lower the "
                      "radius, search fewer queries at a time, or allow more with max_results")


class RangeCollector:
    """Per-chunk range results, assembled into FAISS's ``(lims, D, I)`` layout, each query's
    results sorted by (key, id) as the compiled core sorts them."""

    def __init__(self, nq: int, max_results: int):
        self.nq = nq
        self.budget = RangeBudget(max_results)
        self.parts = {}

    def add(self, begin: int, counts, keys, ids, n: int, overflow: bool) -> None:
        if overflow:
            raise limit_error(self.budget.cap)
        self.budget.take(n)
        self.parts[begin] = (np.asarray(counts), keys[:n].copy(), ids[:n].copy())

    def result(self, negate: bool):
        counts = np.zeros(self.nq, dtype=np.int64)
        keys, ids = [np.empty(0, np.float32)], [np.empty(0, np.int64)]
        for begin in sorted(self.parts):
            c, k, i = self.parts[begin]
            counts[begin:begin + c.shape[0]] = c
            keys.append(k)
            ids.append(i)
        keys, ids = np.concatenate(keys), np.concatenate(ids)
        query = np.repeat(np.arange(self.nq), counts)
        order = np.lexsort((ids, keys, query))
        lims = np.zeros(self.nq + 1, dtype=np.int64)
        np.cumsum(counts, out=lims[1:])
        D = keys[order]
        return lims, (-D if negate else D).astype(np.float32), ids[order]
