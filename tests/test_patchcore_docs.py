"""The README's PatchCore table and docs/patchcore.md are generated from the stored sweep CSVs:
they must be current, and each result cell must follow from its rows by the rule it states."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("patchcore_report", ROOT / "bench" / "patchcore" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_readme_table_is_generated_from_the_stored_results():
    report = _report()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert report.README_BEGIN in text and report.README_END in text
    part = text.split(report.README_BEGIN, 1)[1].split(report.README_END, 1)[0]
    assert part.strip() == report.readme_table(), (
        "the README's PatchCore table is stale: run python bench/patchcore/report.py --docs")
    # every experiment of both sets has been run: no cell still waits for its command
    assert "not run yet" not in part


def test_docs_page_is_generated_from_the_stored_results():
    report = _report()
    page = ROOT / "docs" / "patchcore.md"
    assert page.read_text(encoding="utf-8") == report.docs_page(page), (
        "docs/patchcore.md is stale: run python bench/patchcore/report.py --docs")


def test_write_readme_part_replaces_only_the_marked_part(tmp_path):
    report = _report()
    readme = tmp_path / "README.md"
    readme.write_text(f"# head\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\ntail\n", encoding="utf-8")
    report.write_readme_part(readme)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# head\n\n") and text.endswith("\n\ntail\n") and "old" not in text
    assert report.readme_table() in text
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no patchcore-table markers"):
        report.write_readme_part(readme)
    assert readme.read_text(encoding="utf-8") == "no markers\n"


def _bank(label, method, ratio, search, auroc, fit, mb, ms="1.0"):
    return {"category": "c", "label": label, "coreset_method": method, "coreset_ratio": ratio,
            "bank_size": "1", "search_method": search, "nlist": "", "m": "", "nbits": "", "nprobe": "",
            "k_factor": "", "refine_m": "", "coreset_s": "0", "build_s": "0", "fit_s": fit, "bank_mb": mb,
            "search_time_ms": ms, "image_auroc": auroc, "pixel_auroc": "", "note": ""}


def test_fullbank_cell_picks_the_most_accurate_full_bank_within_the_coreset_memory(tmp_path):
    report = _report()
    path = _write(tmp_path / "results_fullbank.csv", [
        _bank("v1 10 %", "v1", "0.1", "pqkit_flat", "0.90", "100", "10"),
        _bank("full exact", "all", "1", "pqkit_flat", "0.95", "0.1", "100"),     # the ceiling: not a candidate
        _bank("full big", "all", "1", "pqkit_ivfpq_refine", "0.93", "5", "40"),  # more memory than the coreset
        _bank("full small", "all", "1", "pqkit_ivfpq", "0.89", "4", "8"),
        _bank("full small, more probes", "all", "1", "pqkit_ivfpq", "0.91", "4", "8", ms="3.0"),
    ])
    assert report.fullbank_cell(path) == ("10 % coreset 0.900 (fit 100 s); full bank IVF-PQ 0.910 "
                                          "(fit 4 s, bank 0.80x)")


def test_exp1_cell_names_the_best_setting_and_the_default_before_and_after(tmp_path):
    report = _report()

    def row(backbone, layers, size, auroc):
        return {"backbone": backbone, "layers": layers, "image_size": size, "image_auroc": auroc}

    path = _write(tmp_path / "results_exp1.csv", [
        row("efficientnet_lite0", "_blocks.4+_blocks.10", "160", "0.85"),
        row("efficientnet_lite2", "_blocks.6+_blocks.14", "320", "0.93"),
        row("efficientnet_lite1", "_blocks.6+_blocks.14", "224", "0.80"),
    ])
    assert report.exp1_cell(path) == "best lite2 6+14, 320 px: 0.930"
    # the default's row (PatchCore()'s backbone, its default layers, its default size) and the previous one
    from pqkit.vision.features import BACKBONES

    layers = "+".join(BACKBONES["efficientnet_lite0"]["patch_layers"])
    short = "+".join(name.split(".")[-1] for name in layers.split("+"))
    path = _write(tmp_path / "results_exp1.csv", [
        row("efficientnet_lite0", "_blocks.4+_blocks.10", "224", "0.88"),
        row("efficientnet_lite0", layers, "224", "0.90"),
        row("efficientnet_lite2", "_blocks.6+_blocks.14", "320", "0.93"),
    ])
    assert report.exp1_cell(path) == (f"best lite2 6+14, 320 px: 0.930; default lite0 {short}, 224 px: 0.900 "
                                      "(before: lite0 4+10, 224 px: 0.880)")
