"""The engine boundary: every call the Python layer makes into an engine, declared once.

An engine is a module (the compiled core, :mod:`pqkit.engine.numba`) that satisfies
:class:`Engine`; the objects its constructors return satisfy :class:`PQCodebooks`,
:class:`CoarseQuantizer` and :class:`InvertedLists`. :class:`OptionalCalls` lists the calls that
only the compiled core has (benchmarks, test hooks, the PatchCore coreset); callers check for
them with ``hasattr`` first. ``tests/test_engine_protocol.py`` checks both engines against these
classes (names, parameter names, order and defaults) and that the Python layer calls nothing else.

Conventions shared by every call (the engine re-checks them cheaply; user-facing validation
with hints happens before, in :mod:`pqkit._validation`):

* Arrays are NumPy arrays of exactly the documented dtype and C-contiguous; nothing is
  converted. A wrong dtype raises TypeError, a wrong shape or order ValueError.
* ``metric`` is ``"l2"`` (squared Euclidean distance) or ``"ip"`` (inner product); any other
  value raises ValueError. Cosine is the Python layer's business (normalised rows under
  ``"ip"``).
* ``n_threads`` (>= 1) splits rows or queries over threads; results never depend on it.
* A search returns ``(D, I)``: ``D`` float32 of shape ``(nq, k)``, ``I`` int64 of shape
  ``(nq, k)``, best first. Keys are ordered by ``(key, id)`` (ties: the smaller id), with
  key = squared L2 or minus the inner product; ``D`` holds squared L2 distances (ascending) or
  inner products (descending). Rows with fewer than ``k`` results are padded with ``+inf``
  (``-inf`` for ``"ip"``) and id ``-1``.
* Both engines give bit-identical codes, ids and distances for the same codebooks and
  centroids; only training (:meth:`Engine.kmeans`, :meth:`Engine.pq_train`) draws different
  random numbers.
* Long calls release the GIL.
* ``selector`` (searches): None, or an :class:`IDSelector` of the same engine; only the ids it
  allows are scanned, and a disallowed code or vector never gets a distance. A per-query
  selector must have one set per query (ValueError otherwise).
* A range search returns :data:`RangeResult` ``(lims, D, I)``: ``lims`` int64 of shape
  ``(nq + 1,)``, ``D`` float32 and ``I`` int64 of shape ``(lims[-1],)``; query ``q``'s results
  are at ``lims[q] .. lims[q + 1] - 1``, sorted by ``(key, id)``, those with ``D < radius``
  (``"l2"``) or ``D > radius`` (``"ip"``), ``radius`` compared as a double. More than
  ``max_results`` results in all raise ValueError.
"""

from __future__ import annotations

import math
from typing import List, Literal, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CoarseQuantizer",
    "Engine",
    "IDSelector",
    "InvertedLists",
    "Metric",
    "OptionalCalls",
    "PQCodebooks",
    "ResidentCalls",
    "RangeResult",
    "SearchResult",
]

Metric = Literal["l2", "ip"]
SearchResult = Tuple[NDArray[np.float32], NDArray[np.int64]]
"""``(D, I)``: float32 and int64 arrays of shape ``(nq, k)`` (see the module conventions)."""
RangeResult = Tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]
"""``(lims, D, I)`` of a range search (see the module conventions)."""


@runtime_checkable
class PQCodebooks(Protocol):
    """Product-quantizer codebooks prepared for encoding and distance tables.

    Made by :meth:`Engine.PQCodebooks` from a copy of the codebooks; indexes keep one and
    rebuild it only when the codebooks change. A vector of ``d = M * dsub`` floats is coded as
    ``M`` indices of ``nbits`` bits (sub-vector ``m`` by its nearest centroid in codebook
    ``m``), packed little-endian into ``code_size = ceil(M * nbits / 8)`` bytes: index ``m``
    occupies bits ``[m * nbits, (m + 1) * nbits)``, the layout FAISS uses.
    """

    @property
    def d(self) -> int:
        """Vector dimension, ``M * dsub``."""

    @property
    def M(self) -> int:
        """Number of sub-quantizers."""

    @property
    def nbits(self) -> int:
        """Bits per sub-quantizer index (1..16); ``ksub = 2 ** nbits`` centroids each."""

    @property
    def code_size(self) -> int:
        """Bytes per packed code, ``ceil(M * nbits / 8)``."""


@runtime_checkable
class CoarseQuantizer(Protocol):
    """Coarse centroids of an IVF index (a copy) with their norms, prepared once per index.

    Made by :meth:`Engine.CoarseQuantizer`. A search probes the ``nprobe`` lists whose
    centroids are nearest to the query (by the index metric), nearest first.
    """

    @property
    def nlist(self) -> int:
        """Number of centroids (lists)."""

    @property
    def d(self) -> int:
        """Vector dimension."""


@runtime_checkable
class InvertedLists(Protocol):
    """Per list, the codes and int64 ids of its vectors, and optionally a float32 bias per code.

    Made by :meth:`Engine.InvertedLists`. Each list keeps insertion order; "list order" below
    means list 0 first, each list in insertion order (the order :meth:`export` returns). PQ
    codes are kept in the ``"blocked"`` layout that the scans read, IVF-Flat rows (float32
    vectors as ``4 * d`` bytes) in the ``"rows"`` layout; every method takes and returns codes
    as rows of ``code_size`` bytes. IndexPQ keeps one list. The bias (L2 IVF-PQ only) is
    ``||r||^2 + 2 <y_l, r>`` of each stored residual code (see :meth:`Engine.ivfpq_code_bias`).
    """

    @property
    def nlist(self) -> int:
        """Number of lists."""

    @property
    def code_size(self) -> int:
        """Bytes per code."""

    @property
    def ntotal(self) -> int:
        """Codes stored over all lists."""

    @property
    def with_bias(self) -> bool:
        """Whether a float32 bias is kept per code."""

    @property
    def read_only(self) -> bool:
        """Whether the lists are a read-only view of external arrays
        (:meth:`Engine.external_lists`); then :meth:`add`, :meth:`set_bias`, :meth:`remove_ids`
        and :meth:`reset` raise ValueError."""

    def add(self, list_nos: NDArray[np.int64], ids: NDArray[np.int64], codes: NDArray[np.uint8],
            bias: Optional[NDArray[np.float32]] = None) -> None:
        """Append codes to their lists.

        Parameters
        ----------
        list_nos : numpy.ndarray of int64, shape (n,)
            The list of each code, ``0 <= list_no < nlist``.
        ids : numpy.ndarray of int64, shape (n,)
        codes : numpy.ndarray of uint8, shape (n, code_size)
        bias : numpy.ndarray of float32, shape (n,), or None
            Required (for ``n > 0``) when the lists keep a bias.

        Raises
        ------
        ValueError
            A list number out of range or a missing bias; nothing is added.
        """

    def set_bias(self, bias: NDArray[np.float32]) -> None:
        """Replace every bias.

        Parameters
        ----------
        bias : numpy.ndarray of float32, shape (ntotal,)
            In list order. ValueError when the lists keep no bias.
        """

    def list_sizes(self) -> NDArray[np.int64]:
        """Codes per list: int64 array of shape ``(nlist,)``."""

    def list_ids(self, list_no: int) -> NDArray[np.int64]:
        """Ids of one list (a copy), int64 array of shape ``(list size,)``.

        IndexError when ``list_no`` is outside ``0..nlist-1``.
        """

    def list_codes(self, list_no: int) -> NDArray[np.uint8]:
        """Codes of one list as rows (a copy), uint8 array of shape ``(list size, code_size)``.

        IndexError when ``list_no`` is outside ``0..nlist-1``.
        """

    def remove_ids(self, ids: NDArray[np.int64]) -> int:
        """Remove every code whose id is in ``ids`` (int64, shape ``(m,)``); returns how many."""

    def locate(self, ids: NDArray[np.int64]) -> Tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Where each id is stored.

        Parameters
        ----------
        ids : numpy.ndarray of int64, shape (m,)

        Returns
        -------
        list_nos, offsets : numpy.ndarray of int64, shape (m,)
            The list of each id and its position within the list; -1 and -1 when absent.
        """

    def reset(self) -> None:
        """Remove every code (the lists and their parameters stay)."""

    def memory_usage_bytes(self) -> int:
        """Bytes held by the codes, ids and biases."""

    def export(self) -> Tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]:
        """Everything stored, in list order.

        Returns
        -------
        sizes : numpy.ndarray of int64, shape (nlist,)
        ids : numpy.ndarray of int64, shape (ntotal,)
        codes : numpy.ndarray of uint8, shape (ntotal, code_size)
            As rows, whatever the layout.
        """

    def export_blocked(self) -> Tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8],
                                      Optional[NDArray[np.float32]]]:
        """Everything stored, in list order, with the codes in the blocked scan layout.

        The arrays :meth:`Engine.external_lists` takes. ValueError unless the layout is
        ``"blocked"``.

        Returns
        -------
        sizes : numpy.ndarray of int64, shape (nlist,)
        ids : numpy.ndarray of int64, shape (ntotal,)
        blocks : numpy.ndarray of uint8, shape (n_blocks, code_size, 64)
            Each list in ``ceil(size / 64)`` blocks of 64 codes, list 0 first; byte ``j`` of
            the list's code ``i`` is ``blocks[first block + i // 64, j, i % 64]``; the codes
            that pad a list's last block are zero.
        bias : numpy.ndarray of float32, shape (ntotal,), or None
            None when the lists keep no bias.
        """


@runtime_checkable
class IDSelector(Protocol):
    """The ids a search may return (FAISS's ``IDSelector``), made by :meth:`Engine.IDSelector`.

    One set of ids for every query, or one set per query; a set is a bitmap or a sorted id
    array, and ``exclude`` allows the ids outside it instead.
    """

    @property
    def n_sets(self) -> int:
        """The number of per-query sets, 0 for one set shared by every query."""

    @property
    def exclude(self) -> bool:
        """Whether the selector allows the ids outside its set."""


# Inside Engine the class names are its constructors; these names refer to the classes above.
_PQCodebooks = PQCodebooks
_CoarseQuantizer = CoarseQuantizer
_InvertedLists = InvertedLists
_IDSelector = IDSelector


@runtime_checkable
class Engine(Protocol):
    """The calls every engine module provides (the compiled core, :mod:`pqkit.engine.numba`).

    Listed as methods; an engine provides them as module-level functions and classes.
    """

    # ------------------------------------------------------------------ kernel level, threads
    def simd_level(self) -> str:
        """The active kernel level: ``"scalar"``, ``"avx2"`` or ``"avx512"``.

        The Numba engine has one code path, reported as ``"scalar"``.
        """

    def available_simd_levels(self) -> List[str]:
        """The kernel levels this CPU supports, ``"scalar"`` first, best last."""

    def set_simd_level(self, level: str) -> None:
        """Switch the kernel level (process-wide); every level gives identical results.

        ValueError for an unknown level or one this CPU (or engine) does not have.
        """

    def hardware_concurrency(self) -> int:
        """Hardware threads of this machine (at least 1)."""

    # ------------------------------------------------------------------ checks, exact search
    def all_finite(self, x: NDArray[np.float32], max_abs: float = math.inf) -> bool:
        """Whether every value of ``x`` is finite with ``|value| <= max_abs``.

        Parameters
        ----------
        x : numpy.ndarray of float32, any shape, C-contiguous
        max_abs : float, >= 0

        Returns
        -------
        bool

        Raises
        ------
        TypeError
            ``x`` is not a C-contiguous float32 array.
        ValueError
            ``max_abs`` is negative or NaN.
        """

    def sqnorms(self, x: NDArray[np.float32], n_threads: int) -> NDArray[np.float32]:
        """Squared norms of the rows, as the exact search computes them (16-lane order).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d)
        n_threads : int

        Returns
        -------
        numpy.ndarray of float32, shape (n,)
        """

    def flat_search(self, x: NDArray[np.float32], y: NDArray[np.float32], k: int, metric: Metric,
                    n_threads: int, norms: Optional[NDArray[np.float32]] = None,
                    selector: Optional[_IDSelector] = None) -> SearchResult:
        """Exact top-k rows of ``y`` for each row of ``x``.

        L2 keys are ``max(||x||^2 + ||y||^2 - 2 <x, y>, 0)``, the same for a row whether it is
        computed in a block of rows or alone (a selective selector).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, d)
        y : numpy.ndarray of float32, shape (ny, d)
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int
        norms : numpy.ndarray of float32, shape (ny,), or None
            ``y``'s squared norms from :meth:`sqnorms` when the caller keeps them (L2: the keys
            use them; IP: only the compiled engine's fast-pass error bound does).
        selector : IDSelector or None
            The row numbers of ``y`` each query may return.

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
            Row numbers of ``y``.
        """

    def flat_range_search(self, x: NDArray[np.float32], y: NDArray[np.float32], radius: float,
                          metric: Metric, n_threads: int, max_results: int,
                          norms: Optional[NDArray[np.float32]] = None,
                          selector: Optional[_IDSelector] = None) -> RangeResult:
        """Every row of ``y`` within ``radius`` of each row of ``x`` (keys as :meth:`flat_search`).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, d)
        y : numpy.ndarray of float32, shape (ny, d)
        radius : float
        metric : {"l2", "ip"}
        n_threads : int
        max_results : int
        norms : numpy.ndarray of float32, shape (ny,), or None
        selector : IDSelector or None
            Over row numbers of ``y``.

        Returns
        -------
        lims : numpy.ndarray of int64, shape (nq + 1,)
        D : numpy.ndarray of float32, shape (lims[-1],)
        I : numpy.ndarray of int64, shape (lims[-1],)
            Row numbers of ``y``.
        """

    def rerank(self, x: NDArray[np.float32], y: NDArray[np.float32], rows: NDArray[np.int64],
               ids: NDArray[np.int64], k: int, metric: Metric, n_threads: int) -> SearchResult:
        """Exact re-ranking: for each query the best ``k`` of its candidate rows of ``y``.

        Keys are computed directly: ``||x - y_r||^2`` (16-lane order) or ``-<x, y_r>``.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, d)
        y : numpy.ndarray of float32, shape (ny, d)
        rows : numpy.ndarray of int64, shape (nq, c)
            Candidate rows of ``y``, -1 for none. ValueError for a row outside ``-1..ny-1``.
        ids : numpy.ndarray of int64, shape (nq, c)
            The id reported for each candidate.
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
            Taken from ``ids``.
        """

    def rerank_pq(self, x: NDArray[np.float32], pq: _PQCodebooks, lists: _InvertedLists,
                  rows: NDArray[np.int64], ids: NDArray[np.int64], k: int, metric: Metric,
                  n_threads: int) -> SearchResult:
        """As :meth:`rerank`, with the candidates stored as PQ codes, each decoded first.

        The keys equal :meth:`rerank`'s over the :meth:`pq_decode` reconstructions, bit for bit.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, pq.d)
        pq : PQCodebooks
        lists : InvertedLists
            One list of codes of ``pq.code_size`` bytes (an IndexPQ's store); ValueError
            otherwise.
        rows : numpy.ndarray of int64, shape (nq, c)
            Offsets into list 0, -1 for none.
        ids : numpy.ndarray of int64, shape (nq, c)
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
        """

    def rerank_sq(self, x: NDArray[np.float32], codes: NDArray[np.uint8],
                  vmin: NDArray[np.float32], step: NDArray[np.float32], rows: NDArray[np.int64],
                  ids: NDArray[np.int64], k: int, metric: Metric, n_threads: int) -> SearchResult:
        """As :meth:`rerank`, with the candidates stored as 8-bit scalar-quantizer codes.

        Dimension ``t`` of row ``r`` decodes to ``vmin[t] + codes[r, t] * step[t]`` (a float32
        product, then a sum, never fused); the keys equal :meth:`rerank`'s over those decoded
        rows, bit for bit.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, d)
        codes : numpy.ndarray of uint8, shape (ny, d)
        vmin, step : numpy.ndarray of float32, shape (d,)
        rows : numpy.ndarray of int64, shape (nq, c)
            Rows of ``codes``, -1 for none. ValueError for a row outside ``-1..ny-1``.
        ids : numpy.ndarray of int64, shape (nq, c)
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
        """

    # ------------------------------------------------------------------ k-means
    def coarse_assign(self, x: NDArray[np.float32], centroids: NDArray[np.float32],
                      metric: Metric, n_threads: int
                      ) -> Tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Nearest centroid of each row (the first one on ties).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d)
        centroids : numpy.ndarray of float32, shape (nlist, d), nlist >= 1
        metric : {"l2", "ip"}
        n_threads : int

        Returns
        -------
        labels : numpy.ndarray of int64, shape (n,)
        distances : numpy.ndarray of float32, shape (n,)
            Squared L2 distance, or the inner product for ``"ip"``.
        """

    def kmeans(self, x: NDArray[np.float32], k: int, niter: int, seed: int,
               max_points_per_centroid: int, n_threads: int
               ) -> Tuple[NDArray[np.float32], float]:
        """Lloyd's k-means under L2, seeded and the same for any thread count.

        A seeded subsample of at most ``k * max_points_per_centroid`` rows, ``k`` distinct
        rows as initial centroids, ``niter`` iterations (assignment, then a sequential update
        in double), empty clusters repaired by splitting a large one. The engines draw
        different random numbers, so their centroids differ.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d), n >= k
            ValueError when ``n < k``.
        k : int, >= 1
        niter : int
        seed : int, >= 0
        max_points_per_centroid : int
            0 for no subsample.
        n_threads : int

        Returns
        -------
        centroids : numpy.ndarray of float32, shape (k, d)
        objective : float
            Sum of the squared distances of the training rows to their centroid at the last
            assignment.
        """

    # ------------------------------------------------------------------ product quantization
    def pq_train(self, x: NDArray[np.float32], M: int, nbits: int, niter: int, seed: int,
                 max_points_per_centroid: int, n_threads: int) -> NDArray[np.float32]:
        """Codebooks by :meth:`kmeans` on each block of ``d / M`` columns.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d)
            ``d`` a multiple of ``M`` and ``n >= 2 ** nbits`` (ValueError otherwise).
        M : int, >= 1
        nbits : int, 1..16
        niter, seed, max_points_per_centroid, n_threads : int
            As for :meth:`kmeans`.

        Returns
        -------
        numpy.ndarray of float32, shape (M, 2 ** nbits, d // M)
        """

    def PQCodebooks(self, codebooks: NDArray[np.float32], nbits: int) -> _PQCodebooks:
        """Prepare codebooks (copied) for encoding, decoding, tables and scans.

        Parameters
        ----------
        codebooks : numpy.ndarray of float32, shape (M, 2 ** nbits, dsub)
        nbits : int, 1..16

        Returns
        -------
        PQCodebooks
        """

    def pq_encode(self, x: NDArray[np.float32], pq: _PQCodebooks, n_threads: int
                  ) -> NDArray[np.uint8]:
        """Packed codes: each sub-vector replaced by its nearest centroid (squared L2).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, pq.d)
        pq : PQCodebooks
        n_threads : int

        Returns
        -------
        numpy.ndarray of uint8, shape (n, pq.code_size)
        """

    def pq_decode(self, codes: NDArray[np.uint8], pq: _PQCodebooks, n_threads: int
                  ) -> NDArray[np.float32]:
        """Reconstructions: the centroids the codes name, side by side.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, pq.code_size)
        pq : PQCodebooks
        n_threads : int

        Returns
        -------
        numpy.ndarray of float32, shape (n, pq.d)
        """

    def pq_distance_tables(self, x: NDArray[np.float32], pq: _PQCodebooks, metric: Metric,
                           n_threads: int) -> NDArray[np.float32]:
        """Each query's distance to every centroid of every sub-quantizer.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, pq.d)
        pq : PQCodebooks
        metric : {"l2", "ip"}
        n_threads : int

        Returns
        -------
        numpy.ndarray of float32, shape (nq, pq.M, 2 ** pq.nbits)
            ``||q_m - c_mj||^2`` (``"l2"``) or ``<q_m, c_mj>`` (``"ip"``), each summed
            sequentially over the sub-vector.
        """

    def pq_search(self, x: NDArray[np.float32], pq: _PQCodebooks, invlists: _InvertedLists,
                  k: int, metric: Metric, n_threads: int,
                  selector: Optional[_IDSelector] = None) -> SearchResult:
        """Asymmetric-distance (ADC) search over every code of ``invlists``.

        The key of a code is ``sum_m T[m, code_m]`` over the search table (the L2 table, or
        the negated IP table), summed left to right in float32; the result is the exact top-k
        of these keys.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, pq.d)
        pq : PQCodebooks
        invlists : InvertedLists
            ``"blocked"`` layout, ``code_size == pq.code_size`` (ValueError otherwise).
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int
        selector : IDSelector or None

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
            The stored ids.
        """

    def pq_range_search(self, x: NDArray[np.float32], pq: _PQCodebooks, invlists: _InvertedLists,
                        radius: float, metric: Metric, n_threads: int, max_results: int,
                        selector: Optional[_IDSelector] = None) -> RangeResult:
        """Every code of ``invlists`` whose ADC key (as :meth:`pq_search`) is within ``radius``.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, pq.d)
        pq : PQCodebooks
        invlists : InvertedLists
        radius : float
        metric : {"l2", "ip"}
        n_threads : int
        max_results : int
        selector : IDSelector or None

        Returns
        -------
        lims : numpy.ndarray of int64, shape (nq + 1,)
        D : numpy.ndarray of float32, shape (lims[-1],)
        I : numpy.ndarray of int64, shape (lims[-1],)
            The stored ids.
        """

    def pq_unpack_codes(self, codes: NDArray[np.uint8], M: int, nbits: int) -> NDArray[np.int32]:
        """Sub-quantizer indices of packed codes.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, ceil(M * nbits / 8))
        M : int, >= 1
        nbits : int, 1..16

        Returns
        -------
        numpy.ndarray of int32, shape (n, M)
        """

    def pq_pack_codes(self, idx: NDArray[np.int32], nbits: int) -> NDArray[np.uint8]:
        """Pack sub-quantizer indices into codes (the inverse of :meth:`pq_unpack_codes`).

        Parameters
        ----------
        idx : numpy.ndarray of int32, shape (n, M)
            Values in ``0 .. 2 ** nbits - 1`` (ValueError otherwise).
        nbits : int, 1..16

        Returns
        -------
        numpy.ndarray of uint8, shape (n, ceil(M * nbits / 8))
        """

    # ------------------------------------------------------------------ inverted files
    def CoarseQuantizer(self, centroids: NDArray[np.float32], metric: Metric) -> _CoarseQuantizer:
        """Prepare coarse centroids (copied) for probing.

        Parameters
        ----------
        centroids : numpy.ndarray of float32, shape (nlist, d), nlist >= 1, d >= 1
        metric : {"l2", "ip"}

        Returns
        -------
        CoarseQuantizer
        """

    def InvertedLists(self, nlist: int, code_size: int, layout: str,
                      with_bias: bool = False) -> _InvertedLists:
        """Empty inverted lists.

        Parameters
        ----------
        nlist : int, >= 1
        code_size : int, >= 1
            Bytes per code (``4 * d`` for IVF-Flat rows).
        layout : {"rows", "blocked"}
            ``"rows"`` for IVF-Flat vectors, ``"blocked"`` for PQ codes that are scanned.
        with_bias : bool
            Keep a float32 bias per code (L2 IVF-PQ).

        Returns
        -------
        InvertedLists
        """

    def external_lists(self, nlist: int, code_size: int, layout: str,
                       list_sizes: NDArray[np.int64], ids: NDArray[np.int64],
                       codes: NDArray[np.uint8], bias: Optional[NDArray[np.float32]] = None
                       ) -> _InvertedLists:
        """Read-only inverted lists over external arrays (a mapped file), which are not copied.

        The result keeps the arrays alive; they must not change while it exists. The scans read
        them as they read owned lists, with identical results; every change raises ValueError
        (:attr:`InvertedLists.read_only`). The Numba engine copies the probed lists of blocked
        codes into rows for its scans.

        Parameters
        ----------
        nlist : int, >= 1
        code_size : int, >= 1
        layout : {"rows", "blocked"}
        list_sizes : numpy.ndarray of int64, shape (nlist,)
            Each >= 0, adding up to ``ids.size``.
        ids : numpy.ndarray of int64, shape (n,)
            In list order.
        codes : numpy.ndarray of uint8, C-contiguous, any shape
            In list order: ``n * code_size`` bytes of rows (``"rows"``), or each list's codes in
            whole 64-code blocks as :meth:`InvertedLists.export_blocked` returns them
            (``"blocked"``). ValueError when the byte count does not match the sizes.
        bias : numpy.ndarray of float32, shape (n,), or None
            In list order; given exactly for lists that keep a bias (L2 IVF-PQ).

        Returns
        -------
        InvertedLists
        """

    def IDSelector(self, bitmap: Optional[NDArray[np.uint8]], start: int,
                   ids: Optional[NDArray[np.int64]], offsets: Optional[NDArray[np.int64]],
                   exclude: bool) -> _IDSelector:
        """An id selector (copies its arrays).

        Parameters
        ----------
        bitmap : numpy.ndarray of uint8, shape (nbytes,), or None
            Bit ``i % 8`` of byte ``i // 8`` (least significant first, as
            ``numpy.packbits(mask, bitorder="little")``) marks id ``start + i``.
        start : int, >= 0
            The id of the bitmap's first bit.
        ids : numpy.ndarray of int64, shape (n,), or None
            Sorted ascending within each set. Exactly one of ``bitmap`` and ``ids`` is given.
        offsets : numpy.ndarray of int64, shape (nq + 1,), or None
            Sorted ids only: query ``q``'s set is ``ids[offsets[q]:offsets[q + 1]]``
            (non-decreasing, from 0 to ``n``); None for one set shared by every query.
        exclude : bool
            Allow the ids outside the set instead.

        Returns
        -------
        IDSelector

        Raises
        ------
        ValueError
            Both or neither of ``bitmap`` and ``ids``, unsorted ids, bad offsets, a negative
            start.
        """

    def ivfflat_search(self, x: NDArray[np.float32], coarse: _CoarseQuantizer,
                       invlists: _InvertedLists, nprobe: int, k: int, metric: Metric,
                       n_threads: int, max_probe: int = 0,
                       selector: Optional[_IDSelector] = None) -> SearchResult:
        """IVF-Flat search: exact keys over the vectors of the ``nprobe`` nearest lists.

        Keys are computed directly (``||x - y||^2`` in the 16-lane order, or ``-<x, y>``).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, coarse.d)
        coarse : CoarseQuantizer
        invlists : InvertedLists
            ``"rows"`` layout, ``code_size == 4 * coarse.d``, ``coarse.nlist`` lists, no bias
            (ValueError otherwise); each code is a float32 vector's bytes.
        nprobe : int, >= 1
            Clipped to ``coarse.nlist``.
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int
        max_probe : int
            While a query has fewer than ``k`` results after ``nprobe`` lists, the next nearest
            lists are scanned, one at a time, up to ``max_probe`` lists in all (0: none).
        selector : IDSelector or None

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
            The stored ids.
        """

    def ivfflat_range_search(self, x: NDArray[np.float32], coarse: _CoarseQuantizer,
                             invlists: _InvertedLists, nprobe: int, radius: float,
                             metric: Metric, n_threads: int, max_results: int,
                             selector: Optional[_IDSelector] = None) -> RangeResult:
        """Every vector of the ``nprobe`` nearest lists within ``radius`` (keys as
        :meth:`ivfflat_search`).

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, coarse.d)
        coarse : CoarseQuantizer
        invlists : InvertedLists
        nprobe : int, >= 1
        radius : float
        metric : {"l2", "ip"}
        n_threads : int
        max_results : int
        selector : IDSelector or None

        Returns
        -------
        lims : numpy.ndarray of int64, shape (nq + 1,)
        D : numpy.ndarray of float32, shape (lims[-1],)
        I : numpy.ndarray of int64, shape (lims[-1],)
        """

    def ivfpq_search(self, x: NDArray[np.float32], coarse: _CoarseQuantizer, pq: _PQCodebooks,
                     invlists: _InvertedLists, nprobe: int, k: int, metric: Metric,
                     n_threads: int, estimates: bool = False, max_probe: int = 0,
                     selector: Optional[_IDSelector] = None) -> SearchResult:
        """IVF-PQ search over codes of residuals ``x - y_l`` in the ``nprobe`` nearest lists.

        Key of code ``r`` in list ``l``, L2: ``||q - y_l||^2 + (bias_r + sum_m -2 <q_m,
        c_m(r)>)`` with ``bias_r`` from :meth:`ivfpq_code_bias`; IP: ``-<q, y_l> + (0 + sum_m
        -<q_m, c_m(r)>)``; sums left to right in float32.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, coarse.d)
        coarse : CoarseQuantizer
        pq : PQCodebooks
            ``pq.d == coarse.d`` (ValueError otherwise).
        invlists : InvertedLists
            ``"blocked"`` layout, ``code_size == pq.code_size``, ``coarse.nlist`` lists, with a
            bias exactly when ``metric == "l2"`` (ValueError otherwise).
        nprobe : int, >= 1
            Clipped to ``coarse.nlist``.
        k : int, >= 1
        metric : {"l2", "ip"}
        n_threads : int
        estimates : bool
            Rank by the byte-quantized table's integer estimates instead of exact keys (a
            candidate list for exact re-ranking). Only the compiled core has the quantized
            table; the Numba engine accepts the flag and ranks by the exact keys.
        max_probe : int
            As for :meth:`ivfflat_search`.
        selector : IDSelector or None

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
            The stored ids.
        """

    def ivfpq_range_search(self, x: NDArray[np.float32], coarse: _CoarseQuantizer,
                           pq: _PQCodebooks, invlists: _InvertedLists, nprobe: int,
                           radius: float, metric: Metric, n_threads: int, max_results: int,
                           selector: Optional[_IDSelector] = None) -> RangeResult:
        """Every code of the ``nprobe`` nearest lists whose exact key (as :meth:`ivfpq_search`)
        is within ``radius``.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (nq, coarse.d)
        coarse : CoarseQuantizer
        pq : PQCodebooks
        invlists : InvertedLists
        nprobe : int, >= 1
        radius : float
        metric : {"l2", "ip"}
        n_threads : int
        max_results : int
        selector : IDSelector or None

        Returns
        -------
        lims : numpy.ndarray of int64, shape (nq + 1,)
        D : numpy.ndarray of float32, shape (lims[-1],)
        I : numpy.ndarray of int64, shape (lims[-1],)
        """

    def ivfpq_code_bias(self, codes: NDArray[np.uint8], list_nos: NDArray[np.int64],
                        coarse: _CoarseQuantizer, pq: _PQCodebooks, n_threads: int
                        ) -> NDArray[np.float32]:
        """The L2 IVF-PQ bias of each residual code: ``||r||^2 + 2 <y_l, r>``.

        Summed over sub-quantizers: ``sum_m (||c_m(r)||^2 + 2 <y_l,m, c_m(r)>)``.

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (n, pq.code_size)
        list_nos : numpy.ndarray of int64, shape (n,)
            The list of each code, ``0 <= list_no < coarse.nlist`` (ValueError otherwise).
        coarse : CoarseQuantizer
        pq : PQCodebooks
            ``pq.d == coarse.d``.
        n_threads : int

        Returns
        -------
        numpy.ndarray of float32, shape (n,)
        """


@runtime_checkable
class OptionalCalls(Protocol):
    """Calls only the compiled core has: benchmarks, a test hook, the PatchCore coreset and a
    fused re-ranked search.

    Not part of :class:`Engine`: a caller checks ``hasattr`` and has a fallback (the coreset
    has a NumPy one, the fused search the two calls it fuses) or runs only with the compiled
    core (``bench/``, tests).
    """

    def ivfpq_search_rerank(self, x: NDArray[np.float32], coarse: _CoarseQuantizer,
                            pq: _PQCodebooks, invlists: _InvertedLists, nprobe: int,
                            n_candidates: int, k: int, metric: Metric, n_threads: int,
                            max_probe: int, selector: Optional[_IDSelector],
                            refine: tuple) -> SearchResult:
        """An IndexRefine over an IndexIVFPQ in one call: :meth:`Engine.ivfpq_search` with
        ``estimates=True`` for ``n_candidates`` candidates per query, whose ids are rows of the
        refine store, then :meth:`Engine.rerank` (or ``rerank_sq``, ``rerank_pq``) to the best
        ``k``, with the candidates as both rows and ids. Equal to those calls made apart, bit
        for bit; it saves a single query the second call and the return to Python between.

        Parameters
        ----------
        x, coarse, pq, invlists, nprobe, metric, n_threads, max_probe, selector
            As for :meth:`Engine.ivfpq_search`.
        n_candidates : int, >= 1
        k : int, >= 1
        refine : tuple
            The refine store, addressed by row: ``("flat", y)`` (float32 ``(ny, d)``),
            ``("sq8", codes, vmin, step)`` (as :meth:`Engine.rerank_sq`) or ``("pq", pq,
            lists)`` (as :meth:`Engine.rerank_pq`). ValueError for another form, or for a
            candidate id outside the store's rows.

        Returns
        -------
        D : numpy.ndarray of float32, shape (nq, k)
        I : numpy.ndarray of int64, shape (nq, k)
        """

    def greedy_kcenter(self, x: NDArray[np.float32], n_select: int, first: int,
                       weights: Optional[NDArray[np.float32]], n_threads: int
                       ) -> NDArray[np.int64]:
        """Greedy (weighted) k-center selection, the coreset step of PatchCore.

        Starting from row ``first``, repeatedly adds the row maximising
        ``w_i * min_{c in C} ||x_i - c||^2`` (the first row on ties; ``w_i = 1`` without
        weights); the same for any thread count and kernel level.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d), n >= 1
        n_select : int, 1..n
        first : int, 0..n-1
        weights : numpy.ndarray of float32, shape (n,), non-negative, or None
        n_threads : int

        Returns
        -------
        numpy.ndarray of int64, shape (n_select,)
            Row numbers in selection order, ``first`` first.
        """

    def micro_scan(self, M: int, nbits: int, n: int, repeats: int, level: str) -> List[float]:
        """Seconds per scan of ``n`` synthetic codes with one kernel level's scan, per repeat."""

    def micro_memory_read(self, nbytes: int, repeats: int) -> List[float]:
        """Seconds per read of an ``nbytes`` buffer (the memory floor of a scan), per repeat."""

    def _set_min_split_bytes(self, bytes: int) -> int:
        """Test hook: the code bytes per thread above which one query's scan is split over
        threads; returns the previous value."""

    def _set_half_centroid_bytes(self, bytes: int) -> int:
        """Test hook: the centroid bytes (nlist * d * 4) from which coarse quantizers built
        afterwards keep a half-precision copy for single queries; returns the previous value."""


@runtime_checkable
class ResidentCalls(Protocol):
    """The call of an engine whose data lives on a device (the torch engine).

    Not part of :class:`Engine`: a caller checks ``hasattr`` first; on the CPU engines the NumPy
    array itself is what the calls read.
    """

    def resident(self, x: NDArray) -> object:
        """A copy of ``x`` held on the engine's device.

        Every call of this engine that takes an array accepts the copy in place of ``x`` (the
        same dtype and shape) and reads it without moving it again; the caller keeps it while
        ``x`` is unchanged and drops it when ``x`` changes.

        Parameters
        ----------
        x : numpy.ndarray, C-contiguous

        Returns
        -------
        object
            The engine's handle (a torch tensor on the device).
        """
