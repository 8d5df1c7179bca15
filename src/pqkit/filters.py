"""Id filters for ``search(x, k, filter=...)`` and ``range_search(x, radius, filter=...)``.

A filter says which stored ids a search may return (FAISS's ``IDSelector``). It is applied
inside the engines' scans: the code (or vector) of an id the filter excludes never gets an
exact distance and never enters the results, so a query returns ``k`` results whenever ``k``
allowed vectors lie in the lists it probes (``IndexFlat`` and ``IndexPQ``: in the index).

========================== ==============================================================
:class:`IDSelectorBatch`   the ids of an integer array (FAISS ``IDSelectorBatch``)
:class:`IDSelectorBitmap`  a boolean mask over the ids ``start .. start + len(mask) - 1``
                           (FAISS ``IDSelectorBitmap``)
:class:`IDSelectorNot`     every id another filter does not allow (an exclusion list)
:class:`IDSelectorPerQuery` a different set of ids per query (CSR ``(offsets, ids)`` or one
                           array per query)
========================== ==============================================================

Plain values are accepted as shorthands wherever a filter is (:func:`as_selector`): an integer
array (or list of ints) is an :class:`IDSelectorBatch`, a boolean array an
:class:`IDSelectorBitmap` over ids ``0 .. len - 1``, a tuple ``(offsets, ids)`` or a list of
integer arrays (or a 2-D integer array, one row per query) an :class:`IDSelectorPerQuery`.

Filters are immutable (their arrays are copied) and may be shared by threads and reused across
searches. Bad values raise ``TypeError``/``ValueError`` saying what was expected and how to fix
it (through :mod:`pqkit._validation`).

Examples
--------
>>> import numpy as np, pqkit
>>> xb = np.random.default_rng(0).standard_normal((1000, 8), dtype=np.float32)
>>> index = pqkit.IndexFlat(8)
>>> index.add(xb)
>>> D, I = index.search(xb[:2], 3, filter=np.arange(0, 1000, 2))    # even ids only
>>> bool((I % 2 == 0).all())
True
>>> D, I = index.search(xb[:2], 3, filter=pqkit.IDSelectorNot([0, 1]))
>>> I[:, 0].tolist() != [0, 1]
True
>>> D, I = index.search(xb[:2], 1, filter=[np.array([5, 6]), np.array([7])])  # one set per query
>>> I[:, 0].tolist()[1]
7
"""

from __future__ import annotations

import numpy as np

from ._validation import check_bool_mask, check_csr_offsets, check_ids, check_int

__all__ = [
    "IDSelector",
    "IDSelectorBatch",
    "IDSelectorBitmap",
    "IDSelectorNot",
    "IDSelectorPerQuery",
    "as_selector",
]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


class IDSelector:
    """Base class of the id filters (not instantiated directly).

    Attributes
    ----------
    per_query : bool
        Whether the filter holds one set of ids per query.
    n_queries : int or None
        The number of queries of a per-query filter; None for a filter shared by every query.
    """

    per_query = False

    def __init__(self):
        if type(self) is IDSelector:
            raise TypeError("IDSelector is an abstract base class; use IDSelectorBatch, "
                            "IDSelectorBitmap, IDSelectorNot or IDSelectorPerQuery")
        self._engine_selectors = {}  # engine module name -> its IDSelector, built on first use

    @property
    def n_queries(self):
        return None

    def accepts(self, ids, queries=None) -> np.ndarray:
        """Which ids the filter allows (a NumPy reference of what the engines do).

        Parameters
        ----------
        ids : array_like of int, any shape
        queries : array_like of int, optional
            The query each id belongs to (broadcast against ``ids``); only per-query filters use
            it. By default row ``i`` of a 2-D ``ids`` belongs to query ``i``.

        Returns
        -------
        numpy.ndarray of bool, the shape of ``ids``
        """
        ids = np.asarray(ids, dtype=np.int64)
        return self._contains(ids, queries) != self._exclude()

    # ---- what the subclasses define
    def _exclude(self) -> bool:
        return False

    def _contains(self, ids: np.ndarray, queries) -> np.ndarray:
        """Membership in the set, before exclusion."""
        raise NotImplementedError

    def _spec(self) -> dict:
        """The engine's IDSelector arguments: bitmap, start, ids, offsets, exclude."""
        raise NotImplementedError

    def _in_rows(self, stored_ids: np.ndarray, rows_of) -> "IDSelector":
        """The same filter over row numbers of a store holding ``stored_ids`` (IndexFlat);
        ``rows_of(ids)`` gives each id's row, -1 where absent."""
        raise NotImplementedError

    # ---- shared
    def for_queries(self, rows) -> "IDSelector":
        """The filter of the queries ``rows`` (int array) of a search, in that order: the filter
        itself unless it holds one set per query (used to split a search into parts)."""
        return self

    def check_queries(self, nq: int) -> None:
        """Raise ValueError unless the filter fits a search of ``nq`` queries."""

    def _engine(self, core):
        """The engine ``core``'s IDSelector of this filter (built once per engine)."""
        key = core.__name__
        selector = self._engine_selectors.get(key)
        if selector is None:
            selector = core.IDSelector(**self._spec())
            self._engine_selectors[key] = selector
        return selector


#: A batch of ids becomes a bitmap over their range when it takes at most this many bytes (or
#: no more than the ids themselves): membership is the same, and a bitmap test costs a load
#: where a binary search in the sorted ids costs about log2(n) dependent ones.
BITMAP_MAX_BYTES = 16 << 20


def _sorted_ids_spec(ids: np.ndarray, exclude: bool) -> dict:
    """Sorted unique ids as the engines take them: a bitmap when its range is small enough
    (:data:`BITMAP_MAX_BYTES`), else the sorted ids."""
    if ids.size and (int(ids[-1]) - int(ids[0])) // 8 + 1 <= max(BITMAP_MAX_BYTES, 8 * ids.size):
        start = int(ids[0])
        mask = np.zeros(int(ids[-1]) - start + 1, dtype=bool)
        mask[ids - start] = True
        return {"bitmap": np.packbits(mask, bitorder="little"), "start": start, "ids": None,
                "offsets": None, "exclude": exclude}
    return {"bitmap": None, "start": 0, "ids": np.ascontiguousarray(ids, dtype=np.int64),
            "offsets": None, "exclude": exclude}


class IDSelectorBatch(IDSelector):
    """The ids of an array (FAISS ``IDSelectorBatch``).

    Parameters
    ----------
    ids : array_like of integer dtype, shape (m,)
        The allowed ids, >= 0, in any order; duplicates are ignored. An empty array allows no
        id.

    Attributes
    ----------
    ids : numpy.ndarray of int64, shape (m',)
        The distinct ids, sorted (read-only).

    Examples
    --------
    >>> import pqkit
    >>> pqkit.IDSelectorBatch([7, 3, 3]).ids.tolist()
    [3, 7]
    """

    def __init__(self, ids):
        super().__init__()
        self.ids = _frozen(np.unique(check_ids(ids, name="filter ids")))

    def _contains(self, ids, queries):
        return np.isin(ids, self.ids)

    def _spec(self):
        return _sorted_ids_spec(self.ids, False)

    def _in_rows(self, stored_ids, rows_of):
        rows = rows_of(self.ids)
        return IDSelectorBatch(rows[rows >= 0])

    def __repr__(self):
        return f"IDSelectorBatch({self.ids.size} ids)"


class IDSelectorBitmap(IDSelector):
    """A boolean mask over a range of ids (FAISS ``IDSelectorBitmap``).

    Parameters
    ----------
    mask : array_like of bool, shape (n,)
        ``mask[i]`` allows id ``start + i``; ids outside ``start .. start + n - 1`` are not
        allowed.
    start : int, default 0
        The id of ``mask[0]``, >= 0.

    Examples
    --------
    >>> import numpy as np, pqkit
    >>> pqkit.IDSelectorBitmap(np.array([True, False, True]), start=10).accepts([10, 11, 12, 13]).tolist()
    [True, False, True, False]
    """

    def __init__(self, mask, start=0):
        super().__init__()
        mask = check_bool_mask(mask, "the filter mask")
        self.start = check_int(start, "filter start", minimum=0, maximum=2**63 - 1 - mask.size)
        self.mask = _frozen(mask)

    def _contains(self, ids, queries):
        rel = ids - self.start
        inside = (rel >= 0) & (rel < self.mask.size)
        out = np.zeros(ids.shape, dtype=bool)
        out[inside] = self.mask[rel[inside]]
        return out

    def _spec(self):
        return {"bitmap": np.packbits(self.mask, bitorder="little"), "start": self.start,
                "ids": None, "offsets": None, "exclude": False}

    def _in_rows(self, stored_ids, rows_of):
        return IDSelectorBitmap(self._contains(stored_ids, None))

    def __repr__(self):
        return f"IDSelectorBitmap({int(self.mask.sum())} of {self.mask.size} ids from {self.start})"


class IDSelectorNot(IDSelector):
    """Every id another filter does not allow: an exclusion list (FAISS ``IDSelectorNot``).

    Parameters
    ----------
    selector : IDSelector or a shorthand (see :func:`as_selector`)
        The ids to exclude, e.g. an array of ids.

    Examples
    --------
    >>> import pqkit
    >>> pqkit.IDSelectorNot([1, 2]).accepts([0, 1, 2, 3]).tolist()
    [True, False, False, True]
    """

    def __init__(self, selector):
        super().__init__()
        inner = as_selector(selector)
        if inner is None:
            raise TypeError("IDSelectorNot needs a filter to invert, got None")
        self.selector = inner

    @property
    def per_query(self):
        return self.selector.per_query

    @property
    def n_queries(self):
        return self.selector.n_queries

    def _exclude(self):
        return not self.selector._exclude()

    def _contains(self, ids, queries):
        return self.selector._contains(ids, queries)

    def _spec(self):
        spec = dict(self.selector._spec())
        spec["exclude"] = not spec["exclude"]
        return spec

    def _in_rows(self, stored_ids, rows_of):
        return IDSelectorNot(self.selector._in_rows(stored_ids, rows_of))

    def check_queries(self, nq):
        self.selector.check_queries(nq)

    def for_queries(self, rows):
        inner = self.selector.for_queries(rows)
        return self if inner is self.selector else IDSelectorNot(inner)

    def __repr__(self):
        return f"IDSelectorNot({self.selector!r})"


class IDSelectorPerQuery(IDSelector):
    """A different set of allowed ids for each query.

    Parameters
    ----------
    sets : sequence of array_like of integer dtype
        ``sets[q]`` holds the ids query ``q`` may return (>= 0, any order, duplicates ignored);
        one set per query of the search, in order. See :meth:`from_csr` for the compressed
        form.

    Attributes
    ----------
    offsets : numpy.ndarray of int64, shape (n_queries + 1,)
    ids : numpy.ndarray of int64, shape (offsets[-1],)
        Query ``q``'s ids are ``ids[offsets[q]:offsets[q + 1]]``, sorted and distinct
        (read-only).

    Examples
    --------
    >>> import pqkit
    >>> f = pqkit.IDSelectorPerQuery([[4, 2], [9]])
    >>> f.offsets.tolist(), f.ids.tolist()
    ([0, 2, 3], [2, 4, 9])
    """

    per_query = True

    def __init__(self, sets):
        super().__init__()
        if isinstance(sets, np.ndarray) and sets.ndim == 2:
            sets = list(sets)
        if not isinstance(sets, (list, tuple)):
            raise TypeError(f"IDSelectorPerQuery takes a list with one id array per query, got "
                            f"{type(sets).__name__}; for the compressed form use "
                            "IDSelectorPerQuery.from_csr(offsets, ids)")
        parts = [np.unique(check_ids(s, name=f"filter ids of query {q}"))
                 for q, s in enumerate(sets)]
        sizes = np.array([p.size for p in parts], dtype=np.int64)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        self._set(offsets, np.concatenate(parts) if parts else np.empty(0, np.int64))

    @classmethod
    def from_csr(cls, offsets, ids) -> "IDSelectorPerQuery":
        """A per-query filter from its compressed form.

        Parameters
        ----------
        offsets : array_like of integer dtype, shape (n_queries + 1,)
            Non-decreasing, from 0 to ``len(ids)``.
        ids : array_like of integer dtype, shape (offsets[-1],)
            Query ``q``'s ids are ``ids[offsets[q]:offsets[q + 1]]`` (>= 0, any order).

        Returns
        -------
        IDSelectorPerQuery
        """
        ids = check_ids(ids, name="filter ids")
        offsets = check_csr_offsets(offsets, ids.size, "filter offsets")
        query = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        order = np.lexsort((ids, query))
        ids, query = ids[order], query[order]
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = (ids[1:] != ids[:-1]) | (query[1:] != query[:-1])
        counts = np.bincount(query[keep], minlength=offsets.size - 1)
        new_offsets = np.zeros(offsets.size, dtype=np.int64)
        np.cumsum(counts, out=new_offsets[1:])
        selector = cls.__new__(cls)
        IDSelector.__init__(selector)
        selector._set(new_offsets, ids[keep])
        return selector

    def _set(self, offsets, ids):
        self.offsets = _frozen(offsets)
        self.ids = _frozen(np.ascontiguousarray(ids, dtype=np.int64))

    @property
    def n_queries(self):
        return self.offsets.size - 1

    def for_queries(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return IDSelectorPerQuery([self.ids[self.offsets[q]:self.offsets[q + 1]] for q in rows])

    def check_queries(self, nq):
        if self.n_queries != nq:
            raise ValueError(
                f"the per-query filter holds {self.n_queries} id sets (offsets of length "
                f"{self.offsets.size}), but the search has {nq} queries: expected "
                f"{nq + 1} offsets; build the filter with one set per query searched")

    def _contains(self, ids, queries):
        if queries is None:
            if ids.ndim != 2:
                raise ValueError("a per-query filter needs the query of each id: pass ids of "
                                 "shape (n_queries, c) or queries=")
            queries = np.arange(ids.shape[0])[:, None]
        queries = np.broadcast_to(np.asarray(queries, dtype=np.int64), ids.shape).ravel()
        if queries.size and (queries.min() < 0 or queries.max() >= self.n_queries):
            raise ValueError(f"query numbers must lie in [0, {self.n_queries}) for this per-query "
                             f"filter, got {int(queries.min())}..{int(queries.max())}")
        flat_ids = ids.ravel()
        result = np.zeros(flat_ids.size, dtype=bool)
        order = np.argsort(queries, kind="stable")  # the ids grouped by query
        bounds = np.searchsorted(queries[order], np.arange(self.n_queries + 1))
        for q in np.flatnonzero(np.diff(bounds)):
            at = order[bounds[q]:bounds[q + 1]]
            segment = self.ids[self.offsets[q]:self.offsets[q + 1]]
            if segment.size:
                pos = np.minimum(np.searchsorted(segment, flat_ids[at]), segment.size - 1)
                result[at] = segment[pos] == flat_ids[at]
        return result.reshape(ids.shape)

    def _spec(self):
        return {"bitmap": None, "start": 0, "ids": np.ascontiguousarray(self.ids),
                "offsets": np.ascontiguousarray(self.offsets), "exclude": False}

    def _in_rows(self, stored_ids, rows_of):
        rows = rows_of(self.ids)
        query = np.repeat(np.arange(self.n_queries), np.diff(self.offsets))
        keep = rows >= 0
        return IDSelectorPerQuery.from_csr(
            np.concatenate(([0], np.cumsum(np.bincount(query[keep], minlength=self.n_queries)))),
            rows[keep])

    def __repr__(self):
        return f"IDSelectorPerQuery({self.n_queries} queries, {self.ids.size} ids)"


def as_selector(value):
    """A filter from a filter object or one of its shorthands.

    Parameters
    ----------
    value : IDSelector, array_like, tuple, list or None
        * an :class:`IDSelector`: returned as it is;
        * an integer array or a list of ints: :class:`IDSelectorBatch`;
        * a bool array: :class:`IDSelectorBitmap` over ids ``0 .. len - 1``;
        * a tuple ``(offsets, ids)``: :meth:`IDSelectorPerQuery.from_csr`;
        * a list of integer arrays (or lists), or a 2-D integer array: one set per query,
          :class:`IDSelectorPerQuery`;
        * None: no filter.

    Returns
    -------
    IDSelector or None

    Raises
    ------
    TypeError
        Any other kind of value (floats, strings, ...), naming the accepted forms.
    """
    if value is None or isinstance(value, IDSelector):
        return value
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"a tuple filter is the compressed per-query form (offsets, ids), got "
                            f"a tuple of {len(value)}; for one set per query pass a list of arrays")
        return IDSelectorPerQuery.from_csr(*value)
    if isinstance(value, list) and value and isinstance(value[0], (list, tuple, np.ndarray, range)):
        return IDSelectorPerQuery(value)
    if isinstance(value, (np.ndarray, list, range)):
        arr = np.asarray(value)
        if arr.size == 0 and not isinstance(value, np.ndarray):
            return IDSelectorBatch(np.empty(0, dtype=np.int64))  # [] is float64 to NumPy
        if arr.dtype == np.bool_:
            return IDSelectorBitmap(arr)
        if arr.ndim == 2 and arr.dtype.kind in "iu":
            return IDSelectorPerQuery(arr)
        return IDSelectorBatch(arr)
    raise TypeError(
        f"filter must be a pqkit.IDSelector* object, an integer array of allowed ids, a bool mask "
        f"over ids 0..n-1, a tuple (offsets, ids) or a list of id arrays (one per query), got "
        f"{type(value).__name__}")
