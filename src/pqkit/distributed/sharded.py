"""ShardedIndex: one pqkit index split over Ray actors, answering exactly as the single index.

See :mod:`pqkit.distributed` for the two sharding modes, when each wins, faults and saves.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import threading
import time

import numpy as np

from .. import _atomic, io as _io
from .._validation import (
    as_float_matrix,
    check_id_scalar,
    check_ids,
    check_k,
    check_k_factor,
    check_n_threads,
    check_positive_int,
    check_result_size,
    check_trained,
)
from ..filters import as_selector
from ..indexes.base import MAX_ID, Index, _format_ids
from ..indexes.refine import IndexRefine
from . import _merge, _routing
from ._shard import Shard, ShardRestarted, assign_owners

__all__ = ["ShardLostError", "ShardedIndex"]

#: Kind of the artifact folder ``save`` writes (``pqkit._atomic``).
KIND = "pqkit-sharded-index"
FORMAT_VERSION = 1
META_FILE = "sharded.json"
TRAINED_FILE = "trained.pqkit"
#: Files of a save besides the shard files (the metadata and the trained empty index); an
#: artifact folder names at most ``_atomic.MAX_MEMBERS`` files.
MAX_SHARDS = _atomic.MAX_MEMBERS - 2
MODES = ("id", "list")


def _locked(method):
    """Run a public method under the sharded index's lock: the driver's bookkeeping (vector
    counts, saves, losses) changes with each call, so calls from several threads (a web server's)
    run one at a time; each call still runs on all shards in parallel."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _shard_file(shard_no: int) -> str:
    return f"shard-{shard_no:05d}.pqkit"


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pqkit.distributed needs Ray: pip install 'pqkit[distributed]' "
                          "(or pip install ray)") from exc
    return ray


class ShardLostError(RuntimeError):
    """A shard actor died and vectors it held are gone (or it cannot be restarted).

    Raised by the first call after the loss; the shard is then restored (from its last save, or
    empty if it was never saved) and later calls answer from what the shards hold.

    Attributes
    ----------
    shard : int
        The shard number (``ShardedIndex.actors[shard]``).
    lost : int
        Vectors added to the shard since its last save, now gone.
    resurrected : int
        Vectors removed from the shard since its last save, back after the restore.
    restored_from : str or None
        The shard file it was restored from; None: the trained empty index.
    dead : bool
        Ray could not restart the actor (restarts exhausted, node gone): the shard answers
        nothing until the sharded index is loaded again from a save.
    """

    def __init__(self, message, shard, lost=0, resurrected=0, restored_from=None, dead=False):
        super().__init__(message)
        self.shard, self.lost, self.resurrected = shard, lost, resurrected
        self.restored_from, self.dead = restored_from, dead


#: Times a call is sent again to a shard restored without loss before the call gives it up.
_MAX_RETRIES = 2


class ShardedIndex:
    """A pqkit index split into shards held by Ray actors, with the results of the single index.

    Parameters
    ----------
    index : pqkit.Index
        An empty index: trained (its centroids and codebooks are broadcast once to every shard)
        or untrained (then :meth:`train` trains it once, on the driver, before the shards start).
        Any type for ``by="id"``; an IndexIVFFlat, IndexIVFPQ or an IndexRefine over one of
        them for ``by="list"``. Copied: later changes to ``index`` do not reach the shards.
    n_shards : int
        Number of shard actors, 1..62.
    by : {"id", "list"}, default "id"
        ``"id"``: each vector goes to the shard ``splitmix64(id) mod n_shards`` and every query
        visits every shard. ``"list"`` (IVF): shard ``s`` owns the inverted lists ``l`` with
        ``l mod n_shards == s``, keeps all centroids, and a query visits only the shards owning
        one of its probed lists (see :mod:`pqkit.distributed`).
    num_cpus : float, default 1
        CPUs each shard actor declares to Ray.
    memory : int, default 256 MiB
        Bytes each shard actor declares to Ray (size it with :func:`pqkit.estimate_memory` of
        the vectors a shard will hold).
    max_restarts : int, default 3
        Times Ray restarts a shard actor whose process died (-1: without limit).
    n_threads : int or None, default None
        Threads of each shard's index; None uses ``max(1, round(num_cpus))``.
    chunk_size : int, default 65536
        Vectors per chunk of :meth:`add` (the driver holds a few chunks at a time).
    batch_size : int, default 8192
        Queries per fan-out of :meth:`search`.
    restart_timeout_s : float, default 120
        How long a call waits for Ray to restart a dead shard actor.
    placement_group : ray.util.placement_group.PlacementGroup, optional
        Shard ``s`` runs in bundle ``s mod len(bundles)`` of this placement group (for example
        one bundle per shard with strategy ``"STRICT_SPREAD"``: one shard per node, the bundles
        reserved before any shard starts); its bundles must hold ``num_cpus`` and ``memory``.
    actor_options : dict, optional
        Further ``ray.remote`` options of the shard actors (``resources``, ``runtime_env``...);
        without a placement group the scheduling strategy is ``"SPREAD"``.
    address : str, optional
        Ray cluster to join when Ray is not initialised yet (``ray.init(address=...)``); with
        neither, a local Ray instance is started.

    Attributes
    ----------
    actors : list of ray.actor.ActorHandle
        One per shard (empty until trained).
    losses : list of dict
        Every shard loss seen so far (shard, lost, resurrected, restored_from, dead, time).

    Notes
    -----
    Results (``D`` float32, ``I`` int64, padding, ordering by distance then smaller id) follow
    :mod:`pqkit.indexes.base`; they equal, bit for bit, those of one index of the same type and
    training holding the same vectors. For an IndexFlat the single index breaks exact distance
    ties by insertion order, so the equality needs ids that grow with insertion order (as
    :meth:`add` assigns them); every other type breaks ties by id.
    """

    def __init__(self, index, n_shards, by="id", *, num_cpus=1.0, memory=256 * 2**20, max_restarts=3,
                 n_threads=None, chunk_size=65536, batch_size=8192, restart_timeout_s=120.0,
                 placement_group=None, actor_options=None, address=None):
        if not isinstance(index, Index):
            raise TypeError(f"index must be a pqkit index (IndexFlat, IndexIVFPQ, ...), got "
                            f"{type(index).__name__}")
        if index.ntotal:
            raise ValueError(f"index holds {index.ntotal} vectors; pass an empty index (reset() it, or "
                             "build an empty one with the same training) and add through the ShardedIndex")
        self._configure(_io.index_from_bytes(_io.index_to_bytes(index)), n_shards, by, num_cpus, memory,
                        max_restarts, n_threads, chunk_size, batch_size, restart_timeout_s, placement_group,
                        actor_options, address)
        if self._template.is_trained:
            self._start()

    def _configure(self, index, n_shards, by, num_cpus, memory, max_restarts, n_threads, chunk_size,
                   batch_size, restart_timeout_s, placement_group, actor_options, address) -> None:
        """Check and store the parameters (``index``: the empty template, owned)."""
        n_shards = check_positive_int(n_shards, "n_shards", maximum=MAX_SHARDS)
        if by not in MODES:
            raise ValueError(f"by must be one of {list(MODES)}, got {by!r}")
        if by == "list" and _routing.ivf_part(index) is None:
            raise ValueError(f'by="list" shards inverted lists: it needs an IndexIVFFlat, IndexIVFPQ or an '
                             f'IndexRefine over one, got {type(index).__name__}; use by="id"')
        if not (isinstance(num_cpus, (int, float)) and not isinstance(num_cpus, bool) and num_cpus >= 0):
            raise TypeError(f"num_cpus must be a number >= 0, got {num_cpus!r}")
        if memory is not None:
            memory = check_positive_int(memory, "memory")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
            raise ValueError(f"max_restarts must be an int >= -1 (-1: unlimited), got {max_restarts!r}")
        if not (isinstance(restart_timeout_s, (int, float)) and restart_timeout_s > 0):
            raise ValueError(f"restart_timeout_s must be a number > 0, got {restart_timeout_s!r}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be a dict of ray.remote options, got "
                            f"{type(actor_options).__name__}")
        self._template = index
        self._lock = threading.RLock()
        self._n_shards = n_shards
        self._by = by
        self._options = {"num_cpus": float(num_cpus), "memory": memory, "max_restarts": max_restarts,
                         "placement_group": placement_group, "actor_options": dict(actor_options or {})}
        self._n_threads = check_n_threads(n_threads)
        self._chunk_size = check_positive_int(chunk_size, "chunk_size")
        self._batch_size = check_positive_int(batch_size, "batch_size")
        self._restart_timeout_s = float(restart_timeout_s)
        self._address = address
        self.actors = []
        self.losses = []
        self._attributes = {}  # set through the sharded index; re-applied to restored shards
        self._empty_ref = None
        self._router = None
        self._assign = None

    # ------------------------------------------------------------------ properties
    @property
    def d(self) -> int:
        """Vector dimension."""
        return self._template.d

    @property
    def metric(self) -> str:
        """Metric name: "l2", "ip" or "cosine"."""
        return self._template.metric

    @property
    def by(self) -> str:
        """Sharding mode: "id" or "list"."""
        return self._by

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return self._n_shards

    @property
    def index_type(self) -> str:
        """Type name of the index each shard holds ("IndexIVFPQ", ...)."""
        return type(self._template).__name__

    @property
    def is_trained(self) -> bool:
        """Whether the shards run (the index was trained)."""
        return bool(self.actors)

    @property
    def code_size(self) -> int:
        """Bytes stored per vector, excluding its 8-byte id."""
        return self._template.code_size

    @property
    def ntotal(self) -> int:
        """Number of stored vectors, all shards together."""
        return int(sum(self._ntotal)) if self.actors else 0

    @property
    def n_threads(self):
        """Threads of each shard's index (int; settable)."""
        return self._shard_threads()

    @n_threads.setter
    @_locked
    def n_threads(self, value) -> None:
        self._n_threads = check_positive_int(value, "n_threads")
        self._set_on_shards("n_threads", self._n_threads)

    @property
    def nprobe(self) -> int:
        """Lists probed per query (IVF indexes and wrappers of one; settable)."""
        return self._template.nprobe

    @nprobe.setter
    @_locked
    def nprobe(self, value) -> None:
        self._template.nprobe = value  # validates (TypeError/ValueError, AttributeError if none)
        self._set_on_shards("nprobe", self._template.nprobe)

    @property
    def k_factor(self) -> float:
        """Candidates re-ranked per result (IndexRefine; settable)."""
        if not isinstance(self._template, IndexRefine):
            raise AttributeError(f"{self.index_type} has no k_factor")
        return self._template.k_factor

    @k_factor.setter
    @_locked
    def k_factor(self, value) -> None:
        if not isinstance(self._template, IndexRefine):
            raise AttributeError(f"{self.index_type} has no k_factor")
        self._template.k_factor = value
        self._set_on_shards("k_factor", self._template.k_factor)

    def shard_ntotals(self) -> np.ndarray:
        """Vectors per shard (int64, shape (n_shards,))."""
        return np.array(self._ntotal if self.actors else [0] * self._n_shards, dtype=np.int64)

    # ------------------------------------------------------------------ starting the shards
    def _shard_threads(self) -> int:
        if self._n_threads is not None:
            return self._n_threads
        return max(1, int(round(self._options["num_cpus"])))

    def _start(self, paths=None, ntotals=None) -> None:
        """Start the shard actors: from the trained empty index broadcast once through the object
        store, or from shard files (``paths``, their vector counts ``ntotals``)."""
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self._address)
        if self._by == "list":
            self._router = _routing.ProbeRouter(self._template)
        empty = self._template
        if empty.ntotal:  # never: the template stays empty
            raise RuntimeError("the trained index broadcast to the shards must be empty")
        self._empty_ref = ray.put(_io.index_to_bytes(empty))
        options = {"num_cpus": self._options["num_cpus"], "max_restarts": self._options["max_restarts"],
                   "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        if self._options["memory"] is not None:
            options["memory"] = self._options["memory"]
        options.update(self._options["actor_options"])
        remote_shard = ray.remote(Shard)
        threads = self._shard_threads()
        group = self._options["placement_group"]
        self.actors = []
        for s in range(self._n_shards):
            if group is not None:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=s % len(group.bundle_specs))
            self.actors.append(remote_shard.options(**options).remote(
                s, self._empty_ref, None if paths is None else paths[s], threads))
        self._ntotal = [0] * self._n_shards
        self._added_since_save = [0] * self._n_shards
        self._removed_since_save = [0] * self._n_shards
        self._saved = [None] * self._n_shards  # (shard file, ntotal) of the last save
        self._dead = set()
        self._incarnation = [None] * self._n_shards
        infos = self._call_all("describe")
        for s, info in infos.items():
            self._incarnation[s] = info["incarnation"]
            self._ntotal[s] = info["ntotal"]
        if paths is not None:
            for s in range(self._n_shards):
                if self._ntotal[s] != ntotals[s]:
                    raise ValueError(f"shard file {paths[s]} holds {self._ntotal[s]} vectors, the save "
                                     f"recorded {ntotals[s]}")
                self._saved[s] = (paths[s], ntotals[s])
            self._id_upper = max(self._call_all("id_upper_bound").values(), default=-1)
        else:
            self._id_upper = -1
        self.shard_nodes = [infos[s]["node_id"] for s in range(self._n_shards)]

    @_locked
    def train(self, x) -> "ShardedIndex":
        """Train the index once, on the driver, then start the shards with it.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Training vectors (see the index type's ``train``).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If the shards already run (the broadcast training cannot change under stored
            codes): build a new ShardedIndex.
        """
        if self.actors:
            raise ValueError("the shards already run with a trained index; training again would make "
                             "their codes stale: build a new ShardedIndex from a new trained index")
        self._template.train(x)
        self._start()
        return self

    @_locked
    def close(self) -> None:
        """Stop the shard actors (what they hold is lost unless saved)."""
        if self.actors:
            ray = _ray()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def __reduce__(self):
        raise TypeError("a ShardedIndex holds Ray actors and cannot be pickled; save(dir) it and "
                        "ShardedIndex.load(dir) it where it is needed")

    def __repr__(self) -> str:
        return (f"ShardedIndex({self.index_type}, d={self.d}, metric={self.metric!r}, n_shards="
                f"{self._n_shards}, by={self._by!r}, ntotal={self.ntotal}, is_trained={self.is_trained})")

    # ------------------------------------------------------------------ calling the shards
    def _check_running(self) -> None:
        check_trained(self.is_trained, f"ShardedIndex({self.index_type})")

    def _classify(self, exc):
        """"restarted"/"died" for a shard failure, or the user-facing error raised in the shard."""
        ray = _ray()
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ShardRestarted):
                return "restarted"
            return cause if isinstance(cause, BaseException) else exc
        if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                            ray.exceptions.OutOfMemoryError)):
            return "died"
        return exc

    def _submit(self, s, method, args):
        if s in self._dead:
            return None
        return getattr(self.actors[s], method).remote(*args)

    def _call(self, calls: dict, *, allow_partial=False, on_loss=None) -> dict:
        """Run ``{shard: (method, args)}`` on the shards in parallel and return ``{shard: result}``.

        A shard that died (or was restarted) is restored; a call that lost nothing is retried on
        it. When vectors were lost, ShardLostError is raised after every other shard answered,
        unless ``allow_partial``: then the restored shard is asked again and ``on_loss(shard)``
        marks what it answered for; a shard that cannot come back is left out (and marked).
        """
        results, errors, losses = self._gather(calls, self._submit_all(calls))
        self._raise_or_mark(errors, losses, allow_partial, on_loss)
        return results

    def _submit_all(self, calls: dict) -> dict:
        return {s: self._submit(s, method, args) for s, (method, args) in calls.items()}

    def _gather(self, calls: dict, refs: dict) -> tuple:
        """``(results, errors, losses)`` of submitted calls (see :meth:`_call`), every shard
        waited for before anything is raised."""
        ray = _ray()
        results, errors, losses = {}, [], []
        for s, ref in refs.items():
            retries = 0
            while True:
                if ref is None:
                    losses.append(self._dead_loss(s))
                    break
                try:
                    results[s] = ray.get(ref)
                    break
                except Exception as exc:  # noqa: BLE001 - classified below
                    kind = self._classify(exc)
                    if not isinstance(kind, str):
                        errors.append(kind)
                        break
                loss = self._recover(s)
                if loss["dead"]:
                    losses.append(loss)
                    break
                if loss["lost"] or loss["resurrected"]:
                    losses.append(loss)  # reported after the call, which runs on the restored shard
                retries += 1
                if retries > _MAX_RETRIES:
                    losses.append({**self._dead_loss(s), "reason": f"it died again on each of "
                                   f"{_MAX_RETRIES} retries of this call"})
                    break
                method, args = calls[s]
                ref = self._submit(s, method, args)
        return results, errors, losses

    def _raise_or_mark(self, errors, losses, allow_partial, on_loss) -> None:
        if errors:
            raise errors[0]
        for loss in losses:
            if on_loss is not None and allow_partial:
                on_loss(loss["shard"])
            elif not allow_partial:
                raise self._loss_error(loss)

    def _call_all(self, method, *args, **kwargs) -> dict:
        return self._call({s: (method, args) for s in range(self._n_shards)}, **kwargs)

    def _set_on_shards(self, name, value) -> None:
        self._attributes[name] = value
        if self.actors:
            self._call_all("set_attribute", name, value)

    def _recover(self, s) -> dict:
        """Wait for Ray to restart shard ``s``, restore it from its last save, and account for
        what was lost. Returns the loss record (also appended to :attr:`losses`)."""
        ray = _ray()
        deadline = time.monotonic() + self._restart_timeout_s
        info = None
        while True:
            try:
                info = ray.get(self.actors[s].describe.remote(),
                               timeout=max(0.1, deadline - time.monotonic()))
                break
            except ray.exceptions.ActorDiedError:
                break  # restarts exhausted or killed for good
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        record = {"shard": s, "lost": self._added_since_save[s], "resurrected": self._removed_since_save[s],
                  "restored_from": None if self._saved[s] is None else self._saved[s][0], "dead": False,
                  "time": time.time()}
        if info is not None and info["incarnation"] == self._incarnation[s] and info["restored"]:
            record.update(lost=0, resurrected=0)  # the same process answers: nothing was lost
            return record
        if info is None:
            self._dead.add(s)
            record.update(dead=True)
            self.losses.append(record)
            return record
        path, ntotal = self._saved[s] if self._saved[s] is not None else (None, 0)
        try:
            restored = ray.get(self.actors[s].restore.remote(path, ntotal))
            for name, value in self._attributes.items():
                ray.get(self.actors[s].set_attribute.remote(name, value))
        except Exception as exc:  # noqa: BLE001 - the shard cannot be brought back
            self._dead.add(s)
            record.update(dead=True, reason=f"its restore failed: {exc}")
            self.losses.append(record)
            return record
        self._incarnation[s] = info["incarnation"]
        self._ntotal[s] = restored
        self._added_since_save[s] = self._removed_since_save[s] = 0
        if record["lost"] or record["resurrected"]:
            self.losses.append(record)
        return record

    def _dead_loss(self, s) -> dict:
        return {"shard": s, "lost": self._ntotal[s], "resurrected": 0, "restored_from": None,
                "dead": True, "time": time.time()}

    def _loss_error(self, loss) -> ShardLostError:
        s = loss["shard"]
        where = f"shard {s} of {self._n_shards} (ShardedIndex.actors[{s}])"
        if loss["dead"]:
            reason = loss.get("reason", f"Ray could not restart it within {self._restart_timeout_s:g} s "
                                        f"(max_restarts={self._options['max_restarts']}, or its node is gone)")
            return ShardLostError(
                f"{where} is dead: {reason}; its {self._ntotal[s]} vectors are unreachable. Search the "
                "live shards with search(..., allow_partial=True), or ShardedIndex.load() the last save",
                s, lost=self._ntotal[s], dead=True)
        source = (f"its last save {loss['restored_from']!r}" if loss["restored_from"] is not None
                  else "the trained empty index (it was never saved)")
        parts = [f"the {loss['lost']} vectors added to it since are lost"] if loss["lost"] else []
        fixes = ["add the lost vectors again"] if loss["lost"] else []
        if loss["resurrected"]:
            parts.append(f"the {loss['resurrected']} vectors removed from it since are back")
            fixes.append("remove the resurrected ones")
        return ShardLostError(
            f"{where} died and Ray restarted it; it was restored from {source}: {' and '.join(parts)}. "
            f"The other shards are intact; {' and '.join(fixes)}, or ShardedIndex.load() the last save. "
            "Save regularly to bound what a lost shard takes with it.", s, lost=loss["lost"],
            resurrected=loss["resurrected"], restored_from=loss["restored_from"])

    # ------------------------------------------------------------------ adding
    @_locked
    def add(self, x, *, progress=False) -> None:
        """Add vectors with sequential ids, encoded in parallel by the shards.

        The first id is ``ntotal``, or continues after the largest id stored (as
        :meth:`pqkit.Index.add`).

        Parameters
        ----------
        x : array_like of float, shape (n, d), a numpy.memmap, or an iterable of such chunks
            An array (a memmap is read one chunk at a time) is validated whole before anything
            is added, so a bad row adds nothing; an iterable (for example
            ``dataset.iter_batches(batch_format="numpy")`` of a Ray Dataset, mapped to arrays)
            is validated and added chunk by chunk.
        progress : bool, default False
            Show a progress bar (tqdm).

        Raises
        ------
        ShardLostError
            A shard died during the add and vectors it held since its last save were lost.
        """
        self._check_running()
        if _is_array(x):
            self._add_array(x, None, progress)
        else:
            self._add_stream(((chunk, None) for chunk in x), None, progress)

    @_locked
    def add_with_ids(self, x, ids, *, progress=False) -> None:
        """Add vectors with the given ids, encoded in parallel by the shards that own them.

        Parameters
        ----------
        x : array_like of float, shape (n, d), or a numpy.memmap
        ids : array_like of integer dtype, shape (n,)
            New, unique ids >= 0 (as :meth:`pqkit.Index.add_with_ids`).
        progress : bool, default False

        Notes
        -----
        To stream, pass ``x`` as an iterable of ``(vectors, ids)`` chunks and ``ids=None``: each
        chunk is checked (unique ids, none stored yet) before it is added.

        Raises
        ------
        ValueError
            Duplicate ids, or ids already stored (nothing of an array input is added).
        ShardLostError
            A shard died during the add and vectors it held since its last save were lost.
        """
        self._check_running()
        if ids is None and not _is_array(x):
            self._add_stream(iter(x), "given", progress)
            return
        if not _is_array(x):
            raise TypeError("add_with_ids streams an iterable of (vectors, ids) chunks with ids=None; "
                            f"got an iterable x with ids of type {type(ids).__name__}")
        self._add_array(x, ids, progress)

    def _add_array(self, x, ids, progress) -> None:
        n = _array_rows(x, self.d)
        if ids is not None:
            ids = check_ids(ids, n=n)
            self._check_new_ids(ids, "add_with_ids()")
        for start in range(0, n, self._chunk_size):  # validate everything before adding anything
            self._validated(x[start:start + self._chunk_size], start)
        if ids is None:
            first = self._first_sequential_id(n)
        chunks = ((x[start:start + self._chunk_size],
                   ids[start:start + self._chunk_size] if ids is not None
                   else np.arange(first + start, first + min(n, start + self._chunk_size), dtype=np.int64))
                  for start in range(0, n, self._chunk_size))
        self._add_stream(chunks, "checked", progress, total=n)

    def _first_sequential_id(self, n) -> int:
        start = max(self.ntotal, self._id_upper + 1)
        _check_id_space(start, n)
        return start

    def _validated(self, chunk, start_row) -> np.ndarray:
        """The chunk as float32 (n, d), checked as the index checks it (finite values; non-zero
        rows for "cosine"); the shards normalise, so the vectors are sent unnormalised."""
        try:
            chunk = as_float_matrix(chunk, self.d)
            self._template._prepare(chunk)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"rows from {start_row}: {exc}") from None
        return chunk

    def _check_new_ids(self, ids, caller) -> None:
        unique = np.unique(ids)
        if unique.size != ids.size:
            sorted_ids = np.sort(ids)
            dup = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
            raise ValueError(f"{caller}: ids must be unique, got duplicates {_format_ids(dup)}; pqkit refuses "
                             "duplicate ids so that reconstruct/remove_ids are unambiguous")
        if ids.size == 0 or self.ntotal == 0:
            return
        present = ids[self._contains(ids)]
        if present.size:
            raise ValueError(f"{caller}: ids already in the index: {_format_ids(present)}; remove them first "
                             "with remove_ids() or use new ids")

    def _contains(self, ids) -> np.ndarray:
        found = np.zeros(ids.shape, dtype=bool)
        routes = dict(self._id_routes(ids))
        results = self._call({s: ("contains", (ids if rows is None else ids[rows],))
                              for s, rows in routes.items()})
        for s, mask in results.items():
            rows = routes[s]
            if rows is None:
                found |= mask
            else:
                found[rows] |= mask
        return found

    def _id_routes(self, ids):
        """``(shard, rows)`` holding each id: its owner (by id), or every shard (by list, rows None)."""
        if self._by == "list":
            return [(s, None) for s in range(self._n_shards)]
        owners = _routing.shard_of_ids(ids, self._n_shards)
        return [(s, np.flatnonzero(owners == s)) for s in range(self._n_shards) if (owners == s).any()]

    def _add_stream(self, chunks, ids_mode, progress, total=None) -> None:
        """Route and add chunks: ``(vectors, ids)`` pairs, with ``ids_mode`` None (assign
        sequential ids), "given" (check each chunk's ids) or "checked" (ids checked already).

        A few chunks are in flight at a time: their owner lists being computed by Ray tasks
        (``by="list"``), their parts being encoded and stored by the shards.
        """
        ray = _ray()
        bar = _progress_bar(progress, total)
        window = max(2, self._n_shards)
        routing = collections.deque()   # (start_row, x, ids, owners or its ref)
        adding = collections.deque()    # (start_row, n_rows, {shard: call}, {shard: ref})
        assign = self._assign_task() if self._by == "list" else None
        rows_done = 0

        def send(entry):  # split a routed chunk and submit its parts to their shards
            start, x, ids, owners = entry
            if assign is not None:
                owners = ray.get(owners)
            calls = {}
            for s in range(self._n_shards):
                rows = np.flatnonzero(owners == s)
                if rows.size:
                    calls[s] = ("add_with_ids", (np.ascontiguousarray(x[rows]), np.ascontiguousarray(ids[rows])))
            adding.append((start, x.shape[0], calls, self._submit_all(calls)))

        def confirm(entry):  # wait for a chunk's parts, account for what each shard stored
            nonlocal rows_done
            start, n_rows, calls, refs = entry
            results, errors, losses = self._gather(calls, refs)
            for s, ntotal in results.items():
                self._ntotal[s] = ntotal
                self._added_since_save[s] += calls[s][1][0].shape[0]
                self._id_upper = max(self._id_upper, int(calls[s][1][1].max()))
            if not errors:  # every part is stored (a restored shard took its part again)
                rows_done = start + n_rows
                if bar is not None:
                    bar.update(n_rows)
            self._raise_or_mark(errors, losses, False, None)

        exhausted = False
        next_id = None
        try:
            row = 0
            for chunk in chunks:
                x, ids = chunk if isinstance(chunk, tuple) else (chunk, None)
                x = self._validated(x, row) if ids_mode != "checked" else as_float_matrix(x, self.d)
                if ids_mode is None:  # continues after the ids of the chunks still in flight
                    first = self._first_sequential_id(x.shape[0]) if next_id is None else next_id
                    _check_id_space(first, x.shape[0])
                    ids = np.arange(first, first + x.shape[0], dtype=np.int64)
                    next_id = first + x.shape[0]
                elif ids_mode == "given":
                    ids = check_ids(ids, n=x.shape[0])
                    while routing:  # earlier chunks are sent: a shard checks after storing them
                        send(routing.popleft())
                    self._check_new_ids(ids, f"add_with_ids() chunk from row {row}")
                owners = (assign.remote([self._empty_ref], x, self._n_shards) if assign is not None
                          else _routing.shard_of_ids(ids, self._n_shards))
                routing.append((row, x, ids, owners))
                row += x.shape[0]
                while len(routing) > window:
                    send(routing.popleft())
                while len(adding) > window:
                    confirm(adding.popleft())
            exhausted = True
            while routing:
                send(routing.popleft())
            while adding:
                confirm(adding.popleft())
        except BaseException as exc:
            # What was submitted is stored (or lost with its shard): account for it all first,
            # so that the vector counts and the loss records stay true.
            while adding:
                try:
                    confirm(adding.popleft())
                except Exception:  # noqa: BLE001 - the first error is the one raised
                    pass
            if isinstance(exc, ShardLostError):
                done = (f"This add completed: its {rows_done} rows are stored" if exhausted and rows_done == row
                        else f"This add stopped after its first {rows_done} rows, which are stored; add the rest "
                        "again")
                raise ShardLostError(f"{exc} {done}.", exc.shard, exc.lost, exc.resurrected, exc.restored_from,
                                     exc.dead) from None
            raise
        finally:
            if bar is not None:
                bar.close()

    def _assign_task(self):
        """The Ray task computing the owner shard of each vector of a chunk (``by="list"``)."""
        if getattr(self, "_assign", None) is None:
            # No CPU reserved: shard actors may hold every CPU of the cluster, and a routing task
            # waiting for one would stall the add (the tasks are short; a few run at a time).
            self._assign = _ray().remote(num_cpus=0)(assign_owners)
        return self._assign

    # ------------------------------------------------------------------ searching
    @_locked
    def search(self, x, k, *, allow_partial=False, **params):
        """Find the k nearest stored vectors of each query, over all shards.

        Parameters
        ----------
        x : array_like of float, shape (n, d)
            Queries; converted to float32.
        k : int
            Number of neighbours, >= 1.
        allow_partial : bool, default False
            When a shard lost vectors (or cannot be restarted), answer from what the shards hold
            and return which queries it concerns, instead of raising ShardLostError.
        **params
            Per-call search parameters and filters, passed unchanged to every shard's
            ``index.search(x, k, **params)`` (a keyword the index does not take raises its
            TypeError). With ``by="list"``, ``nprobe`` (and ``max_probe``) also choose the
            shards a query visits; any other keyword but ``k_factor`` and ``filter`` sends each
            query to every shard.

        Returns
        -------
        D : numpy.ndarray of float32, shape (n, k)
        I : numpy.ndarray of int64, shape (n, k)
            As :meth:`pqkit.Index.search`, equal bit for bit to the single index's results.
        affected : numpy.ndarray of bool, shape (n,)
            Only with ``allow_partial=True``: queries whose results miss vectors of a lost shard.

        Raises
        ------
        ShardLostError
            A shard lost vectors since its last save, or is dead (not with ``allow_partial``).
        """
        self._check_running()
        if not isinstance(allow_partial, bool):
            raise TypeError(f"allow_partial must be a bool, got {type(allow_partial).__name__}")
        k = check_k(k)
        x = as_float_matrix(x, self.d, name="x")
        n = x.shape[0]
        check_result_size(n, k)
        pad = self._template._metric_info.pad
        D = np.full((n, k), pad, dtype=np.float32)
        I = np.full((n, k), -1, dtype=np.int64)
        affected = np.zeros(n, dtype=bool)
        refine = isinstance(self._template, IndexRefine)
        if params.get("max_probe") is not None:
            # Each shard would widen its probing until it alone holds k allowed results, which
            # can reach lists one index would not scan: results would differ from one index.
            raise ValueError("max_probe is not supported by a ShardedIndex (the shards would widen "
                             "their probing separately); give a larger nprobe instead")
        if "filter" in params:  # one set per query: each part of the search gets its queries' sets
            params = dict(params, filter=as_selector(params["filter"]))
            if params["filter"] is not None:
                params["filter"].check_queries(n)
        if refine:
            k_factor = params.get("k_factor")
            k_factor = self._template.k_factor if k_factor is None else check_k_factor(k_factor)
            n_candidates = max(k, min(math.ceil(k * k_factor), self.ntotal))
        for start in range(0, n, self._batch_size):
            xb = x[start:start + self._batch_size]
            routes = self._query_routes(xb, params)
            shared = _ray().put(xb) if any(rows is None for rows in routes.values()) else None
            calls = {}
            for s, rows in routes.items():
                part = shared if rows is None else np.ascontiguousarray(xb[rows])
                chosen = np.arange(start, start + xb.shape[0]) if rows is None else start + rows
                part_params = _params_for_queries(params, chosen)
                calls[s] = (("refine_search", (part, k, n_candidates, part_params)) if refine
                            else ("search", (part, k, part_params)))

            def mark(s, start=start, routes=routes, nb=xb.shape[0]):
                rows = routes[s]
                affected[start:start + nb] |= (np.ones(nb, dtype=bool) if rows is None
                                               else np.isin(np.arange(nb), rows))

            results = self._call(calls, allow_partial=allow_partial, on_loss=mark)
            self._merge_batch(results, routes, xb.shape[0], k, refine and n_candidates,
                              D[start:start + xb.shape[0]], I[start:start + xb.shape[0]])
        return (D, I, affected) if allow_partial else (D, I)

    def _query_routes(self, xb, params) -> dict:
        """``{shard: rows of xb it answers, or None for all}``."""
        if self._by == "id" or set(params) - {"nprobe", "max_probe", "k_factor", "filter"}:
            return {s: None for s in range(self._n_shards)}
        nprobe = params.get("nprobe") or self._template.nprobe
        if params.get("max_probe"):
            nprobe = max(nprobe, params["max_probe"])
        probes = self._router.probed_lists(xb, nprobe)
        owners = _routing.shard_of_lists(probes, self._n_shards)
        routes = {}
        for s in range(self._n_shards):
            rows = np.flatnonzero((owners == s).any(axis=1))
            if rows.size:
                routes[s] = rows
        return routes

    def _merge_batch(self, results, routes, nb, k, n_candidates, D_out, I_out) -> None:
        higher = self._template._metric_info.higher_is_better
        pad = np.float32(self._template._metric_info.pad)
        width = n_candidates if n_candidates else k
        shards = sorted(results)
        if not shards:
            return
        n_arrays = 3 if n_candidates else 2
        stacked = [np.full((nb, width * len(shards)), pad if j != 1 else -1,
                           dtype=np.int64 if j == 1 else np.float32) for j in range(n_arrays)]
        for col, s in enumerate(shards):
            rows = routes[s]
            target = slice(col * width, (col + 1) * width)
            for j in range(n_arrays):
                if rows is None:
                    stacked[j][:, target] = results[s][j]
                else:
                    stacked[j][rows, target] = results[s][j]
        if n_candidates:
            Dm, Im = _merge.merge_refined(stacked[0], stacked[1], stacked[2], n_candidates, k, higher)
        else:
            Dm, Im = _merge.merge_topk(stacked[0], stacked[1], k, higher)
        D_out[...] = Dm
        I_out[...] = Im

    # ------------------------------------------------------------------ other operations
    @_locked
    def remove_ids(self, ids) -> int:
        """Remove vectors by id (absent ids are ignored).

        Parameters
        ----------
        ids : array_like of integer dtype, shape (m,)

        Returns
        -------
        int
            Number of vectors removed.
        """
        self._check_running()
        ids = check_ids(ids)
        if ids.size == 0:
            return 0
        routes = dict(self._id_routes(ids))
        results = self._call({s: ("remove_ids", (ids if rows is None else ids[rows],))
                              for s, rows in routes.items()})
        removed = 0
        for s, (n_removed, ntotal) in results.items():
            removed += n_removed
            self._removed_since_save[s] += n_removed
            self._ntotal[s] = ntotal
        return removed

    @_locked
    def reset(self) -> None:
        """Remove all vectors from every shard; the training is kept."""
        self._check_running()
        results = self._call_all("reset")
        for s in results:
            self._removed_since_save[s] += self._ntotal[s]
            self._ntotal[s] = 0
        self._id_upper = -1

    @_locked
    def reconstruct_n(self, ids) -> np.ndarray:
        """The stored (or decoded) vectors of several ids, from the shards holding them.

        Parameters
        ----------
        ids : array_like of integer dtype, shape (n,)

        Returns
        -------
        numpy.ndarray of float32, shape (n, d)

        Raises
        ------
        ValueError
            If any id is not stored.
        """
        self._check_running()
        ids = check_ids(ids)
        out = np.empty((ids.size, self.d), dtype=np.float32)
        if ids.size == 0:
            return out
        found = np.zeros(ids.size, dtype=bool)
        routes = dict(self._id_routes(ids))
        results = self._call({s: ("reconstruct_n", (ids if rows is None else ids[rows],))
                              for s, rows in routes.items()})
        for s, (mask, vectors) in results.items():
            rows = np.arange(ids.size) if routes[s] is None else routes[s]
            out[rows[mask]] = vectors
            found[rows[mask]] = True
        if not found.all():
            raise ValueError(f"ids not in the index: {_format_ids(ids[~found])}; the index holds "
                             f"{self.ntotal} vectors (search results use -1 for 'no result')")
        return out

    def reconstruct(self, key) -> np.ndarray:
        """The stored (or decoded) vector of one id: float32, shape (d,)."""
        return self.reconstruct_n(np.array([check_id_scalar(key)], dtype=np.int64))[0]

    def memory_usage_bytes(self) -> int:
        """Bytes held by the index data of all shards (see :meth:`pqkit.Index.memory_usage_bytes`)."""
        return int(self.shard_memory_usage_bytes().sum())

    @_locked
    def shard_memory_usage_bytes(self) -> np.ndarray:
        """Bytes held by each shard's index (int64, shape (n_shards,))."""
        self._check_running()
        results = self._call_all("memory_usage_bytes")
        return np.array([results[s] for s in range(self._n_shards)], dtype=np.int64)

    # ------------------------------------------------------------------ persistence
    @_locked
    def save(self, path, *, overwrite=False) -> None:
        """Write every shard to its own pqkit file, with the trained index and a manifest.

        The folder holds ``shard-00000.pqkit``... (each written by its shard actor, so ``path``
        must be on a file system every node sees), ``trained.pqkit`` (the trained empty index)
        and ``sharded.json``; the save is all-or-nothing (:mod:`pqkit._atomic`): after a crash
        the folder holds the old or the new version. Each shard's file becomes the one it is
        restored from if its actor dies.

        Parameters
        ----------
        path : str or os.PathLike
            A new folder, an empty one, or a saved sharded index (replaced with ``overwrite``).
        overwrite : bool, default False

        Raises
        ------
        pqkit.ArtifactExistsError
            ``path`` holds something else, or a sharded index while ``overwrite`` is False.
        ShardLostError
            A shard lost vectors before they could be saved (nothing is committed).
        """
        self._check_running()
        ntotals = {}

        def write_members(folder):
            folder = os.path.abspath(folder)
            results = self._call({s: ("save", (os.path.join(folder, _shard_file(s)),))
                                  for s in range(self._n_shards)})
            ntotals.update(results)
            _atomic.write_bytes(os.path.join(folder, TRAINED_FILE), _io.index_to_bytes(self._template))
            meta = {"format": KIND, "format_version": FORMAT_VERSION, "index_type": self.index_type,
                    "d": self.d, "metric": self.metric, "by": self._by, "n_shards": self._n_shards,
                    "id_router": "splitmix64 mod n_shards", "list_owner": "list mod n_shards",
                    "ntotal": [ntotals[s] for s in range(self._n_shards)], "id_upper_bound": self._id_upper}
            _atomic.write_bytes(os.path.join(folder, META_FILE), json.dumps(meta).encode("utf-8"))

        _atomic.save_folder(path, write_members, kind=KIND, overwrite=overwrite, what="sharded index")
        data = json.loads(_atomic._read_manifest(os.path.abspath(os.fspath(path))))["data"]
        folder = os.path.join(os.path.abspath(os.fspath(path)), data)
        for s in range(self._n_shards):
            self._saved[s] = (os.path.join(folder, _shard_file(s)), ntotals[s])
            self._added_since_save[s] = self._removed_since_save[s] = 0

    @classmethod
    def load(cls, path, **options) -> "ShardedIndex":
        """Start shard actors from a folder written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
        **options
            ``num_cpus``, ``memory``, ``max_restarts``, ``n_threads``, ``chunk_size``,
            ``batch_size``, ``restart_timeout_s``, ``placement_group``, ``actor_options``,
            ``address`` (as the
            constructor). Every actor reads its own file, so ``path`` must be on a file system
            every node sees.

        Returns
        -------
        ShardedIndex

        Raises
        ------
        ValueError
            A damaged or inconsistent save (a member differing from its manifest, a shard file
            holding another number of vectors than recorded, ...).
        """
        def load_members(folder):
            folder = os.path.abspath(folder)
            with open(os.path.join(folder, META_FILE), "rb") as handle:
                meta = _check_meta(json.loads(handle.read().decode("utf-8")), folder)
            template = _io.load(os.path.join(folder, TRAINED_FILE))
            if (type(template).__name__, template.d, template.metric) != (meta["index_type"], meta["d"],
                                                                           meta["metric"]):
                raise ValueError(f"{folder}: {TRAINED_FILE} is a {type(template).__name__} (d={template.d}, "
                                 f"metric={template.metric!r}); {META_FILE} says {meta['index_type']} "
                                 f"(d={meta['d']}, metric={meta['metric']!r})")
            paths = [os.path.join(folder, _shard_file(s)) for s in range(meta["n_shards"])]
            for p in paths:
                if not os.path.isfile(p):
                    raise ValueError(f"{folder}: damaged: shard file {os.path.basename(p)} is missing")
            return meta, template, paths

        meta, template, paths = _atomic.load_folder(path, load_members, kind=KIND, what="sharded index")
        index = cls.__new__(cls)
        defaults = {"num_cpus": 1.0, "memory": 256 * 2**20, "max_restarts": 3, "n_threads": None,
                    "chunk_size": 65536, "batch_size": 8192, "restart_timeout_s": 120.0,
                    "placement_group": None, "actor_options": None, "address": None}
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; expected some of {sorted(defaults)}")
        defaults.update(options)
        index._configure(template, meta["n_shards"], meta["by"], **defaults)
        index._start(paths, meta["ntotal"])
        return index

    @_locked
    def to_local(self):
        """One pqkit index holding every shard's vectors, answering as the sharded index does.

        Rebuilt from the shards' saved state (``_get_state`` / ``_from_state``): the driver
        holds every shard's data at once, so this is for collections that fit one machine.
        Rows are ordered by inverted list and id (by id without lists); the shards' training
        is shared, so codes and results are unchanged.

        Returns
        -------
        pqkit.Index
            Of the type of :attr:`index_type`.
        """
        self._check_running()
        states = []
        for s in range(self._n_shards):  # one shard's bytes at a time beside the states
            data = self._call({s: ("to_bytes", ())})[s]
            states.append(_io.index_from_bytes(data)._get_state())
            del data
        # Once indexes can merge (Index.merge_from), this becomes: load shard 0's bytes, then
        # merge_from each other shard's index in turn; the state merge below is its equivalent
        # for today's types (rows ordered by list and id, training shared).
        params = states[0][0]
        arrays = merge_states([arrays for _, arrays in states])
        return type(self._template)._from_state(params, arrays)


def merge_states(arrays_list) -> dict:
    """The arrays of one index holding the rows of several indexes of the same type and training.

    Per part (array names before their last ``.``: ``base.``, ``refine.``, ``index.``...): an
    inverted file (``list_sizes``) is merged list by list, rows ordered by list then id; a row
    store (``ids`` with ``vectors`` or ``codes``) by id; every other array (centroids,
    codebooks, transforms) must be equal in all and is taken once.
    """
    first = arrays_list[0]
    out = {}
    prefixes = sorted({name.rpartition(".")[0] for name in first})
    for prefix in prefixes:
        lead = prefix + "." if prefix else ""
        groups = [{name[len(lead):]: a for name, a in arrays.items() if name.rpartition(".")[0] == prefix}
                  for arrays in arrays_list]
        merged = _merge_group(groups, prefix or "index")
        out.update({lead + name: a for name, a in merged.items()})
    return out


_ROW_ARRAYS = ("ids", "vectors", "codes")


def _merge_group(groups, where) -> dict:
    names = set(groups[0])
    for g in groups[1:]:
        if set(g) != names:
            raise ValueError(f"{where}: the shards hold different arrays ({sorted(names)} vs {sorted(g)})")
    out = {}
    for name in names - set(_ROW_ARRAYS) - {"list_sizes"}:
        for g in groups[1:]:
            if not np.array_equal(g[name], groups[0][name]):
                raise ValueError(f"{where}: the shards' {name!r} differ; they must share one training")
        out[name] = groups[0][name]
    rows = [name for name in _ROW_ARRAYS if name in names]
    if not rows:
        return out
    ids = np.concatenate([g["ids"] for g in groups])
    if "list_sizes" in names:
        nlist = groups[0]["list_sizes"].size
        list_nos = np.concatenate([np.repeat(np.arange(nlist, dtype=np.int64), g["list_sizes"]) for g in groups])
        order = np.lexsort((ids, list_nos))
        out["list_sizes"] = np.sum([g["list_sizes"] for g in groups], axis=0).astype(np.int64)
    else:
        order = np.argsort(ids, kind="stable")
    for name in rows:
        out[name] = np.ascontiguousarray(np.concatenate([g[name] for g in groups])[order])
    return out


def _check_id_space(start, n) -> None:
    if start + n - 1 > MAX_ID:
        raise ValueError(f"add(): the id space is exhausted: {n} sequential ids from {start} would pass "
                         f"the largest id {MAX_ID} (2**63 - 1); pass your own ids with add_with_ids()")


def _check_meta(meta, where) -> dict:
    def bad(message):
        return ValueError(f"{where}/{META_FILE}: {message}")

    if not isinstance(meta, dict) or meta.get("format") != KIND:
        raise bad(f"not a sharded index description (format must be {KIND!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise bad(f"unsupported format_version {meta.get('format_version')!r}; this pqkit reads {FORMAT_VERSION}")
    n = meta.get("n_shards")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SHARDS:
        raise bad(f"n_shards must be an int in [1, {MAX_SHARDS}], got {n!r}")
    if meta.get("by") not in MODES:
        raise bad(f"by must be one of {list(MODES)}, got {meta.get('by')!r}")
    ntotal = meta.get("ntotal")
    if (not isinstance(ntotal, list) or len(ntotal) != n
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ntotal)):
        raise bad(f"ntotal must be a list of {n} ints >= 0")
    for key, kind in (("index_type", str), ("metric", str), ("d", int)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"{key!r} must be a {kind.__name__}")
    return meta


def _is_array(x) -> bool:
    """Arrays, memmaps, lists of rows (anything NumPy reads as one array); an iterator or a
    generator is a stream of chunks."""
    return isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__") or hasattr(
        x, "__array_interface__")


def _array_rows(x, d) -> int:
    shape = np.shape(x)
    if len(shape) == 1 and shape[0] == d:
        raise ValueError("add takes a matrix (n, d); wrap a single vector as x[None, :]")
    if len(shape) != 2 or shape[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {tuple(shape)}")
    return int(shape[0])


def _progress_bar(progress, total):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError("progress=True needs tqdm: pip install tqdm (part of pqkit[distributed])") from exc
    return tqdm(total=total, unit="vec", desc="adding")


def _params_for_queries(params: dict, rows: np.ndarray) -> dict:
    """The search parameters of the queries ``rows`` of a call: a filter holding one id set per
    query keeps those queries' sets (in order); every other parameter is passed as it is."""
    selector = params.get("filter")
    if selector is None:
        return params
    return dict(params, filter=selector.for_queries(rows))
