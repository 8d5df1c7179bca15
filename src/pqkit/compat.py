"""Drop-in replacements for the notebook classes ``CustomIndexPQ`` and ``CustomIndexIVFPQ``.

A notebook that defined these classes with NumPy loops and k-means from scikit-learn or faiss
runs unchanged with ``from pqkit.compat import CustomIndexPQ, CustomIndexIVFPQ``: the same
constructor signatures, public attributes, methods, return shapes and ``ValueError`` messages,
backed by :class:`pqkit.IndexPQ` and :class:`pqkit.IndexIVFPQ` (compiled training, encoding and
search).

Differences from the notebook, all deliberate:

- Training uses pqkit's seeded k-means (25 iterations, at most 256 points per centroid, seed 1),
  like ``faiss.Kmeans(d, k, seed=1)``; scikit-learn's ``KMeans(random_state=1)`` gives other
  centroids, so codes and neighbours differ in detail (recall is comparable).
- ``CustomIndexPQ.compute_asymmetric_distances`` before ``add`` raises the notebook's
  ``ValueError("No codes detected. ...")`` (the notebook raised AttributeError because
  ``codes`` did not exist yet).
- ``CustomIndexIVFPQ.search`` also accepts several queries ``(n, d)`` (the notebook handled only
  one); it then returns 2-D arrays ``(n, k_nearest)``. One query ``(1, d)`` or ``(d,)`` returns
  1-D arrays, padded on the right with ``-1`` as the notebook padded them.
- ``train`` on an index holding vectors empties it (the notebook kept codes computed with the
  old centroids); ``add`` again afterwards.
- ``inverted_list`` and ``codes_db`` are rebuilt from the engine's inverted lists when read
  (cached until the next ``add``); edits to them do not change the index.

As in the notebook, ``CustomIndexPQ.add`` *replaces* the database (ids restart at 0), while
``CustomIndexIVFPQ.add`` appends and continues the ids after ``max_id``. For new code use
:class:`pqkit.IndexPQ` / :class:`pqkit.IndexIVFPQ` directly.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import _threads, engine
from ._validation import as_float_matrix
from .indexes.ivfpq import IndexIVFPQ
from .indexes.pq import IndexPQ

__all__ = ["CustomIndexIVFPQ", "CustomIndexPQ"]

#: Seed of every k-means the compat classes run (the notebook used ``random_state=1`` /
#: ``seed=1``).
SEED = 1


class _KMeansView:
    """Read-only view of one trained quantizer, with the names both notebook versions used.

    ``centroids`` / ``assign(x) -> (D, I)`` as ``faiss.Kmeans``; ``cluster_centers_`` /
    ``predict(x) -> labels`` as ``sklearn.cluster.KMeans``.
    """

    def __init__(self, get_centroids):
        self._get_centroids = get_centroids

    @property
    def centroids(self):
        """numpy.ndarray of float32, shape (k, d): the centroids (None before training)."""
        return self._get_centroids()

    cluster_centers_ = centroids

    def assign(self, x):
        """Nearest centroid of each row of ``x`` (n, d): ``(D float32 (n,), I int64 (n,))``."""
        centroids = self.centroids
        if centroids is None:
            raise ValueError("The quantizer needs to be trained first.")
        x = as_float_matrix(x, centroids.shape[1])
        labels, distances = engine.core(engine.get_backend()).coarse_assign(x, centroids, "l2", _threads.resolve(None))
        return np.asarray(distances), np.asarray(labels, dtype=np.int64)

    def predict(self, x):
        """Nearest centroid index of each row of ``x`` (n, d), int64 (n,)."""
        return self.assign(x)[1]


def _check_notebook_params(d, m, nbits, bits2dtype):
    """The notebook's two constructor checks, with its messages (before pqkit's own checks)."""
    if d % m != 0:
        raise ValueError("d needs to be a multiple of m")
    if nbits not in bits2dtype:
        raise ValueError(f"Unsupported number of bits {nbits}")


def _sub_centroids(pq, i):
    return None if pq.codebooks is None else pq.codebooks[i]


class CustomIndexPQ:
    """The notebook's ``CustomIndexPQ`` on the pqkit engine (:class:`pqkit.IndexPQ`).

    Parameters
    ----------
    d : int
        Dimensionality of the original vectors.
    m : int
        Number of segments (sub-quantizers); ``d % m == 0``.
    nbits : {8, 16}
        Bits per segment code.

    Attributes
    ----------
    m, k, d, ds : int
        Segments, centroids per segment (``2**nbits``), dimension, segment dimension.
    estimators : list of m objects
        Per-segment quantizers with ``cluster_centers_`` (k, ds) and ``predict``.
    is_trained : bool
    codes : numpy.ndarray of dtype ``dtype``, shape (n, m), or None
        Segment codes of the database set by the last :meth:`add`.
    dtype, dtype_orig : numpy dtype classes
        Code dtype (uint8 for 8 bits, uint16 for 16) and float32.
    index : pqkit.IndexPQ
        The backing index.

    Raises
    ------
    ValueError
        ``"d needs to be a multiple of m"``, ``"Unsupported number of bits {nbits}"``.
    """

    BITS2DTYPE = {8: np.uint8, 16: np.uint16}

    def __init__(self, d: int, m: int, nbits: int) -> None:
        _check_notebook_params(d, m, nbits, CustomIndexPQ.BITS2DTYPE)
        self.m = m
        self.k = 2**nbits
        self.d = d
        self.ds = d // m
        self.index = IndexPQ(d, m, nbits, seed=SEED)
        self.estimators = [
            _KMeansView(lambda i=i: _sub_centroids(self.index.pq, i)) for i in range(m)
        ]
        self.dtype = CustomIndexPQ.BITS2DTYPE[nbits]
        self.dtype_orig = np.float32
        self.codes = None

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run."""
        return self.index.is_trained

    def train(self, X: np.ndarray) -> None:
        """Train the m segment quantizers.

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n, d)
            At least ``k`` rows.
        """
        self.index.reset()
        self.codes = None
        self.index.train(X)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Encode vectors into segment codes.

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n, d)

        Returns
        -------
        numpy.ndarray of dtype ``dtype``, shape (n, m)
            Nearest centroid of each segment.
        """
        if not self.is_trained:
            raise ValueError("The quantizer needs to be trained first.")
        pq = self.index.pq
        return pq.unpack_codes(pq.encode(X)).astype(self.dtype)

    def add(self, X: np.ndarray) -> None:
        """Encode ``X`` and make it the database (replacing earlier adds, as the notebook did).

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n, d)
        """
        if not self.is_trained:
            raise ValueError("The quantizer needs to be trained first.")
        self.index.reset()
        self.index.add(X)
        state = self.index._get_state()[1]
        order = np.argsort(state["ids"], kind="stable")
        self.codes = self.index.pq.unpack_codes(state["codes"][order]).astype(self.dtype)

    def _check_searchable(self) -> None:
        if not self.is_trained:
            raise ValueError("The quantizer needs to be trained first.")
        if self.codes is None:
            raise ValueError("No codes detected. You need to run `add` first")

    def compute_asymmetric_distances(self, X: np.ndarray) -> np.ndarray:
        """Asymmetric (ADC) squared L2 distances of queries to every database code.

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n_queries, d)

        Returns
        -------
        distances : numpy.ndarray of float32, shape (n_queries, n_codes)
            ``distances[q, j] = sum_i ||X[q]_i - C_i[codes[j, i]]||^2``.
        """
        self._check_searchable()
        tables = self.index.pq.distance_table(X)  # (n_queries, m, k)
        distances = np.zeros((tables.shape[0], len(self.codes)), dtype=np.float32)
        for i in range(self.m):
            distances += tables[:, i, self.codes[:, i]]
        return distances

    def search(self, X: np.ndarray, k: int) -> tuple:
        """Find the k nearest database codes of each query (engine ADC scan).

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n_queries, d)
        k : int

        Returns
        -------
        distances : numpy.ndarray of float32, shape (n_queries, k)
        indices : numpy.ndarray of int64, shape (n_queries, k)
            Row numbers of the database (``-1`` padding when k exceeds it).
        """
        self._check_searchable()
        return self.index.search(X, k)

    def __repr__(self) -> str:
        return f"CustomIndexPQ(d={self.d}, m={self.m}, nbits={self.index.pq.nbits})"


class CustomIndexIVFPQ:
    """The notebook's ``CustomIndexIVFPQ`` on the pqkit engine (:class:`pqkit.IndexIVFPQ`).

    Parameters
    ----------
    d : int
        Dimensionality of the original vectors.
    m : int
        Number of segments; ``d % m == 0``.
    nlist : int
        Number of coarse centroids (IVF cells).
    nbits : {8, 16}
        Bits per segment code.

    Attributes
    ----------
    m, nlist, k, d, ds : int
    nprobe : int
        Cells probed per query (default 1; values above ``nlist`` probe all cells).
    coarse_quantizer : object
        ``centroids`` (nlist, d), ``assign(x) -> (D, I)`` (also ``cluster_centers_``, ``predict``).
    fine_quantizers : list of m objects
        Per-segment residual quantizers, ``centroids`` (k, ds).
    inverted_list : collections.defaultdict(list)
        Cell number -> list of the ids stored in it.
    max_id : int
        Number of vectors added; the next :meth:`add` numbers its vectors from here.
    codes_db : numpy.ndarray of dtype ``dtype``, shape (max_id, m)
        Segment codes of the residuals, row i for id i.
    is_trained : bool
    dtype, dtype_orig : numpy dtype classes
    index : pqkit.IndexIVFPQ
        The backing index.
    """

    BITS2DTYPE = {8: np.uint8, 16: np.uint16}

    def __init__(self, d: int, m: int, nlist: int, nbits: int) -> None:
        _check_notebook_params(d, m, nbits, CustomIndexIVFPQ.BITS2DTYPE)
        self.m = m
        self.nlist = nlist
        self.nprobe = 1
        self.k = 2**nbits
        self.d = d
        self.ds = d // m
        self.index = IndexIVFPQ(d, nlist, m, nbits, seed=SEED)
        self.index.coarse_niter = 25  # closer to the notebook's converged scikit-learn k-means
        self.coarse_quantizer = _KMeansView(lambda: self.index.centroids)
        self.fine_quantizers = [
            _KMeansView(lambda i=i: _sub_centroids(self.index.pq, i)) for i in range(m)
        ]
        self.dtype = CustomIndexIVFPQ.BITS2DTYPE[nbits]
        self.dtype_orig = np.float32
        self._views = None  # (inverted_list, codes_db) rebuilt after each add

    # ------------------------------------------------------------------ state views
    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run."""
        return self.index.is_trained

    @property
    def max_id(self) -> int:
        """Number of vectors added so far (the first id of the next :meth:`add`)."""
        return self.index.ntotal

    def _state_views(self):
        if self._views is None:
            state = self.index._get_state()[1]
            sizes, ids, codes = state["list_sizes"], state["ids"], state["codes"]
            inverted_list = defaultdict(list)
            start = 0
            for cell, size in enumerate(sizes.tolist()):
                if size:
                    inverted_list[np.int64(cell)] = ids[start:start + size].tolist()
                start += size
            codes_db = np.empty((ids.size, self.m), dtype=self.dtype)
            if ids.size:
                codes_db[ids] = self.index.pq.unpack_codes(codes)
            self._views = (inverted_list, codes_db)
        return self._views

    @property
    def inverted_list(self):
        """defaultdict(list): cell number -> ids stored in that cell (in add order)."""
        return self._state_views()[0]

    @property
    def codes_db(self) -> np.ndarray:
        """Residual segment codes, shape (max_id, m), row i for id i."""
        return self._state_views()[1]

    # ------------------------------------------------------------------ notebook steps
    def fit_coarse_quantizer(self, feature_list):
        """Train the coarse centroids (and, as pqkit trains both together, the fine quantizers);
        return the residuals of ``feature_list`` (n, d) to their nearest centroid."""
        self.train(feature_list)
        return self.apply_coarse_quantizer(feature_list)[0]

    def fit_fine_quantizer(self, feature_list_residual):
        """Retrain the m residual quantizers on given residuals (n, d)."""
        self.index.pq.train(feature_list_residual)

    def apply_coarse_quantizer(self, feature_list):
        """Residuals (n, d) float32 and cells (n,) int64 of ``feature_list`` (n, d)."""
        x = as_float_matrix(feature_list, self.d)
        ivf_cells = self.coarse_quantizer.assign(x)[1]
        return x - self.index.centroids[ivf_cells], ivf_cells

    def quantize_residuals(self, feature_list_residual):
        """Segment codes (n, m) of residuals (n, d)."""
        pq = self.index.pq
        return pq.unpack_codes(pq.encode(feature_list_residual)).astype(self.dtype)

    def distance_to_IVFcentroids(self, query):
        """The ``nprobe`` cells nearest the query (1, d), nearest first (int64)."""
        x = as_float_matrix(query, self.d)
        distances = ((self.index.centroids - x[0]) ** 2).sum(axis=1)
        return np.argsort(distances, kind="stable")[: self.nprobe]

    def generate_query_residual(self, query, current_cell):
        """``query - centroids[current_cell]``."""
        return as_float_matrix(query, self.d) - self.index.centroids[current_cell]

    def compute_distance_table(self, query_residual):
        """ADC table (m, k) float32 of one query residual (1, d)."""
        return self.index.pq.distance_table(query_residual)[0]

    def filter_residual_vectors(self, current_cell):
        """Codes (n_cell, m) and ids of the vectors stored in ``current_cell``."""
        filtered_ids = self.inverted_list[current_cell]
        return self.codes_db[filtered_ids], filtered_ids

    def calculate_distances(self, filtered_result, distance_table):
        """ADC distances (n,) float32 of codes (n, m) under a table (m, k)."""
        distances = np.zeros(len(filtered_result), dtype=self.dtype_orig)
        for i in range(self.m):
            distances += distance_table[i, filtered_result[:, i]]
        return distances

    def find_smallest_k(self, distances, filtered_ids, k_nearest):
        """The k smallest distances and their ids, as two arrays (ties: the smaller id)."""
        distances = np.asarray(distances)
        filtered_ids = np.asarray(filtered_ids)
        order = np.lexsort((filtered_ids, distances))[:k_nearest]
        return distances[order], filtered_ids[order]

    # ------------------------------------------------------------------ main API
    def train(self, feature_list: np.ndarray) -> None:
        """Train the coarse quantizer, then the fine quantizers on the residuals.

        Parameters
        ----------
        feature_list : numpy.ndarray of float, shape (n, d)
            At least ``max(nlist, k)`` rows.
        """
        self.index.reset()
        self._views = None
        self.index.train(feature_list)

    def add(self, feature_list: np.ndarray) -> None:
        """Add vectors with ids ``max_id, max_id + 1, ...`` (continuing earlier adds).

        Parameters
        ----------
        feature_list : numpy.ndarray of float, shape (n_codes, d)

        Raises
        ------
        ValueError
            If the quantizers are not trained.
        """
        if not self.is_trained:
            raise ValueError("Both coarse and fine quantizers need to be trained first.")
        self.index.add(feature_list)
        self._views = None

    def search(self, query: np.ndarray, k_nearest: int) -> tuple:
        """Search the ``nprobe`` nearest cells for the k nearest neighbours.

        Parameters
        ----------
        query : numpy.ndarray of float, shape (1, d), (d,) or (n, d)
        k_nearest : int

        Returns
        -------
        D : numpy.ndarray of float32, shape (k_nearest,) (or (n, k_nearest))
            Squared L2 ADC distances, nearest first, padded with -1 when the probed cells hold
            fewer than ``k_nearest`` vectors.
        I : numpy.ndarray of uint64, shape (k_nearest,) (or (n, k_nearest))
            Ids; padding is ``-1`` stored in uint64 (``2**64 - 1``), as in the notebook.

        Raises
        ------
        ValueError
            If the quantizers are not trained or nothing was added.
        """
        if not self.is_trained:
            raise ValueError("Both coarse and fine quantizers need to be trained first.")
        if self.index.ntotal == 0:
            raise ValueError("No codes detected. You need to run `add` first")
        x = as_float_matrix(query, self.d)
        self.index.nprobe = max(1, min(int(self.nprobe), self.nlist))
        D, I = self.index.search(x, k_nearest)
        missing = I < 0
        D[missing] = -1
        I = I.astype(np.uint64)  # -1 becomes 2**64 - 1, as the notebook's np.pad produced
        if np.ndim(query) == 1 or x.shape[0] == 1:
            return D[0], I[0]
        return D, I

    def __repr__(self) -> str:
        return (f"CustomIndexIVFPQ(d={self.d}, m={self.m}, nlist={self.nlist}, "
                f"nbits={self.index.pq.nbits}, nprobe={self.nprobe}, max_id={self.max_id})")
