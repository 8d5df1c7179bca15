"""PatchCore experiments driven by a YAML config: 1 (backbones), 2 (coreset v1 vs v2), 3 (exact vs
approximate search) and the full-bank comparison.

``pqkit patchcore sweep --config exp3.yaml`` runs :func:`run_sweep`. The config (see
``bench/patchcore/exp3.yaml``) has the sections

- ``data``: ``kind: mvtec`` with ``root`` (an MVTec-layout category folder), ``kind: elpv``
  with ``cell_type`` (mono/poly/all), ``train_fraction``, ``seed``, or ``kind: sample`` (the
  built-in sample category); ``category`` names the set in the CSV. A relative ``root`` is
  looked up first in the config file's folder, then in the current directory; ``--root DIR``
  (``root=``) replaces it and ``--sample`` (``sample=True``) replaces the data section;
- ``features``: ``backbone``, ``layers``, ``image_size``, ``target_dim``, ``batch_size``,
  ``cache_dir`` (patch features are cached there as .npy, keyed by a hash of the file list and
  the feature settings);
- ``coreset``: ``method``, ``ratio``, ``projection_dim``, ``seed``;
- ``scoring``: ``num_neighbors`` (b of the reweighting), ``reweight``, ``pixel_auroc``,
  ``pixel_stride`` (pixel AUROC over every stride-th pixel of the maps in each direction);
- ``experiment``: ``name`` ("exp3", "exp2", "exp1" or "fullbank"; the last two in
  :mod:`pqkit.patchcore.experiments`); for exp3 ``search_methods`` (any of
  :data:`~pqkit.patchcore.neighbors.BACKENDS`) and ``faiss_config`` (``pq_bits``, ``nprobe``,
  ``n_clusters`` (or ``auto``), ``m``: the grid shared by pqkit_ivfpq, faiss_ivfpq and pqkit_pq, named as in the
  seed; ``m`` may also be a list; ``k_factor``, default 4, for the ``*_ivfpq_refine`` methods,
  which re-rank ``k_factor`` candidates per result; ``refine_m``, default 0, an int or a list,
  what they re-rank with: 0 the exact bank vectors, a positive value 8-bit PQ codes of that many
  sub-quantizers), ``threads``,
  ``timing_repeats`` and ``timing_budget_s`` (below); for exp2 ``methods`` and
  ``compression_ratios``;
- ``output``: ``dir``.

The config is validated against a declared schema (:mod:`pqkit.patchcore.config`: unknown keys,
wrong types and out-of-range values are refused, naming the key) and the output folder is checked
before any work; result files of an earlier run are replaced only with ``overwrite=True``
(``--overwrite`` on the command line). Raw rows go to ``results.csv`` first; the figure is drawn
from the CSV afterwards (:func:`plot_exp3`, :func:`plot_exp2`).

The console shows one compact table row per result. Warnings and library messages the user
cannot act on (faiss's k-means "please provide at least ... training points", one per build;
pqkit's ``TrainingWarning`` for a grid's explicit sizes) are kept out of the table: each row's
CSV ``note`` keeps its warning, and the console ends with one line per kind of message.

Exp3 timings: ``search_time_ms`` is the median wall time of a k = 1 search of all patches of all
test images, divided by the number of test images (milliseconds per test image), with every
backend restricted to the same number of threads. The search is repeated up to
``experiment.timing_repeats`` times (default 5) while the runs so far took less than
``experiment.timing_budget_s`` seconds (default 3), so a fast search gets several runs and a slow
baseline one or two; the reweighting's small extra searches are not timed.
``speedup`` and ``memory_reduction`` are relative to the ``exact_knn`` row (scikit-learn, the
seed's baseline) and ``accuracy_loss_percent = 100 * (auroc_exact_knn - auroc)``. A grid point a
backend cannot build (e.g. pq_bits = 16 needs at least 2**16 memory-bank vectors to train its
codebooks) is kept as a row with empty metrics and the reason in ``note``.
"""

from __future__ import annotations

import math
import os
import re
import time

import numpy as np

from ._common import (COMPRESSION_COLOURS, METHOD_COLOURS, TIMING_BUDGET_S, TIMING_REPEATS,  # noqa: F401
                      Chatter, ConsoleTable, _cached_features, _coreset_bank, _evaluate, _feature_cache_paths,
                      _mask_at, _read_csv, _replace_atomically, _samples, _store_features, _timed_search,
                      _write_csv, load_features)

__all__ = ["EXP2_COLUMNS", "EXP3_COLUMNS", "OUTPUT_FILES", "check_outputs", "load_config", "load_features",
           "plot_exp2", "plot_exp3", "run_exp2", "run_exp3", "run_sweep"]

EXP3_COLUMNS = ["category", "search_method", "pq_bits", "nprobe", "image_auroc", "memory_mb", "search_time_ms",
                "speedup", "memory_reduction", "accuracy_loss_percent", "pixel_auroc", "n_clusters", "m",
                "bank_size", "build_s", "note", "k_factor", "refine_m", "feature_ms_per_image", "scoring_time_ms",
                "latency_ms"]
# Exact searches: built once, no grid.
EXACT_METHODS = ("exact_knn", "pqkit_flat", "torch_cdist", "faiss_flat")
# Methods built once per (m, pq_bits) and searched at every nprobe of the grid.
IVFPQ_METHODS = ("pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine", "faiss_ivfpq_refine")
EXP2_COLUMNS = ["category", "method", "compression_ratio", "bank_size", "image_auroc", "pixel_auroc",
                "memory_reduction", "coreset_s"]


#: Files each experiment writes into output.dir (existing ones are replaced only with overwrite=True).
OUTPUT_FILES = {"exp3": ("results.csv", "exp3_analysis.png"), "exp2": ("results_exp2.csv", "exp2_coreset.png"),
                "exp1": ("results_exp1.csv", "results_exp1_defects.csv", "exp1_backbones.png"),
                "fullbank": ("results_fullbank.csv", "fullbank.png")}



def _resolve_root(root: str, config_path) -> str:
    """A relative data.root: the config file's folder if it holds it, else the current directory
    (the path is then kept as written, so feature-cache keys stay those of earlier runs)."""
    if os.path.isabs(root):
        return root
    beside = os.path.normpath(os.path.join(os.path.dirname(os.fspath(config_path)), root))
    return beside if os.path.isdir(beside) else root


def load_config(path, root=None, sample: bool = False) -> dict:
    """Read a sweep YAML config, validate it and fill in defaults (module docstring).

    The file is validated against :class:`pqkit.patchcore.config.SweepConfig`: unknown keys,
    wrong types and out-of-range values raise one-line ValueErrors naming the key.

    Parameters
    ----------
    path : str or os.PathLike
    root : str, optional
        Replaces ``data.root`` (the config must have ``data.kind: mvtec``; the category is then
        named after the folder); relative to the current directory.
    sample : bool, default False
        Replace the data section by the built-in sample category.

    Returns
    -------
    dict
        One dict per section, every key present (defaults filled in); a relative ``data.root`` is
        joined to the config file's folder when that folder holds it, else kept (relative to the
        current directory); ``data.category`` defaults to the folder name (mvtec),
        ``elpv_<cell_type>`` or ``sample``.
    """
    from .config import read_config

    cfg = read_config(path).model_dump()
    data = cfg["data"]
    if sample:
        data.update(kind="sample", root=None, category="sample")
    elif root is not None:
        if data["kind"] != "mvtec":
            raise ValueError(f"--root replaces data.root of an MVTec-layout config, but {os.fspath(path)!r} has "
                             f"data.kind {data['kind']}; use --sample, or a config with kind: mvtec")
        data["root"] = os.fspath(root)
        data["category"] = None  # named after the folder given
    elif data["kind"] == "mvtec":
        data["root"] = _resolve_root(data["root"], path)
    if data["category"] is None:
        data["category"] = (os.path.basename(os.path.normpath(data["root"])) if data["kind"] == "mvtec"
                            else "sample" if data["kind"] == "sample" else f"elpv_{data['cell_type']}")
    cfg["config_path"] = os.fspath(path)
    return cfg


def check_outputs(cfg: dict, overwrite: bool = False) -> list:
    """Check, before any work, that the experiment can write its results; return their paths.

    Raises ValueError when ``output.dir`` or ``features.cache_dir`` cannot be created (a file is in
    the way, or a folder is not writable), or when a result file of this experiment already exists
    and ``overwrite`` is false.
    """
    from .._cli import check_creatable_dir

    out_dir = cfg["output"]["dir"]
    check_creatable_dir(out_dir, "output.dir")
    check_creatable_dir(cfg["features"]["cache_dir"], "features.cache_dir")
    paths = [os.path.join(out_dir, name) for name in OUTPUT_FILES[cfg["experiment"]["name"]]]
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(f"{path!r} is a folder; the sweep writes a file there: move it or change output.dir")
        if os.path.lexists(path) and not overwrite:
            raise ValueError(f"{path!r} exists (results of an earlier run); pass --overwrite to replace it, "
                             "or change output.dir")
    return paths




def _check_data_root(cfg: dict) -> None:
    """A data.root that does not exist: one line naming where it was looked for, and the fix."""
    data = cfg["data"]
    if data["kind"] == "mvtec" and not os.path.isdir(data["root"]):
        raise ValueError(f"data folder not found: {data['root']!r} (data.root of {cfg.get('config_path', 'the config')}; "
                         "a relative data.root is looked up in the config file's folder, then in the current "
                         "directory); pass --root DIR with an MVTec-layout category folder, or --sample")






















def _grid(cfg: dict) -> dict:
    grid = dict(cfg["experiment"].get("faiss_config") or {})
    grid.setdefault("pq_bits", [8])
    grid.setdefault("nprobe", [1])
    grid.setdefault("n_clusters", 100)
    grid.setdefault("m", 8)
    grid.setdefault("k_factor", 4)
    grid.setdefault("refine_m", 0)
    for name in ("pq_bits", "nprobe", "m", "refine_m"):
        if not isinstance(grid[name], list):
            grid[name] = [grid[name]]
    return grid


# ----------------------------------------------------------------------------- console








def _short_note(note: str) -> str:
    if not note:
        return ""
    return "not built" if note.startswith("not built") else note.split(":", 1)[0]


# ----------------------------------------------------------------------------- experiments
EXP3_TABLE = [("method", "label", ""), ("m", "m", ""), ("bits", "pq_bits", ""), ("nprobe", "nprobe", ""),
              ("image AUROC", "image_auroc", ".4f"), ("pixel AUROC", "pixel_auroc", ".4f"),
              ("ms/image", "search_time_ms", ".2f"), ("MB", "memory_mb", ".2f"), ("build s", "build_s", ".1f"),
              ("note", "short_note", "")]


def _feature_time(cfg: dict, threads: int) -> float:
    """Milliseconds per image of feature extraction with the config's backbone, layers and size,
    on ``experiment.timing_images`` test images spread over the test set (torch at ``threads``)."""
    from ..vision.features import BACKBONES, _torch, load_backbone
    from .data import _evenly
    from .experiments import _time_features

    torch = _torch()
    feats = cfg["features"]
    _, test = _samples(cfg["data"])
    paths = [s.path for s in _evenly(test, int(cfg["experiment"].get("timing_images") or 32))]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layers = list(feats.get("layers") or BACKBONES[feats["backbone"]]["patch_layers"])
        return _time_features(load_backbone(feats["backbone"]), layers, feats["image_size"], paths,
                              feats["target_dim"], feats["batch_size"])
    finally:
        torch.set_num_threads(previous)


def run_exp3(cfg: dict, progress: bool = True, log=print, chatter=None) -> list:
    """Experiment 3: every search method (and grid point) on one memory bank; writes results.csv."""
    from .neighbors import make_backend

    chatter = chatter if chatter is not None else Chatter()
    methods = cfg["experiment"].get("search_methods") or ["exact_knn", "pqkit_flat", "pqkit_ivfpq"]
    threads = int(cfg["experiment"].get("threads") or os.cpu_count() or 1)
    grid = _grid(cfg)
    data = load_features(cfg, progress=progress)
    bank, coreset_s = _coreset_bank(cfg, data["train"], cfg["coreset"]["method"], cfg["coreset"]["ratio"])
    category = cfg["data"]["category"]
    import pqkit

    pqkit.set_num_threads(threads)
    feature_ms = _feature_time(cfg, threads)
    log(f"{category}: memory bank {bank.shape} from {data['train'].shape[0]} train images "
        f"(coreset {cfg['coreset']['method']} {cfg['coreset']['ratio']:.3g}, {coreset_s:.1f} s), "
        f"{data['test'].shape[0]} test images x {data['test'].shape[1] * data['test'].shape[2]} patches; "
        f"features {feature_ms:.1f} ms per image")
    rows = []
    notes = {}
    table = ConsoleTable(EXP3_TABLE, log, {"label": max(len(m) for m in methods) + 12})

    def add_row(method, nbits, nprobe, backend, build_s, note="", m="", refine_m=""):
        if backend is not None and notes.get(method):
            note = notes[method]
        nlist = grid["n_clusters"] if method in IVFPQ_METHODS else ""
        if backend is not None and "nlist" in backend.params:
            nlist = backend.params["nlist"]
        row = {"category": category, "search_method": method, "pq_bits": nbits, "nprobe": nprobe,
               "n_clusters": nlist, "k_factor": grid["k_factor"] if method.endswith("_refine") else "",
               "m": m, "refine_m": refine_m, "bank_size": bank.shape[0],
               "build_s": build_s, "note": note}
        if backend is not None:
            with chatter.capture(method):
                row.update(_evaluate(backend, data, cfg))
            row["feature_ms_per_image"] = feature_ms
            row["latency_ms"] = feature_ms + row["search_time_ms"] + row["scoring_time_ms"]
        rows.append(row)
        suffix = f" kf{grid['k_factor']:g}" + (f" PQ{refine_m}" if refine_m else "") if method.endswith("_refine") else ""
        table.add({**row, "label": method + suffix, "short_note": _short_note(note)})

    def build(name, **params):
        backend = make_backend(name, **params)
        backend.set_num_threads(threads)
        start = time.perf_counter()
        with chatter.capture(f"{name} m={params.get('m', '-')} bits={params.get('nbits', '-')}") as caught:
            backend.fit(bank)
        notes[name] = "; ".join(f"TrainingWarning: {w.message}" for w in caught
                                if issubclass(w.category, pqkit.TrainingWarning))
        return backend, time.perf_counter() - start

    for method in methods:
        if method in EXACT_METHODS:
            backend, build_s = build(method)
            add_row(method, "", "", backend, build_s)
        elif method == "pqkit_pq":
            for m, nbits in ((m, nbits) for m in grid["m"] for nbits in grid["pq_bits"]):
                try:
                    backend, build_s = build(method, m=m, nbits=nbits)
                except (ValueError, RuntimeError) as exc:
                    add_row(method, nbits, "", None, "", f"not built: {exc}", m=m)
                    continue
                add_row(method, nbits, "", backend, build_s, m=m)
        elif method in IVFPQ_METHODS:
            refined = method.endswith("_refine")
            for m, nbits, refine_m in ((m, nbits, r) for m in grid["m"] for nbits in grid["pq_bits"]
                                       for r in (grid["refine_m"] if refined else [""])):
                refine = {"k_factor": grid["k_factor"], "refine_m": refine_m} if refined else {}
                labels = {"m": m, "refine_m": refine_m}
                if bank.shape[0] < 2 ** nbits:
                    # checked up front for both libraries alike: faiss would otherwise abort the
                    # process or spend minutes on a codebook with more centroids than vectors
                    for nprobe in grid["nprobe"]:
                        add_row(method, nbits, nprobe, None, "",
                                f"not built: pq_bits={nbits} needs >= 2**{nbits} = {2 ** nbits} training vectors, "
                                f"the memory bank has {bank.shape[0]}", **labels)
                    continue
                try:
                    backend, build_s = build(method, nlist=grid["n_clusters"], m=m, nbits=nbits,
                                             nprobe=1, **refine)
                except (ValueError, RuntimeError) as exc:
                    for nprobe in grid["nprobe"]:
                        add_row(method, nbits, nprobe, None, "", f"not built: {exc}", **labels)
                    continue
                for nprobe in dict.fromkeys(min(p, backend.params["nlist"]) for p in grid["nprobe"]):
                    backend.set_nprobe(nprobe)  # at most the lists an auto n_clusters gave
                    add_row(method, nbits, nprobe, backend, build_s, **labels)
        else:
            raise ValueError(f"unknown search method {method!r} in experiment.search_methods")

    baseline = next((r for r in rows if r["search_method"] == "exact_knn"), None) or next(
        (r for r in rows if r["search_method"] in EXACT_METHODS), None)
    for row in rows:
        if baseline is None or "image_auroc" not in row:
            continue
        row["speedup"] = baseline["search_time_ms"] / row["search_time_ms"]
        row["memory_reduction"] = baseline["memory_mb"] / row["memory_mb"]
        row["accuracy_loss_percent"] = 100.0 * (baseline["image_auroc"] - row["image_auroc"])
    for kind in sorted({r["note"] for r in rows if r["note"].startswith("not built")}):
        chatter.add("not built: " + re.sub(r"[0-9]+", "N", kind), kind, "")
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    _write_csv(os.path.join(out_dir, "results.csv"), EXP3_COLUMNS, rows)
    plot_exp3(os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "exp3_analysis.png"))
    return rows


EXP2_TABLE = [("coreset", "method", ""), ("kept", "compression_ratio", ".3g"), ("bank", "bank_size", ""),
              ("image AUROC", "image_auroc", ".4f"), ("pixel AUROC", "pixel_auroc", ".4f"),
              ("coreset s", "coreset_s", ".1f")]


def run_exp2(cfg: dict, progress: bool = True, log=print, chatter=None) -> list:
    """Experiment 2: coreset v1 vs v2 at several compression ratios, exact search (pqkit IndexFlat)."""
    from .neighbors import make_backend

    chatter = chatter if chatter is not None else Chatter()
    exp = cfg["experiment"]
    methods = exp.get("methods") or ["v1", "v2"]
    ratios = exp.get("compression_ratios") or [0.005, 0.01, 0.05]
    data = load_features(cfg, progress=progress)
    n_train_patches = int(np.prod(data["train"].shape[:3]))
    category = cfg["data"]["category"]
    rows = []
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    table = ConsoleTable(EXP2_TABLE, log)
    for ratio in ratios:  # smallest banks first: a run cut short still compares v1 and v2
        for method in methods:
            bank, coreset_s = _coreset_bank(cfg, data["train"], method, float(ratio))
            with chatter.capture(f"{method} {ratio:g}"):
                backend = make_backend("pqkit_flat").fit(bank)
                result = _evaluate(backend, data, cfg)
            row = {"category": category, "method": method, "compression_ratio": float(ratio),
                   "bank_size": bank.shape[0], "memory_reduction": n_train_patches / bank.shape[0],
                   "coreset_s": coreset_s, **result}
            rows.append(row)
            table.add(row)
            _write_csv(os.path.join(out_dir, "results_exp2.csv"), EXP2_COLUMNS, rows)
    _write_csv(os.path.join(out_dir, "results_exp2.csv"), EXP2_COLUMNS, rows)
    plot_exp2(os.path.join(out_dir, "results_exp2.csv"), os.path.join(out_dir, "exp2_coreset.png"))
    return rows


def run_sweep(config_path, progress: bool = True, log=print, overwrite: bool = False, root=None,
              sample: bool = False) -> list:
    """Run the experiment a YAML config names (``experiment.name``: exp3, the default, exp2, exp1
    or fullbank).

    The config and the output folder are checked before any work (:func:`load_config`,
    :func:`check_outputs`); existing result files are replaced only when ``overwrite`` is true.
    ``root`` replaces ``data.root`` and ``sample`` the whole data section (the built-in sample).
    The rows are logged as a table; warnings and library messages are summarised at the end,
    one line per kind (:class:`Chatter`).
    """
    cfg = load_config(config_path, root=root, sample=sample)
    check_outputs(cfg, overwrite)
    _check_data_root(cfg)
    chatter = Chatter()
    name = cfg["experiment"]["name"]
    if name in ("exp1", "fullbank"):
        from . import experiments

        run = experiments.run_exp1 if name == "exp1" else experiments.run_fullbank
    else:
        run = run_exp2 if name == "exp2" else run_exp3
    rows = run(cfg, progress, log, chatter)
    for line in chatter.summary():
        log(line)
    return rows


# ----------------------------------------------------------------------------- plots




def _label(row) -> str:
    if row["search_method"] in IVFPQ_METHODS:
        label = f"{row['search_method']} m{int(row['m'])} {int(row['pq_bits'])}b p{int(row['nprobe'])}"
        k_factor, refine_m = row.get("k_factor"), row.get("refine_m")
        if isinstance(k_factor, float) and not math.isnan(k_factor):
            label += f" kf{k_factor:g}"
        if isinstance(refine_m, float) and refine_m > 0:
            label += f" PQ{int(refine_m)}x8"
        return label
    if row["search_method"] == "pqkit_pq":
        return f"pqkit_pq m{int(row['m'])} {int(row['pq_bits'])}b"
    return row["search_method"]


def plot_exp3(csv_path: str, png_path: str) -> None:
    """The seven panels of the seed: accuracy vs speedup, memory vs accuracy, AUROC vs nprobe,
    search-speed bars, memory bars, accuracy-loss heatmap and speedup heatmap (pq_bits x nprobe,
    pqkit IVF-PQ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _read_csv(csv_path) if not math.isnan(r["image_auroc"])]
    if not rows:
        raise ValueError(f"{csv_path!r} has no evaluated rows to plot")
    category = rows[0]["category"]
    colours = METHOD_COLOURS  # one colour per method in every panel
    fig, axes = plt.subplots(3, 3, figsize=(18, 15))
    ax = axes[0, 0]
    for method in dict.fromkeys(r["search_method"] for r in rows):
        sel = [r for r in rows if r["search_method"] == method]
        ax.scatter([r["speedup"] for r in sel], [r["image_auroc"] for r in sel], label=method, c=colours.get(method))
    # Without an exact_knn row there is no speedup to show, and a log axis of no positive values fails.
    has_speedup = any(r["speedup"] > 0 for r in rows)
    ax.set(xscale="log" if has_speedup else "linear", xlabel="speedup vs exact_knn (log)", ylabel="image AUROC",
           title="1. accuracy vs speedup" + ("" if has_speedup else " (no exact_knn row)"))
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for method in dict.fromkeys(r["search_method"] for r in rows):
        sel = [r for r in rows if r["search_method"] == method]
        ax.scatter([r["memory_mb"] for r in sel], [r["image_auroc"] for r in sel], label=method, c=colours.get(method))
    ax.set(xscale="log", xlabel="memory (MB, log)", ylabel="image AUROC", title="2. memory vs accuracy")
    ax = axes[0, 2]
    # the method's colour; the line style tells the bits, the marker the sub-quantizers
    styles, markers = {8: "-", 4: "--"}, ["o", "s", "^", "D", "v"]
    all_m = sorted({r["m"] for r in rows if r["search_method"] in IVFPQ_METHODS})
    for method in IVFPQ_METHODS:
        for m, nbits in sorted({(r["m"], r["pq_bits"]) for r in rows if r["search_method"] == method}):
            sel = sorted((r for r in rows if r["search_method"] == method and r["pq_bits"] == nbits and r["m"] == m),
                         key=lambda r: r["nprobe"])
            ax.plot([r["nprobe"] for r in sel], [r["image_auroc"] for r in sel], color=colours.get(method),
                    marker=markers[all_m.index(m) % len(markers)], ls=styles.get(int(nbits), ":"),
                    label=f"{method} m={int(m)} {int(nbits)} bits")
    for r in rows:
        if r["search_method"] == "exact_knn":
            ax.axhline(r["image_auroc"], color="black", lw=0.8, label="exact")
    ax.set(xlabel="nprobe", ylabel="image AUROC", title="3. AUROC vs nprobe")
    ax.legend(fontsize=8)
    labels = [_label(r) for r in rows]
    bar_colours = [colours.get(r["search_method"]) for r in rows]
    ax = axes[1, 0]
    ax.barh(labels, [r["search_time_ms"] for r in rows], color=bar_colours)
    ax.set(xscale="log", xlabel="search ms per test image (log)", title="4. search speed")
    ax.tick_params(axis="y", labelsize=7)
    ax = axes[1, 1]
    ax.barh(labels, [r["memory_mb"] for r in rows], color=bar_colours)
    ax.set(xscale="log", xlabel="memory bank MB (log)", title="5. memory")
    ax.tick_params(axis="y", labelsize=7)
    for ax, key, title, cmap in ((axes[1, 2], "accuracy_loss_percent", "6. accuracy loss, AUROC points (pqkit IVF-PQ)", "Reds"),
                                 (axes[2, 0], "speedup", "7. speedup vs exact_knn (pqkit IVF-PQ)", "Greens")):
        sel = [r for r in rows if r["search_method"] == "pqkit_ivfpq"]
        first_m = min((r["m"] for r in sel), default=math.nan)
        sel = [r for r in sel if r["m"] == first_m]  # the seed's grid: one m
        bits = sorted({r["pq_bits"] for r in sel})
        probes = sorted({r["nprobe"] for r in sel})
        grid = np.full((len(bits), len(probes)), np.nan)
        for r in sel:
            grid[bits.index(r["pq_bits"]), probes.index(r["nprobe"])] = r[key]
        image = ax.imshow(grid, cmap=cmap, aspect="auto")
        ax.set(xticks=range(len(probes)), xticklabels=[int(p) for p in probes], yticks=range(len(bits)),
               yticklabels=[int(b) for b in bits], xlabel="nprobe", ylabel="pq_bits",
               title=f"{title}, m={first_m:.0f}")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):  # white on the dark half of the colour map, black on the light
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=11, fontweight="bold",
                        color="white" if image.norm(value) > 0.55 else "black")
        fig.colorbar(image, ax=ax)
    axes[2, 1].axis("off")
    axes[2, 2].axis("off")
    fig.suptitle(f"PatchCore memory-bank search on {category}: exact vs IVF-PQ (pqkit, faiss)")
    fig.tight_layout()
    _replace_atomically(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_exp2(csv_path: str, png_path: str) -> None:
    """Line plot: image AUROC against coreset size, one line per method and category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_csv(csv_path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, ax in zip(("image_auroc", "pixel_auroc"), axes):
        if all(math.isnan(r[key]) for r in rows):
            ax.text(0.5, 0.5, f"no {key.replace('_', ' ')} (the set has no masks)", ha="center", va="center")
            ax.axis("off")
            continue
        categories = list(dict.fromkeys(r["category"] for r in rows))
        for category in categories:
            for method in dict.fromkeys(r["method"] for r in rows):
                sel = sorted((r for r in rows if r["category"] == category and r["method"] == method),
                             key=lambda r: r["compression_ratio"])
                # the method's colour in both panels; the line style tells the set
                ax.plot([100 * r["compression_ratio"] for r in sel], [r[key] for r in sel], marker="o",
                        color=COMPRESSION_COLOURS.get(method), ls=["-", "--", ":", "-."][categories.index(category) % 4],
                        label=f"{category} {method}")
        ax.set(xscale="log", xlabel="memory bank size (% of training patches)", ylabel=key.replace("_", " "),
               title=f"coreset v1 vs v2: {key.replace('_', ' ')}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _replace_atomically(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
