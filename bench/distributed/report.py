"""The tables of the stored sharded-index benchmarks (``bench/distributed/results/<name>.json``,
written by ``run.py`` and ``rates.py``), and ``--docs``: docs/scale.md rendered from
``scale_template.md`` with every measured figure drawn from those files. Measures nothing, so it
can be rerun at any time."""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent.parent / "docs" / "scale.md"


def table(result: dict) -> str:
    args = result["args"]
    lines = [f"### {result['name']}: n={args['n']:,}, d={args['d']}, IVF{args['nlist']},PQ{args['M']}x{args['nbits']}, "
             f"nprobe={args['nprobe']}, k={args['k']}, {args['n_queries']} queries, cluster CPUs "
             f"{result['cluster_cpus']:g}, {result['shard_cpus']:g} CPU per shard",
             "",
             "| index | by | shards | nodes | add (vectors/s) | per shard | batch QPS | vs local | vs local, 1 thread | identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        per_shard = row.get("add_vectors_per_s_per_shard")
        name = row["index"]
        if name == "local":
            name = f"local, {row['threads']} thread{'s' if row['threads'] > 1 else ''}" if "threads" in row else "local, all cores"
        cells = [f"{row[key]:.2f}x" if row.get(key) is not None else ""
                 for key in ("overhead_vs_local", "overhead_vs_local_1_thread")]
        lines.append(
            f"| {name} | {row['by'] or ''} | {row['shards'] or ''} | {row.get('nodes', '')} | "
            f"{row['add_vectors_per_s']:,.0f} | {'' if per_shard is None else f'{per_shard:,.0f}'} | "
            f"{row['qps']:,.0f} | {cells[0]} | {cells[1]} | "
            f"{'' if row['identical'] is None else ('yes' if row['identical'] else 'NO')} |")
    load = result["machine"]
    lines += ["", f"Load average at start/end: {load['loadavg_start'][0]:.2f} / {load['loadavg_end'][0]:.2f} "
              f"on {load['cpus']} CPUs; Ray {result['ray']}, pqkit {result['pqkit']}."]
    return "\n".join(lines)


def _rate(rates, what, threads=None):
    rows = [r for r in rates["rows"] if r["what"] == what and (threads is None or r["threads"] == threads)]
    if not rows:
        raise SystemExit(f"report.py: error: rates.json has no {what!r} row"
                         f"{'' if threads is None else f' at {threads} threads'}; rerun rates.py")
    return rows[0]


def scale_values(bench: dict, tenm: dict, rates: dict) -> dict:
    """Every figure docs/scale.md draws from the stored results, formatted."""
    cpus = rates["machine"]["cpus"]
    km1, kma = _rate(rates, "kmeans_iteration", 1), _rate(rates, "kmeans_iteration", cpus)
    coarse = _rate(rates, "coarse_search", 1)
    train_flop = 10 * 2.56e6 * 65536 * 128 * 2
    by = {row["by"]: row for row in tenm["rows"] if row["index"] == "sharded"}
    shard_cpus = tenm["shard_cpus"]
    core_id = by["id"]["add_vectors_per_s_per_shard"] / shard_cpus
    core_list = by["list"]["add_vectors_per_s_per_shard"] / shard_cpus
    core_65536 = core_id * 4096 / 65536
    load, save, sha = _rate(rates, "load"), _rate(rates, "save"), _rate(rates, "sha256")
    shard_gib = 2.75e9 / 2**30
    overheads = [row["overhead_vs_local_1_thread"] for row in bench["rows"]
                 if row.get("overhead_vs_local_1_thread") is not None and row["shards"] == 1]
    overhead_1t = (f"{min(overheads):.2f}-{max(overheads):.2f}x" if overheads
                   else "a factor not yet measured (rerun run.py for the 1-thread local row)")
    return {
        "cpus": str(cpus),
        "kmeans_1t": f"{km1['gflops']:.0f}", "kmeans_all": f"{kma['gflops']:.0f}",
        "kmeans_scaling": f"{kma['gflops'] / km1['gflops']:.2f}",
        "kmeans_shape": "{:,} x {} into {:,} centroids".format(km1["shape"][0], km1["shape"][2], km1["shape"][1]),
        "train_min": f"{train_flop / (16 * km1['gflops'] * 1e9) / 60:.0f}",
        "coarse_ms": f"{coarse['ms_per_query']:.2f}", "coarse_1t": f"{coarse['gflops']:.0f}",
        "coarse_total_ms": f"{16 * coarse['ms_per_query']:.1f}",
        "t_shard_4096": f"{by['id']['add_vectors_per_s_per_shard']:,.0f}",
        "t_core_4096": f"{core_id:,.0f}", "t_core_4096_list": f"{core_list:,.0f}",
        "t_core_65536": f"{core_65536:,.0f}", "t_shard_65536": f"{4 * core_65536:,.0f}",
        "build_h_id": f"{1e9 / (64 * core_65536) / 3600:.1f}",
        "build_h_list": f"{1e9 / (64 * core_65536 * core_list / core_id) / 3600:.1f}",
        "t_core_kmeans": f"{km1['gflops'] * 1e9 / (65536 * 128 * 2):,.0f}",
        "list_vs_id": f"{core_list / core_id:.2f}",
        "restore_s": f"{shard_gib * load['seconds_per_gib']:.0f}", "load_s_gib": f"{load['seconds_per_gib']:.1f}",
        "file_mib": f"{load['bytes'] / 2**20:.0f}",
        "save_s_gib": f"{save['seconds_per_gib']:.1f}", "save_s": f"{shard_gib * save['seconds_per_gib']:.0f}",
        "sha_s": f"{44e9 / 2**30 * sha['seconds_per_gib']:.0f}", "sha_s_gib": f"{sha['seconds_per_gib']:.2f}",
        "overhead_1t": overhead_1t,
        "tables": table(bench) + "\n\n" + table(tenm),
    }


def render_docs(results: Path = RESULTS, template: Path = HERE / "scale_template.md") -> str:
    """docs/scale.md's text: the template with the stored results' figures."""
    loaded = {}
    for name in ("bench", "synthetic-10m", "rates"):
        path = results / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"report.py: error: {path} is missing; run the command for it in {template.name}")
        loaded[name] = json.loads(path.read_text())
    values = scale_values(loaded["bench"], loaded["synthetic-10m"], loaded["rates"])
    return string.Template(template.read_text()).substitute(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", help="result files (default: every run.py result in results/)")
    parser.add_argument("--docs", action="store_true", help="write docs/scale.md from the stored results")
    args = parser.parse_args(argv)
    if args.docs:
        DOCS.write_text(render_docs())
        print(f"wrote {DOCS}")
        return 0
    paths = [Path(p) for p in args.results] or [p for p in sorted(RESULTS.glob("*.json")) if p.stem != "rates"]
    for path in paths:
        print(table(json.loads(path.read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
