"""What the PatchCore experiment runners share (:mod:`pqkit.patchcore.sweep`,
:mod:`pqkit.patchcore.experiments`): the data and the feature cache, the coreset cache, the
timed evaluation of a memory bank, all-or-nothing CSV and figure writes, and the console (a
compact table, and a summary of warnings and library messages)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np

#: Default experiment.timing_repeats and experiment.timing_budget_s (module docstring).
TIMING_REPEATS, TIMING_BUDGET_S = 5, 3.0


#: One colour per search method, the same in every panel of every figure.
METHOD_COLOURS = {"exact_knn": "black", "pqkit_flat": "tab:blue", "faiss_flat": "tab:gray",
                  "pqkit_ivfpq": "tab:green", "faiss_ivfpq": "tab:red", "pqkit_pq": "tab:purple",
                  "pqkit_ivfpq_refine": "tab:olive", "faiss_ivfpq_refine": "tab:brown", "torch_cdist": "tab:orange"}


#: One colour per coreset method (experiment 2).
COMPRESSION_COLOURS = {"v1": "tab:blue", "v2": "tab:orange", "random": "tab:green", "all": "black"}


def _samples(data: dict):
    from .data import elpv_samples, mvtec_samples, sample_root

    if data["kind"] in ("mvtec", "sample"):
        root = sample_root() if data["kind"] == "sample" else data["root"]
        return mvtec_samples(root, "train"), mvtec_samples(root, "test")
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
        when the set has no masks); test_names, defects : list of str (n_test,)
    """
    feats = cfg["features"]
    train, test = _samples(cfg["data"])
    out = _cached_features(feats, train, test)
    if out is not None:
        return out
    from .embedding import PatchEmbedder

    embedder = PatchEmbedder(feats["backbone"], feats["layers"], feats["image_size"], feats["target_dim"],
                             feats["batch_size"])
    arrays = {
        "train": embedder.embed_paths([s.path for s in train], progress=progress, desc="train features"),
        "test": embedder.embed_paths([s.path for s in test], progress=progress, desc="test features"),
    }
    return _store_features(feats, train, test, arrays)


def _feature_cache_paths(feats: dict, train, test) -> dict:
    """Cache files of the features of a file list and feature settings (the key hashes both)."""
    key_source = json.dumps({"features": {k: v for k, v in feats.items() if k not in ("cache_dir", "batch_size")},
                             "train": [s.path for s in train], "test": [s.path for s in test]}, sort_keys=True)
    key = hashlib.sha1(key_source.encode()).hexdigest()[:16]
    return {name: os.path.join(feats["cache_dir"], f"{key}_{name}.npy") for name in ("train", "test", "masks")}


def _cached_features(feats: dict, train, test, check_only: bool = False):
    """The dict of :func:`load_features` from the cache, or None when it is not all there (with
    ``check_only``, True instead of the dict: nothing is read)."""
    paths = _feature_cache_paths(feats, train, test)
    has_masks = any(s.mask_path for s in test)
    needed = ["train", "test"] + (["masks"] if has_masks else [])
    if not all(os.path.isfile(paths[name]) for name in needed):
        return None
    if check_only:
        return True
    return {"labels": np.array([s.label for s in test], dtype=np.int64), "test_names": [s.path for s in test],
            "defects": [s.defect for s in test], "train": np.load(paths["train"]), "test": np.load(paths["test"]),
            "masks": np.load(paths["masks"]) if has_masks else None}


def _store_features(feats: dict, train, test, arrays: dict) -> dict:
    """Cache ``arrays`` (train and test features; masks are added here) and return the dict of
    :func:`load_features`."""
    os.makedirs(feats["cache_dir"], exist_ok=True)
    paths = _feature_cache_paths(feats, train, test)
    arrays = dict(arrays)
    if any(s.mask_path for s in test):
        arrays["masks"] = np.stack([_mask_at(s, feats["image_size"]) for s in test])
    for name, array in arrays.items():
        tmp = f"{paths[name]}.tmp-{os.getpid()}.npy"
        np.save(tmp, array)
        os.replace(tmp, paths[name])
    return {"labels": np.array([s.label for s in test], dtype=np.int64), "test_names": [s.path for s in test],
            "defects": [s.defect for s in test], "train": arrays["train"], "test": arrays["test"],
            "masks": arrays.get("masks")}


def _coreset_bank(cfg: dict, train: np.ndarray, method: str, ratio: float):
    """Memory bank rows chosen by the coreset (cached next to the features) and the seconds it took."""
    from .coreset import coreset_indices, patch_variance_weights

    flat = train.reshape(-1, train.shape[-1])
    n_select = max(1, int(round(ratio * flat.shape[0]))) if method != "all" else flat.shape[0]
    if n_select >= flat.shape[0]:
        return flat, 0.0  # the full bank: nothing to select
    core = cfg["coreset"]
    key = hashlib.sha1(json.dumps([flat.shape, float(flat[:64].sum()), float(flat[-64:].sum()), method, n_select,
                                   core["projection_dim"], core["seed"]]).encode()).hexdigest()[:16]
    path = os.path.join(cfg["features"]["cache_dir"], f"coreset_{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as cached:
            return flat[cached["indices"]], float(cached["seconds"])
    if method in ("v1", "v2"):
        import sklearn.random_projection  # noqa: F401  (imported before the clock starts)
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


def _evaluate(backend, data: dict, cfg: dict, keep_scores: bool = False) -> dict:
    """Search all test patches (timed: :func:`_timed_search`), then image and pixel AUROC (and,
    with ``keep_scores``, the image scores under "scores")."""
    from .scoring import anomaly_maps, image_auroc, image_scores, pixel_auroc

    test = data["test"]
    n, h, w, d = test.shape
    queries = np.ascontiguousarray(test.reshape(-1, d))
    backend.search(queries[:64], 1)  # warm-up (lazily built tables belong to the build)
    squared, ids, search_s = _timed_search(backend, queries, cfg["experiment"])
    scoring = cfg["scoring"]
    # scoring, timed per image: the patch distances, the image score (with its reweighting
    # search) and the smoothed anomaly map, as `pqkit patchcore score` computes them
    start = time.perf_counter()
    distances = np.sqrt(np.maximum(squared[:, 0], 0.0)).reshape(n, h, w)
    nearest = ids[:, 0].reshape(n, h, w)
    scores = image_scores(test, distances, nearest, backend, scoring["num_neighbors"], scoring["reweight"])
    maps = anomaly_maps(distances, cfg["features"]["image_size"])
    scoring_s = time.perf_counter() - start
    result = {"image_auroc": image_auroc(data["labels"], scores), "search_time_ms": 1e3 * search_s / n,
              "scoring_time_ms": 1e3 * scoring_s / n,
              "memory_mb": backend.memory_bytes() / 2**20, "pixel_auroc": float("nan")}
    if scoring["pixel_auroc"] and data["masks"] is not None:
        # every pixel_stride-th pixel in both directions: the maps are smooth (sigma 4 px), so a
        # stride of 4 changes the AUROC little and cuts the sort that dominates its cost 16-fold
        stride = int(scoring.get("pixel_stride", 1))
        result["pixel_auroc"] = pixel_auroc(data["masks"][:, ::stride, ::stride], maps[:, ::stride, ::stride])
    if keep_scores:
        result["scores"] = scores
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


class ConsoleTable:
    """Rows printed as they come under one header line, as ``pqkit demo`` prints its table.

    Parameters
    ----------
    columns : list of (title, key, format)
        ``format`` is a format spec for numbers (``".4f"``) or ``""`` for text; missing or NaN
        values print as ``-``.
    log : callable
        Receives each line.
    widths : dict, optional
        Least width of columns (by key) whose later values may be longer than the first row's.
    """

    def __init__(self, columns, log, widths=None):
        self.columns = columns
        self.log = log
        widths = widths or {}
        self.widths = [max(len(title), 8 if spec else 3, widths.get(key, 0)) for title, key, spec in columns]
        self.started = False

    def _cell(self, value, spec: str) -> str:
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if spec and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            return format(value, spec)
        return str(value)

    def add(self, row: dict) -> None:
        cells = [self._cell(row.get(key), spec) for _, key, spec in self.columns]
        if not self.started:
            self.widths = [max(width, len(cell)) for width, cell in zip(self.widths, cells)]
            header = "  ".join(f"{title:>{w}}" if spec else f"{title:<{w}}"
                               for (title, _, spec), w in zip(self.columns, self.widths))
            self.log(header)
            self.log("-" * len(header))
            self.started = True
        self.log("  ".join(f"{cell:>{w}}" if spec else f"{cell:<{w}}"
                           for (_, _, spec), cell, w in zip(self.columns, cells, self.widths)))


#: Library messages on stderr that the user cannot act on, by kind (kept out of the console).
_CHATTER = {"faiss k-means: fewer than 39 training points per centroid":
            re.compile(r"WARNING clustering \d+ points to \d+ centroids: please provide at least \d+ training points")}


class Chatter:
    """Warnings and library messages of a sweep, summarised in one line per kind at the end.

    :meth:`capture` records Python warnings (every category) and what C++ libraries print on
    the stderr file descriptor (faiss's k-means warnings); a recognised message is counted, any
    other line is printed again after the block.
    """

    def __init__(self):
        self.kinds = {}  # kind -> [count, example, [where...]]

    def add(self, kind: str, example: str, where: str) -> None:
        entry = self.kinds.setdefault(kind, [0, example, []])
        entry[0] += 1
        if where and where not in entry[2]:
            entry[2].append(where)

    @contextlib.contextmanager
    def capture(self, where: str = ""):
        """Record warnings and stderr lines of the block (``where`` names it in the summary);
        yields the list of caught warnings (filled when the block ends)."""
        caught, lines = [], []
        try:
            with warnings.catch_warnings(record=True) as recorded, _stderr_lines() as lines:
                warnings.simplefilter("always")
                caught = recorded
                yield recorded
        finally:
            for warning in caught:
                text = " ".join(str(warning.message).split())
                self.add(f"{warning.category.__name__}: {re.sub(r'[0-9]+', 'N', text)}", text, where)
            for line in lines:
                kind = next((k for k, pattern in _CHATTER.items() if pattern.search(line)), None)
                if kind is None:
                    print(line, file=sys.stderr)
                else:
                    self.add(kind, line.strip(), where)

    def summary(self) -> list:
        """One line per kind: how often, where, and one example."""
        out = []
        for kind, (count, example, where) in self.kinds.items():
            shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
            name = kind.split(":", 1)[0]
            out.append(f"note: {name} x{count}{f' ({shown})' if shown else ''}: {example}")
        return out


@contextlib.contextmanager
def _stderr_lines():
    """Collect what is written to the stderr file descriptor (C and C++ libraries included)."""
    lines = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


#: CSV columns read as text (every other column is a number, NaN when empty).
_TEXT_COLUMNS = ("category", "search_method", "method", "note", "backbone", "layers", "grid", "defect", "label",
                 "coreset_method")


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
            if key not in _TEXT_COLUMNS:
                row[key] = number(value)
    return rows
