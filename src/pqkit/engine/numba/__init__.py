"""The portable engine: the calls of :mod:`pqkit.engine.protocol`, in Numba.

Same function and class names, argument order and results as the compiled core
(``cpp/python/bindings.cpp``), so an index picks either module through :func:`pqkit.engine.core` and
runs unchanged. It is used when the compiled extension cannot be imported, or when asked for
(``backend="numba"``, :func:`pqkit.set_backend`, ``PQKIT_BACKEND=numba``).

Same results, not just similar ones. Every float result is computed in the order the C++ kernels
document in ``cpp/kernels/kernels.h`` (and with no FMA contraction; Numba does not contract without
``fastmath``):

* long dot products and squared norms use 16 lanes (element ``j`` into lane ``j % 16``) reduced
  by the tree ``(l + l+8), (l + l+4), (l + l+2), (l + l+1)``;
* squared L2 through norms is ``max(||x||^2 + ||y||^2 - 2 <x, y>, 0)``, except where the core
  computes it directly (nearest centroid for ``d <= 32``, IVF-Flat list scans);
* ADC keys are ``base + (bias + sum_m T[m, code_m])`` summed left to right in float32;
* top-k keeps the k smallest ``(key, id)`` pairs in that total order (ties: smaller id).

The C++ scans skip most codes with a byte-quantized table but give every code that can enter
the top-k its exact key, so their results equal this plain exact scan (the tests check codes,
ids and distances against the C++ backend as an independent oracle).

What differs: k-means training (``kmeans``, ``pq_train``) follows the same algorithm
(seeded subsample, k distinct initial points, Lloyd iterations with a sequential update in
double, the same empty-cluster repair) but draws its random numbers from NumPy's generator, so
trained centroids differ from the C++ backend's; with the same centroids and codebooks every
other result is identical. There are no SIMD levels: ``simd_level()`` reports ``"scalar"``.

Kernels are compiled on first use (``cache=True`` keeps them on disk next to their module) and
run with the GIL released (``nogil=True``); ``n_threads > 1`` splits the rows over a shared
thread pool. Results never depend on the thread count (rows are independent).

The modules follow the split of ``cpp/``:

* ``_common``: jit settings, SIMD-level calls, argument checks, thread pool, top-k heap,
  :func:`all_finite`;
* ``_kernels``: the float kernels in the core's operation order;
* ``flat``: squared norms and exact search;
* ``kmeans``: nearest-centroid assignment (:func:`coarse_assign`) and :func:`kmeans`;
* ``pq``: codebooks, packed codes, encode/decode, distance tables, PQ search;
* ``refine``: exact re-ranking from floats or PQ codes;
* ``ivf``: coarse quantizer, IVF-Flat and IVF-PQ scans, the per-code bias;
* ``invlists``: :class:`InvertedLists` and :func:`external_lists` (read-only views);
* ``selector``: :class:`IDSelector` (the ids a search may return, tested in every scan) and the
  buffers of range search results.

This module only re-exports the engine's calls. The function :func:`kmeans` hides the
submodule of the same name as an attribute of this package; reach the module through
``importlib.import_module("pqkit.engine.numba.kmeans")``.
"""

from __future__ import annotations

from ._common import (all_finite, available_simd_levels, hardware_concurrency, set_simd_level,
                      simd_level)
from .flat import flat_range_search, flat_search, sqnorms
from .invlists import InvertedLists, external_lists
from .ivf import (CoarseQuantizer, ivfflat_range_search, ivfflat_search, ivfpq_code_bias,
                  ivfpq_range_search, ivfpq_search)
from .kmeans import coarse_assign, kmeans
from .pq import (PQCodebooks, pq_decode, pq_distance_tables, pq_encode, pq_pack_codes,
                 pq_range_search, pq_search, pq_train, pq_unpack_codes)
from .refine import rerank, rerank_pq, rerank_sq
from .selector import IDSelector

__all__ = [
    "CoarseQuantizer",
    "IDSelector",
    "InvertedLists",
    "PQCodebooks",
    "all_finite",
    "available_simd_levels",
    "coarse_assign",
    "external_lists",
    "flat_range_search",
    "flat_search",
    "hardware_concurrency",
    "ivfflat_range_search",
    "ivfflat_search",
    "ivfpq_code_bias",
    "ivfpq_range_search",
    "ivfpq_search",
    "kmeans",
    "pq_decode",
    "pq_distance_tables",
    "pq_encode",
    "pq_pack_codes",
    "pq_range_search",
    "pq_search",
    "pq_train",
    "pq_unpack_codes",
    "rerank",
    "rerank_pq",
    "rerank_sq",
    "set_simd_level",
    "simd_level",
    "sqnorms",
]
