"""Product quantizer.

Jégou, Douze, Schmid, "Product quantization for nearest neighbor search", IEEE TPAMI 33(1), 2011.

A vector ``x`` of dimension ``d`` is split into ``M`` sub-vectors ``x_m`` of dimension
``dsub = d / M``; each is replaced by the index of its nearest centroid in the sub-codebook
``C_m`` (``ksub = 2**nbits`` centroids, trained by k-means on the m-th sub-vectors). The code of
``x`` is the M indices, bit-packed little-endian into ``code_size = ceil(M * nbits / 8)`` bytes:
index ``m`` occupies bits ``[m * nbits, (m + 1) * nbits)`` (the FAISS layout, so codes are
interchangeable with ``faiss.ProductQuantizer`` given the same codebooks).

Asymmetric distance computation (ADC): for a query ``q`` the distance to an encoded vector with
indices ``(i_1, ..., i_M)`` is ``sum_m T[m, i_m]`` with the distance table
``T[m, j] = ||q_m - C_m[j]||^2`` (L2) or ``<q_m, C_m[j]>`` (inner product).
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from .. import _threads, engine
from . import anisotropic
from .._validation import (
    as_float_matrix,
    check_anisotropic_eta,
    check_codes,
    check_float_array,
    check_int,
    check_metric,
    check_n_threads,
    check_positive_int,
    check_trained,
    check_training_size,
    normalize_rows,
    warn_few_training_points,
)

__all__ = ["ProductQuantizer"]


class ProductQuantizer:
    """Product quantizer: M sub-codebooks of 2**nbits centroids each.

    Parameters
    ----------
    d : int
        Vector dimension; must be divisible by ``M``.
    M : int
        Number of sub-quantizers (sub-vectors per vector).
    nbits : int, default 8
        Bits per sub-quantizer index, 1..16; ``ksub = 2**nbits`` centroids per sub-codebook.
    niter : int, default 25
        k-means iterations per sub-quantizer.
    seed : int, default 1234
        Seed of the sub-quantizer k-means (initialisation and subsampling).
    max_points_per_centroid : int, default 256
        Each sub-quantizer trains on at most ``max_points_per_centroid * ksub`` points.
    n_threads : int or None, default None
        Worker threads; None uses :func:`pqkit.get_num_threads`.
    backend : {"cpp", "numba", "torch"} or None, default None
        Engine; None uses :func:`pqkit.get_backend`. All give the same codes, tables and
        decodings for the same codebooks (the torch engine up to float near-ties); trained
        codebooks differ (see :mod:`pqkit.engine`).
    device : str or None, default None
        The torch engine's device (see :class:`pqkit.KMeans`); the prepared codebooks live
        there.
    anisotropic_eta : float or None, default None
        None: plain PQ (codebooks by k-means, codes by nearest centroid). A number ``eta > 1``:
        score-aware quantization for inner-product search (Guo et al., ICML 2020, the
        quantizer of ScaNN): training and encoding minimise
        ``eta * ||r_par||^2 + ||r_perp||^2``, the error ``r = x - x_hat`` split along and across
        ``x``. ``pqkit.anisotropic_eta(d, threshold)`` derives it from a score threshold (3.8
        for d=50 and threshold 0.2). Training refines the k-means codebooks
        (``anisotropic.TRAIN_ITERATIONS`` alternations) and :meth:`encode` uses coordinate
        descent over the sub-quantizers; see :mod:`pqkit.quantizers.anisotropic`. Codes keep
        the plain PQ layout, and decoding and distance tables are unchanged.

    Attributes
    ----------
    d, M, nbits : int
    ksub : int
        ``2**nbits``.
    dsub : int
        ``d // M``.
    code_size : int
        Bytes per code, ``ceil(M * nbits / 8)``.
    codebooks : numpy.ndarray of float32, shape (M, ksub, dsub), or None
        None until trained or set with :meth:`set_codebooks`.
    anisotropic_eta : float or None
    is_trained : bool

    Examples
    --------
    >>> import numpy as np, pqkit
    >>> x = np.random.default_rng(0).standard_normal((5000, 16), dtype=np.float32)
    >>> pq = pqkit.ProductQuantizer(d=16, M=4, nbits=6).train(x)
    >>> codes = pq.encode(x[:3])
    >>> codes.dtype, codes.shape
    (dtype('uint8'), (3, 3))
    >>> pq.decode(codes).shape
    (3, 16)
    """

    def __init__(self, d, M, nbits=8, niter=25, seed=1234, max_points_per_centroid=256,
                 n_threads=None, *, backend=None, device=None, anisotropic_eta=None):
        self.d = check_positive_int(d, "d")
        self.M = check_positive_int(M, "M")
        if self.d % self.M != 0:
            # Listing the divisors costs O(d): only for plausible dimensions (a hostile file
            # may claim any d).
            hint = (f"valid M for this d: {[m for m in range(1, self.d + 1) if self.d % m == 0]}"
                    if self.d <= 1 << 16 else "choose an M that divides d")
            raise ValueError(
                f"d={self.d} must be divisible by M={self.M} (each sub-vector has d/M dimensions); "
                f"{hint}"
            )
        self.nbits = check_int(nbits, "nbits", minimum=1, maximum=16)
        self.niter = check_positive_int(niter, "niter")
        self.seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        self.max_points_per_centroid = check_positive_int(
            max_points_per_centroid, "max_points_per_centroid"
        )
        self.n_threads = check_n_threads(n_threads)
        self.backend, self.device = engine.resolve_engine(backend, device)
        self.anisotropic_eta = check_anisotropic_eta(anisotropic_eta)
        self.ksub = 1 << self.nbits
        self.dsub = self.d // self.M
        self.code_size = (self.M * self.nbits + 7) // 8
        self.codebooks = None
        # Incremented whenever the codebooks change, so that owners can invalidate caches
        # derived from them (e.g. the IVF-PQ per-code bias).
        self._codebooks_version = 0
        self._prepared = None  # (codebooks array, engine's PQCodebooks) built from it
        self._owner = None  # weak reference to the index this quantizer belongs to, if any

    @property
    def is_trained(self) -> bool:
        """True once codebooks exist (trained or set)."""
        return self.codebooks is not None

    def _nt(self) -> int:
        return _threads.resolve(self.n_threads)

    @property
    def _engine(self):
        return engine.core(self.backend, getattr(self, "device", None))

    def train(self, x) -> "ProductQuantizer":
        """Train the M sub-codebooks by k-means on the sub-vectors.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            At least ``ksub`` vectors; converted to float32 (see :mod:`pqkit.indexes.base`). Fewer than
            ``39 * ksub`` emits :class:`pqkit.TrainingWarning`.

        Returns
        -------
        self : ProductQuantizer
        """
        x = as_float_matrix(x, self.d)
        with self._changing_codebooks():
            self._train_validated(x, stacklevel=3)
        return self

    def _attach(self, owner) -> None:
        """Make ``owner`` (an index) the guardian of the codebooks: :meth:`train` and
        :meth:`set_codebooks` then run under its write lock, so no search of the owner ever sees
        a half-made change, and the owner updates what it derives from the codebooks."""
        self._owner = weakref.ref(owner)

    def _changing_codebooks(self):
        """Context of a codebook change: the owner's write lock and update hook, if owned."""
        owner = None if self._owner is None else self._owner()
        return contextlib.nullcontext() if owner is None else owner._changing_codebooks()

    def _train_validated(self, x: np.ndarray, stacklevel: int, vectors=None) -> None:
        """Train on an already validated float32 matrix (``stacklevel`` counted from here).

        ``vectors`` (float32, shape of ``x``): the full vectors whose direction the anisotropic
        loss uses when ``x`` holds residuals (IVF-PQ); None: ``x`` itself."""
        what = f"product quantizer (M={self.M}, nbits={self.nbits}, ksub={self.ksub})"
        check_training_size(x.shape[0], self.ksub, what, "ksub = 2**nbits per sub-quantizer")
        warn_few_training_points(x.shape[0], self.ksub, what, stacklevel=stacklevel)
        codebooks = self._engine.pq_train(
            x, self.M, self.nbits, self.niter, self.seed, self.max_points_per_centroid, self._nt()
        )
        codebooks = np.asarray(codebooks, dtype=np.float32)
        if self.anisotropic_eta is not None:
            codebooks = self._train_anisotropic(codebooks, x, x if vectors is None else vectors)
        self.codebooks = codebooks
        self.codebooks.setflags(write=False)
        self._codebooks_version += 1

    def _train_anisotropic(self, codebooks, targets, vectors):
        """Refine k-means codebooks for the anisotropic loss (on at most
        ``max_points_per_centroid * ksub`` training vectors, a seeded subsample)."""
        cap = self.max_points_per_centroid * self.ksub
        if targets.shape[0] > cap:
            rows = np.sort(np.random.default_rng(self.seed).choice(targets.shape[0], cap,
                                                                   replace=False))
            targets, vectors = targets[rows], vectors[rows]
        directions = anisotropic.unit_directions(vectors)
        for _ in range(anisotropic.TRAIN_ITERATIONS):
            prepared = self._engine.PQCodebooks(codebooks, self.nbits)
            indices = anisotropic.encode_indices(self._engine, prepared, targets, directions,
                                                 self.anisotropic_eta, self.M, self.ksub,
                                                 self._nt())
            codebooks = anisotropic.update_codebooks(codebooks, indices, targets, directions,
                                                     self.anisotropic_eta)
        return codebooks

    def _encode_validated(self, x: np.ndarray, vectors=None) -> np.ndarray:
        """Codes of an already validated float32 matrix: nearest centroids, or the anisotropic
        encoding (``vectors``: the full vectors of residuals ``x``, as in
        :meth:`_train_validated`)."""
        if self.anisotropic_eta is None:
            return self._engine.pq_encode(x, self._core(), self._nt())
        directions = anisotropic.unit_directions(x if vectors is None else vectors)
        indices = anisotropic.encode_indices(self._engine, self._core(), x, directions,
                                             self.anisotropic_eta, self.M, self.ksub, self._nt())
        return self._engine.pq_pack_codes(indices, self.nbits)

    def set_codebooks(self, codebooks) -> "ProductQuantizer":
        """Use given codebooks instead of training (e.g. copied from FAISS).

        Parameters
        ----------
        codebooks : array_like of float, shape (M, ksub, dsub)
            Copied and converted to float32. For FAISS:
            ``faiss.vector_to_array(pq.centroids).reshape(M, ksub, dsub)``. Values must be
            finite and within the magnitude bound of d-dimensional vectors (see
            :mod:`pqkit.indexes.base`'s conventions).

        Returns
        -------
        self : ProductQuantizer

        Notes
        -----
        For the quantizer of an index (``index.pq``) the change, like :meth:`train`, waits for
        running searches of that index and runs alone; the index then updates what it derives
        from the codebooks (IVF-PQ's per-code bias). Stored codes are not re-encoded.
        """
        codebooks = check_float_array(
            codebooks, (self.M, self.ksub, self.dsub), "codebooks", d=self.d
        )
        codebooks.setflags(write=False)
        with self._changing_codebooks():
            self.codebooks = codebooks
            self._codebooks_version += 1
        return self

    def _core(self):
        """The engine's prepared copy of the codebooks (transposed, with norms), built once per
        codebooks array. The array is read-only, so in-place edits cannot leave it stale."""
        prepared, codebooks = self._prepared, self.codebooks  # one read each: thread-safe
        if prepared is None or prepared[0] is not codebooks:
            prepared = (codebooks, self._engine.PQCodebooks(codebooks, self.nbits))
            self._prepared = prepared
        return prepared[1]

    def encode(self, x):
        """Encode vectors.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see :mod:`pqkit.indexes.base`).

        Returns
        -------
        codes : numpy.ndarray of uint8, shape (n, code_size)
            Bit-packed nearest-centroid indices (layout in the module docstring), or with
            ``anisotropic_eta`` the indices minimising the anisotropic loss (the same for every
            engine and thread count).
        """
        check_trained(self.is_trained, "ProductQuantizer")
        x = as_float_matrix(x, self.d)
        return self._encode_validated(x)

    def decode(self, codes):
        """Reconstruct vectors from codes.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, code_size)
            Not converted: must be uint8.

        Returns
        -------
        x : numpy.ndarray of float32, shape (n, d)
            Concatenation of the selected centroid of every sub-codebook.
        """
        check_trained(self.is_trained, "ProductQuantizer")
        codes = check_codes(codes, self.code_size)
        return self._engine.pq_decode(codes, self._core(), self._nt())

    def distance_table(self, x, metric="l2"):
        """ADC distance tables of query vectors.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see :mod:`pqkit.indexes.base`).
        metric : {"l2", "ip", "cosine"}, default "l2"
            "l2": ``T[i, m, j] = ||x_i,m - C_m[j]||^2``; "ip": ``<x_i,m, C_m[j]>``; "cosine": rows
            of ``x`` are L2-normalised first, then "ip".

        Returns
        -------
        tables : numpy.ndarray of float32, shape (n, M, ksub)
            The ADC distance of ``x_i`` to a code ``(j_1..j_M)`` is ``sum_m T[i, m, j_m]``.
        """
        check_trained(self.is_trained, "ProductQuantizer")
        metric = check_metric(metric)
        x = as_float_matrix(x, self.d)
        if metric == "cosine":
            x = normalize_rows(x)
        core_metric = "l2" if metric == "l2" else "ip"
        return self._engine.pq_distance_tables(x, self._core(), core_metric, self._nt())

    def unpack_codes(self, codes):
        """Split packed codes into per-sub-quantizer indices.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, code_size)

        Returns
        -------
        indices : numpy.ndarray of int32, shape (n, M)
            Values in ``[0, ksub)``.
        """
        codes = check_codes(codes, self.code_size)
        return self._engine.pq_unpack_codes(codes, self.M, self.nbits)

    def pack_codes(self, indices):
        """Bit-pack per-sub-quantizer indices into codes (inverse of :meth:`unpack_codes`).

        Parameters
        ----------
        indices : array_like of integer dtype, shape (n, M)
            Values in ``[0, ksub)``; any integer dtype (bool/float raise TypeError).

        Returns
        -------
        codes : numpy.ndarray of uint8, shape (n, code_size)
        """
        arr = np.asarray(indices)
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"indices must be an integer array, got dtype {arr.dtype}; pass the int32 array "
                "returned by unpack_codes()"
            )
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.M:
            raise ValueError(
                f"indices must have shape (n, {self.M}) (one index per sub-quantizer), got "
                f"{np.shape(indices)}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.ksub):
            raise ValueError(
                f"indices must lie in [0, {self.ksub}) (ksub = 2**nbits with nbits={self.nbits}), "
                f"got values in [{int(arr.min())}, {int(arr.max())}]"
            )
        return self._engine.pq_pack_codes(np.ascontiguousarray(arr, dtype=np.int32), self.nbits)

    def __getstate__(self):
        # The engine's prepared copy is rebuilt on demand (it cannot be pickled or copied).
        state = self.__dict__.copy()
        state["_prepared"] = None
        state["_owner"] = None  # a copy belongs to no index
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("_owner", None)
        self.__dict__.setdefault("anisotropic_eta", None)
        if "backend" not in state:  # pickled before engines were selectable
            self.backend = engine.get_backend()
        if self.codebooks is not None:
            self.codebooks.setflags(write=False)

    def __repr__(self) -> str:
        return (
            f"ProductQuantizer(d={self.d}, M={self.M}, nbits={self.nbits}, "
            f"code_size={self.code_size}, "
            + ("" if self.anisotropic_eta is None else f"anisotropic_eta={self.anisotropic_eta}, ")
            + f"is_trained={self.is_trained})"
        )
