"""IndexIVFFlat: an inverted file over exact float32 vectors."""

from __future__ import annotations

import numpy as np

from .._validation import check_training_size
from . import _faiss
from ._state import _check_stored_vectors
from .ivf import _IndexIVF

__all__ = ["IndexIVFFlat"]


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
    Training runs k-means (``coarse_niter`` = 10 iterations, as FAISS) on the training vectors,
    which must number at least ``nlist``. Each list stores the raw float32 bytes of its vectors (``code_size = 4 * d``)
    and their int64 ids. Distances are exact, but only the ``nprobe`` nearest lists are
    scanned. Conversions, metrics and result padding: see :mod:`pqkit.indexes.base`.

    Search parameters (``search_parameters``): ``nprobe``, ``filter`` and ``max_probe`` for
    ``search``; ``nprobe`` and ``filter`` for ``range_search``. A filter skips the vectors of
    excluded ids before their distance is computed (a list with few allowed vectors computes
    only theirs). ``max_probe`` (opt-in) lets a query with fewer than ``k`` allowed results
    after ``nprobe`` lists scan the next nearest lists, one at a time, up to ``max_probe``.
    """

    _layout = "rows"

    def __init__(self, d, nlist, metric="l2", nprobe=1, *, seed=1234, n_threads=None,
                 backend=None, device=None):
        super().__init__(d, nlist, metric, nprobe, seed, n_threads, backend, device)

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

    def _search(self, x, k, params):
        nprobe, max_probe = self._probe_args(params)
        return self._engine.ivfflat_search(
            x, self._core_coarse(), self._invlists, nprobe, k, self._core_metric, self._nt(),
            max_probe, self._engine_selector(params))

    def _range_search(self, x, radius, params, cap):
        nprobe, _ = self._probe_args(params)
        return self._engine.ivfflat_range_search(
            x, self._core_coarse(), self._invlists, nprobe, radius, self._core_metric, self._nt(),
            cap, self._engine_selector(params))

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

    def _exact_vectors(self):
        _, ids, codes = self._invlists.export()
        return np.asarray(codes).view(np.float32).reshape(-1, self._d), ids

    # ---- index_factory: "IVF{nlist},Flat"
    _factory_grammar = '"IVF{nlist},Flat"'
    _factory_pattern = r"IVF(?P<nlist>[0-9]+),Flat"

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        return cls(d, cls._nlist_token(match), metric, n_threads=n_threads, backend=backend)

    # ---- FAISS: IndexIVFFlat
    _faiss_names = ("IndexIVFFlat",)

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        params, centroids = cls._ivf_params_from_faiss(faiss, index, ids)
        arrays = _faiss.invlists_arrays(faiss, index, 4 * index.d)
        arrays["centroids"] = centroids
        _faiss.check_unique_ids(arrays["ids"])
        return cls._from_state(params, arrays)

    def _to_faiss(self, faiss, convert):
        metric = _faiss.metric_to_faiss(faiss, self._metric)
        quantizer = _faiss.flat_quantizer(faiss, self._centroids, metric)
        out = faiss.IndexIVFFlat(quantizer, self._d, self._nlist, metric)
        out.is_trained = True
        self._fill_faiss(faiss, out)
        return out

    def _check_codes(self, codes):
        _check_stored_vectors(codes.view(np.float32), self._metric, "vectors")

    @classmethod
    def _from_state(cls, params, arrays):
        index = cls._construct_for_load(
            params, arrays, ("d", "nlist", "metric", "nprobe", "seed"),
            params["d"], params["nlist"], params["metric"], params["nprobe"])
        index._load_state(arrays)
        return index
