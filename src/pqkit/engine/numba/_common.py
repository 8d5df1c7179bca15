"""Shared pieces of the Numba engine: jit settings, the kernel-level calls (SIMD level, hardware
concurrency), argument checks, the thread pool, the top-k heap and :func:`all_finite`.

They mirror the compiled core's ``cpp/common/simd``, ``cpp/common/parallel``, ``cpp/common/topk.h`` and the cheap
last-line checks of ``cpp/python/bindings.cpp``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)

_F32_INF = np.float32(np.inf)


# ============================================================================ SIMD level API
def simd_level() -> str:
    """The Numba engine has one code path, reported as ``"scalar"``."""
    return "scalar"


def available_simd_levels() -> list:
    return ["scalar"]


def set_simd_level(level: str) -> None:
    if level not in ("scalar", "none", "NONE"):
        raise ValueError(
            f"SIMD level {level!r} is not available with the numba backend (it has one code "
            "path, 'scalar'); use backend='cpp' for the compiled SIMD kernels"
        )


def hardware_concurrency() -> int:
    return os.cpu_count() or 1


# ============================================================================ argument checks
def _checked(a, dtype, name: str, shape: tuple) -> np.ndarray:
    """The engine's last line of defence (as in bindings.cpp): dtype, C order, shape (-1: any)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(
            f"{name} must be a {np.dtype(dtype)} array, got {got}; convert with "
            f"numpy.asarray(..., dtype=numpy.{np.dtype(dtype)})"
        )
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; try numpy.ascontiguousarray")
    if a.ndim != len(shape):
        raise ValueError(f"{name} must have {len(shape)} dimensions, got shape {a.shape}")
    for axis, want in enumerate(shape):
        if want >= 0 and a.shape[axis] != want:
            raise ValueError(
                f"{name} has shape {a.shape}, expected size {want} in dimension {axis}"
            )
    return a


def _positive(value, name: str) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _parse_metric(metric: str) -> bool:
    """True for L2, False for inner product."""
    if metric == "l2":
        return True
    if metric == "ip":
        return False
    raise ValueError(f"metric must be 'l2' or 'ip' at the engine level, got {metric!r}")


@_jit
def _all_within(bits, limit):
    bad = 0
    for i in range(bits.size):
        bad |= (bits[i] & 0x7FFFFFFF) > limit
    return bad == 0


def all_finite(x, max_abs=np.inf):
    """Whether every value of a C-contiguous float32 array is finite with |value| <= max_abs
    (one integer compare per value on the bit patterns, as the compiled core does)."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous):
        raise TypeError(f"all_finite takes a C-contiguous float32 array, got {getattr(x, 'dtype', type(x))}")
    if not max_abs >= 0:
        raise ValueError(f"all_finite: max_abs must be >= 0, got {max_abs}")
    bound = np.float32(min(float(max_abs), float(np.finfo(np.float32).max)))
    limit = np.uint32(np.array([bound], dtype=np.float32).view(np.uint32)[0])
    return bool(_all_within(x.reshape(-1).view(np.uint32), limit))


# ============================================================================ threads
_pool = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=hardware_concurrency(),
                                       thread_name_prefix="pqkit-numba")
        return _pool


def _parallel_rows(kernel, n: int, n_threads: int, block: int) -> None:
    """Call ``kernel(begin, end)`` over [0, n) in blocks; the kernels release the GIL.

    Blocks run in order in the calling thread when ``n_threads == 1``; otherwise over a shared
    pool, the caller waiting (interruptibly) for them. Each block writes its own rows only.
    """
    if n == 0:
        return
    n_threads = max(1, int(n_threads))
    if n_threads == 1 or n <= block:
        for begin in range(0, n, block):
            kernel(begin, min(n, begin + block))
        return
    n_parts = min(n_threads, (n + block - 1) // block)
    step = (n + n_parts - 1) // n_parts
    futures = [_executor().submit(kernel, b, min(n, b + step)) for b in range(0, n, step)]
    try:
        for f in futures:
            f.result()
    except BaseException:
        for f in futures:
            f.cancel()
        raise


# ============================================================================ top-k
@_jit
def _better(k1, i1, k2, i2):
    return k1 < k2 or (k1 == k2 and i1 < i2)


@_jit
def _heap_buffers(k):
    """Keys and ids of a top-k heap (filled by _heap_push, emptied by _heap_write)."""
    return np.empty(k, dtype=np.float32), np.empty(k, dtype=np.int64)


@_jit
def _heap_push(hk, hi, size, key, idx):
    """Keep the k = len(hk) best (key, id) pairs; the worst sits at the root. Returns the size."""
    k = hk.shape[0]
    if size < k:
        pos = size
        while pos > 0:
            parent = (pos - 1) // 2
            if _better(hk[parent], hi[parent], key, idx):
                hk[pos] = hk[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hk[pos] = key
        hi[pos] = idx
        return size + 1
    if _better(key, idx, hk[0], hi[0]):
        _sift_down(hk, hi, size, key, idx)
    return size


@_jit
def _sift_down(hk, hi, size, key, idx):
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _better(hk[child], hi[child], hk[child + 1], hi[child + 1]):
            child += 1
        if _better(key, idx, hk[child], hi[child]):
            hk[pos] = hk[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hk[pos] = key
    hi[pos] = idx


@_jit
def _threshold(hk, size):
    return _F32_INF if size < hk.shape[0] else hk[0]


@_jit
def _heap_write(hk, hi, size, negate, D, I):
    """Best first into D, I (length k); padding (+-inf, -1); keys negated back for IP."""
    k = hk.shape[0]
    pad = -_F32_INF if negate else _F32_INF
    for pos in range(size, k):
        D[pos] = pad
        I[pos] = -1
    n = size
    while n > 0:  # pop the worst into the last free slot
        key, idx = hk[0], hi[0]
        D[n - 1] = -key if negate else key
        I[n - 1] = idx
        n -= 1
        if n > 0:
            _sift_down(hk, hi, n, hk[n], hi[n])


def _alloc_result(nq: int, k: int):
    return np.empty((nq, k), dtype=np.float32), np.empty((nq, k), dtype=np.int64)
