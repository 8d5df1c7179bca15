"""Choosing and building the index of a gallery: by name, or by a target recall.

Names are pqkit factory strings (:func:`pqkit.index_factory`) whose sizes may be left out and are
then derived from the gallery size ``n`` and dimension ``d``:

=====================  ===========================================================================
name                   index
=====================  ===========================================================================
``"Flat"``             exact search (:class:`pqkit.IndexFlat`)
``"IVF,Flat"``         :class:`pqkit.IndexIVFFlat` with ``nlist`` = :func:`default_nlist` (~sqrt(n))
``"IVF,PQ"``           :class:`pqkit.IndexIVFPQ`, ``nlist`` as above, ``M`` = :func:`default_m`,
                       ``nbits`` 8 (4 when n is too small to train 256 centroids per sub-quantizer),
                       wrapped in :class:`pqkit.IndexRefine`: its candidates are re-ranked (see
                       below). ``"IVF,PQ{M}"``, ``"IVF{nlist},PQ"``, ``"IVF,PQ,RFlat"``,
                       ``"IVF,PQ,Refine(PQ)"`` fill in the sizes left out the same way
``"IVF{nlist},PQ{M}x{nbits}"``, ``"PQ16"``, ...   any full factory string, used as is
=====================  ===========================================================================

Re-ranking. A compressed gallery that ranked by its 4- or 8-bit codes alone would lose label
precision against exact search (on Fashion-MNIST CNN features, about two points of
precision@1 with 4-bit codes). So every IVF-PQ name with sizes left out fetches
``k * k_factor`` candidates (``k_factor`` = :data:`DEFAULT_K_FACTOR`) and re-ranks them with
finer distances, chosen by ``refine`` and the memory budget (:func:`choose_refine`): the exact
vectors (``",RFlat"``, ``4 * d`` bytes per vector) or 8-bit PQ codes with about 4 dimensions per
byte (``",Refine(PQ{d/4}x8)"``). The ``nprobe`` of every IVF index built without one is the
smallest of ``nlist // 16, 2x, 4x, ...`` whose 10-recall@10 on a sample of the gallery reaches
:data:`DEFAULT_RECALL` (or where recall stops growing). :func:`build_gallery_index` measures and returns that recall, the expected
recall of the gallery; it is printed when a gallery is built and kept in its metadata.

:func:`choose_index` builds candidates (IVF-PQ with re-ranking, IVF-Flat, Flat) and returns the
fastest one whose k-recall@k on a held-out sample of the gallery reaches the target (see its
docstring).
"""

from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np

from .._validation import MIN_POINTS_PER_CENTROID as _POINTS_PER_CENTROID

__all__ = ["DEFAULT_K_FACTOR", "DEFAULT_RECALL", "REFINE_CHOICES", "IndexChoice", "build_gallery_index",
           "build_index", "choose_index", "choose_refine", "default_m", "default_nlist", "default_refine_m",
           "measure_recall", "resolve_description"]

# _POINTS_PER_CENTROID: points per centroid below which pqkit warns (TrainingWarning); sizes are
# chosen to stay above it.
_NAME = re.compile(r"IVF(?P<nlist>[0-9]*),(?P<kind>Flat|PQ(?P<M>[0-9]*)(?:x(?P<nbits>[0-9]+))?)"
                   r"(?P<refine>,RFlat|,Refine\(Flat\)|,Refine\(PQ(?P<refine_M>[0-9]*)(?:x8)?\))?")
#: Candidates fetched per result by a re-ranked gallery index (``k_factor``).
DEFAULT_K_FACTOR = 8.0
#: 10-recall@10 that the ``nprobe`` of a re-ranked gallery index is calibrated to reach.
DEFAULT_RECALL = 0.95
#: Values of ``refine``: "auto" (exact vectors or 8-bit PQ codes, by size and memory budget),
#: "flat" (exact vectors), "pq" (8-bit PQ codes), "none" (rank by the IVF-PQ codes alone).
REFINE_CHOICES = ("auto", "flat", "pq", "none")
#: Queries of the recall measured when a gallery index is built.
RECALL_QUERIES = 200


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


def default_refine_m(d: int) -> int:
    """Sub-quantizers of the 8-bit refine codes: the divisor of d nearest to d / 4 (no cap).

    About 4 dimensions per byte: 1280-d CNN features get 320-byte refine codes, a sixteenth of
    their exact vectors.
    """
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - d / 4), -m))


def _pq_nbits(n: int) -> int:
    if n >= _POINTS_PER_CENTROID * 256:
        return 8
    return 4


def _check_refine(refine) -> str:
    if refine not in REFINE_CHOICES:
        raise ValueError(f"refine must be one of {', '.join(map(repr, REFINE_CHOICES))}, got {refine!r}")
    return refine


def _check_budget(memory_budget_mb):
    if memory_budget_mb is None:
        return None
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or not (
            math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
        raise ValueError(f"memory_budget_mb must be a finite number > 0 (MiB), got {memory_budget_mb!r}")
    return float(memory_budget_mb)


def choose_refine(base: str, n: int, d: int, metric: str = "cosine", refine: str = "auto",
                  memory_budget_mb: float | None = None) -> str:
    """The re-ranking suffix of an IVF-PQ gallery index: ``",RFlat"``, ``",Refine(PQ{M}x8)"`` or ``""``.

    Parameters
    ----------
    base : str
        The full IVF-PQ factory string being wrapped, e.g. ``"IVF67,PQ64x4"``.
    n, d : int
        Gallery size and dimension.
    metric : {"cosine", "ip", "l2"}
    refine : {"auto", "flat", "pq", "none"}
        ``"auto"``: with a memory budget, the exact vectors when the whole index fits in it, else
        8-bit PQ codes (:func:`default_refine_m` bytes per vector); without one, 8-bit PQ codes
        when the gallery can train 256 centroids per sub-quantizer (n >= 9,984), else the exact
        vectors (a gallery that small takes at most ``40 * d`` KB of them).
    memory_budget_mb : float, optional
        Largest index memory in MiB (as :func:`pqkit.tune.estimate_memory` predicts it).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Unknown ``refine``, or a budget that not even the chosen (or smallest) re-ranked index
        fits (the message gives the sizes and the fix).
    """
    from ..tune import estimate_memory

    refine = _check_refine(refine)
    budget = _check_budget(memory_budget_mb)
    if refine == "none":
        return ""
    exact, codes = ",RFlat", f",Refine(PQ{default_refine_m(d)}x8)"
    mib = {s: estimate_memory(base + s, n, d, metric) / 2**20 for s in (exact, codes)}
    if refine == "flat":
        choice = exact
    elif refine == "pq":
        choice = codes
    elif budget is not None:
        choice = exact if mib[exact] <= budget else codes
    else:
        choice = codes if n >= _POINTS_PER_CENTROID * 256 else exact
    if budget is not None and mib[choice] > budget:
        raise ValueError(
            f"memory_budget_mb={budget:g} is too small for {base + choice!r} on {n} vectors of dimension {d} "
            f"({mib[choice]:.1f} MiB; re-ranking with 8-bit PQ codes takes {mib[codes]:.1f} MiB, with exact "
            f"vectors {mib[exact]:.1f} MiB); raise the budget, or pass refine='none' to rank by the IVF-PQ "
            "codes alone (less accurate)")
    return choice


def resolve_description(name: str, n: int, d: int, metric: str = "cosine", refine: str = "auto",
                        memory_budget_mb: float | None = None) -> str:
    """Fill the sizes left out of an index name.

    Parameters
    ----------
    name : str
        ``"Flat"``, ``"IVF,Flat"``, ``"IVF,PQ"``, ``"IVF,PQ{M}"``, ``"IVF{nlist},PQ"``, one of
        these followed by ``",RFlat"`` or ``",Refine(PQ)"``, or a full :func:`pqkit.index_factory`
        string.
    n, d : int
        Gallery size and dimension.
    metric : {"cosine", "ip", "l2"}
    refine : {"auto", "flat", "pq", "none"}, default "auto"
        Re-ranking of an IVF-PQ name with sizes left out (:func:`choose_refine`); ``"flat"`` and
        ``"pq"`` also apply to a full ``"IVF{nlist},PQ{M}x{nbits}"``. A refine suffix written in
        ``name`` wins.
    memory_budget_mb : float, optional
        See :func:`choose_refine`.

    Returns
    -------
    str
        A full factory string, e.g. ``"IVF245,PQ16x8,Refine(PQ16x8)"``.

    Raises
    ------
    TypeError
        ``name`` is not a str.
    ValueError
        The gallery is too small for an IVF or PQ index (the message suggests ``"Flat"``), or
        the memory budget is too small.
    """
    if not isinstance(name, str):
        raise TypeError(f"index must be a str such as 'Flat', 'IVF,Flat' or 'IVF,PQ', got {type(name).__name__}")
    refine = _check_refine(refine)
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
        if match.group("refine"):
            raise ValueError(f"index {name!r}: an IVF-Flat index holds exact vectors already; drop "
                             f"{match.group('refine')!r}")
        return f"IVF{nlist},Flat"
    M = int(match.group("M")) if match.group("M") else default_m(d)
    nbits = int(match.group("nbits")) if match.group("nbits") else _pq_nbits(n)
    if not match.group("nbits") and n < _POINTS_PER_CENTROID * 2 ** nbits:
        raise ValueError(
            f"index {name!r} needs at least {_POINTS_PER_CENTROID * 2 ** nbits} vectors to train "
            f"{2 ** nbits} PQ centroids per sub-quantizer, the gallery has {n}; use 'Flat' or 'IVF,Flat'"
        )
    base = f"IVF{nlist},PQ{M}x{nbits}"
    written = match.group("refine")
    if written in (",RFlat", ",Refine(Flat)"):
        return base + ",RFlat"
    if written:
        return base + f",Refine(PQ{int(match.group('refine_M') or default_refine_m(d))}x8)"
    named = not (match.group("nlist") and match.group("M") and match.group("nbits"))
    if refine == "auto" and not named:
        return base  # a full factory string is used as is
    return base + choose_refine(base, n, d, metric, refine, memory_budget_mb)


def _make_index(d: int, description: str, metric: str, seed: int):
    """An untrained index for a full description; IVF and PQ parts take ``seed``."""
    import pqkit

    match = _NAME.fullmatch(description)
    if match is None:
        return pqkit.index_factory(d, description, metric=metric)
    nlist = int(match.group("nlist"))
    if match.group("kind") == "Flat":
        return pqkit.IndexIVFFlat(d, nlist, metric, seed=seed)
    index = pqkit.IndexIVFPQ(d, nlist, int(match.group("M")), int(match.group("nbits")), metric, seed=seed)
    if not match.group("refine"):
        return index
    refine_index = None
    if match.group("refine_M"):
        refine_index = pqkit.IndexPQ(d, int(match.group("refine_M")), 8, metric, seed=seed)
    return pqkit.IndexRefine(index, DEFAULT_K_FACTOR, refine_index)


def build_index(vectors: np.ndarray, ids: np.ndarray, name: str, metric: str = "cosine",
                nprobe: int | None = None, seed: int = 1234, refine: str = "auto",
                memory_budget_mb: float | None = None):
    """Create, train and fill an index.

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
    ids : ndarray of int64, shape (n,)
    name : str
        See :func:`resolve_description`.
    metric : {"cosine", "ip", "l2"}
    nprobe : int, optional
        Lists probed per query by IVF indexes. Default: ``max(1, nlist // 16)``
        (:func:`build_gallery_index` calibrates it instead).
    seed : int
        Seed of k-means and PQ training.
    refine : {"auto", "flat", "pq", "none"}, default "auto"
    memory_budget_mb : float, optional
        See :func:`resolve_description`.

    Returns
    -------
    index : pqkit.Index
    description : str
        The full factory string that was built.
    """
    n, d = vectors.shape
    description = resolve_description(name, n, d, metric, refine, memory_budget_mb)
    index = _make_index(d, description, metric, seed)
    index.train(vectors)
    index.add_with_ids(vectors, ids)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe if nprobe is not None else max(1, _nlist(index) // 16)
    return index, description


def _nlist(index) -> int:
    """Lists of an IVF index, or of the IVF index a refine stage wraps."""
    return getattr(index, "base_index", index).nlist


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Rows of the exact k nearest ``vectors`` of each query, best first, without copying
    ``vectors`` (chunks of 65,536 rows; cosine rows are unit already)."""
    from .._validation import normalize_rows

    if metric == "cosine":
        queries = normalize_rows(queries, "queries")
    k = min(k, vectors.shape[0])
    best_scores = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_rows = np.empty((queries.shape[0], 0), dtype=np.int64)
    for start in range(0, vectors.shape[0], 65536):
        chunk = vectors[start:start + 65536]
        scores = queries @ chunk.T
        if metric == "l2":  # larger is closer: -||x - q||^2 up to the query's constant
            scores = 2 * scores - np.einsum("ij,ij->i", chunk, chunk)[None, :]
        rows = np.arange(start, start + chunk.shape[0], dtype=np.int64)
        all_scores = np.concatenate([best_scores, scores.astype(np.float32)], axis=1)
        all_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
        keep = np.argpartition(-all_scores, min(k, all_scores.shape[1]) - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_rows = np.take_along_axis(all_rows, keep, axis=1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_rows, order, axis=1)


def _recall_without_self(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    hits = 0
    for row in range(found.shape[0]):
        f = [i for i in found[row] if i != self_ids[row] and i >= 0][:k]
        t = [i for i in truth[row] if i != self_ids[row]][:k]
        hits += len(set(f) & set(t))
    return hits / (found.shape[0] * k)


def _recall_sample(vectors, ids, k, metric, n_queries, seed):
    """A seeded sample of gallery vectors as queries, their ids and exact neighbours' ids (k + 1)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(vectors.shape[0], size=min(n_queries, vectors.shape[0]), replace=False)
    truth = ids[_exact_top(vectors, vectors[rows], k + 1, metric)]
    return vectors[rows], ids[rows], truth


def measure_recall(index, vectors: np.ndarray, ids: np.ndarray, k: int = 10, metric: str = "cosine",
                   n_queries: int = RECALL_QUERIES, seed: int = 1234, sample=None) -> float:
    """k-recall@k of a gallery index on gallery vectors, each query's own id left out.

    Parameters
    ----------
    index : pqkit.Index
        Holds ``vectors`` under ``ids``.
    vectors : ndarray of float32, shape (n, d)
        As added (unit rows for "cosine").
    ids : ndarray of int64, shape (n,)
    k : int, default 10
    metric : {"cosine", "ip", "l2"}
    n_queries : int, default 200
        Gallery vectors drawn at random (seeded) as queries.
    seed : int
    sample : tuple, optional
        A ``(queries, query_ids, truth)`` sample computed before (reused across settings).

    Returns
    -------
    float in [0, 1]
        ``|found_k ∩ exact_k| / k`` averaged over the queries, where both lists leave out the
        query's own id (so finding itself earns nothing): an estimate of the recall of fresh
        queries drawn like the gallery.
    """
    queries, query_ids, truth = sample if sample is not None else _recall_sample(
        vectors, ids, k, metric, n_queries, seed)
    found = index.search(queries, k + 1)[1]
    return _recall_without_self(found, truth, query_ids, k)


class IndexChoice(dict):
    """The outcome of :func:`choose_index`: a dict with ``description``, ``nprobe``,
    ``recall``, ``ms_per_query`` and ``candidates`` (every setting tried, as dicts)."""


def _refine_kind(index) -> str | None:
    refine_index = getattr(index, "refine_index", None)
    if refine_index is None:
        return None
    if hasattr(refine_index, "pq"):
        return f"{refine_index.code_size}-byte 8-bit PQ codes"
    return "exact vectors"


def build_gallery_index(vectors: np.ndarray, ids: np.ndarray, name: str, metric: str = "cosine",
                        nprobe: int | None = None, seed: int = 1234, refine: str = "auto",
                        memory_budget_mb: float | None = None, k: int = 10,
                        n_queries: int = RECALL_QUERIES):
    """Build a gallery's index by name and measure its expected recall.

    As :func:`build_index`, then: an IVF index (re-ranked or not) without an ``nprobe`` given
    gets the smallest ``nprobe`` of ``nlist // 16, 2x, 4x, ..., nlist`` whose k-recall@k
    (:func:`measure_recall`) reaches :data:`DEFAULT_RECALL`, stopping early when a doubling gains
    less than 0.005 (the codes, not the lists probed, limit recall). The recall of the final
    setting is measured (1.0 for ``"Flat"``, without a search).

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
    ids : ndarray of int64, shape (n,)
    name, metric, nprobe, seed, refine, memory_budget_mb
        As in :func:`build_index`.
    k : int, default 10
        The k of the recall.
    n_queries : int, default 200

    Returns
    -------
    index : pqkit.Index
    report : dict
        ``description``, ``nprobe``, ``k_factor``, ``refine`` (``"exact vectors"``,
        ``"<M>-byte 8-bit PQ codes"`` or None), ``recall``, ``k``, ``n_queries``,
        ``memory_bytes`` (``index.memory_usage_bytes()``).
    """
    import pqkit

    index, description = build_index(vectors, ids, name, metric, nprobe=nprobe, seed=seed, refine=refine,
                                      memory_budget_mb=memory_budget_mb)
    n_sample = min(n_queries, vectors.shape[0])
    if isinstance(index, pqkit.IndexFlat):
        recall = 1.0
    else:
        sample = _recall_sample(vectors, ids, k, metric, n_queries, seed)
        recall = measure_recall(index, vectors, ids, k, metric, sample=sample)
        if nprobe is None and hasattr(index, "nprobe"):
            while recall < DEFAULT_RECALL and index.nprobe < _nlist(index):
                index.nprobe = min(2 * index.nprobe, _nlist(index))
                previous, recall = recall, measure_recall(index, vectors, ids, k, metric, sample=sample)
                if recall < previous + 0.005:
                    break  # the codes, not the lists probed, limit recall
    return index, {
        "description": description, "nprobe": getattr(index, "nprobe", None),
        "k_factor": getattr(index, "k_factor", None), "refine": _refine_kind(index), "recall": float(recall),
        "k": int(k), "n_queries": int(n_sample), "memory_bytes": int(index.memory_usage_bytes()),
    }


def choose_index(vectors: np.ndarray, ids: np.ndarray, target_recall: float, k: int = 10,
                 metric: str = "cosine", n_queries: int = RECALL_QUERIES, seed: int = 1234, refine: str = "auto",
                 memory_budget_mb: float | None = None):
    """Build the fastest index whose k-recall@k reaches ``target_recall``.

    Queries are ``n_queries`` gallery vectors drawn at random (seeded); each query's own id is
    removed from both the exact and the approximate result lists before comparing their first
    k entries, so finding itself earns nothing. Candidates, cheapest first: ``IVF,PQ`` (when the
    gallery can train it; re-ranked as ``refine`` and ``memory_budget_mb`` say, see
    :func:`choose_refine`) and ``IVF,Flat`` at nprobe 1, 2, 4, ... up to nlist, then ``Flat``
    (recall 1). Among the settings that reach the target the one with the lowest measured time
    per query (one batch) wins; if none does, ``Flat``. A memory budget leaves out the
    candidates it cannot hold (``Flat`` stays the fallback).

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
    ids : ndarray of int64, shape (n,)
    target_recall : float in (0, 1]
    k : int, default 10
    metric : {"cosine", "ip", "l2"}
    n_queries : int, default 200
    seed : int
    refine : {"auto", "flat", "pq", "none"}, default "auto"
    memory_budget_mb : float, optional

    Returns
    -------
    index : pqkit.Index
    choice : IndexChoice
        Also holds ``k_factor``, ``refine`` and ``memory_bytes`` of the chosen index.
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
    refine = _check_refine(refine)
    budget = _check_budget(memory_budget_mb)
    for name in names:
        try:
            description = resolve_description(name, n, d, metric, refine, memory_budget_mb)
        except ValueError:
            continue  # over the memory budget
        if budget is not None and _estimate_mib(description, n, d, metric) > budget:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            index, description = build_index(vectors, ids, description, metric, nprobe=1, seed=seed)
        built[description] = index
        nprobe = 1
        while nprobe <= _nlist(index):
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
    return index, IndexChoice(best, candidates=candidates, target_recall=float(target_recall), k=k,
                              k_factor=getattr(index, "k_factor", None), refine=_refine_kind(index),
                              memory_bytes=int(index.memory_usage_bytes()))


def _estimate_mib(description: str, n: int, d: int, metric: str) -> float:
    from ..tune import estimate_memory

    return estimate_memory(description, n, d, metric) / 2**20
