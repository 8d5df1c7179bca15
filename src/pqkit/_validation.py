"""The one validation module of pqkit.

Every public entry point checks its arguments here before anything reaches the compiled core.
Errors follow two rules:

- ``TypeError`` when the *kind* of an argument is wrong (an integer array where floats are
  expected, a float array where ids are expected, a string where an int is expected);
- ``ValueError`` when the kind is right but the value, shape or state is not (wrong number of
  columns, NaN, negative id, ``k < 1``, an index that is not trained yet).

Each message says what was expected, what was received and how to fix it.

Conversions (the only ones pqkit ever makes):

- vectors: any floating dtype (float16/32/64), any memory layout, a list of floats, or a single
  1-D vector (one row) become a C-contiguous float32 matrix; float64 values outside the float32
  range become inf and are then refused by the finiteness check;
- ids: any integer dtype becomes int64 after the values are checked (never from float or bool);
- codes: never converted; they must already be uint8 (a non-contiguous uint8 array is copied to a
  contiguous one, which does not change any value).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings

import numpy as np

from . import engine
from .metrics import NAMES as METRICS

__all__ = [
    "TrainingWarning",
    "as_float_matrix",
    "check_anisotropic_eta",
    "check_bool_mask",
    "check_csr_offsets",
    "check_codes",
    "check_finite",
    "check_fits_in_memory",
    "check_float_array",
    "check_id_scalar",
    "check_ids",
    "check_int",
    "check_k",
    "check_k_factor",
    "check_max_probe",
    "check_max_results",
    "check_metric",
    "check_n_threads",
    "check_nprobe",
    "check_positive_int",
    "check_radius",
    "check_result_size",
    "check_trained",
    "available_memory_bytes",
    "check_training_size",
    "max_abs_value",
    "normalize_rows",
    "warn_few_training_points",
]

#: k-means needs about this many points per centroid to place centroids reliably (FAISS uses
#: the same threshold for its "please provide at least ... training points" warning).
MIN_POINTS_PER_CENTROID = 39



class TrainingWarning(UserWarning):
    """Training ran on fewer than 39 points per centroid; centroids may be poor.

    Emitted by :class:`pqkit.KMeans`, :class:`pqkit.ProductQuantizer` (per subquantizer: fewer
    than ``39 * 2**nbits`` points) and by the ``train`` method of every index that trains one of
    those. Training still completes; provide more training vectors to silence it.
    """


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"numpy array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}" if np.isscalar(value) else type(value).__name__


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as a Python int; bools and non-integers raise TypeError.

    Parameters
    ----------
    value : int or numpy integer
    name : str
        Argument name used in messages.
    minimum, maximum : int, optional
        Inclusive bounds; outside them ValueError is raised.
    """
    if type(value) is int and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return value  # the common case, without the slower abstract-class checks
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if maximum is not None and value > maximum:
        bound = f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_positive_int(value, name: str, maximum: int | None = None) -> int:
    """Return ``value`` as a Python int >= 1 (TypeError for non-ints, ValueError below 1)."""
    return check_int(value, name, minimum=1, maximum=maximum)


def check_k(k) -> int:
    """Validate the number of neighbours ``k`` of a search (an int >= 1)."""
    if type(k) is int and k >= 1:  # the common case, without the slower abstract-class checks
        return k
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int (number of neighbours), got {_describe(k)}")
    if k < 1:
        raise ValueError(
            f"k must be >= 1 (number of neighbours to return), got {int(k)}; "
            "results are padded with -1 ids when fewer than k vectors exist, so any k >= 1 works"
        )
    return int(k)


def check_nprobe(value, nlist: int, name: str = "nprobe") -> int:
    """Validate a number of inverted lists scanned per query: an int in ``[1, nlist]``."""
    if type(value) is int and 1 <= value <= nlist:  # the common case
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if not 1 <= value <= nlist:
        raise ValueError(
            f"{name} must be in [1, nlist={nlist}] (lists scanned per query), got {int(value)}")
    return int(value)


def check_max_probe(value, nlist: int, nprobe: int) -> int:
    """Validate ``max_probe``: an int in ``[nprobe, nlist]``, the most lists a query scans while
    it has fewer than k results."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"max_probe must be an int, got {_describe(value)}")
    if not nprobe <= value <= nlist:
        raise ValueError(
            f"max_probe must be in [nprobe={nprobe}, nlist={nlist}] (the most lists scanned per "
            f"query while fewer than k results are found), got {int(value)}; raise it to at "
            "least nprobe, or lower nprobe")
    return int(value)


#: Largest refine factor accepted (beyond it, re-ranking costs more than exact search).
MAX_K_FACTOR = 1024


def check_k_factor(k_factor) -> float:
    """Validate a refine factor: a finite real number in ``[1, MAX_K_FACTOR]``."""
    if type(k_factor) in (int, float) and 1 <= k_factor <= MAX_K_FACTOR:  # the common case
        return float(k_factor)
    if isinstance(k_factor, (bool, np.bool_)) or not isinstance(k_factor, (int, float, np.number)):
        raise TypeError(f"k_factor must be a number >= 1, got {type(k_factor).__name__}")
    k_factor = float(k_factor)
    if not (math.isfinite(k_factor) and 1.0 <= k_factor <= MAX_K_FACTOR):
        raise ValueError(
            f"k_factor must be a finite number in [1, {MAX_K_FACTOR}] (candidates fetched = "
            f"ceil(k * k_factor)), got {k_factor}"
        )
    return k_factor


#: Largest anisotropic weight accepted: beyond it the loss ignores the error across x entirely.
MAX_ANISOTROPIC_ETA = 1e6


def check_anisotropic_eta(eta, metric: str | None = None):
    """Validate ``anisotropic_eta``: None (plain PQ) or a finite real number in
    ``(1, MAX_ANISOTROPIC_ETA]``; with ``metric``, only "ip" and "cosine" take a number."""
    if eta is None:
        return None
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise TypeError(f"anisotropic_eta must be None or a float > 1, got {_describe(eta)}")
    eta = float(eta)
    if not (math.isfinite(eta) and 1.0 < eta <= MAX_ANISOTROPIC_ETA):
        raise ValueError(
            f"anisotropic_eta must be a finite number in (1, {MAX_ANISOTROPIC_ETA:g}] (weight of "
            f"the quantization error along x; 1 is plain PQ), got {eta!r}; pass None for plain "
            "PQ, or pqkit.anisotropic_eta(d, 0.2)"
        )
    if metric is not None and metric not in ("ip", "cosine"):
        raise ValueError(
            f"anisotropic_eta weighs the error of inner-product scores: it needs metric 'ip' or "
            f"'cosine', got metric={metric!r}; pass anisotropic_eta=None for an L2 index"
        )
    return eta


def check_radius(radius) -> float:
    """Validate a range-search radius: a real number (infinite allowed), not NaN."""
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise TypeError(f"radius must be a real number, got {_describe(radius)}")
    radius = float(radius)
    if math.isnan(radius):
        raise ValueError("radius must be a number, got nan; for L2 it bounds the squared "
                         "distance (D < radius), for ip/cosine the similarity (D > radius)")
    return radius


#: Bytes a range-search result takes while it is collected and returned (a 16-byte (distance,
#: id) entry in the engine, then 4 + 8 bytes in D and I, and a copy of the ids).
RANGE_RESULT_BYTES = 36


def check_max_results(max_results) -> int:
    """The cap on the results of one ``range_search``: an int >= 0 that fits in memory, or None
    for as many as memory allows (:func:`available_memory_bytes` / ``RANGE_RESULT_BYTES``)."""
    if max_results is None:
        limit, _ = available_memory_bytes()
        return (2**48 if limit is None else limit) // RANGE_RESULT_BYTES
    value = check_int(max_results, "max_results", minimum=0)
    check_fits_in_memory(
        value * RANGE_RESULT_BYTES,
        f"max_results={value} range-search results ({RANGE_RESULT_BYTES} bytes each)",
        "pass a smaller max_results, or None for as many as memory allows")
    return value


@functools.lru_cache(maxsize=None)
def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX, or not reported
        return None


def _read_int(path: str) -> int | None:
    """An integer file of /proc or /sys ("max" and anything unreadable give None)."""
    try:
        with open(path) as f:
            text = f.read().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def _cgroup_memory_left(proc_cgroup: str = "/proc/self/cgroup",
                        sys_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the process's cgroup may still take: the least ``limit - usage`` over its cgroup
    and their ancestors (v2 ``memory.max``/``memory.current``, v1 ``memory.limit_in_bytes``/
    ``memory.usage_in_bytes``); None where no limit is set or readable."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    left = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2 (pure, or the unified part of a hybrid mount)
            roots, files = (sys_root, sys_root + "/unified"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            roots, files = (sys_root + "/memory",), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for root in roots:
            for depth in range(len(parts), -1, -1):
                folder = "/".join([root, *parts[:depth]])
                limit = _read_int(f"{folder}/{files[0]}")
                if limit is not None and limit < 1 << 60:  # v1 reports "no limit" as ~2**63
                    remaining = max(limit - (_read_int(f"{folder}/{files[1]}") or 0), 0)
                    left = remaining if left is None else min(left, remaining)
    return left


def _address_space_left() -> int | None:
    """Bytes the address-space limit (RLIMIT_AS, ``ulimit -v``) still allows; None if unlimited."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    pages = _read_int("/proc/self/statm")
    used = 0 if pages is None else pages * resource.getpagesize()
    return max(soft - used, 0)


def available_memory_bytes() -> tuple:
    """What the process may still allocate: ``(bytes, source)``, or ``(None, None)`` if unknown.

    The smallest of the address-space limit left (RLIMIT_AS), the cgroup's memory limit left
    (``memory.max``) and the machine's physical memory; ``source`` names which one.
    """
    candidates = [(_address_space_left(), "the process's address-space limit (ulimit -v)"),
                  (_cgroup_memory_left(), "the memory left under the cgroup's memory.max"),
                  (_physical_memory_bytes(), "this machine's physical memory")]
    known = [(n, source) for n, source in candidates if n is not None]
    return min(known, key=lambda item: item[0]) if known else (None, None)


def check_fits_in_memory(nbytes: int, what: str, hint: str) -> None:
    """Raise ValueError, before allocating, when ``nbytes`` exceed what the process may use.

    The limit is :func:`available_memory_bytes`: the address-space limit (``ulimit -v``), the
    cgroup's ``memory.max`` and physical memory, whichever leaves least. Without this check such
    a request ends in a MemoryError at best, or in the kernel's OOM killer when the allocation is
    lazy (overcommit) and then touched.
    """
    limit, source = available_memory_bytes()
    if limit is not None and nbytes > limit:
        raise ValueError(
            f"{what} needs {nbytes / 2**30:.2f} GiB, more than {source} allows "
            f"({limit / 2**30:.2f} GiB); {hint}"
        )


def check_result_size(n: int, k: int) -> None:
    """Refuse a search whose (n, k) results (12 bytes each: float32 D, int64 I) cannot fit in
    memory, before anything is allocated."""
    if 12 * n * k <= _SMALL_RESULT_BYTES:  # the common case: no message to format
        return
    check_fits_in_memory(
        12 * n * k, f"k={k} for {n} queries (results D float32 and I int64 of shape ({n}, {k}))",
        "k beyond ntotal only adds padding: use k <= ntotal, or search fewer queries at a time",
    )


# Below this many bytes a request is never refused (no machine pqkit runs on has less memory).
_SMALL_RESULT_BYTES = 64 << 20


def check_n_threads(n_threads, name: str = "n_threads") -> int | None:
    """Validate a thread count: None (use :func:`pqkit.get_num_threads`) or an int >= 1."""
    if n_threads is None:
        return None
    return check_positive_int(n_threads, name)


def check_metric(metric, allowed=METRICS) -> str:
    """Validate a metric name; returns it unchanged."""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, one of {list(allowed)}, got {_describe(metric)}")
    if metric not in allowed:
        hint = ""
        if metric.lower() in allowed:
            hint = f"; names are lower case: use {metric.lower()!r}"
        raise ValueError(f"metric must be one of {list(allowed)}, got {metric!r}{hint}")
    return metric


def check_trained(is_trained: bool, what: str) -> None:
    """Raise ValueError naming ``.train`` when an object is used before training."""
    if not is_trained:
        raise ValueError(
            f"{what} is not trained; call .train(x) with training vectors first "
            "(or set the centroids/codebooks explicitly)"
        )


_FLOAT32 = np.dtype(np.float32)


#: Largest squared L2 norm a vector (stored, query, centroid, codebook entry) may have. Every
#: distance pqkit computes is then at most ``(3 * sqrt(MAX_SQUARED_NORM))**2 < 2**124``, well inside
#: float32 (2**128), for L2 and inner products alike, residuals and decompositions included.
MAX_SQUARED_NORM = 2.0**120


@functools.lru_cache(maxsize=64)
def max_abs_value(d: int) -> float:
    """The largest ``|value|`` accepted in a ``d``-dimensional float vector.

    A per-coordinate bound ``sqrt(MAX_SQUARED_NORM / d)``, so that any vector within it has a
    squared norm of at most ``MAX_SQUARED_NORM`` (checked in the same pass as finiteness).
    """
    return float(np.sqrt(MAX_SQUARED_NORM / max(int(d), 1)))


#: Each engine's ``all_finite``, by engine name (looked up once: searches check every query).
_ALL_FINITE: dict = {}


def _all_within(x: np.ndarray, bound: float) -> bool:
    """Whether every value is finite with ``|value| <= bound``: one pass without a temporary in the
    default engine for C-contiguous float32; NumPy otherwise."""
    if x.dtype == _FLOAT32 and x.flags.c_contiguous:
        name = engine.get_backend()
        check = _ALL_FINITE.get(name)
        if check is None:
            check = _ALL_FINITE[name] = engine.core(name).all_finite
        return check(x, bound)
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(x) <= bound))  # NaN compares False


def check_finite(x: np.ndarray, name: str, d: int | None = None) -> None:
    """Raise ValueError if a float array holds NaN, +-inf, or values beyond the magnitude bound.

    Parameters
    ----------
    x : numpy.ndarray of float
        Vectors (n, d), or any array whose values belong to ``d``-dimensional vectors (codebooks
        (M, ksub, dsub) of a d-dimensional quantizer).
    name : str
        Argument name used in messages.
    d : int, optional
        Dimension of the vectors the values belong to; ``x.shape[-1]`` by default. The bound is
        :func:`max_abs_value` ``(d)``: beyond it, squared distances could overflow float32 and
        searches would return wrong neighbours.
    """
    if not x.size:
        return
    d = x.shape[-1] if d is None else d
    bound = max_abs_value(d)
    if _all_within(x, bound):
        return
    rows = x.reshape(x.shape[0], -1)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(rows)
        if not finite.all():
            bad_rows = np.flatnonzero(~finite.all(axis=1))
            raise ValueError(
                f"{name} contains NaN or infinite values ({bad_rows.size} row(s), first at row "
                f"{int(bad_rows[0])}); remove or impute them (values beyond the float32 range "
                "also become inf after conversion)"
            )
        too_large = np.abs(rows) > bound
    bad_rows = np.flatnonzero(too_large.any(axis=1))
    first = int(bad_rows[0])
    value = float(rows[first][too_large[first]][0])
    raise ValueError(
        f"{name} holds values too large for float32 distances: {value:.3g} in row {first} "
        f"({bad_rows.size} row(s) in all) exceeds the limit +-{bound:.3g} for d={d} (every "
        f"|value| <= sqrt(2**120 / d), so that squared distances cannot overflow); scale the "
        "vectors down (neighbours do not change under a common scale factor)"
    )


def as_float_matrix(x, d: int | None = None, name: str = "x", check_finite_values: bool = True):
    """Convert vectors to a C-contiguous float32 matrix of shape (n, d).

    Parameters
    ----------
    x : array_like of floating dtype, shape (n, d) or (d,)
        Any floating dtype and memory layout; a 1-D vector is one row.
    d : int, optional
        Required number of columns (the index dimension).
    name : str
        Argument name used in messages.
    check_finite_values : bool
        Refuse NaN/inf (default True).

    Returns
    -------
    numpy.ndarray of float32, shape (n, d), C-contiguous
        ``x`` itself when it already is one, otherwise a converted copy.

    Raises
    ------
    TypeError
        Integer, bool, complex, object or string data.
    ValueError
        Wrong number of dimensions or columns, NaN/inf.
    """
    if (type(x) is np.ndarray and x.dtype == _FLOAT32 and x.ndim == 2 and (d is None or x.shape[1] == d)
            and x.flags.c_contiguous):  # already what the engines take: only the values to check
        if check_finite_values:
            check_finite(x, name)
        return x
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"{name} must be a float array of shape (n, d), got {type(x).__name__} that "
                f"numpy cannot convert ({exc})"
            ) from None
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point values (float16/32/64), got dtype {arr.dtype}; "
            f"convert explicitly, e.g. {name}.astype(np.float32), if the values are meant as floats"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n, d) or a single 1-D vector, got shape {arr.shape}; "
            f"reshape it, e.g. {name}.reshape(-1, d)"
        )
    if d is not None and arr.shape[1] != d:
        raise ValueError(
            f"{name} must have {d} columns (the index dimension d), got shape {arr.shape}; "
            f"reshape or pick an index built with d={arr.shape[1]}"
        )
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            arr = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite_values:
        check_finite(arr, name)
    return arr


def is_torch_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor (decided without importing torch)."""
    return type(x).__module__.partition(".")[0] == "torch" and hasattr(x, "device")


def as_device_matrix(x, d: int, device: str, name: str = "x", normalize: bool = False):
    """Validate a torch tensor of vectors where it lies, for an index on the torch engine.

    Parameters
    ----------
    x : torch.Tensor of floating dtype, shape (n, d) or (d,)
        On the index's device; converted to float32 there (a copy only when needed).
    d : int
    device : str
        The index's device ("cpu", "cuda:0", ...).
    name : str
    normalize : bool
        Scale every row to unit L2 norm (the "cosine" metric); zero rows are refused.

    Returns
    -------
    torch.Tensor of float32, shape (n, d), contiguous, on ``device``

    Raises
    ------
    TypeError
        A non-floating dtype.
    ValueError
        Another device, a wrong shape, NaN/inf or values beyond :func:`max_abs_value`, a zero row
        under ``normalize``.
    """
    import torch

    if x.device != torch.device(device):
        raise ValueError(f"{name} is on device {str(x.device)!r}, the index on {device!r}; move "
                         f"it with {name}.to({device!r}) (or index.to('torch', device=...))")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}; convert it with "
                        f"{name}.float()")
    if x.dim() == 1:
        x = x[None, :]
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}), got {tuple(x.shape)}")
    x = x.detach().to(torch.float32).contiguous()
    if x.numel():
        bound = max_abs_value(d)
        if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > bound:
            raise ValueError(f"{name} holds NaN, inf or values beyond {bound:.3g} (the largest "
                             f"magnitude whose squared distances fit float32 for d={d}); clean "
                             "or rescale the vectors")
    if normalize and x.shape[0]:
        norms = torch.linalg.vector_norm(x.double(), dim=1)
        if bool((norms == 0).any()):
            raise ValueError(f"{name} has all-zero row(s); the cosine metric needs a direction "
                             "for every vector: drop zero rows or use metric='l2'/'ip'")
        x = (x / norms[:, None]).to(torch.float32).contiguous()
    return x


_NORMALIZE_BLOCK_VALUES = 1 << 20  # float64 values per block of normalize_rows (8 MiB)


def normalize_rows(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Return a copy of float32 ``x`` (n, d) with every row scaled to unit L2 norm.

    Used by the "cosine" metric. Zero rows have no direction and raise ValueError. Rows are
    divided by their float64 norms in blocks of rows, so the float64 temporary stays bounded
    (a whole-array division would need twice the input's size in float64 on top of the copy).
    """
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms == 0
    if zero.any():
        first = int(np.flatnonzero(zero)[0])
        raise ValueError(
            f"{name} has {int(zero.sum())} all-zero row(s) (first at row {first}); the cosine "
            "metric needs a direction for every vector: drop zero rows or use metric='l2'/'ip'"
        )
    out = np.empty(x.shape, dtype=np.float32)
    step = max(1, _NORMALIZE_BLOCK_VALUES // max(x.shape[1], 1))
    for start in range(0, x.shape[0], step):
        stop = start + step
        np.divide(x[start:stop], norms[start:stop, None], out=out[start:stop], casting="same_kind")
    return out


def check_ids(ids, n: int | None = None, name: str = "ids") -> np.ndarray:
    """Validate user ids and return them as a C-contiguous int64 array of shape (n,).

    Parameters
    ----------
    ids : array_like of integer dtype, shape (n,)
        Any integer dtype; bool, float and other kinds raise TypeError (ids are never converted
        from floats). Values must be >= 0 and fit in int64.
    n : int, optional
        Required length (the number of vectors the ids belong to).
    name : str
        Argument name used in messages.
    """
    if isinstance(ids, np.ndarray):
        arr = ids
    else:
        arr = np.asarray(ids)
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)  # np.asarray([]) is float64; an empty list is fine
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array (any int dtype), got dtype {arr.dtype}; ids are "
            f"never converted from {arr.dtype} silently: pass e.g. "
            f"np.asarray({name}, dtype=np.int64) after checking the values are whole numbers"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, got shape {arr.shape}; use {name}.ravel() or wrap a single id "
            "in a list"
        )
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} must have one id per vector: expected length {n}, got {arr.shape[0]}"
        )
    if arr.size:
        if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(
                f"{name} must fit in int64, got a value of {int(arr.max())}; use ids < 2**63"
            )
        if arr.dtype.kind == "i" and arr.min() < 0:
            raise ValueError(
                f"{name} must be >= 0, got {int(arr.min())} (negative ids are reserved: -1 marks "
                "'no result' in search output; drop -1 entries before passing search ids back)"
            )
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_bool_mask(mask, name: str = "mask") -> np.ndarray:
    """Validate a 1-D boolean mask (a filter's allowed ids); returns it as a numpy bool array.

    Integer 0/1 arrays are refused (TypeError): an integer array of ids is another filter.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a bool array (True: allowed), got dtype {mask.dtype}; for integer "
            "ids use IDSelectorBatch(ids), or convert a 0/1 mask with mask.astype(bool)")
    if mask.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one bool per id), got shape {mask.shape}; use "
                         f"{name.split()[-1]}.ravel()")
    return mask


def check_csr_offsets(offsets, n_ids: int, name: str = "offsets") -> np.ndarray:
    """Validate CSR offsets over ``n_ids`` values: 1-D integers, non-decreasing, from 0 to
    ``n_ids`` (one more value than sets); returns them as int64."""
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {offsets.dtype}")
    if offsets.ndim != 1 or offsets.size < 1:
        raise ValueError(f"{name} must be 1-D with one value more than there are sets, got shape "
                         f"{offsets.shape}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != n_ids:
        raise ValueError(f"{name} must start at 0 and end at len(ids) = {n_ids}, got "
                         f"{int(offsets[0])} .. {int(offsets[-1])}")
    steps = np.diff(offsets)
    if (steps < 0).any():
        at = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"{name} must be non-decreasing, got {int(offsets[at])} then "
                         f"{int(offsets[at + 1])} at position {at}")
    return offsets


def check_id_scalar(key, name: str = "id") -> int:
    """Validate a single id (an int >= 0)."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral):
        raise TypeError(
            f"{name} must be an int, got {_describe(key)}; for several ids use reconstruct_n"
        )
    if key < 0:
        raise ValueError(f"{name} must be >= 0, got {int(key)}")
    return int(key)


def check_codes(codes, code_size: int, name: str = "codes") -> np.ndarray:
    """Validate PQ codes: uint8, shape (n, code_size) or (code_size,); never converted.

    Returns a C-contiguous uint8 array of shape (n, code_size) (a copy only when the input
    was not contiguous).
    """
    if not isinstance(codes, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy uint8 array of shape (n, {code_size}), got "
            f"{type(codes).__name__}; pass the array returned by encode()"
        )
    if codes.dtype != np.uint8:
        raise TypeError(
            f"{name} must have dtype uint8, got {codes.dtype}; codes are never converted: pass the "
            "array returned by encode(), or pack code indices with pack_codes()"
        )
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    if codes.ndim != 2 or codes.shape[1] != code_size:
        raise ValueError(
            f"{name} must have shape (n, {code_size}) (code_size bytes per vector), got "
            f"{codes.shape}; codes of a quantizer with other M/nbits cannot be mixed"
        )
    return np.ascontiguousarray(codes)


def check_float_array(arr, shape: tuple, name: str, d: int | None = None) -> np.ndarray:
    """Validate a float array of exactly ``shape`` (centroids, codebooks); returns float32 copy.

    Values must be finite and within :func:`max_abs_value` ``(d)`` (``d``: the dimension of the
    vectors they belong to, ``shape[-1]`` by default); see :func:`check_finite`."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        out = np.array(arr, dtype=np.float32, order="C", copy=True)
    check_finite(out, name, d)
    return out


def check_training_size(n: int, needed: int, what: str, unit: str) -> None:
    """Raise ValueError when fewer than ``needed`` training vectors are given."""
    if n < needed:
        raise ValueError(
            f"{what} needs at least {needed} training vectors ({unit}), got {n}; "
            "pass more training vectors or lower the number of centroids"
        )


def warn_few_training_points(n: int, n_centroids: int, what: str, stacklevel: int) -> None:
    """Emit :class:`TrainingWarning` when ``n < 39 * n_centroids``.

    ``stacklevel`` counts from the caller of this function, as in :func:`warnings.warn`.
    """
    needed = MIN_POINTS_PER_CENTROID * n_centroids
    if n < needed:
        warnings.warn(
            f"{what}: {n} training vectors for {n_centroids} centroids is fewer than "
            f"{MIN_POINTS_PER_CENTROID} per centroid ({needed}); centroids may be poor, "
            "provide more training vectors",
            TrainingWarning,
            stacklevel=stacklevel + 1,
        )
