"""Nearest-neighbour backends for the PatchCore memory bank, behind one interface.

Every backend has

- ``fit(bank)``: build (and train, for the quantised ones) on a float32 (n, d) memory bank;
- ``search(queries, k) -> (D, I)``: float32 **squared** L2 distances and int64 ids, (nq, k),
  nearest first (pqkit's result convention, held for every backend);
- ``reconstruct(ids) -> (len(ids), d)`` float32: the memory-bank vectors as the backend stores
  them (decoded codes for PQ backends), used by the image-score reweighting;
- ``memory_bytes()``: bytes the searchable bank occupies;
- ``save(path)`` / ``Backend.load(path)``: one file, saved all-or-nothing (after a crash the file
  holds the old or the new bank; a file of another type is never replaced). Its name inside a
  saved model is the class attribute ``file_name``.

Sizes left as ``"auto"`` (the default of ``nlist``, ``m``, ``nbits`` and ``nprobe``) are chosen
from the memory bank at ``fit`` (:func:`auto_params`), so that every trained centroid has at
least 39 training vectors and pqkit emits no ``TrainingWarning``; after ``fit`` the backend's
``params`` hold the numbers chosen. A ``TrainingWarning`` reaches the caller only when the user
chose ``nlist`` or ``nbits`` (the numbers that decide how many centroids are trained).

Backends (``BACKENDS``): ``pqkit_flat`` (:class:`pqkit.IndexFlat`, exact), ``pqkit_pq``
(:class:`pqkit.IndexPQ`), ``pqkit_ivfpq`` (:class:`pqkit.IndexIVFPQ`), ``pqkit_ivfpq_refine``
(:class:`pqkit.IndexRefine` over it: exact or finer PQ distances for the candidates), ``exact_knn``
(scikit-learn ``NearestNeighbors``, the seed's baseline), ``torch_cdist`` (``torch.cdist`` and
``topk``, anomalib's search), ``faiss_flat`` (patchcore-inspection's default), ``faiss_ivfpq`` and
``faiss_ivfpq_refine`` (faiss, an optional baseline; imported only when used).
"""

from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np

from .. import _atomic
from .._validation import MIN_POINTS_PER_CENTROID, as_float_matrix, check_int, check_k, check_positive_int
from ..indexes.refine import check_k_factor

__all__ = ["AUTO", "BACKENDS", "Backend", "auto_params", "make_backend"]

#: The value of a size parameter chosen from the memory bank at fit time.
AUTO = "auto"
#: Size parameters that may be AUTO, and those that decide how many centroids are trained.
SIZE_PARAMS = ("nlist", "m", "nbits", "nprobe")
_CENTROID_PARAMS = ("nlist", "nbits")


def auto_m(d: int) -> int:
    """PQ sub-quantizers for dimension ``d``: the divisor of d nearest to d / 4 (4 dimensions per
    sub-quantizer; the larger on a tie), at most 64."""
    divisors = [m for m in range(1, min(d, 64) + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - d / 4), -m))


def auto_params(n: int, d: int, params: dict) -> dict:
    """``params`` with every ``"auto"`` size replaced by the number chosen for ``n`` bank vectors of
    dimension ``d``.

    The rule (pqkit trains well with at least 39 vectors per centroid):

    - ``nlist = round(sqrt(n))``, at most ``n // 39``, at least 1;
    - ``m``: the divisor of ``d`` nearest to ``d / 4``, at most 64 (:func:`auto_m`);
    - ``nbits = 8`` when ``n >= 39 * 256`` (9,984 vectors), else 4 when ``n >= 39 * 16`` (624),
      else the largest ``b >= 1`` with ``n >= 39 * 2**b`` (1 below 78 vectors);
    - ``nprobe``: an eighth of the lists, at least 8, at most ``nlist``.

    Parameters
    ----------
    n, d : int
        Memory-bank size and dimension.
    params : dict
        Backend parameters; keys of :data:`SIZE_PARAMS` may be ``"auto"``.

    Returns
    -------
    dict
        A copy with numbers in place of ``"auto"``. An explicit ``nprobe`` above the number of
        lists is lowered to it, with a UserWarning.

    Examples
    --------
    >>> auto_params(2800, 128, {"nlist": "auto", "m": "auto", "nbits": "auto", "nprobe": "auto"})
    {'nlist': 53, 'm': 32, 'nbits': 4, 'nprobe': 8}
    """
    out = dict(params)
    per = MIN_POINTS_PER_CENTROID
    if out.get("nlist") == AUTO:
        out["nlist"] = max(1, min(int(round(math.sqrt(n))), n // per))
    if out.get("m") == AUTO:
        out["m"] = auto_m(d)
    if out.get("nbits") == AUTO:
        out["nbits"] = 8 if n >= per * 256 else 4 if n >= per * 16 else max(1, int(math.log2(max(n, 1) / per)))
    if out.get("nprobe") == AUTO:
        out["nprobe"] = min(out["nlist"], max(8, int(round(out["nlist"] / 8))))
    elif "nprobe" in out and "nlist" in out and out["nprobe"] > out["nlist"]:
        warnings.warn(f"nprobe={out['nprobe']} is more than the {out['nlist']} lists of a memory bank of {n} "
                      f"vectors; searching all {out['nlist']} lists", UserWarning, stacklevel=3)
        out["nprobe"] = out["nlist"]
    return out


def _check_size_params(params: dict) -> None:
    for name in SIZE_PARAMS:
        value = params.get(name)
        if name in params and value != AUTO and not (
                isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1 or 'auto', got {value!r}")


class Backend:
    """Interface of a memory-bank search backend (see the module docstring)."""

    name = "backend"
    #: name of the memory-bank file inside a saved model folder
    file_name = "memory_bank.bin"

    def __init__(self, **params):
        _check_size_params(params)
        self.params = params
        self.requested_params = dict(params)
        self.d_ = None
        self.n_threads = None

    def fit(self, bank) -> "Backend":
        """Build the index on a float32 (n, d) memory bank; ``"auto"`` sizes are chosen from it
        (:func:`auto_params`) and kept in ``params``."""
        bank = as_float_matrix(bank, name="memory bank")
        if bank.shape[0] == 0:
            raise ValueError("memory bank is empty; fit needs at least one vector")
        self.params = auto_params(bank.shape[0], bank.shape[1], self.requested_params)
        self.d_ = bank.shape[1]
        chosen = [name for name in _CENTROID_PARAMS if self.requested_params.get(name) not in (None, AUTO)]
        if chosen or not any(name in self.requested_params for name in _CENTROID_PARAMS):
            self._fit(bank)
        else:
            # the sizes were chosen for this bank: below 78 vectors no size meets 39 per centroid,
            # and that is no choice of the user's to warn about
            from .._validation import TrainingWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TrainingWarning)
                self._fit(bank)
        return self

    def _check_fitted(self):
        if self.d_ is None:
            raise ValueError(f"{self.name} backend is not fitted; call fit(memory_bank) first")

    def search(self, queries, k: int = 1):
        """Return (D float32 squared L2 (nq, k), I int64 (nq, k))."""
        self._check_fitted()
        queries = as_float_matrix(queries, self.d_, name="queries")
        k = check_k(k)
        distances, ids = self._search(queries, k)
        return np.ascontiguousarray(distances, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)

    def reconstruct(self, ids) -> np.ndarray:
        self._check_fitted()
        return np.ascontiguousarray(self._reconstruct(np.asarray(ids, dtype=np.int64).reshape(-1)),
                                    dtype=np.float32)

    def set_num_threads(self, n_threads: int) -> None:
        """Threads used by ``search`` (every backend honours it, for fair timings)."""
        self.n_threads = check_positive_int(n_threads, "n_threads")

    def describe(self) -> dict:
        return {"backend": self.name, **self.params}

    def save(self, path) -> None:
        """Write the fitted backend to the file ``path``, all-or-nothing.

        A save is all-or-nothing: after a crash the target holds the old or the new bank; it never
        deletes anything it did not write. An existing file is replaced only when it is a file of
        this backend's type (as ``Index.save`` replaces a pqkit index file) or empty.

        Raises
        ------
        pqkit._atomic.ArtifactExistsError
            ``path`` exists and is not a file of this backend's type (nothing was changed).
        """
        self._check_fitted()
        _atomic.save_file(path, self._save, is_own=self._is_own_file, what=f"{self.name} memory bank file")

    def _save(self, path) -> None:
        """Create the file ``path`` (which does not exist) holding the fitted bank."""
        raise NotImplementedError

    def _is_own_file(self, path) -> bool:
        raise NotImplementedError

    @classmethod
    def load(cls, path, name: str, params: dict) -> "Backend":
        backend = make_backend(name, **params)
        backend._load(os.fspath(path))
        return backend


class _PqkitBackend(Backend):
    file_name = "memory_bank.pqkit"
    #: The torch device the bank lives on (the torch engine), or None for the default engine;
    #: set by :meth:`to_device`. Not saved: a saved bank loads on any engine.
    device = None

    def _make(self, d):
        raise NotImplementedError

    def _fit(self, bank):
        index = self._make(bank.shape[1])
        if self.device is not None:  # trained and filled on the device
            index = index.to("torch", device=self.device)
        if not index.is_trained:
            index.train(bank)
        index.add(bank)
        self.index = index

    def to_device(self, device) -> "_PqkitBackend":
        """Keep the bank on the torch engine of ``device`` ("cuda", "cpu", ...), or on the default
        engine (None); a fitted bank moves without retraining (:meth:`pqkit.Index.to`).
        ``search`` then also takes torch tensors of queries on that device, which stay there."""
        from .. import engine

        if device is not None:
            device = engine.resolve_device("torch", device)
        self.device = device
        if getattr(self, "index", None) is not None:
            self.index = (self.index.to("torch", device=device) if device is not None
                          else self.index.to(engine.get_backend()))
        return self

    def search_on_device(self, queries, k: int = 1):
        """Like :meth:`search` for a torch tensor of queries on the bank's device: the queries
        are validated and searched there; only ``(D, I)`` come back (NumPy)."""
        self._check_fitted()
        k = check_k(k)
        if self.n_threads is not None:
            self.index.n_threads = self.n_threads
        return self.index.search(queries, k)

    def _search(self, queries, k):
        if self.n_threads is not None:
            self.index.n_threads = self.n_threads
        return self.index.search(queries, k)

    def _reconstruct(self, ids):
        return self.index.reconstruct_n(ids)

    def memory_bytes(self) -> int:
        self._check_fitted()
        return int(self.index.memory_usage_bytes())

    def save(self, path) -> None:
        """Write the fitted backend to ``path`` with ``Index.save`` (all-or-nothing; replaces only a
        pqkit index file)."""
        self._check_fitted()
        self.index.save(path)

    def _save(self, path):
        self.index.save(path)

    def _load(self, path):
        import pqkit

        self.index = pqkit.load(path)
        self.d_ = self.index.d
        self._after_load()


    def _after_load(self):
        pass


class PqkitFlat(_PqkitBackend):
    """Exact search with :class:`pqkit.IndexFlat`."""

    name = "pqkit_flat"

    def __init__(self):
        super().__init__()

    def _make(self, d):
        import pqkit

        return pqkit.IndexFlat(d)


class PqkitPQ(_PqkitBackend):
    """:class:`pqkit.IndexPQ` (exhaustive scan of PQ codes). Parameters: ``m``, ``nbits`` (int or
    ``"auto"``, the default)."""

    name = "pqkit_pq"

    def __init__(self, m=AUTO, nbits=AUTO, seed: int = 1234):
        super().__init__(m=m, nbits=nbits, seed=seed)

    def _make(self, d):
        import pqkit

        return pqkit.IndexPQ(d, self.params["m"], self.params["nbits"], seed=self.params["seed"])


class PqkitIVFPQ(_PqkitBackend):
    """:class:`pqkit.IndexIVFPQ`. Parameters: ``nlist``, ``m``, ``nbits``, ``nprobe`` (each an int or
    ``"auto"``, the default: :func:`auto_params`)."""

    name = "pqkit_ivfpq"

    def __init__(self, nlist=AUTO, m=AUTO, nbits=AUTO, nprobe=AUTO, seed: int = 1234):
        super().__init__(nlist=nlist, m=m, nbits=nbits, nprobe=nprobe, seed=seed)

    def _make(self, d):
        import pqkit

        p = self.params
        return pqkit.IndexIVFPQ(d, p["nlist"], p["m"], p["nbits"], nprobe=p["nprobe"], seed=p["seed"])

    def set_nprobe(self, nprobe: int) -> None:
        self.params["nprobe"] = nprobe
        self.index.nprobe = nprobe

    def _after_load(self):
        self.index.nprobe = self.params["nprobe"]


class _RefineParams:
    """The IVF-PQ parameters plus ``k_factor`` (candidates per result re-ranked) and ``refine_m``:
    0 re-ranks with the exact bank vectors, a positive value with 8-bit PQ codes of ``refine_m``
    sub-quantizers (``refine_m`` bytes per vector instead of ``4 * d``)."""

    def __init__(self, nlist=AUTO, m=AUTO, nbits=AUTO, nprobe=AUTO, k_factor: float = 4.0,
                 seed: int = 1234, refine_m: int = 0):
        refine_m = check_int(refine_m, "refine_m", minimum=0)
        Backend.__init__(self, nlist=nlist, m=m, nbits=nbits, nprobe=nprobe, k_factor=check_k_factor(k_factor),
                         seed=seed, refine_m=refine_m)


class PqkitIVFPQRefine(_RefineParams, PqkitIVFPQ):
    """:class:`pqkit.IndexRefine` over :class:`pqkit.IndexIVFPQ`: ``ceil(k * k_factor)`` candidates
    from the codes, re-ranked with the exact bank vectors (``refine_m = 0``: the distances
    returned are exact, and the bank is kept in full beside the codes) or with finer 8-bit PQ
    codes (``refine_m > 0``, a :class:`pqkit.IndexPQ` refine index: ``refine_m`` bytes per vector).
    Parameters as :class:`PqkitIVFPQ` plus ``k_factor`` and ``refine_m``."""

    name = "pqkit_ivfpq_refine"

    def _make(self, d):
        import pqkit

        p = self.params
        refine = pqkit.IndexPQ(d, p["refine_m"], 8, seed=p["seed"]) if p["refine_m"] else None
        return pqkit.IndexRefine(PqkitIVFPQ._make(self, d), p["k_factor"], refine)


class _NpyBank:
    """A backend whose searchable bank is the float32 matrix itself, saved as one ``.npy`` file."""

    file_name = "memory_bank.npy"

    def _reconstruct(self, ids):
        return self.bank_[ids]

    def _save(self, path):
        with _atomic.create_file(path) as handle:
            np.save(handle, self.bank_, allow_pickle=False)

    def _is_own_file(self, path) -> bool:
        return _atomic.file_starts_with(path, b"\x93NUMPY")

    def _load(self, path):
        with open(path, "rb") as handle:
            bank = np.load(handle, allow_pickle=False)
        self.fit(bank)


class SklearnNN(_NpyBank, Backend):
    """scikit-learn ``NearestNeighbors`` (exact). Parameter: ``algorithm`` (default "auto", which
    is brute force for d > 15)."""

    name = "exact_knn"

    def __init__(self, algorithm: str = "auto"):
        super().__init__(algorithm=algorithm)

    def _fit(self, bank):
        from sklearn.neighbors import NearestNeighbors

        self.bank_ = bank
        self.nn_ = NearestNeighbors(n_neighbors=1, algorithm=self.params["algorithm"], n_jobs=self.n_threads)
        self.nn_.fit(bank)

    def _search(self, queries, k):
        if self.n_threads is not None:
            self.nn_.n_jobs = self.n_threads
        k_eff = min(k, self.bank_.shape[0])
        distances, ids = self.nn_.kneighbors(queries, n_neighbors=k_eff)
        distances = np.square(distances, dtype=np.float64)
        if k_eff < k:
            pad = k - k_eff
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return distances, ids

    def memory_bytes(self) -> int:
        self._check_fitted()
        extra = 0
        tree = getattr(self.nn_, "_tree", None)
        if tree is not None:
            extra = sum(a.nbytes for a in tree.get_arrays() if isinstance(a, np.ndarray)) - self.bank_.nbytes
        return int(self.bank_.nbytes + max(extra, 0))



class TorchCdist(_NpyBank, Backend):
    """Brute force with ``torch.cdist`` and ``topk`` (exact), as anomalib's PatchCore searches its
    memory bank: a baseline that PatchCore users already have. The bank stays a float32 tensor on
    the CPU; queries are processed in blocks so that one block's distance matrix stays near 64 MiB.
    """

    name = "torch_cdist"
    _BLOCK_VALUES = 1 << 24

    def __init__(self):
        super().__init__()

    def _fit(self, bank):
        from ..vision.features import _torch

        torch = _torch()
        self.bank_ = bank
        self.tensor_ = torch.from_numpy(bank)

    def _search(self, queries, k):
        from ..vision.features import _torch

        torch = _torch()
        n_bank = self.bank_.shape[0]
        k_eff = min(k, n_bank)
        distances = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
        ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        block = max(1, self._BLOCK_VALUES // n_bank)
        threads = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(self.n_threads)
        try:
            with torch.no_grad():
                for start in range(0, queries.shape[0], block):
                    q = torch.from_numpy(queries[start:start + block])
                    values, found = torch.topk(torch.cdist(q, self.tensor_), k_eff, dim=1, largest=False)
                    distances[start:start + block, :k_eff] = np.square(values.numpy())
                    ids[start:start + block, :k_eff] = found.numpy()
        finally:
            torch.set_num_threads(threads)
        return distances, ids

    def memory_bytes(self) -> int:
        self._check_fitted()
        return int(self.bank_.nbytes)



def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("faiss backends need faiss: pip install faiss-cpu (an optional baseline, "
                          "not a pqkit dependency)") from exc
    return faiss


class _FaissBackend(Backend):
    file_name = "memory_bank.faiss"

    def _search(self, queries, k):
        faiss = _faiss()
        if self.n_threads is not None:
            faiss.omp_set_num_threads(self.n_threads)
        return self.index.search(queries, k)

    def _reconstruct(self, ids):
        return np.stack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else np.empty((0, self.d_))

    def memory_bytes(self) -> int:
        """Size of the serialised index: codes, ids, centroids and codebooks."""
        self._check_fitted()
        return int(_faiss().serialize_index(self.index).nbytes)

    def _save(self, path):
        _faiss().write_index(self.index, os.fspath(path))

    def _is_own_file(self, path) -> bool:
        # a faiss index file starts with its four-character type code: "IxF2", "IwPQ", "IxRF", ...
        with open(path, "rb") as handle:
            return re.fullmatch(rb"I[0-9A-Za-z]{3}", handle.read(4)) is not None

    def _load(self, path):
        self.index = _faiss().read_index(path)
        self.d_ = self.index.d
        self._after_load()

    def _after_load(self):
        pass


class FaissFlat(_FaissBackend):
    """faiss ``IndexFlatL2`` (exact)."""

    name = "faiss_flat"

    def __init__(self):
        super().__init__()

    def _fit(self, bank):
        faiss = _faiss()
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)


class FaissIVFPQ(_FaissBackend):
    """faiss ``IndexIVFPQ`` (by-residual, like pqkit's). Parameters as :class:`PqkitIVFPQ`."""

    name = "faiss_ivfpq"

    def __init__(self, nlist=AUTO, m=AUTO, nbits=AUTO, nprobe=AUTO, seed: int = 1234):
        super().__init__(nlist=nlist, m=m, nbits=nbits, nprobe=nprobe, seed=seed)

    def _trained_ivfpq(self, bank):
        """A trained, empty faiss IndexIVFPQ of the parameters, at their nprobe."""
        faiss = _faiss()
        p = self.params
        self._quantizer = faiss.IndexFlatL2(bank.shape[1])  # kept alive with the index
        index = faiss.IndexIVFPQ(self._quantizer, bank.shape[1], p["nlist"], p["m"], p["nbits"])
        index.cp.seed = p["seed"]
        index.pq.cp.seed = p["seed"]
        index.train(bank)
        index.nprobe = p["nprobe"]
        return index

    def _fit(self, bank):
        index = self._trained_ivfpq(bank)
        index.add(bank)
        index.make_direct_map()
        self.index = index

    def set_nprobe(self, nprobe: int) -> None:
        self.params["nprobe"] = nprobe
        self.index.nprobe = nprobe

    def _after_load(self):
        self.index.nprobe = self.params["nprobe"]
        self.index.make_direct_map()


class FaissIVFPQRefine(_RefineParams, FaissIVFPQ):
    """faiss ``IndexRefineFlat`` (``refine_m = 0``) or ``IndexRefine`` with an 8-bit ``IndexPQ`` of
    ``refine_m`` sub-quantizers, over ``IndexIVFPQ``: the counterpart of :class:`PqkitIVFPQRefine`.
    Parameters as :class:`FaissIVFPQ` plus ``k_factor`` and ``refine_m``."""

    name = "faiss_ivfpq_refine"

    def _fit(self, bank):
        faiss = _faiss()
        p = self.params
        self._base = self._trained_ivfpq(bank)  # kept alive with the index
        if p["refine_m"]:
            self._refine = faiss.IndexPQ(bank.shape[1], p["refine_m"], 8)
            self._refine.pq.cp.seed = p["seed"]
            self._refine.train(bank)
            index = faiss.IndexRefine(self._base, self._refine)
        else:
            index = faiss.IndexRefineFlat(self._base)  # the base must be empty: both parts get the vectors
        index.k_factor = float(p["k_factor"])
        index.add(bank)
        self.index = index

    def set_nprobe(self, nprobe: int) -> None:
        self.params["nprobe"] = nprobe
        self._base.nprobe = nprobe

    def _after_load(self):
        self._base = _faiss().downcast_index(self.index.base_index)
        self._base.nprobe = self.params["nprobe"]
        self.index.k_factor = float(self.params["k_factor"])


BACKENDS = {cls.name: cls for cls in (PqkitFlat, PqkitPQ, PqkitIVFPQ, PqkitIVFPQRefine, SklearnNN, TorchCdist,
                                      FaissFlat, FaissIVFPQ, FaissIVFPQRefine)}


def make_backend(name: str, **params) -> Backend:
    """Construct a backend by name with its parameters (see ``BACKENDS``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    try:
        return BACKENDS[name](**params)
    except TypeError as exc:
        raise TypeError(f"bad parameters for backend {name!r}: {exc}") from None

