"""Tables and plots from the raw JSON rows of ``bench/run.py`` (nothing is measured here).

    python bench/report.py                              # every bench/results/raw/*.json
    python bench/report.py bench/results/raw/fashion.json [--out-dir bench/results]
    python bench/report.py --readme                     # also put summary.md into README.md

Per dataset it writes ``<out-dir>/<dataset>.md`` and, when matplotlib is importable,
``<out-dir>/<dataset>.png``; for all datasets together ``<out-dir>/summary.md``, the README
snippet. ``--readme`` replaces the text between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` in the README with that snippet.

Two comparisons of pqkit with faiss, both "> 1: pqkit faster":

**At equal recall** (per family, thread count and mode). For a recall target t, each library
takes its fastest row of the family whose 10-recall@10 >= t, over all its build and query
parameters (faiss also over its SIMD levels and variants, refine and ``k_factor`` included).
The ratio is pqkit's speed over faiss's: batch QPS ratio = pqkit QPS / faiss QPS; latency ratio
= faiss median single-query latency / pqkit's (each library picks its lowest-latency row
separately). A target is listed when at least one library reaches it; a lower target whose chosen
rows equal those of the next higher one is left out, since its ratio is the same.

**At identical parameters**. A pqkit row and a faiss row are compared when they have the same
index family (flat, pq, ivfpq, and the 4-bit ones: pqkit ``IVF,PQMx4`` vs faiss
``IndexIVFPQFastScan``), the same nlist, M, nbits, nprobe and thread count. faiss ran at every
SIMD level; per faiss variant the table takes its *best* level (highest batch QPS; lowest median
latency, chosen separately), not its default.

* QPS ratio = pqkit batch QPS / faiss best batch QPS.
* latency ratio = faiss best median single-query latency / pqkit median latency.
* The summary line per family and thread count gives the median of those ratios.
* The notebook ratio = notebook median single-query latency / pqkit median latency at the same
  nlist, M, nbits, nprobe (1 thread).

The summary (``summary.md``) gives, per dataset and family at 1 thread, both equal-recall ratios
at the highest target both libraries reach, with the recall of each chosen row.

The plot has two panels at 1 thread: 10-recall@10 against batch QPS and against median
single-query latency (both log scale), one line per library and index variant, drawn through
its Pareto frontier (the rows no other row of that line beats on both recall and speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR.parent / "README.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
MATCH_KEYS = ("nlist", "M", "nbits")
RECALL_TARGETS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
# 10-recall@10 is a ratio of integers; a row exactly at the target must count as reaching it.
RECALL_TOLERANCE = 1e-9
COMPARED = ("pqkit", "faiss")
FAMILY_LABELS = {"flat": "Flat", "pq": "PQ 8-bit", "pq-4bit": "PQ 4-bit", "ivfpq": "IVF-PQ 8-bit",
                 "ivfpq-4bit": "IVF-PQ 4-bit"}


class Mode(NamedTuple):
    """One way of measuring speed: a column of the raw rows and which direction is better."""

    title: str
    column: str
    ratio_label: str
    axis_label: str
    value: Callable[[dict], float]
    higher_is_better: bool
    number_format: str


MODES = {
    "qps": Mode("batch QPS", "QPS", "QPS ratio", "queries per second (batch)", lambda row: row["qps"], True, "{:.0f}"),
    "latency": Mode("single-query median latency", "lat ms", "latency ratio", "median single-query latency (ms)",
                    lambda row: row["latency_ms_median"], False, "{:.3f}"),
}


def load_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        raw = json.loads(Path(path).read_text())
        if "config" not in raw:  # not a run.py result (e.g. spot_check.json)
            continue
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


def family_order(family: str) -> tuple:
    """Sort key: flat, PQ, IVF-PQ (8-bit before 4-bit), then anything unknown by name."""
    order = list(FAMILY_LABELS)
    return (order.index(family) if family in order else len(order), family)


def variant_label(row) -> str:
    build = row["build_params"]
    extra = ""
    if build.get("refine"):
        extra = f"+Refine(k_factor={row['query_params'].get('k_factor', 1)})"
    names = {"flat": "IndexFlatL2", "pq": "IndexPQ", "pq-4bit": "IndexPQ", "ivfpq": "IndexIVFPQ"}
    kind = "IndexIVFPQFastScan" if build.get("kind") == "ivfpq-fastscan" else names.get(row["family"], "IndexIVFPQ")
    return kind + extra


def series_label(row) -> str:
    """The plot line a row belongs to: library and index variant, without search parameters."""
    build = row["build_params"]
    if row["algorithm"] == "pqkit":
        return f"pqkit {FAMILY_LABELS.get(row['family'], row['family'])}" + (" + refine" if build.get("refine") else "")
    if row["algorithm"] == "faiss":
        kind = variant_label(row).split("+")[0]
        bits = " 4-bit" if build.get("nbits") == 4 and build.get("kind") in ("pq", "ivfpq") else ""
        return f"faiss {kind}{bits}" + (" + IndexRefineFlat" if build.get("refine") else "")
    if row["algorithm"] == "sklearn":
        return "scikit-learn brute force"
    if row["algorithm"] == "notebook":
        return "notebook IVF-PQ (Python)"
    return f"{row['algorithm']} {row['family']}"


def config_text(row) -> str:
    """What a chosen row ran: pqkit's factory string or faiss's variant, parameters and level."""
    nprobe = row["query_params"].get("nprobe")
    if row["algorithm"] == "pqkit":
        k_factor = row["query_params"].get("k_factor")
        return row["factory"] + (f" nprobe={nprobe}" if nprobe else "") + (f" k_factor={k_factor}" if k_factor else "")
    params = params_text(match_key(row))
    return f"{variant_label(row)}{'' if params == '-' else ' ' + params} ({row['simd_level']})"


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


# --------------------------------------------------------------------------------------------
# Equal recall


def reaching(rows: list[dict], target: float) -> list[dict]:
    """The rows whose 10-recall@10 reaches ``target``."""
    return [row for row in rows if row["recall_10_at_10"] >= target - RECALL_TOLERANCE]


def fastest(rows: list[dict], mode: Mode, target: float) -> dict | None:
    """The fastest row (by ``mode``) whose 10-recall@10 reaches ``target``; None if none does."""
    candidates = reaching(rows, target)
    if not candidates:
        return None
    pick = max if mode.higher_is_better else min
    return pick(candidates, key=mode.value)


def speed_ratio(pqkit_row: dict, faiss_row: dict, mode: Mode) -> float:
    """pqkit's speed over faiss's (> 1: pqkit faster): a QPS ratio or an inverse latency ratio."""
    ours, theirs = mode.value(pqkit_row), mode.value(faiss_row)
    return ours / theirs if mode.higher_is_better else theirs / ours


def compared_groups(rows: list[dict]) -> dict:
    """(family, threads) -> {'pqkit': rows, 'faiss': rows}, families in display order."""
    groups = defaultdict(lambda: {library: [] for library in COMPARED})
    for row in rows:
        if row["algorithm"] in COMPARED:
            groups[(row["family"], row["threads"])][row["algorithm"]].append(row)
    return dict(sorted(groups.items(), key=lambda item: (family_order(item[0][0]), item[0][1])))


def equal_recall(rows: list[dict], targets) -> dict[str, list[dict]]:
    """Per mode, one record per (family, threads, target): the rows each library chose and the ratio.

    Returns ``{mode name: [{'family', 'threads', 'target', 'pqkit', 'faiss', 'ran', 'ratio'}]}``,
    where ``pqkit``/``faiss`` is the chosen row or None, ``ran`` says per library whether it has
    any row of that family and thread count, and ``ratio`` is None unless both rows exist.
    """
    tables = {name: [] for name in MODES}
    for (family, threads), by_library in compared_groups(rows).items():
        for name, mode in MODES.items():
            records, previous = [], None
            ran = {lib: bool(by_library[lib]) for lib in COMPARED}
            for target in sorted(targets, reverse=True):
                chosen = {lib: fastest(by_library[lib], mode, target) for lib in COMPARED}
                if all(row is None for row in chosen.values()):
                    continue
                if previous is not None and all(chosen[lib] is previous[lib] for lib in COMPARED):
                    continue
                previous = chosen
                ratio = None if None in chosen.values() else speed_ratio(chosen["pqkit"], chosen["faiss"], mode)
                records.append({"family": family, "threads": threads, "target": target, **chosen, "ran": ran,
                                "ratio": ratio})
            tables[name] += reversed(records)
    return tables


def equal_recall_lines(tables: dict[str, list[dict]]) -> list[str]:
    lines = []
    for name, records in tables.items():
        mode = MODES[name]
        col = mode.column
        lines += ["", f"### {mode.title}", "",
                  f"| family | threads | recall >= | pqkit {col} | pqkit recall | pqkit config | faiss {col} | "
                  f"faiss recall | faiss config (level) | {mode.ratio_label} |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---|---:|"]
        for record in records:
            cells = []
            for library in COMPARED:
                row = record[library]
                missing = "not reached" if record["ran"][library] else "not run"
                cells += ([missing, "", ""] if row is None else
                          [mode.number_format.format(mode.value(row)), f"{row['recall_10_at_10']:.3f}",
                           config_text(row)])
            ratio = "-" if record["ratio"] is None else f"{record['ratio']:.2f}"
            lines.append(f"| {FAMILY_LABELS.get(record['family'], record['family'])} | {record['threads']} | "
                         f"{record['target']:g} | {' | '.join(cells)} | {ratio} |")
    return lines


def headline(rows: list[dict], targets, threads: int = 1) -> list[dict]:
    """Per family at ``threads``: the highest target both libraries reach and, per mode, the pick there.

    Returns ``[{'family', 'target' (None if no common target), 'best_recall': {library: recall},
    mode name: (pqkit row, faiss row, ratio)}]``, the mode entries only when there is a target.
    """
    out = []
    for (family, group_threads), by_library in compared_groups(rows).items():
        if group_threads != threads or not all(by_library.values()):
            continue
        common = [t for t in targets if all(reaching(by_library[lib], t) for lib in COMPARED)]
        entry = {"family": family, "target": max(common) if common else None,
                 "best_recall": {lib: max(r["recall_10_at_10"] for r in by_library[lib]) for lib in COMPARED}}
        if common:
            for name, mode in MODES.items():
                pqkit_row, faiss_row = (fastest(by_library[lib], mode, entry["target"]) for lib in COMPARED)
                entry[name] = (pqkit_row, faiss_row, speed_ratio(pqkit_row, faiss_row, mode))
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------
# Per-dataset report


def header_lines(name: str, rows: list[dict]) -> list[str]:
    machine = rows[0]["_machine"]
    # the raw file that ran faiss (a dataset may merge several, e.g. a pqkit-only supplement)
    faiss_info = next((r["_faiss"] for r in rows if r["_faiss"]), {})
    levels = ", ".join(f"{lvl} -> {info.get('faiss_simd_level', 'not run (' + str(info.get('error')) + ')')}"
                       for lvl, info in faiss_info.items())
    version = next((i.get("faiss_version") for i in faiss_info.values() if "faiss_version" in i), "?")
    return [
        f"# {name}",
        "",
        f"Machine: {machine['cpu']} ({machine['n_cpus']} CPUs), {machine['platform']}; pqkit "
        f"{machine['pqkit_version']} at SIMD level `{machine['pqkit_simd_level']}`; faiss {version}, "
        f"levels run (requested -> reported): {levels or 'none'}.",
        f"Queries: {rows[0]['n_queries']} (batch size {rows[0]['batch_size']}, median of "
        f"{len(rows[0]['batch_seconds_all'])} runs); latency: median over {rows[0]['latency_queries']} "
        "single-query calls. Ratios > 1 mean pqkit is faster.",
    ]


def matched_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| family | params | threads | faiss variant | pqkit QPS | faiss best QPS (level) | QPS ratio | "
        "pqkit lat ms | faiss best lat ms (level) | lat ratio | recall pqkit | recall faiss |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = best_faiss(rows)
    ratios = defaultdict(lambda: {"qps": [], "lat": []})
    for row in sorted((r for r in rows if r["algorithm"] == "pqkit"), key=sort_key):
        key = match_key(row)
        refine = bool(row["build_params"].get("refine"))
        k_factor = row["query_params"].get("k_factor", 1)
        for (fkey, variant), fb in sorted(best.items(), key=lambda item: item[0][1]):
            if fkey != key or ("+Refine" in variant) != refine:
                continue
            if refine and f"(k_factor={k_factor})" not in variant:  # refine against refine, same k_factor
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
    return lines


def build_lines(rows: list[dict]) -> list[str]:
    """Training and adding time, pqkit vs faiss (its fastest level and variant) at the same build
    parameters, with the build thread count of the run."""
    builds: dict = {}
    for row in rows:
        if "train_seconds" not in row or row["algorithm"] not in ("pqkit", "faiss"):
            continue
        key = match_key(row)[:-2]  # family and build parameters: nprobe and threads do not matter
        slot = builds.setdefault(key, {}).setdefault(row["algorithm"], {})
        for part in ("train_seconds", "add_seconds"):
            slot[part] = min(slot.get(part, float("inf")), row[part])
        slot["threads"] = row["build_threads"]
    lines = []
    for key in sorted(builds, key=lambda k: tuple(-1 if v is None else v for v in k)):
        both = builds[key]
        if key[0] == "flat" or "pqkit" not in both or "faiss" not in both:
            continue
        mine, theirs = both["pqkit"], both["faiss"]
        cells = []
        for part in ("train_seconds", "add_seconds"):
            ratio = theirs[part] / mine[part] if mine[part] > 0 else float("inf")
            cells.append(f"{mine[part]:.2f} | {theirs[part]:.2f} | {ratio:.2f}")
        lines.append(f"| {key[0]} | {params_text(key + (None, None))} | {mine['threads']} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", "## Training and adding", "",
            "Seconds for `train` and for `add` of the whole base, once per build (the fastest faiss level "
            "and variant); a ratio > 1 means pqkit is faster.", "",
            "| family | params | threads | pqkit train s | faiss train s | train ratio | pqkit add s | "
            "faiss add s | add ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---:|", *lines]


def notebook_lines(rows: list[dict]) -> list[str]:
    pqkit_by_key = {match_key(r): r for r in rows if r["algorithm"] == "pqkit"}
    lines = []
    for row in rows:
        if row["algorithm"] != "notebook":
            continue
        mine = pqkit_by_key.get(match_key(row)[:-1] + (1,))
        if mine is None:
            continue
        lines.append(
            f"| {params_text(match_key(row))} | {row['latency_ms_median']:.3f} | {mine['latency_ms_median']:.3f} | "
            f"{row['latency_ms_median'] / mine['latency_ms_median']:.0f}x | {row['qps']:.1f} | {mine['qps']:.0f} | "
            f"{mine['qps'] / row['qps']:.0f}x | {row['recall_10_at_10']:.3f} | {mine['recall_10_at_10']:.3f} |")
    if not lines:
        return []
    return ["", "## Notebook baseline", "",
            "Notebook `CustomIndexIVFPQ` (re-implemented in `bench/adapters.py`) vs pqkit, 1 thread:", "",
            "| params | notebook lat ms | pqkit lat ms | latency ratio | notebook QPS | pqkit QPS | "
            "QPS ratio | recall notebook | recall pqkit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *lines]


def raw_lines(rows: list[dict]) -> list[str]:
    lines = ["", "## All rows (raw values)", "",
             "| algorithm | SIMD | build | query | threads | build s | memory MB | QPS | lat ms | p99 ms | recall |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        build = {k: v for k, v in row["build_params"].items() if v is not None and k != "metric"}
        lines.append(
            f"| {row['algorithm']} | {row.get('simd_level', '-')} | {build} | {row['query_params'] or ''} | "
            f"{row['threads']} | {row['build_seconds']:.2f} | {row['memory_bytes'] / 1e6:.1f} | {row['qps']:.0f} | "
            f"{row['latency_ms_median']:.3f} | {row['latency_ms_p99']:.3f} | {row['recall_10_at_10']:.3f} |")
    return lines


def dataset_report(name: str, rows: list[dict], targets=RECALL_TARGETS, plot_file: str | None = None) -> str:
    """The Markdown report of one dataset; ``plot_file`` (a name beside the report) is embedded."""
    lines = header_lines(name, rows)
    if plot_file:
        lines += ["", f"![{name}: recall vs speed, 1 thread]({plot_file})"]
    lines += ["", "## At equal recall", "",
              "Per family, thread count and recall target, each library's fastest row with "
              "10-recall@10 >= target, over all its parameters (faiss: also over SIMD levels and variants, "
              "refine and k_factor included). Index memory is not equalised: the configs say what each ran.",
              *equal_recall_lines(equal_recall(rows, targets)),
              "", "## At identical parameters", "", *matched_lines(rows),
              *build_lines(rows), *notebook_lines(rows), *raw_lines(rows)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Plot


def pareto_frontier(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The (recall, speed) points that no other point beats on both, by increasing recall."""
    sign = 1 if higher_is_better else -1
    frontier, best = [], None
    for recall, speed in sorted(points, key=lambda p: (-p[0], -sign * p[1])):
        if best is None or sign * speed > sign * best:
            frontier.append((recall, speed))
            best = speed
    return frontier[::-1]


def fastest_per_config(rows: list[dict], mode: Mode) -> list[dict]:
    """One row per configuration (library, build and query parameters): its fastest SIMD level.

    faiss's levels differ in the last digit of recall (floating-point order), which would
    otherwise put several near-identical points of one configuration on a frontier.
    """
    groups = defaultdict(list)
    for row in rows:
        groups[json.dumps([row["algorithm"], row["build_params"], row["query_params"]], sort_keys=True)].append(row)
    pick = max if mode.higher_is_better else min
    return [pick(group, key=mode.value) for group in groups.values()]


def plot(name: str, rows: list[dict], path: Path) -> bool:
    """Recall vs batch QPS and vs median latency at the lowest thread count (normally 1) as a PNG.

    Returns False (and says so) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipped the plot {path} (the Markdown table is written)")
        return False
    threads = min(row["threads"] for row in rows)
    library_order = {"pqkit": 0, "faiss": 1}
    series = defaultdict(list)
    for row in rows:
        if row["threads"] == threads:
            library = (library_order.get(row["algorithm"], len(library_order)), row["algorithm"])
            series[(family_order(row["family"]), library, series_label(row))].append(row)
    families = sorted({key[0] for key in series})
    colours = {family: plt.get_cmap("tab10")(i % 10) for i, family in enumerate(families)}
    line_styles = {"pqkit": "-", "faiss": "--"}
    markers = "osD^v<>P*X"
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, mode in zip(axes, MODES.values()):
        for index, ((family, library, label), members) in enumerate(sorted(series.items())):
            points = [(r["recall_10_at_10"], mode.value(r)) for r in fastest_per_config(members, mode)]
            frontier = pareto_frontier(points, mode.higher_is_better)
            ax.plot([p[0] for p in frontier], [p[1] for p in frontier], label=label, color=colours[family],
                    linestyle=line_styles.get(library[1], ":"), marker=markers[index % len(markers)])
        ax.set_yscale("log")
        ax.set_xlabel("10-recall@10")
        ax.set_ylabel(mode.axis_label)
        ax.set_title(f"{mode.title} ({'higher' if mode.higher_is_better else 'lower'} is better)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=3, fontsize=9)
    fig.suptitle(f"{name}: {threads} thread{'s' if threads > 1 else ''}, Pareto frontier per library and index "
                 "variant (colour: index family; solid: pqkit, dashed: faiss)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# Summary and README


def summary_cell(entry: dict, mode_name: str) -> str:
    pqkit_row, faiss_row, ratio = entry[mode_name]
    return f"**{ratio:.2f}** ({pqkit_row['recall_10_at_10']:.3f} / {faiss_row['recall_10_at_10']:.3f})"


def summary_markdown(by_dataset: dict[str, list[dict]], out_dir: Path, link_base: Path, targets=RECALL_TARGETS) -> str:
    """The README snippet: per dataset and family, both equal-recall ratios at 1 thread.

    Links point at ``out_dir`` files relative to ``link_base`` (the README's folder), so the
    snippet reads correctly once it sits in the README.
    """
    def link(path: Path) -> str:
        return Path(os.path.relpath(path, link_base)).as_posix()

    machine = next(iter(by_dataset.values()))[0]["_machine"]
    lines = [
        f"pqkit vs faiss at equal recall, 1 thread, on {machine['cpu']} ({machine['n_cpus']} CPUs). Each library "
        "runs its fastest configuration whose 10-recall@10 reaches the highest target (from "
        f"{', '.join(f'{t:g}' for t in targets)}) that both reach; faiss also at its best SIMD level and variant "
        "(refine and k_factor included). A ratio is pqkit's speed over faiss's: > 1 means pqkit is faster. In "
        "parentheses: the recall of the pqkit / faiss row chosen.",
        "",
        "| dataset | index family | recall >= | batch QPS ratio | single-query latency ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for name, rows in by_dataset.items():
        for entry in headline(rows, targets):
            family = FAMILY_LABELS.get(entry["family"], entry["family"])
            if entry["target"] is None:
                best = entry["best_recall"]
                lines.append(f"| {name} | {family} | no common target (best recall {best['pqkit']:.3f} / "
                             f"{best['faiss']:.3f}) | - | - |")
            else:
                lines.append(f"| {name} | {family} | {entry['target']:g} | {summary_cell(entry, 'qps')} | "
                             f"{summary_cell(entry, 'latency')} |")
    reports = []
    for name in by_dataset:
        text = f"[{name}]({link(out_dir / f'{name}.md')})"
        if (out_dir / f"{name}.png").is_file():
            text += f" ([plot]({link(out_dir / f'{name}.png')}))"
        reports.append(text)
    lines += ["", "Per dataset (every target, thread count and matched-parameter comparison): "
              + ", ".join(reports) + "."]
    for name in by_dataset:
        if (out_dir / f"{name}.png").is_file():
            lines += ["", f"![{name}: recall vs speed, 1 thread]({link(out_dir / f'{name}.png')})"]
    if (out_dir / "micro.md").is_file():
        lines += ["", f"Scan kernels against the memory-read floor: [micro-benchmark]({link(out_dir / 'micro.md')})."]
    lines += ["", "Reproduce: `python bench/run.py --all && python bench/micro/run.py && "
              "python bench/report.py --readme` (see `bench/README.md`)."]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, snippet: str) -> None:
    """Replace the text between the README markers with ``snippet`` (the markers stay)."""
    text = readme.read_text()
    one_each = text.count(README_START) == 1 and text.count(README_END) == 1
    if not one_each or text.index(README_START) > text.index(README_END):
        raise SystemExit(f"{readme}: expected one '{README_START}' line followed by one '{README_END}' line "
                         "around the place for the benchmark summary; add them and run again")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    readme.write_text(f"{head}{README_START}\n{snippet.rstrip()}\n{README_END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="*", type=Path, help="raw JSON files (default bench/results/raw/*.json)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--targets", type=float, nargs="+", default=RECALL_TARGETS, metavar="RECALL",
                        help=f"10-recall@10 targets of the equal-recall tables (default {RECALL_TARGETS})")
    parser.add_argument("--readme", type=Path, nargs="?", const=README, metavar="PATH",
                        help=f"put summary.md between the bench markers of PATH (default {README})")
    args = parser.parse_args(argv)
    paths = args.raw or sorted((BENCH_DIR / "results" / "raw").glob("*.json"))
    if not paths:
        parser.error("no raw results: run bench/run.py first")
    by_dataset = defaultdict(list)
    for row in load_rows(paths):
        by_dataset[row["dataset"]].append(row)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in by_dataset.items():
        plotted = plot(name, rows, args.out_dir / f"{name}.png")
        if plotted:
            print(f"wrote {args.out_dir / (name + '.png')}")
        text = dataset_report(name, rows, args.targets, f"{name}.png" if plotted else None)
        (args.out_dir / f"{name}.md").write_text(text)
        print(text)
        print(f"wrote {args.out_dir / (name + '.md')}")
    readme = args.readme or README
    summary = summary_markdown(by_dataset, args.out_dir.resolve(), readme.resolve().parent, args.targets)
    (args.out_dir / "summary.md").write_text(summary)
    print(summary)
    print(f"wrote {args.out_dir / 'summary.md'}")
    if args.readme:
        update_readme(args.readme, summary)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
