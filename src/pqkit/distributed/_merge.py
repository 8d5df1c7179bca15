"""Exact merges of per-shard results (pure NumPy, no Ray): the top-k of a union is the top-k of
the parts' top-k, under pqkit's total order on (distance, id)."""

from __future__ import annotations

import numpy as np

__all__ = []


def _order(D: np.ndarray, I: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Column order of each row, best first: distance (largest first for similarities), then the
    smaller id. Padding (``+inf`` / ``-inf`` with id ``-1``) sorts last because no stored vector
    has an infinite distance (pqkit bounds vector magnitudes so that none can overflow)."""
    key = -D if higher_is_better else D
    return np.lexsort((I, key), axis=-1)


def merge_topk(D: np.ndarray, I: np.ndarray, k: int, higher_is_better: bool):
    """The best ``k`` of each row of concatenated per-shard results.

    Parameters
    ----------
    D : numpy.ndarray of float32, shape (n, c)
        Distances (or similarities) of each shard's results side by side, ``c >= k``.
    I : numpy.ndarray of int64, shape (n, c)
        Their ids, ``-1`` for padding.
    k : int
    higher_is_better : bool
        Similarities ("ip", "cosine"): largest first.

    Returns
    -------
    D : numpy.ndarray of float32, shape (n, k)
    I : numpy.ndarray of int64, shape (n, k)
        Ordered by (distance, id) as every pqkit index orders its results.
    """
    order = _order(D, I, higher_is_better)[:, :k]
    return (np.ascontiguousarray(np.take_along_axis(D, order, axis=1)),
            np.ascontiguousarray(np.take_along_axis(I, order, axis=1)))


def merge_refined(approx: np.ndarray, ids: np.ndarray, exact: np.ndarray, n_candidates: int, k: int,
                  higher_is_better: bool):
    """IndexRefine's two stages over shards: the global candidates, then the best ``k`` of them.

    Each shard returns its own best ``n_candidates`` by the base index's (approximate) distance,
    with the refined distance of each. The global candidates of a single index are the best
    ``n_candidates`` of the union by the approximate distance (each lies among its shard's best),
    and its result is the best ``k`` of those by the refined distance.

    Parameters
    ----------
    approx, exact : numpy.ndarray of float32, shape (n, c)
        Approximate and refined distances of each candidate, shards side by side.
    ids : numpy.ndarray of int64, shape (n, c)
        Candidate ids, ``-1`` for none.
    n_candidates, k : int
    higher_is_better : bool

    Returns
    -------
    D : numpy.ndarray of float32, shape (n, k)
    I : numpy.ndarray of int64, shape (n, k)
    """
    order = _order(approx, ids, higher_is_better)[:, :n_candidates]
    cand_ids = np.take_along_axis(ids, order, axis=1)
    cand_exact = np.take_along_axis(exact, order, axis=1)
    return merge_topk(cand_exact, cand_ids, k, higher_is_better)  # n_candidates >= k


def align_by_id(ids: np.ndarray, other_ids: np.ndarray, other_values: np.ndarray) -> np.ndarray:
    """``other_values`` reordered so that column j of each row belongs to ``ids[row, j]``.

    ``other_ids`` holds, per row, the same ids as ``ids`` in another order (``-1`` padding the
    same number of columns). Returns float32 of the shape of ``ids``.
    """
    mine = np.argsort(ids, axis=1, kind="stable")
    theirs = np.argsort(other_ids, axis=1, kind="stable")
    out = np.empty_like(other_values)
    np.put_along_axis(out, mine, np.take_along_axis(other_values, theirs, axis=1), axis=1)
    return out
