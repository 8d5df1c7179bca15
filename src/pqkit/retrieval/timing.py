"""The timing table: per-query search latency and recall of brute force, pqkit and faiss indexes.

For one gallery (``base``) and a set of queries, all L2-normalised (cosine similarity = inner
product), this measures, in one process and with one thread per library:

================  ===============================================================================
method            what runs
================  ===============================================================================
numpy-brute       ``scores = base @ q``, then ``argpartition`` + sort of the top k (the seed's
                  "brute-force cosine search"); also the exact ground truth
pqkit-Flat        :class:`pqkit.IndexFlat` (metric ``"ip"``)
pqkit-IVF-Flat    :class:`pqkit.IndexIVFFlat`, nlist ~ sqrt(n), nprobe swept
pqkit-IVF-PQ      :class:`pqkit.IndexIVFPQ`, same nlist, M sub-quantizers of 8 bits, nprobe swept
pqkit-IVF-PQ-R    with ``refine``: the same IVF-PQ in :class:`pqkit.IndexRefine` (``k_factor``
                  candidates per result re-ranked with exact vectors, ``"flat"``, or 8-bit PQ
                  codes of :func:`~pqkit.retrieval.indexing.default_refine_m` bytes, ``"pq"``)
faiss-*           ``IndexFlatIP``, ``IndexIVFFlat``, ``IndexIVFPQ`` (``IndexRefineFlat`` /
                  ``IndexRefine`` with an ``IndexPQ``) with the same parameters
================  ===============================================================================

Each row reports the median (and 90th percentile) per-query latency of single-query calls, as
wall-clock time and as process CPU time (:func:`pqkit.retrieval.evaluate.query_latency_ms`), the
batch time per query (all queries in one call, wall and CPU), k-recall@k against the exact result, memory,
build time, and, when labels are given, precision@k and mAP@k (:mod:`pqkit.retrieval.evaluate`).
faiss is optional (``include_faiss=False`` or not installed: its rows are left out).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from .evaluate import mean_average_precision, precision_at_k, query_latency_ms, recall_at_k
from .indexing import DEFAULT_K_FACTOR, default_m, default_nlist, default_refine_m

__all__ = ["brute_force_search", "timing_table"]


def brute_force_search(base: np.ndarray, queries: np.ndarray, k: int):
    """Exact inner-product top k with NumPy (cosine similarity for unit rows).

    Parameters
    ----------
    base : ndarray of float32, shape (n, d)
    queries : ndarray of float32, shape (nq, d)
    k : int

    Returns
    -------
    scores : ndarray of float32, shape (nq, k)
    ids : ndarray of int64, shape (nq, k)
        Row numbers, best first (ties by the smaller row, as pqkit).
    """
    k = min(k, base.shape[0])
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    out_ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], 256):  # bounded memory: 256 x n scores at a time
        scores = queries[start:start + 256] @ base.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        out_ids[start:start + 256] = np.take_along_axis(top, order, axis=1)
        out_scores[start:start + 256] = np.take_along_axis(top_scores, order, axis=1)
    return out_scores, out_ids


def _normalise(x: np.ndarray) -> np.ndarray:
    from .._validation import as_float_matrix, normalize_rows

    return normalize_rows(as_float_matrix(x), "vectors")


def _single_thread():
    """Limit BLAS (NumPy) to one thread while timing, when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def timing_table(base, queries, k: int = 10, *, base_labels=None, query_labels=None,
                 nprobes=(1, 2, 4, 8, 16, 32, 64), n_latency: int = 200, include_faiss: bool = True,
                 nlist: int | None = None, M: int | None = None, nbits: int = 8, seed: int = 1234,
                 progress=print, refine: str | None = None, k_factor: float = DEFAULT_K_FACTOR,
                 plain_ivfpq: bool = True) -> list[dict]:
    """Measure every method of the module docstring on one data set.

    Parameters
    ----------
    base : array_like of float, shape (n, d)
        Gallery vectors (normalised here).
    queries : array_like of float, shape (nq, d)
        Query vectors (normalised here); recall and label metrics use all of them.
    k : int, default 10
    base_labels, query_labels : array_like, shapes (n,) and (nq,), optional
        Class labels for precision@k and mAP@k.
    nprobes : sequence of int
        IVF settings measured (those above nlist are skipped).
    n_latency : int, default 200
        Queries timed one call each for the latency columns.
    include_faiss : bool, default True
    nlist, M, nbits : int, optional
        IVF and PQ sizes; default :func:`pqkit.retrieval.indexing.default_nlist` and
        :func:`~pqkit.retrieval.indexing.default_m`, 8 bits.
    seed : int
    progress : callable(str) or None
        Called with one line per finished row.
    refine : {"flat", "pq"} or None, default None
        Also measure IVF-PQ with re-ranking (methods ``pqkit-IVF-PQ-R``, ``faiss-IVF-PQ-R``).
    k_factor : float, default 8
        Candidates per result of the re-ranked rows.
    plain_ivfpq : bool, default True
        Measure IVF-PQ without re-ranking too.

    Returns
    -------
    list of dict
        One row per method and setting: ``method``, ``library``, ``index``, ``nprobe``,
        ``recall``, ``latency_median_ms``, ``latency_p90_ms``, ``cpu_median_ms``, ``cpu_mean_ms``,
        ``batch_ms_per_query``, ``batch_cpu_ms_per_query``,
        ``memory_mb``, ``build_s`` and, with labels, ``precision_at_1``, ``precision_at_k`` and
        ``map_at_k``.
    """
    if refine not in (None, "flat", "pq"):
        raise ValueError(f"refine must be None, 'flat' or 'pq', got {refine!r}")
    import pqkit

    base, queries = _normalise(base), _normalise(queries)
    n, d = base.shape
    nlist = default_nlist(n) if nlist is None else nlist
    M = default_m(d) if M is None else M
    latency_queries = queries[:n_latency]
    rows: list[dict] = []
    have_labels = base_labels is not None and query_labels is not None
    if have_labels:
        base_labels, query_labels = np.asarray(base_labels), np.asarray(query_labels)
        values, counts = np.unique(base_labels, return_counts=True)
        n_relevant = counts[np.searchsorted(values, query_labels)] * np.isin(query_labels, values)

    def record(method, library, index_name, ids, latency, batch_s, memory_bytes, build_s, nprobe=None):
        row = {
            "method": method, "library": library, "index": index_name, "nprobe": nprobe, "k": k,
            "recall": recall_at_k(ids, truth) if truth is not None else 1.0,
            "latency_median_ms": latency["median_ms"], "latency_p90_ms": latency["p90_ms"],
            "cpu_median_ms": latency["cpu_median_ms"], "cpu_mean_ms": latency["cpu_mean_ms"],
            "batch_ms_per_query": 1e3 * batch_s[0] / queries.shape[0],
            "batch_cpu_ms_per_query": 1e3 * batch_s[1] / queries.shape[0],
            "memory_mb": memory_bytes / 2**20, "build_s": build_s, "n": n, "d": d,
            "n_queries": int(queries.shape[0]), "n_latency": latency["n"],
        }
        if have_labels:
            result_labels = np.where(ids >= 0, base_labels[np.maximum(ids, 0)], -1) if base_labels.dtype.kind in "iu" \
                else np.where(ids >= 0, base_labels[np.maximum(ids, 0)], "")
            row["precision_at_1"] = precision_at_k(result_labels[:, :1], query_labels)
            row["precision_at_k"] = precision_at_k(result_labels, query_labels)
            row["map_at_k"] = mean_average_precision(result_labels, query_labels, n_relevant)
        rows.append(row)
        if progress:
            progress(f"{method:<16} {index_name:<18} nprobe={str(nprobe):>4}  recall={row['recall']:.3f}  "
                     f"median={row['latency_median_ms']:.3f} ms (cpu {row['cpu_median_ms']:.3f})  "
                     f"batch={row['batch_ms_per_query']:.3f} ms/q (cpu {row['batch_cpu_ms_per_query']:.3f})")

    def batch_time(search):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = search(queries, k)
        return out, (time.perf_counter() - start, time.process_time() - start_cpu)

    truth = None
    with _single_thread():
        # -- NumPy brute force: the exact result every other row is compared with
        (_, truth), batch_s = batch_time(lambda q, kk: brute_force_search(base, q, kk))
        latency = query_latency_ms(lambda q, kk: brute_force_search(base, q, kk), latency_queries, k)
        record("numpy-brute", "numpy", "matmul+argpartition", truth, latency, batch_s, base.nbytes, 0.0)

        # -- pqkit
        previous_threads = pqkit.get_num_threads()
        pqkit.set_num_threads(1)
        try:
            refine_m = default_refine_m(d)
            suffix = {"flat": ",RFlat", "pq": f",Refine(PQ{refine_m}x8)", None: ""}[refine]

            def refined():
                fine = None if refine == "flat" else pqkit.IndexPQ(d, refine_m, 8, "ip", seed=seed)
                return pqkit.IndexRefine(pqkit.IndexIVFPQ(d, nlist, M, nbits, "ip", seed=seed), k_factor, fine)

            builders = {
                "Flat": lambda: pqkit.IndexFlat(d, "ip"),
                f"IVF{nlist},Flat": lambda: pqkit.IndexIVFFlat(d, nlist, "ip", seed=seed),
            }
            if plain_ivfpq:
                builders[f"IVF{nlist},PQ{M}x{nbits}"] = lambda: pqkit.IndexIVFPQ(d, nlist, M, nbits, "ip", seed=seed)
            if refine:
                builders[f"IVF{nlist},PQ{M}x{nbits}{suffix}"] = refined
            for name, make in builders.items():
                index = None  # the previous index is freed before the next is built
                start = time.perf_counter()
                index = make()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", pqkit.TrainingWarning)
                    index.train(base)
                index.add(base)
                build_s = time.perf_counter() - start
                method = "pqkit-" + _family(name)
                for nprobe in ([None] if name == "Flat" else [p for p in nprobes if p <= nlist]):
                    if nprobe is not None:
                        index.nprobe = nprobe
                    (_, ids), batch_s = batch_time(index.search)
                    latency = query_latency_ms(index.search, latency_queries, k)
                    record(method, "pqkit", name, ids, latency, batch_s, index.memory_usage_bytes(), build_s, nprobe)
        finally:
            pqkit.set_num_threads(None if previous_threads == (os.cpu_count() or 1) else previous_threads)

        # -- faiss, same parameters
        if include_faiss:
            try:
                import faiss
            except ImportError:
                faiss = None
            if faiss is not None:
                faiss.omp_set_num_threads(1)
                def ivfpq():
                    return faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, M, nbits, faiss.METRIC_INNER_PRODUCT)

                def faiss_refined():
                    base_index = ivfpq()
                    base_index.cp.seed = seed
                    if refine == "flat":
                        out = faiss.IndexRefineFlat(base_index)
                    else:
                        out = faiss.IndexRefine(base_index, faiss.IndexPQ(d, refine_m, 8, faiss.METRIC_INNER_PRODUCT))
                    out.k_factor = float(k_factor)
                    return out

                makers = {
                    "Flat": lambda: faiss.IndexFlatIP(d),
                    f"IVF{nlist},Flat": lambda: faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                                                   faiss.METRIC_INNER_PRODUCT),
                }
                if plain_ivfpq:
                    makers[f"IVF{nlist},PQ{M}x{nbits}"] = ivfpq
                if refine:
                    makers[f"IVF{nlist},PQ{M}x{nbits}{suffix}"] = faiss_refined
                for name, make in makers.items():
                    index = None
                    start = time.perf_counter()
                    index = make()
                    if hasattr(index, "cp"):
                        index.cp.seed = seed
                    index.train(base)
                    index.add(base)
                    build_s = time.perf_counter() - start
                    memory = _faiss_memory(faiss, index)
                    method = "faiss-" + _family(name)
                    for nprobe in ([None] if name == "Flat" else [p for p in nprobes if p <= nlist]):
                        if nprobe is not None:
                            _set_faiss_nprobe(faiss, index, nprobe)
                        (_, ids), batch_s = batch_time(index.search)
                        latency = query_latency_ms(index.search, latency_queries, k)
                        record(method, "faiss", name, ids.astype(np.int64), latency, batch_s, memory, build_s, nprobe)
    return rows


def _family(name: str) -> str:
    """Method family of an index name: Flat, IVF-Flat, IVF-PQ or IVF-PQ-R (re-ranked)."""
    if name == "Flat":
        return "Flat"
    if "RFlat" in name or "Refine" in name:
        return "IVF-PQ-R"
    return "IVF-Flat" if name.endswith("Flat") else "IVF-PQ"


def _set_faiss_nprobe(faiss, index, nprobe: int) -> None:
    if isinstance(index, faiss.IndexRefine):
        faiss.extract_index_ivf(index.base_index).nprobe = nprobe
    else:
        index.nprobe = nprobe


def _faiss_memory(faiss, index) -> int:
    """Bytes of a faiss index, from its serialised size (codes, ids, centroids, codebooks).

    Written to a temporary file and measured there: ``serialize_index`` would hold one or two
    more copies of the index in memory (4.9 GB each for a million 1280-d vectors).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pqkit-faiss-size-") as folder:
        path = os.path.join(folder, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)
