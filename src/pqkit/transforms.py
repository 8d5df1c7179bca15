"""Learned linear pre-transforms (PCA, OPQ) and the :class:`IndexPreTransform` wrapper.

A linear transform maps a vector ``x`` (``d_in``) to ``y = A x + b`` (``d_out``), with ``A`` of
shape ``(d_out, d_in)`` and ``b`` of shape ``(d_out,)`` (the convention of FAISS
``LinearTransform``, so matrices move between the two unchanged). :class:`IndexPreTransform`
applies one transform before every ``train``, ``add`` and ``search`` of the index it wraps;
wrappers nest for chains (``IndexPreTransform(pca, IndexPreTransform(opq, ivfpq))``).

References
----------
PCA: eigen decomposition of the covariance matrix, as FAISS ``PCAMatrix`` (``eigen_power=-0.5``
whitens). OPQ: T. Ge, K. He, Q. Ke, J. Sun, "Optimized Product Quantization", IEEE TPAMI 36(4),
2014, non-parametric version: alternately train the product quantizer on the rotated data and
solve the orthogonal Procrustes problem for the rotation (as FAISS ``OPQMatrix`` and nanopq's
``OPQ``).
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _threads, engine
from ._validation import (
    TrainingWarning,
    as_float_matrix,
    check_float_array,
    check_int,
    check_positive_int,
    check_trained,
    check_training_size,
    max_abs_value,
)
from .quantizers.pq import ProductQuantizer

__all__ = ["LinearTransform", "OPQ", "OPQMatrix", "PCA", "PCAMatrix"]


class LinearTransform:
    """A linear transform ``y = A x + b``; base class of :class:`PCA` and :class:`OPQ`.

    Used directly, it holds a given matrix (``set_matrix``), e.g. a FAISS
    ``RandomRotationMatrix`` converted by :func:`pqkit.from_faiss`; it cannot be trained.

    Attributes
    ----------
    d_in, d_out : int
    A : numpy.ndarray of float32, shape (d_out, d_in), or None
        None until trained or set with :meth:`set_matrix`.
    b : numpy.ndarray of float32, shape (d_out,), or None
    is_trained : bool
    """

    _kind = "LinearTransform"

    def __init__(self, d_in, d_out):
        self.d_in = check_positive_int(d_in, "d_in")
        self.d_out = check_positive_int(d_out, "d_out")
        if self.d_out > self.d_in:
            raise ValueError(
                f"d_out={self.d_out} must be <= d_in={self.d_in} (a {self._kind} reduces or keeps "
                "the dimension)"
            )
        self.A = None
        self.b = None
        self._pinv = None

    @property
    def is_trained(self) -> bool:
        """True once ``A`` and ``b`` exist."""
        return self.A is not None

    def set_matrix(self, A, b=None):
        """Use a given matrix instead of training (e.g. copied from FAISS).

        Parameters
        ----------
        A : array_like of float, shape (d_out, d_in)
        b : array_like of float, shape (d_out,), optional
            Zero when omitted.

        Returns
        -------
        self
        """
        self.A = check_float_array(A, (self.d_out, self.d_in), f"{self._kind} matrix A")
        self.b = (np.zeros(self.d_out, dtype=np.float32) if b is None
                  else check_float_array(b, (self.d_out,), f"{self._kind} bias b"))
        self._pinv = None
        return self

    def _train(self, x):
        raise ValueError(
            "a plain LinearTransform is not trainable; give its matrix with set_matrix(A, b) or "
            "use PCA / OPQ"
        )

    def train(self, x):
        """Learn ``A`` and ``b`` from training vectors ``x`` (n, d_in); returns self."""
        x = as_float_matrix(x, self.d_in)
        self._train(x)
        self._pinv = None
        return self

    def apply(self, x):
        """Transform vectors.

        Parameters
        ----------
        x : array_like of float, shape (n, d_in)
            Converted to float32.

        Returns
        -------
        y : numpy.ndarray of float32, shape (n, d_out)
            ``x @ A.T + b``.
        """
        check_trained(self.is_trained, self._kind)
        x = as_float_matrix(x, self.d_in)
        with np.errstate(over="ignore", invalid="ignore"):
            y = x @ self.A.T
            y += self.b
        if not np.all(np.abs(y) <= max_abs_value(self.d_out)):
            # x is within bounds (checked above), so the matrix is to blame: a corrupted file, or
            # a scale this data overflows; say so instead of blaming the user's queries.
            raise ValueError(
                f"the {self._kind} transform maps these vectors beyond the float32 range of "
                f"distances (|value| <= {max_abs_value(self.d_out):.3g} for d={self.d_out}) "
                f"(largest |A| entry {float(np.abs(self.A).max()):.3g}, largest |b| "
                f"{float(np.abs(self.b).max()):.3g}); the transform is corrupted or does not suit "
                "the scale of this data: retrain it on representative vectors"
            )
        return np.ascontiguousarray(y, dtype=np.float32)

    def reverse(self, y):
        """Map transformed vectors back (least squares: ``pinv(A) (y - b)``), (n, d_out) -> (n, d_in).

        Exact for OPQ (orthonormal ``A``); for PCA it is the projection onto the kept components.
        """
        check_trained(self.is_trained, self._kind)
        y = as_float_matrix(y, self.d_out)
        if self._pinv is None:
            self._pinv = np.linalg.pinv(self.A.astype(np.float64)).astype(np.float32)
        return np.ascontiguousarray((y - self.b) @ self._pinv.T, dtype=np.float32)

    # persistence: parameters (JSON) and arrays
    def _params(self) -> dict:
        return {"d_in": self.d_in, "d_out": self.d_out}

    def _state(self):
        arrays = {} if self.A is None else {"A": self.A, "b": self.b}
        return {"kind": self._kind, **self._params()}, arrays

    def _nbytes(self) -> int:
        return 0 if self.A is None else self.A.nbytes + self.b.nbytes

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params}, is_trained={self.is_trained})"


class PCA(LinearTransform):
    """Principal component analysis to ``d_out`` dimensions (FAISS ``PCAMatrix``).

    Parameters
    ----------
    d_in, d_out : int
        Input and output dimensions, ``d_out <= d_in``.
    eigen_power : float, default 0.0
        Row i of ``A`` is scaled by ``eigenvalue_i ** eigen_power``; ``-0.5`` whitens (unit
        variance per output dimension).
    whiten : bool, default False
        Shorthand for ``eigen_power=-0.5``.
    max_points : int, default 1000 * d_in
        Training uses at most this many vectors (a seeded subsample).
    seed : int, default 1234

    Attributes
    ----------
    mean : numpy.ndarray of float32, shape (d_in,)
    eigenvalues : numpy.ndarray of float32, shape (d_in,)
        Covariance eigenvalues, descending.
    A, b
        ``A[i]`` is the i-th principal axis (times the eigen power scale), ``b = -A @ mean``.

    Notes
    -----
    Training computes the mean and the covariance ``C = (X - mean)^T (X - mean) / n`` in
    float64, its eigen decomposition ``C = V diag(lambda) V^T`` (eigenvalues descending, each
    eigenvector's largest component made positive), and keeps the first ``d_out`` rows of
    ``V^T``.
    """

    _kind = "PCA"

    def __init__(self, d_in, d_out, eigen_power=0.0, whiten=False, max_points=None, seed=1234):
        super().__init__(d_in, d_out)
        if whiten:
            eigen_power = -0.5
        if isinstance(eigen_power, bool) or not isinstance(eigen_power, (int, float)):
            raise TypeError(f"eigen_power must be a float, got {type(eigen_power).__name__}")
        self.eigen_power = float(eigen_power)
        if not np.isfinite(self.eigen_power):
            raise ValueError(f"eigen_power must be finite, got {eigen_power}")
        self.max_points = check_positive_int(
            1000 * self.d_in if max_points is None else max_points, "max_points")
        self.seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        self.mean = None
        self.eigenvalues = None

    def _params(self) -> dict:
        return {"d_in": self.d_in, "d_out": self.d_out, "eigen_power": self.eigen_power,
                "max_points": self.max_points, "seed": self.seed}

    def _train(self, x):
        check_training_size(x.shape[0], 2, f"PCA({self.d_in} -> {self.d_out})",
                            "a covariance needs two")
        if x.shape[0] > self.max_points:
            rows = np.random.default_rng(self.seed).choice(x.shape[0], self.max_points,
                                                           replace=False)
            x = x[np.sort(rows)]
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        centered = x64 - mean
        cov = centered.T @ centered / x.shape[0]
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], 0.0)
        vectors = eigenvectors[:, order].T  # row i: axis i
        flip = np.sign(vectors[np.arange(vectors.shape[0]), np.abs(vectors).argmax(axis=1)])
        vectors *= flip[:, None]
        A = vectors[: self.d_out]
        if self.eigen_power != 0.0:
            kept = eigenvalues[: self.d_out]
            if (kept <= 0).any() and self.eigen_power < 0:
                raise ValueError(
                    f"PCA whitening (eigen_power={self.eigen_power}) needs positive eigenvalues; "
                    f"the data spans fewer than d_out={self.d_out} dimensions: lower d_out"
                )
            A = A * (kept ** self.eigen_power)[:, None]
        self.mean = mean.astype(np.float32)
        self.eigenvalues = eigenvalues.astype(np.float32)
        self.A = np.ascontiguousarray(A, dtype=np.float32)
        self.b = (-(A @ mean)).astype(np.float32)


class OPQ(LinearTransform):
    """Optimized product quantization rotation (FAISS ``OPQMatrix``, nanopq ``OPQ``).

    Parameters
    ----------
    d_in : int
        Input dimension.
    M : int
        Sub-quantizers of the PQ the rotation is optimised for; ``d_out % M == 0``.
    d_out : int, optional
        Output dimension (default ``d_in``); smaller values reduce the dimension (FAISS
        ``OPQ{M}_{d_out}``).
    nbits : int, default 8
        Bits per sub-quantizer of that PQ.
    niter : int, default 50
        Alternations of PQ training and rotation update.
    niter_pq : int, default 4
        k-means iterations per alternation (warm-started from the previous codebooks).
    niter_pq_0 : int, default 40
        k-means iterations of the first PQ training.
    max_train_points : int, default 65536
        Training uses at most this many vectors (a seeded subsample).
    seed : int, default 1234

    Notes
    -----
    With centred training vectors ``X`` (n, d_in) and ``A`` (d_out, d_in) with orthonormal rows
    (initialised at random), each alternation trains the PQ on ``Y = X A^T``, reconstructs
    ``Yhat`` from the codes, and sets ``A = V U^T`` from the SVD ``X^T Yhat = U S V^T`` (the
    orthogonal Procrustes solution minimising ``||X A^T - Yhat||_F``). ``b`` is zero: the
    centring only serves training, as in FAISS. The PQ learned here is discarded; the wrapped
    index trains its own on the rotated vectors.
    """

    _kind = "OPQ"

    def __init__(self, d_in, M, d_out=None, nbits=8, niter=50, niter_pq=4, niter_pq_0=40,
                 max_train_points=65536, seed=1234):
        d_out = d_in if d_out is None else d_out
        super().__init__(d_in, d_out)
        self.M = check_positive_int(M, "M")
        if self.d_out % self.M:
            raise ValueError(
                f"d_out={self.d_out} must be divisible by M={self.M} (the PQ the rotation is "
                f"optimised for splits the rotated vector into M parts)"
            )
        self.nbits = check_int(nbits, "nbits", minimum=1, maximum=16)
        self.niter = check_positive_int(niter, "niter")
        self.niter_pq = check_positive_int(niter_pq, "niter_pq")
        self.niter_pq_0 = check_positive_int(niter_pq_0, "niter_pq_0")
        self.max_train_points = check_positive_int(max_train_points, "max_train_points")
        self.seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)

    def _params(self) -> dict:
        return {"d_in": self.d_in, "M": self.M, "d_out": self.d_out, "nbits": self.nbits,
                "niter": self.niter, "niter_pq": self.niter_pq, "niter_pq_0": self.niter_pq_0,
                "max_train_points": self.max_train_points, "seed": self.seed}

    def _train(self, x):
        ksub = 1 << self.nbits
        check_training_size(x.shape[0], ksub, f"OPQ (M={self.M}, nbits={self.nbits})",
                            "ksub = 2**nbits for its PQ")
        rng = np.random.default_rng(self.seed)
        if x.shape[0] > self.max_train_points:
            x = x[np.sort(rng.choice(x.shape[0], self.max_train_points, replace=False))]
        x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        q, _ = np.linalg.qr(rng.standard_normal((self.d_in, self.d_out)))
        A = np.ascontiguousarray(q.T, dtype=np.float32)  # (d_out, d_in), orthonormal rows
        dsub = self.d_out // self.M
        nt = _threads.resolve(None)
        codebooks = None
        for iteration in range(self.niter):
            y = np.ascontiguousarray(x @ A.T)
            if codebooks is None:
                pq = ProductQuantizer(self.d_out, self.M, self.nbits, niter=self.niter_pq_0,
                                      seed=self.seed)
                _train_quietly(pq, y)  # an auxiliary PQ: the wrapped index warns for its own
                codebooks = np.array(pq.codebooks)
                labels = [None] * self.M
            recon = np.empty_like(y)
            for m in range(self.M):
                sub = np.ascontiguousarray(y[:, m * dsub:(m + 1) * dsub])
                cents = codebooks[m]
                steps = 1 if iteration == 0 else self.niter_pq + 1
                for step in range(steps):
                    labels_m, _ = engine.core(engine.get_backend()).coarse_assign(sub, cents, "l2", nt)
                    labels_m = np.asarray(labels_m, dtype=np.int64)
                    if step == steps - 1:
                        break
                    cents = _update_centroids(sub, labels_m, cents)
                codebooks[m] = cents
                labels[m] = labels_m
                recon[:, m * dsub:(m + 1) * dsub] = cents[labels_m]
            u, _, vt = np.linalg.svd(x.T.astype(np.float64) @ recon.astype(np.float64),
                                     full_matrices=False)
            A = np.ascontiguousarray((u @ vt).T, dtype=np.float32)
        self.A = A
        self.b = np.zeros(self.d_out, dtype=np.float32)


def _train_quietly(pq, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        pq._train_validated(y, stacklevel=3)


def _update_centroids(x, labels, centroids):
    """One Lloyd update: mean of each cluster's points; empty clusters keep their centroid."""
    k = centroids.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k)
                     for j in range(x.shape[1])], axis=1)
    out = centroids.astype(np.float64).copy()
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled, None]
    return out.astype(np.float32)


# FAISS names.
PCAMatrix = PCA
OPQMatrix = OPQ

_TRANSFORMS = {"LinearTransform": LinearTransform, "PCA": PCA, "OPQ": OPQ}


def transform_from_state(params: dict, arrays: dict) -> LinearTransform:
    """Rebuild a transform from ``LinearTransform._state()`` output (ValueError if invalid)."""
    if not isinstance(params, dict) or params.get("kind") not in _TRANSFORMS:
        raise ValueError(f"unknown transform {params!r}; known: {sorted(_TRANSFORMS)}")
    kwargs = {k: v for k, v in params.items() if k != "kind"}
    for key, value in kwargs.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"transform parameter {key!r} must be a number, got {value!r}")
    unexpected = sorted(set(arrays) - {"A", "b"})
    if unexpected:
        raise ValueError(f"unexpected transform arrays {unexpected}; expected 'A' and 'b'")
    for name, arr in arrays.items():
        if arr.dtype != np.float32:
            raise ValueError(f"transform array {name!r} has dtype {arr.dtype}, expected float32")
    cls = _TRANSFORMS[params["kind"]]
    if cls is OPQ:
        transform = OPQ(kwargs["d_in"], kwargs["M"], kwargs["d_out"], kwargs["nbits"],
                        kwargs["niter"], kwargs["niter_pq"], kwargs["niter_pq_0"],
                        kwargs["max_train_points"], kwargs["seed"])
    elif cls is PCA:
        transform = PCA(kwargs["d_in"], kwargs["d_out"], kwargs["eigen_power"],
                        max_points=kwargs["max_points"], seed=kwargs["seed"])
    else:
        transform = LinearTransform(kwargs["d_in"], kwargs["d_out"])
    written = set(transform._state()[0])  # the parameters the writer writes for this kind
    if set(params) != written:
        raise ValueError(f"{params['kind']} parameters must be {sorted(written)}, got "
                         f"{sorted(params)}")
    if "A" in arrays or "b" in arrays:
        if "A" not in arrays or "b" not in arrays:
            raise ValueError("transform needs both arrays 'A' and 'b'")
        transform.set_matrix(arrays["A"], arrays["b"])
    return transform
