"""Command line: ``python -m pqkit demo`` (also the ``pqkit`` console script).

``demo`` builds every index type on built-in synthetic clustered data
(:func:`pqkit.datasets.make_clustered`) and prints, per index, 10-recall@10 against the exact
:class:`pqkit.IndexFlat` result, queries per second, milliseconds per query and memory.
No data are downloaded.
"""

from __future__ import annotations

import importlib
import math
import sys
import time

import numpy as np

from . import _cli

__all__ = ["main", "recall_at_k"]

# modules adding subcommands: each defines ``register(subparsers)``, which adds its parsers with
# :func:`pqkit._cli.add_command` (``run=callable(args)`` and the command's name for its errors)
_COMMAND_MODULES: list[str] = [".retrieval.cli", ".patchcore.cli"]


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """k-recall@k: the mean fraction of the true k nearest neighbours that appear among the k found.

    Parameters
    ----------
    found_ids : ndarray of int64, shape (nq, k)
        Ids returned by the index under test (``-1`` padding never matches).
    true_ids : ndarray of int64, shape (nq, k)
        Ids of the exact k nearest neighbours.

    Returns
    -------
    float in [0, 1]
    """
    nq, k = true_ids.shape
    hits = sum(np.intersect1d(found_ids[row], true_ids[row]).size for row in range(nq))
    return hits / (nq * k)


def _choose_sub_quantizers(d: int) -> int:
    """The divisor of d closest to d / 4 (about 4 dimensions per sub-quantizer), at most 64."""
    divisors = [m for m in range(1, min(d, 64) + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - d / 4), -m))


def _choose_nlist(n: int) -> int:
    """A power of two near sqrt(n), with at least 39 training points per centroid."""
    nlist = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1)))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(nlist, 1)


def _timed_search(index, queries: np.ndarray, k: int):
    index.search(queries[:1], k)  # warm-up: lazily built tables are part of the build, not of QPS
    start = time.perf_counter()
    distances, ids = index.search(queries, k)
    return distances, ids, time.perf_counter() - start


def run_demo(n: int, d: int, nq: int, k: int, seed: int, n_threads: int | None, out=None) -> list[dict]:
    """Build the four index types on synthetic data, print the table (to ``out``, default stdout) and
    return its rows."""
    out = sys.stdout if out is None else out
    import pqkit
    from pqkit.datasets import make_clustered

    if n_threads is not None:
        pqkit.set_num_threads(n_threads)
    data = make_clustered(n + nq, d, n_clusters=max(1, min(200, n // 100)), seed=seed)
    base, queries = data[:n], data[n:]
    M = _choose_sub_quantizers(d)
    nbits = 8 if n >= 39 * 256 else 4
    nlist = _choose_nlist(n)
    print(
        f"pqkit {getattr(pqkit, '__version__', '?')} demo: synthetic clustered data, n={n} d={d} "
        f"queries={nq} k={k} seed={seed}",
        file=out,
    )
    print(
        f"simd level: {pqkit.simd_level()} (available: {', '.join(pqkit.available_simd_levels())}), "
        f"threads: {pqkit.get_num_threads()}",
        file=out,
    )

    rows = []

    def record(name: str, index, build_s: float, ids, search_s: float, true_ids) -> None:
        rows.append(
            {
                "index": name,
                "recall": recall_at_k(ids, true_ids) if true_ids is not None else 1.0,
                "qps": nq / search_s if search_s > 0 else float("inf"),
                "ms_per_query": 1e3 * search_s / nq,
                "memory_mb": index.memory_usage_bytes() / 2**20,
                "build_s": build_s,
            }
        )

    start = time.perf_counter()
    flat = pqkit.IndexFlat(d)
    flat.add(base)
    build_s = time.perf_counter() - start
    _, true_ids, search_s = _timed_search(flat, queries, k)
    record("IndexFlat (exact)", flat, build_s, true_ids, search_s, None)

    start = time.perf_counter()
    pq_index = pqkit.IndexPQ(d, M, nbits)
    pq_index.train(base)
    pq_index.add(base)
    build_s = time.perf_counter() - start
    _, ids, search_s = _timed_search(pq_index, queries, k)
    record(f"IndexPQ M={M} nbits={nbits}", pq_index, build_s, ids, search_s, true_ids)

    nprobes = [p for p in (1, 4, 16) if p <= nlist]
    start = time.perf_counter()
    ivf_flat = pqkit.IndexIVFFlat(d, nlist)
    ivf_flat.train(base)
    ivf_flat.add(base)
    build_s = time.perf_counter() - start
    for nprobe in nprobes:
        ivf_flat.nprobe = nprobe
        _, ids, search_s = _timed_search(ivf_flat, queries, k)
        record(f"IndexIVFFlat nlist={nlist} nprobe={nprobe}", ivf_flat, build_s, ids, search_s, true_ids)

    start = time.perf_counter()
    ivf_pq = pqkit.IndexIVFPQ(d, nlist, M, nbits)
    ivf_pq.train(base)
    ivf_pq.add(base)
    build_s = time.perf_counter() - start
    for nprobe in nprobes:
        ivf_pq.nprobe = nprobe
        _, ids, search_s = _timed_search(ivf_pq, queries, k)
        record(f"IndexIVFPQ nlist={nlist} M={M} nbits={nbits} nprobe={nprobe}", ivf_pq, build_s, ids, search_s,
               true_ids)

    width = max(len(row["index"]) for row in rows)
    header = f"{'index':<{width}}  {f'{k}-recall@{k}':>12}  {'QPS':>10}  {'ms/query':>9}  {'memory MB':>9}  {'build s':>7}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        print(
            f"{row['index']:<{width}}  {row['recall']:>12.3f}  {row['qps']:>10.0f}  {row['ms_per_query']:>9.3f}  "
            f"{row['memory_mb']:>9.2f}  {row['build_s']:>7.2f}",
            file=out,
        )
    print(f"recall is against IndexFlat (exact, squared L2); QPS over {nq} queries in one batch", file=out)
    return rows


def _check_demo_size(args) -> None:
    """Refuse, before any work, a demo whose data and indexes cannot fit in memory."""
    from ._validation import check_fits_in_memory

    # the float32 data, generator temporaries (float64) and the copies held by the four indexes
    nbytes = 12 * 4 * (args.n + args.nq) * args.d
    check_fits_in_memory(nbytes, f"the demo with --n {args.n} --nq {args.nq} --d {args.d}",
                         "choose a smaller --n, --nq or --d")


def _run_demo_command(args) -> int:
    _check_demo_size(args)
    run_demo(args.n, args.d, args.nq, args.k, args.seed, args.threads)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pqkit`` and of the ``pqkit`` console script.

    Returns the exit status: 0 on success, 2 on a user error, which is printed as one line
    ``pqkit <command>: error: <message>`` on stderr (:mod:`pqkit._cli`). Usage errors exit
    through argparse (SystemExit with status 2), also as one line.
    """
    parser = _cli.ArgumentParser(prog="pqkit", description="pqkit: product quantization and IVF-PQ search")
    commands = parser.add_subparsers(dest="command", metavar="command")
    demo = _cli.add_command(
        commands, "demo", _run_demo_command,
        help="build every index type on built-in synthetic data and print a recall/speed table",
        description="Build IndexFlat, IndexPQ, IndexIVFFlat and IndexIVFPQ on synthetic clustered data "
        "and compare them with the exact result.",
    )
    demo.add_argument("--n", type=_cli.positive_int, default=50_000, help="number of base vectors (default 50000)")
    demo.add_argument("--d", type=_cli.positive_int, default=64, help="dimension (default 64)")
    demo.add_argument("--nq", type=_cli.positive_int, default=500, help="number of queries (default 500)")
    demo.add_argument("--k", type=_cli.positive_int, default=10, help="neighbours per query (default 10)")
    demo.add_argument("--seed", type=_cli.non_negative_int, default=0, help="seed of the synthetic data (default 0)")
    demo.add_argument("--threads", type=_cli.positive_int, default=None, help="threads (default: all cores)")
    for module_name in _COMMAND_MODULES:
        # each module's ``register`` only declares its arguments; heavy imports (torch) happen when
        # its command runs, so ``pqkit demo`` stays fast
        importlib.import_module(module_name, __package__).register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    return _cli.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
