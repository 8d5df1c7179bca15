"""Inverted lists of the Numba engine (the compiled core's ``cpp/search/invlists``): owned,
growable lists (:class:`InvertedLists`) and read-only views of external arrays such as a mapped
index file (:func:`external_lists`)."""

from __future__ import annotations

import numpy as np

from ._common import _checked

#: Codes per block of the blocked layout (``cpp/common/codes.h``).
_BLOCK = 64


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

    read_only = False

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

    def export_blocked(self):
        """(list sizes, ids, blocks uint8 (blocks, code_size, 64), bias float32 (ntotal,) or
        None): every list in order, its codes in whole 64-code blocks (the core's layout)."""
        if self.layout != "blocked":
            raise ValueError("export_blocked needs blocked lists")
        sizes = self.list_sizes()
        blocks = _to_blocks(self.codes, sizes, self.code_size)
        return sizes, self.ids.copy(), blocks, (self.bias.copy() if self.with_bias else None)

    def scan_arrays(self, probes):
        """(codes as rows, ids, bias, offsets) that the scans read for these probed lists."""
        return self.codes, self.ids, self.bias, self.offsets

    def code_rows(self, rows) -> np.ndarray:
        """Codes (as rows) of the given positions in list order."""
        return self.codes[rows]


def _block_starts(sizes: np.ndarray) -> np.ndarray:
    """First block of each list and, last, the total: each list padded to whole blocks."""
    return np.concatenate(([0], np.cumsum(-(-sizes // _BLOCK)))).astype(np.int64)


def _to_blocks(rows: np.ndarray, sizes: np.ndarray, code_size: int) -> np.ndarray:
    """Rows in list order to the blocked layout: byte j of a list's code i at
    ``blocks[first block + i // 64, j, i % 64]``, padding codes zero."""
    starts = _block_starts(sizes)
    blocks = np.zeros((int(starts[-1]), code_size, _BLOCK), dtype=np.uint8)
    if rows.shape[0]:
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        lists = np.repeat(np.arange(sizes.size), sizes)
        within = np.arange(rows.shape[0]) - offsets[lists]
        blocks[starts[lists] + within // _BLOCK, :, within % _BLOCK] = rows
    return blocks


def _rows_of_blocks(blocks: np.ndarray, first_block: int, n: int) -> np.ndarray:
    """The n codes (as rows) of the list whose blocks start at ``first_block``."""
    count = -(-n // _BLOCK)
    part = blocks[first_block:first_block + count]
    return part.transpose(0, 2, 1).reshape(count * _BLOCK, -1)[:n]


class ExternalInvertedLists:
    """Read-only inverted lists over external arrays (a mapped file), not copied.

    Made by :func:`external_lists`. The ids and bias are in list order; so are the codes, as rows
    (``"rows"``) or in whole 64-code blocks per list (``"blocked"``, the compiled core's scan
    layout). The scans of this engine read rows: for blocked codes, :meth:`scan_arrays` copies
    the probed lists into rows (the scans themselves are those of :class:`InvertedLists`). Every
    change raises ValueError.
    """

    read_only = True

    def __init__(self, nlist, code_size, layout, list_sizes, ids, codes, bias):
        if layout not in ("rows", "blocked"):
            raise ValueError(f"layout must be 'rows' or 'blocked', got {layout!r}")
        self.nlist, self.code_size = int(nlist), int(code_size)
        if self.nlist < 1 or self.code_size < 1:
            raise ValueError(f"nlist and code_size must be >= 1, got {nlist} and {code_size}")
        sizes = _checked(list_sizes, np.int64, "list_sizes", (self.nlist,))
        self.ids = _checked(ids, np.int64, "ids", (-1,))
        n = self.ids.shape[0]
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
            got = getattr(codes, "dtype", type(codes).__name__)
            raise TypeError(f"codes must be a uint8 array, got {got}")
        if not codes.flags.c_contiguous:
            raise ValueError("codes must be C-contiguous; try numpy.ascontiguousarray")
        self.with_bias = bias is not None
        self.bias = (_checked(bias, np.float32, "bias", (n,)) if self.with_bias
                     else np.empty(0, dtype=np.float32))
        if sizes.size and int(sizes.min()) < 0:
            raise ValueError("list sizes must be >= 0")
        total = sum(int(s) for s in sizes) if sizes.size else 0
        if total != n:
            raise ValueError(f"list sizes add up to {total} codes, but {n} ids are given")
        self.layout = layout
        self._sizes = sizes.copy()
        self.offsets = np.concatenate(([0], np.cumsum(self._sizes))).astype(np.int64)
        unit = self.code_size * (_BLOCK if layout == "blocked" else 1)
        self._block_starts = _block_starts(self._sizes) if layout == "blocked" else self.offsets
        if codes.nbytes != int(self._block_starts[-1]) * unit:
            raise ValueError(f"list sizes call for {int(self._block_starts[-1]) * unit} bytes of "
                             f"codes, {codes.nbytes} are given")
        shape = (-1, self.code_size, _BLOCK) if layout == "blocked" else (-1, self.code_size)
        self._codes = codes.reshape(shape)
        self.codes = self._codes if layout == "rows" else None  # rows, as the scans read them
        self._list_nos = None

    @property
    def ntotal(self) -> int:
        return int(self.ids.shape[0])

    def _refuse(self, what):
        raise ValueError(f"cannot {what}: these inverted lists are a read-only view of external "
                         "memory")

    def add(self, list_nos, ids, codes, bias=None) -> None:
        self._refuse("add codes")

    def set_bias(self, bias) -> None:
        self._refuse("set the bias")

    def remove_ids(self, ids) -> int:
        self._refuse("remove ids")

    def reset(self) -> None:
        self._refuse("reset")

    def list_sizes(self) -> np.ndarray:
        return self._sizes.copy()

    def _list_no(self, list_no) -> int:
        list_no = int(list_no)
        if not 0 <= list_no < self.nlist:
            raise IndexError(f"list number out of range: expected 0 <= list_no < {self.nlist}, "
                             f"got {list_no}")
        return list_no

    def _list_rows(self, l: int) -> np.ndarray:
        n = int(self._sizes[l])
        if self.layout == "rows":
            return self._codes[self.offsets[l]:self.offsets[l] + n]
        return _rows_of_blocks(self._codes, int(self._block_starts[l]), n)

    def list_ids(self, list_no) -> np.ndarray:
        l = self._list_no(list_no)
        return self.ids[self.offsets[l]:self.offsets[l + 1]].copy()

    def list_codes(self, list_no) -> np.ndarray:
        return np.array(self._list_rows(self._list_no(list_no)), copy=True)

    def locate(self, ids):
        """(list_nos, offsets within the list) of each id, -1/-1 where absent."""
        ids = _checked(ids, np.int64, "ids", (-1,))
        list_nos = np.full(ids.shape[0], -1, dtype=np.int64)
        offsets = np.full(ids.shape[0], -1, dtype=np.int64)
        if self.ntotal and ids.size:
            if self._list_nos is None:
                self._list_nos = np.repeat(np.arange(self.nlist, dtype=np.int64), self._sizes)
            order = np.argsort(self.ids, kind="stable")
            pos = np.minimum(np.searchsorted(self.ids[order], ids), self.ntotal - 1)
            found = self.ids[order[pos]] == ids
            rows = order[pos[found]]
            list_nos[found] = self._list_nos[rows]
            offsets[found] = rows - self.offsets[self._list_nos[rows]]
        return list_nos, offsets

    def memory_usage_bytes(self) -> int:
        return int(self._codes.nbytes + self.ids.nbytes + self.bias.nbytes)

    def export(self):
        """(list sizes, ids, codes as rows), copies."""
        if self.layout == "rows":
            return self.list_sizes(), self.ids.copy(), self._codes.copy()
        rows = [self._list_rows(l) for l in range(self.nlist) if self._sizes[l]]
        codes = (np.concatenate(rows) if rows else np.empty((0, self.code_size), dtype=np.uint8))
        return self.list_sizes(), self.ids.copy(), codes

    def export_blocked(self):
        if self.layout != "blocked":
            raise ValueError("export_blocked needs blocked lists")
        return (self.list_sizes(), self.ids.copy(), self._codes.copy(),
                self.bias.copy() if self.with_bias else None)

    def scan_arrays(self, probes):
        """(codes as rows, ids, bias, offsets) for the scans: the lists in ``probes`` (an int64
        array, -1 for none; None for every list) copied into rows, the others left empty."""
        if self.layout == "rows":
            return self._codes, self.ids, self.bias, self.offsets
        wanted = (np.arange(self.nlist) if probes is None
                  else np.unique(probes[probes >= 0]).astype(np.int64))
        sizes = np.zeros(self.nlist, dtype=np.int64)
        sizes[wanted] = self._sizes[wanted]
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        parts = [(self._list_rows(int(l)), self.offsets[l], self.offsets[l + 1]) for l in wanted
                 if self._sizes[l]]
        if not parts:
            return (np.empty((0, self.code_size), np.uint8), np.empty(0, np.int64),
                    np.empty(0, np.float32), offsets)
        codes = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
        ids = np.concatenate([self.ids[a:b] for _, a, b in parts])
        bias = (np.concatenate([self.bias[a:b] for _, a, b in parts]) if self.with_bias
                else self.bias)
        return codes, ids, bias, offsets

    def code_rows(self, rows) -> np.ndarray:
        """Codes (as rows) of the given positions in list order."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.layout == "rows":
            return self._codes[rows]
        lists = np.searchsorted(self.offsets, rows, side="right") - 1
        within = rows - self.offsets[lists]
        return self._codes[self._block_starts[lists] + within // _BLOCK, :, within % _BLOCK]


def external_lists(nlist, code_size, layout, list_sizes, ids, codes, bias=None):
    """Read-only inverted lists over the given arrays (not copied; the result keeps them alive).

    See :meth:`pqkit.engine.protocol.Engine.external_lists`.
    """
    return ExternalInvertedLists(nlist, code_size, layout, list_sizes, ids, codes, bias)
