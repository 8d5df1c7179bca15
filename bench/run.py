"""Run a benchmark config and store the raw rows (JSON) before any table or plot is drawn.

    python bench/run.py --config bench/configs/fashion.json [--small] [--out bench/results/raw/x.json]
    python bench/run.py --all [--small]          # every config in bench/configs/

For every algorithm x build params: build once (timed, with ``build_threads`` threads), then for
every thread count x query params, in the same process and on the same data:

* batch QPS: all queries in batches of ``batch_size``, median wall time of ``repeats`` runs;
* single-query latency: ``latency_queries`` queries searched one at a time, median and p99;
* 10-recall@10 against the exact top-100 of ``pqkit.IndexFlat`` (cached);
* index memory in bytes.

faiss picks its SIMD level once per process from ``FAISS_SIMD_LEVEL`` (faiss-cpu >= 1.13 is a
single dynamic-dispatch build). So the parent runs pqkit, scikit-learn and the notebook baseline
itself and starts one child per faiss level (``--faiss-child``, env ``FAISS_SIMD_LEVEL=<level>``);
every faiss row records the level ``faiss.SIMDConfig.get_level_name()`` reported. The parent
never imports faiss.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import adapters  # noqa: E402
import datasets  # noqa: E402


def grid(spec: dict) -> list[dict]:
    """Cartesian product of a dict of lists (scalars count as one-element lists)."""
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """k-recall@k: fraction of the true k nearest ids found among the returned k."""
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth))
    return hits / (len(found) * k)


def measure(algo, queries, truth, k, batch_size, repeats, latency_queries) -> dict:
    times = []
    found = None
    for _ in range(repeats):
        start = time.perf_counter()
        parts = [algo.query(queries[i:i + batch_size], k) for i in range(0, len(queries), batch_size)]
        times.append(time.perf_counter() - start)
        found = found if found is not None else np.concatenate(parts)
    batch_seconds = float(np.median(times))
    latencies = []
    for i in range(min(latency_queries, len(queries))):
        one = queries[i:i + 1]
        start = time.perf_counter()
        algo.query(one, k)
        latencies.append(time.perf_counter() - start)
    return {
        "n_queries": len(queries),
        "batch_seconds_all": times,
        "qps": len(queries) / batch_seconds,
        "latency_ms_median": 1e3 * float(np.median(latencies)),
        "latency_ms_p99": 1e3 * float(np.percentile(latencies, 99)),
        "latency_queries": len(latencies),
        "recall_10_at_10": recall_at(found, truth, 10),
    }


def run_algorithms(config: dict, data, algorithm_specs: list[dict], log) -> list[dict]:
    rows = []
    k = config.get("k", 10)
    batch_size = config.get("batch_size", 1000)
    repeats = config.get("repeats", 3)
    latency_queries = config.get("latency_queries", 200)
    threads_list = config.get("threads", [1])
    build_threads = config.get("build_threads", max(threads_list))
    for spec in algorithm_specs:
        for build in grid(spec.get("build", {})):
            algo = adapters.make_adapter(spec["adapter"], **build)
            algo.set_threads(build_threads)
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # small-mode training-size warnings
                    algo.fit(data.base)
            except Exception as error:  # a config the library rejects: record it, keep going
                log(f"  {spec['adapter']} {build}: build failed: {error!r}")
                rows.append({"dataset": data.name, "algorithm": spec["adapter"], "build_params": build,
                             "error": repr(error)})
                continue
            build_seconds = time.perf_counter() - start
            n_max = spec.get("max_queries", config.get("max_queries"))
            queries = data.queries[:n_max] if n_max else data.queries
            truth = data.ground_truth[:len(queries)]
            for threads in spec.get("threads", threads_list):
                algo.set_threads(threads)
                for query_params in grid(spec.get("query", {})):
                    algo.set_query_params(**query_params)
                    result = measure(algo, queries, truth, k, batch_size, repeats,
                                     spec.get("latency_queries", latency_queries))
                    row = {"dataset": data.name, **algo.describe(), "build_seconds": build_seconds,
                           **algo.fit_seconds,
                           "build_threads": build_threads, "memory_bytes": algo.memory_bytes(),
                           "k": k, "batch_size": batch_size, **result}
                    rows.append(row)
                    log(f"  {row['algorithm']:8s} {row.get('simd_level', ''):10s} {build} {query_params} "
                        f"t={threads} qps={row['qps']:.0f} lat={row['latency_ms_median']:.3f}ms "
                        f"R@10={row['recall_10_at_10']:.3f}")
    return rows


def machine_info() -> dict:
    import pqkit

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "n_cpus": os.cpu_count(), "numpy": np.__version__,
        "pqkit_version": getattr(pqkit, "__version__", "?"), "pqkit_simd_level": pqkit.simd_level(),
        "pqkit_available_simd_levels": pqkit.available_simd_levels(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def faiss_child(args) -> int:
    """Run only the faiss algorithms at the SIMD level this process was started with."""
    import faiss

    config = json.loads(Path(args.config).read_text())
    data = datasets.load(config["dataset"], small=args.small)
    specs = [s for s in config["algorithms"] if s["adapter"] == "faiss"]
    rows = run_algorithms(config, data, specs, lambda m: print(m, file=sys.stderr, flush=True))
    for row in rows:
        row["faiss_simd_requested"] = os.environ.get("FAISS_SIMD_LEVEL", "")
    info = {"faiss_version": faiss.__version__, "faiss_simd_level": faiss.SIMDConfig.get_level_name(),
            "faiss_compile_options": faiss.get_compile_options()}
    Path(args.faiss_child).write_text(json.dumps({"info": info, "rows": rows}))
    return 0


def run_config(config_path: Path, small: bool, out: Path | None) -> Path:
    config = json.loads(config_path.read_text())
    name = config.get("name", config_path.stem) + ("-small" if small else "")
    out = out or BENCH_DIR / "results" / "raw" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] loading {config['dataset']} (small={small})", flush=True)
    data = datasets.load(config["dataset"], small=small)
    print(f"[{name}] base {data.base.shape}, queries {data.queries.shape}", flush=True)
    raw = {"config": config, "config_path": str(config_path), "small": small, "machine": machine_info(),
           "faiss": {}, "rows": []}

    def save():
        out.write_text(json.dumps(raw, indent=1))

    local = [s for s in config["algorithms"] if s["adapter"] != "faiss"]
    raw["rows"] += run_algorithms(config, data, local, lambda m: print(m, flush=True))
    save()
    if any(s["adapter"] == "faiss" for s in config["algorithms"]):
        build_cache = tempfile.TemporaryDirectory(prefix="pqkit-bench-faiss-")
        for level in config.get("faiss_simd_levels", ["AVX512_SPR", "AVX2", "NONE"]):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
                child_out = Path(handle.name)
            command = [sys.executable, __file__, "--config", str(config_path), "--faiss-child", str(child_out)]
            command += ["--small"] if small else []
            env = {**os.environ, "FAISS_SIMD_LEVEL": level,
                   adapters.FaissIndex.build_cache_env: build_cache.name}
            print(f"[{name}] faiss at FAISS_SIMD_LEVEL={level}", flush=True)
            result = subprocess.run(command, env=env)
            if result.returncode != 0:
                print(f"[{name}] faiss child for {level} failed (exit {result.returncode}); skipped", flush=True)
                raw["faiss"][level] = {"error": f"exit {result.returncode}"}
                continue
            child = json.loads(child_out.read_text())
            child_out.unlink()
            raw["faiss"][level] = child["info"]
            if child["info"]["faiss_simd_level"] != level:
                print(f"[{name}] note: asked faiss for {level}, it ran {child['info']['faiss_simd_level']}")
            raw["rows"] += child["rows"]
            save()
        build_cache.cleanup()
    save()
    print(f"[{name}] wrote {len(raw['rows'])} rows to {out}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="a JSON config under bench/configs/")
    parser.add_argument("--all", action="store_true", help="run every bench/configs/*.json")
    parser.add_argument("--small", action="store_true", help="10k base / 500 queries smoke run")
    parser.add_argument("--out", type=Path, help="raw JSON path (default bench/results/raw/<name>.json)")
    parser.add_argument("--faiss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.faiss_child:
        return faiss_child(args)
    if args.all:
        if args.out:
            parser.error("--out names one file; with --all the defaults are used")
        for path in sorted((BENCH_DIR / "configs").glob("*.json")):
            run_config(path, args.small, None)
        return 0
    if not args.config:
        parser.error("give --config PATH or --all")
    run_config(args.config, args.small, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
