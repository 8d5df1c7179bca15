"""k-means against a NumPy reference: objective, determinism, empty-cluster repair, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pqkit
from tests.reference import kmeans_objective, pairwise


def _train(x, k, **kwargs):
    return pqkit.KMeans(x.shape[1], k, **kwargs).train(x)


def test_objective_is_the_sum_of_squared_distances_and_decreases(small_clustered):
    base, _ = small_clustered
    x = base[:2000]  # 2000 <= 256 * 16: no subsampling, so the objective covers every point
    objectives = [_train(x, 16, niter=niter, seed=3).objective for niter in (1, 2, 5, 25)]
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(objectives, objectives[1:])), objectives
    assert objectives[-1] < objectives[0]

    km = _train(x, 16, niter=25, seed=3)
    # The reported objective is measured before the last centroid update, which cannot increase it.
    final = kmeans_objective(x, km.centroids)
    assert final <= km.objective * (1 + 1e-5)
    assert final >= 0.9 * km.objective, (final, km.objective)

    # Far better than the initialisation alone (k random training points).
    rng = np.random.default_rng(0)
    random_init = x[rng.choice(x.shape[0], 16, replace=False)]
    assert final < 0.8 * kmeans_objective(x, random_init)


def test_lloyd_fixed_point(small_clustered):
    """After convergence each centroid is (nearly) the mean of the points assigned to it."""
    base, _ = small_clustered
    x = base[:2000].astype(np.float64)
    km = _train(base[:2000], 8, niter=50, seed=1)
    labels = pairwise(x, km.centroids, "l2").argmin(1)
    for c in range(8):
        members = x[labels == c]
        assert members.shape[0] > 0, f"cluster {c} is empty after training"
        np.testing.assert_allclose(km.centroids[c], members.mean(0), rtol=1e-3, atol=1e-3 * np.abs(x).max())


def test_assign_matches_numpy(small_clustered):
    base, queries = small_clustered
    km = _train(base, 32, seed=5)
    D, I = km.assign(queries)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (queries.shape[0],)
    dist = pairwise(queries, km.centroids, "l2")
    np.testing.assert_allclose(D, dist[np.arange(len(I)), I], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(D, dist.min(1), rtol=1e-5, atol=1e-4)


def test_seeded_determinism(small_clustered, restore_threads):
    base, _ = small_clustered
    a = _train(base, 20, seed=42)
    b = _train(base, 20, seed=42)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.objective == b.objective
    c = _train(base, 20, seed=43)
    assert not np.array_equal(a.centroids, c.centroids)
    for n_threads in (1, 2, 3):
        d = _train(base, 20, seed=42, n_threads=n_threads)
        np.testing.assert_array_equal(a.centroids, d.centroids)


def test_subsampling_is_seeded_and_bounded(small_clustered):
    base, _ = small_clustered
    # 3000 points, 8 centroids, at most 64 points per centroid: trains on a 512-point subsample.
    a = _train(base, 8, seed=9, max_points_per_centroid=64)
    b = _train(base, 8, seed=9, max_points_per_centroid=64)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert np.isfinite(a.centroids).all()
    full = _train(base, 8, seed=9)
    assert kmeans_objective(base, a.centroids) < 1.5 * kmeans_objective(base, full.centroids)


@pytest.mark.parametrize("n_distinct", [1, 4])
def test_empty_cluster_repair_on_degenerate_data(n_distinct):
    """Many duplicates: most clusters start empty; repair must keep every centroid finite and useful."""
    rng = np.random.default_rng(n_distinct)
    points = rng.standard_normal((n_distinct, 6)).astype(np.float32) + 3.0
    x = np.repeat(points, 1300 // n_distinct, axis=0)  # 1300 points, >= 39 per centroid below
    km = _train(x, 32, seed=0, niter=10)
    assert km.centroids.shape == (32, 6)
    assert np.isfinite(km.centroids).all(), "empty-cluster repair produced NaN/inf centroids"
    # Every centroid stays next to the data (copies of a cluster centre, slightly perturbed) ...
    nearest_point = pairwise(km.centroids, points, "l2").min(1)
    assert nearest_point.max() < 1e-2 * float((points**2).sum(1).max()), nearest_point.max()
    # ... and every distinct point is covered, so the objective is (almost) zero.
    assert kmeans_objective(x, km.centroids) < 1e-3 * float((x.astype(np.float64) ** 2).sum())


def test_more_centroids_than_distinct_points_are_still_split():
    """Two well-separated blobs of very different sizes: no centroid may be left empty."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1900, 4))
    small = rng.standard_normal((100, 4)) * 0.1 + 50.0
    x = np.vstack([big, small]).astype(np.float32)
    km = _train(x, 40, seed=2)
    labels = pairwise(x, km.centroids, "l2").argmin(1)
    sizes = np.bincount(labels, minlength=40)
    assert (sizes > 0).sum() >= 38, sizes  # a handful may tie/collapse, the rest are used
    assert np.isfinite(km.centroids).all()


def test_fewer_points_than_centroids_raises_with_numbers():
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError) as err:
        pqkit.KMeans(4, 16).train(x)
    message = str(err.value)
    assert re.search(r"\b16\b", message) and re.search(r"\b10\b", message), message


def test_training_warning_below_39_points_per_centroid():
    x = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    with pytest.warns(pqkit.TrainingWarning, match="39"):
        pqkit.KMeans(4, 10).train(x)


def test_assign_before_train_raises():
    with pytest.raises(ValueError, match=r"train"):
        pqkit.KMeans(4, 2).assign(np.zeros((1, 4), np.float32))
