"""Choosing and building the index of a gallery: by name, or by a target recall.

Names are pqkit factory strings (:func:`pqkit.index_factory`) whose sizes may be left out and are
then derived from the gallery size ``n`` and dimension ``d``:

=====================  ===========================================================================
name                   index
=====================  ===========================================================================
``"Flat"``             exact search (:class:`pqkit.IndexFlat`)
``"IVF,Flat"``         :class:`pqkit.IndexIVFFlat` with ``nlist`` = :func:`default_nlist` (~sqrt(n))
``"IVF,PQ"``           :class:`pqkit.IndexIVFPQ`, ``nlist`` as above, ``M`` = :func:`default_m`,
                       ``nbits`` 8 (4 when n is too small to train 256 centroids per sub-quantizer)
``"IVF{nlist},PQ{M}x{nbits}"``, ``"PQ16"``, ...   any full factory string, used as is
=====================  ===========================================================================

:func:`choose_index` builds candidates (IVF-PQ, IVF-Flat, Flat) and returns the fastest one whose
k-recall@k on a held-out sample of the gallery reaches the target (see its docstring).
"""

from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np

from .._validation import MIN_POINTS_PER_CENTROID as _POINTS_PER_CENTROID

__all__ = ["IndexChoice", "build_index", "choose_index", "default_m", "default_nlist", "resolve_description"]

# _POINTS_PER_CENTROID: points per centroid below which pqkit warns (TrainingWarning); sizes are
# chosen to stay above it.
_NAME = re.compile(r"IVF(?P<nlist>[0-9]*),(?P<kind>Flat|PQ(?P<M>[0-9]*)(?:x(?P<nbits>[0-9]+))?)")


def default_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: round(sqrt(n)), at most n / 39 (at least 1).

    The sqrt(N) rule of thumb; the cap keeps 39 training points per centroid, pqkit's (and
    FAISS's) threshold for a reliable k-means.
    """
    return max(1, min(int(round(math.sqrt(max(n, 1)))), n // _POINTS_PER_CENTROID))


def default_m(d: int) -> int:
    """Number of PQ sub-quantizers for dimension ``d``: the divisor of d nearest to d / 4, at most 64.

    About 4 dimensions per sub-quantizer (one byte each with nbits=8) keeps recall high; the cap
    bounds the code at 64 bytes for wide CNN features (1280-d -> 64 sub-quantizers of 20 dims).
    """
    divisors = [m for m in range(1, min(d, 64) + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - d / 4), -m))


def _pq_nbits(n: int) -> int:
    if n >= _POINTS_PER_CENTROID * 256:
        return 8
    return 4


def resolve_description(name: str, n: int, d: int) -> str:
    """Fill the sizes left out of an index name.

    Parameters
    ----------
    name : str
        ``"Flat"``, ``"IVF,Flat"``, ``"IVF,PQ"``, ``"IVF,PQ{M}"``, ``"IVF{nlist},PQ"`` or a full
        :func:`pqkit.index_factory` string.
    n, d : int
        Gallery size and dimension.

    Returns
    -------
    str
        A full factory string, e.g. ``"IVF245,PQ16x8"``.

    Raises
    ------
    TypeError
        ``name`` is not a str.
    ValueError
        The gallery is too small for an IVF or PQ index (the message suggests ``"Flat"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"index must be a str such as 'Flat', 'IVF,Flat' or 'IVF,PQ', got {type(name).__name__}")
    name = name.strip()
    match = _NAME.fullmatch(name)
    if match is None:
        return name  # "Flat", "PQ16", ...: checked by pqkit.index_factory
    nlist = int(match.group("nlist")) if match.group("nlist") else default_nlist(n)
    if n < nlist:
        raise ValueError(
            f"index {name!r} needs at least nlist={nlist} vectors to train its coarse quantizer, the "
            f"gallery has {n}; use index='Flat' for small galleries"
        )
    if match.group("kind") == "Flat":
        return f"IVF{nlist},Flat"
    M = int(match.group("M")) if match.group("M") else default_m(d)
    nbits = int(match.group("nbits")) if match.group("nbits") else _pq_nbits(n)
    if not match.group("nbits") and n < _POINTS_PER_CENTROID * 2 ** nbits:
        raise ValueError(
            f"index {name!r} needs at least {_POINTS_PER_CENTROID * 2 ** nbits} vectors to train "
            f"{2 ** nbits} PQ centroids per sub-quantizer, the gallery has {n}; use 'Flat' or 'IVF,Flat'"
        )
    return f"IVF{nlist},PQ{M}x{nbits}"


def build_index(vectors: np.ndarray, ids: np.ndarray, name: str, metric: str = "cosine",
                nprobe: int | None = None, seed: int = 1234):
    """Create, train and fill an index.

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
    ids : ndarray of int64, shape (n,)
    name : str
        See :func:`resolve_description`.
    metric : {"cosine", "ip", "l2"}
    nprobe : int, optional
        Lists probed per query by IVF indexes. Default: ``max(1, nlist // 16)``.
    seed : int
        Seed of k-means and PQ training.

    Returns
    -------
    index : pqkit.Index
    description : str
        The full factory string that was built.
    """
    import pqkit

    n, d = vectors.shape
    description = resolve_description(name, n, d)
    ivf = _NAME.fullmatch(description)
    if ivf is None:
        index = pqkit.index_factory(d, description, metric=metric)
    elif ivf.group("kind") == "Flat":
        index = pqkit.IndexIVFFlat(d, int(ivf.group("nlist")), metric, seed=seed)
    else:
        index = pqkit.IndexIVFPQ(d, int(ivf.group("nlist")), int(ivf.group("M")), int(ivf.group("nbits")),
                                 metric, seed=seed)
    index.train(vectors)
    index.add_with_ids(vectors, ids)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe if nprobe is not None else max(1, index.nlist // 16)
    return index, description


class IndexChoice(dict):
    """The outcome of :func:`choose_index`: a dict with ``description``, ``nprobe``,
    ``recall``, ``ms_per_query`` and ``candidates`` (every setting tried, as dicts)."""


def _recall_without_self(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    hits = 0
    for row in range(found.shape[0]):
        f = [i for i in found[row] if i != self_ids[row] and i >= 0][:k]
        t = [i for i in truth[row] if i != self_ids[row]][:k]
        hits += len(set(f) & set(t))
    return hits / (found.shape[0] * k)


def choose_index(vectors: np.ndarray, ids: np.ndarray, target_recall: float, k: int = 10,
                 metric: str = "cosine", n_queries: int = 200, seed: int = 1234):
    """Build the fastest index whose k-recall@k reaches ``target_recall``.

    Queries are ``n_queries`` gallery vectors drawn at random (seeded); each query's own id is
    removed from both the exact and the approximate result lists before comparing their first
    k entries, so finding itself earns nothing. Candidates, cheapest first: ``IVF,PQ`` (when the
    gallery can train it) and ``IVF,Flat`` at nprobe 1, 2, 4, ... up to nlist, then ``Flat``
    (recall 1). Among the settings that reach the target the one with the lowest measured time
    per query (one batch) wins; if none does, ``Flat``.

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
    ids : ndarray of int64, shape (n,)
    target_recall : float in (0, 1]
    k : int, default 10
    metric : {"cosine", "ip", "l2"}
    n_queries : int, default 200
    seed : int

    Returns
    -------
    index : pqkit.Index
    choice : IndexChoice
    """
    import pqkit

    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or not (
        0 < target_recall <= 1
    ):
        raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
    n, d = vectors.shape
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(n_queries, n), replace=False)
    queries, query_ids = vectors[rows], ids[rows]
    flat = pqkit.IndexFlat(d, metric)
    flat.add_with_ids(vectors, ids)
    _, truth = flat.search(queries, k + 1)
    start = time.perf_counter()
    flat.search(queries, k)
    flat_ms = 1e3 * (time.perf_counter() - start) / len(rows)
    candidates = [{"description": "Flat", "nprobe": None, "recall": 1.0, "ms_per_query": flat_ms}]
    built = {"Flat": flat}
    names = []
    if n >= _POINTS_PER_CENTROID * 16 and default_nlist(n) >= 4:
        names.append("IVF,PQ")
    if default_nlist(n) >= 4:
        names.append("IVF,Flat")
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            index, description = build_index(vectors, ids, name, metric, nprobe=1, seed=seed)
        built[description] = index
        nprobe = 1
        while nprobe <= index.nlist:
            index.nprobe = nprobe
            found = index.search(queries, k + 1)[1]
            start = time.perf_counter()
            index.search(queries, k)
            ms = 1e3 * (time.perf_counter() - start) / len(rows)
            recall = _recall_without_self(found, truth, query_ids, k)
            candidates.append({"description": description, "nprobe": nprobe, "recall": recall, "ms_per_query": ms})
            if recall >= target_recall:
                break
            if nprobe >= 8 and recall <= candidates[-2]["recall"] + 0.005:
                break  # plateau: the codes, not the lists probed, limit recall
            nprobe *= 2
    passing = [c for c in candidates if c["recall"] >= target_recall]
    best = min(passing, key=lambda c: c["ms_per_query"])
    index = built[best["description"]]
    if best["nprobe"] is not None:
        index.nprobe = best["nprobe"]
    return index, IndexChoice(best, candidates=candidates, target_recall=float(target_recall), k=k)
