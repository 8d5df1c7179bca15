"""Experiments 2 (coreset v1 vs v2) and 3 (exact vs approximate search), driven by a YAML config.

``pqkit patchcore sweep --config exp3.yaml`` runs :func:`run_sweep`. The config (see
``bench/patchcore/exp3.yaml``) has the sections

- ``data``: ``kind: mvtec`` with ``root`` (an MVTec-layout category folder), or ``kind: elpv``
  with ``cell_type`` (mono/poly/all), ``train_fraction``, ``seed``; ``category`` names the set in
  the CSV;
- ``features``: ``backbone``, ``layers``, ``image_size``, ``target_dim``, ``batch_size``,
  ``cache_dir`` (patch features are cached there as .npy, keyed by a hash of the file list and
  the feature settings);
- ``coreset``: ``method``, ``ratio``, ``projection_dim``, ``seed``;
- ``scoring``: ``num_neighbors`` (b of the reweighting), ``reweight``, ``pixel_auroc``,
  ``pixel_stride`` (pixel AUROC over every stride-th pixel of the maps in each direction);
- ``experiment``: ``name`` ("exp3" or "exp2"); for exp3 ``search_methods`` (any of
  :data:`~pqkit.patchcore.neighbors.BACKENDS`) and ``faiss_config`` (``pq_bits``, ``nprobe``,
  ``n_clusters``, ``m``: the grid shared by pqkit_ivfpq, faiss_ivfpq and pqkit_pq, named as in the
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

import csv
import hashlib
import json
import math
import os
import time
import warnings

import numpy as np

__all__ = ["EXP2_COLUMNS", "EXP3_COLUMNS", "OUTPUT_FILES", "check_outputs", "load_config", "load_features",
           "plot_exp2", "plot_exp3", "run_exp2", "run_exp3", "run_sweep"]

EXP3_COLUMNS = ["category", "search_method", "pq_bits", "nprobe", "image_auroc", "memory_mb", "search_time_ms",
                "speedup", "memory_reduction", "accuracy_loss_percent", "pixel_auroc", "n_clusters", "m",
                "bank_size", "build_s", "note", "k_factor", "refine_m"]
# Methods built once per (m, pq_bits) and searched at every nprobe of the grid.
IVFPQ_METHODS = ("pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine", "faiss_ivfpq_refine")
EXP2_COLUMNS = ["category", "method", "compression_ratio", "bank_size", "image_auroc", "pixel_auroc",
                "memory_reduction", "coreset_s"]

#: Default experiment.timing_repeats and experiment.timing_budget_s (module docstring).
TIMING_REPEATS, TIMING_BUDGET_S = 5, 3.0

#: Files each experiment writes into output.dir (existing ones are replaced only with overwrite=True).
OUTPUT_FILES = {"exp3": ("results.csv", "exp3_analysis.png"), "exp2": ("results_exp2.csv", "exp2_coreset.png")}


def load_config(path) -> dict:
    """Read a sweep YAML config, validate it and fill in defaults (module docstring).

    The file is validated against :class:`pqkit.patchcore.config.SweepConfig`: unknown keys,
    wrong types and out-of-range values raise one-line ValueErrors naming the key.

    Returns
    -------
    dict
        One dict per section, every key present (defaults filled in); ``data.category`` defaults to
        the folder name (mvtec) or ``elpv_<cell_type>``.
    """
    from .config import read_config

    cfg = read_config(path).model_dump()
    data = cfg["data"]
    if data["category"] is None:
        data["category"] = (os.path.basename(os.path.normpath(data["root"])) if data["kind"] == "mvtec"
                            else f"elpv_{data['cell_type']}")
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


def _samples(data: dict):
    from .data import elpv_samples, mvtec_samples

    if data["kind"] == "mvtec":
        return mvtec_samples(data["root"], "train"), mvtec_samples(data["root"], "test")
    return elpv_samples(data.get("cell_type", "mono"), data.get("train_fraction", 0.5), data.get("seed", 0))


def _mask_at(sample, size: int) -> np.ndarray:
    from PIL import Image

    from .data import load_mask

    with Image.open(sample.path) as image:
        width, height = image.size
    mask = load_mask(sample, (height, width))
    if not mask.any():
        return np.zeros((size, size), dtype=bool)
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(resized) > 127


def load_features(cfg: dict, progress: bool = True) -> dict:
    """Patch features, labels and masks of a config's data set (cached under ``cache_dir``).

    Returns
    -------
    dict with
        train : float32 (n_train, h, w, d); test : float32 (n_test, h, w, d);
        labels : int64 (n_test,); masks : bool (n_test, S, S) or None (S = image_size; None
        when the set has no masks); test_names : list of str
    """
    feats = cfg["features"]
    train, test = _samples(cfg["data"])
    key_source = json.dumps({"features": {k: v for k, v in feats.items() if k not in ("cache_dir", "batch_size")},
                             "train": [s.path for s in train], "test": [s.path for s in test]}, sort_keys=True)
    key = hashlib.sha1(key_source.encode()).hexdigest()[:16]
    cache_dir = feats["cache_dir"]
    os.makedirs(cache_dir, exist_ok=True)
    paths = {name: os.path.join(cache_dir, f"{key}_{name}.npy") for name in ("train", "test", "masks")}
    has_masks = any(s.mask_path for s in test)
    out = {"labels": np.array([s.label for s in test], dtype=np.int64), "test_names": [s.path for s in test],
           "masks": None}
    needed = ["train", "test"] + (["masks"] if has_masks else [])
    if all(os.path.isfile(paths[name]) for name in needed):
        out["train"] = np.load(paths["train"])
        out["test"] = np.load(paths["test"])
        out["masks"] = np.load(paths["masks"]) if has_masks else None
        return out
    from .embedding import PatchEmbedder

    embedder = PatchEmbedder(feats["backbone"], feats["layers"], feats["image_size"], feats["target_dim"],
                             feats["batch_size"])
    arrays = {
        "train": embedder.embed_paths([s.path for s in train], progress=progress, desc="train features"),
        "test": embedder.embed_paths([s.path for s in test], progress=progress, desc="test features"),
    }
    if has_masks:
        arrays["masks"] = np.stack([_mask_at(s, feats["image_size"]) for s in test])
    for name, array in arrays.items():
        tmp = f"{paths[name]}.tmp-{os.getpid()}.npy"
        np.save(tmp, array)
        os.replace(tmp, paths[name])
    out.update(train=arrays["train"], test=arrays["test"], masks=arrays.get("masks"))
    return out


def _coreset_bank(cfg: dict, train: np.ndarray, method: str, ratio: float):
    """Memory bank rows chosen by the coreset (cached next to the features) and the seconds it took."""
    from .coreset import coreset_indices, patch_variance_weights

    flat = train.reshape(-1, train.shape[-1])
    n_select = max(1, int(round(ratio * flat.shape[0]))) if method != "all" else flat.shape[0]
    core = cfg["coreset"]
    key = hashlib.sha1(json.dumps([flat.shape, float(flat[:64].sum()), float(flat[-64:].sum()), method, n_select,
                                   core["projection_dim"], core["seed"]]).encode()).hexdigest()[:16]
    path = os.path.join(cfg["features"]["cache_dir"], f"coreset_{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as cached:
            return flat[cached["indices"]], float(cached["seconds"])
    start = time.perf_counter()
    weights = patch_variance_weights(train) if method == "v2" else None
    indices = coreset_indices(flat, n_select, method, core["projection_dim"], core["seed"], weights)
    seconds = time.perf_counter() - start
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, indices=indices, seconds=seconds)
    os.replace(tmp, path)
    return flat[indices], seconds


def _timed_search(backend, queries: np.ndarray, experiment: dict):
    """The k = 1 search of all queries, repeated until ``timing_repeats`` runs (default 5) or
    ``timing_budget_s`` seconds in all (default 3; at least one run): (D, I, median seconds).
    Fast searches thus get several runs on a shared machine, slow baselines one or two."""
    repeats = int(experiment.get("timing_repeats", TIMING_REPEATS))  # validated by load_config
    budget = float(experiment.get("timing_budget_s", TIMING_BUDGET_S))
    times = []
    while True:
        start = time.perf_counter()
        squared, ids = backend.search(queries, 1)  # deterministic: every run gives the same result
        times.append(time.perf_counter() - start)
        if len(times) >= repeats or sum(times) >= budget:
            return squared, ids, float(np.median(times))


def _evaluate(backend, data: dict, cfg: dict) -> dict:
    """Search all test patches (timed: :func:`_timed_search`), then image and pixel AUROC."""
    from .scoring import anomaly_maps, image_auroc, image_scores, pixel_auroc

    test = data["test"]
    n, h, w, d = test.shape
    queries = np.ascontiguousarray(test.reshape(-1, d))
    backend.search(queries[:64], 1)  # warm-up (lazily built tables belong to the build)
    squared, ids, search_s = _timed_search(backend, queries, cfg["experiment"])
    distances = np.sqrt(np.maximum(squared[:, 0], 0.0)).reshape(n, h, w)
    nearest = ids[:, 0].reshape(n, h, w)
    scoring = cfg["scoring"]
    scores = image_scores(test, distances, nearest, backend, scoring["num_neighbors"], scoring["reweight"])
    result = {"image_auroc": image_auroc(data["labels"], scores), "search_time_ms": 1e3 * search_s / n,
              "memory_mb": backend.memory_bytes() / 2**20, "pixel_auroc": float("nan")}
    if scoring["pixel_auroc"] and data["masks"] is not None:
        maps = anomaly_maps(distances, cfg["features"]["image_size"])
        # every pixel_stride-th pixel in both directions: the maps are smooth (sigma 4 px), so a
        # stride of 4 changes the AUROC little and cuts the sort that dominates its cost 16-fold
        stride = int(scoring.get("pixel_stride", 1))
        result["pixel_auroc"] = pixel_auroc(data["masks"][:, ::stride, ::stride], maps[:, ::stride, ::stride])
    return result


def _replace_atomically(path: str, write) -> None:
    """Write a file through ``write(tmp_path)`` into a fresh sibling, then rename it onto ``path``.

    The sibling is flushed to disk before the rename and the folder after it, so ``path`` holds
    the old or the new content, never a part; a failed write removes the sibling and leaves
    ``path`` untouched. The new file's permissions follow the umask.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    attempt = 0
    while True:  # a fresh name: a sibling that exists (not ours) is never written or removed
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{attempt}")
        if not os.path.lexists(tmp):
            break
        attempt += 1
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_csv(path: str, columns, rows) -> None:
    """Write rows (dicts) as CSV, floats with 6 significant digits (:func:`_replace_atomically`)."""

    def write(tmp):
        with open(tmp, "x", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    _replace_atomically(path, write)


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


def run_exp3(cfg: dict, progress: bool = True, log=print) -> list:
    """Experiment 3: every search method (and grid point) on one memory bank; writes results.csv."""
    from .neighbors import make_backend

    methods = cfg["experiment"].get("search_methods") or ["exact_knn", "pqkit_flat", "pqkit_ivfpq"]
    threads = int(cfg["experiment"].get("threads") or os.cpu_count() or 1)
    grid = _grid(cfg)
    data = load_features(cfg, progress=progress)
    bank, coreset_s = _coreset_bank(cfg, data["train"], cfg["coreset"]["method"], cfg["coreset"]["ratio"])
    category = cfg["data"]["category"]
    log(f"{category}: memory bank {bank.shape} from {data['train'].shape[0]} train images "
        f"(coreset {cfg['coreset']['method']} {cfg['coreset']['ratio']:.3g}, {coreset_s:.1f} s), "
        f"{data['test'].shape[0]} test images x {data['test'].shape[1] * data['test'].shape[2]} patches")
    import pqkit

    pqkit.set_num_threads(threads)
    rows = []
    notes = {}

    def add_row(method, nbits, nprobe, backend, build_s, note="", m="", refine_m=""):
        if backend is not None and notes.get(method):
            note = notes[method]
        row = {"category": category, "search_method": method, "pq_bits": nbits, "nprobe": nprobe,
               "n_clusters": grid["n_clusters"] if method in IVFPQ_METHODS else "",
               "k_factor": grid["k_factor"] if method.endswith("_refine") else "",
               "m": m, "refine_m": refine_m, "bank_size": bank.shape[0],
               "build_s": build_s, "note": note}
        if backend is not None:
            row.update(_evaluate(backend, data, cfg))
        rows.append(row)
        shown = {k: row.get(k) for k in ("image_auroc", "pixel_auroc", "search_time_ms", "memory_mb")}
        log(f"  {method:<12} m={m!s:<3} bits={nbits!s:<3} nprobe={nprobe!s:<3} {shown} {note}")

    def build(name, **params):
        backend = make_backend(name, **params)
        backend.set_num_threads(threads)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pqkit.TrainingWarning)
            backend.fit(bank)
        for warning in caught:  # kept with the row, not lost in the log
            if not issubclass(warning.category, pqkit.TrainingWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        notes[name] = "; ".join(f"TrainingWarning: {w.message}" for w in caught
                                if issubclass(w.category, pqkit.TrainingWarning))
        return backend, time.perf_counter() - start

    for method in methods:
        if method in ("exact_knn", "pqkit_flat", "faiss_flat"):
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
                                             nprobe=grid["nprobe"][0], **refine)
                except (ValueError, RuntimeError) as exc:
                    for nprobe in grid["nprobe"]:
                        add_row(method, nbits, nprobe, None, "", f"not built: {exc}", **labels)
                    continue
                for nprobe in grid["nprobe"]:
                    backend.set_nprobe(nprobe)
                    add_row(method, nbits, nprobe, backend, build_s, **labels)
        else:
            raise ValueError(f"unknown search method {method!r} in experiment.search_methods")

    baseline = next((r for r in rows if r["search_method"] == "exact_knn"), None) or next(
        (r for r in rows if r["search_method"] in ("pqkit_flat", "faiss_flat")), None)
    for row in rows:
        if baseline is None or "image_auroc" not in row:
            continue
        row["speedup"] = baseline["search_time_ms"] / row["search_time_ms"]
        row["memory_reduction"] = baseline["memory_mb"] / row["memory_mb"]
        row["accuracy_loss_percent"] = 100.0 * (baseline["image_auroc"] - row["image_auroc"])
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    _write_csv(os.path.join(out_dir, "results.csv"), EXP3_COLUMNS, rows)
    plot_exp3(os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "exp3_analysis.png"))
    return rows


def run_exp2(cfg: dict, progress: bool = True, log=print) -> list:
    """Experiment 2: coreset v1 vs v2 at several compression ratios, exact search (pqkit IndexFlat)."""
    from .neighbors import make_backend

    exp = cfg["experiment"]
    methods = exp.get("methods") or ["v1", "v2"]
    ratios = exp.get("compression_ratios") or [0.005, 0.01, 0.05]
    data = load_features(cfg, progress=progress)
    n_train_patches = int(np.prod(data["train"].shape[:3]))
    category = cfg["data"]["category"]
    rows = []
    out_dir = cfg["output"]["dir"]
    os.makedirs(out_dir, exist_ok=True)
    for ratio in ratios:  # smallest banks first: a run cut short still compares v1 and v2
        for method in methods:
            bank, coreset_s = _coreset_bank(cfg, data["train"], method, float(ratio))
            backend = make_backend("pqkit_flat").fit(bank)
            result = _evaluate(backend, data, cfg)
            row = {"category": category, "method": method, "compression_ratio": float(ratio),
                   "bank_size": bank.shape[0], "memory_reduction": n_train_patches / bank.shape[0],
                   "coreset_s": coreset_s, **result}
            rows.append(row)
            log(f"  {category} {method} {ratio:.3g}: bank {bank.shape[0]}, image AUROC {row['image_auroc']:.4f}, "
                f"pixel AUROC {row['pixel_auroc']:.4f}, coreset {coreset_s:.1f} s")
            _write_csv(os.path.join(out_dir, "results_exp2.csv"), EXP2_COLUMNS, rows)
    _write_csv(os.path.join(out_dir, "results_exp2.csv"), EXP2_COLUMNS, rows)
    plot_exp2(os.path.join(out_dir, "results_exp2.csv"), os.path.join(out_dir, "exp2_coreset.png"))
    return rows


def run_sweep(config_path, progress: bool = True, log=print, overwrite: bool = False) -> list:
    """Run the experiment a YAML config names (``experiment.name``: exp3, the default, or exp2).

    The config and the output folder are checked before any work (:func:`load_config`,
    :func:`check_outputs`); existing result files are replaced only when ``overwrite`` is true.
    """
    cfg = load_config(config_path)
    check_outputs(cfg, overwrite)
    if cfg["experiment"]["name"] == "exp2":
        return run_exp2(cfg, progress, log)
    return run_exp3(cfg, progress, log)


# ----------------------------------------------------------------------------- plots
def _read_csv(path: str) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    for row in rows:
        for key, value in row.items():
            if key not in ("category", "search_method", "method", "note"):
                row[key] = number(value)
    return rows


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
    colours = {"exact_knn": "black", "pqkit_flat": "tab:blue", "faiss_flat": "tab:gray",
               "pqkit_ivfpq": "tab:green", "faiss_ivfpq": "tab:red", "pqkit_pq": "tab:purple",
               "pqkit_ivfpq_refine": "tab:olive", "faiss_ivfpq_refine": "tab:brown"}
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
    for method in IVFPQ_METHODS:
        for m, nbits in sorted({(r["m"], r["pq_bits"]) for r in rows if r["search_method"] == method}):
            sel = sorted((r for r in rows if r["search_method"] == method and r["pq_bits"] == nbits and r["m"] == m),
                         key=lambda r: r["nprobe"])
            ax.plot([r["nprobe"] for r in sel], [r["image_auroc"] for r in sel], marker="o",
                    ls="-" if method.startswith("pqkit") else "--", label=f"{method} m={int(m)} {int(nbits)} bits")
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
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9)
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
        for category in dict.fromkeys(r["category"] for r in rows):
            for method in dict.fromkeys(r["method"] for r in rows):
                sel = sorted((r for r in rows if r["category"] == category and r["method"] == method),
                             key=lambda r: r["compression_ratio"])
                ax.plot([100 * r["compression_ratio"] for r in sel], [r[key] for r in sel], marker="o",
                        label=f"{category} {method}")
        ax.set(xscale="log", xlabel="memory bank size (% of training patches)", ylabel=key.replace("_", " "),
               title=f"coreset v1 vs v2: {key.replace('_', ' ')}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _replace_atomically(png_path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
