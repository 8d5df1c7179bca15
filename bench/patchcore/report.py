"""Markdown tables for the README from the PatchCore sweep CSVs (raw results are written first by
``pqkit patchcore sweep``; this only reads them).

    python bench/patchcore/report.py bench/patchcore/results/magnetic_tile/results.csv ...
    python bench/patchcore/report.py --summary bench/patchcore/results/*/results.csv
"""

from __future__ import annotations

import csv
import sys


def _fmt(value: str, digits: int) -> str:
    try:
        number = float(value)
        return "-" if number != number else f"{number:.{digits}f}"
    except ValueError:
        return value or "-"


def kf(row) -> str:
    """The suffix " (k_factor N)" of a re-ranked method, " (k_factor N, PQ64x8)" when it re-ranks
    with PQ codes (older CSVs have no k_factor or refine_m column)."""
    if not row.get("k_factor"):
        return ""
    refine = f", PQ{int(float(row['refine_m']))}x8" if float(row.get("refine_m") or 0) > 0 else ""
    return f" (k_factor {float(row['k_factor']):g}{refine})"


def exp3_table(path: str) -> str:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| set | method | m | bits | nprobe | image AUROC | pixel AUROC | ms / test image | speedup vs sklearn "
             "| memory KB | memory reduction | AUROC loss (points) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["image_auroc"]:
            continue
        lines.append(
            f"| {r['category']} | {r['search_method']}{kf(r)} | {r['m'] or '-'} | {r['pq_bits'] or '-'} | {r['nprobe'] or '-'} "
            f"| {_fmt(r['image_auroc'], 4)} | {_fmt(r['pixel_auroc'], 4)} | {_fmt(r['search_time_ms'], 2)} "
            f"| {_fmt(r['speedup'], 1)}x | {float(r['memory_mb']) * 1024:.0f} | {_fmt(r['memory_reduction'], 1)}x "
            f"| {_fmt(r['accuracy_loss_percent'], 2)} |")
    skipped = sorted({(r["search_method"], r["pq_bits"]) for r in rows if not r["image_auroc"]})
    if skipped:
        lines.append("")
        lines.append("Not built (rows kept in the CSV with the reason): "
                     + ", ".join(f"{m} {b} bits" for m, b in skipped) + ".")
    return "\n".join(lines)


def exp2_table(path: str) -> str:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| set | coreset | kept | bank size | image AUROC | pixel AUROC | coreset s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['method']} | {100 * float(r['compression_ratio']):.1f} % | {r['bank_size']} "
                     f"| {_fmt(r['image_auroc'], 4)} | {_fmt(r['pixel_auroc'], 4)} | {_fmt(r['coreset_s'], 1)} |")
    return "\n".join(lines)




SUMMARY_SETTINGS = [("", "", ""), ("8", "4", "1"), ("8", "8", "8"), ("32", "4", "4"), ("32", "4", "8"), ("32", "4", "16"), ("32", "8", "8"),
                    ("32", "8", "16"), ("32", "8", "32"), ("32", "8", "64")]


def summary_table(paths) -> str:
    """Exact rows and a few IVF-PQ settings, pqkit next to faiss at the same setting."""
    lines = ["| set (bank) | search | m | bits | nprobe | image AUROC | pixel AUROC | ms / image | vs sklearn "
             "| vs faiss (same setting) | memory KB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r["image_auroc"]]
        key = {(r["search_method"], r["m"], r["pq_bits"], r["nprobe"], r.get("refine_m") or ""): r for r in rows}
        refines = sorted({k[4] for k in key}, key=lambda v: float(v or 0))
        for method in ("exact_knn", "pqkit_flat", "faiss_flat", "pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine",
                       "faiss_ivfpq_refine"):
            for (m, bits, nprobe), refine in ((s, r) for r in refines for s in SUMMARY_SETTINGS):
                r = key.get((method, m, bits, nprobe, refine))
                if r is None:
                    continue
                twin = key.get((method.replace("pqkit_", "faiss_") if method.startswith("pqkit_ivfpq") else "",
                                m, bits, nprobe, refine))
                versus = f"{float(twin['search_time_ms']) / float(r['search_time_ms']):.1f}x" if twin else "-"
                lines.append(
                    f"| {r['category']} ({r['bank_size']}) | {method}{kf(r)} | {m or '-'} | {bits or '-'} | {nprobe or '-'} "
                    f"| {_fmt(r['image_auroc'], 4)} | {_fmt(r['pixel_auroc'], 4)} | {_fmt(r['search_time_ms'], 1)} "
                    f"| {_fmt(r['speedup'], 1)}x | {versus} | {float(r['memory_mb']) * 1024:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summary"]:
        print(summary_table(sys.argv[2:]))
    else:
        for csv_path in sys.argv[1:]:
            print(exp2_table(csv_path) if csv_path.endswith("results_exp2.csv") else exp3_table(csv_path))
            print()
