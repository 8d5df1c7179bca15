"""Tables and plots from the raw JSON rows of ``bench/run.py`` (nothing is measured here).

    python bench/report.py                              # every bench/results/raw/*.json
    python bench/report.py bench/results/raw/fashion.json [--out-dir bench/results]
    python bench/report.py --docs                       # also write docs/performance.md

Per dataset it writes ``<out-dir>/<dataset>.md`` and, when matplotlib is importable,
``<out-dir>/<dataset>.png``; for all datasets together ``<out-dir>/summary.md``. ``--docs``
also writes the page ``docs/performance.md``: that summary, plus the tables drawn from the other
stored raw results beside the raw folder (``raw/spot_check.json``, ``micro.json``,
``parity.json``, ``compat.json``; each section is left out when its file is missing). Nothing
is measured: the page is a function of the stored files.

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
import importlib.util
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
DOCS_PAGE = BENCH_DIR.parent / "docs" / "performance.md"
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
# Summary


def summary_cell(entry: dict, mode_name: str) -> str:
    pqkit_row, faiss_row, ratio = entry[mode_name]
    return f"**{ratio:.2f}** ({pqkit_row['recall_10_at_10']:.3f} / {faiss_row['recall_10_at_10']:.3f})"


def summary_markdown(by_dataset: dict[str, list[dict]], out_dir: Path, link_base: Path, targets=RECALL_TARGETS) -> str:
    """Per dataset and family, both equal-recall ratios at 1 thread, with links to the reports.

    Links point at ``out_dir`` files relative to ``link_base`` (the folder of the file the
    snippet goes into), so the same table reads correctly in ``summary.md`` and in the docs page.
    """
    def link(path: Path) -> str:
        return Path(os.path.relpath(path, link_base)).as_posix()

    machine = next(iter(by_dataset.values()))[0]["_machine"]
    lines = [
        f"pqkit vs faiss at equal recall, 1 thread, on {machine['cpu']} ({machine['n_cpus']} CPUs). Each library "
        "runs its fastest configuration whose 10-recall@10 reaches the highest target (from "
        f"{', '.join(f'{t:g}' for t in targets)}) that both reach; faiss also at its best SIMD level and variant "
        "(refine and k_factor included). A ratio is pqkit's speed over faiss's: > 1 means pqkit is faster. In "
        "parentheses: the recall of the pqkit / faiss row chosen. The last column names the faiss SIMD level of "
        "the row chosen for batch QPS / for latency.",
        "",
        "| dataset | index family | recall >= | batch QPS ratio | single-query latency ratio | faiss level |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, rows in by_dataset.items():
        for entry in headline(rows, targets):
            family = FAMILY_LABELS.get(entry["family"], entry["family"])
            if entry["target"] is None:
                best = entry["best_recall"]
                lines.append(f"| {name} | {family} | no common target (best recall {best['pqkit']:.3f} / "
                             f"{best['faiss']:.3f}) | - | - | - |")
            else:
                levels = " / ".join(entry[mode][1]["simd_level"] for mode in ("qps", "latency"))
                lines.append(f"| {name} | {family} | {entry['target']:g} | {summary_cell(entry, 'qps')} | "
                             f"{summary_cell(entry, 'latency')} | {levels} |")
    reports = []
    for name in by_dataset:
        text = f"[{name}]({link(out_dir / f'{name}.md')})"
        if (out_dir / f"{name}.png").is_file():
            text += f" ([plot]({link(out_dir / f'{name}.png')}))"
        reports.append(text)
    lines += ["", "Per dataset (every target, thread count and matched-parameter comparison, training and adding "
              "times, all raw rows): " + ", ".join(reports) + "."]
    for name in by_dataset:
        if (out_dir / f"{name}.png").is_file():
            lines += ["", f"![{name}: recall vs speed, 1 thread]({link(out_dir / f'{name}.png')})"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The other stored results: spot check, micro-benchmark, parity, pqkit.compat


def load_json(path: Path):
    """The parsed file, or None when it does not exist (its section is then left out)."""
    return json.loads(path.read_text()) if path.is_file() else None


def spot_check_lines(raw: dict) -> list[str]:
    """``raw/spot_check.json`` (``bench/spot_check.py``): identical indexes, faiss's faster level per row.

    pqkit ran in every faiss level's child process; its time is the minimum over those runs, as
    each faiss time is the minimum over repeats.
    """
    groups: dict = {}
    for row in raw["rows"]:
        groups.setdefault((row["index"], row.get("nprobe")), []).append(row)
    lines = ["| index | nprobe | batch µs/query: faiss best (level) | pqkit | ratio | single query µs: faiss best | "
             "pqkit | ratio | same ids |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (index, nprobe), rows in groups.items():
        batch = min(rows, key=lambda r: r["batch_us_faiss"])
        faiss_batch, faiss_single = batch["batch_us_faiss"], min(r["single_us_faiss"] for r in rows)
        ours_batch, ours_single = min(r["batch_us_pqkit"] for r in rows), min(r["single_us_pqkit"] for r in rows)
        same = min(r["same_ids"] for r in rows)
        lines.append(f"| {index} | {'-' if nprobe is None else nprobe} | {faiss_batch:.1f} ({batch['faiss_simd_level']}) "
                     f"| {ours_batch:.1f} | **{faiss_batch / ours_batch:.2f}x** | {faiss_single:.1f} | {ours_single:.1f} "
                     f"| **{faiss_single / ours_single:.2f}x** | {same:.0%} |")
    levels = list(dict.fromkeys(r["faiss_simd_level"] for r in raw["rows"]))
    levels_text = ", ".join(levels[:-1]) + " and " + levels[-1] if len(levels) > 1 else levels[0]
    machine = raw.get("machine")
    if isinstance(machine, dict):
        where = f"on {machine['cpu']} ({machine['n_cpus']} CPUs), run {machine.get('time', '?')[:10]}"
    else:  # the first version of spot_check.py recorded the architecture only
        where = (f"on an {machine} machine; the file records neither the CPU model nor the date, and it is older "
                 "than the harness results above (see the changelog)")
    return [f"faiss trains each index; pqkit loads the same index with `pqkit.from_faiss`, so both return the same "
            f"ids (last column) and only the speed differs. Fashion-MNIST, 1 thread, minimum over repeats, {where}. "
            f"faiss ran at {levels_text}; each row compares against its faster level. At small nprobe a query "
            "costs mostly its distance table and the coarse search, which cost faiss about as much; the scan, where "
            "pqkit gains, is then a small part of the query.", "", *lines]


def micro_lines(raw: dict) -> list[str]:
    """``micro.json`` as ``bench/micro/run.py`` draws it, headings moved two levels down."""
    spec = importlib.util.spec_from_file_location("bench_micro_run", BENCH_DIR / "micro" / "run.py")
    micro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(micro)
    lines = [line for line in micro.markdown(raw).strip("\n").split("\n") if not line.startswith("# ")]
    while lines and not lines[0]:
        lines.pop(0)
    return ["#" + line if line.startswith("## ") else line for line in lines]


def parity_lines(records: list[dict]) -> list[str]:
    """``parity.json`` (``bench/parity_table.py``): mean 10-recall@10 over the training seeds."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))

    def runs(name: str, library: str) -> list[dict]:
        return [r for r in records if r["dataset"] == name and r["library"] == library]

    def mean_recall(name: str, library: str, nprobe: str) -> float:
        return statistics.fmean(r["recall"][nprobe] for r in runs(name, library))

    lines = ["| data set | nlist | M x nbits | nprobe | pqkit 10-recall@10 | faiss 10-recall@10 | gap |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in datasets:
        first = runs(name, "pqkit")[0]
        for nprobe in sorted(first["recall"], key=int):
            ours, theirs = mean_recall(name, "pqkit", nprobe), mean_recall(name, "faiss", nprobe)
            lines.append(f"| {name} | {first['nlist']} | {first['M']}x{first['nbits']} | {nprobe} | {ours:.4f} | "
                         f"{theirs:.4f} | {ours - theirs:+.4f} |")
    first = records[0]
    seeds = sorted({r["seed"] for r in records})
    versions = {lib: next(r["version"] for r in records if r["library"] == lib) for lib in ("pqkit", "faiss")}
    return [f"Trained independently on the same data ({first['n_base']:,} base vectors, {first['n_train']:,} of "
            f"them for training, {first['n_queries']:,} queries per set; GloVe-50 rows L2-normalised), mean of "
            f"{len(seeds)} training seeds ({', '.join(map(str, seeds))}); pqkit {versions['pqkit']}, faiss-cpu "
            f"{versions['faiss']}; truth: exact `IndexFlat`.", "", *lines]


COMPAT_IMPLEMENTATIONS = {"notebook": "NumPy reference", "pqkit.compat": "pqkit.compat"}
COMPAT_KMEANS = {"CustomIndexPQ": "scikit-learn KMeans", "CustomIndexIVFPQ": "faiss.Kmeans"}


def compat_lines(raw: dict) -> list[str]:
    """``compat.json`` (``bench/compat/run.py``): the NumPy reference classes against ``pqkit.compat``."""
    rows = raw["rows"]
    lines = [f"| class | implementation | train s | add s | search s ({raw['queries']} single queries) | recall@5 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        impl = COMPAT_IMPLEMENTATIONS.get(r["impl"], r["impl"])
        if r["impl"] != "pqkit.compat":
            impl += f" ({COMPAT_KMEANS.get(r['class'], 'k-means')})"
        lines.append(f"| {r['class']} | {impl} | {r['train_s']:.2f} | {r['add_s']:.3f} | {r['search_s']:.3f} | "
                     f"{r['recall_at_5']:.3f} |")
    speedups = []
    for cls in dict.fromkeys(r["class"] for r in rows):
        by_impl = {r["impl"]: r for r in rows if r["class"] == cls}
        if "pqkit.compat" in by_impl and len(by_impl) > 1:
            reference = next(r for impl, r in by_impl.items() if impl != "pqkit.compat")
            speedups.append(f"{cls} {reference['search_s'] / by_impl['pqkit.compat']['search_s']:.0f}x")
    return [f"The classes `CustomIndexPQ` and `CustomIndexIVFPQ` written with NumPy loops (k-means from "
            "scikit-learn or faiss) against their drop-in replacements in `pqkit.compat`, on the same "
            f"{raw['n']:,} Fashion-MNIST vectors reduced to 128 dimensions by PCA (m=8, nbits=8, nlist=100, "
            "nprobe=1); recall@5: the nearest non-self neighbour among the first five results. Run on a shared "
            "2-core machine, so absolute times are noisy.", "", *lines, "",
            "Search speed-up of pqkit.compat: " + ", ".join(speedups) + ". Training is not faster: pqkit's PQ "
            "training on these sub-problems (16 dimensions, 256 centroids) is slower than faiss.Kmeans."]


# --------------------------------------------------------------------------------------------
# The documentation page

DOCS_INTRO = """\
How fast pqkit searches, how close its recall is to faiss-cpu's, and how it was measured. Every
table on this page is drawn by `python bench/report.py --docs` from the raw results stored in
`bench/results/`; rerunning the script measures nothing. The history of the speed work, with the
numbers of each step, is in the [changelog](../CHANGELOG.md)."""

DOCS_HOW_SEARCH_RUNS = """\
## How a search runs

One float distance table per query; the codes are stored in blocks of 64, byte-transposed, and
scanned with a byte-quantized copy of the table (AVX-512 VBMI `vpermi2b` for 8-bit codes and
`vpermb` for 4-bit codes, AVX2 `vpshufb`, and scalar versions) whose integer sums are a proven
lower bound of each code's distance. Every code that can still enter the top k gets its exact
float distance, so the results equal a plain float ADC scan bit for bit (tested against a NumPy
float ADC at every SIMD level), only faster. Under `IndexRefine` an IVF-PQ index ranks its
candidates by the integer sums alone, since the exact re-ranking follows. IVF-PQ under L2 keeps
one float per code (`||r||^2 + 2<c, r>`), so a query needs a single table for all the lists it
probes. The scans prefetch 4 KiB ahead, across list boundaries; exact search (`IndexFlat`, IVF
coarse assignment, k-means) selects its top k with vectorised kernels, and nearest-centroid
assignment runs on transposed centroids."""

DOCS_READING = """\
## How to read the numbers

- **Equal recall.** For each dataset and index family, each library takes its fastest
  configuration (over all build and query parameters) whose 10-recall@10 reaches a target; the
  ratio is pqkit's speed over faiss's at the highest target both reach. Index memory is not
  equalised: the per-dataset reports name the configuration each library ran.
- **faiss at its best level.** faiss-cpu is one dynamic-dispatch build that picks its SIMD level
  at import; the harness runs it once per `FAISS_SIMD_LEVEL` on the same index and compares with
  its best level for each row, not its default. faiss's 8-bit `IndexPQ` scan is fastest at
  `NONE` on this machine (its SIMD builds of that scan are 2-3x slower), which is why those rows
  name `NONE`.
- **Noise.** The machine is a 2-core VM, and the harness times the libraries one after the
  other, so a slow spell can hit one of them only: a ratio near 1 is neither a clear win nor a
  clear loss. `python bench/interleaved.py --pqkit FACTORY --faiss FACTORY` times one
  configuration of both libraries in alternation in one process, for a close call.
- **Flat search.** Where the dimension is large (Fashion-MNIST, 784) faiss is faster at exact
  search: it hands a batch to a BLAS matrix product that runs near the core's peak, about twice
  the rate of pqkit's tiles."""

DOCS_REPRODUCE = """\
## Reproduce

```sh
pip install ".[bench]"
python bench/run.py --all && python bench/micro/run.py   # measure: about an hour on 2 cores
python bench/report.py --docs                             # tables, plots and this page from the stored results
```

Every library at equal recall (faiss, ScaNN, hnswlib, usearch; one process, alternating):
`python bench/speed2.py --dataset all`, then `python bench/report.py --docs`.

The parity and compatibility tables come from `python bench/parity_table.py --json
bench/results/parity.json` and `python bench/compat/run.py`; the identical-index table from
`python bench/spot_check.py`. See [bench/README.md](../bench/README.md) for the harness, its
configs and what each column measures."""


def filtered_lines(raw: dict) -> list[str]:
    """``raw/filtered.json`` (``bench/filtered.py``): filtered search, median us per query."""
    meta = raw["meta"]
    methods = list(dict.fromkeys(row["method"] for row in raw["rows"]))
    by = {(row["selectivity"], row["method"]): row for row in raw["rows"]}
    selectivities = sorted({row["selectivity"] for row in raw["rows"]})
    base = methods[0]
    lines = [f"{meta['dataset']} `{meta['index']}` (faiss trains it, `pqkit.from_faiss` loads the same "
             f"index), nprobe {meta['nprobe']}, k {meta['k']}, {meta['queries']} queries, "
             f"{meta['threads']} thread, {meta['repeats']} repeats, pqkit {meta['pqkit_simd_level']}, "
             f"faiss {meta['faiss']} at its default level (its fastest here: the same run at "
             "`FAISS_SIMD_LEVEL=NONE` was slower); post-filter = an unfiltered search with k' doubled "
             "until k allowed results. Median us per query (ratio to the first column; every method "
             "returned the in-scan filter's ids):", "",
             "| allowed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for sel in selectivities:
        ref = float(statistics.median(by[(sel, base)]["seconds"])) / by[(sel, base)]["queries"] * 1e6
        cells = []
        for method in methods:
            row = by[(sel, method)]
            us = float(statistics.median(row["seconds"])) / row["queries"] * 1e6
            cells.append(f"{us:.1f} ({us / ref:.2f}x)")
        lines.append(f"| {sel:.0%} | " + " | ".join(cells) + " |")
    return lines


def range_lines(raw: dict) -> list[str]:
    """``raw/range.json`` (``bench/range.py``): range search, median us per query."""
    meta = raw["meta"]
    lines = [f"{meta['dataset']} `{meta['index']}` (faiss trains it, `pqkit.from_faiss` loads the same "
             f"index), nprobe {meta['nprobe']}, {meta['queries']} queries, {meta['threads']} thread, "
             f"{meta['repeats']} repeats alternating, pqkit {meta['pqkit_simd_level']}, faiss {meta['faiss']} "
             "at its default level; radius = the median over queries of the r-th nearest distance:", "",
             "| r | radius | results (pqkit / faiss) | differing (query, id) pairs | pqkit us/query "
             "| faiss us/query | pqkit speed-up |", "|---|---|---|---|---|---|---|"]
    for row in raw["rows"]:
        ours = statistics.median(row["seconds"]["pqkit"]) / row["queries"] * 1e6
        theirs = statistics.median(row["seconds"]["faiss"]) / row["queries"] * 1e6
        lines.append(f"| {row['rank']} | {row['radius']:.4f} | {row['results']['pqkit']:,} / "
                     f"{row['results']['faiss']:,} | {row['disagreements']} | {ours:.1f} | {theirs:.1f} "
                     f"| {theirs / ours:.2f}x |")
    return lines


def flat_blas_lines(raw: dict) -> list[str]:
    """``raw/flat_blas.json`` (``bench/flat_blas.py``): exact search against faiss and NumPy GEMM."""
    meta = raw["meta"]
    lines = [f"k = {meta['k']}, {meta['repeats']} repeats alternating the three methods, pqkit "
             f"`{meta['pqkit_simd_level']}` (results identical at every level and thread count), faiss "
             f"{meta['faiss']} at `{meta['faiss_simd_level']}`, NumPy {meta['numpy']} (`x @ y.T` with norms, "
             "`argpartition`); median ms per call (batch) or per query (single), and pqkit's speed-up "
             "(> 1: pqkit is faster):", "",
             "| data | d | metric | threads | batch pqkit ms | vs faiss | vs NumPy | single pqkit ms | vs faiss "
             "| vs NumPy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in raw["rows"]:
        cells = []
        for mode, per in (("batch", 1), ("single", row["single_queries"])):
            med = {m: statistics.median(row["seconds"][mode][m]) / per * 1e3 for m in row["seconds"][mode]}
            cells += [f"{med['pqkit']:.3f}", f"{med['faiss'] / med['pqkit']:.2f}x",
                      f"{med['numpy'] / med['pqkit']:.2f}x"]
        lines.append(f"| {row['dataset']} ({row['n_base']:,} rows, {row['batch_queries']} queries) | {row['d']} "
                     f"| {row['metric']} | {row['threads']} | " + " | ".join(cells) + " |")
    return lines


def call_overhead_lines(raw: dict) -> list[str]:
    """``raw/call_overhead.json`` (``bench/call_overhead.py``): a single query on a tiny index."""
    meta = raw["meta"]
    lines = [f"One query per call, k = 10, one thread, {meta['repeats']} repeats alternating the libraries, "
             f"pqkit `{meta['pqkit_simd_level']}`, faiss {meta['faiss']} at `{meta['faiss_simd_level']}`; the "
             "median microseconds per call, where the kernel's work is small and the rest is the call itself "
             "(> 1: pqkit is faster):", "",
             "| index | vectors | d | pqkit us | faiss us | pqkit speed-up |", "|---|---|---|---|---|---|"]
    for row in raw["rows"]:
        med = {lib: 1e6 * statistics.median(s) / row["calls"] for lib, s in row["seconds"].items()}
        extra = "".join(f", {name} {row[name]}" for name in ("nprobe", "k_factor") if row.get(name))
        lines.append(f"| {row['case']} (`{row['factory']}`{extra}) | {row['n']:,} | {row['d']} | {med['pqkit']:.2f} "
                     f"| {med['faiss']:.2f} | {med['faiss'] / med['pqkit']:.2f}x |")
    return lines


def mmap_lines(raw: dict) -> list[str]:
    """``raw/mmap.json`` (``bench/mapped.py``): a mapped index against the loaded one."""
    index = raw["index"]
    lines = [f"`{index['factory']}` on {index['n']:,} synthetic vectors of d = {index['d']} (a "
             f"{index['file_bytes'] / 2**20:.1f} MiB file), nprobe {raw['nprobe']}, {raw['queries']} queries, {raw['threads']} "
             f"thread, {'cold' if raw['cold'] else 'warm'} page cache, each mode in a fresh process "
             "(`mmap-trusted`: `verify=False`); every mode returned identical results:", "",
             "| mode | load s | RSS after load | RSS after search | QPS | median ms/query |",
             "|---|---|---|---|---|---|"]
    for row in raw["rows"]:
        lines.append(f"| {row['mode']} | {row['load_seconds']:.3f} | {row['rss_after_load'] / 2**20:.1f} MiB "
                     f"| {row['rss_after_search'] / 2**20:.1f} MiB | {row['qps']:.0f} "
                     f"| {row['latency_ms_median']:.3f} |")
    return lines


def machine_text(rows: list[dict]) -> str:
    """The machines, run dates and faiss levels of the raw files behind ``rows``."""
    machines = {}
    for row in rows:
        machine = row["_machine"]
        machines.setdefault((machine["cpu"], machine["n_cpus"], machine["pqkit_simd_level"]), set()).add(
            machine.get("time", "?")[:10])
    faiss_info = next((r["_faiss"] for r in rows if r["_faiss"]), {})
    version = next((i.get("faiss_version") for i in faiss_info.values() if "faiss_version" in i), "?")
    levels = ", ".join(f"`{level}`" for level, info in faiss_info.items() if "faiss_simd_level" in info)
    where = "; ".join(f"{cpu} ({n} CPUs), pqkit at SIMD level `{simd}`, run {', '.join(sorted(days))}"
                      for (cpu, n, simd), days in machines.items())
    return (f"Machine: {where}. faiss-cpu {version} at each of {levels or 'no level'} on the same index; "
            "one thread unless a table says otherwise.")


def _speed2_report():
    """``bench/speed2_report.py``, loaded by path (``bench/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("speed2_report", BENCH_DIR / "speed2_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speed2_section(raw_dir: Path, out_dir: Path, page: Path) -> list[str]:
    """``bench/speed2.py``'s results: every library at equal recall, per data set (or how to get them)."""
    speed2_report = _speed2_report()
    lines = ["## pqkit against faiss, ScaNN, hnswlib and usearch", "",
             "Each library's fastest configuration per 10-recall@10 target (over its whole grid in "
             "`bench/configs/speed2/`; faiss over every SIMD level and variant), timed in alternation in one "
             "process, with its memory; then pqkit at a third of the best other library's bytes per vector, "
             "and pqkit at 1 and 2 threads. How the points are chosen and timed: `bench/speed2.py`."]
    paths = sorted(raw_dir.glob("speed2-*.json"))
    raws = [(path, speed2_report.load(path)) for path in paths]
    raws = [(path, raw) for path, raw in raws if raw is not None and raw.get("completed") in ("rounds", "threads")]
    if not raws:
        return lines + ["", "No results stored yet: `python bench/speed2.py --dataset all` measures them, "
                        "then `python bench/report.py --docs` draws them here."]
    for path, raw in raws:
        name = path.stem.removeprefix("speed2-")
        written = speed2_report.write_report(raw, out_dir, name)
        png = next((p for p in written if p.suffix == ".png"), None)
        link = Path(os.path.relpath(png, page.parent)).as_posix() if png else None
        source = Path(os.path.relpath(path, BENCH_DIR.parent)).as_posix()
        lines += ["", f"### {raw['dataset']}", "", *speed2_report.markdown_lines(raw, link), "",
                  f"Raw results: `{source}`."]
    return lines


ANISOTROPIC_LABELS = {"pq": "pqkit PQ", "pq-aniso": "pqkit PQ, anisotropic", "opq": "pqkit OPQ + PQ",
                      "opq-aniso": "pqkit OPQ + PQ, anisotropic", "scann": "ScaNN AH, anisotropic",
                      "scann-plain": "ScaNN AH, plain"}


def anisotropic_lines(raw: dict) -> list[str]:
    """``raw/anisotropic.json`` (``bench/anisotropic.py``): recall at equal code size."""
    meta = raw["meta"]
    lines = [f"{meta['dataset']}: {meta['n_base']:,} unit vectors, {meta['n_queries']:,} queries, "
             "inner product; every code of the base is scored (no inverted file, no tree, no "
             f"re-ranking), so recall is the quantizer's alone. Threshold T = {meta['threshold']} for "
             f"ScaNN and pqkit (`pqkit.anisotropic_eta(50, {meta['threshold']})` = {meta['eta']:.2f}). "
             "Nothing is timed.", "",
             "| bytes/vector | method | configuration | 10-recall@10 | 10-recall@100 |",
             "|---|---|---|---|---|"]
    for row in sorted(raw["rows"], key=lambda r: r["code_bytes"]):
        label = ANISOTROPIC_LABELS.get(row["method"], row["method"])
        if "error" in row:
            lines.append(f"| {row['code_bytes']} | {label} | unavailable: {row['error']} | | |")
        else:
            lines.append(f"| {row['code_bytes']} | {label} | `{row['config']}` | {row['recall_10_at_10']:.3f} "
                         f"| {row['recall_10_at_100']:.3f} |")
    return lines


def gpu_lines(raw: dict) -> list[str]:
    """``gpu/results/gpu.json`` (``bench/gpu/run.py``): drawn by ``bench/gpu/report.py``."""
    spec = importlib.util.spec_from_file_location("pqkit_bench_gpu_report",
                                                  BENCH_DIR / "gpu" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.gpu_lines(raw)


def performance_page(by_dataset: dict[str, list[dict]], out_dir: Path, page: Path, targets=RECALL_TARGETS) -> str:
    """The Markdown of ``docs/performance.md``, drawn from the raw results only."""
    results_dir = out_dir
    raw_dir = BENCH_DIR / "results"
    all_rows = [row for rows in by_dataset.values() for row in rows]
    lines = ["# Performance", "", "<!-- Generated by `python bench/report.py --docs`; edit bench/report.py, "
             "not this file. -->", "", DOCS_INTRO, "", DOCS_HOW_SEARCH_RUNS, "", DOCS_READING, "",
             "## pqkit vs faiss at equal recall", "", machine_text(all_rows), "",
             summary_markdown(by_dataset, results_dir, page.parent, targets).rstrip("\n")]
    sections = [
        ("## Identical indexes", raw_dir / "raw" / "spot_check.json", spot_check_lines),
        ("## Scan kernels against the memory-read floor", raw_dir / "micro.json", micro_lines),
        ("## Recall parity with faiss", raw_dir / "parity.json", parity_lines),
        ("## pqkit.compat against the NumPy reference classes", raw_dir / "compat.json", compat_lines),
        ("## Filtered search: in the scan, post-filtered, and faiss's selectors", raw_dir / "raw" / "filtered.json",
         filtered_lines),
        ("## Range search against faiss", raw_dir / "raw" / "range.json", range_lines),
        ("## A memory-mapped index against a loaded one", raw_dir / "raw" / "mmap.json", mmap_lines),
        ("## Recall per bit: anisotropic PQ", raw_dir / "raw" / "anisotropic.json", anisotropic_lines),
        ("## The torch engine on a GPU against faiss-gpu and cuVS",
         BENCH_DIR / "gpu" / "results" / "gpu.json", gpu_lines),
        ("## Exact search against faiss's IndexFlat and NumPy GEMM", raw_dir / "raw" / "flat_blas.json",
         flat_blas_lines),
        ("## The cost of one call", raw_dir / "raw" / "call_overhead.json", call_overhead_lines),
    ]
    for title, path, draw in sections:
        raw = load_json(path)
        if raw is not None:
            source = Path(os.path.relpath(path, BENCH_DIR.parent)).as_posix()
            lines += ["", title, "", *draw(raw), "", f"Raw results: `{source}`."]
    lines += ["", *speed2_section(raw_dir / "raw", out_dir, page), "", DOCS_REPRODUCE]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="*", type=Path, help="raw JSON files (default bench/results/raw/*.json)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--targets", type=float, nargs="+", default=RECALL_TARGETS, metavar="RECALL",
                        help=f"10-recall@10 targets of the equal-recall tables (default {RECALL_TARGETS})")
    parser.add_argument("--docs", type=Path, nargs="?", const=DOCS_PAGE, metavar="PATH",
                        help=f"also write the documentation page (default {DOCS_PAGE})")
    args = parser.parse_args(argv)
    paths = args.raw or sorted((BENCH_DIR / "results" / "raw").glob("*.json"))
    if not paths:
        parser.error("no raw results: run bench/run.py first")
    by_dataset = defaultdict(list)
    for row in load_rows(paths):
        by_dataset[row["dataset"]].append(row)
    if not by_dataset:
        parser.error(f"no bench/run.py results among {', '.join(map(str, paths))}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = args.out_dir.resolve()
    for name, rows in by_dataset.items():
        plotted = plot(name, rows, out_dir / f"{name}.png")
        if plotted:
            print(f"wrote {args.out_dir / (name + '.png')}")
        text = dataset_report(name, rows, args.targets, f"{name}.png" if plotted else None)
        (out_dir / f"{name}.md").write_text(text)
        print(text)
        print(f"wrote {args.out_dir / (name + '.md')}")
    summary = summary_markdown(by_dataset, out_dir, out_dir, args.targets)
    (out_dir / "summary.md").write_text(summary)
    print(summary)
    print(f"wrote {args.out_dir / 'summary.md'}")
    if args.docs:
        page = args.docs.resolve()
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(performance_page(by_dataset, out_dir, page, args.targets))
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
