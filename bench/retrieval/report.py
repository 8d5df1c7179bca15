"""Step 3 of the retrieval timing table: tables and the recall-vs-speed plot from the raw JSON.

    python bench/retrieval/report.py [--readme]

Reads ``bench/retrieval/results/{fashion,glove}.json`` (written by ``run.py``), writes
``results/retrieval.md`` (summary in the seed's layout plus every row), ``results/summary.csv``
and ``results/recall_vs_speed.png``; with ``--readme`` replaces the block between
``<!-- retrieval:start -->`` and ``<!-- retrieval:end -->`` in README.md with the summary.

Summary rule (stated under the table): one nprobe per index family, the same for pqkit and faiss:
IVF-Flat at the smallest nprobe where both reach 10-recall@10 >= 0.9; IVF-PQ at the smallest nprobe
where both are within 0.005 of the best recall their codes allow (the plateau).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent.parent / "README.md"
DATASETS = {"fashion": "Fashion-MNIST, EfficientNet-Lite0", "glove": "GloVe-50"}
METHODS = ["numpy-brute", "pqkit-Flat", "faiss-Flat", "pqkit-IVF-Flat", "faiss-IVF-Flat", "pqkit-IVF-PQ",
           "faiss-IVF-PQ"]
LABELS = {"numpy-brute": "NumPy brute-force cosine", "pqkit-Flat": "pqkit Flat", "faiss-Flat": "faiss Flat",
          "pqkit-IVF-Flat": "pqkit IVF-Flat", "faiss-IVF-Flat": "faiss IVF-Flat", "pqkit-IVF-PQ": "pqkit IVF-PQ",
          "faiss-IVF-PQ": "faiss IVF-PQ"}


def load() -> dict:
    out = {}
    for name in DATASETS:
        path = RESULTS / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    if not out:
        raise SystemExit(f"no results under {RESULTS}; run bench/retrieval/run.py first")
    return out


def _reaches(rows: list, method: str, nprobe: int) -> bool:
    """Whether ``method`` at ``nprobe`` satisfies the summary rule of its family."""
    same = [r for r in rows if r["method"] == method]
    row = next((r for r in same if r["nprobe"] == nprobe), None)
    if row is None:
        return True  # a library that was not run does not block the other
    if "IVF-Flat" in method:
        return row["recall"] >= 0.9
    return row["recall"] >= max(r["recall"] for r in same) - 0.005


def pick(rows: list, method: str):
    """The summary row of one method: one nprobe per index family, shared by pqkit and faiss
    (see the module docstring)."""
    candidates = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nprobe"] or 0)
    if not candidates:
        return None
    if candidates[0]["nprobe"] is None:
        return candidates[0]
    family = method.split("-", 1)[1]
    both = [f"pqkit-{family}", f"faiss-{family}"]
    for row in candidates:
        if all(_reaches(rows, m, row["nprobe"]) for m in both):
            return row
    return candidates[-1]


def summary_table(results: dict) -> str:
    names = list(results)
    head = "| method | " + " | ".join(
        f"{DATASETS[n]}: ms/query | recall@10" + (" | mAP@10" if "map_at_k" in results[n]["rows"][0] else "")
        for n in names) + " |"
    cols = sum(3 if "map_at_k" in results[n]["rows"][0] else 2 for n in names)
    lines = [head, "|---|" + "---:|" * cols]
    extraction = []
    for n in names:
        ms = results[n]["meta"].get("extraction_ms_per_image")
        cpu = results[n]["meta"].get("extraction_cpu_ms_per_image")
        extraction.append(f"{ms:.2f} wall, {cpu['cpu_ms']:.2f} CPU (per image, {results[n]['meta']['image_size']} px)"
                          if ms else "n/a")
        extraction.append("")
        if "map_at_k" in results[n]["rows"][0]:
            extraction.append("")
    lines.append("| feature extraction | " + " | ".join(extraction) + " |")
    for method in METHODS:
        cells = []
        for n in names:
            row = pick(results[n]["rows"], method)
            if row is None:
                cells += ["-", "-"] + (["-"] if "map_at_k" in results[n]["rows"][0] else [])
                continue
            setting = f" (nprobe {row['nprobe']})" if row["nprobe"] else ""
            cells += [f"{row['cpu_median_ms']:.3f}{setting}", f"{row['recall']:.3f}"]
            if "map_at_k" in row:
                cells.append(f"{row['map_at_k']:.3f}")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(result: dict) -> str:
    has_map = "map_at_k" in result["rows"][0]
    lines = ["| method | index | nprobe | 10-recall@10 | CPU ms (median) | wall ms (median) | wall ms (p90) | "
             "batch CPU ms/query | batch wall ms/query | memory MB | build s"
             + (" | P@10 | mAP@10" if has_map else "") + " |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:" + ("|---:|---:" if has_map else "") + "|"]
    for r in result["rows"]:
        line = (f"| {r['method']} | {r['index']} | {r['nprobe'] or ''} | {r['recall']:.3f} | {r['cpu_median_ms']:.3f} | "
                f"{r['latency_median_ms']:.3f} | {r['latency_p90_ms']:.3f} | {r['batch_cpu_ms_per_query']:.3f} | "
                f"{r['batch_ms_per_query']:.3f} | {r['memory_mb']:.1f} | {r['build_s']:.1f}")
        if has_map:
            line += f" | {r['precision_at_k']:.3f} | {r['map_at_k']:.3f}"
        lines.append(line + " |")
    return "\n".join(lines)


def describe(results: dict) -> str:
    parts = []
    for n, res in results.items():
        m = res["meta"]
        parts.append(f"{DATASETS[n]}: gallery {m['gallery']} (n={m['n']}, d={m['d']}), queries {m['queries']}, "
                     f"{m['n_latency']} timed one call each; run {m['date_utc']} UTC, load average "
                     f"{m['load_average_at_start']:.1f} at start")
    meta = next(iter(results.values()))["meta"]
    return ("; ".join(parts) + f". pqkit {meta['pqkit']} ({meta['simd']}), faiss-cpu {meta['faiss']}, one thread "
            f"per library, {meta['cpus']} CPUs. Timings were taken under load from other work on a shared 2-core VM: "
            "compare rows of one data set (measured in one process), not absolute numbers.")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    styles = {"pqkit": "-", "faiss": "--", "numpy": ":"}
    colours = {"Flat": "tab:gray", "IVF-Flat": "tab:blue", "IVF-PQ": "tab:orange", "brute": "black"}
    for ax, (n, res) in zip(axes[0], results.items()):
        for method in METHODS:
            rows = sorted((r for r in res["rows"] if r["method"] == method), key=lambda r: r["nprobe"] or 0)
            if not rows:
                continue
            library, family = method.split("-", 1)
            ax.plot([r["cpu_median_ms"] for r in rows], [r["recall"] for r in rows], styles[library],
                    marker="o" if library != "faiss" else "s", color=colours[family], label=LABELS[method],
                    markersize=4)
            for r in rows:
                if r["nprobe"] in (1, 8, 64):
                    ax.annotate(str(r["nprobe"]), (r["cpu_median_ms"], r["recall"]), fontsize=7,
                                textcoords="offset points", xytext=(3, -9))
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (median CPU time of single-query calls, 1 thread; log)")
        ax.set_ylabel("10-recall@10 vs exact")
        ax.set_title(f"{DATASETS[n]} (n={res['meta']['n']}, d={res['meta']['d']})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Recall vs speed (numbers at points: nprobe)\nCPU time per query, measured under load on a "
                 "shared 2-core VM", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="retrieval timing table: report")
    parser.add_argument("--readme", action="store_true", help="update the README block")
    args = parser.parse_args(argv)
    results = load()
    summary = summary_table(results)
    rule = ("ms/query: median over single-query calls (one query per call, k=10) of the process CPU time, which "
            "on a busy machine is closer to an idle machine's latency than wall time (the wall-clock medians, "
            "p90 and batch times are in the full table). Feature extraction: wall time per image of embedding "
            "all 70,000 images (resizing and the network, batch 256, torch on 2 threads), and process CPU time "
            "per image (both threads summed) measured again on 1,024 test images. One nprobe per index family, "
            "the same for both libraries: IVF-Flat at the smallest nprobe where both reach 10-recall@10 >= 0.9, "
            "IVF-PQ at the smallest nprobe where both are within 0.005 of their best recall. Recall and mAP@10 "
            "use all queries.")
    text = ["# Retrieval timing table", "", describe(results), "", summary, "", rule, "",
            "![recall vs speed](recall_vs_speed.png)", ""]
    for n, res in results.items():
        text += [f"## {DATASETS[n]}", "", detail_table(res), ""]
    (RESULTS / "retrieval.md").write_text("\n".join(text))
    with open(RESULTS / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "method", "index", "nprobe", "recall", "cpu_median_ms", "latency_median_ms",
                         "latency_p90_ms", "batch_cpu_ms_per_query", "batch_ms_per_query", "memory_mb", "build_s",
                         "precision_at_k", "map_at_k"])
        for n, res in results.items():
            for r in res["rows"]:
                writer.writerow([n, r["method"], r["index"], r["nprobe"], r["recall"], r["cpu_median_ms"],
                                 r["latency_median_ms"], r["latency_p90_ms"], r["batch_cpu_ms_per_query"],
                                 r["batch_ms_per_query"], r["memory_mb"], r["build_s"],
                                 r.get("precision_at_k"), r.get("map_at_k")])
    plot(results, RESULTS / "recall_vs_speed.png")
    print(summary)
    if args.readme:
        readme = README.read_text()
        start, end = "<!-- retrieval:start -->", "<!-- retrieval:end -->"
        if start not in readme or end not in readme:
            raise SystemExit(f"README.md has no {start} ... {end} block")
        block = "\n".join([start, describe(results), "", summary, "", rule, "",
                           "![Recall vs speed](bench/retrieval/results/recall_vs_speed.png)", "",
                           "All rows: [bench/retrieval/results/retrieval.md](bench/retrieval/results/retrieval.md).",
                           end])
        before, rest = readme.split(start, 1)
        README.write_text(before + block + rest.split(end, 1)[1])
        print("README.md updated")


if __name__ == "__main__":
    main()
