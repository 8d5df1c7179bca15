"""The torch engine: the calls of :mod:`pqkit.engine.protocol` on a torch device (a CUDA GPU, or
the CPU, which runs the same code path and is what the tests use).

An engine object belongs to one device (:func:`engine_for`); what it prepares lives there and
stays there between calls: codebooks (:class:`PQCodebooks`), coarse centroids
(:class:`CoarseQuantizer`), inverted lists (:class:`InvertedLists`), id selectors, and the
arrays an index makes :meth:`TorchEngine.resident` (an IndexFlat's vectors). Only queries
travel to the device and ``(D, I)`` back; the generic calls take and return NumPy arrays, as
the protocol says.

Results against the other engines. A matrix product (the fast way on a GPU) chooses the
candidates of exact search, coarse probing and nearest-centroid assignment, with a margin; the
keys of those candidates, the codes, distance tables, per-code biases and ADC sums are then
computed in the compiled core's float order (16-lane or sequential sums, the bias before the
coarse term; see :mod:`.exact`), one tensor operation per step, with no fused multiply-add.
So distances equal the core's bit for bit wherever both engines choose the same candidates,
and ids differ only at near-ties: rows whose keys are within the matrix product's rounding of
each other at the edge of a selection (the tests hold the engine to a stated tolerance and tie
rule, which also covers a GPU's arithmetic). Among equal keys the smallest ids are kept and the
result is ordered by ``(key, id)``, as in every engine. Range searches compare the matrix
product's keys with the radius (a row within rounding of the radius may fall either way).
An IndexRefine's first stage ranks its candidates by exact ADC keys, as the Numba engine does,
where the core ranks them by byte-quantized estimates. k-means and PQ training follow the same
algorithm with torch's random numbers, so trained centroids differ.

There are no SIMD levels (``simd_level()`` is ``"scalar"``); ``n_threads`` is accepted and
ignored (torch chooses its own parallelism). ``estimates=True`` ranks by the exact keys, as
the Numba engine does. Range searches, id selectors (bitmaps, sorted ids, per-query sets),
``max_probe`` and read-only lists over a mapped file (copied to the device once) are supported.
"""

from __future__ import annotations

import math
import threading

import torch

from . import invlists as _invlists
from . import pq as _pq
from . import search as _search
from . import selector as _selector
from ._common import hardware_concurrency as _hardware_concurrency
from ._common import resolve_device, to_device

__all__ = ["TorchEngine", "engine_for", "resolve_device"]

ENGINE_CALLS = [
    "CoarseQuantizer", "IDSelector", "InvertedLists", "PQCodebooks", "all_finite",
    "available_simd_levels", "coarse_assign", "external_lists", "flat_range_search",
    "flat_search", "hardware_concurrency", "ivfflat_range_search", "ivfflat_search",
    "ivfpq_code_bias", "ivfpq_range_search", "ivfpq_search", "kmeans", "pq_decode",
    "pq_distance_tables", "pq_encode", "pq_pack_codes", "pq_range_search", "pq_search",
    "pq_train", "pq_unpack_codes", "rerank", "rerank_pq", "rerank_sq", "set_simd_level", "simd_level",
    "sqnorms",
]


class TorchEngine:
    """The engine calls on one torch device (see the module docstring).

    The four engine classes are attributes made for this device (``engine.PQCodebooks(...)``
    builds codebooks on it). Make engines with :func:`engine_for`, which keeps one per device.
    """

    def __init__(self, device):
        self.device = resolve_device(device)
        self.__name__ = f"pqkit.engine.torch[{self.device}]"
        self.__all__ = ENGINE_CALLS + ["resident"]
        dev = {"device": self.device, "__module__": __name__}
        self.PQCodebooks = type("PQCodebooks", (_pq.PQCodebooks,), dev)
        self.CoarseQuantizer = type("CoarseQuantizer", (_search.CoarseQuantizer,), dev)
        self.InvertedLists = type("InvertedLists", (_invlists.InvertedLists,), dev)
        self.IDSelector = type("IDSelector", (_selector.IDSelector,), dev)

    def __repr__(self) -> str:
        return f"TorchEngine(device={str(self.device)!r})"

    # ---- device-resident arrays
    def resident(self, x):
        """A copy of ``x`` (a NumPy array) held on this engine's device: every call that takes an
        array accepts it in place of ``x`` and does not copy it again. The caller drops it
        when ``x`` changes."""
        return to_device(x, self.device)

    # ---- kernel level, threads
    def simd_level(self):
        return "scalar"

    def available_simd_levels(self):
        return ["scalar"]

    def set_simd_level(self, level):
        if level != "scalar":
            raise ValueError(f"the torch engine has one kernel level, 'scalar'; got {level!r}")

    def hardware_concurrency(self):
        return _hardware_concurrency()

    # ---- checks, exact search
    def all_finite(self, x, max_abs=math.inf):
        return _search.all_finite(x, max_abs)

    def sqnorms(self, x, n_threads):
        return _search.engine_sqnorms(self.device, x, n_threads)

    def flat_search(self, x, y, k, metric, n_threads, norms=None, selector=None):
        return _search.flat_search(self.device, x, y, k, metric, n_threads, norms, selector)

    def flat_range_search(self, x, y, radius, metric, n_threads, max_results, norms=None,
                          selector=None):
        return _search.flat_range_search(self.device, x, y, radius, metric, n_threads,
                                         max_results, norms, selector)

    def rerank(self, x, y, rows, ids, k, metric, n_threads):
        return _search.rerank(self.device, x, y, rows, ids, k, metric, n_threads)

    def rerank_pq(self, x, pq, lists, rows, ids, k, metric, n_threads):
        return _search.rerank_pq(self.device, x, pq, lists, rows, ids, k, metric, n_threads,
                                 self.PQCodebooks, self.InvertedLists)

    def rerank_sq(self, x, codes, vmin, step, rows, ids, k, metric, n_threads):
        return _search.rerank_sq(self.device, x, codes, vmin, step, rows, ids, k, metric,
                                 n_threads)

    # ---- k-means and product quantization
    def coarse_assign(self, x, centroids, metric, n_threads):
        return _search.coarse_assign(self.device, x, centroids, metric, n_threads)

    def kmeans(self, x, k, niter, seed, max_points_per_centroid, n_threads):
        return _pq.kmeans(self.device, x, k, niter, seed, max_points_per_centroid, n_threads)

    def pq_train(self, x, M, nbits, niter, seed, max_points_per_centroid, n_threads):
        return _pq.pq_train(self.device, x, M, nbits, niter, seed, max_points_per_centroid,
                            n_threads)

    def pq_encode(self, x, pq, n_threads):
        _pq.check_pq(pq, self.PQCodebooks)
        return _pq.pq_encode(self.device, x, pq, n_threads)

    def pq_decode(self, codes, pq, n_threads):
        _pq.check_pq(pq, self.PQCodebooks)
        return _pq.pq_decode(self.device, codes, pq, n_threads)

    def pq_distance_tables(self, x, pq, metric, n_threads):
        _pq.check_pq(pq, self.PQCodebooks)
        return _pq.pq_distance_tables(self.device, x, pq, metric, n_threads)

    def pq_search(self, x, pq, invlists, k, metric, n_threads, selector=None):
        return _search.pq_search(self.device, x, pq, invlists, k, metric, n_threads, selector,
                                 self.PQCodebooks, self.InvertedLists)

    def pq_range_search(self, x, pq, invlists, radius, metric, n_threads, max_results,
                        selector=None):
        return _search.pq_range_search(self.device, x, pq, invlists, radius, metric, n_threads,
                                       max_results, selector, self.PQCodebooks,
                                       self.InvertedLists)

    def pq_unpack_codes(self, codes, M, nbits):
        return _pq.pq_unpack_codes(self.device, codes, M, nbits)

    def pq_pack_codes(self, idx, nbits):
        return _pq.pq_pack_codes(self.device, idx, nbits)

    # ---- inverted files
    def external_lists(self, nlist, code_size, layout, list_sizes, ids, codes, bias=None):
        return _invlists.make_external(self.InvertedLists, nlist, code_size, layout, list_sizes,
                                       ids, codes, bias)

    def ivfflat_search(self, x, coarse, invlists, nprobe, k, metric, n_threads, max_probe=0,
                       selector=None):
        return _search.ivfflat_search(self.device, x, coarse, invlists, nprobe, k, metric,
                                      n_threads, max_probe, selector, self.CoarseQuantizer,
                                      self.InvertedLists)

    def ivfflat_range_search(self, x, coarse, invlists, nprobe, radius, metric, n_threads,
                             max_results, selector=None):
        return _search.ivfflat_range_search(self.device, x, coarse, invlists, nprobe, radius,
                                            metric, n_threads, max_results, selector,
                                            self.CoarseQuantizer, self.InvertedLists)

    def ivfpq_search(self, x, coarse, pq, invlists, nprobe, k, metric, n_threads,
                     estimates=False, max_probe=0, selector=None):
        return _search.ivfpq_search(self.device, x, coarse, pq, invlists, nprobe, k, metric,
                                    n_threads, estimates, max_probe, selector,
                                    self.CoarseQuantizer, self.PQCodebooks, self.InvertedLists)

    def ivfpq_range_search(self, x, coarse, pq, invlists, nprobe, radius, metric, n_threads,
                           max_results, selector=None):
        return _search.ivfpq_range_search(self.device, x, coarse, pq, invlists, nprobe, radius,
                                          metric, n_threads, max_results, selector,
                                          self.CoarseQuantizer, self.PQCodebooks,
                                          self.InvertedLists)

    def ivfpq_code_bias(self, codes, list_nos, coarse, pq, n_threads):
        return _search.ivfpq_code_bias(self.device, codes, list_nos, coarse, pq, n_threads,
                                       self.CoarseQuantizer, self.PQCodebooks)


_engines: dict = {}
_lock = threading.Lock()


def engine_for(device=None) -> TorchEngine:
    """The engine of ``device`` (None: the first CUDA device, else the CPU), one per device.

    Raises
    ------
    ValueError
        A CUDA device asked for where torch sees none (the message says how to get one).
    """
    dev = resolve_device(device)
    with _lock:
        found = _engines.get(dev)
        if found is None:
            found = _engines[dev] = TorchEngine(dev)
        return found
