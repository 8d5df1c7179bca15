"""Inverted lists of the torch engine: every list's codes, ids and biases on the engine's
device, as flat tensors ordered by list (list 0 first, each list in insertion order), with
``offsets[l]:offsets[l + 1]`` the rows of list ``l``.

The scans read codes as rows; a PQ scan reads them unpacked (one sub-quantizer index per
byte, or per int32 above 8 bits), made once per codebook shape and kept until the codes change.
Mutations replace the tensors (never edit them in place), so a scan that holds the previous
ones reads a consistent snapshot. The blocked layout of the file format (64-code blocks) is
converted on the way in (:func:`external_lists`) and out (:meth:`InvertedLists.export_blocked`).
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import checked, to_device, to_host
from .pq import unpack_codes

#: Codes per block of the blocked layout (as the compiled core's ``cpp/common/codes.h``).
BLOCK = 64


class InvertedLists:
    """Codes and int64 ids per list (and a float32 bias per code for L2 IVF-PQ), on a device."""

    device = torch.device("cpu")  # the engine's subclass sets its device
    _read_only = False

    def __init__(self, nlist, code_size, layout, with_bias=False):
        if layout not in ("rows", "blocked"):
            raise ValueError(f"layout must be 'rows' or 'blocked', got {layout!r}")
        if int(nlist) < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        if int(code_size) < 1:
            raise ValueError(f"code_size must be >= 1, got {code_size}")
        self._nlist, self._code_size = int(nlist), int(code_size)
        self.layout, self._with_bias = layout, bool(with_bias)
        self._clear()

    # ---- properties
    @property
    def nlist(self) -> int:
        return self._nlist

    @property
    def code_size(self) -> int:
        return self._code_size

    @property
    def ntotal(self) -> int:
        return int(self.ids.shape[0])

    @property
    def with_bias(self) -> bool:
        return self._with_bias

    @property
    def read_only(self) -> bool:
        return self._read_only

    # ---- state
    def _clear(self) -> None:
        dev = self.device
        self._set(torch.empty(0, dtype=torch.int64, device=dev),
                  torch.empty(0, dtype=torch.int64, device=dev),
                  torch.empty((0, self._code_size), dtype=torch.uint8, device=dev),
                  torch.empty(0, dtype=torch.float32, device=dev))

    def _set(self, list_nos, ids, codes, bias) -> None:
        counts = torch.bincount(list_nos, minlength=self._nlist)
        offsets = torch.zeros(self._nlist + 1, dtype=torch.int64, device=self.device)
        offsets[1:] = torch.cumsum(counts, 0)
        self.list_nos, self.ids, self.codes, self.bias = list_nos, ids, codes, bias
        self.offsets = offsets
        self.host_offsets = to_host(offsets)
        self._unpacked = {}

    def _refuse(self, what):
        if self._read_only:
            raise ValueError(f"cannot {what}: these inverted lists are a read-only view of "
                             "external memory")

    def add(self, list_nos, ids, codes, bias=None) -> None:
        self._refuse("add codes")
        list_nos = checked(list_nos, np.int64, "list_nos", (-1,))
        n = list_nos.shape[0]
        ids = checked(ids, np.int64, "ids", (n,))
        codes = checked(codes, np.uint8, "codes", (n, self._code_size))
        if bias is not None:
            bias = checked(bias, np.float32, "bias", (n,))
        if self._with_bias and bias is None and n > 0:
            raise ValueError("these lists keep a bias per code; none given")
        bad = (list_nos < 0) | (list_nos >= self._nlist)
        if bad.any():
            raise ValueError(f"list number out of range: expected 0 <= list_no < {self._nlist}, "
                             f"got {int(list_nos[bad][0])}")
        if n == 0:
            return
        dev = self.device
        all_lists = torch.cat((self.list_nos, to_device(list_nos, dev)))
        order = torch.argsort(all_lists, stable=True)  # stable: insertion order within a list
        new_bias = self.bias
        if self._with_bias:
            new_bias = torch.cat((self.bias, to_device(bias, dev)))[order]
        self._set(all_lists[order], torch.cat((self.ids, to_device(ids, dev)))[order],
                  torch.cat((self.codes, to_device(codes, dev)))[order], new_bias)

    def set_bias(self, bias) -> None:
        self._refuse("set the bias")
        if not self._with_bias:
            raise ValueError("these lists keep no bias")
        self.bias = to_device(checked(bias, np.float32, "bias", (self.ntotal,)).copy(),
                              self.device)

    def list_sizes(self) -> np.ndarray:
        return np.diff(self.host_offsets)

    def _range(self, list_no) -> slice:
        list_no = int(list_no)
        if not 0 <= list_no < self._nlist:
            raise IndexError(f"list number out of range: expected 0 <= list_no < {self._nlist}, "
                             f"got {list_no}")
        return slice(int(self.host_offsets[list_no]), int(self.host_offsets[list_no + 1]))

    def list_ids(self, list_no) -> np.ndarray:
        return to_host(self.ids[self._range(list_no)])

    def list_codes(self, list_no) -> np.ndarray:
        return to_host(self.codes[self._range(list_no)])

    def remove_ids(self, ids) -> int:
        self._refuse("remove ids")
        ids = checked(ids, np.int64, "ids", (-1,))
        doomed = torch.isin(self.ids, to_device(ids, self.device))
        removed = int(doomed.sum())
        if removed:
            keep = ~doomed
            self._set(self.list_nos[keep], self.ids[keep], self.codes[keep],
                      self.bias[keep] if self._with_bias else self.bias)
        return removed

    def locate(self, ids):
        ids = checked(ids, np.int64, "ids", (-1,))
        list_nos = np.full(ids.shape[0], -1, dtype=np.int64)
        offsets = np.full(ids.shape[0], -1, dtype=np.int64)
        if self.ntotal and ids.size:
            stored = to_host(self.ids)
            stored_lists = to_host(self.list_nos)
            order = np.argsort(stored, kind="stable")
            pos = np.minimum(np.searchsorted(stored[order], ids), self.ntotal - 1)
            found = stored[order[pos]] == ids
            rows = order[pos[found]]
            list_nos[found] = stored_lists[rows]
            offsets[found] = rows - self.host_offsets[stored_lists[rows]]
        return list_nos, offsets

    def reset(self) -> None:
        self._refuse("reset")
        self._clear()

    def memory_usage_bytes(self) -> int:
        total = self.codes.numel() + 8 * self.ids.numel()
        return int(total + (4 * self.bias.numel() if self._with_bias else 0))

    def export(self):
        return self.list_sizes(), to_host(self.ids), to_host(self.codes)

    def export_blocked(self):
        if self.layout != "blocked":
            raise ValueError("export_blocked needs blocked lists")
        sizes = self.list_sizes()
        blocks = to_blocks(to_host(self.codes), sizes, self._code_size)
        return sizes, to_host(self.ids), blocks, (to_host(self.bias) if self._with_bias else None)

    # ---- what the scans read
    def scan_codes(self, M: int, nbits: int) -> torch.Tensor:
        """The codes unpacked into sub-quantizer indices, one row per sub-quantizer:
        ``(M, ntotal)`` on the device (uint8 up to 8 bits, int32 above), kept until the codes
        change. A scan gathers one sub-quantizer's indices for a whole batch at a time."""
        key = (M, nbits)
        found = self._unpacked.get(key)
        if found is None:
            found = unpack_codes(self.codes, M, nbits)
            found = (found.to(torch.uint8) if nbits <= 8 else found).T.contiguous()
            self._unpacked = {key: found}
        return found

    def vectors(self, d: int) -> torch.Tensor:
        """IVF-Flat rows as float32 vectors ``(ntotal, d)`` (a view of the stored bytes)."""
        return self.codes.view(torch.float32).reshape(-1, d)


def block_starts(sizes: np.ndarray) -> np.ndarray:
    """First block of each list and, last, the total: each list padded to whole blocks."""
    return np.concatenate(([0], np.cumsum(-(-sizes // BLOCK)))).astype(np.int64)


def to_blocks(rows: np.ndarray, sizes: np.ndarray, code_size: int) -> np.ndarray:
    """Rows in list order to the blocked layout: byte j of a list's code i at
    ``blocks[first block + i // 64, j, i % 64]``, padding codes zero."""
    starts = block_starts(sizes)
    blocks = np.zeros((int(starts[-1]), code_size, BLOCK), dtype=np.uint8)
    if rows.shape[0]:
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        lists = np.repeat(np.arange(sizes.size), sizes)
        within = np.arange(rows.shape[0]) - offsets[lists]
        blocks[starts[lists] + within // BLOCK, :, within % BLOCK] = rows
    return blocks


def from_blocks(blocks: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The blocked layout back to rows in list order (the inverse of :func:`to_blocks`)."""
    n = int(sizes.sum())
    starts = block_starts(sizes)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    lists = np.repeat(np.arange(sizes.size), sizes)
    within = np.arange(n) - offsets[lists]
    return np.ascontiguousarray(blocks[starts[lists] + within // BLOCK, :, within % BLOCK])


def make_external(cls, nlist, code_size, layout, list_sizes, ids, codes, bias):
    """Read-only lists (class ``cls``, a subclass of :class:`InvertedLists`) holding a device
    copy of external arrays; a mapped file's arrays are read once and not kept."""
    if layout not in ("rows", "blocked"):
        raise ValueError(f"layout must be 'rows' or 'blocked', got {layout!r}")
    nlist, code_size = int(nlist), int(code_size)
    if nlist < 1 or code_size < 1:
        raise ValueError(f"nlist and code_size must be >= 1, got {nlist} and {code_size}")
    sizes = checked(list_sizes, np.int64, "list_sizes", (nlist,))
    ids = checked(ids, np.int64, "ids", (-1,))
    n = ids.shape[0]
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        got = getattr(codes, "dtype", type(codes).__name__)
        raise TypeError(f"codes must be a uint8 array, got {got}")
    if not codes.flags.c_contiguous:
        raise ValueError("codes must be C-contiguous; try numpy.ascontiguousarray")
    if bias is not None:
        bias = checked(bias, np.float32, "bias", (n,))
    if sizes.size and int(sizes.min()) < 0:
        raise ValueError("list sizes must be >= 0")
    total = sum(int(s) for s in sizes)
    if total != n:
        raise ValueError(f"list sizes add up to {total} codes, but {n} ids are given")
    units = int(block_starts(sizes)[-1]) * BLOCK if layout == "blocked" else n
    if codes.nbytes != units * code_size:
        raise ValueError(f"list sizes call for {units * code_size} bytes of codes, "
                         f"{codes.nbytes} are given")
    rows = (from_blocks(codes.reshape(-1, code_size, BLOCK), sizes) if layout == "blocked"
            else codes.reshape(n, code_size))
    lists = cls(nlist, code_size, layout, bias is not None)
    dev = lists.device
    list_nos = torch.repeat_interleave(torch.arange(nlist, device=dev), to_device(sizes, dev))
    lists._set(list_nos, to_device(ids, dev), to_device(rows, dev),
               to_device(bias, dev) if bias is not None
               else torch.empty(0, dtype=torch.float32, device=dev))
    lists._read_only = True
    return lists
