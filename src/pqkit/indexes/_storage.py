"""Storage shared by the index types: a row store (vectors or codes with their ids, in growable
buffers) and the mixin of indexes whose codes an engine's ``InvertedLists`` keeps."""

from __future__ import annotations

import numpy as np

from ._state import state_form, verifying
from .base import MAX_ID

__all__ = []


def _sorted_ids(ids: np.ndarray):
    order = np.argsort(ids, kind="stable")
    return order, ids[order]


class _RowStore:
    """Rows of fixed width (vectors or codes) plus their int64 ids, in growable buffers.

    Appends are amortised O(rows appended): the buffers double their capacity when full.
    ``data`` returns a C-contiguous view of the stored rows. While the ids are 0, 1, ..., n-1
    (as ``add`` assigns them) they are not stored: row ``r`` is id ``r`` (``_ids`` is None), which
    saves 8 bytes per row; the first change that breaks the sequence (ids given to an add, a
    removal) writes them out. ``ids`` is then a view, else a new array of the row numbers: a
    search maps rows through :meth:`ids_at`, which allocates only what it returns.
    """

    def __init__(self, width: int, dtype):
        self.width = width
        self.dtype = np.dtype(dtype)
        self.clear()

    def clear(self) -> None:
        self._data = np.empty((0, self.width), dtype=self.dtype)
        self._ids = None  # None: each row's id is its row number
        self.n = 0
        self.max_id = -1  # upper bound of the stored ids (-1: none ever stored)
        self._derived = {}  # values computed from the stored rows, dropped by every change

    def view(self, data: np.ndarray, ids: np.ndarray, max_id: int) -> None:
        """Hold ``data`` and ``ids`` as they are (read-only arrays of a mapped file): no copy.
        The index refuses every change before it reaches the store."""
        self.clear()
        self._data, self._ids, self.n, self.max_id = data, ids, int(ids.shape[0]), max_id

    @property
    def data(self) -> np.ndarray:
        return self._data[: self.n]

    @property
    def ids(self) -> np.ndarray:
        """The stored ids, int64 (n,): a view of the stored ones, or a new array of the row
        numbers where they are implicit."""
        if self._ids is None:
            return np.arange(self.n, dtype=np.int64)
        return self._ids[: self.n]

    def ids_at(self, rows) -> np.ndarray:
        """The ids of ``rows`` (an array of row numbers in ``0..n-1``, or a slice): a new array, or
        for a slice of stored ids a view (read it, do not write it)."""
        if self._ids is not None:
            return self._ids[: self.n][rows]
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self.n), dtype=np.int64)
        return np.array(rows, dtype=np.int64)

    def _write_out_ids(self) -> None:
        """Store the implicit ids (0..n-1) in a buffer of the rows' capacity."""
        if self._ids is None:
            self._ids = np.arange(self._data.shape[0], dtype=np.int64)

    def append(self, rows: np.ndarray, ids: np.ndarray) -> None:
        n, n_new = self.n, self.n + rows.shape[0]
        write_out = self._ids is None and not _continues_rows(ids, n)
        if n_new > self._data.shape[0]:
            capacity = max(n_new, 2 * self._data.shape[0], 16)
            data = np.empty((capacity, self.width), dtype=self.dtype)
            data[:n] = self.data
            self._data = data
            if self._ids is not None:
                all_ids = np.empty(capacity, dtype=np.int64)
                all_ids[:n] = self._ids[:n]
                self._ids = all_ids
        if write_out:
            self._write_out_ids()  # at the capacity just reached: one buffer, no copy
        self._derived = {}
        self._data[n:n_new] = rows
        if self._ids is not None:
            self._ids[n:n_new] = ids
        self.n = n_new
        if ids.size:
            self.max_id = max(self.max_id, int(ids.max()))

    def derived(self, name: str, compute):
        """``compute()``, kept until the rows change (see :func:`_cached`)."""
        return _cached(self._derived, name, compute)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        if ids.size == 0 or self.n == 0 or int(ids.min()) > self.max_id:
            return np.zeros(ids.shape, dtype=bool)
        if self._ids is None:
            return (ids >= 0) & (ids < self.n)
        return np.isin(ids, self.ids)

    def ids_are_rows(self) -> bool:
        """Whether the stored ids are 0, 1, ..., n-1 (as ``add`` assigns them): each id is its row."""
        if self._ids is None:
            return True
        return self.derived("ids are row numbers", lambda: _ids_are_rows(self.ids))

    def rows_of(self, ids: np.ndarray, unchecked: bool = False) -> np.ndarray:
        """Row number of each id, -1 where absent (int64, same shape as ``ids``; ``unchecked``:
        see :func:`_rows_of`)."""
        if self._ids is None:
            return _rows_of_row_ids(self.n, ids, unchecked)
        return _rows_of(self.ids, ids, self.derived, unchecked)

    def remove(self, ids: np.ndarray) -> int:
        if ids.size == 0 or self.n == 0:
            return 0
        removed = np.isin(self.ids, ids)
        n_removed = int(removed.sum())
        if n_removed:
            self._write_out_ids()
            self._derived = {}
            keep = ~removed
            n_keep = self.n - n_removed
            self._data[:n_keep] = self.data[keep]
            self._ids[:n_keep] = self._ids[: self.n][keep]
            self.n = n_keep
        return n_removed

    def nbytes(self) -> int:
        """Bytes allocated for rows and ids, spare capacity included (as InvertedLists counts)."""
        return self._data.nbytes + (0 if self._ids is None else self._ids.nbytes)


class _RowIndex:
    """The hooks of an index whose vectors or codes are rows of a :class:`_RowStore`,
    ``self._store`` (IndexFlat, IndexScalarQuantizer): row ``r`` holds id ``store.ids[r]``."""

    def _ntotal(self) -> int:
        return self._store.n

    def _contains(self, ids):
        return self._store.contains(ids)

    def _id_upper_bound(self):
        return self._store.max_id

    def _restore_id_upper_bound(self, bound):
        self._store.max_id = bound

    def _rows_of(self, ids, unchecked=False):
        """Row of each id in the store, -1 where absent (IndexRefine's re-ranking)."""
        return self._store.rows_of(ids, unchecked)

    def _remove(self, ids):
        return self._store.remove(ids)

    def _merge_ids(self):
        return self._store.ids

    def _merge(self, other, add_id):
        self._store.append(other._store.data, other._store.ids + np.int64(add_id))
        other._store.clear()

    def _reset(self):
        self._store.clear()

    def _resident_rows(self):
        """The stored rows as the engine reads them: on a device engine (torch), a copy on its
        device made once and kept until the rows change, so a search moves only its queries."""
        data = self._store.data
        if self._device is None:  # a CPU engine reads the rows where they are
            return data
        core = self._engine
        return self._store.derived("resident rows", lambda: core.resident(data))

    def _restore_rows(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """A load's rows and ids (checked by the caller): held as they are for a mapped load
        (read-only, not copied; the ids bounded by their maximum where the load verifies them,
        else by MAX_ID), else copied into the store."""
        if state_form().mapped:
            max_id = (int(ids.max()) if verifying() else MAX_ID) if ids.size else -1
            self._store.view(rows, ids, max_id)
        else:
            self._store.append(rows, ids)


def _cached(cache: dict, name: str, compute):
    """``cache[name]``, computed by ``compute()`` on first use. Stores replace their cache dict on
    every change and never edit it under readers, so a reader sees a consistent one (concurrent
    readers may both compute a value; the values are equal, and the last one stays)."""
    if name not in cache:
        cache[name] = compute()
    return cache[name]


def _rows_of(stored: np.ndarray, ids: np.ndarray, derived, unchecked: bool = False) -> np.ndarray:
    """Position of each of ``ids`` in ``stored`` (unique ids), -1 where absent (int64, the shape of
    ``ids``; may be ``ids`` itself: read it, do not write it). ``derived(name, compute)`` caches
    the lookup structures until ``stored`` changes.

    ``unchecked``: where each stored id is its row, ``ids`` itself, absent ids included, for a
    caller whose engine call refuses rows outside ``-1..n-1`` (a re-ranking; it then asks again
    without ``unchecked`` to name the absent id). Saves a single query two array reductions."""
    n = stored.size
    if n == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    if derived("ids are row numbers", lambda: _ids_are_rows(stored)):
        return _rows_of_row_ids(n, ids, unchecked)
    if ids.size <= 8:  # a few ids: one (m, n) comparison beats sorting all stored ids
        matches = stored[None, :] == ids.reshape(-1)[:, None]
        return np.where(matches.any(axis=1), matches.argmax(axis=1), -1).reshape(ids.shape)
    order, sorted_ids = derived("sorted ids", lambda: _sorted_ids(stored))
    pos = np.minimum(np.searchsorted(sorted_ids, ids), n - 1)
    found = sorted_ids[pos] == ids
    return np.where(found, order[pos], -1)


def _rows_of_row_ids(n: int, ids: np.ndarray, unchecked: bool = False) -> np.ndarray:
    """:func:`_rows_of` where the ``n`` stored ids are 0..n-1, each its own row."""
    if n == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    if unchecked or (ids.size and int(ids.min()) >= -1 and int(ids.max()) < n):
        return ids  # each id is its row, -1 stays -1 (re-ranked candidates: no copy per call)
    return np.where((ids >= 0) & (ids < n), ids, -1)


def _continues_rows(ids: np.ndarray, start: int) -> bool:
    """Whether ``ids`` is start, start + 1, ..., the row numbers they get when appended at row
    ``start``."""
    return ids.size == 0 or (int(ids[0]) == start and int(ids[-1]) == start + ids.size - 1
                             and bool((ids == np.arange(start, start + ids.size)).all()))


def _ids_are_rows(ids: np.ndarray) -> bool:
    """Whether ``ids`` is 0, 1, ..., n-1 (the ids ``add`` assigns), so an id is its own row."""
    return _continues_rows(ids, 0)


class _ListStore:
    """Codes and ids kept by the engine in a ``InvertedLists`` (IndexPQ: one list).

    The host class sets ``self._invlists``, ``self._max_id`` and ``self._row_cache = {}`` and
    implements ``_decode(codes, list_nos)``. PQ codes sit in the engine's blocked layout (64 codes
    per block, byte-transposed, for the SIMD scans); they enter and leave as rows.
    ``_row_cache`` holds values derived from the stored codes (IndexPQ's id lookups), replaced by
    every change.
    """

    def _derived(self, name, compute):
        return _cached(self._row_cache, name, compute)

    def _ntotal(self) -> int:
        return int(self._invlists.ntotal)

    def _id_upper_bound(self):
        return self._max_id

    def _restore_id_upper_bound(self, bound):
        self._max_id = bound

    def _contains(self, ids):
        if self.ntotal == 0 or int(ids.min()) > self._max_id:
            return np.zeros(ids.shape, dtype=bool)
        list_nos, _ = self._invlists.locate(ids)
        return np.asarray(list_nos) >= 0

    def _store_codes(self, list_nos, ids, codes, bias=None) -> None:
        self._row_cache = {}
        self._invlists.add(list_nos, ids, codes, bias)
        if ids.size:
            self._max_id = max(self._max_id, int(ids.max()))

    def _reconstruct(self, ids):
        list_nos, offsets = (np.asarray(a, dtype=np.int64) for a in self._invlists.locate(ids))
        found = list_nos >= 0
        if not found.all():
            self._raise_unknown(ids, found)
        codes = np.empty((ids.size, self.code_size), dtype=np.uint8)
        # One iteration per distinct list (at most nlist), copying that list once.
        for list_no in np.unique(list_nos):
            members = np.flatnonzero(list_nos == list_no)
            codes[members] = self._invlists.list_codes(int(list_no))[offsets[members]]
        return self._decode(codes, list_nos)

    def _remove(self, ids):
        self._row_cache = {}
        return self._invlists.remove_ids(ids)

    def _code_bias(self, codes, list_nos):
        """The per-code float the lists keep beside each code (IVF-PQ under L2), else None."""
        return None

    def _merge_ids(self):
        return np.asarray(self._invlists.export()[1])

    def _merge(self, other, add_id):
        """Append ``other``'s codes to the same lists, in their order (their bias recomputed: it
        depends only on the code and the list's centroid, which both indexes share)."""
        sizes, ids, codes = other._invlists.export()
        list_nos = np.repeat(np.arange(len(sizes), dtype=np.int64), np.asarray(sizes))
        self._store_codes(list_nos, np.asarray(ids) + np.int64(add_id), codes,
                          self._code_bias(codes, list_nos))
        other._reset()

    def _reset(self):
        self._row_cache = {}
        self._invlists.reset()
        self._max_id = -1


#: Codes per block of the engines' blocked layout (byte-transposed for the SIMD scans).
BLOCK = 64


def list_bytes(count: int, code_size: int, blocked: bool, bias: bool) -> int:
    """Bytes of one inverted list after one add of ``count`` codes: the engine reserves each
    batch exactly (blocked codes are padded to whole blocks of :data:`BLOCK`), plus an int64 id
    and, with ``bias``, a float per code (``memory_usage_bytes`` counts the same)."""
    if count <= 0:
        return 0
    code_count = (-(-count // BLOCK) * BLOCK) if blocked else count
    return count * 8 + code_count * code_size + (count * 4 if bias else 0)
