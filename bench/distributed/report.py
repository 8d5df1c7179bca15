"""The table of a stored sharded-index benchmark (``bench/distributed/results/<name>.json``, written
by ``run.py``): measures nothing, so it can be rerun at any time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def table(result: dict) -> str:
    args = result["args"]
    lines = [f"### {result['name']}: n={args['n']:,}, d={args['d']}, IVF{args['nlist']},PQ{args['M']}x{args['nbits']}, "
             f"nprobe={args['nprobe']}, k={args['k']}, {args['n_queries']} queries, cluster CPUs "
             f"{result['cluster_cpus']:g}, {result['shard_cpus']:g} CPU per shard",
             "",
             "| index | by | shards | nodes | add (vectors/s) | per shard | batch QPS | vs local | identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        per_shard = row.get("add_vectors_per_s_per_shard")
        overhead = row.get("overhead_vs_local")
        lines.append(
            f"| {row['index']} | {row['by'] or ''} | {row['shards'] or ''} | {row.get('nodes', '')} | "
            f"{row['add_vectors_per_s']:,.0f} | {'' if per_shard is None else f'{per_shard:,.0f}'} | "
            f"{row['qps']:,.0f} | {'' if overhead is None else f'{overhead:.2f}x'} | "
            f"{'' if row['identical'] is None else ('yes' if row['identical'] else 'NO')} |")
    load = result["machine"]
    lines += ["", f"Load average at start/end: {load['loadavg_start'][0]:.2f} / {load['loadavg_end'][0]:.2f} "
              f"on {load['cpus']} CPUs; Ray {result['ray']}, pqkit {result['pqkit']}."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", help="result files (default: every results/*.json)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.results] or sorted((Path(__file__).parent / "results").glob("*.json"))
    for path in paths:
        print(table(json.loads(path.read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
