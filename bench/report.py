"""Tables and plots from the raw JSON rows of ``bench/run.py`` (nothing is measured here).

    python bench/report.py                              # every bench/results/raw/*.json
    python bench/report.py bench/results/raw/fashion.json [--out-dir bench/results]

Per dataset it writes ``<out-dir>/<dataset>.md`` and, when matplotlib is importable,
``<out-dir>/<dataset>.png`` (10-recall@10 vs batch QPS, log scale).

Matching: a pqkit row and a faiss row are compared when they have the same index family (flat,
pq, ivfpq, and the 4-bit ones: pqkit ``IVF,PQMx4`` vs faiss ``IndexIVFPQFastScan``), the same
nlist, M, nbits, nprobe and thread count. faiss ran at every SIMD level; per faiss variant the
table takes its *best* level (highest batch QPS; lowest median latency, chosen separately), not
its default.

* QPS ratio = pqkit batch QPS / faiss best batch QPS (> 1: pqkit faster).
* latency ratio = faiss best median single-query latency / pqkit median latency (> 1: pqkit
  faster).
* The summary line per family and thread count gives the median of those ratios.
* The notebook ratio = notebook median single-query latency / pqkit median latency at the same
  nlist, M, nbits, nprobe (1 thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
MATCH_KEYS = ("nlist", "M", "nbits")


def load_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        raw = json.loads(Path(path).read_text())
        for row in raw["rows"]:
            if "error" in row:
                continue
            row["_machine"] = raw["machine"]
            row["_faiss"] = raw.get("faiss", {})
            rows.append(row)
    return rows


def match_key(row) -> tuple:
    build = row["build_params"]
    family = row["family"]
    return (family, *(build.get(k) if family != "flat" else None for k in MATCH_KEYS),
            row["query_params"].get("nprobe"), row["threads"])


def sort_key(row) -> tuple:
    return tuple(-1 if v is None else v for v in match_key(row))


def variant_label(row) -> str:
    build = row["build_params"]
    extra = ""
    if build.get("refine"):
        extra = f"+Refine(k_factor={row['query_params'].get('k_factor', 1)})"
    names = {"flat": "IndexFlatL2", "pq": "IndexPQ", "pq-4bit": "IndexPQ", "ivfpq": "IndexIVFPQ"}
    kind = "IndexIVFPQFastScan" if build.get("kind") == "ivfpq-fastscan" else names.get(row["family"], "IndexIVFPQ")
    return kind + extra


def best_faiss(rows) -> dict:
    """(match key, variant) -> {'qps': best row by QPS, 'lat': best row by latency}."""
    groups = defaultdict(list)
    for row in rows:
        if row["algorithm"] == "faiss":
            groups[(match_key(row), variant_label(row))].append(row)
    return {key: {"qps": max(g, key=lambda r: r["qps"]), "lat": min(g, key=lambda r: r["latency_ms_median"])}
            for key, g in groups.items()}


def params_text(key) -> str:
    family, nlist, M, nbits, nprobe, _ = key
    parts = [f"nlist={nlist}" if nlist else "", f"M={M}" if M else "", f"nbits={nbits}" if M else "",
             f"nprobe={nprobe}" if nprobe else ""]
    return " ".join(p for p in parts if p) or "-"


def dataset_report(name: str, rows: list[dict]) -> str:
    machine = rows[0]["_machine"]
    faiss_info = rows[0]["_faiss"]
    levels = ", ".join(f"{lvl} -> {info.get('faiss_simd_level', info.get('error'))}" for lvl, info in faiss_info.items())
    version = next((i.get("faiss_version") for i in faiss_info.values() if "faiss_version" in i), "?")
    lines = [
        f"# {name}",
        "",
        f"Machine: {machine['cpu']} ({machine['n_cpus']} CPUs), {machine['platform']}; pqkit "
        f"{machine['pqkit_version']} at SIMD level `{machine['pqkit_simd_level']}`; faiss {version}, "
        f"levels run (requested -> reported): {levels or 'none'}.",
        f"Queries: {rows[0]['n_queries']} (batch size {rows[0]['batch_size']}, median of "
        f"{len(rows[0]['batch_seconds_all'])} runs); latency: median over {rows[0]['latency_queries']} "
        "single-query calls. Ratios > 1 mean pqkit is faster.",
        "",
        "| family | params | threads | faiss variant | pqkit QPS | faiss best QPS (level) | QPS ratio | "
        "pqkit lat ms | faiss best lat ms (level) | lat ratio | recall pqkit | recall faiss |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = best_faiss(rows)
    ratios = defaultdict(lambda: {"qps": [], "lat": []})
    for row in sorted((r for r in rows if r["algorithm"] == "pqkit"), key=sort_key):
        key = match_key(row)
        for (fkey, variant), fb in sorted(best.items(), key=lambda item: item[0][1]):
            if fkey != key:
                continue
            fq, fl = fb["qps"], fb["lat"]
            qps_ratio = row["qps"] / fq["qps"]
            lat_ratio = fl["latency_ms_median"] / row["latency_ms_median"]
            ratios[(key[0], key[-1], variant)]["qps"].append(qps_ratio)
            ratios[(key[0], key[-1], variant)]["lat"].append(lat_ratio)
            lines.append(
                f"| {key[0]} | {params_text(key)} | {key[-1]} | {variant} | {row['qps']:.0f} | "
                f"{fq['qps']:.0f} ({fq['simd_level']}) | {qps_ratio:.2f} | {row['latency_ms_median']:.3f} | "
                f"{fl['latency_ms_median']:.3f} ({fl['simd_level']}) | {lat_ratio:.2f} | "
                f"{row['recall_10_at_10']:.3f} | {fq['recall_10_at_10']:.3f} |")
    lines += ["", "Medians of the ratios:", "",
              "| family | threads | faiss variant | rows | median QPS ratio | median latency ratio |",
              "|---|---|---|---:|---:|---:|"]
    for (family, threads, variant), r in sorted(ratios.items(), key=lambda item: str(item[0])):
        lines.append(f"| {family} | {threads} | {variant} | {len(r['qps'])} | {statistics.median(r['qps']):.2f} | "
                     f"{statistics.median(r['lat']):.2f} |")

    pqkit_by_key = {match_key(r): r for r in rows if r["algorithm"] == "pqkit"}
    notebook_lines = []
    for row in rows:
        if row["algorithm"] != "notebook":
            continue
        mine = pqkit_by_key.get(match_key(row)[:-1] + (1,))
        if mine is None:
            continue
        notebook_lines.append(
            f"| {params_text(match_key(row))} | {row['latency_ms_median']:.3f} | {mine['latency_ms_median']:.3f} | "
            f"{row['latency_ms_median'] / mine['latency_ms_median']:.0f}x | {row['qps']:.1f} | {mine['qps']:.0f} | "
            f"{mine['qps'] / row['qps']:.0f}x | {row['recall_10_at_10']:.3f} | {mine['recall_10_at_10']:.3f} |")
    if notebook_lines:
        lines += ["", "Notebook `CustomIndexIVFPQ` (re-implemented in `bench/adapters.py`) vs pqkit, 1 thread:", "",
                  "| params | notebook lat ms | pqkit lat ms | latency ratio | notebook QPS | pqkit QPS | "
                  "QPS ratio | recall notebook | recall pqkit |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *notebook_lines]

    lines += ["", "All rows (raw values):", "",
              "| algorithm | SIMD | build | query | threads | build s | memory MB | QPS | lat ms | p99 ms | recall |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        build = {k: v for k, v in row["build_params"].items() if v is not None and k != "metric"}
        lines.append(
            f"| {row['algorithm']} | {row.get('simd_level', '-')} | {build} | {row['query_params'] or ''} | "
            f"{row['threads']} | {row['build_seconds']:.2f} | {row['memory_bytes'] / 1e6:.1f} | {row['qps']:.0f} | "
            f"{row['latency_ms_median']:.3f} | {row['latency_ms_p99']:.3f} | {row['recall_10_at_10']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(name: str, rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipped the plot {path} (the Markdown table is written)")
        return False
    series = defaultdict(list)
    for row in rows:
        label = f"{row['algorithm']} {row.get('simd_level', '')} {row['family']} t={row['threads']}"
        series[label].append((row["recall_10_at_10"], row["qps"]))
    fig, ax = plt.subplots(figsize=(9, 6))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("10-recall@10")
    ax.set_ylabel("queries per second (batch)")
    ax.set_title(name)
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="*", type=Path, help="raw JSON files (default bench/results/raw/*.json)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    paths = args.raw or sorted((BENCH_DIR / "results" / "raw").glob("*.json"))
    if not paths:
        parser.error("no raw results: run bench/run.py first")
    by_dataset = defaultdict(list)
    for row in load_rows(paths):
        by_dataset[row["dataset"]].append(row)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in by_dataset.items():
        text = dataset_report(name, rows)
        (args.out_dir / f"{name}.md").write_text(text)
        print(text)
        print(f"wrote {args.out_dir / (name + '.md')}")
        if plot(name, rows, args.out_dir / f"{name}.png"):
            print(f"wrote {args.out_dir / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
