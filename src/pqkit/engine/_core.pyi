"""pqkit compiled engine (internal: use the pqkit package API).

Built from cpp/ (bindings: cpp/python/bindings.cpp). Conventions shared by every call:

* Arrays must already have the stated dtype and be C-contiguous: another dtype raises
  TypeError, a wrong shape or layout ValueError (nothing is converted here; the Python layer
  validates and converts first).
* ``metric`` is ``"l2"`` (squared L2 distances) or ``"ip"`` (inner products, larger is better).
* Search results are ``(D, I)``: D float32 and I int64, both (nq, k), best first, padded with
  (+inf, -1) for L2 or (-inf, -1) for IP when fewer than k results exist; ties are broken by
  the smaller id. Results are identical for every SIMD level and thread count.
* ``n_threads`` >= 1 workers; the GIL is released while the engine runs, and Ctrl-C stops a
  long call with KeyboardInterrupt.
* ``selector``: None, or an :class:`IDSelector`; only the ids it allows are scanned (a
  disallowed code never gets an exact distance).
* Range searches return ``(lims, D, I)``: lims int64 (nq + 1,), D float32 and I int64 of
  length lims[-1]; query q's results at lims[q] .. lims[q + 1] - 1, sorted by (key, id), those
  with D < radius (L2) or D > radius (IP). More than ``max_results`` results raise ValueError.
"""

import numpy as np
from numpy.typing import NDArray

def simd_level() -> str:
    """The active SIMD level: 'scalar', 'avx2' or 'avx512'."""

def available_simd_levels() -> list[str]:
    """SIMD levels this CPU supports, scalar first, best last."""

def set_simd_level(level: str) -> None:
    """Make ``level`` ('scalar', 'avx2', 'avx512') active; ValueError if unknown or unsupported."""

def hardware_concurrency() -> int:
    """The number of hardware threads (at least 1)."""

def kmeans(
    x: NDArray[np.float32],
    k: int,
    niter: int,
    seed: int,
    max_points_per_centroid: int,
    n_threads: int,
) -> tuple[NDArray[np.float32], float]:
    """Lloyd's k-means (L2) of x (n, d) float32, n >= k.

    Trains on at most ``k * max_points_per_centroid`` random rows (0 or less: all rows).
    Returns (centroids (k, d) float32, objective: sum of squared distances to the nearest
    centroid at the last assignment).
    """

def _set_min_split_bytes(bytes: int) -> int:
    """Test hook: the code bytes per thread above which one query's scan is split over threads
    (returns the previous value)."""

def _set_half_centroid_bytes(bytes: int) -> int:
    """Test hook: the centroid bytes (nlist * d * 4) from which coarse quantizers built afterwards
    keep a half-precision copy for single queries (returns the previous value)."""

def greedy_kcenter(
    x: NDArray[np.float32],
    n_select: int,
    first: int,
    weights: NDArray[np.float32] | None,
    n_threads: int,
) -> NDArray[np.int64]:
    """Greedy k-center (coreset) selection over the rows of x (n, d) float32.

    Starts at row ``first`` (0 <= first < n) and adds, n_select - 1 times, the row maximising
    ``weights[i] * min_c ||x_i - c||^2`` (weights (n,) float32, or None for 1). Returns the
    selected row numbers (n_select,) int64 in selection order; 1 <= n_select <= n.
    """

def all_finite(x: NDArray[np.float32], max_abs: float = ...) -> bool:
    """Whether every value of x (float32, any shape, C-contiguous) is finite with
    ``|value| <= max_abs`` (default +inf: finite only). ValueError if max_abs < 0 or NaN."""

def sqnorms(x: NDArray[np.float32], n_threads: int) -> NDArray[np.float32]:
    """Squared norms (n,) float32 of the rows of x (n, d) float32, exactly as flat_search
    computes them (so they can be passed back as its ``norms``)."""

def flat_search(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    k: int,
    metric: str,
    n_threads: int,
    norms: NDArray[np.float32] | None = None,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact k-NN of the queries x (nq, d) among the rows of y (ny, d), both float32.

    norms: y's squared norms (ny,) float32 from ``sqnorms``, or None to compute them (L2: the
    keys use them; IP: only the fast pass's rounding-error bound does).
    selector: the row numbers each query may return. Returns (D, I), each (nq, k); I holds row
    numbers of y.
    """

def flat_range_search(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    radius: float,
    metric: str,
    n_threads: int,
    max_results: int,
    norms: NDArray[np.float32] | None = None,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """Exact range search of x (nq, d) among the rows of y (ny, d): (lims, D, I), I holding
    row numbers (keys as flat_search computes them)."""

def rerank(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    rows: NDArray[np.int64],
    ids: NDArray[np.int64],
    k: int,
    metric: str,
    n_threads: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact re-ranking of candidates: for query i of x (nq, d) float32, the candidate rows
    ``rows[i]`` of y (ny, d) float32 ((nq, c) int64, -1 for none; ValueError outside
    -1..ny-1) get their exact distance, and ``ids`` (nq, c) int64 are their result ids.
    Returns (D, I), each (nq, k)."""

def rerank_pq(
    x: NDArray[np.float32],
    pq: PQCodebooks,
    lists: InvertedLists,
    rows: NDArray[np.int64],
    ids: NDArray[np.int64],
    k: int,
    metric: str,
    n_threads: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """As ``rerank``, with the candidates stored as PQ codes: ``rows`` (nq, c) int64 are
    offsets into list 0 of ``lists`` (codes of pq.code_size bytes); each candidate's distance
    is computed from its decoded vector, bit for bit as ``rerank`` over ``pq_decode``'s rows.
    x is (nq, pq.d) float32. Returns (D, I), each (nq, k)."""

def rerank_sq(
    x: NDArray[np.float32],
    codes: NDArray[np.uint8],
    vmin: NDArray[np.float32],
    step: NDArray[np.float32],
    rows: NDArray[np.int64],
    ids: NDArray[np.int64],
    k: int,
    metric: str,
    n_threads: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """As ``rerank``, with the candidates stored as 8-bit scalar-quantizer codes (ny, d) uint8:
    dimension t of row r decodes to vmin[t] + codes[r, t] * step[t] (float32, not fused), and
    the keys equal ``rerank``'s over the decoded rows, bit for bit. Returns (D, I), each (nq, k)."""

def coarse_assign(
    x: NDArray[np.float32],
    centroids: NDArray[np.float32],
    metric: str,
    n_threads: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Nearest centroid of each row of x (n, d) float32 among centroids (nlist, d) float32.

    Returns (labels (n,) int64, distances (n,) float32: squared L2, or the inner product for IP).
    """

def pq_train(
    x: NDArray[np.float32],
    M: int,
    nbits: int,
    niter: int,
    seed: int,
    max_points_per_centroid: int,
    n_threads: int,
) -> NDArray[np.float32]:
    """Product-quantizer codebooks (M, 2**nbits, d // M) float32 trained on x (n, d) float32
    (one k-means per subspace; d % M == 0, 1 <= nbits <= 16, n >= 2**nbits)."""

class PQCodebooks:
    """Trained PQ codebooks, copied and prepared once for encoding and distance tables."""

    def __init__(self, codebooks: NDArray[np.float32], nbits: int) -> None:
        """codebooks: (M, 2**nbits, dsub) float32; d = M * dsub."""
    @property
    def d(self) -> int:
        """Vector dimension (M * dsub)."""
    @property
    def M(self) -> int:
        """Number of sub-quantizers."""
    @property
    def nbits(self) -> int:
        """Bits per sub-quantizer index."""
    @property
    def code_size(self) -> int:
        """Bytes per packed code: ceil(M * nbits / 8)."""

class CoarseQuantizer:
    """IVF coarse centroids, copied and prepared once per index."""

    def __init__(self, centroids: NDArray[np.float32], metric: str) -> None:
        """centroids: (nlist, d) float32, nlist >= 1, d >= 1."""
    @property
    def nlist(self) -> int:
        """Number of centroids (inverted lists)."""
    @property
    def d(self) -> int:
        """Vector dimension."""
    @property
    def keeps_half(self) -> bool:
        """Whether single queries probe a half-precision copy of the centroids (kept from
        nlist * d * 4 bytes, see ``_set_half_centroid_bytes``; results are those of the exact
        path)."""

def pq_encode(x: NDArray[np.float32], pq: PQCodebooks, n_threads: int) -> NDArray[np.uint8]:
    """Packed codes (n, pq.code_size) uint8 of the rows of x (n, pq.d) float32."""

def pq_decode(codes: NDArray[np.uint8], pq: PQCodebooks, n_threads: int) -> NDArray[np.float32]:
    """Reconstructions (n, pq.d) float32 of packed codes (n, pq.code_size) uint8."""

def pq_distance_tables(
    x: NDArray[np.float32], pq: PQCodebooks, metric: str, n_threads: int
) -> NDArray[np.float32]:
    """Per-query tables (nq, M, 2**nbits) float32 for x (nq, pq.d) float32:
    ``||x_m - c_mk||^2`` (L2) or ``<x_m, c_mk>`` (IP)."""

def pq_search(
    x: NDArray[np.float32],
    pq: PQCodebooks,
    invlists: InvertedLists,
    k: int,
    metric: str,
    n_threads: int,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact top-k of the ADC distances of x (nq, pq.d) float32 over every allowed code of
    ``invlists`` (blocked codes of pq.code_size bytes). Returns (D, I), each (nq, k); I holds
    the stored ids."""

def pq_range_search(
    x: NDArray[np.float32],
    pq: PQCodebooks,
    invlists: InvertedLists,
    radius: float,
    metric: str,
    n_threads: int,
    max_results: int,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """Range search over the ADC distances of pq_search: (lims, D, I)."""

def pq_unpack_codes(codes: NDArray[np.uint8], M: int, nbits: int) -> NDArray[np.int32]:
    """Sub-quantizer indices (n, M) int32 of packed codes (n, ceil(M * nbits / 8)) uint8."""

def pq_pack_codes(idx: NDArray[np.int32], nbits: int) -> NDArray[np.uint8]:
    """Packed codes (n, ceil(M * nbits / 8)) uint8 of indices idx (n, M) int32, each in
    0..2**nbits - 1 (ValueError otherwise)."""

def ivfflat_search(
    x: NDArray[np.float32],
    coarse: CoarseQuantizer,
    invlists: InvertedLists,
    nprobe: int,
    k: int,
    metric: str,
    n_threads: int,
    max_probe: int = 0,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """IVF-Flat search of x (nq, coarse.d) float32 over the nprobe nearest lists (raw float32
    rows, layout 'rows', code_size 4 * d); while a query has fewer than k results, the next
    nearest lists up to max_probe (0: none). Returns (D, I), each (nq, k)."""

def ivfflat_range_search(
    x: NDArray[np.float32],
    coarse: CoarseQuantizer,
    invlists: InvertedLists,
    nprobe: int,
    radius: float,
    metric: str,
    n_threads: int,
    max_results: int,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """IVF-Flat range search over the nprobe nearest lists: (lims, D, I)."""

def ivfpq_search(
    x: NDArray[np.float32],
    coarse: CoarseQuantizer,
    pq: PQCodebooks,
    invlists: InvertedLists,
    nprobe: int,
    k: int,
    metric: str,
    n_threads: int,
    estimates: bool = False,
    max_probe: int = 0,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """IVF-PQ search of x (nq, coarse.d) float32 over the nprobe nearest lists (blocked PQ
    codes of residuals, with a bias per code for L2). ``estimates``: rank by the quantized
    table's estimates (for an exact re-ranking) instead of exact ADC keys. ``max_probe``: as
    for ivfflat_search. Returns (D, I), each (nq, k)."""

def ivfpq_search_rerank(
    x: NDArray[np.float32],
    coarse: CoarseQuantizer,
    pq: PQCodebooks,
    invlists: InvertedLists,
    nprobe: int,
    n_candidates: int,
    k: int,
    metric: str,
    n_threads: int,
    max_probe: int,
    selector: IDSelector | None,
    refine: tuple,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """ivfpq_search (estimates) for n_candidates per query, re-ranked over the refine store
    ("flat", y) / ("sq8", codes, vmin, step) / ("pq", pq, lists) to the best k, in one call."""

def ivfpq_range_search(
    x: NDArray[np.float32],
    coarse: CoarseQuantizer,
    pq: PQCodebooks,
    invlists: InvertedLists,
    nprobe: int,
    radius: float,
    metric: str,
    n_threads: int,
    max_results: int,
    selector: IDSelector | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """IVF-PQ range search over the nprobe nearest lists (exact ADC keys): (lims, D, I)."""

def ivfpq_code_bias(
    codes: NDArray[np.uint8],
    list_nos: NDArray[np.int64],
    coarse: CoarseQuantizer,
    pq: PQCodebooks,
    n_threads: int,
) -> NDArray[np.float32]:
    """Per-code L2 bias (n,) float32, ``||r||^2 + 2 <y_l, r>`` for the residual codes (n,
    pq.code_size) uint8 stored in lists list_nos (n,) int64."""

def micro_scan(M: int, nbits: int, n: int, repeats: int, level: str) -> list[float]:
    """Seconds per scan of n synthetic codes with one level's kernel (bench/micro); one value
    per repeat. nbits 4 or 8, 1 <= M <= 257."""

def micro_memory_read(nbytes: int, repeats: int) -> list[float]:
    """Seconds per read of an nbytes buffer (bench/micro); one value per repeat."""

class IDSelector:
    """The ids a search may return: a bitmap (uint8 (nbytes,), bit i of byte j for id
    start + 8 j + i) or sorted ids (int64 (n,)), one set for every query or, with offsets
    (int64 (nq + 1,), CSR), one per query; ``exclude`` allows the ids outside the set.
    ValueError for unsorted ids, bad offsets, or both or neither of bitmap and ids."""

    def __init__(
        self,
        bitmap: NDArray[np.uint8] | None,
        start: int,
        ids: NDArray[np.int64] | None,
        offsets: NDArray[np.int64] | None,
        exclude: bool,
    ) -> None: ...
    @property
    def n_sets(self) -> int:
        """The number of per-query sets, 0 for one set shared by every query."""
    @property
    def exclude(self) -> bool:
        """Whether the selector allows the ids outside its set."""

class InvertedLists:
    """Per list: codes (layout 'rows': as given; 'blocked': the scan layout) and int64 ids,
    and with ``with_bias`` a float32 bias per code (IVF-PQ under L2). IndexPQ keeps one list."""

    def __init__(self, nlist: int, code_size: int, layout: str, with_bias: bool = False) -> None:
        """nlist >= 1 lists of codes of code_size >= 1 bytes; layout 'rows' or 'blocked'."""
    @property
    def with_bias(self) -> bool:
        """Whether a bias is kept per code."""
    @property
    def nlist(self) -> int:
        """Number of lists."""
    @property
    def code_size(self) -> int:
        """Bytes per code."""
    @property
    def ntotal(self) -> int:
        """Number of stored codes over all lists."""
    @property
    def read_only(self) -> bool:
        """Whether the lists view external arrays (external_lists): changes raise ValueError."""
    def add(
        self,
        list_nos: NDArray[np.int64],
        ids: NDArray[np.int64],
        codes: NDArray[np.uint8],
        bias: NDArray[np.float32] | None = None,
    ) -> None:
        """Append n codes (n, code_size) uint8 with their ids (n,) int64 to lists list_nos
        (n,) int64 (and bias (n,) float32 when the lists keep one). Nothing changes on error."""
    def set_bias(self, bias: NDArray[np.float32]) -> None:
        """Replace every bias, in list order (as export() orders the codes): (ntotal,) float32."""
    def list_sizes(self) -> NDArray[np.int64]:
        """Codes per list, (nlist,) int64."""
    def list_ids(self, list_no: int) -> NDArray[np.int64]:
        """Ids (n_l,) int64 of list list_no (IndexError outside 0..nlist-1)."""
    def list_codes(self, list_no: int) -> NDArray[np.uint8]:
        """Codes (n_l, code_size) uint8 of list list_no, as rows (IndexError outside 0..nlist-1)."""
    def remove_ids(self, ids: NDArray[np.int64]) -> int:
        """Remove every code whose id is in ids (n,) int64; returns how many were removed."""
    def locate(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(list_nos (n,) int64, offsets (n,) int64) of each id of ids (n,) int64; -1/-1 where
        absent."""
    def reset(self) -> None:
        """Remove every code and free the memory."""
    def memory_usage_bytes(self) -> int:
        """Bytes reserved by codes, ids and biases."""
    def export(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]:
        """Every list in order: (sizes (nlist,) int64, ids (ntotal,) int64, codes (ntotal,
        code_size) uint8 as rows)."""
    def export_blocked(
        self,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8], NDArray[np.float32] | None]:
        """Every list in order, codes in the scan layout: (sizes (nlist,) int64, ids (ntotal,)
        int64, blocks (n_blocks, code_size, 64) uint8, each list in whole 64-code blocks with
        zero padding codes, bias (ntotal,) float32 or None). Blocked lists only."""

def external_lists(
    nlist: int,
    code_size: int,
    layout: str,
    list_sizes: NDArray[np.int64],
    ids: NDArray[np.int64],
    codes: NDArray[np.uint8],
    bias: NDArray[np.float32] | None = None,
) -> InvertedLists:
    """Read-only inverted lists over the given arrays (not copied; kept alive by the result):
    list_sizes (nlist,) int64, ids (n,) int64 and bias (n,) float32 or None in list order, codes
    uint8 C-contiguous in list order (rows, or whole 64-code blocks per list as export_blocked
    returns them). ValueError when the sizes do not match the ids and the codes' bytes."""
