"""The GPU table from the raw JSON of ``bench/gpu/run.py`` (nothing is measured here).

    python bench/gpu/report.py [bench/gpu/results/gpu.json]

``bench/report.py --docs`` calls :func:`gpu_lines` for ``docs/performance.md`` when the raw file
exists. Per data set and library: the highest batch QPS among the rows whose 10-recall@10 reaches
each target (with the nprobe and k_factor of that row), the k-means time of the coarse
quantizer and the index's train and add times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RECALL_TARGETS = (0.8, 0.9, 0.95)
RAW = Path(__file__).resolve().parent / "results" / "gpu.json"


def best_at(rows: list, library: str, target: float):
    """The fastest row of ``library`` with recall >= ``target``, or None."""
    ok = [r for r in rows if r["library"] == library and r["recall10"] >= target]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def gpu_lines(raw: dict, targets=RECALL_TARGETS) -> list:
    """Markdown lines: one table per data set, then the missing libraries and their reasons."""
    m = raw["machine"]
    lines = [f"Machine: {m.get('gpu', m.get('device'))}, torch {m['torch']} (CUDA {m['cuda']}), "
             f"run {m['time'][:10]}" + (" (CPU smoke run: sizes are tiny, not a measurement)"
                                         if raw.get("smoke") else "") + ". Versions: "
             + ", ".join(f"{k} {v}" for k, v in raw["versions"].items()) + "."]
    for name, entry in raw["datasets"].items():
        libraries = list(entry["build"]) + [k for k in entry.get("errors", {})
                                            if k not in entry["build"]]
        lines += ["", f"**{name}** ({entry['n']:,} x {entry['d']}, {entry['nq']:,} queries in "
                      f"one batch; IVF{entry['nlist']},PQ{entry['M']}x8: {entry['code_bytes']} "
                      "bytes per code, re-ranked with the exact vectors when k_factor > 1)", "",
                  "| library | " + " | ".join(f"QPS at recall >= {t}" for t in targets)
                  + " | k-means s | train s | add s |",
                  "|---|" + "---:|" * (len(targets) + 3)]
        for lib in libraries:
            cells = []
            for t in targets:
                row = best_at(entry["rows"], lib, t)
                cells.append("not reached" if row is None else
                             f"{row['qps']:,.0f} (nprobe {row['nprobe']}, k_factor "
                             f"{row['k_factor']}, {row['recall10']:.3f})")
            build = entry["build"].get(lib, {})
            km = entry["kmeans"].get(lib)
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {lib} | " + " | ".join(cells) + f" | {fmt(km)} | "
                         f"{fmt(build.get('train_s'))} | {fmt(build.get('add_s'))} |")
        for lib, error in entry.get("errors", {}).items():
            lines.append(f"\n{lib} failed on {name}: {error}")
    if raw.get("missing"):
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in raw["missing"].items())
                  + "."]
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else RAW
    if not path.exists():
        print(f"bench/gpu/report.py: error: no raw results at {path}; run bench/gpu/run.py",
              file=sys.stderr)
        return 2
    print("\n".join(gpu_lines(json.loads(path.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
