"""Experiment 1 (backbones) and the full-bank comparison, run by ``pqkit patchcore sweep``.

Both read a config validated by :mod:`pqkit.patchcore.config` (see :mod:`pqkit.patchcore.sweep`
for the shared sections), store raw rows as CSV first and draw the figure from the CSV.

Experiment 1, ``experiment.name: exp1``: every backbone x input size x layer choice, each
scored with exact search (``experiment.search_method``, default ``pqkit_flat``) on the coreset of
the ``coreset`` section. ``experiment.backbones`` is a list of

- ``name``: a known backbone (``efficientnet_lite0``, ``efficientnet_lite1``,
  ``efficientnet_lite2``, weights from the installed packages), or ``module``:
  ``"package.module:function"``, a function returning any ``torch.nn.Module`` (with ``label``
  naming it in the results);
- ``layers``: a list of layer choices, each a list of layer names (shallowest first); default
  for a known backbone: its stride-8 and stride-16 blocks.

``experiment.image_sizes`` lists the input sizes. The layer choices of one backbone and size
share one forward pass (each choice's features are cached apart, under the same key as a
sweep with those feature settings). ``feature_ms_per_image`` is timed separately for each
choice, on ``experiment.timing_images`` test images (default 32, after one warm-up batch):
loading, resizing, the forward pass up to the choice's deepest layer and the aggregation, in
milliseconds per image, with torch's thread count in ``threads``. ``results_exp1.csv`` has one
row per choice, ``results_exp1_defects.csv`` the image AUROC of each defect class against the
normal test images, and ``exp1_backbones.png`` draws per-category bars and accuracy against
feature time (:func:`plot_exp1`, which also combines several sets' CSVs).

Full-bank comparison, ``experiment.name: fullbank``: ``experiment.banks`` lists memory banks,
each a ``coreset_method`` (``all``: no coreset, the full bank) with its ``coreset_ratio`` and a
``search_method`` with, for the IVF-PQ methods, ``nlist``, ``m``, ``nbits`` (numbers or
``auto``), ``nprobe`` (a list) and for ``*_refine`` ``k_factor`` and ``refine_m``. Each row gives
the fit time (``coreset_s + build_s``), the bank's memory, the search time per test image and
image and pixel AUROC (``results_fullbank.csv``, ``fullbank.png``).
"""

from __future__ import annotations

import importlib
import math
import os
import time

import numpy as np

from ._common import (COMPRESSION_COLOURS, Chatter, ConsoleTable, _cached_features, _coreset_bank, _evaluate,
                      _read_csv, _replace_atomically, _samples, _store_features, _write_csv, load_features)

__all__ = ["EXP1_COLUMNS", "EXP1_DEFECT_COLUMNS", "FULLBANK_COLUMNS", "plot_exp1", "plot_fullbank", "run_exp1",
           "run_fullbank"]

EXP1_COLUMNS = ["category", "backbone", "layers", "image_size", "grid", "target_dim", "image_auroc", "pixel_auroc",
                "feature_ms_per_image", "bank_size", "bank_mb", "coreset_s", "search_time_ms", "threads", "note"]
EXP1_DEFECT_COLUMNS = ["category", "backbone", "layers", "image_size", "defect", "n_images", "image_auroc"]
FULLBANK_COLUMNS = ["category", "label", "coreset_method", "coreset_ratio", "bank_size", "search_method", "nlist",
                    "m", "nbits", "nprobe", "k_factor", "refine_m", "coreset_s", "build_s", "fit_s", "bank_mb",
                    "search_time_ms", "image_auroc", "pixel_auroc", "note"]

#: Colours of the known backbones; others take the next free colour of this list.
BACKBONE_COLOURS = {"efficientnet_lite0": "tab:blue", "efficientnet_lite1": "tab:orange",
                    "efficientnet_lite2": "tab:green"}
_PALETTE = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


def _colour_map(names, known: dict) -> dict:
    """A colour per name: the known ones, then the palette in order of first appearance."""
    out, free = {}, [c for c in _PALETTE if c not in known.values()]
    for name in dict.fromkeys(names):
        out[name] = known.get(name) or free[len([n for n in out if n not in known]) % len(free)]
    return out


# ----------------------------------------------------------------------------- experiment 1
def _user_backbone(spec: str):
    """The torch module that ``"package.module:function"`` returns (called with no arguments)."""
    from ..vision.features import _torch

    torch = _torch()
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"experiment.backbones: cannot import {module_name!r} for module {spec!r} ({exc}); "
                         "is the package on the Python path?") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"experiment.backbones: {module_name!r} has no function {attribute!r} (module {spec!r})")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"experiment.backbones: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _backbone_label(choice: dict) -> str:
    return choice["label"] or choice["name"] or choice["module"].split(":")[1]


def _layer_choices(choice: dict) -> list:
    from ..vision.features import BACKBONES

    return [list(layers) for layers in (choice["layers"] or [BACKBONES[choice["name"]]["patch_layers"]])]


def _time_features(model, layers, size: int, paths: list, target_dim: int, batch_size: int) -> float:
    """Milliseconds per image to embed ``paths`` with one layer choice (after a warm-up batch)."""
    from .embedding import PatchEmbedder

    embedder = PatchEmbedder(model, layers, size, target_dim, batch_size)
    try:
        embedder.embed_paths(paths[:batch_size], progress=False)
        start = time.perf_counter()
        embedder.embed_paths(paths, progress=False)
        return 1e3 * (time.perf_counter() - start) / len(paths)
    finally:
        embedder.close()


def _defect_aurocs(labels, defects, scores) -> list:
    """(defect, number of its images, image AUROC against the normal images) per defect class."""
    from .scoring import image_auroc

    labels, defects = np.asarray(labels), np.asarray(defects)
    out = []
    for defect in dict.fromkeys(d for d in defects.tolist() if d != "good"):
        keep = (defects == defect) | (labels == 0)
        if (labels[keep] == 0).any():
            out.append((defect, int((defects == defect).sum()), image_auroc(labels[keep], np.asarray(scores)[keep])))
    return out


EXP1_TABLE = [("backbone", "backbone", ""), ("layers", "layers", ""), ("size", "image_size", ""),
              ("grid", "grid", ""), ("image AUROC", "image_auroc", ".4f"), ("pixel AUROC", "pixel_auroc", ".4f"),
              ("feature ms/image", "feature_ms_per_image", ".1f"), ("bank MB", "bank_mb", ".2f"),
              ("coreset s", "coreset_s", ".1f")]


def run_exp1(cfg: dict, progress: bool = True, log=print, chatter=None) -> list:
    """Experiment 1: backbones x input sizes x layer choices (module docstring); writes
    ``results_exp1.csv``, ``results_exp1_defects.csv`` and ``exp1_backbones.png``."""
    from ..vision.features import _torch, load_backbone
    from .data import _evenly
    from .embedding import PatchEmbedder
    from .neighbors import make_backend

    chatter = chatter if chatter is not None else Chatter()
    torch = _torch()
    exp, feats, core = cfg["experiment"], cfg["features"], cfg["coreset"]
    if exp["threads"]:
        import pqkit

        torch.set_num_threads(exp["threads"])
        pqkit.set_num_threads(exp["threads"])
    train, test = _samples(cfg["data"])
    timing_paths = [s.path for s in _evenly(test, exp["timing_images"])]
    category = cfg["data"]["category"]
    log(f"{category}: {len(train)} train and {len(test)} test images; coreset {core['method']} {core['ratio']:g}, "
        f"{exp['search_method']} search, torch threads {torch.get_num_threads()}")
    rows, defect_rows = [], []
    table = ConsoleTable(EXP1_TABLE, log, {
        "backbone": max(len(_backbone_label(c)) for c in exp["backbones"]),
        "layers": max(len("+".join(layers)) for c in exp["backbones"] for layers in _layer_choices(c))})
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    for choice in exp["backbones"]:
        label = _backbone_label(choice)
        model = load_backbone(choice["name"]) if choice["name"] else _user_backbone(choice["module"])
        choices = _layer_choices(choice)
        for size in choice.get("image_sizes") or exp["image_sizes"]:
            settings = [{**feats, "backbone": label, "layers": layers, "image_size": size} for layers in choices]
            missing = [i for i, f in enumerate(settings) if not _cached_features(f, train, test, check_only=True)]
            if missing:
                wanted = [choices[i] for i in missing]
                union = list(dict.fromkeys(name for layers in wanted for name in layers))
                embedder = PatchEmbedder(model, union, size, feats["target_dim"], feats["batch_size"])
                try:
                    train_arrays = embedder.embed_paths([s.path for s in train], progress=progress,
                                                        desc=f"{label} {size} px train", choices=wanted)
                    test_arrays = embedder.embed_paths([s.path for s in test], progress=progress,
                                                       desc=f"{label} {size} px test", choices=wanted)
                finally:
                    embedder.close()
                for i, train_array, test_array in zip(missing, train_arrays, test_arrays):
                    _store_features(settings[i], train, test, {"train": train_array, "test": test_array})
                del train_arrays, test_arrays, train_array, test_array
            for i, layers in enumerate(choices):
                data = _cached_features(settings[i], train, test)  # one choice's features in memory at a time
                run_cfg = {**cfg, "features": settings[i]}
                feature_ms = _time_features(model, layers, size, timing_paths, feats["target_dim"],
                                            feats["batch_size"])
                bank, coreset_s = _coreset_bank(run_cfg, data["train"], core["method"], core["ratio"])
                with chatter.capture(f"{label} {size} px"):
                    backend = make_backend(exp["search_method"]).fit(bank)
                    result = _evaluate(backend, data, run_cfg, keep_scores=True)
                base = {"category": category, "backbone": label, "layers": "+".join(layers), "image_size": size}
                row = {**base, "grid": f"{data['train'].shape[1]}x{data['train'].shape[2]}",
                       "target_dim": feats["target_dim"], "image_auroc": result["image_auroc"],
                       "pixel_auroc": result["pixel_auroc"], "feature_ms_per_image": feature_ms,
                       "bank_size": bank.shape[0], "bank_mb": result["memory_mb"], "coreset_s": coreset_s,
                       "search_time_ms": result["search_time_ms"], "threads": torch.get_num_threads(), "note": ""}
                rows.append(row)
                table.add(row)
                for defect, count, auroc in _defect_aurocs(data["labels"], data["defects"], result["scores"]):
                    defect_rows.append({**base, "defect": defect, "n_images": count, "image_auroc": auroc})
                del data, bank, backend
                # written after every row: a run cut short keeps what it measured
                _write_csv(os.path.join(out_dir, "results_exp1.csv"), EXP1_COLUMNS, rows)
                _write_csv(os.path.join(out_dir, "results_exp1_defects.csv"), EXP1_DEFECT_COLUMNS, defect_rows)
    plot_exp1([os.path.join(out_dir, "results_exp1.csv")], os.path.join(out_dir, "exp1_backbones.png"))
    return rows


def _config_label(row) -> str:
    short = row["backbone"].replace("efficientnet_", "")
    return f"{short} {row['layers'].replace('_blocks.', 'b')} {int(row['image_size'])}px"


def plot_exp1(csv_paths, png_path: str) -> None:
    """Per-category bars and accuracy against feature time, from experiment-1 CSVs.

    Parameters
    ----------
    csv_paths : list of str
        ``results_exp1.csv`` files (one per set); the ``results_exp1_defects.csv`` beside each,
        if present, adds a bar group per defect class.
    png_path : str

    Notes
    -----
    Top: image AUROC per category (each set, then each of its defect classes), one bar per
    configuration, coloured by backbone (lighter for smaller inputs, hatched by layer choice).
    Bottom: image and pixel AUROC against feature milliseconds per image, one colour per backbone
    in both panels, one marker per layer choice, sizes written beside the points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, groups = [], {}  # groups: category -> {config label: auroc}
    for path in csv_paths:
        found = [r for r in _read_csv(path) if not math.isnan(r["image_auroc"])]
        rows += found
        for r in found:
            groups.setdefault(r["category"], {})[_config_label(r)] = r["image_auroc"]
        defects_path = os.path.join(os.path.dirname(path), "results_exp1_defects.csv")
        if os.path.isfile(defects_path):
            for r in _read_csv(defects_path):
                r["image_size"] = float(r["image_size"])
                groups.setdefault(f"{r['category']}: {r['defect']}", {})[_config_label(r)] = r["image_auroc"]
    if not rows:
        raise ValueError(f"{list(csv_paths)!r} have no evaluated rows to plot")
    colours = _colour_map([r["backbone"] for r in rows], BACKBONE_COLOURS)
    layer_sets = list(dict.fromkeys((r["backbone"], r["layers"]) for r in rows))
    sizes = sorted({r["image_size"] for r in rows})
    configs = list(dict.fromkeys(_config_label(r) for r in rows))
    by_label = {_config_label(r): r for r in rows}
    fig = plt.figure(figsize=(20, 12))
    top = fig.add_subplot(2, 1, 1)
    width = 0.8 / len(configs)
    for j, label in enumerate(configs):
        r = by_label[label]
        shade = 0.45 + 0.55 * (sizes.index(r["image_size"]) + 1) / len(sizes)
        hatch = ["", "//", "..", "xx", "\\\\"][[ls for ls in layer_sets if ls[0] == r["backbone"]].index(
            (r["backbone"], r["layers"])) % 5]
        values = [groups[g].get(label, math.nan) for g in groups]
        top.bar(np.arange(len(groups)) + (j - (len(configs) - 1) / 2) * width, values, width, label=label,
                color=colours[r["backbone"]], alpha=shade, hatch=hatch, edgecolor="white", linewidth=0.3)
    top.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right")
    finite = [v for g in groups.values() for v in g.values() if not math.isnan(v)]
    top.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
    top.set(ylabel="image AUROC", title="1. image AUROC per category (colour: backbone; lighter: smaller input; "
                                        "hatch: layer choice)")
    # beside the bars, not over them: one column per 12 configurations
    top.legend(fontsize=8, ncol=(len(configs) + 11) // 12, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    categories = list(dict.fromkeys(r["category"] for r in rows))
    for k, (key, title) in enumerate((("image_auroc", "2. image AUROC vs feature time"),
                                      ("pixel_auroc", "3. pixel AUROC vs feature time"))):
        ax = fig.add_subplot(2, 2, 3 + k)
        shown = [r for r in rows if not math.isnan(r[key])]
        if not shown:
            ax.text(0.5, 0.5, "no pixel AUROC (no masks)", ha="center", va="center")
            ax.axis("off")
            continue
        for backbone, layers in layer_sets:
            for category in categories:
                sel = sorted((r for r in shown if (r["backbone"], r["layers"], r["category"]) == (backbone, layers, category)),
                             key=lambda r: r["image_size"])
                if not sel:
                    continue
                marker = _MARKERS[layer_sets.index((backbone, layers)) % len(_MARKERS)]
                ax.plot([r["feature_ms_per_image"] for r in sel], [r[key] for r in sel], marker=marker,
                        color=colours[backbone], ls=["-", "--", ":", "-."][categories.index(category) % 4],
                        label=f"{category} {backbone.replace('efficientnet_', '')} {layers.replace('_blocks.', 'b')}")
                for r in sel:
                    ax.annotate(f"{int(r['image_size'])}", (r["feature_ms_per_image"], r[key]), fontsize=8,
                                xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="feature extraction, ms per image", ylabel=key.replace("_", " "), title=title)
        ax.legend(fontsize=7)
    fig.suptitle("PatchCore backbones: accuracy against feature time (exact search)")
    fig.tight_layout()
    _replace_atomically(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- full memory bank
def _bank_label(bank: dict) -> str:
    if bank["label"]:
        return bank["label"]
    kept = "full bank" if bank["coreset_method"] == "all" else f"{bank['coreset_method']} {100 * bank['coreset_ratio']:g} %"
    search = bank["search_method"]
    if search.endswith("_refine"):
        reranker = f"PQ{bank['refine_m']}" if bank["refine_m"] else "exact"
        search += f" ({reranker} re-rank)"
    return f"{kept}, {search}"


FULLBANK_TABLE = [("bank", "label", ""), ("vectors", "bank_size", ""), ("nlist", "nlist", ""), ("m", "m", ""),
                  ("bits", "nbits", ""), ("nprobe", "nprobe", ""), ("fit s", "fit_s", ".1f"), ("MB", "bank_mb", ".2f"),
                  ("ms/image", "search_time_ms", ".2f"), ("image AUROC", "image_auroc", ".4f"),
                  ("pixel AUROC", "pixel_auroc", ".4f")]


def run_fullbank(cfg: dict, progress: bool = True, log=print, chatter=None) -> list:
    """The full-bank comparison (module docstring); writes ``results_fullbank.csv`` and ``fullbank.png``."""
    import pqkit

    from .neighbors import auto_params, make_backend

    chatter = chatter if chatter is not None else Chatter()
    exp = cfg["experiment"]
    threads = int(exp["threads"] or os.cpu_count() or 1)
    pqkit.set_num_threads(threads)
    data = load_features(cfg, progress=progress)
    category = cfg["data"]["category"]
    n_patches = int(np.prod(data["train"].shape[:3]))
    log(f"{category}: {n_patches:,} training patches from {data['train'].shape[0]} images, "
        f"{data['test'].shape[0]} test images")
    rows = []
    table = ConsoleTable(FULLBANK_TABLE, log, {"label": max(len(_bank_label(b)) for b in exp["banks"])})
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    for bank_cfg in exp["banks"]:
        label = _bank_label(bank_cfg)
        method = bank_cfg["search_method"]
        ratio = 1.0 if bank_cfg["coreset_method"] == "all" else bank_cfg["coreset_ratio"]
        bank, coreset_s = _coreset_bank(cfg, data["train"], bank_cfg["coreset_method"], ratio)
        params = {}
        if "ivfpq" in method:
            params = {k: bank_cfg[k] for k in ("nlist", "m", "nbits")}
            params["nprobe"] = bank_cfg["nprobe"][0]
            if method.endswith("_refine"):
                params.update(k_factor=bank_cfg["k_factor"], refine_m=bank_cfg["refine_m"])
        backend = make_backend(method, **params)
        backend.set_num_threads(threads)
        base = {"category": category, "label": label, "coreset_method": bank_cfg["coreset_method"],
                "coreset_ratio": ratio, "bank_size": bank.shape[0], "search_method": method,
                "coreset_s": coreset_s, "note": ""}
        start = time.perf_counter()
        try:
            with chatter.capture(label) as caught:
                backend.fit(bank)
        except (ValueError, RuntimeError) as exc:
            row = {**base, "note": f"not built: {' '.join(str(exc).split())}"}
            rows.append(row)
            table.add(row)
            continue
        build_s = time.perf_counter() - start
        base.update(build_s=build_s, fit_s=coreset_s + build_s,
                    note="; ".join(f"{w.category.__name__}: {w.message}" for w in caught))
        resolved = backend.params
        probes = [None]
        if "nprobe" in resolved:
            auto = auto_params(bank.shape[0], bank.shape[1], {"nlist": resolved["nlist"], "nprobe": "auto"})["nprobe"]
            probes = list(dict.fromkeys(auto if p == "auto" else min(p, resolved["nlist"]) for p in bank_cfg["nprobe"]))
        for nprobe in probes:
            if nprobe is not None:
                backend.set_nprobe(nprobe)
            with chatter.capture(label):
                result = _evaluate(backend, data, cfg)
            row = {**base, **{k: resolved.get(k, "") for k in ("nlist", "m", "nbits", "k_factor", "refine_m")},
                   "nprobe": "" if nprobe is None else nprobe, "bank_mb": result["memory_mb"],
                   "search_time_ms": result["search_time_ms"], "image_auroc": result["image_auroc"],
                   "pixel_auroc": result["pixel_auroc"]}
            rows.append(row)
            table.add(row)
            _write_csv(os.path.join(out_dir, "results_fullbank.csv"), FULLBANK_COLUMNS, rows)
        del backend, bank
    _write_csv(os.path.join(out_dir, "results_fullbank.csv"), FULLBANK_COLUMNS, rows)
    plot_fullbank(os.path.join(out_dir, "results_fullbank.csv"), os.path.join(out_dir, "fullbank.png"))
    return rows


def plot_fullbank(csv_path: str, png_path: str) -> None:
    """Image AUROC against fit time, bank memory and search time, and pixel AUROC against memory;
    one colour per memory bank (its label) in every panel, one point per nprobe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _read_csv(csv_path) if not math.isnan(r["image_auroc"])]
    if not rows:
        raise ValueError(f"{csv_path!r} has no evaluated rows to plot")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    colours = _colour_map(labels, {})
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    panels = (("fit_s", "image_auroc", "fit time, s (coreset + index)", "1. accuracy vs fit time"),
              ("bank_mb", "image_auroc", "memory bank, MB", "2. accuracy vs bank memory"),
              ("search_time_ms", "image_auroc", "search, ms per test image (log)", "3. accuracy vs search time"),
              ("bank_mb", "pixel_auroc", "memory bank, MB", "4. pixel AUROC vs bank memory"))
    for ax, (x, y, xlabel, title) in zip(axes.flat, panels):
        for i, label in enumerate(labels):
            sel = sorted((r for r in rows if r["label"] == label), key=lambda r: r["search_time_ms"])
            method = sel[0]["coreset_method"]
            ax.plot([r[x] for r in sel], [r[y] for r in sel], marker=_MARKERS[i % len(_MARKERS)], color=colours[label],
                    label=label, ls="-" if len(sel) > 1 else "none",
                    markeredgecolor=COMPRESSION_COLOURS.get(method, "black"))
            if len(sel) > 1 and x == "search_time_ms":
                for r in sel:
                    ax.annotate(f"p{int(r['nprobe'])}", (r[x], r[y]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        ax.set(xlabel=xlabel, ylabel=y.replace("_", " "), title=title,
               xscale="log" if x in ("search_time_ms", "bank_mb") else "linear")
        if all(math.isnan(r[y]) for r in rows):
            ax.text(0.5, 0.5, "no pixel AUROC (no masks)", ha="center", va="center", transform=ax.transAxes)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"PatchCore on {rows[0]['category']}: full memory bank with IVF-PQ against coreset banks")
    fig.tight_layout()
    _replace_atomically(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
