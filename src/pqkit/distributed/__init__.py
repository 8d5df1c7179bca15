"""pqkit on a Ray cluster: one index split into shards held by Ray actors.

:class:`ShardedIndex` takes a trained empty pqkit index, broadcasts it once through Ray's object
store (``ray.put`` of its bytes) and starts ``n_shards`` actors, each holding one pqkit index
with that training, with its CPUs and memory declared to Ray and a restart policy. It answers
as a pqkit index does (``add``, ``add_with_ids``, ``search``, ``remove_ids``, ``reconstruct``,
``ntotal``, ``memory_usage_bytes``, ``save``/``load``) and its results equal, bit for bit, those
of one index of the same type and training holding the same vectors: each shard computes its
distances exactly as the single index does, and the driver merges the shards' top-k per query
under pqkit's total order (distance, then the smaller id).

Two sharding modes (FAISS's ``IndexShards`` and ``IndexShardsIVF`` on one machine)
---------------------------------------------------------------------------------------
``by="id"``
    A vector goes to shard ``splitmix64(id) mod n_shards``; every query visits every shard.
    Any index type. Wins when each query needs most shards anyway: exhaustive types (Flat,
    PQ), IVF with a large ``nprobe`` relative to ``nlist / n_shards``, few shards, or small
    query batches where one round trip to all shards costs less than the driver's coarse
    search. Adds need no coarse assignment on the driver and stay balanced for any ids.
``by="list"`` (IndexIVFFlat, IndexIVFPQ, an IndexRefine over one)
    Shard ``s`` owns the inverted lists ``l`` with ``l mod n_shards == s``: it keeps all
    ``nlist`` centroids but only its lists' contents, so its ordinary IVF search with the
    global ``nprobe`` probes exactly the global probe set and finds vectors only in the lists
    it owns. The driver runs the coarse search once per query (with the engine's own coarse
    quantizer, so it agrees with the shards to the bit) and sends the query only to the shards
    owning one of its probed lists. Wins with many shards and ``nprobe`` small against
    ``n_shards``: a query then costs ``min(nprobe, n_shards)`` shard visits instead of
    ``n_shards``, and each shard scans only its own lists (network: ``min(nprobe, n_shards) x k``
    results per query instead of ``n_shards x k``). Adds compute each vector's list first (in
    Ray tasks) to route it; list sizes are uneven, so shard sizes are less balanced than by id.

Faults
------
Shard actors run with ``max_restarts``; a shard whose process dies (``ray.kill``, a killed
worker, a lost node) is restarted by Ray, starts empty and refuses every call until the driver
restores it from its last saved shard file (or the trained empty index if it was never
saved). The call that finds it raises :class:`ShardLostError` naming the shard and how many
vectors it lost since its last save, unless it lost nothing (then the call is retried
transparently). ``search(..., allow_partial=True)`` is the explicit opt-in to answer from the
live shards instead, with a boolean array marking the affected queries. A result is never
silently partial.

Saves
-----
``save(dir)`` writes one pqkit file per shard (each actor writes its own, so ``dir`` must be on a
file system all nodes see), the trained empty index and ``sharded.json``, all-or-nothing as an
artifact folder of :mod:`pqkit._atomic` (kind ``pqkit-sharded-index``); ``load(dir)`` starts the
actors from the files.

Why a ShardedIndex is not in the index registry
-----------------------------------------------
:mod:`pqkit.indexes.registry` lists the types a single pqkit file holds: every entry is an
:class:`pqkit.Index` subclass that ``pqkit.load`` rebuilds from one file through
``_from_state``, that pickles through the same bytes, and that ``index_factory``, ``interop``
and ``tune`` read. A sharded index is none of these: it is a folder of such files plus a
manifest, its state lives in running actors that cannot be pickled, and it wraps any registered
type rather than being one. Registering it would make ``pqkit.load`` and pickling promise what
it cannot keep, so it is a separate artifact kind (like a gallery) with its own ``load``; each
shard file inside it is an ordinary registered index that ``pqkit.load`` reads.

Ray is imported by this package only: ``import pqkit`` never imports it.
"""

from .sharded import ShardLostError, ShardedIndex

__all__ = ["ShardLostError", "ShardedIndex"]
