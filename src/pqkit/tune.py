"""Choosing search parameters and index types: :func:`tune`, :func:`suggest`,
:func:`estimate_memory`.

``tune`` measures: it computes the exact neighbours of a sample of queries and searches the index
at increasing ``nprobe`` (and refine ``k_factor``) until a recall target is met. ``suggest`` and
``estimate_memory`` only compute: they predict the bytes an index built from a factory string
will report in ``memory_usage_bytes()`` after one ``add`` of ``n`` vectors, before anything is
built or trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._validation import MIN_POINTS_PER_CENTROID, as_float_matrix, check_int, check_k, check_positive_int
from .indexes import registry

__all__ = ["Suggestion", "TuneReport", "estimate_memory", "suggest", "tune"]

#: PQ codes sit in blocks of this many codes.


# =============================================================================== tune
@dataclass
class TuneReport:
    """Result of :func:`tune`.

    Attributes
    ----------
    nprobe : int or None
        Chosen ``nprobe`` (None: the index has no inverted file).
    k_factor : float or None
        Chosen refine factor (None: the index is not an :class:`pqkit.IndexRefine`).
    recall : float
        k-recall@k of the chosen setting on the sample (mean of ``|found & true| / k``).
    seconds_per_query : float
        Measured search time of the chosen setting (batch search of the sample).
    reached : bool
        Whether ``recall >= target_recall``; when False the best recall found is reported.
    target_recall : float
    k : int
    n_queries : int
        Queries in the sample.
    trials : list of dict
        Every setting tried: ``nprobe``, ``k_factor``, ``recall``, ``seconds_per_query``.
    """

    nprobe: int | None
    k_factor: float | None
    recall: float
    seconds_per_query: float
    reached: bool
    target_recall: float
    k: int
    n_queries: int
    trials: list = field(default_factory=list)

    def __str__(self) -> str:
        setting = ", ".join(f"{name}={value}" for name, value in
                            (("nprobe", self.nprobe), ("k_factor", self.k_factor))
                            if value is not None) or "no parameters"
        verdict = "reaches" if self.reached else "does NOT reach"
        return (f"{setting}: {self.k}-recall@{self.k} {self.recall:.4f} on {self.n_queries} "
                f"queries ({verdict} {self.target_recall}), "
                f"{1e3 * self.seconds_per_query:.3f} ms/query")


def _find(index, attribute: str):
    """The first index, looking through the parts of wrappers (IndexRefine, IndexPreTransform),
    that has ``attribute``: ``"nlist"`` finds the inverted file whose ``nprobe`` is tuned,
    ``"k_factor"`` the refine stage."""
    pending = [index]
    while pending:
        part = pending.pop(0)
        if hasattr(part, attribute):
            return part
        pending.extend(part._parts())
    return None


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(np.intersect1d(f[f >= 0], t[t >= 0]).size for f, t in zip(found, truth))
    return hits / (k * truth.shape[0])


def _powers_of_two(limit: int):
    values, v = [], 1
    while v < limit:
        values.append(v)
        v *= 2
    values.append(limit)
    return values


def tune(index, queries, target_recall=0.95, k=10, *, xb=None, max_queries=500,
         k_factors=(1, 2, 4, 8, 16), apply=True, seed=0):
    """Find the cheapest ``nprobe`` (and refine ``k_factor``) reaching a recall target.

    Parameters
    ----------
    index : pqkit.Index
        A trained, filled index: IVF (``nprobe`` is tuned), :class:`pqkit.IndexRefine`
        (``k_factor`` is tuned), both nested (e.g. ``"OPQ16,IVF256,PQ16,RFlat"``), or neither
        (then only its recall is measured).
    queries : array_like of float, shape (nq, d)
        Representative queries; at most ``max_queries`` of them (a seeded sample) are used.
    target_recall : float, default 0.95
        Target k-recall@k (mean fraction of the exact k nearest found), in (0, 1].
    k : int, default 10
    xb : array_like of float, shape (ntotal, d), optional
        The stored vectors in id order (ids ``0..ntotal-1``), for the exact ground truth.
        Not needed when the index keeps exact vectors (IndexFlat, IndexIVFFlat, IndexRefine).
    max_queries : int, default 500
    k_factors : sequence of float, default (1, 2, 4, 8, 16)
        Refine factors tried (IndexRefine only).
    apply : bool, default True
        Set the chosen ``nprobe`` / ``k_factor`` on the index. With False the index is left
        as it was.
    seed : int, default 0
        Seed of the query sample.

    Returns
    -------
    TuneReport
        The chosen setting, its recall and speed, and every trial.

    Notes
    -----
    For each ``k_factor`` (ascending) ``nprobe`` runs through ``1, 2, 4, ..., nlist`` and stops
    at the first value whose recall reaches the target (recall grows with ``nprobe``). Among
    these minimal settings the one with the smallest measured search time is chosen (one timed
    batch search each, so close calls depend on the machine's load). If none reaches the
    target, the setting with the highest recall is reported with ``reached=False``.
    """
    if not registry.is_index(index):
        raise TypeError(f"index must be a pqkit index, got {type(index).__name__}")
    if not index.is_trained or index.ntotal == 0:
        raise ValueError("tune needs a trained index holding vectors; train and add first")
    k = check_k(k)
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or not (
            0 < target_recall <= 1):
        raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
    max_queries = check_positive_int(max_queries, "max_queries")
    queries = as_float_matrix(queries, index.d, name="queries")
    if queries.shape[0] == 0:
        raise ValueError("queries is empty; pass at least one representative query")
    if queries.shape[0] > max_queries:
        rows = np.random.default_rng(seed).choice(queries.shape[0], max_queries, replace=False)
        queries = queries[np.sort(rows)]

    # exact ground truth
    metric = index.metric
    stored = index._exact_vectors()
    if xb is not None:
        xb = as_float_matrix(xb, index.d, name="xb")
        if xb.shape[0] != index.ntotal:
            raise ValueError(f"xb must hold the {index.ntotal} stored vectors (ids 0..ntotal-1), "
                             f"got {xb.shape[0]} rows")
        stored = (xb, np.arange(xb.shape[0], dtype=np.int64))
    if stored is None:
        raise ValueError(
            f"{type(index).__name__} does not keep exact vectors; pass xb= (the stored vectors "
            "in id order) so that tune can compute the exact neighbours"
        )
    exact = registry.index_class("IndexFlat")(index.d, metric)
    exact.add_with_ids(*stored)
    _, truth = exact.search(queries, k)

    ivf = _find(index, "nlist")
    refine = _find(index, "k_factor")
    old = (ivf.nprobe if ivf else None, refine.k_factor if refine else None)
    nprobes = _powers_of_two(ivf.nlist) if ivf else [None]
    factors = sorted(float(f) for f in k_factors) if refine else [None]
    trials, minimal = [], []
    try:
        for k_factor in factors:
            if refine:
                refine.k_factor = k_factor
            for nprobe in nprobes:
                if ivf:
                    ivf.nprobe = nprobe
                start = time.perf_counter()
                _, found = index.search(queries, k)
                seconds = (time.perf_counter() - start) / queries.shape[0]
                trial = {"nprobe": nprobe, "k_factor": k_factor,
                         "recall": _recall(found, truth), "seconds_per_query": seconds}
                trials.append(trial)
                if trial["recall"] >= target_recall:
                    minimal.append(trial)
                    break
    finally:
        if ivf:
            ivf.nprobe = old[0]
        if refine:
            refine.k_factor = old[1]
    if minimal:
        best = min(minimal, key=lambda t: (t["seconds_per_query"], t["nprobe"] or 0,
                                           t["k_factor"] or 0))
    else:
        best = max(trials, key=lambda t: (t["recall"], -t["seconds_per_query"]))
    if apply:
        if ivf:
            ivf.nprobe = best["nprobe"]
        if refine:
            refine.k_factor = best["k_factor"]
    return TuneReport(best["nprobe"], best["k_factor"], best["recall"],
                      best["seconds_per_query"], best["recall"] >= target_recall,
                      float(target_recall), k, int(queries.shape[0]), trials)


# =============================================================================== memory
def estimate_memory(factory, n, d, metric="l2") -> int:
    """Predict ``memory_usage_bytes()`` of an index before building it.

    Parameters
    ----------
    factory : str
        A :func:`pqkit.index_factory` description, e.g. ``"OPQ16,IVF1024,PQ16,RFlat"``.
    n : int
        Vectors to be added (in one ``add`` call).
    d : int
        Vector dimension.
    metric : {"l2", "ip", "cosine"}, default "l2"

    Returns
    -------
    int
        Bytes. Exact for Flat and PQ indexes (and wrappers of them); for inverted files it
        assumes lists of equal size, so the measured value differs with the list balance (block
        padding per list).

    Notes
    -----
    Counted as ``memory_usage_bytes`` counts: ids 8 bytes each (none in IndexFlat and
    IndexScalarQuantizer while their ids are the 0..n-1 that ``add`` assigns), codes (blocks of 64 for PQ), the
    IVF-PQ per-code float under L2, centroids, codebooks, transform matrices and the refine
    index of a refine stage (exact vectors or PQ codes); not Python object overhead. Later
    ``add`` calls grow buffers by 1.5x, which the estimate does not model.
    """
    from .factory import index_factory

    n = check_int(n, "n", minimum=0)
    return int(index_factory(d, factory, metric)._estimate_bytes(n))


# =============================================================================== suggest
@dataclass
class Suggestion:
    """Result of :func:`suggest`.

    Attributes
    ----------
    factory : str
        :func:`pqkit.index_factory` description.
    memory_bytes : int
        :func:`estimate_memory` of it for ``n`` vectors.
    nprobe : int or None
        A starting ``nprobe`` (refine it with :func:`tune`).
    reason : str
    """

    factory: str
    memory_bytes: int
    nprobe: int | None
    reason: str

    def __str__(self) -> str:
        return self.factory


def _nlist_for(n: int) -> int:
    """About 4 sqrt(n) lists, a power of two, with at least 39 training points per list."""
    nlist = 1 << max(0, round(math.log2(4 * math.sqrt(n))))
    while nlist > 1 and n < MIN_POINTS_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def suggest(n, d, memory_budget=None, target="recall", metric="l2"):
    """Propose an index (factory string) for ``n`` vectors of dimension ``d``.

    Parameters
    ----------
    n : int
        Vectors to index.
    d : int
        Dimension.
    memory_budget : int, optional
        Bytes the index may use (as ``memory_usage_bytes`` counts); None means no limit.
    target : {"recall", "speed"}, default "recall"
        "recall": the most accurate index that fits (Flat, then IVF-Flat, then IVF-PQ with as
        many bytes per code as fit, with exact re-ranking when the vectors fit too, else
        re-ranking with 8-bit scalar codes when those fit). "speed":
        an inverted file whenever ``n >= 10000``, with compact codes (at most about ``d / 16``
        bytes, less if the budget requires), re-ranked only if that fits.
    metric : {"l2", "ip", "cosine"}, default "l2"

    Returns
    -------
    Suggestion
        ``factory``, ``memory_bytes`` (from :func:`estimate_memory`), a starting ``nprobe``
        and the reason.

    Raises
    ------
    ValueError
        If nothing fits the budget (the message gives the smallest index's size).

    Notes
    -----
    Heuristics in the spirit of autofaiss: ``nlist`` is a power of two near ``4 sqrt(n)``
    (at least 39 training vectors per list); PQ uses 8-bit codes and the largest ``M`` dividing
    ``d`` that fits; a dimension with no suitable divisor is rotated and cut by OPQ
    (``OPQ{M}_{d_out}``) to one that has.
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    if target not in ("recall", "speed"):
        raise ValueError(f"target must be 'recall' or 'speed', got {target!r}")
    if memory_budget is not None:
        memory_budget = check_positive_int(memory_budget, "memory_budget")
    budget = math.inf if memory_budget is None else memory_budget

    def fits(factory):
        return estimate_memory(factory, n, d, metric) <= budget

    nlist = _nlist_for(n)
    use_ivf = n >= 10_000
    ivf = f"IVF{nlist}," if use_ivf else ""
    nprobe = max(1, nlist // 16) if use_ivf else None
    candidates = []
    if target == "recall":
        candidates.append(("Flat", None, "exact search fits the budget"))
        if use_ivf:
            candidates.append((f"IVF{nlist},Flat", nprobe,
                               "exact vectors in an inverted file fit the budget"))
    pq_choices = []
    for M in sorted((m for m in range(1, d + 1) if d % m == 0 and d // m <= 32 and m <= 256),
                    reverse=True):
        pq_choices.append((f"PQ{M}", M))
    if not pq_choices or pq_choices[-1][1] > 8:
        # no small divisor: OPQ to a dimension with one
        for M in (64, 32, 16, 8, 4):
            d_out = min(d - d % M, 4 * M * max(1, d // (4 * M)))
            if d_out >= M:
                pq_choices.append((f"OPQ{M}_{d_out}", M))
    if target == "speed":
        pq_choices = [c for c in pq_choices if c[1] <= max(4, d // 16)] or pq_choices
    pq_factories = []
    for code, M in pq_choices:
        if code.startswith("OPQ"):
            pq_factories.append(f"{code},{ivf}PQ{M}")
        else:
            pq_factories.append(f"{ivf}{code}")
    refined = [(f + ",RFlat", nprobe, "PQ candidates re-ranked with exact vectors, which fit "
                "the budget") for f in pq_factories]
    refined += [(f + ",Refine(SQ8)", nprobe, "PQ candidates re-ranked with 8-bit scalar codes "
                 "(a quarter of the exact vectors' bytes), which fit the budget")
                for f in pq_factories]
    plain = [(f, nprobe, "the largest PQ code that fits the budget") for f in pq_factories]
    candidates += refined + plain if target == "recall" else plain + refined
    for factory, probe, reason in candidates:
        if fits(factory):
            return Suggestion(factory, estimate_memory(factory, n, d, metric), probe, reason)
    smallest = min((estimate_memory(f, n, d, metric), f) for f, _, _ in candidates)
    raise ValueError(
        f"no index fits memory_budget={memory_budget} bytes for n={n}, d={d}; the smallest "
        f"candidate, {smallest[1]!r}, needs {smallest[0]} bytes: raise the budget or index "
        "fewer vectors"
    )
