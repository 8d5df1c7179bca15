"""The inverted-file base shared by IndexIVFFlat and IndexIVFPQ: coarse centroids, the engine's
inverted lists, probing, and what their files, FAISS conversion and memory model share."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._validation import (check_fits_in_memory, check_float_array, check_int, check_max_probe,
                           check_nprobe, check_positive_int)
from ..quantizers.kmeans import KMeans
from . import _faiss
from ._state import (
    _N,
    _check_arrays,
    _check_list_sizes,
    _check_load_memory,
    _check_params,
    _check_stored_ids,
)
from ._storage import _ListStore, list_bytes
from .base import Index

__all__ = []

#: Bookkeeping of one empty inverted list in the engines (vector headers for codes, ids, bias).
_BYTES_PER_EMPTY_LIST = 80


class _IndexIVF(_ListStore, Index):
    """Shared inverted-file logic: coarse k-means centroids + the engine's ``InvertedLists``.

    A vector is stored in the list of its nearest centroid (``coarse_assign``, with the index's
    metric: L2, or inner product for ip/cosine); a search probes the ``nprobe`` lists whose
    centroids are nearest the query.
    """

    search_parameters = ("nprobe", "filter", "max_probe")

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
        self._nprobe = check_nprobe(value, self._nlist)

    def _check_search_params(self, nq, given):
        params = super()._check_search_params(nq, given)
        nprobe = None if "nprobe" not in given else check_nprobe(given["nprobe"], self._nlist)
        max_probe = None
        if "max_probe" in given:
            max_probe = check_max_probe(given["max_probe"], self._nlist,
                                        self._nprobe if nprobe is None else nprobe)
        return replace(params, nprobe=nprobe, max_probe=max_probe)

    def _probe_args(self, params) -> tuple:
        """(nprobe, max_probe) of a call: its own values or the index's nprobe (0: no widening)."""
        return (self._nprobe if params.nprobe is None else params.nprobe,
                0 if params.max_probe is None else params.max_probe)

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

    def _estimate_bytes(self, n):
        blocked = self._layout == "blocked"
        # Lists of equal size (the expected value for balanced k-means lists).
        base, extra = divmod(n, self._nlist)
        lists = (extra * list_bytes(base + 1, self.code_size, blocked, self._with_bias())
                 + (self._nlist - extra) * list_bytes(base, self.code_size, blocked, self._with_bias()))
        return lists + 4 * self._nlist * self._d + self._lists_overhead()

    # ---- index_factory and FAISS: what the IVF types share
    @staticmethod
    def _nlist_token(match) -> int:
        return check_positive_int(int(match.group("nlist")), "nlist")

    @classmethod
    def _ivf_params_from_faiss(cls, faiss, index, ids) -> tuple:
        """(params, centroids) common to the IVF types: metric, nlist, nprobe, coarse centroids."""
        if ids is not None:
            raise _faiss.unsupported(f"IndexIDMap over {type(index).__name__}")
        metric = _faiss.metric_from_faiss(faiss, index)
        params = {"d": index.d, "nlist": index.nlist, "metric": metric,
                  "nprobe": max(1, min(int(index.nprobe), index.nlist)), "seed": 1234}
        centroids = _faiss.coarse_centroids(faiss, index, metric)
        return params, centroids

    def _fill_faiss(self, faiss, out) -> None:
        """Copy the lists into the FAISS IVF index ``out`` (trained, empty) and set nprobe."""
        _, arrays = self._get_state()
        sizes, ids, codes = arrays["list_sizes"], arrays["ids"], arrays["codes"]
        start = 0
        for list_no, size in enumerate(sizes.tolist()):
            if size:
                list_ids = np.ascontiguousarray(ids[start:start + size])
                list_codes = np.ascontiguousarray(codes[start:start + size])
                out.invlists.add_entries(list_no, size, faiss.swig_ptr(list_ids),
                                         faiss.swig_ptr(list_codes))
            start += size
        out.ntotal = int(ids.size)
        out.nprobe = self._nprobe

    def _encode(self, x: np.ndarray, list_nos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, codes: np.ndarray, list_nos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{self._name()}(d={self._d}, nlist={self._nlist}, metric={self._metric!r}, "
            f"nprobe={self._nprobe}, ntotal={self.ntotal}, is_trained={self.is_trained})"
        )
