"""IndexFlat: exact (brute-force) search over float32 vectors."""

from __future__ import annotations

import numpy as np

from . import _faiss
from ._state import _N, _check_arrays, _check_params, _check_stored_ids, _check_stored_vectors
from ._storage import _RowIndex, _RowStore
from .base import Index

__all__ = ["IndexFlat"]


class IndexFlat(_RowIndex, Index):
    """Exact (brute-force) search over float32 vectors.

    Parameters
    ----------
    d : int
        Vector dimension.
    metric : {"l2", "ip", "cosine"}, default "l2"
    n_threads : int or None, default None

    Notes
    -----
    Stores an (ntotal, d) float32 matrix and, once they are not the 0..n-1 that :meth:`add`
    assigns, (ntotal,) int64 ids (those are implicit: no bytes); ``code_size = 4 * d``. Always
    trained; :meth:`train` only validates its input. Conversions, metrics and result padding:
    see :mod:`pqkit.indexes.base`.

    Search parameters (``search_parameters``): ``filter`` only (``search`` and
    ``range_search``). A filter is translated to the rows holding its ids, and only allowed
    rows get a distance: a query whose allowed rows are few computes theirs alone, with the
    same kernels, so a filtered search returns the distances an unfiltered one gives those
    rows.

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

    def __init__(self, d, metric="l2", n_threads=None, *, backend=None, device=None):
        super().__init__(d, metric, n_threads, backend, device)
        self._store = _RowStore(self._d, np.float32)

    def _is_trained(self) -> bool:
        return True

    def _code_size(self) -> int:
        return 4 * self._d

    def _train(self, x):
        pass

    def _add(self, x, ids):
        self._store.append(x, ids)

    def _norms(self):
        """The stored rows' squared norms, kept by the store until the rows change: for L2 a
        single query then reads the vectors once instead of twice; for IP the compiled
        engine's fast pass bounds its rounding with them instead of a pass per call."""
        data = self._store.data
        core = self._engine
        if self._device is not None:  # a device engine keeps them on its device
            return self._store.derived(
                "sqnorms", lambda: core.resident(core.sqnorms(data, self._nt())))
        return self._store.derived("sqnorms", lambda: core.sqnorms(data, self._nt()))

    _vectors = _RowIndex._resident_rows

    def _row_selector(self, params):
        """The engine selector of the call's filter over row numbers (the engine searches
        rows; ids map to rows through the store's lookup)."""
        if params.filter is None:
            return None
        selector = params.filter
        if not self._store.ids_are_rows():
            selector = selector._in_rows(self._store.ids, self._store.rows_of)
        return selector._engine(self._engine)

    def _search_view(self):
        """``(rows, squared norms, id of each row with -1 appended)`` as a search reads them, kept
        until the rows change; the ids are None while each id is its row (as ``add`` assigns
        them). One lookup per call: a single query's Python overhead stays small beside faiss's."""
        return self._store.derived("search view", lambda: (
            self._vectors(), self._norms(),
            None if self._store.ids_are_rows() else np.append(self._store.ids, np.int64(-1))))

    def _search(self, x, k, params):
        vectors, norms, ids = self._search_view()
        D, rows = self._engine.flat_search(x, vectors, k, self._core_metric, self._nt(), norms,
                                           self._row_selector(params))
        # row -1 (padding) takes the appended -1
        return D, (rows if ids is None else ids.take(rows))

    def _range_search(self, x, radius, params, cap):
        lims, D, rows = self._engine.flat_range_search(
            x, self._vectors(), radius, self._core_metric, self._nt(), cap, self._norms(),
            self._row_selector(params))
        return lims, D, self._store.ids_at(rows)

    def _reconstruct(self, ids):
        rows = self._store.rows_of(ids)
        found = rows >= 0
        if not found.all():
            self._raise_unknown(ids, found)
        return self._store.data[rows]

    def _rerank_rows(self, x, rows, ids, k):
        """Best ``k`` of each query's candidate ``rows`` (-1: none) by exact distance, reported
        under ``ids`` (IndexRefine's second stage)."""
        return self._engine.rerank(x, self._vectors(), rows, ids, k, self._core_metric, self._nt())

    def _rerank_store(self):
        return ("flat", self._vectors()) if self._store.ids_are_rows() else None

    def _memory_usage_bytes(self) -> int:
        return int(self._store.nbytes())

    def _state_params(self):
        return {"d": self._d, "metric": self._metric}

    def _get_state(self):
        return self._state_params(), {"vectors": self._store.data, "ids": self._store.ids}

    def _exact_vectors(self):
        return self._store.data, self._store.ids

    def _estimate_bytes(self, n):
        return n * 4 * self._d  # the ids add assigns are implicit (0..n-1): not stored

    # ---- index_factory: "Flat"
    _factory_grammar = '"Flat"'
    _factory_pattern = r"Flat"

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        return cls(d, metric, n_threads=n_threads, backend=backend)

    # ---- FAISS: IndexFlat (L2 / IP), also inside an IndexIDMap
    _faiss_names = ("IndexFlat", "IndexFlatL2", "IndexFlatIP")

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        metric = _faiss.metric_from_faiss(faiss, index)
        ids = np.arange(index.ntotal, dtype=np.int64) if ids is None else ids
        _faiss.check_unique_ids(ids)
        vectors = (index.reconstruct_n(0, index.ntotal) if index.ntotal
                   else np.empty((0, index.d), np.float32))
        return cls._from_state({"d": index.d, "metric": metric}, {"vectors": vectors, "ids": ids})

    def _to_faiss(self, faiss, convert):
        metric = _faiss.metric_to_faiss(faiss, self._metric)
        vectors, ids = _faiss.sorted_state(self._get_state()[1], "vectors")

        def fill(out):
            if vectors.shape[0]:
                out.add(np.ascontiguousarray(vectors))

        return _faiss.with_ids(faiss, faiss.IndexFlat(self._d, metric), ids, fill)

    @classmethod
    def _from_state(cls, params, arrays):
        _check_params(params, ("d", "metric"))
        index = cls(params["d"], params["metric"])
        _check_arrays(arrays, {"vectors": (np.float32, (_N, index.d), True),
                               "ids": (np.int64, (_N,), True)})
        ids = arrays["ids"]
        _check_stored_ids(ids)
        _check_stored_vectors(arrays["vectors"], index.metric, "vectors")
        index._restore_rows(arrays["vectors"], ids)
        return index
