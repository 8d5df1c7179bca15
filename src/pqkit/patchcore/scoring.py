"""PatchCore scores: patch, image and pixel level, and their AUROC.

Notation of Roth et al. 2022, section 3.3. ``M`` is the memory bank, ``P(x_test)`` the patch
features of a test image. All distances here are **Euclidean (not squared)**: the backends
return squared L2 (pqkit's convention), and :func:`patch_scores` takes the square root.

- patch score: ``s(p) = min_{m in M} ||p - m||`` (distance to the nearest memory-bank feature);
- image score with the paper's reweighting (its equation 7):

      m_test*, m* = argmax_{p in P(x_test)} argmin_{m in M} ||p - m||
      s*          = ||m_test* - m*||
      s           = (1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||) * s*

  where ``N_b(m*)`` are the ``b`` nearest memory-bank neighbours of ``m*`` (``m*`` itself
  first; ``b = num_neighbors``, default 9). The fraction is a softmax over the ``b`` distances,
  computed with ``scipy.special.softmax`` (no overflow). The memory-bank vectors are taken as the
  backend stores them (decoded codes for PQ backends). ``reweight=False`` gives ``s = s*``;
- anomaly map: the (h, w) grid of patch scores, upsampled bilinearly to the image size and
  smoothed by a Gaussian with sigma = 4 pixels (``scipy.ndimage``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["anomaly_maps", "image_auroc", "image_scores", "patch_scores", "pixel_auroc",
           "reweighted_scores"]


def patch_scores(backend, features: np.ndarray):
    """Nearest-neighbour distance of every patch.

    Parameters
    ----------
    backend : pqkit.patchcore.neighbors.Backend
        Fitted on the memory bank.
    features : numpy.ndarray of float32, shape (n, h, w, d)

    Returns
    -------
    distances : numpy.ndarray of float32, shape (n, h, w)
        Euclidean distance (square root of the backend's squared L2, clipped at 0).
    nearest : numpy.ndarray of int64, shape (n, h, w)
        Memory-bank id of each patch's nearest neighbour.
    """
    n, h, w, d = features.shape
    squared, ids = backend.search(features.reshape(-1, d), 1)
    distances = np.sqrt(np.maximum(squared[:, 0], 0.0)).reshape(n, h, w)
    return distances.astype(np.float32), ids[:, 0].reshape(n, h, w)


def image_scores(features: np.ndarray, distances: np.ndarray, nearest: np.ndarray, backend=None,
                 num_neighbors: int = 9, reweight: bool = True) -> np.ndarray:
    """Image anomaly scores (module docstring, equation 7 of the paper).

    Parameters
    ----------
    features : numpy.ndarray of float32, shape (n, h, w, d)
        Patch features of the test images.
    distances, nearest : numpy.ndarray, shape (n, h, w)
        From :func:`patch_scores`.
    backend : Backend, optional
        Required when ``reweight``: used to find ``N_b(m*)`` and to reconstruct its vectors.
    num_neighbors : int, default 9
        ``b``; with ``b = 1`` the weight is 0 for every image, so ``b >= 2`` is required.
    reweight : bool, default True

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
    """
    n = distances.shape[0]
    flat_dist = distances.reshape(n, -1)
    best = flat_dist.argmax(axis=1)
    s_star = flat_dist[np.arange(n), best].astype(np.float64)
    if not reweight:
        return s_star
    if backend is None:
        raise ValueError("reweight=True needs the backend (to find the neighbours of m*)")
    d = features.shape[-1]
    m_test = features.reshape(n, -1, d)[np.arange(n), best]  # (n, d)
    m_star_ids = nearest.reshape(n, -1)[np.arange(n), best]  # (n,)
    return reweighted_scores(m_test, s_star, m_star_ids, backend, num_neighbors)


def reweighted_scores(m_test: np.ndarray, s_star: np.ndarray, m_star_ids: np.ndarray, backend,
                      num_neighbors: int = 9) -> np.ndarray:
    """The reweighting of equation 7 (module docstring), given each image's most anomalous patch.

    Parameters
    ----------
    m_test : numpy.ndarray of float32, shape (n, d)
        The patch feature with the largest patch score of each image.
    s_star : numpy.ndarray of float64, shape (n,)
        Its patch score.
    m_star_ids : numpy.ndarray of int64, shape (n,)
        Its nearest memory-bank id.
    backend : Backend
    num_neighbors : int, default 9

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
    """
    from scipy.special import softmax

    if num_neighbors < 2:
        raise ValueError(f"num_neighbors must be >= 2 for the reweighting, got {num_neighbors}")
    n = s_star.shape[0]
    m_star = backend.reconstruct(m_star_ids)
    _, support = backend.search(m_star, num_neighbors)
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        # N_b(m*) with m* itself first (a PQ backend may not return m* as its own neighbour)
        others = [j for j in support[i] if j != m_star_ids[i] and j >= 0]
        ids = np.array([m_star_ids[i]] + others[: num_neighbors - 1], dtype=np.int64)
        vectors = backend.reconstruct(ids)
        dists = np.linalg.norm(vectors.astype(np.float64) - m_test[i], axis=1)
        weight = 1.0 - softmax(dists)[0]
        scores[i] = weight * s_star[i]
    return scores


def anomaly_maps(distances: np.ndarray, size, sigma: float = 4.0) -> np.ndarray:
    """Pixel anomaly maps from patch scores.

    Parameters
    ----------
    distances : numpy.ndarray of float, shape (n, h, w)
    size : int or (height, width)
        Output size in pixels.
    sigma : float, default 4
        Gaussian smoothing in output pixels.

    Returns
    -------
    numpy.ndarray of float32, shape (n, height, width)
    """
    from scipy import ndimage

    height, width = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    n, h, w = distances.shape
    out = np.empty((n, height, width), dtype=np.float32)
    for i in range(n):
        upsampled = ndimage.zoom(distances[i].astype(np.float32), (height / h, width / w), order=1,
                                 mode="nearest", grid_mode=True)
        out[i] = ndimage.gaussian_filter(upsampled[:height, :width], sigma=sigma)
    return out


def image_auroc(labels, scores) -> float:
    """Image-level AUROC (scikit-learn ``roc_auc_score``); labels 1 = anomalous."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) != 2:
        raise ValueError("image AUROC needs both normal (0) and anomalous (1) test images")
    return float(roc_auc_score(labels, np.asarray(scores)))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC over all pixels of all images (scikit-learn ``roc_auc_score``).

    Parameters
    ----------
    masks : numpy.ndarray of bool, shape (n, H, W)
    maps : numpy.ndarray of float, shape (n, H, W)

    Returns
    -------
    float, or nan when the masks hold no anomalous pixel (or no normal one)
    """
    from sklearn.metrics import roc_auc_score

    masks = np.asarray(masks, dtype=bool)
    if masks.shape != np.shape(maps):
        raise ValueError(f"masks {masks.shape} and maps {np.shape(maps)} must have the same shape")
    truth = masks.reshape(-1)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(maps).reshape(-1)))
