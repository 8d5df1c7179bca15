"""Which shard owns what: ids by a hash (``by="id"``), inverted lists by number
(``by="list"``), and the driver's coarse search that routes a query to the owners of its probed
lists."""

from __future__ import annotations

import numpy as np

from ..indexes.ivf import _IndexIVF
from ..indexes.ivfflat import IndexIVFFlat
from ..indexes.refine import IndexRefine

__all__ = []

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(ids: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea, Flood, "Fast splittable pseudorandom number
    generators", OOPSLA 2014): spreads any id pattern (sequential, strided) evenly."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard_of_ids(ids: np.ndarray, n_shards: int) -> np.ndarray:
    """Owner shard of each id (``by="id"``): ``splitmix64(id) mod n_shards``, int64 like ``ids``."""
    with np.errstate(over="ignore"):
        return (_splitmix64(ids) % np.uint64(n_shards)).astype(np.int64)


def shard_of_lists(list_nos: np.ndarray, n_shards: int) -> np.ndarray:
    """Owner shard of each inverted list (``by="list"``): ``list_no mod n_shards``."""
    return np.asarray(list_nos, dtype=np.int64) % n_shards


def ivf_part(index):
    """The IVF index that assigns lists for ``index`` (itself, or the base of an IndexRefine),
    or None when ``index`` cannot be sharded by list."""
    if isinstance(index, _IndexIVF):
        return index
    if isinstance(index, IndexRefine) and isinstance(index.base_index, _IndexIVF):
        return index.base_index
    return None


def assign_lists(index, x: np.ndarray) -> np.ndarray:
    """Inverted list of each vector of ``x`` (float32 (n, d)), exactly as ``index.add`` assigns it.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    ivf = ivf_part(index)
    return ivf._coarse_assign(prepared_for_ivf(index, x))


def prepared_for_ivf(index, x: np.ndarray) -> np.ndarray:
    """``x`` as the IVF part of ``index`` receives it: prepared by each level (an IndexRefine
    prepares, then hands the result to its base index, which prepares it again), so that
    cosine rows are normalised exactly as often as in ``index.add`` and ``index.search``."""
    ivf = ivf_part(index)
    if ivf is not index:
        x = index._prepare(x)
    return ivf._prepare(x)


class ProbeRouter:
    """The lists each query probes, computed by the engine's own IVF search.

    An IndexIVFFlat with the index's centroids and one entry per list (its id: the list number)
    returns, for ``k = nprobe``, exactly the lists an IVF search of the index probes: the same
    coarse quantizer code ranks the centroids, so a tie or a rounding can never send a query to
    other shards than the index's own probing would visit.
    """

    def __init__(self, index):
        ivf = ivf_part(index)
        self._index = index
        self.nlist = ivf.nlist
        engine_metric = ivf._core_metric  # "cosine" queries are normalised by prepared_for_ivf first
        centroids = np.ascontiguousarray(ivf.centroids, dtype=np.float32)
        params = {"d": ivf.d, "nlist": ivf.nlist, "metric": engine_metric, "nprobe": 1, "seed": 0}
        codes = np.zeros((ivf.nlist, 4 * ivf.d), dtype=np.uint8)
        arrays = {"list_sizes": np.ones(ivf.nlist, dtype=np.int64),
                  "ids": np.arange(ivf.nlist, dtype=np.int64), "codes": codes, "centroids": centroids}
        self._probes = IndexIVFFlat._from_state(params, arrays)

    def probed_lists(self, x: np.ndarray, nprobe: int) -> np.ndarray:
        """The ``nprobe`` lists each query probes (int64 (n, nprobe), nearest first)."""
        nprobe = min(int(nprobe), self.nlist)
        self._probes.nprobe = nprobe
        return self._probes.search(prepared_for_ivf(self._index, x), nprobe)[1]
