"""The inverted-file base shared by IndexIVFFlat and IndexIVFPQ: coarse centroids, the engine's
inverted lists, probing, and what their files, FAISS conversion and memory model share."""

from __future__ import annotations


import numpy as np

from .._validation import (check_fits_in_memory, check_float_array, check_int, check_max_probe,
                           check_nprobe, check_positive_int)
from ..quantizers.kmeans import KMeans
from . import _faiss
from ._state import (
    _N,
    _check_arrays,
    _check_block_padding,
    _check_list_sizes,
    _check_load_memory,
    _check_params,
    _check_shape,
    _check_stored_ids,
    all_blocked_rows,
    block_starts,
    blocked_rows,
    state_form,
    verifying,
)
from ._storage import _ListStore, list_bytes
from .base import MAX_ID, Index, _array_difference

__all__ = []

#: Bookkeeping of one empty inverted list in the engines (vector headers for codes, ids, bias).
_BYTES_PER_EMPTY_LIST = 80
#: Codes whose stored bias a verifying mapped load recomputes at a time (bounded memory).
_BIAS_CHUNK = 1 << 18


class _IndexIVF(_ListStore, Index):
    """Shared inverted-file logic: coarse k-means centroids + the engine's ``InvertedLists``.

    A vector is stored in the list of its nearest centroid (``coarse_assign``, with the index's
    metric: L2, or inner product for ip/cosine); a search probes the ``nprobe`` lists whose
    centroids are nearest the query.
    """

    search_parameters = ("nprobe", "filter", "max_probe")

    def __init__(self, d, nlist, metric, nprobe, seed, n_threads, backend, device=None):
        super().__init__(d, metric, n_threads, backend, device)
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
        self._file_arrays = None  # mapped: the file's arrays that the read-only lists view

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

    def _checked_values(self, nq, given):
        values = super()._checked_values(nq, given)
        if "nprobe" in given:
            values["nprobe"] = check_nprobe(given["nprobe"], self._nlist)
        if "max_probe" in given:
            values["max_probe"] = check_max_probe(given["max_probe"], self._nlist,
                                                  values.get("nprobe", self._nprobe))
        return values

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
        self._check_writable("set_centroids()")
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

    def _merge_differences(self, other) -> list:
        out = super()._merge_differences(other)
        if type(other) is type(self):
            if self._nlist != other._nlist:
                out.append(f"nlist (this {self._nlist}, other {other._nlist})")
            else:
                centroids = _array_difference("centroids", self._centroids, other._centroids)
                out += [centroids] if centroids else []
        return out

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
                        backend=self._backend, device=self._device)
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

    def _blocked_file_form(self) -> bool:
        """Whether this save or load lays the codes out in blocks (blocked lists, file form)."""
        return self._layout == "blocked" and state_form().blocked

    def _invlists_state(self) -> dict:
        """list_sizes, ids, codes (rows, or blocks in the file form) and, in the file form of an
        index with a bias, the bias."""
        if self._file_arrays is not None and (self._layout == "rows" or state_form().blocked):
            return dict(self._file_arrays)  # a mapped index: the file's own arrays, not copied
        if self._blocked_file_form():
            sizes, ids, blocks, bias = self._invlists.export_blocked()
            arrays = {"list_sizes": np.asarray(sizes, dtype=np.int64), "ids": ids, "codes": blocks}
            if bias is not None:
                arrays["bias"] = bias
            return arrays
        sizes, ids, codes = self._invlists.export()
        return {"list_sizes": np.asarray(sizes, dtype=np.int64), "ids": ids, "codes": codes}

    @classmethod
    def _construct_for_load(cls, params: dict, arrays: dict, names, *args, optional=(),
                            **options):
        """The empty index a file describes, its parameters and the memory of its ``nlist``
        lists checked against the file first (a hostile header may claim any ``nlist``);
        ``optional``: parameter names a file may omit, ``options``: keyword arguments of the
        constructor."""
        _check_params(params, names, optional)
        nlist = check_positive_int(params["nlist"], "nlist")
        _check_load_memory(nlist * _BYTES_PER_EMPTY_LIST, arrays, f"nlist={nlist} inverted lists")
        return cls(*args, seed=params["seed"], **options)

    def _array_spec(self, n_blocks=None) -> dict:
        """What ``_get_state`` writes: name -> (dtype, shape, required); ``n_blocks``: the codes
        are blocks (the file form of blocked lists), with a bias when the lists keep one."""
        spec = {"list_sizes": (np.int64, (self._nlist,), True), "ids": (np.int64, (_N,), True),
                "codes": (np.uint8, (_N, self.code_size), True),
                "centroids": (np.float32, (self._nlist, self._d), False)}
        if n_blocks is not None:
            spec["codes"] = (np.uint8, (n_blocks, self.code_size, 64), True)
            if self._with_bias():
                spec["bias"] = (np.float32, (_N,), True)
        return spec

    def _load_state(self, arrays: dict) -> None:
        """Fill an empty index from checked arrays (``_check_codes`` checks codes per type); a
        mapped load makes read-only lists over the arrays instead of copying them."""
        starts = None
        if self._blocked_file_form():
            # The sizes first: they give the number of blocks the codes must have.
            sizes, ids = arrays.get("list_sizes"), arrays.get("ids")
            for name, arr, dtype in (("list_sizes", sizes, np.int64), ("ids", ids, np.int64)):
                if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                    raise ValueError(f"array {name!r} is missing or not {np.dtype(dtype)}")
            _check_shape(sizes, (self._nlist,), "list_sizes")
            if ids.ndim != 1:
                raise ValueError(f"array 'ids' has shape {ids.shape}, expected (n,)")
            _check_list_sizes(sizes, ids.shape[0])
            starts = block_starts(sizes)
        n = _check_arrays(arrays, self._array_spec(None if starts is None else int(starts[-1])))
        sizes, ids, codes = arrays["list_sizes"], arrays["ids"], arrays["codes"]
        _check_list_sizes(sizes, n)
        _check_stored_ids(ids)
        self._check_codes(codes)
        if starts is not None:
            _check_block_padding(codes, sizes, starts)
        if "centroids" in arrays:
            self.set_centroids(arrays["centroids"])
        elif n:
            raise ValueError("vectors present but no centroids")
        self._load_trained(arrays, n)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        if state_form().mapped:
            self._map_lists(arrays, n)
        elif n and starts is not None:
            rows, list_nos = all_blocked_rows(codes, sizes, starts)
            bias = self._loaded_bias(arrays.get("bias"), rows, list_nos)
            self._store_codes(list_nos, ids, rows, bias)
        elif n:
            list_nos = np.repeat(np.arange(self._nlist, dtype=np.int64), sizes)
            self._store_codes(list_nos, ids, codes, self._code_bias(codes, list_nos))
        if starts is not None and state_form().mapped and "bias" in arrays and verifying():
            # The stored bias must be what the codes give (recomputed in bounded chunks).
            for begin in range(0, n, _BIAS_CHUNK):
                end = min(n, begin + _BIAS_CHUNK)
                rows, list_nos = blocked_rows(codes, offsets, starts, begin, end)
                self._loaded_bias(arrays["bias"][begin:end], rows, list_nos, begin)

    def _map_lists(self, arrays: dict, n: int) -> None:
        """Read-only engine lists over the (mapped) arrays, which the index keeps."""
        names = ("list_sizes", "ids", "codes", "bias")
        self._file_arrays = {name: arrays[name] for name in names if name in arrays}
        codes = arrays["codes"]
        self._invlists = self._engine.external_lists(
            self._nlist, self.code_size, self._layout, arrays["list_sizes"], arrays["ids"],
            codes.reshape(-1), arrays.get("bias"))
        # An upper bound of the ids; reading them all would defeat the mapping when not verifying.
        ids = arrays["ids"]
        self._max_id = (int(ids.max()) if verifying() else MAX_ID) if n else -1
        self._bias_version = self._versions()
        self._row_cache = {}

    def _versions(self):
        return (self._centroids_version,)

    def _loaded_bias(self, stored, rows, list_nos, first=0):
        """The bias to keep for loaded codes (IVF-PQ under L2; None here)."""
        return None

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
