"""Sharded pqkit on Ray: build throughput and batch QPS against shard count, and the overhead of
the sharded path against one local index at equal (bit-identical) results.

Raw rows are stored first (``bench/distributed/results/<name>.json``); ``report.py`` draws the
table from them. Never imported by the package.

Runs (each starts a Ray cluster of ``--nodes`` nodes on this machine with
``ray.cluster_utils.Cluster``, or joins ``--address``):

- ``--quick``: a correctness run (20,000 vectors, d=32, IVF64,PQ8x4): every shard count and
  both modes must return the local index's results bit for bit; timings are recorded but mean
  nothing on a busy machine.
- default: ``--n`` vectors (1,000,000) of ``--d`` (128), IVF``--nlist``,PQ``--M``x8, shards 1,
  2 and 4, both modes, with the local index as the reference.
- ``--synthetic-10m``: the 10M-vector synthetic run across two nodes (IVF4096,PQ16x8, 4 shards
  by list and by id); the data are generated chunk by chunk (the driver never holds them), and
  the local reference is skipped (it would hold 10M codes on the driver).

The vectors are a seeded Gaussian mixture (the centres drawn once, each chunk drawn from its own
seed), so every run sees the same data without storing it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def chunks(n, d, chunk, seed, n_clusters=256):
    """The ``n`` vectors in chunks of ``chunk`` rows (float32), drawn from one seeded mixture."""
    centres = np.random.default_rng(seed).standard_normal((n_clusters, d)).astype(np.float32)
    for i, start in enumerate(range(0, n, chunk)):
        rows = min(chunk, n - start)
        rng = np.random.default_rng([seed, i + 1])
        labels = rng.integers(0, n_clusters, rows)
        yield centres[labels] + 0.35 * rng.standard_normal((rows, d), dtype=np.float32)


def sample(n, d, seed):
    return np.concatenate(list(chunks(n, d, 65536, seed + 1)))


def start_cluster(args):
    import ray

    if args.address:
        ray.init(address=args.address)
        return None
    from ray.cluster_utils import Cluster

    node = {"num_cpus": args.cpus_per_node, "object_store_memory": args.object_store_mib * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(args.nodes - 1):
        cluster.add_node(**node)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    return cluster


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small correctness run")
    parser.add_argument("--synthetic-10m", action="store_true", help="the 10M-vector run across two nodes")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--nbits", type=int, default=8)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", default=["id", "list"], choices=["id", "list"])
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--object-store-mib", type=int, default=512)
    parser.add_argument("--shard-cpus", type=float, default=None,
                        help="CPUs each shard declares (default: the cluster's CPUs / the largest shard count)")
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    name = "quick" if args.quick else ("synthetic-10m" if args.synthetic_10m else "bench")
    if args.quick:
        args.n, args.d, args.nlist, args.M, args.nbits, args.nprobe = 20_000, 32, 64, 8, 4, 8
        args.n_queries, args.n_train, args.repeats, args.chunk = 500, 5_000, 1, 4096
    if args.synthetic_10m:
        args.n, args.nlist, args.shards, args.n_train = 10_000_000, 4096, [4], 200_000
    local_reference = not args.synthetic_10m

    import pqkit
    import ray
    from pqkit.distributed import ShardedIndex

    cluster = start_cluster(args)
    result = {"name": name, "args": vars(args), "ray": ray.__version__, "pqkit": pqkit.__version__,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_start": list(os.getloadavg())},
              "cluster_cpus": ray.cluster_resources().get("CPU"), "rows": []}
    shard_cpus = args.shard_cpus or result["cluster_cpus"] / max(args.shards)
    result["shard_cpus"] = shard_cpus
    try:
        train = sample(args.n_train, args.d, args.seed)
        queries = sample(args.n_queries, args.d, args.seed + 7)
        trained = pqkit.IndexIVFPQ(args.d, args.nlist, args.M, args.nbits, nprobe=args.nprobe)
        start = time.perf_counter()
        trained.train(train)
        result["train_s"] = time.perf_counter() - start
        reference = None
        if local_reference:
            # the local index twice: with every core (what a user gets by default) and with one
            # thread (what one shard gets: each shard runs one thread on its share of the cores)
            for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
                local = pqkit.io.index_from_bytes(pqkit.io.index_to_bytes(trained))
                local.n_threads = threads
                start = time.perf_counter()
                for part in chunks(args.n, args.d, args.chunk, args.seed):
                    local.add(part)
                add_s = time.perf_counter() - start
                search_s, found = timed(lambda: local.search(queries, args.k), args.repeats)
                if reference is None:
                    reference = found
                result["rows"].append({"index": "local", "shards": 0, "by": None, "threads": threads,
                                       "add_s": add_s, "add_vectors_per_s": args.n / add_s,
                                       "search_s": search_s, "qps": args.n_queries / search_s,
                                       "identical": bool(np.array_equal(found[0], reference[0])
                                                         and np.array_equal(found[1], reference[1]))})
                del local
        for by in args.modes:
            for n_shards in args.shards:
                sharded = ShardedIndex(trained, n_shards, by=by, num_cpus=shard_cpus, memory=256 * 2**20,
                                       n_threads=max(1, int(shard_cpus)), chunk_size=args.chunk)
                start = time.perf_counter()
                sharded.add(chunks(args.n, args.d, args.chunk, args.seed))
                add_s = time.perf_counter() - start
                search_s, found = timed(lambda: sharded.search(queries, args.k), args.repeats)
                identical = None
                if reference is not None:
                    identical = bool(np.array_equal(found[0], reference[0]) and np.array_equal(found[1], reference[1]))
                row = {"index": "sharded", "shards": n_shards, "by": by, "add_s": add_s,
                       "add_vectors_per_s": args.n / add_s, "add_vectors_per_s_per_shard": args.n / add_s / n_shards,
                       "search_s": search_s, "qps": args.n_queries / search_s, "identical": identical,
                       "shard_ntotal": sharded.shard_ntotals().tolist(),
                       "shard_memory_bytes": sharded.shard_memory_usage_bytes().tolist(),
                       "nodes": len(set(sharded.shard_nodes))}
                if local_reference:
                    local_rows = {r["threads"]: r for r in result["rows"] if r["index"] == "local"}
                    row["overhead_vs_local"] = search_s / local_rows[max(local_rows)]["search_s"]
                    row["overhead_vs_local_1_thread"] = search_s / local_rows[1]["search_s"]
                result["rows"].append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.startswith("shard_")}), flush=True)
                sharded.close()
    finally:
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    out = Path(args.out) if args.out else HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    bad = [row for row in result["rows"] if row["identical"] is False]
    if bad:
        print(f"NOT IDENTICAL to the local index: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
