"""One shard: a Ray actor holding one pqkit index (the class is plain Python; the sharded index
wraps it with ``ray.remote`` and its resources).

A shard starts from the trained empty index broadcast through the object store, or from a shard
file of a save. When Ray restarts it after its process died, it starts empty and refuses every
call (:class:`ShardRestarted`) until the driver has restored it from its last save, so that a
restarted shard can never answer as if nothing had been lost.
"""

from __future__ import annotations

import math
import os
import secrets
import warnings

import numpy as np

from .. import io as _io
from ._merge import align_by_id
from ._routing import assign_lists, shard_of_lists

__all__ = []


class ShardRestarted(RuntimeError):
    """Raised by a shard that Ray restarted and that the driver has not restored yet."""


class Shard:
    """The state and calls of one shard actor.

    Parameters
    ----------
    shard_no : int
    empty_index : bytes
        The trained empty index (:func:`pqkit.io.index_to_bytes`), resolved by Ray from the one
        object that every shard shares.
    path : str or None
        A shard file to start from (``ShardedIndex.load``); None starts empty.
    n_threads : int or None
        The index's worker threads (None: pqkit's default).
    """

    def __init__(self, shard_no, empty_index, path=None, n_threads=None):
        import ray

        self.shard_no = shard_no
        self._empty = empty_index
        self._n_threads = n_threads
        self.incarnation = secrets.token_hex(8)  # tells a restarted process from the one before
        with warnings.catch_warnings():  # Ray's property reads a deprecated attribute internally
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.index = None
        if not self.restarted:
            self._start_from(path)

    # ------------------------------------------------------------------ lifecycle
    def _start_from(self, path) -> None:
        self.index = _io.index_from_bytes(self._empty) if path is None else _io.load(path)
        if self._n_threads is not None:
            self.index.n_threads = self._n_threads

    def _live(self):
        if self.index is None:
            raise ShardRestarted(f"shard {self.shard_no} was restarted and holds nothing until it is "
                                 "restored from its last save")
        return self.index

    def describe(self) -> dict:
        """Where this shard runs and what it holds (answers even before a restore)."""
        import ray

        context = ray.get_runtime_context()
        return {"shard": self.shard_no, "pid": os.getpid(), "node_id": context.get_node_id(),
                "incarnation": self.incarnation,
                "restarted": self.restarted, "restored": self.index is not None,
                "ntotal": None if self.index is None else int(self.index.ntotal)}

    def restore(self, path, expected_ntotal) -> int:
        """Start again from the shard file ``path`` (None: the trained empty index); ValueError
        when the file does not hold the ``expected_ntotal`` vectors its save recorded."""
        self._start_from(path)
        if expected_ntotal is not None and self.index.ntotal != expected_ntotal:
            found = self.index.ntotal
            self.index = None
            raise ValueError(f"shard {self.shard_no}: {path} holds {found} vectors, its save recorded "
                             f"{expected_ntotal}; it was changed after the save")
        return int(self.index.ntotal)

    # ------------------------------------------------------------------ data
    def ntotal(self) -> int:
        return int(self._live().ntotal)

    def id_upper_bound(self) -> int:
        return int(self._live()._id_upper_bound())

    def add_with_ids(self, x, ids) -> int:
        index = self._live()
        index.add_with_ids(x, ids)
        return int(index.ntotal)

    def contains(self, ids) -> np.ndarray:
        index = self._live()
        if ids.size == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(index._contains(ids), dtype=bool)

    def remove_ids(self, ids) -> tuple:
        index = self._live()
        removed = index.remove_ids(ids)
        return int(removed), int(index.ntotal)

    def reset(self) -> int:
        self._live().reset()
        return 0

    def reconstruct_n(self, ids) -> tuple:
        """``(found, vectors)``: which of ``ids`` this shard holds, and their vectors."""
        found = self.contains(ids)
        if not found.any():
            return found, np.empty((0, self._live().d), dtype=np.float32)
        return found, self._live().reconstruct_n(ids[found])

    def memory_usage_bytes(self) -> int:
        return int(self._live().memory_usage_bytes())

    def set_attribute(self, name: str, value) -> None:
        setattr(self._live(), name, value)

    # ------------------------------------------------------------------ search
    def search(self, x, k, params) -> tuple:
        """``index.search(x, k, **params)``: every per-call parameter and filter reaches the
        index unchanged."""
        return self._live().search(x, k, **params)

    def refine_search(self, x, k, n_candidates, params) -> tuple:
        """The two stages of an :class:`pqkit.IndexRefine`, with the candidate count of the whole
        collection: this shard's best ``n_candidates`` by the base index's distance, and the
        refined distance of each.

        Returns
        -------
        approx : numpy.ndarray of float32, shape (n, n_candidates)
        ids : numpy.ndarray of int64, shape (n, n_candidates)
        refined : numpy.ndarray of float32, shape (n, n_candidates)
            Aligned with ``ids``.
        """
        index = self._live()
        # As IndexRefine.search: the queries prepared once by the wrapper, the call's parameters
        # validated as the wrapper validates them (k_factor is the driver's: it set
        # n_candidates), the candidates ranked by the base index's own candidate ranking with
        # the other parameters and the filter, then re-ranked by the refine index.
        base = index.base_index
        x = index._prepare(x)
        search_params = index._search_params(x.shape[0], params).without("k_factor")
        if x.shape[0] == 0 or index.ntotal == 0:
            shape = (x.shape[0], n_candidates)
            pad = np.float32(-math.inf if index._metric_info.higher_is_better else math.inf)
            return (np.full(shape, pad, np.float32), np.full(shape, -1, np.int64),
                    np.full(shape, pad, np.float32))
        approx, ids = base._locked_search(x, n_candidates, base._search_candidates, search_params)
        ids = index._allowed(ids, search_params)
        refined, refined_ids = index.rerank(x, ids, n_candidates)
        return approx, ids, align_by_id(ids, refined_ids, refined)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> int:
        """Write this shard's index to the new file ``path``; returns its ntotal."""
        index = self._live()
        index.save(path, overwrite=False)
        return int(index.ntotal)

    def to_bytes(self) -> bytes:
        return _io.index_to_bytes(self._live())


#: Trained empty indexes a routing worker has decoded, by object id (decoded once per process).
_TEMPLATES = {}


def assign_owners(template_box, x, n_shards) -> np.ndarray:
    """Owner shard of each vector of the chunk ``x`` for ``by="list"`` (run as a Ray task).

    Parameters
    ----------
    template_box : list of one ray.ObjectRef
        The broadcast trained empty index (boxed, so that Ray passes the reference and the
        bytes are decoded once per worker process).
    x : numpy.ndarray of float32, shape (n, d)
    n_shards : int

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    import ray

    ref = template_box[0]
    key = ref.hex()
    if key not in _TEMPLATES:
        _TEMPLATES.clear()
        _TEMPLATES[key] = _io.index_from_bytes(ray.get(ref))
    return shard_of_lists(assign_lists(_TEMPLATES[key], x), n_shards)
