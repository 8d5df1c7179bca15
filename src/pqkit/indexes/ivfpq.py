"""IndexIVFPQ: an inverted file over product-quantized residuals (IVFADC)."""

from __future__ import annotations

import numpy as np

from .. import engine
from .._validation import (check_anisotropic_eta, check_positive_int, check_result_size,
                           check_training_size)
from ..quantizers.pq import ProductQuantizer
from . import _faiss
from ._state import _check_code_padding, verifying
from .base import _engine_override
from .ivf import _IndexIVF
from .params import SearchParams
from .pq import (ANISOTROPIC, _HasProductQuantizer, anisotropic_param, loaded_anisotropic_eta,
                 pq_token)

__all__ = ["IndexIVFPQ"]


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
    anisotropic_eta : float or None, default None
        Score-aware quantization of the residuals for metric "ip" or "cosine" (ValueError for
        "l2"): training and :meth:`add` minimise ``eta * ||r_par||^2 + ||r_perp||^2`` (see
        :class:`pqkit.ProductQuantizer`). The error ``r`` is that of the residual, which equals
        the error of the reconstructed vector ``c_l + x_hat``, and its parallel part is taken
        along the full vector ``x``, not the residual: the score error of a query ``q`` is
        ``<q, r>`` and the queries that matter are those with a high ``<q, x>``. Search is
        unchanged. Saved with the index.
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
    ``l`` is stored as ``pq.encode(x - c_l)``. Training runs coarse k-means (``coarse_niter`` =
    10 iterations; at least ``nlist`` training vectors), then trains the PQ on the training residuals (at least
    ``ksub = 2**nbits`` vectors).

    For L2 the search uses the decomposition

        ||q - c_l - r||^2 = ||q - c_l||^2 + (||r||^2 + 2<c_l, r>) - 2 sum_m <q_m, r_m>

    whose middle term depends only on the stored code and its list: it is kept as one float per
    code (counted by :meth:`memory_usage_bytes`, recomputed when the codebooks change), so a
    query needs one table for all lists. The scan filters codes with a byte-quantized table
    (SIMD integer sums) and gives every code that can still enter the top k its exact float
    distance, so results equal a plain float scan.
    Conversions, metrics and result padding: see :mod:`pqkit.indexes.base`.

    Search parameters (``search_parameters``): ``nprobe``, ``filter`` and ``max_probe`` for
    ``search``; ``nprobe`` and ``filter`` for ``range_search``. A filter's allowed codes of
    each probed list are found from its ids (once per list when a batch of queries probes the
    lists several times over, else per query and list) and ANDed into the scan's pass masks:
    an excluded code is never given an exact distance, and blocks of 64 codes with none
    allowed are skipped. ``max_probe`` (opt-in) lets a query
    with fewer than ``k`` allowed results after ``nprobe`` lists scan the next nearest lists,
    one at a time, up to ``max_probe`` lists. A range search uses the quantized table's filter
    with the radius as its threshold.
    """

    def __init__(self, d, nlist, M, nbits=8, metric="l2", nprobe=1, *, seed=1234,
                 anisotropic_eta=None, n_threads=None, backend=None, device=None):
        backend, device = engine.resolve_engine(*_engine_override(backend, device))
        # The PQ must exist before the base constructor sizes the inverted lists by code_size.
        self._pq = ProductQuantizer(
            check_positive_int(d, "d"), M, nbits, seed=seed, n_threads=n_threads, backend=backend,
            device=device, anisotropic_eta=check_anisotropic_eta(anisotropic_eta),
        )
        super().__init__(d, nlist, metric, nprobe, seed, n_threads, backend, device)
        check_anisotropic_eta(anisotropic_eta, self._metric)
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
        residuals = _residuals(x, self._centroids, self._coarse_assign(x))
        # frames: _train_validated <- _train <- Index.train <- user
        self._pq._train_validated(residuals, stacklevel=4, vectors=x)

    def _encode(self, x, list_nos):
        residuals = _residuals(x, self._centroids, list_nos)
        return self._pq._encode_validated(residuals, vectors=x)

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

    def _loaded_bias(self, stored, rows, list_nos, first=0):
        """The bias to keep for loaded codes: the stored one, checked bit for bit against the
        bias the codes give when the load verifies (then that one is kept)."""
        if not self._with_bias():
            return None
        self._bias_version = self._versions()
        if not verifying():
            return stored
        computed = self._engine.ivfpq_code_bias(rows, list_nos, self._core_coarse(),
                                                self._pq._core(), self._nt())
        differ = np.flatnonzero(computed.view(np.uint32) != stored.view(np.uint32))
        if differ.size:
            i = int(differ[0])
            raise ValueError(f"stored bias of code {first + i} ({float(stored[i])!r}) differs from "
                             f"the bias its code, list centroid and codebooks give "
                             f"({float(computed[i])!r})")
        return computed

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

    def _search(self, x, k, params=SearchParams(), estimates=False):
        nprobe, max_probe = self._probe_args(params)
        return self._engine.ivfpq_search(
            x, self._core_coarse(), self._pq._core(), self._invlists, nprobe, k,
            self._core_metric, self._nt(), estimates, max_probe, self._engine_selector(params))

    def _search_candidates(self, x, k, params):
        # Ranked by the byte-quantized table's integer estimates (nbits 4 and 8 in the compiled
        # engine): no exact ADC sums, since the re-ranking computes exact distances anyway. The
        # Numba engine ranks by exact keys.
        return self._search(x, k, params, estimates=True)

    def _search_reranked(self, x, n_candidates, k, params, store):
        # The compiled engine's one call: the candidates of _search_candidates, re-ranked over
        # the refine store without returning to Python between the stages.
        fused = getattr(self._engine, "ivfpq_search_rerank", None)
        if fused is None:
            return None
        nprobe, max_probe = self._probe_args(params)
        check_result_size(x.shape[0], n_candidates)
        with self._lock.read():
            return fused(x, self._core_coarse(), self._pq._core(), self._invlists, nprobe, n_candidates, k,
                         self._core_metric, self._nt(), max_probe, self._engine_selector(params), store)

    def _range_search(self, x, radius, params, cap):
        nprobe, _ = self._probe_args(params)
        return self._engine.ivfpq_range_search(
            x, self._core_coarse(), self._pq._core(), self._invlists, nprobe, radius,
            self._core_metric, self._nt(), cap, self._engine_selector(params))

    def _memory_usage_bytes(self) -> int:
        total = int(self._invlists.memory_usage_bytes()) + self._lists_overhead()
        for array in (self._centroids, self._pq.codebooks):
            if array is not None:
                total += array.nbytes
        return total

    def _state_params(self):
        return {"d": self._d, "nlist": self._nlist, "M": self._pq.M, "nbits": self._pq.nbits,
                "metric": self._metric, "nprobe": self._nprobe, "seed": self._seed,
                **anisotropic_param(self._pq)}

    def _get_state(self):
        params = self._state_params()
        arrays = self._invlists_state()
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        if self._pq.codebooks is not None:
            arrays["codebooks"] = self._pq.codebooks
        return params, arrays

    def _estimate_bytes(self, n):
        pq = self._pq
        return super()._estimate_bytes(n) + 4 * pq.M * pq.ksub * pq.dsub

    # ---- index_factory: "IVF{nlist},PQ{M}[x{nbits}]"
    _factory_grammar = '"IVF{nlist},PQ{M}" | "IVF{nlist},PQ{M}x{nbits}"'
    _factory_pattern = r"IVF(?P<nlist>[0-9]+),PQ(?P<M>[0-9]+)(?:x(?P<nbits>[0-9]+))?"

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        M, nbits = pq_token(match)
        return cls(d, cls._nlist_token(match), M, nbits, metric, n_threads=n_threads,
                   backend=backend)

    # ---- FAISS: IndexIVFPQ with by_residual, without polysemous search
    _faiss_names = ("IndexIVFPQ",)

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        params, centroids = cls._ivf_params_from_faiss(faiss, index, ids)
        if not index.by_residual:
            raise _faiss.unsupported("IndexIVFPQ with by_residual=False (pqkit always encodes "
                                     "residuals)")
        # Polysemous *training* only permutes the codebook entries (codes stay plain PQ codes);
        # polysemous *search* (a Hamming threshold) changes the results.
        if index.polysemous_ht != 0:
            raise _faiss.unsupported(f"IndexIVFPQ with polysemous search (polysemous_ht="
                                     f"{index.polysemous_ht}; set it to 0)")
        pq = index.pq
        arrays = _faiss.invlists_arrays(faiss, index, pq.code_size)
        _faiss.check_unique_ids(arrays["ids"])
        arrays["centroids"] = centroids
        arrays["codebooks"] = _faiss.pq_codebooks(faiss, pq)
        params.update(M=pq.M, nbits=pq.nbits)
        return cls._from_state(params, arrays)

    def _to_faiss(self, faiss, convert):
        metric = _faiss.metric_to_faiss(faiss, self._metric)
        quantizer = _faiss.flat_quantizer(faiss, self._centroids, metric)
        pq = self._pq
        out = faiss.IndexIVFPQ(quantizer, self._d, self._nlist, pq.M, pq.nbits, metric)
        faiss.copy_array_to_vector(pq.codebooks.ravel(), out.pq.centroids)
        out.by_residual = True
        out.is_trained = True
        out.precompute_table()
        self._fill_faiss(faiss, out)
        return out

    def _array_spec(self, n_blocks=None):
        pq = self._pq
        return {**super()._array_spec(n_blocks),
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
            params["nprobe"], optional=(ANISOTROPIC,),
            anisotropic_eta=loaded_anisotropic_eta(params))
        index._load_state(arrays)
        return index


_RESIDUAL_BLOCK_ROWS = 65536


def _residuals(x, centroids, list_nos):
    """``x - centroids[list_nos]`` a block of rows at a time: the same float32 differences
    without a gathered copy of the centroids as large as ``x`` (a million 1280-d training
    vectors would need 4.9 GB more)."""
    out = np.empty_like(x)
    for start in range(0, x.shape[0], _RESIDUAL_BLOCK_ROWS):
        stop = start + _RESIDUAL_BLOCK_ROWS
        np.subtract(x[start:stop], centroids[list_nos[start:stop]], out=out[start:stop])
    return out
