"""IndexPQ: approximate search over product-quantized codes (ADC, no inverted file), and what
the PQ indexes share (the quantizer attached to its index)."""

from __future__ import annotations

import contextlib

import numpy as np

from .._validation import check_anisotropic_eta, check_n_threads, check_positive_int
from ..quantizers.pq import ProductQuantizer
from . import _faiss
from ._state import (
    _N,
    _check_arrays,
    _check_block_padding,
    _check_code_padding,
    _check_params,
    _check_stored_ids,
    all_blocked_rows,
    rows_to_blocks,
    state_form,
    verifying,
)
from ._storage import _ids_are_rows, _ListStore, _rows_of, list_bytes
from .base import MAX_ID, Index, _array_difference

__all__ = ["IndexPQ"]


def pq_token(match) -> tuple:
    """``(M, nbits)`` of a matched ``PQ{M}[x{nbits}]`` factory token (nbits defaults to 8)."""
    M = check_positive_int(int(match.group("M")), "M (in PQ{M})")
    return M, 8 if match.group("nbits") is None else int(match.group("nbits"))


ANISOTROPIC = "anisotropic_eta"


def anisotropic_param(pq) -> dict:
    """The saved ``anisotropic_eta`` parameter: written only when set, so that plain PQ files
    stay as they were (and older pqkit versions read them)."""
    return {} if pq.anisotropic_eta is None else {ANISOTROPIC: pq.anisotropic_eta}


def loaded_anisotropic_eta(params: dict):
    """``anisotropic_eta`` of saved parameters: absent means plain PQ; present, it must be a
    number (the writer never writes None)."""
    if ANISOTROPIC not in params:
        return None
    eta = params[ANISOTROPIC]
    if eta is None:
        raise ValueError("parameter 'anisotropic_eta' is null; a file of plain PQ omits it")
    return eta


class _HasProductQuantizer:
    """Shared by the PQ indexes: the ``pq`` attribute, thread-count propagation to it, and
    codebook changes made through it (``index.pq.set_codebooks``, ``index.pq.train``), which run
    under the index's write lock (the quantizer is attached to its index)."""

    @contextlib.contextmanager
    def _changing_codebooks(self):
        self._check_writable("pq codebooks")
        with self._lock.write():
            yield
            self._codebooks_changed()

    def _codebooks_changed(self) -> None:
        """Update data derived from the codebooks (called under the write lock)."""
        self._row_cache = {}

    def _merge_differences(self, other) -> list:
        out = super()._merge_differences(other)
        if type(other) is type(self):
            mine, theirs = self._pq, other._pq
            pairs = (("M", mine.M, theirs.M), ("nbits", mine.nbits, theirs.nbits))
            shape = [f"{name} (this {a}, other {b})" for name, a, b in pairs if a != b]
            codebooks = None if shape else _array_difference("codebooks", mine.codebooks,
                                                             theirs.codebooks)
            out += shape + ([codebooks] if codebooks else [])
        return out

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
    anisotropic_eta : float or None, default None
        Score-aware quantization for metric "ip" or "cosine" (ValueError for "l2"): training and
        :meth:`add` minimise ``eta * ||r_par||^2 + ||r_perp||^2`` instead of the squared error
        (see :class:`pqkit.ProductQuantizer` and :mod:`pqkit.quantizers.anisotropic`). Search
        is unchanged. Saved with the index.
    n_threads : int or None, default None

    Attributes
    ----------
    pq : ProductQuantizer
        The quantizer; its codebooks can be set directly (``index.pq.set_codebooks``) instead of
        training. Changing codebooks does not re-encode vectors already added.

    Notes
    -----
    Stores code_size bytes and one int64 id per vector (codes in the engine's blocked layout).
    Search computes one ADC table per query (see :mod:`pqkit.quantizers.pq`) and scans all codes: a
    byte-quantized copy of the table filters the codes with SIMD integer sums, and every code
    that can still enter the top k gets its exact float ADC distance, so results equal a plain
    float ADC scan. Conversions, metrics and result
    padding: see :mod:`pqkit.indexes.base`.

    Search parameters (``search_parameters``): ``filter`` only (``search`` and
    ``range_search``). The filter's mask of allowed codes is ANDed into the scan's pass masks:
    an excluded code never gets an exact distance, and blocks of 64 codes with none allowed
    are not scanned.
    """

    def __init__(self, d, M, nbits=8, metric="l2", *, seed=1234, anisotropic_eta=None,
                 n_threads=None, backend=None, device=None):
        super().__init__(d, metric, n_threads, backend, device)
        self._pq = ProductQuantizer(self._d, M, nbits, seed=seed, n_threads=n_threads,
                                    backend=self._backend, device=self._device,
                                    anisotropic_eta=check_anisotropic_eta(anisotropic_eta,
                                                                          self._metric))
        self._pq._attach(self)
        self._invlists = self._engine.InvertedLists(1, self._pq.code_size, "blocked")
        self._max_id = -1
        self._rows_layout = False  # codes kept as rows (an IndexRefine's refine index), not blocked
        self._row_cache = {}  # id -> row lookups and the blocked copy, replaced (not edited) by every change
        self._file_arrays = None  # mapped: the file's arrays that the read-only list views

    def _is_trained(self) -> bool:
        return self._pq.is_trained

    def _code_size(self) -> int:
        return self._pq.code_size

    def _train(self, x):
        self._pq._train_validated(x, stacklevel=4)

    def _add(self, x, ids):
        codes = self._pq._encode_validated(x)
        self._store_codes(np.zeros(ids.size, dtype=np.int64), ids, codes)

    def _decode(self, codes, list_nos):
        return self._engine.pq_decode(codes, self._pq._core(), self._nt())

    def _scanned_lists(self):
        """The lists the scans read: the store, or a blocked copy of a rows-layout store, built
        on first use."""
        if self._rows_layout:
            return self._derived("blocked", lambda: self._copy_codes("blocked"))
        return self._invlists

    def _search(self, x, k, params):
        return self._engine.pq_search(x, self._pq._core(), self._scanned_lists(), k,
                                      self._core_metric, self._nt(), self._engine_selector(params))

    def _range_search(self, x, radius, params, cap):
        return self._engine.pq_range_search(x, self._pq._core(), self._scanned_lists(), radius,
                                            self._core_metric, self._nt(), cap,
                                            self._engine_selector(params))

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
        if not self._rows_layout and self._file_arrays is None:  # a mapped index keeps its blocks
            self._invlists = self._copy_codes("rows")
            self._rows_layout = True
            self._row_cache = {}

    _prepare_for_reranking = _keep_codes_as_rows  # as an IndexRefine's refine index

    def _stored_ids(self):
        return self._derived("ids", lambda: np.asarray(self._invlists.list_ids(0)))

    def _rows_of(self, ids, unchecked=False):
        """Offset of each id among the stored codes, -1 where absent (IndexRefine's re-ranking)."""
        return _rows_of(self._stored_ids(), ids, self._derived, unchecked)

    def _rerank_store(self):
        stored = self._stored_ids()
        if not self._derived("ids are row numbers", lambda: _ids_are_rows(stored)):
            return None
        return ("pq", self._pq._core(), self._invlists)

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
                "seed": self._pq.seed, **anisotropic_param(self._pq)}

    def _get_state(self):
        params = self._state_params()
        if not state_form().blocked:
            _, ids, codes = self._invlists.export()
        elif self._file_arrays is not None:  # a mapped index: the file's own arrays, not copied
            ids, codes = self._file_arrays["ids"], self._file_arrays["codes"]
        elif self._rows_layout:
            _, ids, rows = self._invlists.export()
            codes = rows_to_blocks(rows, np.array([ids.size], dtype=np.int64))
        else:
            _, ids, codes, _ = self._invlists.export_blocked()
        arrays = {"codes": codes, "ids": ids}
        if self._pq.codebooks is not None:
            arrays["codebooks"] = self._pq.codebooks
        return params, arrays

    def _estimate_bytes(self, n):
        pq = self._pq
        # an IndexRefine's PQ refine index keeps its codes as rows
        return list_bytes(n, pq.code_size, not self._rows_layout, False) + 4 * pq.M * pq.ksub * pq.dsub

    # ---- index_factory: "PQ{M}" or "PQ{M}x{nbits}"
    _factory_grammar = '"PQ{M}" | "PQ{M}x{nbits}"'
    _factory_pattern = r"PQ(?P<M>[0-9]+)(?:x(?P<nbits>[0-9]+))?"

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        M, nbits = pq_token(match)
        return cls(d, M, nbits, metric, n_threads=n_threads, backend=backend)

    # ---- FAISS: IndexPQ (plain ADC search), also inside an IndexIDMap
    _faiss_names = ("IndexPQ",)

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        metric = _faiss.metric_from_faiss(faiss, index)
        if index.search_type != faiss.IndexPQ.ST_PQ:
            raise _faiss.unsupported(f"IndexPQ with search_type {index.search_type} (polysemous or "
                                     "Hamming search; only ST_PQ)")
        pq = index.pq
        ids = np.arange(index.ntotal, dtype=np.int64) if ids is None else ids
        _faiss.check_unique_ids(ids)
        codes = _faiss.vector(faiss, index.codes).reshape(index.ntotal, pq.code_size)
        return cls._from_state(
            {"d": index.d, "metric": metric, "M": pq.M, "nbits": pq.nbits, "seed": 1234},
            {"codes": codes, "ids": ids, "codebooks": _faiss.pq_codebooks(faiss, pq)})

    def _to_faiss(self, faiss, convert):
        metric = _faiss.metric_to_faiss(faiss, self._metric)
        pq = self._pq
        out = faiss.IndexPQ(self._d, pq.M, pq.nbits, metric)
        faiss.copy_array_to_vector(pq.codebooks.ravel(), out.pq.centroids)
        out.is_trained = True
        codes, ids = _faiss.sorted_state(self._get_state()[1], "codes")

        def fill(out):
            faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), out.codes)
            out.ntotal = int(ids.size)

        return _faiss.with_ids(faiss, out, ids, fill)

    @classmethod
    def _from_state(cls, params, arrays):
        _check_params(params, ("d", "metric", "M", "nbits", "seed"), optional=(ANISOTROPIC,))
        index = cls(params["d"], params["M"], params["nbits"], params["metric"],
                    seed=params["seed"], anisotropic_eta=loaded_anisotropic_eta(params))
        pq = index.pq
        blocked = state_form().blocked  # the file form: codes in whole 64-code blocks
        ids = arrays.get("ids")
        if blocked and not (isinstance(ids, np.ndarray) and ids.ndim == 1):
            raise ValueError(f"array 'ids' must be 1-D, got {getattr(ids, 'shape', None)}")
        code_shape = ((-(-ids.shape[0] // 64), pq.code_size, 64) if blocked else (_N, pq.code_size))
        n = _check_arrays(arrays, {"codes": (np.uint8, code_shape, True),
                                   "ids": (np.int64, (_N,), True),
                                   "codebooks": (np.float32, (pq.M, pq.ksub, pq.dsub), False)})
        codes = arrays["codes"]
        _check_stored_ids(ids)
        _check_code_padding(codes, pq.M, pq.nbits)
        sizes = np.array([n], dtype=np.int64)
        starts = np.array([0, codes.shape[0]], dtype=np.int64)
        if blocked:
            _check_block_padding(codes, sizes, starts)
        if "codebooks" in arrays:
            pq.set_codebooks(arrays["codebooks"])
        elif n:
            raise ValueError("codes present but no codebooks")
        if state_form().mapped:  # read-only lists over the file's arrays
            index._file_arrays = {"codes": codes, "ids": ids}
            index._invlists = index._engine.external_lists(1, pq.code_size, "blocked", sizes, ids,
                                                           codes.reshape(-1))
            index._max_id = (int(ids.max()) if verifying() else MAX_ID) if n else -1
            return index
        if blocked:
            codes, _ = all_blocked_rows(codes, sizes, starts)
        index._store_codes(np.zeros(n, dtype=np.int64), ids, codes)
        return index
