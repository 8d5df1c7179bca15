"""Nearest-centroid assignment and L2 k-means (the compiled core's ``NearestCentroid`` in
``cpp/search/flat`` and ``cpp/search/kmeans``).

Training follows the core's algorithm (seeded subsample, k distinct initial points, Lloyd
iterations with a sequential update in double, the same empty-cluster repair) but draws its
random numbers from NumPy's generator, so trained centroids differ from the core's.
"""

from __future__ import annotations

import numpy as np

from ._common import _F32_INF, _checked, _jit, _parallel_rows, _parse_metric, _positive
from ._kernels import _dot, _l2_key, _sqnorms, _to_centroids_t
from .flat import _IP_DIRECT_MAX_DIM, _search_block

_DIRECT_MAX_DIM = 33  # the core computes nearest-centroid L2 directly below this dimension


@_jit
def _assign_direct(x, ct, labels, dist):
    """Nearest centroid by direct squared L2 on transposed centroids (the core's d <= 32 path)."""
    buf = np.empty(ct.shape[1], dtype=np.float32)
    for i in range(x.shape[0]):
        _to_centroids_t(x[i], ct, True, buf)
        best = 0
        for c in range(1, buf.shape[0]):
            if buf[c] < buf[best]:
                best = c
        labels[i] = best
        dist[i] = buf[best]


@_jit
def _assign_ip_direct(x, ct, norms, labels, dist):
    """Nearest centroid by norms and sequential inner products on transposed centroids (the core's
    33 <= d <= 256 path): keys as ``_search_block`` makes them, the first smallest wins, NaN never."""
    buf = np.empty(ct.shape[1], dtype=np.float32)
    acc = np.empty(16, dtype=np.float32)
    for i in range(x.shape[0]):
        xnorm = _dot(x[i], x[i], acc)
        _to_centroids_t(x[i], ct, False, buf)
        best = -1
        best_key = _F32_INF
        for c in range(buf.shape[0]):
            key = _l2_key(xnorm, norms[c], buf[c])
            if key == key and (best < 0 or key < best_key):
                best = c
                best_key = key
        labels[i] = best
        dist[i] = best_key


class _NearestCentroid:
    """Centroids prepared for nearest-centroid assignment, as the core's NearestCentroid."""

    def __init__(self, centroids: np.ndarray, l2: bool):
        self.centroids = centroids
        self.l2 = l2
        self.direct = l2 and centroids.shape[1] < _DIRECT_MAX_DIM
        self.ip_direct = l2 and _DIRECT_MAX_DIM <= centroids.shape[1] <= _IP_DIRECT_MAX_DIM
        if self.direct or self.ip_direct:
            self.transposed = np.ascontiguousarray(centroids.T)
        self.norms = np.zeros(centroids.shape[0], dtype=np.float32)
        if l2:
            _sqnorms(centroids, self.norms)

    def assign_rows(self, x, labels, dist, begin, end) -> None:
        if self.direct:
            _assign_direct(x[begin:end], self.transposed, labels[begin:end], dist[begin:end])
            return
        if self.ip_direct:
            _assign_ip_direct(x[begin:end], self.transposed, self.norms, labels[begin:end], dist[begin:end])
            return
        D = dist[begin:end].reshape(-1, 1)
        I = labels[begin:end].reshape(-1, 1)
        _search_block(x[begin:end], self.centroids, self.norms, self.l2, D, I)

    def assign(self, x, n_threads):
        n = x.shape[0]
        labels = np.empty(n, dtype=np.int64)
        dist = np.empty(n, dtype=np.float32)
        _parallel_rows(lambda b, e: self.assign_rows(x, labels, dist, b, e), n, n_threads, 256)
        return labels, dist


def coarse_assign(x, centroids, metric, n_threads):
    """Nearest centroid of each row: (labels int64 (n,), distance float32 (n,))."""
    x = _checked(x, np.float32, "x", (-1, -1))
    centroids = _checked(centroids, np.float32, "centroids", (-1, x.shape[1]))
    _positive(centroids.shape[0], "nlist")
    return _NearestCentroid(centroids, _parse_metric(metric)).assign(x, n_threads)


# ============================================================================ k-means
@_jit
def _accumulate(x, labels, sums, counts):
    """Sequential per-cluster sums in double (deterministic, as the core's update)."""
    sums[:] = 0.0
    counts[:] = 0
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for j in range(x.shape[1]):
            sums[c, j] += x[i, j]


def _repair_empty_clusters(centroids, counts, rng) -> None:
    """An empty cluster takes over half of a cluster drawn with probability ~ (size - 1); the
    two centroids are pushed apart by a tiny symmetric perturbation (as the core does)."""
    eps = np.float32(1.0 / 1024.0)
    up, down = np.float32(1) + eps, np.float32(1) - eps
    for ci in np.flatnonzero(counts == 0):
        weights = np.maximum(counts - 1, 0)
        total = int(weights.sum())
        if total == 0:
            return
        r = int(rng.integers(0, total))
        cj = int(np.searchsorted(np.cumsum(weights), r, side="right"))
        centroids[ci] = centroids[cj]
        even = np.arange(centroids.shape[1]) % 2 == 0
        centroids[ci] *= np.where(even, up, down)
        centroids[cj] *= np.where(even, down, up)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def _kmeans_train(x, k, niter, seed, max_points_per_centroid, n_threads):
    n, d = x.shape
    if n < k:
        raise ValueError(
            "k-means needs at least as many training points as centroids: expected n >= "
            f"{k}, got n = {n}"
        )
    cap = n if max_points_per_centroid == 0 else min(n, k * max_points_per_centroid)
    if cap < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
        x = np.ascontiguousarray(x[rows])
        n = cap
    init = np.random.default_rng(seed + 1).choice(n, k, replace=False)
    centroids = np.ascontiguousarray(x[init])
    rng = np.random.default_rng(seed + 2)
    sums = np.empty((k, d), dtype=np.float64)
    counts = np.empty(k, dtype=np.int64)
    objective = 0.0
    for _ in range(max(int(niter), 1)):
        labels, dist = _NearestCentroid(centroids, True).assign(x, n_threads)
        objective = float(np.sum(dist, dtype=np.float64))
        _accumulate(x, labels, sums, counts)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        _repair_empty_clusters(centroids, counts, rng)
    return centroids, objective


def kmeans(x, k, niter, seed, max_points_per_centroid, n_threads):
    """L2 k-means: (centroids float32 (k, d), objective float)."""
    x = _checked(x, np.float32, "x", (-1, -1))
    k = _positive(k, "k")
    return _kmeans_train(x, k, niter, int(seed), max(int(max_points_per_centroid), 0), n_threads)
