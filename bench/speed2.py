"""pqkit against faiss, ScaNN, hnswlib and usearch at equal recall, timed in alternation in one process.

    python bench/speed2.py --dataset glove            # or fashion, synthetic, all
    python bench/speed2.py --quick                    # a tiny synthetic set and grid, seconds
    python bench/speed2_report.py                     # tables and plots from the stored rows
    python bench/speed2.py --dataset fashion --threads-only   # step 5 again on the stored rows

Steps, all in one process on the same arrays (the grid of each set is
``bench/configs/speed2/<set>.json``; lists expand as a cartesian product):

1. **build**: every library x build parameters once (``--build-threads``, default every core);
   its memory from the library's own measure (see each adapter), as bytes per vector.
2. **recall and pilot**: per query parameters, the query batch (``--queries``, default 1,000)
   searched once for 10-recall@10 and once more for a pilot time (1 thread).
3. **keep**: per library and recall target, the points that reach the target and that no other
   point of that library beats by more than ``--slack`` in pilot QPS at no more bytes per vector,
   plus the library's recall-QPS frontier; builds with no kept point are freed.
4. **rounds**: ``--rounds`` rounds; each round searches the batch once with every kept point
   (libraries alternating, the first library rotating from round to round), then
   ``--single-queries`` queries one call each with every kept point. 1 thread everywhere. The
   medians over rounds are the batch QPS and the single-query latency.
5. **threads** (unless ``--no-threads``): pqkit's fastest batch point per target, at 1 and 2
   threads in alternation: batch QPS and single-query latency (a single query's probed lists are
   split over the threads by the engine).

faiss runs every SIMD level of ``faiss.SIMDConfig`` on the same index (``simd_level: "all"`` in a
grid), switched at run time. Raw rows go to ``bench/results/raw/speed2-<dataset>.json`` (saved
after every step) before any table is drawn. Nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import adapters  # noqa: E402
import datasets  # noqa: E402
import speed2_report  # noqa: E402

CONFIG_DIR = BENCH_DIR / "configs" / "speed2"
SETS = {"glove": "glove-50-angular", "fashion": "fashion-mnist-784-euclidean", "synthetic": "synthetic-1m-128"}
K = 10


def expand(spec: dict) -> list[dict]:
    """Cartesian product of a dict of lists (a scalar counts as a one-element list)."""
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def query_grid(adapter: str, spec: dict) -> list[dict]:
    """The query points of one algorithm; ``simd_level: "all"`` becomes faiss's available levels."""
    spec = dict(spec)
    if spec.get("simd_level") == "all":
        spec["simd_level"] = adapters.faiss_simd_levels() if adapter == "faiss-factory" else [None]
    points = expand(spec)
    return [{k: v for k, v in p.items() if v is not None} for p in points]


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """k-recall@k: the fraction of the true k nearest ids among the k returned."""
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth))
    return hits / (len(found) * k)


def quick_dataset() -> datasets.Dataset:
    """4,000 clustered vectors of d = 16 and 200 queries from the same mixture (exact truth)."""
    from pqkit.datasets import make_clustered

    vectors = make_clustered(4_000 + 200, 16, seed=0)
    base, queries = np.ascontiguousarray(vectors[:4_000]), np.ascontiguousarray(vectors[4_000:])
    return datasets.Dataset("quick-4k-16", base, queries, datasets.exact_ground_truth(base, queries, 100), "l2")


def machine_info() -> dict:
    import pqkit

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "n_cpus": os.cpu_count(), "numpy": np.__version__,
            "pqkit_simd_level": pqkit.simd_level(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    from importlib import metadata

    for package in ("faiss-cpu", "scann", "hnswlib", "usearch"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        import faiss

        info["faiss_compile_options"] = faiss.get_compile_options()
        info["faiss_default_simd_level"] = faiss.SIMDConfig.get_level_name()
        info["faiss_simd_levels"] = adapters.faiss_simd_levels()
    except ImportError:
        pass
    return info


class Point:
    """One (built index, query parameters) pair and its row of results."""

    def __init__(self, algo, query_params: dict, row: dict):
        self.algo, self.query_params, self.row = algo, query_params, row

    def prepare(self, n_threads: int = 1) -> None:
        self.algo.set_threads(n_threads)
        self.algo.set_query_params(**self.query_params)

    def search_batch(self, queries: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        parts = [self.algo.query(queries[i:i + batch_size], K) for i in range(0, len(queries), batch_size)]
        return time.perf_counter() - start, parts

    def search_single(self, queries: np.ndarray) -> float:
        start = time.perf_counter()
        for i in range(len(queries)):
            self.algo.query(queries[i:i + 1], K)
        return time.perf_counter() - start


def build_and_measure(config: dict, data, queries, truth, args, log) -> tuple[list[Point], dict]:
    """Steps 1-3: build, recall and pilot per point, keep; returns the kept points and unavailable libraries."""
    unavailable = {}
    points: list[Point] = []
    by_library = defaultdict(list)
    for spec in config["algorithms"]:
        adapter = spec["adapter"]
        ok, why = adapters.availability(adapter)
        library = adapters.ADAPTERS[adapter].name
        if not ok:
            unavailable[library] = why
            log(f"  {library}: unavailable ({why})")
            continue
        by_library[library].append(spec)
    for library, specs in by_library.items():
        library_points = []
        for spec in specs:
            for build in expand(spec.get("build", {})):
                algo = adapters.make_adapter(spec["adapter"], **build)
                algo.set_threads(args.build_threads)
                start = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # small-set training warnings
                        algo.fit(data.base)
                except Exception as error:  # a configuration the library refuses: recorded, skipped
                    log(f"  {library} {build}: build failed: {error!r}")
                    unavailable.setdefault(f"{library} {json.dumps(build)}", f"build failed: {error!r}")
                    continue
                build_seconds = time.perf_counter() - start
                memory = algo.memory_bytes()
                for query_params in query_grid(spec["adapter"], spec.get("query", {})):
                    point = Point(algo, query_params, {})
                    point.prepare(1)
                    _, parts = point.search_batch(queries, args.batch_size)
                    pilot_seconds, _ = point.search_batch(queries, args.batch_size)
                    describe = algo.describe()
                    point.row = {
                        "library": library, "adapter": spec["adapter"], "config": describe.get("config", ""),
                        "build_params": build, "query_params": query_params,
                        "simd_level": describe.get("simd_level"),
                        "recall": recall_at(np.concatenate(parts), truth),
                        "memory_bytes": memory, "bytes_per_vector": memory / len(data.base),
                        "build_seconds": build_seconds, **algo.fit_seconds,
                        "pilot_qps": len(queries) / pilot_seconds, "timed": False,
                    }
                    library_points.append(point)
                log(f"  {library} {algo.describe().get('config', build)}: built in {build_seconds:.1f} s, "
                    f"{memory / len(data.base):.1f} B/vector, recall "
                    + ", ".join(f"{p.row['recall']:.3f}" for p in library_points if p.algo is algo))
        kept = keep_points([p.row for p in library_points], config["targets"], args.slack)
        for index, point in enumerate(library_points):
            if index in kept:
                point.row["timed"] = True
                points.append(point)
        log(f"  {library}: keeps {len(kept)} of {len(library_points)} points for the timed rounds")
        # untimed rows are stored too, without their index: a build with no kept point is freed here
        points.extend(Point(None, p.query_params, p.row) for i, p in enumerate(library_points) if i not in kept)
        library_points = algo = point = None  # nothing here may keep a dropped build alive
        gc.collect()
    return points, unavailable


def keep_points(rows: list[dict], targets, slack: float) -> set[int]:
    """Indexes of the rows worth timing (step 3 of the module docstring).

    Per target: every row reaching it that no other such row beats by more than ``slack`` in
    pilot QPS at no more bytes per vector. Plus the recall-QPS frontier: rows that no other
    row beats by more than ``slack`` in pilot QPS at no less recall.
    """
    kept = set()
    for target in targets:
        reaching = [i for i, r in enumerate(rows) if r["recall"] >= target - speed2_report.RECALL_TOLERANCE]
        for i in reaching:
            if not any(rows[j]["bytes_per_vector"] <= rows[i]["bytes_per_vector"]
                       and rows[j]["pilot_qps"] > slack * rows[i]["pilot_qps"] for j in reaching if j != i):
                kept.add(i)
    for i, row in enumerate(rows):
        if not any(other["recall"] >= row["recall"] and other["pilot_qps"] > slack * row["pilot_qps"]
                   for j, other in enumerate(rows) if j != i):
            kept.add(i)
    return kept


def alternating_order(points: list[Point], round_index: int) -> list[Point]:
    """Libraries alternate (one point of each in turn); the first library rotates every round."""
    by_library = defaultdict(list)
    for point in points:
        by_library[point.row["library"]].append(point)
    libraries = sorted(by_library)
    shift = round_index % len(libraries)
    libraries = libraries[shift:] + libraries[:shift]
    order = []
    for group in itertools.zip_longest(*(by_library[name] for name in libraries)):
        order.extend(p for p in group if p is not None)
    return order


def timed_rounds(points: list[Point], queries, single_queries, args, log) -> None:
    """Step 4: every kept point searched once per round, batch then single queries, alternating."""
    for point in points:
        point.row.update(batch_seconds=[], single_seconds=[], n_queries=len(queries),
                         n_single_queries=len(single_queries), batch_size=args.batch_size)
    for round_index in range(args.rounds):
        order = alternating_order(points, round_index)
        for point in order:
            point.prepare(1)
            point.row["batch_seconds"].append(point.search_batch(queries, args.batch_size)[0])
        for point in order:
            point.prepare(1)
            point.row["single_seconds"].append(point.search_single(single_queries))
        log(f"  round {round_index + 1}/{args.rounds} done")
    for point in points:
        row = point.row
        row["batch_qps"] = len(queries) / float(np.median(row["batch_seconds"]))
        row["single_latency_us"] = 1e6 * float(np.median(row["single_seconds"])) / len(single_queries)


def thread_scaling(points: list[Point], targets, queries, single_queries, args, log) -> list[dict]:
    """Step 5: pqkit's fastest batch point per target at 1 and 2 threads, alternating."""
    ours = [p for p in points if p.row["library"] == speed2_report.OURS]
    chosen = {}
    for target in targets:
        best = speed2_report.pick_fastest([p.row for p in ours], target, "batch")
        if best is not None:
            point = next(p for p in ours if p.row is best)
            chosen.setdefault(id(point), (point, []))[1].append(target)
    results = []
    for point, reached in chosen.values():
        seconds = {(threads, mode): [] for threads in (1, 2) for mode in ("batch", "single")}
        for round_index in range(args.rounds):
            for threads in ((1, 2) if round_index % 2 == 0 else (2, 1)):
                point.prepare(threads)
                seconds[(threads, "batch")].append(point.search_batch(queries, args.batch_size)[0])
                seconds[(threads, "single")].append(point.search_single(single_queries))
        point.prepare(1)
        row = {"config": point.row["config"], "query_params": point.row["query_params"],
               "recall": point.row["recall"], "targets": reached, "n_queries": len(queries),
               "n_single_queries": len(single_queries),
               "seconds": {f"{mode}_{threads}": s for (threads, mode), s in seconds.items()}}
        for threads in (1, 2):
            row[f"batch_qps_{threads}"] = len(queries) / float(np.median(seconds[(threads, "batch")]))
            row[f"single_latency_us_{threads}"] = (1e6 * float(np.median(seconds[(threads, "single")]))
                                                   / len(single_queries))
        log(f"  threads: {row['config']} {row['query_params']}: batch x{row['batch_qps_2'] / row['batch_qps_1']:.2f}, "
            f"single latency {row['single_latency_us_1']:.0f} -> {row['single_latency_us_2']:.0f} us")
        results.append(row)
    return results


def run(config: dict, data, args, out: Path, log=print) -> dict:
    """Every step for one dataset; the raw file is rewritten after each step."""
    queries = np.ascontiguousarray(data.queries[:args.queries])
    truth = data.ground_truth[:len(queries), :K]
    single_queries = queries[:args.single_queries]
    raw = {"kind": "speed2", "dataset": data.name, "n_base": len(data.base), "d": data.base.shape[1],
           "targets": config["targets"], "grid": config, "machine": machine_info(),
           "settings": {"queries": len(queries), "single_queries": len(single_queries), "rounds": args.rounds,
                        "batch_size": args.batch_size, "slack": args.slack, "build_threads": args.build_threads,
                        "k": K},
           "unavailable": {}, "rows": [], "threads": []}

    def save(step: str) -> None:
        raw["completed"] = step
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(raw, indent=1))
        tmp.replace(out)

    log(f"[{data.name}] base {data.base.shape}, {len(queries)} queries ({len(single_queries)} single)")
    points, raw["unavailable"] = build_and_measure(config, data, queries, truth, args, log)
    raw["rows"] = [p.row for p in points]
    save("built")
    timed = [p for p in points if p.algo is not None]
    log(f"[{data.name}] {args.rounds} rounds over {len(timed)} points")
    timed_rounds(timed, queries, single_queries, args, log)
    save("rounds")
    if not args.no_threads:
        raw["threads"] = thread_scaling(timed, config["targets"], queries, single_queries, args, log)
        save("threads")
    return raw


def rerun_threads(raw: dict, data, args, out: Path, log=print) -> dict:
    """Step 5 alone, on the raw file of an earlier run (``--threads-only``): pqkit's fastest batch
    point per target, taken from the stored rows, is built again and timed at 1 and 2 threads;
    the rows of the other steps are kept as they were."""
    settings = raw["settings"]
    queries = np.ascontiguousarray(data.queries[:settings["queries"]])
    single_queries = queries[:settings["single_queries"]]
    ours = [row for row in raw["rows"] if row["library"] == speed2_report.OURS and row.get("timed")]
    picks = {id(row): row for target in raw["targets"]
             for row in [speed2_report.pick_fastest(ours, target, "batch")] if row is not None}
    built, points = {}, []
    for row in picks.values():
        key = json.dumps([row["adapter"], row["build_params"]], sort_keys=True)
        if key not in built:
            algo = adapters.make_adapter(row["adapter"], **row["build_params"])
            algo.set_threads(args.build_threads)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                algo.fit(data.base)
            built[key] = algo
        points.append(Point(built[key], row["query_params"], row))
    log(f"[{data.name}] thread step again over {len(points)} points")
    raw["threads"] = thread_scaling(points, raw["targets"], queries, single_queries, args, log)
    raw["settings"]["threads_rounds"] = args.rounds
    raw["completed"] = "threads"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(raw, indent=1))
    tmp.replace(out)
    return raw


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=[*SETS, "all"], help="which set (all: the three in turn)")
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic set and grid (seconds)")
    parser.add_argument("--config", type=Path, help="a grid other than configs/speed2/<set>.json")
    parser.add_argument("--out", type=Path, help="raw JSON path (one dataset only)")
    parser.add_argument("--queries", type=int, default=1000, help="queries of the batch (default 1000)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=200, help="single-query calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slack", type=float, default=1.25, help="pilot QPS margin of the keep step")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-threads", action="store_true", help="skip the thread-scaling step")
    parser.add_argument("--no-report", action="store_true", help="do not draw the tables and plot")
    parser.add_argument("--threads-only", action="store_true",
                        help="rerun only the thread-scaling step on the stored raw file (--out or the default)")
    args = parser.parse_args(argv)
    if args.quick == bool(args.dataset):
        parser.error("give --dataset NAME or --quick")
    if min(args.queries, args.batch_size, args.single_queries, args.rounds, args.build_threads) < 1 or args.slack < 1:
        parser.error("--queries, --batch-size, --single-queries, --rounds, --build-threads must be >= 1, "
                     "--slack >= 1")
    names = ["quick"] if args.quick else (list(SETS) if args.dataset == "all" else [args.dataset])
    if args.out and len(names) > 1:
        parser.error("--out names one file; with --dataset all the defaults are used")
    if args.config and len(names) > 1:
        parser.error("--config names one grid; give one --dataset with it")
    for name in names:
        config_path = args.config or CONFIG_DIR / f"{name}.json"
        config = json.loads(config_path.read_text())
        data = quick_dataset() if name == "quick" else datasets.load(SETS[name])
        out = args.out or BENCH_DIR / "results" / "raw" / f"speed2-{name}.json"
        if args.threads_only:
            if not out.is_file():
                parser.error(f"--threads-only needs the raw file of an earlier run; {out} does not exist")
            raw = rerun_threads(json.loads(out.read_text()), data, args, out,
                                log=lambda m: print(m, flush=True))
        else:
            raw = run(config, data, args, out, log=lambda m: print(m, flush=True))
        print(f"[{data.name}] wrote {out}")
        if not args.no_report:
            for path in speed2_report.write_report(raw, out.parent.parent if out.parent.name == "raw" else out.parent,
                                                   name):
                print(f"[{data.name}] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
