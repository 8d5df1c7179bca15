"""Nearest-neighbour indexes: exact (IndexFlat), PQ (IndexPQ), and inverted-file variants.

Conventions shared by every index (and by :class:`pqkit.KMeans` / :class:`pqkit.ProductQuantizer`),
documented here once:

Input conversion
    Vectors may have any floating dtype (float16/32/64), any memory layout, or be a single 1-D
    vector (treated as one row); they are converted to a C-contiguous float32 matrix (n, d).
    Integer, bool, complex and object arrays raise TypeError; NaN/inf raise ValueError, and so
    do values beyond ``sqrt(2**120 / d)`` in magnitude (:func:`pqkit._validation.max_abs_value`:
    within it no squared distance can overflow float32, so results are never inf or padding
    while vectors are stored). The same holds for centroids, codebooks and loaded files.
    Ids must be an integer array (any int dtype, converted to int64), 1-D, >= 0; float or bool
    ids raise TypeError (never converted). Codes must be uint8 (never converted).

Metrics
    ``"l2"``: squared Euclidean distance ``||q - x||^2``, smaller is better.
    ``"ip"``: inner product ``<q, x>``, larger is better.
    ``"cosine"``: rows are L2-normalised at train, add and search, then ``"ip"``; distances are
    cosine similarities. Zero rows raise ValueError. Stored/reconstructed vectors are the
    normalised ones.

Results
    ``search(x, k)`` returns ``(D, I)``: D float32 (n, k), I int64 (n, k), best first (L2
    ascending, IP/cosine descending; ties broken by the smaller row/id). When fewer than ``k``
    vectors are found the rows are padded with ``I = -1`` and ``D = +inf`` (L2) or ``-inf``
    (IP, cosine). An empty index returns only padding.

Ids
    ``add(x)`` assigns the ids ``ntotal, ntotal + 1, ...`` (FAISS behaviour); ``add_with_ids``
    uses the given ones; ids lie in ``[0, 2**63 - 1]`` and ``add`` raises ValueError when its
    sequential ids would pass that limit. Unlike FAISS, an id may be present only once: duplicates within one
    call or ids already in the index raise ValueError (so ``reconstruct`` and ``remove_ids`` are
    unambiguous). ``add`` continues after the largest id stored since the last ``reset`` (which
    is ``ntotal`` unless ids were removed or given explicitly), so it never collides.

Threads
    ``n_threads=None`` uses :func:`pqkit.get_num_threads`; results do not depend on it. The
    thread count is not saved with the index. An index may be shared by Python threads: it
    holds a reader-writer lock, so any number of ``search`` / ``reconstruct`` / ``save`` calls
    run at once (with the GIL released in the engine) and give exactly the results of serial
    calls, while ``train`` / ``add`` / ``add_with_ids`` / ``remove_ids`` / ``reset`` /
    ``set_centroids`` wait until running searches end and run alone (waiting writers go
    first, so a stream of searches cannot starve them). So do ``index.pq.set_codebooks`` and
    ``index.pq.train``: the quantizer of an index is attached to it and changes its codebooks
    under the index's write lock.

Engines
    ``backend=None`` uses :func:`pqkit.get_backend` (``"cpp"``, the compiled core, unless it
    cannot be imported); ``backend="numba"`` selects the portable Numba engine, which gives
    the same codes, ids and distances (see :mod:`pqkit._backends`). The engine is fixed for
    the life of the index and not saved with it (``load`` uses the default).

Persistence
    ``index.save(path)`` / :func:`pqkit.load` and ``pickle`` use the same checked binary format
    (see :mod:`pqkit._io`). A loaded file is treated as hostile input: it either loads into an
    index that answers exactly as one built from the file's contents, or raises ValueError.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import _backends, _io, _threads
from ._validation import (
    as_float_matrix,
    check_finite,
    check_fits_in_memory,
    check_float_array,
    check_id_scalar,
    check_ids,
    check_int,
    check_k,
    check_metric,
    check_n_threads,
    check_positive_int,
    check_result_size,
    check_trained,
    check_training_size,
    normalize_rows,
)
from .kmeans import KMeans
from .pq import ProductQuantizer

__all__ = ["Index", "IndexFlat", "IndexIVFFlat", "IndexIVFPQ", "IndexPQ"]

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_MAX_ID = 2**63 - 1
# Bookkeeping of one empty inverted list in the engines (vector headers for codes, ids, bias).
_BYTES_PER_EMPTY_LIST = 80


def _format_ids(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if ids.size > limit else ''}] ({ids.size} in all)"


def _sorted_ids(ids: np.ndarray):
    order = np.argsort(ids, kind="stable")
    return order, ids[order]


class _RowStore:
    """Rows of fixed width (vectors or codes) plus their int64 ids, in growable buffers.

    Appends are amortised O(rows appended): the buffers double their capacity when full.
    ``data`` and ``ids`` return C-contiguous views of the stored rows.
    """

    def __init__(self, width: int, dtype):
        self.width = width
        self.dtype = np.dtype(dtype)
        self.clear()

    def clear(self) -> None:
        self._data = np.empty((0, self.width), dtype=self.dtype)
        self._ids = _EMPTY_IDS
        self.n = 0
        self.max_id = -1  # upper bound of the stored ids (-1: none ever stored)
        self._derived = {}  # values computed from the stored rows, dropped by every change

    @property
    def data(self) -> np.ndarray:
        return self._data[: self.n]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.n]

    def append(self, rows: np.ndarray, ids: np.ndarray) -> None:
        n_new = self.n + rows.shape[0]
        if n_new > self._data.shape[0]:
            capacity = max(n_new, 2 * self._data.shape[0], 16)
            data = np.empty((capacity, self.width), dtype=self.dtype)
            data[: self.n] = self.data
            all_ids = np.empty(capacity, dtype=np.int64)
            all_ids[: self.n] = self.ids
            self._data, self._ids = data, all_ids
        self._derived = {}
        self._data[self.n : n_new] = rows
        self._ids[self.n : n_new] = ids
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
        return np.isin(ids, self.ids)

    def ids_are_rows(self) -> bool:
        """Whether the stored ids are 0, 1, ..., n-1 (as ``add`` assigns them): each id is its row."""
        return self.derived("ids are row numbers", lambda: _ids_are_rows(self.ids))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row number of each id, -1 where absent (int64, same shape as ``ids``)."""
        return _rows_of(self.ids, ids, self.derived)

    def remove(self, ids: np.ndarray) -> int:
        if ids.size == 0 or self.n == 0:
            return 0
        removed = np.isin(self.ids, ids)
        n_removed = int(removed.sum())
        if n_removed:
            self._derived = {}
            keep = ~removed
            n_keep = self.n - n_removed
            self._data[:n_keep] = self.data[keep]
            self._ids[:n_keep] = self.ids[keep]
            self.n = n_keep
        return n_removed

    def nbytes(self) -> int:
        """Bytes allocated for rows and ids, spare capacity included (as InvertedLists counts)."""
        return self._data.nbytes + self._ids.nbytes


def _cached(cache: dict, name: str, compute):
    """``cache[name]``, computed by ``compute()`` on first use. Stores replace their cache dict on
    every change and never edit it under readers, so a reader sees a consistent one (concurrent
    readers may both compute a value; the values are equal, and the last one stays)."""
    if name not in cache:
        cache[name] = compute()
    return cache[name]


def _rows_of(stored: np.ndarray, ids: np.ndarray, derived) -> np.ndarray:
    """Position of each of ``ids`` in ``stored`` (unique ids), -1 where absent (int64, the shape of
    ``ids``). ``derived(name, compute)`` caches the lookup structures until ``stored`` changes."""
    n = stored.size
    if n == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    if derived("ids are row numbers", lambda: _ids_are_rows(stored)):
        return np.where((ids >= 0) & (ids < n), ids, -1)
    if ids.size <= 8:  # a few ids: one (m, n) comparison beats sorting all stored ids
        matches = stored[None, :] == ids.reshape(-1)[:, None]
        return np.where(matches.any(axis=1), matches.argmax(axis=1), -1).reshape(ids.shape)
    order, sorted_ids = derived("sorted ids", lambda: _sorted_ids(stored))
    pos = np.minimum(np.searchsorted(sorted_ids, ids), n - 1)
    found = sorted_ids[pos] == ids
    return np.where(found, order[pos], -1)


def _ids_are_rows(ids: np.ndarray) -> bool:
    """Whether ``ids`` is 0, 1, ..., n-1 (the ids ``add`` assigns), so an id is its own row."""
    return ids.size == 0 or (int(ids[0]) == 0 and int(ids[-1]) == ids.size - 1
                             and bool((ids == np.arange(ids.size)).all()))


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation).

    Not reentrant: the public methods of :class:`Index` take it once and call only the
    private hooks, which never take it. ``read()`` and ``write()`` return reusable guard
    objects (``with lock.read(): ...``); searches take the read side on every call, so it is
    kept to one short critical section on entry and one on exit.
    """

    def __init__(self):
        self._mutex = threading.Lock()  # taken directly on the readers' path (cheaper than the condition)
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read_guard = _Guard(self._acquire_read, self._release_read)
        self._write_guard = _Guard(self._acquire_write, self._release_write)

    def read(self) -> "_Guard":
        return self._read_guard

    def write(self) -> "_Guard":
        return self._write_guard

    def _acquire_read(self) -> None:
        with self._mutex:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _Guard:
    """A context manager calling ``acquire`` on entry and ``release`` on exit (stateless, so
    one instance serves every thread)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release):
        self._acquire = acquire
        self._release = release

    def __enter__(self):
        self._acquire()
        return self

    def __exit__(self, *exc_info):
        self._release()
        return False


class Index:
    """Base class of all pqkit indexes (common behaviour; not instantiated directly).

    See the module docstring of :mod:`pqkit.index` for input conversion, metrics, result
    padding and id rules shared by all indexes.

    Attributes
    ----------
    d : int
        Vector dimension.
    metric : {"l2", "ip", "cosine"}
    ntotal : int
        Number of stored vectors.
    is_trained : bool
    code_size : int
        Bytes stored per vector (excluding its 8-byte id).
    n_threads : int or None
        Worker threads; None uses :func:`pqkit.get_num_threads`.
    backend : {"cpp", "numba"}
        The engine (read-only; chosen at construction).
    """

    # Whether train() changes how stored vectors are encoded (then it is refused while the
    # index holds vectors).
    _training_changes_codes = True

    def __init__(self, d, metric="l2", n_threads=None, backend=None):
        if type(self) is Index:
            raise TypeError(
                "Index is an abstract base class; use IndexFlat, IndexPQ, IndexIVFFlat, "
                "IndexIVFPQ or pqkit.index_factory"
            )
        self._d = check_positive_int(d, "d")
        self._metric = check_metric(metric)
        self._n_threads = check_n_threads(n_threads)
        self._backend = _backends.resolve(backend)
        self._lock = _ReadWriteLock()

    # ----------------------------------------------------------------- properties
    @property
    def backend(self) -> str:
        """The engine: "cpp" (compiled core) or "numba" (portable)."""
        return self._backend

    @property
    def _engine(self):
        return _backends.core(self._backend)

    @property
    def d(self) -> int:
        """Vector dimension."""
        return self._d

    @property
    def metric(self) -> str:
        """Metric name: "l2", "ip" or "cosine"."""
        return self._metric

    @property
    def n_threads(self):
        """Worker threads (int), or None for the global default."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value) -> None:
        self._n_threads = check_n_threads(value)

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return self._ntotal()

    @property
    def is_trained(self) -> bool:
        """Whether the index can add and search."""
        return self._is_trained()

    @property
    def code_size(self) -> int:
        """Bytes stored per vector, excluding its 8-byte id."""
        return self._code_size()

    # ----------------------------------------------------------------- helpers
    @property
    def _core_metric(self) -> str:
        return "l2" if self._metric == "l2" else "ip"

    def _nt(self) -> int:
        return _threads.resolve(self._n_threads)

    def _name(self) -> str:
        return type(self).__name__

    def _prepare(self, x, name: str = "x") -> np.ndarray:
        """Validate and convert vectors; normalise rows for the cosine metric."""
        x = as_float_matrix(x, self._d, name=name)
        if self._metric == "cosine" and x.shape[0]:
            x = normalize_rows(x, name)
        return x

    def _empty_result(self, n: int, k: int):
        pad = np.inf if self._metric == "l2" else -np.inf
        return (np.full((n, k), pad, dtype=np.float32), np.full((n, k), -1, dtype=np.int64))

    # ----------------------------------------------------------------- public API
    def train(self, x) -> "Index":
        """Train the index (no-op for IndexFlat).

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Training vectors; converted to float32 (see the module docstring). Fewer than 39
            points per centroid emits :class:`pqkit.TrainingWarning`.

        Returns
        -------
        self : Index

        Raises
        ------
        ValueError
            If the index already holds vectors whose codes would change (all but IndexFlat);
            call :meth:`reset` first.
        """
        x = self._prepare(x)
        with self._lock.write():
            if self.ntotal and self._training_changes_codes:
                raise ValueError(
                    f"{self._name()}.train() would make the codes of the {self.ntotal} stored "
                    "vectors stale; call reset() first, then train and add again"
                )
            self._train(x)
        return self

    def add(self, x) -> None:
        """Add vectors with sequential ids.

        The first id is ``ntotal`` (as in FAISS) unless a larger id was stored since the last
        :meth:`reset` (by :meth:`add_with_ids`, or before a :meth:`remove_ids`); then numbering
        continues after the largest one, so ``add`` never collides with a stored id.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see the module docstring).

        Raises
        ------
        ValueError
            If the index is not trained, or the sequential ids would pass 2**63 - 1 (after an
            :meth:`add_with_ids` of ids near that limit).
        """
        check_trained(self.is_trained, self._name())
        x = self._prepare(x)
        with self._lock.write():
            start = max(self.ntotal, self._id_upper_bound() + 1)
            if start + x.shape[0] - 1 > _MAX_ID:
                raise ValueError(
                    f"add(): the id space is exhausted: {x.shape[0]} sequential ids from {start} "
                    f"would pass the largest id {_MAX_ID} (2**63 - 1); add() continues after the "
                    "largest id stored, so pass your own ids with add_with_ids(), or reset()"
                )
            self._add_checked(x, np.arange(start, start + x.shape[0], dtype=np.int64), "add()")

    def add_with_ids(self, x, ids) -> None:
        """Add vectors with the given ids.

        Unlike FAISS, duplicate ids are refused: every id must be new to the index and appear
        once in ``ids``.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see the module docstring).
        ids : array_like of integer dtype, shape (n,)
            Ids >= 0; any integer dtype (float/bool raise TypeError).

        Raises
        ------
        ValueError
            If the index is not trained, or ``ids`` has duplicates or ids already present.
        """
        check_trained(self.is_trained, self._name())
        x = self._prepare(x)
        ids = check_ids(ids, n=x.shape[0])
        with self._lock.write():
            self._add_checked(x, ids, "add_with_ids()")

    def _add_checked(self, x: np.ndarray, ids: np.ndarray, caller: str) -> None:
        if ids.size == 0:
            return
        unique_ids = np.unique(ids)
        if unique_ids.size != ids.size:
            sorted_ids = np.sort(ids)
            dup = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
            raise ValueError(
                f"{caller}: ids must be unique, got duplicates {_format_ids(dup)}; pqkit refuses "
                "duplicate ids (FAISS allows them) so that reconstruct/remove_ids are unambiguous"
            )
        present = ids[self._contains(ids)]
        if present.size:
            raise ValueError(
                f"{caller}: ids already in the index: {_format_ids(present)}; remove them first "
                "with remove_ids() or use new ids (pqkit refuses duplicate ids, FAISS allows them)"
            )
        self._add(x, ids)

    def search(self, x, k):
        """Find the k nearest stored vectors of each query.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Queries; converted to float32 (see the module docstring).
        k : int
            Number of neighbours, >= 1. May exceed ``ntotal`` (results are padded).

        Returns
        -------
        D : numpy.ndarray of float32, shape (n, k)
            Squared L2 distances ("l2") or similarities ("ip", "cosine"), best first; padding
            ``+inf`` (l2) or ``-inf`` (ip, cosine).
        I : numpy.ndarray of int64, shape (n, k)
            Ids of the neighbours; padding ``-1``.
        """
        return self._locked_search(x, k, self._search)

    def _candidates(self, x, k):
        """Ids of k candidates per query for an exact re-ranking (IndexRefine's first stage).

        As :meth:`search`, but an index may rank by a cheaper approximation of its distances
        (:meth:`_search_candidates`); only the ids are returned.
        """
        return self._locked_search(x, k, self._search_candidates)[1]

    def _search_candidates(self, x, k):
        """The candidate ranking for :meth:`_candidates`: the search itself unless overridden."""
        return self._search(x, k)

    def _locked_search(self, x, k, run):
        check_trained(self.is_trained, self._name())
        k = check_k(k)
        x = self._prepare(x)
        check_result_size(x.shape[0], k)
        with self._lock.read():
            if x.shape[0] == 0 or self.ntotal == 0:
                return self._empty_result(x.shape[0], k)
            return run(x, k)

    def reconstruct(self, key):
        """Return the stored (or decoded) vector of one id.

        Parameters
        ----------
        key : int
            An id present in the index.

        Returns
        -------
        x : numpy.ndarray of float32, shape (d,)
            Exact for IndexFlat/IndexIVFFlat, the PQ approximation for IndexPQ/IndexIVFPQ;
            normalised for the cosine metric.
        """
        key = check_id_scalar(key)
        check_trained(self.is_trained, self._name())
        with self._lock.read():
            return self._reconstruct(np.array([key], dtype=np.int64))[0]

    def reconstruct_n(self, ids):
        """Return the stored (or decoded) vectors of several ids.

        Parameters
        ----------
        ids : array_like of integer dtype, shape (n,)

        Returns
        -------
        x : numpy.ndarray of float32, shape (n, d)
            Row i belongs to ``ids[i]`` (see :meth:`reconstruct`).

        Raises
        ------
        ValueError
            If any id is not in the index.
        """
        check_trained(self.is_trained, self._name())
        ids = check_ids(ids)
        if ids.size == 0:
            return np.empty((0, self._d), dtype=np.float32)
        with self._lock.read():
            return self._reconstruct(ids)

    def _raise_unknown(self, ids: np.ndarray, found: np.ndarray) -> None:
        missing = ids[~found]
        raise ValueError(
            f"ids not in the index: {_format_ids(missing)}; the index holds {self.ntotal} "
            "vectors (search results use -1 for 'no result', which is never a stored id)"
        )

    def remove_ids(self, ids) -> int:
        """Remove vectors by id.

        Parameters
        ----------
        ids : array_like of integer dtype, shape (m,)
            Ids absent from the index are ignored (they count 0).

        Returns
        -------
        n_removed : int
            Number of vectors removed.
        """
        ids = check_ids(ids)
        with self._lock.write():
            if ids.size == 0 or self.ntotal == 0:
                return 0
            return int(self._remove(ids))

    def reset(self) -> None:
        """Remove all vectors; training (centroids, codebooks) is kept."""
        with self._lock.write():
            self._reset()

    def memory_usage_bytes(self) -> int:
        """Bytes held by the index data.

        Counts the buffers holding vectors or codes and their int64 ids (including spare
        capacity reserved by amortised growth, at most about 2x the stored bytes), centroids,
        codebooks and precomputed tables; not Python object overhead.

        Returns
        -------
        int
        """
        with self._lock.read():
            return int(self._memory_usage_bytes())

    def save(self, path, *, overwrite=True) -> None:
        """Write the index to ``path``, all-or-nothing (see :func:`pqkit._io.save`).

        After a crash ``path`` holds the old or the new index, never a mix; nothing but ``path``
        and its own temporary sibling is touched.

        Parameters
        ----------
        path : str or os.PathLike
            Target file; its directory must exist.
        overwrite : bool, default True
            Replace an existing pqkit index file (as ``faiss.write_index`` does); with False an
            existing one raises. A file that is not a pqkit index is never replaced.

        Raises
        ------
        pqkit.ArtifactExistsError
            ``path`` holds something else than a pqkit index, or ``overwrite`` is False and it
            holds one (a FileExistsError and a ValueError). Nothing was changed.
        """
        with self._lock.read():
            _io.save(self, path, overwrite=overwrite)

    def __reduce__(self):
        # Pickling goes through the same checked byte format as save/load.
        with self._lock.read():
            return (_io.index_from_bytes, (_io.index_to_bytes(self),))

    def __repr__(self) -> str:
        return (
            f"{self._name()}(d={self._d}, metric={self._metric!r}, ntotal={self.ntotal}, "
            f"is_trained={self.is_trained})"
        )

    # ----------------------------------------------------------------- subclass hooks
    def _ntotal(self) -> int:
        raise NotImplementedError

    def _is_trained(self) -> bool:
        raise NotImplementedError

    def _code_size(self) -> int:
        raise NotImplementedError

    def _memory_usage_bytes(self) -> int:
        raise NotImplementedError

    def _train(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _id_upper_bound(self) -> int:
        """Largest id stored since the last reset (removed ones included), -1 if none."""
        raise NotImplementedError

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, x: np.ndarray, k: int):
        raise NotImplementedError

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _remove(self, ids: np.ndarray) -> int:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _get_state(self):
        """Return ``(params, arrays)``: JSON-able constructor parameters and named arrays."""
        raise NotImplementedError

    def _state_params(self) -> dict:
        """The ``params`` of :meth:`_get_state` alone (without exporting any array); a load
        checks that the index it built gives back exactly the parameters of the file."""
        raise NotImplementedError

    @classmethod
    def _from_state(cls, params: dict, arrays: dict) -> "Index":
        """Rebuild an index from :meth:`_get_state` output; ValueError if inconsistent."""
        raise NotImplementedError


def _map_rows_to_ids(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Replace row numbers by ids, keeping -1 padding."""
    return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)


# ------------------------------------------------------------------------ loading saved state
# A loaded file is hostile input (a valid checksum proves nothing: anyone can recompute it), so
# each index type declares exactly what it writes and ``_from_state`` accepts nothing else: the
# parameter names, every array's dtype and shape (no conversion on load), finite stored floats
# within the magnitude bound, and the structural invariants (list sizes summing to the number of
# ids, unique ids, code padding bits zero, unit rows for "cosine"). Every count is checked in
# Python integers (no wrap-around) before anything is allocated from it.

#: A load may claim at most this multiple of the bytes its arrays occupy in the file, plus
#: ``_LOAD_FIXED_ALLOWANCE``, for structures the arrays do not hold themselves (empty inverted lists).
_LOAD_MEMORY_FACTOR = 4
_LOAD_FIXED_ALLOWANCE = 64 << 20
_N = "n"  # in an array spec's shape: the number of stored vectors (the length of "ids")


def _check_params(params: dict, names) -> None:
    """The saved parameters must be exactly ``names`` (what the writer writes)."""
    expected, got = set(names), set(params)
    if got != expected:
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        raise ValueError(f"parameters must be {sorted(expected)}; missing {missing}, "
                         f"unexpected {unexpected}")


def _check_arrays(arrays: dict, spec: dict) -> int:
    """Check stored arrays against ``spec`` (name -> (dtype, shape, required)); returns n.

    A shape entry ``"n"`` stands for the number of stored vectors, the length of ``"ids"``. No
    other array may be present; dtypes must match exactly.
    """
    unexpected = sorted(set(arrays) - set(spec))
    if unexpected:
        raise ValueError(f"unexpected arrays {unexpected}; expected only {sorted(spec)}")
    missing = sorted(name for name, (_, _, required) in spec.items()
                     if required and name not in arrays)
    if missing:
        raise ValueError(f"missing arrays {missing}")
    n = None
    if "ids" in arrays:
        ids = arrays["ids"]
        n = ids.shape[0] if ids.ndim == 1 else -1
    for name, arr in arrays.items():
        dtype, shape, _ = spec[name]
        if arr.dtype != dtype:
            raise ValueError(f"array {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        expected = tuple(n if s == _N else s for s in shape)
        _check_shape(arr, expected, name)
    return n


def _check_shape(arr: np.ndarray, shape: tuple, name: str) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"array {name!r} has shape {arr.shape}, expected {tuple(shape)}")


def _check_load_memory(nbytes: int, arrays: dict, what: str) -> None:
    """Refuse a structure of ``nbytes`` that a file of these arrays cannot justify."""
    budget = _LOAD_MEMORY_FACTOR * sum(int(a.nbytes) for a in arrays.values()) + _LOAD_FIXED_ALLOWANCE
    if nbytes > budget:
        raise ValueError(f"{what} would take {nbytes} bytes of memory, more than a load of "
                         f"{sum(int(a.nbytes) for a in arrays.values())} bytes of arrays may "
                         f"claim ({budget})")


def _check_stored_ids(ids: np.ndarray) -> None:
    if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
        raise ValueError("stored ids must be unique and >= 0")


def _check_stored_vectors(vectors: np.ndarray, metric: str, name: str) -> None:
    """Stored float vectors: finite and within the magnitude bound; unit rows for "cosine"
    (an index normalises every vector it stores under that metric)."""
    check_finite(vectors, f"stored {name}")
    if metric == "cosine" and vectors.size:
        sqnorms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sqnorms - 1.0) > 1e-5)
        if bad.size:
            raise ValueError(f"stored {name} of a cosine index must have unit norm; row "
                             f"{int(bad[0])} has squared norm {float(sqnorms[bad[0]]):.6g}")


def _check_code_padding(codes: np.ndarray, M: int, nbits: int) -> None:
    """Bits past the M * nbits used ones (the high bits of the last byte) must be zero, as the
    encoder writes them."""
    used = (M * nbits) % 8
    if used and codes.size:
        mask = (0xFF << used) & 0xFF
        bad = np.flatnonzero(codes[:, -1] & mask)
        if bad.size:
            raise ValueError(f"code of row {int(bad[0])} sets padding bits beyond the "
                             f"{M} x {nbits} code bits")


def _check_list_sizes(sizes: np.ndarray, n: int) -> None:
    """Each list size in [0, n] and their exact sum (Python integers: no wrap-around) equal to n."""
    if sizes.size and (int(sizes.min()) < 0 or int(sizes.max()) > n):
        raise ValueError(f"list_sizes must lie in [0, {n}] (the number of stored ids)")
    total = int(sizes.sum()) if sizes.size * max(n, 1) < 2**62 else sum(int(s) for s in sizes)
    if total != n:
        raise ValueError(f"list_sizes must sum to {n} (the number of stored ids), got {total}")


# ===================================================================== IndexFlat
class IndexFlat(Index):
    """Exact (brute-force) search over float32 vectors.

    Parameters
    ----------
    d : int
        Vector dimension.
    metric : {"l2", "ip", "cosine"}, default "l2"
    n_threads : int or None, default None

    Notes
    -----
    Stores an (ntotal, d) float32 matrix and (ntotal,) int64 ids; ``code_size = 4 * d``. Always
    trained; :meth:`train` only validates its input. Conversions, metrics and result padding:
    see :mod:`pqkit.index`.

    Examples
    --------
    >>> import numpy as np, pqkit
    >>> xb = np.random.default_rng(0).standard_normal((100, 8), dtype=np.float32)
    >>> index = pqkit.IndexFlat(8)
    >>> index.add(xb)
    >>> D, I = index.search(xb[:2], k=3)
    >>> I[:, 0].tolist(), D.dtype
    ([0, 1], dtype('float32'))
    """

    _training_changes_codes = False

    def __init__(self, d, metric="l2", n_threads=None, *, backend=None):
        super().__init__(d, metric, n_threads, backend)
        self._store = _RowStore(self._d, np.float32)

    def _ntotal(self) -> int:
        return self._store.n

    def _is_trained(self) -> bool:
        return True

    def _code_size(self) -> int:
        return 4 * self._d

    def _train(self, x):
        pass

    def _contains(self, ids):
        return self._store.contains(ids)

    def _id_upper_bound(self):
        return self._store.max_id

    def _add(self, x, ids):
        self._store.append(x, ids)

    def _search(self, x, k):
        data, norms = self._store.data, None
        if self._core_metric == "l2":
            # kept by the store until the rows change: a single query then reads the vectors
            # once instead of twice
            norms = self._store.derived("sqnorms", lambda: self._engine.sqnorms(data, self._nt()))
        D, rows = self._engine.flat_search(x, data, k, self._core_metric, self._nt(), norms)
        return D, _map_rows_to_ids(rows, self._store.ids)

    def _reconstruct(self, ids):
        rows = self._store.rows_of(ids)
        found = rows >= 0
        if not found.all():
            self._raise_unknown(ids, found)
        return self._store.data[rows]

    def _rows_of(self, ids):
        """Row of each id in the store, -1 where absent (IndexRefine's re-ranking)."""
        return self._store.rows_of(ids)

    def _rerank_rows(self, x, rows, ids, k):
        """Best ``k`` of each query's candidate ``rows`` (-1: none) by exact distance, reported
        under ``ids`` (IndexRefine's second stage)."""
        return self._engine.rerank(x, self._store.data, rows, ids, k, self._core_metric, self._nt())

    def _remove(self, ids):
        return self._store.remove(ids)

    def _reset(self):
        self._store.clear()

    def _memory_usage_bytes(self) -> int:
        return int(self._store.nbytes())

    def _state_params(self):
        return {"d": self._d, "metric": self._metric}

    def _get_state(self):
        return self._state_params(), {"vectors": self._store.data, "ids": self._store.ids}

    @classmethod
    def _from_state(cls, params, arrays):
        _check_params(params, ("d", "metric"))
        index = cls(params["d"], params["metric"])
        _check_arrays(arrays, {"vectors": (np.float32, (_N, index.d), True),
                               "ids": (np.int64, (_N,), True)})
        _check_stored_ids(arrays["ids"])
        _check_stored_vectors(arrays["vectors"], index.metric, "vectors")
        index._store.append(arrays["vectors"], arrays["ids"])
        return index


# ===================================================================== IndexPQ
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

    def _reset(self):
        self._row_cache = {}
        self._invlists.reset()
        self._max_id = -1


class _HasProductQuantizer:
    """Shared by the PQ indexes: the ``pq`` attribute, thread-count propagation to it, and
    codebook changes made through it (``index.pq.set_codebooks``, ``index.pq.train``), which run
    under the index's write lock (the quantizer is attached to its index)."""

    @contextlib.contextmanager
    def _changing_codebooks(self):
        with self._lock.write():
            yield
            self._codebooks_changed()

    def _codebooks_changed(self) -> None:
        """Update data derived from the codebooks (called under the write lock)."""
        self._row_cache = {}

    @property
    def pq(self) -> ProductQuantizer:
        """The product quantizer (of the residuals, for IVF-PQ)."""
        return self._pq

    @Index.n_threads.setter
    def n_threads(self, value):
        self._n_threads = check_n_threads(value)
        self._pq.n_threads = self._n_threads


class IndexPQ(_HasProductQuantizer, _ListStore, Index):
    """Approximate search over product-quantized codes (ADC, no inverted file).

    Parameters
    ----------
    d : int
        Vector dimension; divisible by ``M``.
    M : int
        Number of sub-quantizers.
    nbits : int, default 8
        Bits per sub-quantizer index (1..16).
    metric : {"l2", "ip", "cosine"}, default "l2"
    seed : int, default 1234
        Seed of the product-quantizer training.
    n_threads : int or None, default None

    Attributes
    ----------
    pq : ProductQuantizer
        The quantizer; its codebooks can be set directly (``index.pq.set_codebooks``) instead of
        training. Changing codebooks does not re-encode vectors already added.

    Notes
    -----
    Stores code_size bytes and one int64 id per vector (codes in the engine's blocked layout).
    Search computes one ADC table per query (see :mod:`pqkit.pq`) and scans all codes: a
    byte-quantized copy of the table filters the codes with SIMD integer sums, and every code
    that can still enter the top k gets its exact float ADC distance, so results equal a plain
    float ADC scan. Conversions, metrics and result
    padding: see :mod:`pqkit.index`.
    """

    def __init__(self, d, M, nbits=8, metric="l2", *, seed=1234, n_threads=None, backend=None):
        super().__init__(d, metric, n_threads, backend)
        self._pq = ProductQuantizer(self._d, M, nbits, seed=seed, n_threads=n_threads,
                                    backend=self._backend)
        self._pq._attach(self)
        self._invlists = self._engine.InvertedLists(1, self._pq.code_size, "blocked")
        self._max_id = -1
        self._rows_layout = False  # codes kept as rows (an IndexRefine's refine index), not blocked
        self._row_cache = {}  # id -> row lookups and the blocked copy, replaced (not edited) by every change

    def _is_trained(self) -> bool:
        return self._pq.is_trained

    def _code_size(self) -> int:
        return self._pq.code_size

    def _train(self, x):
        self._pq._train_validated(x, stacklevel=4)

    def _add(self, x, ids):
        codes = self._engine.pq_encode(x, self._pq._core(), self._nt())
        self._store_codes(np.zeros(ids.size, dtype=np.int64), ids, codes)

    def _decode(self, codes, list_nos):
        return self._engine.pq_decode(codes, self._pq._core(), self._nt())

    def _search(self, x, k):
        lists = self._invlists
        if self._rows_layout:  # the scans read blocked codes: a copy, built on first use
            lists = self._derived("blocked", lambda: self._copy_codes("blocked"))
        return self._engine.pq_search(x, self._pq._core(), lists, k, self._core_metric, self._nt())

    def _copy_codes(self, layout):
        """The stored codes and ids in a new single-list store of ``layout``."""
        lists = self._engine.InvertedLists(1, self._pq.code_size, layout)
        if self.ntotal:
            _, ids, codes = self._invlists.export()
            lists.add(np.zeros(ids.size, dtype=np.int64), ids, codes)
        return lists

    def _keep_codes_as_rows(self) -> None:
        """Keep the codes as rows (IndexRefine's PQ refine index): re-ranking then reads one
        contiguous code per candidate instead of ``code_size`` bytes 64 apart; :meth:`search`
        scans a blocked copy made on first use (counted by :meth:`memory_usage_bytes`)."""
        if not self._rows_layout:
            self._invlists = self._copy_codes("rows")
            self._rows_layout = True
            self._row_cache = {}

    def _rows_of(self, ids):
        """Offset of each id among the stored codes, -1 where absent (IndexRefine's re-ranking)."""
        stored = self._derived("ids", lambda: np.asarray(self._invlists.list_ids(0)))
        return _rows_of(stored, ids, self._derived)

    def _rerank_rows(self, x, rows, ids, k):
        """Best ``k`` of each query's candidate ``rows`` (-1: none) by the exact distance to their
        decoded codes (the vectors :meth:`reconstruct` returns), reported under ``ids``."""
        return self._engine.rerank_pq(x, self._pq._core(), self._invlists, rows, ids, k, self._core_metric,
                                      self._nt())

    def _memory_usage_bytes(self) -> int:
        codebooks = self._pq.codebooks
        blocked = self._row_cache.get("blocked")  # rows layout, after a search()
        return (int(self._invlists.memory_usage_bytes()) + (0 if codebooks is None else codebooks.nbytes)
                + (0 if blocked is None else int(blocked.memory_usage_bytes())))

    def _state_params(self):
        return {"d": self._d, "metric": self._metric, "M": self._pq.M, "nbits": self._pq.nbits,
                "seed": self._pq.seed}

    def _get_state(self):
        params = self._state_params()
        _, ids, codes = self._invlists.export()
        arrays = {"codes": codes, "ids": ids}
        if self._pq.codebooks is not None:
            arrays["codebooks"] = self._pq.codebooks
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        _check_params(params, ("d", "metric", "M", "nbits", "seed"))
        index = cls(params["d"], params["M"], params["nbits"], params["metric"],
                    seed=params["seed"])
        pq = index.pq
        n = _check_arrays(arrays, {"codes": (np.uint8, (_N, pq.code_size), True),
                                   "ids": (np.int64, (_N,), True),
                                   "codebooks": (np.float32, (pq.M, pq.ksub, pq.dsub), False)})
        _check_stored_ids(arrays["ids"])
        _check_code_padding(arrays["codes"], pq.M, pq.nbits)
        if "codebooks" in arrays:
            pq.set_codebooks(arrays["codebooks"])
        elif n:
            raise ValueError("codes present but no codebooks")
        index._store_codes(np.zeros(n, dtype=np.int64), arrays["ids"], arrays["codes"])
        return index


# ===================================================================== IVF base
class _IndexIVF(_ListStore, Index):
    """Shared inverted-file logic: coarse k-means centroids + the engine's ``InvertedLists``.

    A vector is stored in the list of its nearest centroid (``coarse_assign``, with the index's
    metric: L2, or inner product for ip/cosine); a search probes the ``nprobe`` lists whose
    centroids are nearest the query.
    """

    def __init__(self, d, nlist, metric, nprobe, seed, n_threads, backend):
        super().__init__(d, metric, n_threads, backend)
        self._nlist = check_positive_int(nlist, "nlist")
        check_fits_in_memory(
            self._nlist * _BYTES_PER_EMPTY_LIST, f"nlist={self._nlist} inverted lists",
            "use fewer lists (typically about sqrt(ntotal) to 16 * sqrt(ntotal))")
        self._seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        self._centroids = None
        self._centroids_version = 0
        self.nprobe = nprobe
        self._invlists = self._engine.InvertedLists(
            self._nlist, self.code_size, self._layout, self._with_bias()
        )
        self._max_id = -1  # upper bound of the stored ids (fast path of the duplicate check)
        self._row_cache = {}  # see _ListStore
        self._coarse = None  # (centroids version, the engine's CoarseQuantizer)

    @property
    def nlist(self) -> int:
        """Number of inverted lists (coarse centroids)."""
        return self._nlist

    @property
    def nprobe(self) -> int:
        """Number of lists scanned per query, 1..nlist (settable)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"nprobe must be an int, got {type(value).__name__}")
        if not 1 <= value <= self._nlist:
            raise ValueError(
                f"nprobe must be in [1, nlist={self._nlist}] (lists scanned per query), got "
                f"{int(value)}"
            )
        self._nprobe = int(value)

    @property
    def centroids(self):
        """Coarse centroids, numpy.ndarray of float32, shape (nlist, d), or None if untrained."""
        return self._centroids

    def set_centroids(self, centroids) -> "_IndexIVF":
        """Use given coarse centroids instead of training them.

        Parameters
        ----------
        centroids : array_like of float, shape (nlist, d)
            Copied and converted to float32 (not normalised, even for "cosine").

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If the index holds vectors (their list assignment would be stale); call
            :meth:`reset` first.
        """
        centroids = check_float_array(centroids, (self._nlist, self._d), "centroids")
        with self._lock.write():
            if self.ntotal:
                raise ValueError(
                    f"cannot change the centroids of an index holding {self.ntotal} vectors "
                    "(their list assignment would be stale); call reset() first"
                )
            self._centroids = centroids
            self._centroids_version += 1
        return self

    def _with_bias(self) -> bool:
        return False

    def _lists_overhead(self) -> int:
        """Bytes of the engine's bookkeeping of the nlist lists, held even while they are empty."""
        return self._nlist * _BYTES_PER_EMPTY_LIST

    def _core_coarse(self):
        """The engine's prepared coarse quantizer (centroids copied, norms computed), rebuilt
        only when the centroids change."""
        cached, version = self._coarse, self._centroids_version  # one read each: thread-safe
        if cached is None or cached[0] != version:
            cached = (version, self._engine.CoarseQuantizer(self._centroids, self._core_metric))
            self._coarse = cached
        return cached[1]

    def list_sizes(self):
        """Number of vectors in each inverted list.

        Returns
        -------
        numpy.ndarray of int64, shape (nlist,)
        """
        with self._lock.read():
            return np.asarray(self._invlists.list_sizes(), dtype=np.int64)

    #: k-means iterations of the coarse quantizer (FAISS's IndexIVF default, ``cp.niter = 10``;
    #: its points per centroid are capped at 256 as FAISS does). Settable per index before train.
    coarse_niter = 10

    def _train_coarse(self, x: np.ndarray) -> None:
        """Train the coarse centroids by k-means on ``x`` (``coarse_niter`` iterations, the index seed)."""
        niter = check_positive_int(self.coarse_niter, "coarse_niter")
        kmeans = KMeans(self._d, self._nlist, niter=niter, seed=self._seed, n_threads=self._n_threads,
                        backend=self._backend)
        # frames: _train_validated <- here <- _train <- Index.train <- user
        kmeans._train_validated(x, stacklevel=5)
        self._centroids = kmeans.centroids
        self._centroids_version += 1

    def _coarse_assign(self, x: np.ndarray) -> np.ndarray:
        list_nos, _ = self._engine.coarse_assign(x, self._centroids, self._core_metric, self._nt())
        return np.asarray(list_nos, dtype=np.int64)

    def _add(self, x, ids):
        list_nos = self._coarse_assign(x)
        codes = self._encode(x, list_nos)
        self._store_codes(list_nos, ids, codes, self._code_bias(codes, list_nos))

    def _code_bias(self, codes, list_nos):
        """Per-code float the lists keep beside each code (IVF-PQ under L2), else None."""
        return None

    def _invlists_state(self) -> dict:
        sizes, ids, codes = self._invlists.export()
        return {"list_sizes": np.asarray(sizes, dtype=np.int64), "ids": ids, "codes": codes}

    @classmethod
    def _construct_for_load(cls, params: dict, arrays: dict, names, *args):
        """The empty index a file describes, its parameters and the memory of its ``nlist``
        lists checked against the file first (a hostile header may claim any ``nlist``)."""
        _check_params(params, names)
        nlist = check_positive_int(params["nlist"], "nlist")
        _check_load_memory(nlist * _BYTES_PER_EMPTY_LIST, arrays, f"nlist={nlist} inverted lists")
        return cls(*args, seed=params["seed"])

    def _array_spec(self) -> dict:
        """What ``_get_state`` writes: name -> (dtype, shape, required)."""
        return {"list_sizes": (np.int64, (self._nlist,), True), "ids": (np.int64, (_N,), True),
                "codes": (np.uint8, (_N, self.code_size), True),
                "centroids": (np.float32, (self._nlist, self._d), False)}

    def _load_state(self, arrays: dict) -> None:
        """Fill an empty index from checked arrays (``_check_codes`` checks codes per type)."""
        n = _check_arrays(arrays, self._array_spec())
        sizes, ids, codes = arrays["list_sizes"], arrays["ids"], arrays["codes"]
        _check_list_sizes(sizes, n)
        _check_stored_ids(ids)
        self._check_codes(codes)
        if "centroids" in arrays:
            self.set_centroids(arrays["centroids"])
        elif n:
            raise ValueError("vectors present but no centroids")
        self._load_trained(arrays, n)
        if n:
            list_nos = np.repeat(np.arange(self._nlist, dtype=np.int64), sizes)
            self._store_codes(list_nos, ids, codes, self._code_bias(codes, list_nos))

    def _check_codes(self, codes: np.ndarray) -> None:
        pass

    def _load_trained(self, arrays: dict, n: int) -> None:
        """Set the trained parts beyond the centroids (IVF-PQ: the codebooks)."""

    def _encode(self, x: np.ndarray, list_nos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, codes: np.ndarray, list_nos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{self._name()}(d={self._d}, nlist={self._nlist}, metric={self._metric!r}, "
            f"nprobe={self._nprobe}, ntotal={self.ntotal}, is_trained={self.is_trained})"
        )


# ===================================================================== IndexIVFFlat
class IndexIVFFlat(_IndexIVF):
    """Inverted file over exact float32 vectors.

    Parameters
    ----------
    d : int
        Vector dimension.
    nlist : int
        Number of inverted lists (coarse k-means centroids).
    metric : {"l2", "ip", "cosine"}, default "l2"
    nprobe : int, default 1
        Lists scanned per query, 1..nlist; settable later (``index.nprobe = 16``).
    seed : int, default 1234
        Seed of the coarse k-means.
    n_threads : int or None, default None

    Attributes
    ----------
    centroids : numpy.ndarray of float32, shape (nlist, d), or None
    nprobe : int

    Notes
    -----
    Training runs k-means (25 iterations) on the training vectors, which must number at least
    ``nlist``. Each list stores the raw float32 bytes of its vectors (``code_size = 4 * d``)
    and their int64 ids. Distances are exact, but only the ``nprobe`` nearest lists are
    scanned. Conversions, metrics and result padding: see :mod:`pqkit.index`.
    """

    _layout = "rows"

    def __init__(self, d, nlist, metric="l2", nprobe=1, *, seed=1234, n_threads=None,
                 backend=None):
        super().__init__(d, nlist, metric, nprobe, seed, n_threads, backend)

    def _is_trained(self) -> bool:
        return self._centroids is not None

    def _code_size(self) -> int:
        return 4 * self._d

    def _train(self, x):
        check_training_size(x.shape[0], self._nlist, f"IndexIVFFlat with nlist={self._nlist}",
                            "one per inverted list")
        self._train_coarse(x)

    def _encode(self, x, list_nos):
        return x.view(np.uint8)

    def _decode(self, codes, list_nos):
        return np.ascontiguousarray(codes).view(np.float32).reshape(-1, self._d)

    def _search(self, x, k):
        return self._engine.ivfflat_search(
            x, self._core_coarse(), self._invlists, self._nprobe, k, self._core_metric, self._nt()
        )

    def _memory_usage_bytes(self) -> int:
        centroids = 0 if self._centroids is None else self._centroids.nbytes
        return int(self._invlists.memory_usage_bytes()) + int(centroids) + self._lists_overhead()

    def _state_params(self):
        return {"d": self._d, "nlist": self._nlist, "metric": self._metric,
                "nprobe": self._nprobe, "seed": self._seed}

    def _get_state(self):
        params = self._state_params()
        arrays = self._invlists_state()
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        return params, arrays

    def _check_codes(self, codes):
        _check_stored_vectors(codes.view(np.float32), self._metric, "vectors")

    @classmethod
    def _from_state(cls, params, arrays):
        index = cls._construct_for_load(
            params, arrays, ("d", "nlist", "metric", "nprobe", "seed"),
            params["d"], params["nlist"], params["metric"], params["nprobe"])
        index._load_state(arrays)
        return index


# ===================================================================== IndexIVFPQ
class IndexIVFPQ(_HasProductQuantizer, _IndexIVF):
    """Inverted file over product-quantized residuals (IVFADC).

    Jégou, Douze, Schmid, "Product quantization for nearest neighbor search", IEEE TPAMI 2011,
    section IV (IVFADC).

    Parameters
    ----------
    d : int
        Vector dimension; divisible by ``M``.
    nlist : int
        Number of inverted lists (coarse k-means centroids).
    M : int
        Number of sub-quantizers.
    nbits : int, default 8
        Bits per sub-quantizer index (1..16).
    metric : {"l2", "ip", "cosine"}, default "l2"
    nprobe : int, default 1
        Lists scanned per query, 1..nlist; settable later.
    seed : int, default 1234
        Seed of the coarse k-means and of the product-quantizer training.
    n_threads : int or None, default None

    Attributes
    ----------
    centroids : numpy.ndarray of float32, shape (nlist, d), or None
    pq : ProductQuantizer
        Quantizer of the residuals ``x - centroids[list]``.
    nprobe : int

    Notes
    -----
    Always encodes residuals (FAISS ``by_residual = True``): a vector ``x`` assigned to list
    ``l`` is stored as ``pq.encode(x - c_l)``. Training runs coarse k-means (25 iterations; at
    least ``nlist`` training vectors), then trains the PQ on the training residuals (at least
    ``ksub = 2**nbits`` vectors).

    For L2 the search uses the decomposition

        ||q - c_l - r||^2 = ||q - c_l||^2 + (||r||^2 + 2<c_l, r>) - 2 sum_m <q_m, r_m>

    whose middle term depends only on the stored code and its list: it is kept as one float per
    code (counted by :meth:`memory_usage_bytes`, recomputed when the codebooks change), so a
    query needs one table for all lists. The scan filters codes with a byte-quantized table
    (SIMD integer sums) and gives every code that can still enter the top k its exact float
    distance, so results equal a plain float scan.
    Conversions, metrics and result padding: see :mod:`pqkit.index`.
    """

    def __init__(self, d, nlist, M, nbits=8, metric="l2", nprobe=1, *, seed=1234, n_threads=None,
                 backend=None):
        # The PQ must exist before the base constructor sizes the inverted lists by code_size.
        self._pq = ProductQuantizer(
            check_positive_int(d, "d"), M, nbits, seed=seed, n_threads=n_threads, backend=backend
        )
        super().__init__(d, nlist, metric, nprobe, seed, n_threads, backend)
        self._pq._attach(self)
        self._bias_version = None  # (centroids, codebooks) versions the stored bias was made with

    def _is_trained(self) -> bool:
        return self._centroids is not None and self._pq.is_trained

    def _code_size(self) -> int:
        return self._pq.code_size

    def _train(self, x):
        what = f"IndexIVFPQ with nlist={self._nlist}, nbits={self._pq.nbits}"
        check_training_size(x.shape[0], self._nlist, what, "one per inverted list")
        check_training_size(x.shape[0], self._pq.ksub, what, "ksub = 2**nbits for the PQ")
        self._train_coarse(x)
        residuals = x - self._centroids[self._coarse_assign(x)]
        # frames: _train_validated <- _train <- Index.train <- user
        self._pq._train_validated(residuals, stacklevel=4)

    def _encode(self, x, list_nos):
        residuals = x - self._centroids[list_nos]
        return self._engine.pq_encode(residuals, self._pq._core(), self._nt())

    def _decode(self, codes, list_nos):
        residuals = self._engine.pq_decode(codes, self._pq._core(), self._nt())
        return residuals + self._centroids[list_nos]

    _layout = "blocked"

    def _with_bias(self) -> bool:
        return self._core_metric == "l2"

    def _versions(self):
        return (self._centroids_version, self._pq._codebooks_version)

    def _code_bias(self, codes, list_nos):
        if not self._with_bias():
            return None
        if self.ntotal == 0:
            self._bias_version = self._versions()
        return self._engine.ivfpq_code_bias(codes, list_nos, self._core_coarse(),
                                            self._pq._core(), self._nt())

    def _refresh_bias(self) -> None:
        """Recompute the stored per-code bias after the codebooks changed (set_codebooks)."""
        if not self._with_bias() or self.ntotal == 0 or self._bias_version == self._versions():
            return
        sizes, _, codes = self._invlists.export()
        list_nos = np.repeat(np.arange(self._nlist, dtype=np.int64), np.asarray(sizes))
        self._invlists.set_bias(self._engine.ivfpq_code_bias(
            codes, list_nos, self._core_coarse(), self._pq._core(), self._nt()))
        self._bias_version = self._versions()

    def _codebooks_changed(self) -> None:
        super()._codebooks_changed()
        self._refresh_bias()

    def _search(self, x, k, estimates=False):
        return self._engine.ivfpq_search(
            x, self._core_coarse(), self._pq._core(), self._invlists, self._nprobe, k,
            self._core_metric, self._nt(), estimates,
        )

    def _search_candidates(self, x, k):
        # Ranked by the byte-quantized table's integer estimates (nbits 4 and 8 in the compiled
        # engine): no exact ADC sums, since the re-ranking computes exact distances anyway. The
        # Numba engine ranks by exact keys.
        return self._search(x, k, estimates=True)

    def _memory_usage_bytes(self) -> int:
        total = int(self._invlists.memory_usage_bytes()) + self._lists_overhead()
        for array in (self._centroids, self._pq.codebooks):
            if array is not None:
                total += array.nbytes
        return total

    def _state_params(self):
        return {"d": self._d, "nlist": self._nlist, "M": self._pq.M, "nbits": self._pq.nbits,
                "metric": self._metric, "nprobe": self._nprobe, "seed": self._seed}

    def _get_state(self):
        params = self._state_params()
        arrays = self._invlists_state()
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        if self._pq.codebooks is not None:
            arrays["codebooks"] = self._pq.codebooks
        return params, arrays

    def _array_spec(self):
        pq = self._pq
        return {**super()._array_spec(),
                "codebooks": (np.float32, (pq.M, pq.ksub, pq.dsub), False)}

    def _check_codes(self, codes):
        _check_code_padding(codes, self._pq.M, self._pq.nbits)

    def _load_trained(self, arrays, n):
        if "codebooks" in arrays:
            self._pq.set_codebooks(arrays["codebooks"])
        elif n:
            raise ValueError("vectors present but no codebooks")

    @classmethod
    def _from_state(cls, params, arrays):
        index = cls._construct_for_load(
            params, arrays, ("d", "nlist", "M", "nbits", "metric", "nprobe", "seed"),
            params["d"], params["nlist"], params["M"], params["nbits"], params["metric"],
            params["nprobe"])
        index._load_state(arrays)
        return index
