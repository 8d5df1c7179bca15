"""A mapped index against the same index loaded into memory: load time, resident memory, QPS.

    python bench/mapped.py --quick                      # small, a correctness run (seconds)
    python bench/mapped.py --n 2000000 --factory IVF2048,PQ32 --nprobe 16 --cold

Builds one IVF-PQ index file from synthetic clustered vectors (``pqkit.datasets.make_clustered``,
added a chunk at a time with ``add_chunks``; kept in ``--folder`` and reused while the parameters
match), then, for each mode, starts a fresh child process that loads it and searches it:

* ``memory``: ``pqkit.load(path)``, the whole index read into memory (checksum and checks);
* ``mmap``: ``pqkit.load(path, mmap=True)``, checksum and checks over the mapped arrays;
* ``mmap-trusted``: ``pqkit.load(path, mmap=True, verify=False)``, nothing read but the header,
  sizes and small arrays.

Each child reports the seconds to load, its resident memory (VmRSS, which counts the mapped
pages a process has touched) after the load, after the first batch and after all rounds, the
first batch's seconds (page faults included), the best QPS over ``--rounds`` batch searches of
``--queries`` queries, the median single-query latency, and a hash of its D and I: every mode
must return identical results (checked; a difference fails the run). With ``--cold`` the file's
pages are dropped from the page cache (``posix_fadvise(DONTNEED)``, no root needed) before each
child, so the first searches read from disk; without it they come from the page cache the build
left warm. Raw rows go to ``--out`` (JSON) first, then a table is printed from them.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# This file's name is the standard library's mmap module's, which pqkit imports: Python puts the
# script's folder first on the path, so take it off before anything imports mmap.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
MODES = {"memory": {"mmap": False, "verify": True}, "mmap": {"mmap": True, "verify": True},
         "mmap-trusted": {"mmap": True, "verify": False}}


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def child(args) -> None:
    """Load and search in this (fresh) process; print one JSON row."""
    import numpy as np

    import pqkit
    from pqkit.datasets import make_clustered

    pqkit.set_num_threads(args.threads)
    queries = make_clustered(args.queries, args.d, seed=args.seed + 1)
    options = MODES[args.child]
    start_rss = _rss()
    start = time.perf_counter()
    index = pqkit.load(args.folder / "index.pqkit", **options)
    row = {"mode": args.child, "load_seconds": time.perf_counter() - start,
           "rss_after_load": _rss() - start_rss}
    index.nprobe = args.nprobe
    start = time.perf_counter()
    D, I = index.search(queries, 10)
    row["first_batch_seconds"] = time.perf_counter() - start
    row["rss_after_first_batch"] = _rss() - start_rss
    best = float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        index.search(queries, 10)
        best = min(best, time.perf_counter() - start)
    row["qps"] = args.queries / best
    latencies = []
    for q in queries[: min(200, args.queries)]:
        start = time.perf_counter()
        index.search(q[None], 10)
        latencies.append(time.perf_counter() - start)
    row["latency_ms_median"] = 1e3 * statistics.median(latencies)
    row["rss_after_search"] = _rss() - start_rss
    row["results_sha256"] = hashlib.sha256(D.tobytes() + I.tobytes()).hexdigest()
    print(json.dumps(row))


def build(args) -> dict:
    """The index file (reused when its parameters match); returns its description."""
    import pqkit
    from pqkit.datasets import make_clustered

    args.folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = args.folder / "index.pqkit", args.folder / "index.json"
    meta = {"n": args.n, "d": args.d, "factory": args.factory, "seed": args.seed}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return {**meta, "file_bytes": path.stat().st_size, "build_seconds": None}
    pqkit.set_num_threads(args.build_threads)
    start = time.perf_counter()
    index = pqkit.index_factory(args.d, args.factory)
    index.train(make_clustered(min(args.n, 100_000), args.d, seed=args.seed))
    chunk = 100_000

    def chunks():  # a chunk of the data set at a time: the build never holds all of it
        for begin in range(0, args.n, chunk):
            yield make_clustered(min(chunk, args.n - begin), args.d, seed=args.seed + 2 + begin)

    index.add_chunks(chunks(), progress=not args.quick)
    index.save(path)
    meta_path.write_text(json.dumps(meta))
    return {**meta, "file_bytes": path.stat().st_size,
            "build_seconds": time.perf_counter() - start}


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (clean pages of an unmapped file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small index, few queries: checks that every mode runs and agrees")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--factory", default="IVF1024,PQ32")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="search threads")
    parser.add_argument("--build-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold", action="store_true",
                        help="drop the file from the page cache before each mode")
    parser.add_argument("--folder", type=Path, default=BENCH / "results" / "cache" / "mmap")
    parser.add_argument("--out", type=Path, default=None,
                        help="raw rows (default bench/results/raw/mmap.json; --quick: not stored)")
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.factory, args.nprobe = 20_000, 32, "IVF64,PQ8", 8
        args.queries, args.rounds = 200, 2
        if args.folder == parser.get_default("folder"):
            args.folder = BENCH / "results" / "cache" / "mmap-quick"
    if args.child:
        child(args)
        return
    index = build(args)
    rows = []
    for mode in MODES:
        if args.cold:
            evict(args.folder / "index.pqkit")
        command = [sys.executable, __file__, "--child", mode, "--folder", str(args.folder)]
        for name in ("n", "d", "factory", "nprobe", "queries", "rounds", "threads", "seed"):
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        if args.quick:
            command.append("--quick")
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"bench/mapped.py: error: the {mode} child failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {"index": index, "nprobe": args.nprobe, "queries": args.queries, "rounds": args.rounds,
              "threads": args.threads, "cold": args.cold, "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "rows": rows}
    out = args.out or (None if args.quick else BENCH / "results" / "raw" / "mmap.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    if len({row["results_sha256"] for row in rows}) != 1:
        sys.exit("bench/mapped.py: error: the modes returned different results")


def report(result: dict) -> None:
    index = result["index"]
    print(f"{index['factory']}, n={index['n']:,}, d={index['d']}: file "
          f"{index['file_bytes'] / 2**20:.1f} MiB; nprobe={result['nprobe']}, "
          f"{result['queries']} queries, {result['threads']} thread(s), "
          f"{'cold' if result['cold'] else 'warm'} page cache")
    print(f"{'mode':<13} {'load s':>8} {'RSS load':>9} {'1st batch s':>11} {'RSS 1st':>8} "
          f"{'QPS':>9} {'ms/query':>8} {'RSS end':>8}  identical")
    first = result["rows"][0]["results_sha256"]
    for row in result["rows"]:
        print(f"{row['mode']:<13} {row['load_seconds']:8.3f} {row['rss_after_load'] / 2**20:8.1f}M "
              f"{row['first_batch_seconds']:11.3f} {row['rss_after_first_batch'] / 2**20:7.1f}M "
              f"{row['qps']:9.0f} {row['latency_ms_median']:8.3f} "
              f"{row['rss_after_search'] / 2**20:7.1f}M  {row['results_sha256'] == first}")


if __name__ == "__main__":
    main()
