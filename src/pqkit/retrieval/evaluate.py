"""Retrieval quality and speed: recall@k against exact search, mAP and precision@k by label, latency.

Definitions (``k`` results per query, best first, ``-1`` = no result):

- **k-recall@k** (ANN quality): ``|found_k ∩ exact_k| / k`` averaged over queries, where
  ``exact_k`` are the true k nearest neighbours (:func:`exact_neighbors`).
- **precision@k** (label quality): the fraction of the k results sharing the query's label.
- **AP@k**: ``(1 / min(k, R)) * sum_{i<=k} P(i) * rel(i)`` with ``rel(i)`` = 1 when result i has
  the query's label, ``P(i)`` = precision of the first i results and ``R`` the number of gallery
  items with the query's label; **mAP@k** is its mean over queries. With ``k = n`` (the whole
  ranking) this is the usual average precision (it equals
  :func:`sklearn.metrics.average_precision_score` for untied scores).
- **latency**: time of single-query searches (one query per call), reported as the median and
  90th percentile in milliseconds, as wall-clock and as process CPU time (see
  :func:`query_latency_ms`).
"""

from __future__ import annotations

import time

import numpy as np

from .._validation import as_float_matrix, check_k

__all__ = [
    "exact_neighbors",
    "mean_average_precision",
    "precision_at_k",
    "query_latency_ms",
    "recall_at_k",
]


def _check_id_matrix(ids, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or arr.ndim != 2:
        raise TypeError(f"{name} must be a 2-D integer array (nq, k), got dtype {arr.dtype} and shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def recall_at_k(found_ids, true_ids) -> float:
    """k-recall@k: mean fraction of the true k nearest neighbours found among the first k results.

    Parameters
    ----------
    found_ids : array_like of int, shape (nq, k_found)
        Ids returned by the index under test, best first (``-1`` padding never matches);
        only the first ``k`` columns count, k = ``true_ids.shape[1]``.
    true_ids : array_like of int, shape (nq, k)
        The exact k nearest neighbours.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> recall_at_k(np.array([[3, 2, 9]]), np.array([[1, 2, 3]]))
    0.6666666666666666
    """
    found, truth = _check_id_matrix(found_ids, "found_ids"), _check_id_matrix(true_ids, "true_ids")
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found_ids and true_ids need the same number of rows, got {found.shape[0]} and {truth.shape[0]}")
    k = truth.shape[1]
    if found.shape[1] < k:
        raise ValueError(f"found_ids has {found.shape[1]} columns, fewer than k={k} of true_ids")
    found = found[:, :k]
    # a row's true ids are unique, so matches per row = number of found entries that occur in it
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    return float(hits.sum() / truth.size) if truth.size else 1.0


def exact_neighbors(base, queries, k: int, metric: str = "cosine"):
    """Exact k nearest neighbours with :class:`pqkit.IndexFlat` (the ground truth).

    Parameters
    ----------
    base : array_like of float, shape (n, d)
    queries : array_like of float, shape (nq, d)
    k : int
    metric : {"cosine", "ip", "l2"}

    Returns
    -------
    scores : ndarray of float32, shape (nq, k)
    ids : ndarray of int64, shape (nq, k)
        Row numbers into ``base``.
    """
    import pqkit

    base = as_float_matrix(base, name="base")
    flat = pqkit.IndexFlat(base.shape[1], metric)
    flat.add(base)
    return flat.search(as_float_matrix(queries, base.shape[1], name="queries"), check_k(k))


def _relevance(result_labels, query_labels) -> np.ndarray:
    result_labels, query_labels = np.asarray(result_labels), np.asarray(query_labels)
    if result_labels.ndim != 2 or query_labels.ndim != 1 or result_labels.shape[0] != query_labels.shape[0]:
        raise ValueError(
            f"result_labels must be (nq, k) and query_labels (nq,), got {result_labels.shape} and {query_labels.shape}"
        )
    return result_labels == query_labels[:, None]


def precision_at_k(result_labels, query_labels) -> float:
    """Mean fraction of the k results whose label equals the query's.

    Parameters
    ----------
    result_labels : array_like, shape (nq, k)
        Labels of the results, best first (``gallery_labels[ids]``); a padded result must carry a
        label that matches nothing (e.g. -1).
    query_labels : array_like, shape (nq,)

    Returns
    -------
    float in [0, 1]
    """
    return float(_relevance(result_labels, query_labels).mean())


def mean_average_precision(result_labels, query_labels, n_relevant) -> float:
    """mAP@k (see the module docstring for the formula).

    Parameters
    ----------
    result_labels : array_like, shape (nq, k)
        Labels of the results, best first.
    query_labels : array_like, shape (nq,)
    n_relevant : array_like of int, shape (nq,)
        R per query: gallery items with the query's label (excluding the query itself when it is
        a gallery item left out of its own results).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> mean_average_precision([[1, 0, 1]], [1], [2])  # hits at ranks 1 and 3: (1 + 2/3) / 2
    0.8333333333333333
    """
    rel = _relevance(result_labels, query_labels).astype(np.float64)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    k = rel.shape[1]
    precision = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    denominator = np.minimum(n_relevant, k)
    ap = np.where(denominator > 0, (precision * rel).sum(axis=1) / np.maximum(denominator, 1), 0.0)
    return float(ap.mean()) if ap.size else 0.0


def query_latency_ms(search, queries, k: int, repeat: int = 1) -> dict:
    """Per-query latency: one ``search(q[None], k)`` call per query, timed separately.

    Each call is timed twice: wall clock (``time.perf_counter``) and CPU time of the process
    (``time.process_time``, all threads). With single-threaded searches on a machine shared with
    other work, wall time also counts the time the process waited for a core, while CPU time
    counts only the work done, which is what an idle machine's wall time would be (up to cache
    and memory-bandwidth contention).

    Parameters
    ----------
    search : callable (ndarray float32 (1, d), int) -> anything
    queries : ndarray of float32, shape (nq, d)
    k : int
    repeat : int, default 1
        Passes over the queries; the first query is searched once untimed first (warm-up).

    Returns
    -------
    dict
        ``median_ms``, ``p90_ms``, ``mean_ms`` (wall clock), ``cpu_median_ms``, ``cpu_mean_ms``
        (process CPU time) and ``n`` (number of timed calls).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    search(queries[:1], k)
    wall, cpu = [], []
    for _ in range(repeat):
        for row in range(queries.shape[0]):
            q = queries[row:row + 1]
            start, start_cpu = time.perf_counter(), time.process_time()
            search(q, k)
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start)
    t, c = 1e3 * np.asarray(wall), 1e3 * np.asarray(cpu)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "cpu_median_ms": float(np.median(c)), "cpu_mean_ms": float(c.mean()), "n": int(t.size)}
