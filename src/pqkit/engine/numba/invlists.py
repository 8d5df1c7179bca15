"""Inverted lists of the Numba engine (the compiled core's ``cpp/search/invlists``)."""

from __future__ import annotations

import numpy as np

from ._common import _checked


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
