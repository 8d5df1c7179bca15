"""pqkit.distributed on a real two-node Ray cluster on this machine: results identical to one
index (ids and distances bit for bit) in both sharding modes, lost shards (``ray.kill`` and a
killed worker process), saves, and the applications using a ShardedIndex.

The cluster (a head and a second node, 2 logical CPUs and 1 GiB each) is started once for the
module and stopped at its end; data stay tiny so that the module runs in about a minute.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pqkit
from pqkit.distributed import ShardLostError, ShardedIndex
from pqkit.distributed import _merge, _routing

ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")

D_DIM = 16
SHARD = {"num_cpus": 0.25, "memory": 64 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two nodes on this machine, joined by the tests' driver."""
    from ray.cluster_utils import Cluster

    # The nodes' workers must import the pqkit under test (a source tree on PYTHONPATH, or the
    # installed package): give them its folder as an absolute path.
    package_parent = str(Path(pqkit.__file__).resolve().parent.parent)
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, old_path) if p)
    node = {"num_cpus": 2, "memory": 2**30, "object_store_memory": 80 * 2**20}
    started = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        started.add_node(**node)
        ray.init(address=started.address, logging_level="ERROR", log_to_driver=False)
        yield started
    finally:
        ray.shutdown()
        started.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, D_DIM)).astype(np.float32)
    x[100:104] = x[7]  # exact duplicates: equal distances, broken by the smaller id
    queries = rng.standard_normal((40, D_DIM)).astype(np.float32)
    queries[:2] = x[7]
    return x, queries


def _clone(index):
    return pqkit.io.index_from_bytes(pqkit.io.index_to_bytes(index))


def _trained(kind, metric, x):
    if kind == "Flat":
        index = pqkit.IndexFlat(D_DIM, metric)
    elif kind == "PQ":
        index = pqkit.IndexPQ(D_DIM, 4, 4, metric)
    elif kind == "IVFFlat":
        index = pqkit.IndexIVFFlat(D_DIM, 16, metric, nprobe=3)
    elif kind == "IVFPQ":
        index = pqkit.IndexIVFPQ(D_DIM, 16, 4, 4, metric, nprobe=3)
    else:  # "RefineIVFPQ"
        index = pqkit.IndexRefine(pqkit.IndexIVFPQ(D_DIM, 16, 4, 4, metric, nprobe=3), k_factor=3)
    index.train(x)
    return index


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64


# ------------------------------------------------------------------ without Ray
def test_import_pqkit_stays_free_of_ray():
    code = "import sys, pqkit, pqkit.io, pqkit.factory; print('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(pqkit.__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_merge_topk_is_the_sorted_union_with_ties_by_id(higher_is_better):
    rng = np.random.default_rng(1)
    n, k, shards = 30, 5, 3
    D = rng.integers(0, 4, size=(n, shards * k)).astype(np.float32)  # many exact ties
    I = rng.permutation(n * shards * k).reshape(n, shards * k).astype(np.int64)
    D[:, -2:] = -np.inf if higher_is_better else np.inf
    I[:, -2:] = -1
    Dm, Im = _merge.merge_topk(D, I, k, higher_is_better)
    for row in range(n):
        pairs = sorted(zip(D[row], I[row]), key=lambda p: ((-p[0] if higher_is_better else p[0]), p[1]))
        assert [p[1] for p in pairs[:k]] == Im[row].tolist()
        assert [p[0] for p in pairs[:k]] == Dm[row].tolist()


def test_ids_spread_over_shards():
    owners = _routing.shard_of_ids(np.arange(0, 40000, 4, dtype=np.int64), 4)  # strided ids
    counts = np.bincount(owners, minlength=4)
    assert counts.min() > 0.9 * counts.mean()


def test_bad_arguments_are_refused_before_any_actor_starts(data):
    x, _ = data
    with pytest.raises(TypeError, match="pqkit index"):
        ShardedIndex(x, 2)
    with pytest.raises(ValueError, match='by="list".*IndexFlat'):
        ShardedIndex(pqkit.IndexFlat(D_DIM), 2, by="list")
    with pytest.raises(ValueError, match="by must be one of"):
        ShardedIndex(pqkit.IndexFlat(D_DIM), 2, by="rows")
    full = pqkit.IndexFlat(D_DIM)
    full.add(x[:5])
    with pytest.raises(ValueError, match="holds 5 vectors"):
        ShardedIndex(full, 2)
    with pytest.raises(ValueError, match="n_shards"):
        ShardedIndex(pqkit.IndexFlat(D_DIM), 63)


# ------------------------------------------------------------------ identity
IDENTITY = [("Flat", "id", "l2"), ("PQ", "id", "ip"), ("IVFFlat", "id", "l2"), ("IVFFlat", "list", "cosine"),
            ("IVFPQ", "id", "l2"), ("IVFPQ", "list", "l2"), ("IVFPQ", "list", "ip"),
            ("RefineIVFPQ", "id", "l2"), ("RefineIVFPQ", "list", "cosine")]


@pytest.mark.parametrize("kind,by,metric", IDENTITY)
def test_results_equal_one_index_bit_for_bit(cluster, data, tmp_path, kind, by, metric):
    x, queries = data
    trained = _trained(kind, metric, x)
    single = _clone(trained)
    with ShardedIndex(trained, 3, by=by, **SHARD) as sharded:
        # an array, a memmap and a stream of chunks; ids grow with insertion order (IndexFlat
        # breaks ties by insertion order), with gaps
        single.add(x[:600])
        sharded.add(x[:600])
        ids = np.arange(1000, 1000 + 2 * 500, 2, dtype=np.int64)
        memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(500, D_DIM))
        memmap[:] = x[600:1100]
        single.add_with_ids(x[600:1100], ids)
        sharded.add_with_ids(memmap, ids)
        single.add(x[1100:])
        sharded.add(iter([x[1100:1300], x[1300:]]))
        assert sharded.ntotal == single.ntotal == x.shape[0]
        assert sharded.shard_ntotals().sum() == x.shape[0] and (sharded.shard_ntotals() > 0).all()
        for k in (1, 10):
            _assert_same(sharded.search(queries, k), single.search(queries, k))
        removed = np.concatenate([np.arange(0, 300, 3), ids[:50], [10**12]])
        assert sharded.remove_ids(removed) == single.remove_ids(removed) == 150
        _assert_same(sharded.search(queries, 10), single.search(queries, 10))
        some = np.array([5, 1400, 1998, 2000], dtype=np.int64)
        np.testing.assert_array_equal(sharded.reconstruct_n(some), single.reconstruct_n(some))
        local = sharded.to_local()
        assert type(local) is type(single) and local.ntotal == single.ntotal
        _assert_same(local.search(queries, 10), single.search(queries, 10))


def test_an_untrained_index_is_trained_once_on_the_driver(cluster, data):
    x, queries = data
    untrained = pqkit.IndexIVFPQ(D_DIM, 16, 4, 4, nprobe=4)
    sharded = ShardedIndex(untrained, 2, by="list", **SHARD)
    assert not sharded.is_trained and sharded.actors == []
    with pytest.raises(ValueError, match="not trained"):
        sharded.add(x)
    with sharded.train(x):
        single = _clone(untrained).train(x)
        single.add(x)
        sharded.add(x, progress=True)
        _assert_same(sharded.search(queries, 5), single.search(queries, 5))
        sharded.nprobe = 16  # set on every shard (and on the driver's routing)
        single.nprobe = 16
        _assert_same(sharded.search(queries, 5), single.search(queries, 5))
        with pytest.raises(ValueError, match="already run"):
            sharded.train(x)


def test_shards_run_on_both_nodes_with_declared_resources(cluster, data):
    x, _ = data
    with ShardedIndex(pqkit.IndexFlat(D_DIM), 4, **SHARD) as sharded:
        assert len(set(sharded.shard_nodes)) == 2
        assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2
        sharded.add(x)
        per_shard = sharded.shard_memory_usage_bytes()
        assert per_shard.shape == (4,) and (per_shard >= sharded.shard_ntotals() * (4 * D_DIM + 8)).all()
        assert sharded.memory_usage_bytes() == per_shard.sum()


def test_a_placement_group_puts_one_shard_on_each_node(cluster, data):
    from ray.util.placement_group import placement_group, remove_placement_group

    x, queries = data
    group = placement_group([{"CPU": 0.25, "memory": 64 * 2**20}] * 2, strategy="STRICT_SPREAD")
    ray.get(group.ready(), timeout=60)
    try:
        with ShardedIndex(pqkit.IndexFlat(D_DIM), 2, placement_group=group, **SHARD) as sharded:
            assert len(set(sharded.shard_nodes)) == 2
            sharded.add(x)
            single = pqkit.IndexFlat(D_DIM)
            single.add(x)
            _assert_same(sharded.search(queries, 3), single.search(queries, 3))
    finally:
        remove_placement_group(group)


def test_search_passes_every_keyword_to_every_shard(cluster, data, monkeypatch):
    x, queries = data
    with ShardedIndex(_trained("IVFFlat", "l2", x), 3, **SHARD) as sharded:
        sharded.add(x)
        # Reaching the shards: the shard's own index.search refuses a keyword it does not take,
        # exactly as a single index does.
        with pytest.raises(TypeError, match="anything"):
            sharded.search(queries, 5, anything=2)
        with pytest.raises(ValueError, match="max_probe is not supported"):
            sharded.search(queries, 5, max_probe=8)
        # Unchanged, to every shard: what the driver sends (a filter made into a selector).
        sent = []
        monkeypatch.setattr(sharded, "_call", lambda calls, **kw: sent.append(calls) or {})
        sharded.search(queries, 5, nprobe=2, other=[1])
        (calls,) = sent
        assert sorted(calls) == [0, 1, 2]
        for method, args in calls.values():
            assert method == "search" and args[1] == 5
            assert args[2] == {"nprobe": 2, "other": [1]}


@pytest.mark.parametrize("by", ["id", "list"])
@pytest.mark.parametrize("kind", ["IVFPQ", "RefineIVFPQ"])
def test_per_call_parameters_and_filters_equal_one_index(cluster, data, by, kind):
    """nprobe, k_factor, an allow list, an exclusion list and one id set per query reach every
    shard (per-query sets split with the queries each shard answers): the results equal one
    index's, bit for bit."""
    x, queries = data
    rng = np.random.default_rng(3)
    per_query = [rng.choice(len(x), 300, replace=False) for _ in range(len(queries))]
    calls = [{"nprobe": 5}, {"filter": np.arange(0, len(x), 3)},
             {"filter": pqkit.IDSelectorNot(np.arange(0, len(x), 2)), "nprobe": 6},
             {"filter": per_query}, {"filter": pqkit.IDSelectorPerQuery(per_query), "nprobe": 2}]
    if kind == "RefineIVFPQ":
        calls.append({"k_factor": 3.0, "filter": per_query})
    with ShardedIndex(_trained(kind, "l2", x), 3, by=by, **SHARD) as sharded:
        sharded.add(x)
        single = _trained(kind, "l2", x)
        single.add(x)
        for params in calls:
            _assert_same(sharded.search(queries, 7, **params), single.search(queries, 7, **params))


def test_bad_adds_add_nothing(cluster, data):
    x, _ = data
    with ShardedIndex(pqkit.IndexIVFFlat(D_DIM, 16, nprobe=2).train(x), 2, by="list", **SHARD) as sharded:
        sharded.add_with_ids(x[:10], np.arange(10))
        with pytest.raises(ValueError, match="already in the index"):
            sharded.add_with_ids(x[10:30], np.arange(5, 25))
        with pytest.raises(ValueError, match="duplicates"):
            sharded.add_with_ids(x[10:30], np.r_[np.arange(100, 119), 100])
        bad = x[10:30].copy()
        bad[17, 3] = np.nan
        with pytest.raises(ValueError, match="rows from 0"):
            sharded.add(bad)
        with pytest.raises(TypeError, match="integer"):
            sharded.add_with_ids(x[10:30], np.arange(20.0))
        assert sharded.ntotal == 10
        with pytest.raises(ValueError, match="ids not in the index"):
            sharded.reconstruct(12345)


# ------------------------------------------------------------------ saves
def test_save_and_load_give_the_same_results(cluster, data, tmp_path):
    x, queries = data
    trained = _trained("IVFPQ", "l2", x)
    with ShardedIndex(trained, 3, by="list", **SHARD) as sharded:
        sharded.add(x)
        sharded.remove_ids(np.arange(0, 50))
        expected = sharded.search(queries, 10)
        target = tmp_path / "sharded"
        sharded.save(target)
        with pytest.raises(pqkit.ArtifactExistsError):
            sharded.save(target)
        sharded.save(target, overwrite=True)
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "mine.txt").write_text("not a sharded index")
        with pytest.raises(pqkit.ArtifactExistsError):
            sharded.save(tmp_path / "other")
        assert (tmp_path / "other" / "mine.txt").read_text() == "not a sharded index"
    names = sorted(p.name for p in next(target.glob("pqkit-data-*")).iterdir())
    assert names == ["shard-00000.pqkit", "shard-00001.pqkit", "shard-00002.pqkit", "sharded.json", "trained.pqkit"]
    single = pqkit.load(next(target.glob("pqkit-data-*")) / "shard-00001.pqkit")  # an ordinary index file
    assert isinstance(single, pqkit.IndexIVFPQ) and 0 < single.ntotal < x.shape[0]
    with ShardedIndex.load(target, **SHARD) as loaded:
        assert loaded.by == "list" and loaded.ntotal == x.shape[0] - 50
        _assert_same(loaded.search(queries, 10), expected)
        loaded.add(x[:3])  # sequential ids continue after the largest stored
        assert loaded.reconstruct_n(np.array([x.shape[0] + 2])).shape == (1, D_DIM)
    shard_file = next(target.glob("pqkit-data-*")) / "shard-00002.pqkit"
    shard_file.write_bytes(shard_file.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="damaged"):
        ShardedIndex.load(target, **SHARD)


# ------------------------------------------------------------------ faults
def _wait_until_restarted(actor, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ray.get(actor.describe.remote(), timeout=10)["restarted"]:
                return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError("the shard actor was not restarted")


def _wait_until_dead(actor, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.describe.remote(), timeout=10)
        except ray.exceptions.ActorDiedError:
            return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError("the shard actor is still alive")


def _pid(actor):
    return ray.get(actor.describe.remote())["pid"]


def test_a_killed_shard_is_restored_from_its_last_save_and_the_loss_reported(cluster, data, tmp_path):
    x, queries = data
    trained = _trained("IVFFlat", "l2", x)
    with ShardedIndex(trained, 3, **SHARD) as sharded:
        sharded.add(x[:1000])
        sharded.save(tmp_path / "s")
        sharded.add(x[1000:])
        unsaved = np.arange(1000, x.shape[0])
        lost_ids = unsaved[_routing.shard_of_ids(unsaved, 3) == 1]
        ray.kill(sharded.actors[1], no_restart=False)
        _wait_until_restarted(sharded.actors[1])
        with pytest.raises(ShardLostError) as info:
            sharded.search(queries, 5)
        error = info.value
        assert (error.shard, error.lost, error.dead) == (1, lost_ids.size, False) and lost_ids.size > 0
        assert "shard 1 of 3" in str(error) and f"the {lost_ids.size} vectors added to it since are lost" in str(error)
        assert error.restored_from.endswith("shard-00001.pqkit")
        # reported once; the shard now holds its save and answers with the others
        expected = _clone(trained)
        keep = np.setdiff1d(np.arange(x.shape[0]), lost_ids)
        expected.add_with_ids(x[keep], keep)
        assert sharded.ntotal == keep.size
        _assert_same(sharded.search(queries, 5), expected.search(queries, 5))
        assert [loss["shard"] for loss in sharded.losses] == [1]


def test_a_worker_killed_by_pid_with_nothing_unsaved_is_restored_silently(cluster, data, tmp_path):
    x, queries = data
    with ShardedIndex(_trained("IVFPQ", "l2", x), 3, by="list", **SHARD) as sharded:
        sharded.add(x)
        sharded.remove_ids(np.arange(10))
        sharded.save(tmp_path / "s")
        expected = sharded.search(queries, 5)
        old_pid = _pid(sharded.actors[2])
        os.kill(old_pid, signal.SIGKILL)  # the call below finds the process gone or restarting
        _assert_same(sharded.search(queries, 5), expected)
        assert _pid(sharded.actors[2]) != old_pid and sharded.losses == []
        sharded.add(x[:5])  # and it takes new vectors again
        assert sharded.ntotal == x.shape[0] - 10 + 5


def test_a_shard_lost_during_an_add_reports_what_it_held_and_where_the_add_stopped(cluster, data):
    x, queries = data
    trained = _trained("IVFFlat", "l2", x)
    with ShardedIndex(trained, 2, chunk_size=50, **SHARD) as sharded:
        sharded.add(x[:500])  # never saved
        held = int(sharded.shard_ntotals()[0])
        os.kill(_pid(sharded.actors[0]), signal.SIGKILL)
        with pytest.raises(ShardLostError, match=r"This add stopped after its first \d+ rows") as info:
            sharded.add(x[500:1000])
        assert (info.value.shard, info.value.lost) == (0, held)
        stopped = int(re.search(r"first (\d+) rows", str(info.value)).group(1))
        assert 0 < stopped < 500 and stopped % 50 == 0
        # the chunks sent before the loss was seen are stored whole (the restored shard took its
        # part again); the shard's earlier vectors are gone
        stored = np.r_[np.flatnonzero(_routing.shard_of_ids(np.arange(500), 2) == 1), np.arange(500, 500 + stopped)]
        assert sharded.ntotal == stored.size
        expected = _clone(trained)
        expected.add_with_ids(x[stored], stored)
        _assert_same(sharded.search(queries, 5), expected.search(queries, 5))
        sharded.add(x[500 + stopped:1000])  # the rest, as the message says
        assert sharded.ntotal == stored.size + 500 - stopped


def test_allow_partial_marks_the_queries_of_a_lost_shard(cluster, data):
    x, queries = data
    trained = _trained("IVFFlat", "l2", x)
    with ShardedIndex(trained, 3, by="list", **SHARD) as sharded:
        sharded.add(x)  # never saved: a restart restores the empty index
        lost = 0
        owners = _routing.shard_of_lists(trained._coarse_assign(x), 3)
        probes = _routing.ProbeRouter(trained).probed_lists(queries, trained.nprobe)
        touched = (_routing.shard_of_lists(probes, 3) == lost).any(axis=1)
        assert 0 < touched.sum() < queries.shape[0]
        os.kill(_pid(sharded.actors[lost]), signal.SIGKILL)
        D, I, affected = sharded.search(queries, 5, allow_partial=True)
        np.testing.assert_array_equal(affected, touched)
        survivors = _clone(trained)
        keep = np.flatnonzero(owners != lost)
        survivors.add_with_ids(x[keep], keep)
        _assert_same((D, I), survivors.search(queries, 5))
        assert sharded.losses[-1]["shard"] == lost and sharded.losses[-1]["lost"] == (owners == lost).sum()
        assert sharded.ntotal == keep.size


def test_a_shard_that_cannot_restart_fails_every_call_unless_partial_is_allowed(cluster, data):
    x, queries = data
    trained = _trained("Flat", "l2", x)
    with ShardedIndex(trained, 2, max_restarts=0, restart_timeout_s=20, **SHARD) as sharded:
        sharded.add(x)
        ray.kill(sharded.actors[0], no_restart=False)  # no restart left
        _wait_until_dead(sharded.actors[0])
        for _ in range(2):
            with pytest.raises(ShardLostError, match="shard 0 of 2 .* is dead") as info:
                sharded.search(queries, 5)
            assert info.value.dead
        D, I, affected = sharded.search(queries, 5, allow_partial=True)
        assert affected.all()
        survivors = _clone(trained)
        keep = np.flatnonzero(_routing.shard_of_ids(np.arange(x.shape[0]), 2) == 1)
        survivors.add_with_ids(x[keep], keep)
        _assert_same((D, I), survivors.search(queries, 5))
        with pytest.raises(ShardLostError, match="dead"):
            sharded.add(x[:5])


# ------------------------------------------------------------------ the applications
def test_patchcore_scores_with_a_sharded_memory_bank(cluster):
    from pqkit.patchcore.neighbors import PqkitFlat
    from pqkit.patchcore.scoring import image_scores, patch_scores

    rng = np.random.default_rng(3)
    bank = rng.standard_normal((400, D_DIM)).astype(np.float32)
    features = rng.standard_normal((3, 4, 4, D_DIM)).astype(np.float32)

    class ShardedFlat(PqkitFlat):  # the backend builds its index through _make: a sharded one here
        def _make(self, d):
            return ShardedIndex(pqkit.IndexFlat(d), 2, **SHARD)

    local, sharded = PqkitFlat().fit(bank), ShardedFlat().fit(bank)
    assert isinstance(sharded.index, ShardedIndex)
    try:
        for backend in (local, sharded):
            backend.set_num_threads(1)
        (d1, n1), (d2, n2) = patch_scores(local, features), patch_scores(sharded, features)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(n1, n2)
        np.testing.assert_array_equal(image_scores(features, d1, n1, local, 5),
                                      image_scores(features, d2, n2, sharded, 5))
        assert sharded.memory_bytes() >= bank.nbytes
    finally:
        sharded.index.close()


def test_a_gallery_over_a_sharded_index(cluster):
    from pqkit.retrieval import Gallery

    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, D_DIM)).astype(np.float32)
    ids = np.arange(300, dtype=np.int64) * 3
    labels = np.arange(300) % 4
    local_index = pqkit.IndexFlat(D_DIM, "cosine")
    local_index.add_with_ids(x, ids)
    with ShardedIndex(pqkit.IndexFlat(D_DIM, "cosine"), 3, **SHARD) as sharded:
        sharded.add_with_ids(x, ids)
        local = Gallery(local_index, ids, labels=labels, metric="cosine")
        remote = Gallery(sharded, ids, labels=labels, metric="cosine")
        _assert_same(remote.search(x[:7], 5), local.search(x[:7], 5))
        a, b = remote.query_id(int(ids[11]), k=4), local.query_id(int(ids[11]), k=4)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.labels == b.labels
