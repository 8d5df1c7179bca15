"""IndexScalarQuantizer: exact search over 8-bit scalar-quantized vectors (FAISS
``IndexScalarQuantizer`` with ``QT_8bit``), and the refine store of ``Refine(SQ8)``."""

from __future__ import annotations

import numpy as np

from ..quantizers.scalar import ScalarQuantizer
from ._state import _N, _check_arrays, _check_params, _check_stored_ids
from ._storage import _RowIndex, _RowStore
from .base import Index, _array_difference, _empty_range

__all__ = ["IndexScalarQuantizer"]

#: Floats decoded per block of a search (4 MiB): the codes are decoded a block at a time and
#: each block is searched exactly, so a search never holds more than this of decoded vectors.
BLOCK_FLOATS = 1 << 20


class IndexScalarQuantizer(_RowIndex, Index):
    """Search over vectors stored as one byte per dimension (8-bit scalar quantization).

    Parameters
    ----------
    d : int
        Vector dimension.
    metric : {"l2", "ip", "cosine"}, default "l2"
    n_threads : int or None, default None

    Attributes
    ----------
    sq : pqkit.ScalarQuantizer
        The quantizer: per dimension, 256 levels between the training minimum and maximum.
        :meth:`train` sets them; so does ``index.sq.set_ranges`` before any vector is added.

    Notes
    -----
    Stores ``code_size = d`` bytes per vector (and an int64 id once the ids are not the 0..n-1
    that :meth:`add` assigns, which are implicit): a quarter of
    :class:`pqkit.IndexFlat`. Each value is coded as the nearest of its dimension's levels (see
    :mod:`pqkit.quantizers.scalar`; values outside the training range take the end level), and
    :meth:`reconstruct` returns ``vmin + code * step``. A search returns what
    :class:`pqkit.IndexFlat` returns over those reconstructions, bit for bit: the codes are
    decoded a block of 4 MiB at a time and each block is searched exactly, so its cost is one
    exact search plus one decode of the whole store per call.

    As the refine index of an :class:`pqkit.IndexRefine` (``"...,Refine(SQ8)"``), each
    candidate's distance is computed from its ``d`` bytes decoded in the engine: re-ranking reads
    a quarter of the memory of an IndexFlat refine index, at almost its precision.

    Search parameters (``search_parameters``): ``filter`` only (``search`` and
    ``range_search``).

    Examples
    --------
    >>> import numpy as np, pqkit
    >>> xb = np.random.default_rng(0).standard_normal((1000, 16), dtype=np.float32)
    >>> index = pqkit.IndexScalarQuantizer(16)
    >>> index.train(xb)
    IndexScalarQuantizer(d=16, metric='l2', ntotal=0, is_trained=True)
    >>> index.add(xb)
    >>> D, I = index.search(xb[:3], k=1)
    >>> I[:, 0].tolist(), index.code_size
    ([0, 1, 2], 16)
    """

    def __init__(self, d, metric="l2", n_threads=None, *, backend=None, device=None):
        super().__init__(d, metric, n_threads, backend, device)
        self._sq = ScalarQuantizer(self._d)
        self._sq._attach(self)
        self._store = _RowStore(self._d, np.uint8)

    @property
    def sq(self) -> ScalarQuantizer:
        """The scalar quantizer (its levels are fixed once vectors are stored)."""
        return self._sq

    def _is_trained(self) -> bool:
        return self._sq.is_trained

    def _code_size(self) -> int:
        return self._d

    def _train(self, x):
        self._sq._train_validated(x)

    def _add(self, x, ids):
        self._store.append(self._sq._encode_validated(x), ids)

    def _blocks(self):
        """``(first row, end row)`` of each block a search decodes."""
        n, rows = self._store.n, max(1, BLOCK_FLOATS // self._d)
        return [(r0, min(n, r0 + rows)) for r0 in range(0, n, rows)]

    def _block_selector(self, params, r0, r1):
        """The engine selector of the call's filter over the rows of block ``[r0, r1)``."""
        if params.filter is None:
            return None
        store = self._store

        def rows_of(ids):
            rows = store.rows_of(ids)
            return np.where((rows >= r0) & (rows < r1), rows - r0, -1)

        return params.filter._in_rows(store.ids_at(slice(r0, r1)), rows_of)._engine(self._engine)

    def _decoded(self, r0, r1):
        return self._sq._decode_validated(self._store.data[r0:r1])

    def _search(self, x, k, params):
        parts = []
        for r0, r1 in self._blocks():
            D, rows = self._engine.flat_search(x, self._decoded(r0, r1), k, self._core_metric,
                                               self._nt(), None,
                                               self._block_selector(params, r0, r1))
            parts.append((D, np.where(rows >= 0, rows + r0, -1)))
        if not parts:
            return self._empty_result(x.shape[0], k)
        D, rows = parts[0] if len(parts) == 1 else self._merged(parts, k)
        return D, np.where(rows >= 0, self._store.ids_at(np.maximum(rows, 0)), -1)

    def _merged(self, parts, k):
        """The best ``k`` of the blocks' results. Each block's are in (key, row) order and the
        blocks in row order, so a stable sort by key gives the (key, row) order of one search."""
        D = np.concatenate([p[0] for p in parts], axis=1)
        rows = np.concatenate([p[1] for p in parts], axis=1)
        keys = D if self._core_metric == "l2" else -D
        order = np.argsort(keys, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(D, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def _range_search(self, x, radius, params, cap):
        nq = x.shape[0]
        counts, Ds, rows = [], [], []
        for r0, r1 in self._blocks():
            lims, D, r = self._engine.flat_range_search(
                x, self._decoded(r0, r1), radius, self._core_metric, self._nt(), cap, None,
                self._block_selector(params, r0, r1))
            counts.append(np.diff(np.asarray(lims)))
            Ds.append(np.asarray(D))
            rows.append(np.asarray(r) + r0)
        if not counts:
            return _empty_range(nq)
        total = int(sum(int(c.sum()) for c in counts))
        if total > cap:
            raise ValueError(f"range search found more than max_results = {cap} results; lower "
                             "the radius, search fewer queries at a time, or allow more with "
                             "max_results")
        # the blocks' results, in one search's order: by query, then (key, row)
        D, rows = np.concatenate(Ds), np.concatenate(rows)
        query = np.concatenate([np.repeat(np.arange(nq), c) for c in counts])
        order = np.lexsort((rows, D if self._core_metric == "l2" else -D, query))
        lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.sum(counts, axis=0), out=lims[1:])
        return lims, D[order], self._store.ids_at(rows[order])

    def _reconstruct(self, ids):
        rows = self._store.rows_of(ids)
        found = rows >= 0
        if not found.all():
            self._raise_unknown(ids, found)
        return self._sq._decode_validated(self._store.data[rows])

    def _rerank_rows(self, x, rows, ids, k):
        """Best ``k`` of each query's candidate ``rows`` (-1: none) by the exact distance to
        their decoded codes (the vectors :meth:`reconstruct` returns), reported under ``ids``
        (IndexRefine's second stage)."""
        return self._engine.rerank_sq(x, self._resident_rows(), self._sq.vmin, self._sq.step, rows, ids,
                                      k, self._core_metric, self._nt())

    def _rerank_store(self):
        if not self._store.ids_are_rows():
            return None
        return ("sq8", self._resident_rows(), self._sq.vmin, self._sq.step)

    def _merge_differences(self, other):
        out = super()._merge_differences(other)
        if type(other) is type(self):
            for name in ("vmin", "step"):
                diff = _array_difference(f"sq.{name}", getattr(self._sq, name),
                                         getattr(other._sq, name))
                out += [diff] if diff else []
        return out

    def _memory_usage_bytes(self) -> int:
        levels = 0 if self._sq.vmin is None else 2 * self._sq.vmin.nbytes
        return int(self._store.nbytes()) + levels

    def _state_params(self):
        return {"d": self._d, "metric": self._metric}

    def _get_state(self):
        arrays = {"codes": self._store.data, "ids": self._store.ids}
        if self._sq.is_trained:
            arrays["vmin"], arrays["step"] = self._sq.vmin, self._sq.step
        return self._state_params(), arrays

    def _estimate_bytes(self, n):
        return n * self._d + 8 * self._d  # implicit ids (0..n-1), as add assigns them

    # ---- index_factory: "SQ8"
    _factory_grammar = '"SQ8"'
    _factory_pattern = r"SQ8"

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        return cls(d, metric, n_threads=n_threads, backend=backend)

    @classmethod
    def _from_state(cls, params, arrays):
        _check_params(params, ("d", "metric"))
        index = cls(params["d"], params["metric"])
        d = index.d
        n = _check_arrays(arrays, {"codes": (np.uint8, (_N, d), True),
                                   "ids": (np.int64, (_N,), True),
                                   "vmin": (np.float32, (d,), False),
                                   "step": (np.float32, (d,), False)})
        if ("vmin" in arrays) != ("step" in arrays):
            raise ValueError("a trained IndexScalarQuantizer has both arrays 'vmin' and 'step'; "
                             f"the file has only {'vmin' if 'vmin' in arrays else 'step'!r}")
        if "vmin" in arrays:
            index._sq.set_ranges(arrays["vmin"], arrays["step"])
        elif n:
            raise ValueError("codes present but no levels ('vmin', 'step')")
        ids = arrays["ids"]
        _check_stored_ids(ids)
        index._restore_rows(arrays["codes"], ids)
        return index

