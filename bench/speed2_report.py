"""Tables and a plot from the raw rows of ``bench/speed2.py`` (nothing is measured here).

    python bench/speed2_report.py                       # every bench/results/raw/speed2-*.json
    python bench/speed2_report.py bench/results/raw/speed2-glove.json

Per raw file it writes ``bench/results/speed2-<set>.md`` and, with matplotlib,
``bench/results/speed2-<set>.png``; ``python bench/report.py --docs`` puts the same tables in
``docs/performance.md``.

The picks, per recall target t (10-recall@10 >= t) and mode (batch QPS; single-query latency),
over the rows timed in the alternating rounds only:

* **speed**: each library's fastest row; "best other" is the fastest row of any library but
  pqkit; ratio = pqkit's speed / best other's (batch: QPS; single: the inverse of the latency).
* **memory**: the best other's row as above; pqkit's fastest row of at most a third of its bytes
  per vector; the same ratio.
* **threads**: pqkit's fastest batch row per target at 1 and 2 threads: batch QPS ratio and
  single-query latency at each count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
OURS = "pqkit"
TARGETS = (0.8, 0.9, 0.95, 0.99)
# 10-recall@10 is a ratio of integers: a row exactly at the target reaches it.
RECALL_TOLERANCE = 1e-9
MEMORY_FRACTION = 1 / 3
MODES = {"batch": "batch QPS", "single": "single-query latency"}


def speed(row: dict, mode: str) -> float:
    """Queries per second of a timed row: batch QPS, or 1 / median single-query latency."""
    if mode == "batch":
        return row["batch_qps"]
    if mode == "single":
        return 1e6 / row["single_latency_us"]
    raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")


def pick_fastest(rows: list[dict], target: float, mode: str, library: str | None = None,
                 exclude: str | None = None, max_bytes_per_vector: float | None = None) -> dict | None:
    """The fastest timed row reaching ``target``, or None when no row reaches it.

    Parameters
    ----------
    rows : list of dict
        Raw rows of ``bench/speed2.py``; rows without ``timed`` (or with ``timed`` false) are ignored.
    target : float
        10-recall@10 to reach.
    mode : {"batch", "single"}
    library, exclude : str or None
        Only this library's rows; or every library's but this one.
    max_bytes_per_vector : float or None
        Only rows of at most this many bytes per vector.
    """
    best = None
    for row in rows:
        if not row.get("timed") or row["recall"] < target - RECALL_TOLERANCE:
            continue
        if library is not None and row["library"] != library:
            continue
        if exclude is not None and row["library"] == exclude:
            continue
        if max_bytes_per_vector is not None and row["bytes_per_vector"] > max_bytes_per_vector:
            continue
        if best is None or speed(row, mode) > speed(best, mode):
            best = row
    return best


def speed_table(rows: list[dict], targets, mode: str) -> list[dict]:
    """Per target: each library's pick, the best other library's pick, pqkit's and the ratio."""
    libraries = sorted({row["library"] for row in rows})
    table = []
    for target in targets:
        picks = {name: pick_fastest(rows, target, mode, library=name) for name in libraries}
        ours = picks.get(OURS)
        other = pick_fastest(rows, target, mode, exclude=OURS)
        ratio = speed(ours, mode) / speed(other, mode) if ours and other else None
        table.append({"target": target, "picks": picks, "ours": ours, "other": other, "ratio": ratio})
    return table


def memory_table(rows: list[dict], targets, mode: str) -> list[dict]:
    """Per target: the best other pick and pqkit's fastest pick within a third of its bytes per vector."""
    table = []
    for target in targets:
        other = pick_fastest(rows, target, mode, exclude=OURS)
        ours = None
        if other is not None:
            ours = pick_fastest(rows, target, mode, library=OURS,
                                max_bytes_per_vector=MEMORY_FRACTION * other["bytes_per_vector"])
        ratio = speed(ours, mode) / speed(other, mode) if ours and other else None
        table.append({"target": target, "ours": ours, "other": other, "ratio": ratio})
    return table


def _label(row: dict | None) -> str:
    if row is None:
        return "not reached"
    params = " ".join(f"{k}={v}" for k, v in row["query_params"].items())
    return f"{row['library']} `{row['config']}` {params}".rstrip()


def _speed_text(row: dict | None, mode: str) -> str:
    if row is None:
        return "-"
    if mode == "batch":
        return f"{row['batch_qps']:,.0f} QPS"
    return f"{row['single_latency_us']:,.0f} us"


def _cell(row: dict | None, mode: str) -> str:
    if row is None:
        return "not reached"
    return f"{_speed_text(row, mode)}, {row['bytes_per_vector']:,.0f} B/vec, R {row['recall']:.3f}"


def _described(row: dict | None, mode: str) -> str:
    return "not reached" if row is None else f"{_label(row)}: {_cell(row, mode)}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown_lines(raw: dict, plot_name: str | None = None) -> list[str]:
    """The Markdown tables of one raw file (no title line)."""
    rows = raw["rows"]
    settings, machine = raw["settings"], raw["machine"]
    levels = ", ".join(machine.get("faiss_simd_levels") or []) or "?"
    versions = ", ".join(f"{name} {machine[name]}" for name in ("faiss-cpu", "scann", "hnswlib", "usearch")
                         if machine.get(name))
    lines = [f"{raw['dataset']}: {raw['n_base']:,} vectors of d = {raw['d']}; {settings['queries']:,} queries "
             f"in batches of {settings['batch_size']:,} and {settings['single_queries']} single-query calls per "
             f"round, {settings['rounds']} rounds with the libraries alternating in one process, 1 thread, "
             f"medians. {machine.get('cpu') or '?'} ({machine.get('n_cpus')} CPUs), pqkit at "
             f"`{machine.get('pqkit_simd_level')}`; {versions}; faiss at each of its levels ({levels}; compile "
             f"options `{(machine.get('faiss_compile_options') or '?').strip()}`). Memory: bytes per vector of "
             "each library's own index size. Ratio > 1: pqkit faster."]
    if raw.get("unavailable"):
        lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in raw["unavailable"].items()) + "."]
    if plot_name:
        lines += ["", f"![{raw['dataset']}: recall against speed per library]({plot_name})"]
    libraries = sorted({row["library"] for row in rows})
    for mode, title in MODES.items():
        table = speed_table(rows, raw["targets"], mode)
        lines += ["", f"**Fastest configuration per target, {title}**", "",
                  "| recall >= | pqkit | best other | ratio | " + " | ".join(libraries) + " |",
                  "|---|---|---|---|" + "---|" * len(libraries)]
        for entry in table:
            lines.append(f"| {entry['target']} | {_cell(entry['ours'], mode)} | {_cell(entry['other'], mode)} "
                         f"({entry['other']['library'] if entry['other'] else '-'}) | {_ratio(entry['ratio'])} | "
                         + " | ".join(_speed_text(entry["picks"][name], mode) for name in libraries) + " |")
        lines += ["", "Configurations: " + "; ".join(
            f"{entry['target']}: {_label(entry['ours'])} / {_label(entry['other'])}" for entry in table) + "."]
    for mode, title in MODES.items():
        table = memory_table(rows, raw["targets"], mode)
        lines += ["", f"**At a third of the memory, {title}**: pqkit's fastest configuration of at most 1/3 of "
                  "the bytes per vector of the best other library's pick", "",
                  "| recall >= | best other | pqkit at <= 1/3 of its bytes | ratio |", "|---|---|---|---|"]
        for entry in table:
            lines.append(f"| {entry['target']} | {_described(entry['other'], mode)} | "
                         f"{_described(entry['ours'], mode)} | {_ratio(entry['ratio'])} |")
    if raw.get("threads"):
        rounds = raw.get("settings", {}).get("threads_rounds")
        lines += ["", "**Threads** (pqkit's fastest batch configuration per target, 1 and 2 threads "
                  f"alternating{f', {rounds} rounds, medians' if rounds else ''})", "", "| targets | configuration | batch QPS 1 / 2 threads | scaling "
                  "| single-query us 1 / 2 threads | latency ratio |", "|---|---|---|---|---|---|"]
        for row in raw["threads"]:
            params = " ".join(f"{k}={v}" for k, v in row["query_params"].items())
            lines.append(f"| {', '.join(map(str, row['targets']))} | `{row['config']}` {params} | "
                         f"{row['batch_qps_1']:,.0f} / {row['batch_qps_2']:,.0f} | "
                         f"{row['batch_qps_2'] / row['batch_qps_1']:.2f}x | {row['single_latency_us_1']:,.0f} / "
                         f"{row['single_latency_us_2']:,.0f} | "
                         f"{row['single_latency_us_1'] / row['single_latency_us_2']:.2f}x |")
    timed = sum(1 for row in rows if row.get("timed"))
    lines += ["", f"{timed} of {len(rows)} measured points were timed in the rounds (the others were "
              "beaten in the pilot by a point of the same library at no more memory)."]
    return lines


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(recall, speed) points that no other point beats on both, by recall."""
    kept = [p for p in points if not any(q[0] >= p[0] and q[1] > p[1] for q in points if q != p)]
    return sorted(set(kept))


def plot(raw: dict, path: Path) -> bool:
    """Recall against batch QPS and single-query speed, one Pareto line per library; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in raw["rows"] if row.get("timed")]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, (mode, title) in zip(axes, MODES.items()):
        for library in sorted({row["library"] for row in rows}):
            line = frontier([(row["recall"], speed(row, mode)) for row in rows if row["library"] == library])
            if line:
                axis.plot([p[0] for p in line], [p[1] for p in line], marker="o", markersize=3, label=library)
        axis.set_yscale("log")
        axis.set_xlabel("10-recall@10")
        axis.set_ylabel("queries per second" + (" (1 / median latency)" if mode == "single" else ""))
        axis.set_title(f"{raw['dataset']}: {title}, 1 thread")
        axis.grid(True, which="both", alpha=0.3)
        for target in raw["targets"]:
            axis.axvline(target, color="grey", linewidth=0.5, linestyle=":")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def write_report(raw: dict, out_dir: Path, name: str) -> list[Path]:
    """``<out_dir>/speed2-<name>.md`` and, with matplotlib, ``.png``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    png = out_dir / f"speed2-{name}.png"
    if plot(raw, png):
        written.append(png)
    text = "\n".join([f"# {raw['dataset']}: pqkit against every library", "",
                      *markdown_lines(raw, png.name if written else None)]) + "\n"
    md = out_dir / f"speed2-{name}.md"
    md.write_text(text)
    return [md, *written]


def load(path: Path) -> dict | None:
    """A speed2 raw file, or None for any other raw file."""
    raw = json.loads(Path(path).read_text())
    return raw if raw.get("kind") == "speed2" else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="*", type=Path, help="speed2 raw files (default results/raw/speed2-*.json)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    paths = args.raw or sorted((BENCH_DIR / "results" / "raw").glob("speed2-*.json"))
    if not paths:
        parser.error("no speed2 results: run bench/speed2.py first")
    for path in paths:
        raw = load(path)
        if raw is None:
            parser.error(f"{path} is not a bench/speed2.py result")
        for written in write_report(raw, args.out_dir, Path(path).stem.removeprefix("speed2-")):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
