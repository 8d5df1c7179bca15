"""L2 k-means (Lloyd's algorithm) over the compiled core.

Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982. Each iteration
assigns every point to its nearest centroid (squared L2) and moves each centroid to the mean of
its points; the objective is ``sum_i min_j ||x_i - c_j||^2``. Empty clusters are repaired by the
core. When more than ``max_points_per_centroid * k`` points are given, a seeded random subsample
of that size is used (as FAISS does).
"""

from __future__ import annotations

import numpy as np

from .. import _threads, engine
from .._validation import (
    as_float_matrix,
    check_float_array,
    check_int,
    check_n_threads,
    check_positive_int,
    check_trained,
    check_training_size,
    warn_few_training_points,
)

__all__ = ["KMeans"]


class KMeans:
    """L2 k-means clustering.

    Parameters
    ----------
    d : int
        Vector dimension.
    k : int
        Number of centroids.
    niter : int, default 25
        Lloyd iterations.
    seed : int, default 1234
        Seed for the initialisation and the subsampling; the same seed and data give the same
        centroids for any thread count.
    max_points_per_centroid : int, default 256
        Training uses at most ``max_points_per_centroid * k`` points (a seeded subsample).
    n_threads : int or None, default None
        Worker threads; None uses :func:`pqkit.get_num_threads`.
    backend : {"cpp", "numba", "torch"} or None, default None
        Engine; None uses :func:`pqkit.get_backend`. ``assign`` gives the same result on all
        (the torch engine up to float rounding); ``train`` follows the same algorithm with
        another random stream (see :mod:`pqkit.engine`).
    device : str or None, default None
        The torch engine's device ("cuda", "cuda:N" or "cpu"); a CUDA device alone selects
        ``backend="torch"``. ValueError when CUDA is asked for and absent.

    Attributes
    ----------
    centroids : numpy.ndarray of float32, shape (k, d), or None
        None until trained.
    objective : float or None
        Sum of squared L2 distances of the training points to their nearest centroid after the
        last iteration.
    is_trained : bool

    Examples
    --------
    >>> import numpy as np, pqkit
    >>> x = np.random.default_rng(0).standard_normal((2000, 8), dtype=np.float32)
    >>> km = pqkit.KMeans(d=8, k=16).train(x)
    >>> km.centroids.shape
    (16, 8)
    >>> D, I = km.assign(x[:5])
    >>> D.dtype, I.dtype, I.shape
    (dtype('float32'), dtype('int64'), (5,))
    """

    def __init__(self, d, k, niter=25, seed=1234, max_points_per_centroid=256, n_threads=None,
                 *, backend=None, device=None):
        self.d = check_positive_int(d, "d")
        self.k = check_positive_int(k, "k")
        self.niter = check_positive_int(niter, "niter")
        self.seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        self.max_points_per_centroid = check_positive_int(
            max_points_per_centroid, "max_points_per_centroid"
        )
        self.n_threads = check_n_threads(n_threads)
        self.backend, self.device = engine.resolve_engine(backend, device)
        self.centroids = None
        self.objective = None

    @property
    def is_trained(self) -> bool:
        """True once :meth:`train` has run."""
        return self.centroids is not None

    def train(self, x) -> "KMeans":
        """Cluster the training vectors.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            At least ``k`` vectors; converted to float32 (see :mod:`pqkit.indexes.base`). Fewer than
            ``39 * k`` emits :class:`pqkit.TrainingWarning`.

        Returns
        -------
        self : KMeans
        """
        x = as_float_matrix(x, self.d)
        self._train_validated(x, stacklevel=3)
        return self

    def _train_validated(self, x: np.ndarray, stacklevel: int) -> None:
        """Train on an already validated float32 matrix.

        ``stacklevel`` locates the user's call for the warning, counted from this method.
        """
        what = f"k-means with k={self.k}"
        check_training_size(x.shape[0], self.k, what, "at least one per centroid")
        warn_few_training_points(x.shape[0], self.k, what, stacklevel=stacklevel)
        centroids, objective = engine.core(self.backend, getattr(self, 'device', None)).kmeans(
            x,
            self.k,
            self.niter,
            self.seed,
            self.max_points_per_centroid,
            _threads.resolve(self.n_threads),
        )
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.objective = float(objective)

    def set_centroids(self, centroids) -> "KMeans":
        """Use given centroids instead of training.

        Parameters
        ----------
        centroids : array_like of float, shape (k, d)
            Copied and converted to float32.

        Returns
        -------
        self : KMeans
        """
        self.centroids = check_float_array(centroids, (self.k, self.d), "centroids")
        self.objective = None
        return self

    def assign(self, x):
        """Nearest centroid of each vector.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Converted to float32 (see :mod:`pqkit.indexes.base`).

        Returns
        -------
        D : numpy.ndarray of float32, shape (n,)
            Squared L2 distance to the nearest centroid.
        I : numpy.ndarray of int64, shape (n,)
            Index of the nearest centroid (ties: the smaller index).
        """
        check_trained(self.is_trained, "KMeans")
        x = as_float_matrix(x, self.d)
        labels, distances = engine.core(self.backend, getattr(self, 'device', None)).coarse_assign(
            x, self.centroids, "l2", _threads.resolve(self.n_threads)
        )
        return distances, labels

    def __repr__(self) -> str:
        return (
            f"KMeans(d={self.d}, k={self.k}, niter={self.niter}, seed={self.seed}, "
            f"max_points_per_centroid={self.max_points_per_centroid}, "
            f"is_trained={self.is_trained})"
        )
