"""The base of every index: the public API, the conventions every index holds, and its locking.

Each index type lives in its own module of :mod:`pqkit.indexes` and is listed once in
:mod:`pqkit.indexes.registry`; this module has what they share.

Conventions shared by every index (and by :class:`pqkit.KMeans` / :class:`pqkit.ProductQuantizer`),
documented here once:

Input conversion
    Vectors may have any floating dtype (float16/32/64), any memory layout, or be a single 1-D
    vector (treated as one row); they are converted to a C-contiguous float32 matrix (n, d).
    Integer, bool, complex and object arrays raise TypeError; NaN/inf raise ValueError, and so
    do values beyond ``sqrt(2**120 / d)`` in magnitude (``pqkit._validation.max_abs_value``:
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
    (IP, cosine). An empty index returns only padding. ``range_search(x, radius)`` returns
    ``(lims, D, I)`` in FAISS's layout: query ``i``'s results are ``D[lims[i]:lims[i + 1]]``
    and ``I[lims[i]:lims[i + 1]]``, best first, those with ``D < radius`` (L2) or
    ``D > radius`` (IP, cosine).

Search parameters
    ``search`` and ``range_search`` take per-call parameters (``nprobe``, ``k_factor``,
    ``filter``, ``max_probe``; see :mod:`pqkit.indexes.params`): they apply to that call only,
    never change the index, and may differ between threads searching one index at once. Each
    type lists the ones it takes in ``search_parameters``; any other raises TypeError naming
    them. ``filter`` (:mod:`pqkit.filters`) is applied inside the engines' scans: an excluded
    id never gets a distance, so a query returns ``k`` results whenever ``k`` allowed vectors
    lie where it searches.

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
    the same codes, ids and distances (see :mod:`pqkit.engine`). The engine is fixed for
    the life of the index and not saved with it (``load`` uses the default).

Persistence
    ``index.save(path)`` / :func:`pqkit.load` and ``pickle`` use the same checked binary format
    (see :mod:`pqkit.io`). A loaded file is treated as hostile input: it either loads into an
    index that answers exactly as one built from the file's contents, or raises ValueError.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Protocol, runtime_checkable

import numpy as np

from .. import engine, io as _io, metrics, _threads
from .._validation import (
    as_device_matrix,
    is_torch_tensor,
    as_float_matrix,
    check_id_scalar,
    check_ids,
    check_int,
    check_k,
    check_max_results,
    check_metric,
    check_n_threads,
    check_positive_int,
    check_radius,
    check_result_size,
    check_trained,
    normalize_rows,
)
from ..filters import as_selector
from ._lock import ReadWriteLock
from .params import NAMES as PARAMETER_NAMES, RANGE_NAMES, SearchParams

#: The engine and device that :meth:`Index.to` rebuilds an index on: the types' ``_from_state``
#: construct their indexes (and the indexes they wrap) without naming an engine, so while it is
#: set, an index made without an explicit engine gets this one.
_ENGINE_OVERRIDE = contextvars.ContextVar("pqkit_engine_override", default=None)


def _engine_override(backend, device) -> tuple:
    """``(backend, device)`` of a new index: as given, or :meth:`Index.to`'s target."""
    override = _ENGINE_OVERRIDE.get()
    if override is not None and backend is None and device is None:
        return override
    return backend, device

__all__ = ["CandidateSource", "Index", "Reranker"]

#: The largest id (ids are int64 >= 0; -1 marks "no result").
MAX_ID = 2**63 - 1


#: The parameters of a call that sets none (every index type's own settings).
_NO_PARAMS = SearchParams()
#: Value types whose validated nprobe / k_factor an index remembers (hashable, and never a bool:
#: True would equal 1), and how many pairs it keeps.
_MEMO_TYPES = (int, float, type(None))
_MEMO_SIZE = 64


def _given(nprobe=None, k_factor=None, filter=None, max_probe=None) -> dict:
    """The search parameters a call set (not None), by name."""
    given = {}
    if nprobe is not None:
        given["nprobe"] = nprobe
    if k_factor is not None:
        given["k_factor"] = k_factor
    if filter is not None:
        given["filter"] = filter
    if max_probe is not None:
        given["max_probe"] = max_probe
    return given


#: What the FAISS spellings of search parameters are called here.
_FAISS_HINTS = {
    "params": "pass each parameter as a keyword (nprobe=..., filter=...) instead of a "
              "SearchParameters object",
    "sel": "a faiss selector is filter= here (pqkit.IDSelectorBatch, IDSelectorBitmap, ...)",
}


def _empty_range(n: int):
    """The ``range_search`` result of ``n`` queries that find nothing."""
    return (np.zeros(n + 1, dtype=np.int64), np.empty(0, dtype=np.float32),
            np.empty(0, dtype=np.int64))


def _format_ids(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if ids.size > limit else ''}] ({ids.size} in all)"


def _array_difference(name: str, mine, theirs):
    """"name (...)" when two arrays of training (or None, untrained) are not bit-identical,
    else None."""
    if mine is None or theirs is None:
        return None if mine is None and theirs is None else f"{name} (set on one index only)"
    if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
        return f"{name} (shape {mine.shape} here, {theirs.shape} there)"
    if mine.size == 0:
        return None
    here = np.ascontiguousarray(mine).reshape(mine.size, 1).view(np.uint8)
    there = np.ascontiguousarray(theirs).reshape(theirs.size, 1).view(np.uint8)
    count = int(np.count_nonzero(np.any(here != there, axis=1)))
    return f"{name} ({count} of {mine.size} values not bit-identical)" if count else None


#: A memory-mapped array given to add() is converted and added this many bytes (as float32) at
#: a time.
_ADD_CHUNK_BYTES = 32 << 20


_SEQUENTIAL = object()  # add(): the ids continue after the largest one stored


def _chunk_rows(d: int) -> int:
    return max(1, _ADD_CHUNK_BYTES // (4 * d))


def _is_mapped(x) -> bool:
    """Whether ``x`` is a NumPy array over a memory mapping (``numpy.memmap``, or a view of an
    ``mmap.mmap``): such data is read from the file as it is used."""
    import mmap

    seen = 0
    while isinstance(x, np.ndarray) and seen < 32:
        if isinstance(x, np.memmap):
            return True
        x, seen = x.base, seen + 1
    return isinstance(x, mmap.mmap)


def _progress_bar():
    """A tqdm progress bar of vectors added, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(unit=" vectors", desc="add_chunks")


class Index:
    """Base class of all pqkit indexes (common behaviour; not instantiated directly).

    See the module docstring of :mod:`pqkit.indexes.base` for input conversion, metrics, result
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
    backend : {"cpp", "numba", "torch"}
        The engine (read-only; chosen at construction, changed by :meth:`to`).
    device : str or None
        The torch engine's device ("cpu", "cuda:0", ...), None for the CPU engines.
    search_parameters : tuple of str
        The per-call parameters :meth:`search` takes (``range_search`` takes those of them
        among ``nprobe`` and ``filter``).
    """

    # Whether train() changes how stored vectors are encoded (then it is refused while the
    # index holds vectors).
    _training_changes_codes = True

    #: The per-call parameters :meth:`search` takes (:mod:`pqkit.indexes.params`); each type
    #: declares its own, and wrappers add those of the index they wrap.
    search_parameters = ("filter",)

    def __init__(self, d, metric="l2", n_threads=None, backend=None, device=None):
        if type(self) is Index:
            raise TypeError(
                "Index is an abstract base class; use IndexFlat, IndexPQ, IndexIVFFlat, "
                "IndexIVFPQ or pqkit.index_factory"
            )
        self._d = check_positive_int(d, "d")
        self._metric = check_metric(metric)
        self._metric_info = metrics.get(self._metric)
        self._n_threads = check_n_threads(n_threads)
        self._backend, self._device = engine.resolve_engine(*_engine_override(backend, device))
        self._lock = ReadWriteLock()
        self._mapped_path = None  # the file of an index loaded with pqkit.load(path, mmap=True)
        self._params_memo = {}  # validated per-call nprobe / k_factor (see search)

    # ----------------------------------------------------------------- properties
    @property
    def backend(self) -> str:
        """The engine: "cpp" (compiled core) or "numba" (portable)."""
        return self._backend

    @property
    def device(self):
        """The torch engine's device ("cpu", "cuda:0", ...), or None for the CPU engines."""
        return self._device

    @property
    def _engine(self):
        return engine.core(self._backend, self._device)

    def to(self, backend, device=None) -> "Index":
        """The same index on another engine (or device), without retraining.

        The index's saved state (what :func:`pqkit.save` writes: centroids, codebooks, codes,
        ids, parameters) is rebuilt on the new engine, so the two save identical files and
        search alike (the torch engine up to float rounding; see :mod:`pqkit.engine.torch`).
        The original is left as it was.

        Parameters
        ----------
        backend : {"cpp", "numba", "torch"}
        device : str or None
            For "torch": "cuda", "cuda:N" or "cpu" (None: a CUDA device when there is one).

        Returns
        -------
        Index
            A new index of the same type.

        Raises
        ------
        ValueError
            An unknown engine, a device the engine lacks (CUDA asked for and absent), or a
            memory-mapped index (load it into memory first).
        """
        name, dev = engine.resolve_engine(backend, device)
        if self._mapped_path is not None:
            raise ValueError("cannot move a memory-mapped index to another engine; load it with "
                             "pqkit.load(path) (not mmap=True) first")
        with self._lock.read():
            params, arrays = self._get_state()
        token = _ENGINE_OVERRIDE.set((name, dev))
        try:
            moved = type(self)._from_state(params, arrays)
        finally:
            _ENGINE_OVERRIDE.reset(token)
        moved._n_threads = self._n_threads
        return moved

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
        return self._metric_info.engine

    def _nt(self) -> int:
        return _threads.resolve(self._n_threads)

    def _name(self) -> str:
        return type(self).__name__

    def _prepare(self, x, name: str = "x", keep_tensor: bool = False) -> np.ndarray:
        """Validate and convert vectors; normalise rows for the cosine metric.

        With ``keep_tensor`` (searches), a torch tensor given to a torch-engine index stays on
        its device (validated and normalised there; only the results come back); any other
        tensor is copied to NumPy."""
        if type(x) is not np.ndarray and is_torch_tensor(x):
            if keep_tensor and self._backend == "torch":
                return as_device_matrix(x, self._d, self._device, name,
                                        self._metric_info.normalizes)
            x = x.detach().cpu().numpy()
        x = as_float_matrix(x, self._d, name=name)
        if self._metric_info.normalizes and x.shape[0]:
            x = normalize_rows(x, name)
        return x

    def _check_writable(self, what: str) -> None:
        """Refuse a change of a mapped (read-only) index with a ValueError saying how to get a
        writable copy."""
        if self._mapped_path is not None:
            raise ValueError(
                f"{self._name()}.{what}: this index is mapped read-only from {self._mapped_path!r} "
                "(pqkit.load(path, mmap=True)); load it with pqkit.load(path), without mmap, for "
                "a writable copy"
            )

    def _empty_result(self, n: int, k: int):
        pad = self._metric_info.pad
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
        self._check_writable("train()")
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
            Converted to float32 (see the module docstring). A memory-mapped array
            (``numpy.memmap``, ``numpy.load(..., mmap_mode="r")``) larger than 32 MiB is read,
            converted and added a chunk of rows at a time, so the extra memory stays bounded
            whatever its size (the pages read count toward the process's resident memory until
            the operating system reclaims them); a chunk that fails validation removes the
            chunks added before it again (nothing is added). See also :meth:`add_chunks`.

        Raises
        ------
        ValueError
            If the index is not trained, or the sequential ids would pass 2**63 - 1 (after an
            :meth:`add_with_ids` of ids near that limit).
        """
        self._add_vectors(x, _SEQUENTIAL, "add()")

    def add_with_ids(self, x, ids) -> None:
        """Add vectors with the given ids.

        Unlike FAISS, duplicate ids are refused: every id must be new to the index and appear
        once in ``ids``.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see the module docstring); a memory-mapped array is added a
            chunk at a time, as :meth:`add` does.
        ids : array_like of integer dtype, shape (n,)
            Ids >= 0; any integer dtype (float/bool raise TypeError).

        Raises
        ------
        ValueError
            If the index is not trained, or ``ids`` has duplicates or ids already present.
        """
        self._add_vectors(x, ids, "add_with_ids()")

    def add_chunks(self, chunks, progress=False) -> int:
        """Add vectors from an iterable of chunks, one chunk at a time.

        Memory stays bounded by one chunk (plus the index) however many chunks there are, so an
        index can be built from data that does not fit in memory: a generator that reads one
        part of a file after another, or row slices of a ``numpy.memmap``.

        Parameters
        ----------
        chunks : iterable
            Each item is either an array_like of float, shape (n_i, d), added as by
            :meth:`add` (sequential ids), or a 2-tuple ``(x, ids)`` added as by
            :meth:`add_with_ids`.
        progress : bool, default False
            Show a progress bar of the vectors added (through ``tqdm``, when it is installed;
            without it nothing is shown).

        Returns
        -------
        int
            The number of vectors added.

        Raises
        ------
        TypeError, ValueError
            As :meth:`add` / :meth:`add_with_ids` for a bad chunk, with the chunk's number in
            the message. Each chunk is added whole or not at all; the chunks before a bad one
            stay added.

        Examples
        --------
        >>> import numpy as np, pqkit
        >>> index = pqkit.IndexFlat(8)
        >>> parts = (np.full((10, 8), i, dtype=np.float32) for i in range(3))
        >>> index.add_chunks(parts)
        30
        """
        self._check_writable("add_chunks()")
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        try:
            items = iter(chunks)
        except TypeError:
            raise TypeError(f"add_chunks(): chunks must be an iterable of arrays or (x, ids) "
                            f"pairs, got {type(chunks).__name__}") from None
        bar = _progress_bar() if progress else None
        added = 0
        try:
            for number, chunk in enumerate(items):
                if isinstance(chunk, tuple) and len(chunk) != 2:
                    raise ValueError(f"add_chunks(): chunk {number} is a tuple of {len(chunk)} "
                                     "items; expected an array of vectors or an (x, ids) pair")
                try:
                    x, ids = chunk if isinstance(chunk, tuple) else (chunk, _SEQUENTIAL)
                    count = self._add_vectors(x, ids, "add_chunks()")
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"add_chunks(): chunk {number} (after {added} vectors added "
                                    f"from the chunks before it, which stay): {exc}") from exc
                added += count
                if bar is not None:
                    bar.update(count)
        finally:
            if bar is not None:
                bar.close()
        return added

    def _add_vectors(self, x, ids, caller: str) -> int:
        """add (``ids`` is :data:`_SEQUENTIAL`) or add_with_ids; returns the number added."""
        self._check_writable(caller)
        check_trained(self.is_trained, self._name())
        sequential = ids is _SEQUENTIAL
        if _is_mapped(x) and x.ndim == 2 and x.shape[0] > _chunk_rows(self._d):
            ids = None if sequential else check_ids(ids, n=x.shape[0])
            with self._lock.write():
                ids = self._sequential_ids(x.shape[0], caller) if sequential else ids
                self._add_in_chunks(x, ids, caller)
            return int(x.shape[0])
        x = self._prepare(x)
        ids = None if sequential else check_ids(ids, n=x.shape[0])
        with self._lock.write():
            ids = self._sequential_ids(x.shape[0], caller) if sequential else ids
            self._add_checked(x, ids, caller)
        return int(x.shape[0])

    def _sequential_ids(self, n: int, caller: str) -> np.ndarray:
        """The ids ``add`` gives ``n`` new vectors (under the write lock)."""
        start = max(self.ntotal, self._id_upper_bound() + 1)
        if start + n - 1 > MAX_ID:
            raise ValueError(
                f"{caller}: the id space is exhausted: {n} sequential ids from {start} "
                f"would pass the largest id {MAX_ID} (2**63 - 1); add() continues after the "
                "largest id stored, so pass your own ids with add_with_ids(), or reset()"
            )
        return np.arange(start, start + n, dtype=np.int64)

    def _check_new_ids(self, ids: np.ndarray, caller: str) -> None:
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

    def _add_checked(self, x: np.ndarray, ids: np.ndarray, caller: str) -> None:
        if ids.size == 0:
            return
        self._check_new_ids(ids, caller)
        self._add(x, ids)

    def _add_in_chunks(self, x, ids: np.ndarray, caller: str) -> None:
        """Add memory-mapped rows ``x`` a chunk at a time (under the write lock), each chunk
        converted and validated just before it is added; on any error the chunks already
        added are removed again and the id bound restored, so nothing changes."""
        self._check_new_ids(ids, caller)
        saved_bound = self._id_upper_bound()
        step, done = _chunk_rows(self._d), 0
        try:
            for begin in range(0, x.shape[0], step):
                try:
                    chunk = self._prepare(x[begin:begin + step])
                except (TypeError, ValueError) as exc:
                    end = min(x.shape[0], begin + step)
                    raise type(exc)(f"{caller}: in rows {begin}..{end - 1} of the memory-mapped x "
                                    f"(nothing was added): {exc}") from exc
                self._add(chunk, ids[begin:begin + chunk.shape[0]])
                done = begin + chunk.shape[0]
        except BaseException:
            if done:
                self._remove(ids[:done])
                self._restore_id_upper_bound(saved_bound)
            raise

    def merge_from(self, other, add_id=0) -> None:
        """Move every vector of ``other`` into this index (FAISS ``merge_from``).

        ``other`` must have the same training: the same type, ``d`` and metric and, compared
        bit for bit, the same coarse centroids (``nlist``), PQ codebooks (``M``, ``nbits``) and
        transform; :class:`pqkit.IndexRefine` merges its base and refine parts, and
        :class:`pqkit.IndexPreTransform` its wrapped index. Its vectors keep their codes (nothing
        is encoded again) and are appended to this index's lists after the vectors already
        there, with their ids shifted by ``add_id``; ``other`` ends empty (trained), as in
        FAISS. So indexes filled from one trained index (its copies, e.g. by ``pickle``) with
        disjoint parts of a data set, in parallel, merge into the index that one ``add`` of all
        the parts in the same order builds: the same lists, and the same search results. For
        parts filled with ``add()`` (ids 0, 1, ... each), pass ``add_id = ntotal`` of this
        index, as FAISS does.

        Both indexes are locked for writing while the vectors move, always in the same order
        (so two threads merging ``a.merge_from(b)`` and ``b.merge_from(a)`` at once do not
        deadlock: one runs after the other).

        Parameters
        ----------
        other : pqkit.Index
            A trained index of the same type and training; not this index and sharing no part
            with it.
        add_id : int, default 0
            Added to every id of ``other``, >= 0.

        Raises
        ------
        TypeError
            ``other`` is not a pqkit index, or ``add_id`` not an int.
        ValueError
            ``other`` is this index or shares a part with it; either index is untrained or
            mapped read-only (:func:`pqkit.load` with ``mmap=True``); the two differ in type,
            ``d``, metric or training (the message names each difference); a shifted id passes
            ``2**63 - 1`` or is already in this index (the message lists them). Nothing is
            changed then.

        Examples
        --------
        >>> import pickle, numpy as np, pqkit
        >>> x = np.random.default_rng(0).standard_normal((2000, 16), dtype=np.float32)
        >>> index = pqkit.IndexIVFFlat(16, nlist=8, nprobe=8)
        >>> _ = index.train(x)
        >>> part = pickle.loads(pickle.dumps(index))   # the same training, empty
        >>> index.add(x[:1000]); part.add(x[1000:])
        >>> index.merge_from(part, add_id=1000)
        >>> index.ntotal, part.ntotal
        (2000, 0)
        """
        if not isinstance(other, Index):
            raise TypeError(
                f"merge_from(): other must be a pqkit index, got {type(other).__name__}")
        add_id = check_int(add_id, "add_id", minimum=0, maximum=MAX_ID)
        if other is self:
            raise ValueError(f"{self._name()}.merge_from(): other is this index itself; merge "
                             "another index of the same training")
        mine, theirs = self._tree(), other._tree()
        if {id(i) for i in mine} & {id(i) for i in theirs}:
            raise ValueError(f"{self._name()}.merge_from(): other shares a part with this index; "
                             "merge an index built separately")
        for index in mine:
            index._check_writable("merge_from()")
        for index in theirs:
            if index._mapped_path is not None:
                raise ValueError(
                    f"{self._name()}.merge_from(): other is mapped read-only from "
                    f"{index._mapped_path!r} and cannot be emptied; load it with "
                    "pqkit.load(path), without mmap, to merge it")
        check_trained(self.is_trained, self._name())
        check_trained(other.is_trained, f"the other {other._name()} given to merge_from()")
        with contextlib.ExitStack() as stack:
            # Every lock of both trees, in one global order: no two merges can deadlock.
            for index in sorted({id(i): i for i in mine + theirs}.values(), key=id):
                stack.enter_context(index._lock.write())
            differences = self._merge_differences(other)
            if differences:
                raise ValueError(
                    f"{self._name()}.merge_from(): other must have the same type and training, "
                    f"but differs in {'; '.join(differences)}; build both from one trained index "
                    "(copy it with pickle before adding)")
            ids = other._merge_ids()
            if ids.size == 0:
                return
            if int(ids.max()) > MAX_ID - add_id:
                raise ValueError(
                    f"{self._name()}.merge_from(): add_id={add_id} shifts id {int(ids.max())} past "
                    f"the largest id {MAX_ID} (2**63 - 1); use a smaller add_id")
            shifted = ids + np.int64(add_id)
            clashes = np.sort(shifted[self._contains(shifted)])
            if clashes.size:
                raise ValueError(
                    f"{self._name()}.merge_from(): ids of other (shifted by add_id={add_id}) are "
                    f"already in this index: {_format_ids(clashes)}; pass an add_id that moves "
                    f"them past this index's ids (e.g. add_id={self._id_upper_bound() + 1}), or "
                    "remove them first")
            self._merge(other, add_id)

    def _tree(self) -> list:
        """This index and every part it wraps, recursively."""
        return [self] + [index for part in self._parts() for index in part._tree()]

    def _merge_differences(self, other) -> list:
        """What keeps ``other`` from merging into this index: a list of "what (this ..., other
        ...)" strings, empty when they merge. Subclasses extend it with their training."""
        if type(other) is not type(self):
            return [f"type (this {self._name()}, other {other._name()})"]
        return [f"{name} (this {mine!r}, other {theirs!r})"
                for name, mine, theirs in (("d", self._d, other._d),
                                           ("metric", self._metric, other._metric))
                if mine != theirs]

    def _merge_ids(self) -> np.ndarray:
        """The ids stored (int64 (ntotal,)), for :meth:`merge_from`'s clash check."""
        raise NotImplementedError

    def _merge(self, other, add_id: int) -> None:
        """Move every vector of the checked ``other`` into this index, ids shifted by ``add_id``,
        and empty ``other`` (both locked by :meth:`merge_from`)."""
        raise NotImplementedError

    def search(self, x, k, *, nprobe=None, k_factor=None, filter=None, max_probe=None, **unknown):
        """Find the k nearest stored vectors of each query.

        The keyword parameters apply to this call only (the index is not changed, and threads
        may search it with different values at once); None means the index's own setting.
        Each index type takes those listed in its ``search_parameters``; any other raises
        TypeError.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Queries; converted to float32 (see the module docstring).
        k : int
            Number of neighbours, >= 1. May exceed ``ntotal`` (results are padded).
        nprobe : int, optional
            IVF indexes: inverted lists scanned per query, in ``[1, nlist]`` (default:
            ``index.nprobe``).
        k_factor : float, optional
            IndexRefine: ``ceil(k * k_factor)`` candidates are re-ranked (default:
            ``index.k_factor``).
        filter : pqkit.IDSelector or shorthand, optional
            The ids the search may return (:mod:`pqkit.filters`): an int array of allowed ids,
            a bool mask over ids ``0..len - 1``, a tuple ``(offsets, ids)`` or a list of int
            arrays (one set per query), :class:`pqkit.IDSelectorNot` for an exclusion list.
            Applied inside the scan: the result holds ``k`` allowed ids whenever ``k`` allowed
            vectors lie where the query searches, padding otherwise.
        max_probe : int, optional
            IVF indexes, opt-in: a query that has fewer than ``k`` results after ``nprobe``
            lists goes on with the next nearest lists, one at a time, until it has ``k`` or has
            scanned ``max_probe`` lists (in ``[nprobe, nlist]``). Useful with selective filters.

        Returns
        -------
        D : numpy.ndarray of float32, shape (n, k)
            Squared L2 distances ("l2") or similarities ("ip", "cosine"), best first; padding
            ``+inf`` (l2) or ``-inf`` (ip, cosine).
        I : numpy.ndarray of int64, shape (n, k)
            Ids of the neighbours; padding ``-1``.

        Raises
        ------
        TypeError
            A parameter this index does not take, or an unknown one (the message lists those
            it takes), or a parameter of the wrong kind.
        ValueError
            A parameter value out of range (``nprobe`` beyond ``nlist``, a per-query filter
            whose number of sets is not ``n``, ...).
        """
        if filter is None and max_probe is None and not unknown:
            if nprobe is None and k_factor is None:
                return self._locked_search(x, k, self._search, _NO_PARAMS)  # nothing to check per call
            if type(nprobe) in _MEMO_TYPES and type(k_factor) in _MEMO_TYPES:
                return self._locked_search(x, k, self._search, self._memo_params(nprobe, k_factor))
        given = _given(nprobe=nprobe, k_factor=k_factor, filter=filter, max_probe=max_probe)
        self._check_parameter_names({**given, **unknown} if unknown else given, "search")
        return self._locked_search(x, k, self._search, given)

    def range_search(self, x, radius, *, filter=None, nprobe=None, max_results=None, **unknown):
        """Find every stored vector within ``radius`` of each query (FAISS ``range_search``).

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Queries; converted to float32 (see the module docstring).
        radius : float
            "l2": results have squared distance ``D < radius``; "ip" and "cosine": similarity
            ``D > radius`` (FAISS's convention). Infinite values are allowed; NaN is not.
        filter : pqkit.IDSelector or shorthand, optional
            The ids the search may return, as for :meth:`search`.
        nprobe : int, optional
            IVF indexes: inverted lists scanned per query (default ``index.nprobe``); results
            come from those lists only.
        max_results : int, optional
            The most results (over all queries) the call may return; more raise ValueError
            instead of exhausting memory. Default: as many as available memory allows
            (``pqkit._validation.check_max_results``, 36 bytes per result).

        Returns
        -------
        lims : numpy.ndarray of int64, shape (n + 1,)
            Query ``i``'s results are at positions ``lims[i] .. lims[i + 1] - 1``.
        D : numpy.ndarray of float32, shape (lims[-1],)
            Distances or similarities, each query's best first (ties: the smaller id).
        I : numpy.ndarray of int64, shape (lims[-1],)
            Their ids.

        Raises
        ------
        TypeError
            A parameter this index does not take, or an unknown one (the message lists those
            it takes).
        ValueError
            More than ``max_results`` results, or a ``max_results`` that cannot fit in memory.
        """
        given = _given(filter=filter, nprobe=nprobe)
        self._check_parameter_names({**given, **unknown}, "range_search")
        radius = check_radius(radius)
        cap = check_max_results(max_results)
        return self._locked_range_search(x, radius, given, cap)

    def _memo_params(self, nprobe, k_factor) -> SearchParams:
        """The validated parameters of a call that sets only ``nprobe`` and ``k_factor`` (plain
        ints, floats or None). Whether such values are valid, and what they validate to, never
        changes for an index (their bounds, ``nlist`` and the k_factor range, are fixed when it is
        made), so each pair is checked once and remembered by value and type (a single query's
        checks cost as much as a tenth of its search)."""
        key = (type(nprobe), nprobe, type(k_factor), k_factor)
        params = self._params_memo.get(key)
        if params is None:
            given = _given(nprobe=nprobe, k_factor=k_factor)
            self._check_parameter_names(given, "search")
            params = self._check_search_params(0, given)  # no filter: the query count is not used
            if len(self._params_memo) >= _MEMO_SIZE:
                self._params_memo.clear()
            self._params_memo[key] = params
        return params

    def _search_params(self, nq: int, given, operation: str = "search") -> SearchParams:
        """The validated :class:`SearchParams` of a call of ``nq`` queries (``given``: the
        parameters set, by name; a SearchParams is already validated)."""
        if isinstance(given, SearchParams):
            return given
        self._check_parameter_names(given, operation)
        return self._check_search_params(nq, given)

    def _checked_params(self, nq: int, given) -> SearchParams:
        """As :meth:`_search_params` for ``given`` whose names the public method checked."""
        return given if isinstance(given, SearchParams) else self._check_search_params(nq, given)

    def _check_parameter_names(self, given: dict, operation: str) -> None:
        """TypeError for a parameter this type does not take, naming those it takes."""
        names = RANGE_NAMES if operation == "range_search" else PARAMETER_NAMES
        taken = self.search_parameters
        if all(name in taken and name in names for name in given):
            return  # the common case, without building the message's lists
        accepted = [name for name in PARAMETER_NAMES if name in self.search_parameters and name in names]
        unknown = [name for name in given if name not in accepted]
        if unknown:
            takes = ", ".join(accepted) if accepted else "none"
            foreign = [name for name in unknown if name not in PARAMETER_NAMES]
            if foreign:
                hint = "".join(f"; {_FAISS_HINTS[name]}" for name in foreign if name in _FAISS_HINTS)
                raise TypeError(
                    f"{self._name()}.{operation}() got an unknown parameter "
                    f"{', '.join(map(repr, foreign))}; its {operation} parameters are: {takes}{hint}")
            raise TypeError(
                f"{self._name()}.{operation}() got {', '.join(unknown)}, which {self._name()} "
                f"does not take; its {operation} parameters are: {takes}")

    def _check_search_params(self, nq: int, given: dict) -> SearchParams:
        """The call's :class:`SearchParams` from the parameters given (names checked)."""
        return SearchParams(**self._checked_values(nq, given)) if given else _NO_PARAMS

    def _checked_values(self, nq: int, given: dict) -> dict:
        """Validate the values of the parameters this type takes (its names are checked): the
        validated values of those given, by name. Subclasses add the parameters they take."""
        if given.get("filter") is None:
            return {}
        selector = as_selector(given["filter"])
        if selector is None:
            return {}
        selector.check_queries(nq)
        return {"filter": selector}

    def _engine_selector(self, params: SearchParams):
        """The engine's selector of the call's filter (None without one)."""
        return None if params.filter is None else params.filter._engine(self._engine)

    def _candidates(self, x, k, params=_NO_PARAMS):
        """Ids of k candidates per query for an exact re-ranking (IndexRefine's first stage).

        As :meth:`search`, but an index may rank by a cheaper approximation of its distances
        (:meth:`_search_candidates`); only the ids are returned. ``x`` is already converted
        (and normalised for "cosine") by the calling index, whose metric this index shares, and
        ``k >= 1``: only the call's parameters are checked here, once.
        """
        return self._locked_search(x, k, self._search_candidates, params, prepared=True)[1]

    def _search_candidates(self, x, k, params):
        """The candidate ranking for :meth:`_candidates`: the search itself unless overridden."""
        return self._search(x, k, params)

    def _search_reranked(self, x, n_candidates, k, params, store):
        """IndexRefine's two stages in one engine call, where this index and its engine have
        one: ``(D, I)`` of :meth:`_candidates` (``n_candidates`` per query) re-ranked to the
        best ``k`` over ``store`` (a refine index's :meth:`Reranker._rerank_store`), equal to
        the two stages made apart; None where there is no such call (the default)."""
        return None

    def _locked_search(self, x, k, run, params, prepared: bool = False):
        """``run(x, k, params)`` under the read lock, after the checks; ``prepared``: ``x`` and
        ``k`` were already converted and checked by a wrapping index (its first stage), whose
        own training check covered this index's."""
        if not prepared:
            if not self.is_trained:
                check_trained(False, self._name())
            k = check_k(k)
            x = self._prepare(x, keep_tensor=True)
        params = self._checked_params(x.shape[0], params)  # search() checked the names
        check_result_size(x.shape[0], k)
        with self._lock.read():
            if x.shape[0] == 0 or self._ntotal() == 0:
                return self._empty_result(x.shape[0], k)
            return run(x, k, params)

    def _locked_range_search(self, x, radius, params, cap):
        check_trained(self.is_trained, self._name())
        x = self._prepare(x, keep_tensor=True)
        params = self._checked_params(x.shape[0], params)  # range_search() checked the names
        with self._lock.read():
            if x.shape[0] == 0 or self.ntotal == 0:
                return _empty_range(x.shape[0])
            return self._range_search(x, radius, params, cap)

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
        self._check_writable("remove_ids()")
        ids = check_ids(ids)
        with self._lock.write():
            if ids.size == 0 or self.ntotal == 0:
                return 0
            return int(self._remove(ids))

    def reset(self) -> None:
        """Remove all vectors; training (centroids, codebooks) is kept."""
        self._check_writable("reset()")
        with self._lock.write():
            self._reset()

    def memory_usage_bytes(self) -> int:
        """Bytes held by the index data.

        Counts the buffers holding vectors or codes and their int64 ids (IndexFlat and
        IndexScalarQuantizer store none while the ids are the 0..n-1 ``add`` assigns; including spare
        capacity reserved by amortised growth, at most about 2x the stored bytes), centroids,
        codebooks and precomputed tables; not Python object overhead.

        Returns
        -------
        int
        """
        with self._lock.read():
            return int(self._memory_usage_bytes())

    def save(self, path, *, overwrite=True) -> None:
        """Write the index to ``path``, all-or-nothing (see :func:`pqkit.io.save`).

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

    def _restore_id_upper_bound(self, bound: int) -> None:
        """Set the bound back after an add was undone (see :meth:`_add_in_chunks`)."""

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, x: np.ndarray, k: int, params: SearchParams):
        raise NotImplementedError

    def _range_search(self, x: np.ndarray, radius: float, params: SearchParams, cap: int):
        """``(lims, D, I)`` of every stored vector within ``radius`` (at most ``cap`` results)."""
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

    # ---- hooks read through the registry (factory, interop, tune); optional per type
    #: ``index_factory`` token: a regex (named groups) matching this type's part of a description,
    #: and its role: "core" (a whole index: "Flat", "IVF64,PQ8"), "prefix" (a transform before a
    #: core: "PCA32,") or "suffix" (a wrapper after it: ",RFlat"). None: not in the grammar.
    _factory_pattern = None
    _factory_role = "core"
    _factory_grammar = ""  # how the grammar in messages shows the token
    #: The FAISS class names :meth:`_from_faiss` converts (``pqkit.from_faiss``).
    _faiss_names = ()

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None) -> "Index":
        """Build from a matched :attr:`_factory_pattern` (``inner``: the wrapped index, for
        prefix/suffix roles)."""
        raise NotImplementedError

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert) -> "Index":
        """Convert a downcast FAISS index of one of :attr:`_faiss_names` (``ids``: the ids of an
        enclosing ``IndexIDMap``, or None; ``convert(faiss_index)`` converts a nested part)."""
        raise NotImplementedError

    def _to_faiss(self, faiss, convert):
        """The equivalent FAISS index (``convert(part)`` converts a nested pqkit part)."""
        raise ValueError(f"cannot convert a {self._name()} to faiss")

    def _estimate_bytes(self, n: int) -> int:
        """What :meth:`memory_usage_bytes` will report after one ``add`` of ``n`` vectors
        (``pqkit.estimate_memory``), computed on this untrained index."""
        raise ValueError(f"no memory model for {self._name()}")

    def _exact_vectors(self):
        """``(vectors, ids)``: the exact stored vectors (float32 (n, d)) and their ids, when the
        index keeps them (``pqkit.tune`` then needs no ``xb``); None otherwise."""
        return None

    def _parts(self) -> tuple:
        """The pqkit indexes this one wraps (none for a plain index)."""
        return ()

    @classmethod
    def _from_state(cls, params: dict, arrays: dict) -> "Index":
        """Rebuild an index from :meth:`_get_state` output; ValueError if inconsistent."""
        raise NotImplementedError


# ------------------------------------------------------------------ what wrappers rely on
# IndexRefine runs a search in two stages on two indexes it wraps; these are the calls it makes
# on them, declared here so that any index type may take either role.
@runtime_checkable
class CandidateSource(Protocol):
    """An index that can propose candidates (IndexRefine's base index: every index)."""

    def _candidates(self, x: np.ndarray, k: int, params) -> np.ndarray:
        """Ids (int64, (n, k), -1 padded) of k candidates per query of the float32 (n, d)
        queries ``x`` (already converted), ranked by the index's own (approximate) distance,
        with the call's search parameters ``params`` (a SearchParams)."""

    def _search_reranked(self, x: np.ndarray, n_candidates: int, k: int, params, store):
        """``(D, I)`` of both stages in one engine call over a refine index's
        :meth:`Reranker._rerank_store`, or None where the index has no such call."""


@runtime_checkable
class Reranker(Protocol):
    """An index that re-ranks candidates by their stored data (IndexRefine's refine index:
    IndexFlat, exact vectors; IndexPQ, decoded codes)."""

    def _rows_of(self, ids: np.ndarray, unchecked: bool = False) -> np.ndarray:
        """Row of each id in the index's storage (int64, shape of ``ids``), -1 where absent;
        ``unchecked``: an id beyond the rows may come back as it is where ids are row numbers
        (:meth:`_rerank_rows` then refuses it with a ValueError)."""

    def _rerank_rows(self, x: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int):
        """``(D, I)``: the best ``k`` of each query's candidate ``rows`` (int64 (n, c), -1 for
        none) by the exact distance to their stored data, reported under ``ids`` (n, c)."""

    def _rerank_store(self):
        """The engine's view of the stored rows for a fused search
        (``ivfpq_search_rerank``'s ``refine`` tuple) where each stored id is its row number,
        else None (the two stages then run apart, through :meth:`_rows_of`)."""
