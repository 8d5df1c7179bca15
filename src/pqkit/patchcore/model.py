"""The PatchCore model: fit a memory bank, score images, save and load.

A saved model is a folder (see :mod:`pqkit._atomic`)::

    <model>/pqkit-manifest.json         kind "pqkit-patchcore", the current data folder, and the
                                        size and SHA-256 of each member
    <model>/pqkit-data-<16 hex>/config.json
                                        format, version, the constructor parameters, the backend
                                        parameters the bank was built with ("auto" sizes
                                        resolved), the feature shape and the memory-bank file name
    <model>/pqkit-data-<16 hex>/memory_bank.<ext>
                                        the fitted backend (``file_name`` of its class)

A save is all-or-nothing: after a crash the folder holds the old or the new model; it never
deletes anything it did not write. Folders written before manifests existed (``config.json`` and
the memory bank directly in the folder) still load, and ``save(..., overwrite=True)`` replaces them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from .. import _atomic
from .._validation import check_int, check_positive_int
from .coreset import COMPRESSION_METHODS, coreset_indices, patch_variance_weights
from .neighbors import BACKENDS, make_backend
from .scoring import anomaly_maps, image_scores, patch_scores, reweighted_scores

__all__ = ["PatchCore"]

FORMAT = "pqkit-patchcore"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
#: config.json larger than this is not a PatchCore config
MAX_CONFIG_BYTES = 1 << 20
_CONFIG_KEYS = ("format", "format_version", "backbone", "layers", "image_size", "target_dim", "coreset_method",
                "coreset_ratio", "projection_dim", "backend", "backend_params", "num_neighbors", "seed",
                "batch_size", "feature_shape", "n_train_patches", "bank_size", "backend_file")


class PatchCore:
    """PatchCore anomaly detector (Roth et al. 2022) with a pluggable nearest-neighbour backend.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default "efficientnet_lite0"
    layers : sequence of str, optional
        Default for EfficientNet-Lite0: ``("_blocks.4", "_blocks.10", "_blocks.14")`` (strides 8,
        16 and 32; experiment 1 in docs/patchcore.md).
    image_size : int, default 224
        Images are resized to a square of this size; anomaly maps have this size.
    target_dim : int, default 128
        Patch feature length.
    coreset_method : {"v1", "v2", "random", "all"}, default "v1"
        "v1" the paper's greedy k-center, "v2" its variance-weighted variant, "random" a seeded
        uniform sample (no selection cost), "all" no coreset: the full memory bank (best with a
        compressed backend such as "pqkit_ivfpq_refine").
    coreset_ratio : float in (0, 1], default 0.1
        Fraction of the training patches kept in the memory bank (ignored for "all").
    projection_dim : int, default 128
        Dimension of the random projection used by the coreset selection.
    backend : str, default "pqkit_flat"
        One of :data:`pqkit.patchcore.neighbors.BACKENDS`.
    backend_params : dict, optional
        E.g. ``{"nlist": 100, "m": 8, "nbits": 8, "nprobe": 8}`` for "pqkit_ivfpq". Sizes left out
        (or ``"auto"``) are chosen from the memory bank at fit time
        (:func:`pqkit.patchcore.neighbors.auto_params`), without a ``TrainingWarning``.
    num_neighbors : int, default 9
        ``b`` of the image-score reweighting.
    seed : int, default 0
    batch_size : int, default 16
    device : str, default "cpu"
        Where the backbone runs ("cpu", "cuda", "cuda:N").
    search_device : str or None, default "auto"
        Where a pqkit memory bank is searched: a torch device puts the bank on pqkit's torch
        engine there, and :meth:`predict` then keeps each batch's patch features on the device
        from the backbone through the bank search to the patch and image scores (only the
        nearest distance and id of each patch, and one feature per image, come back to the
        host). "auto": ``device`` when it is a CUDA device, else None; None: the default
        (CPU) engine. ``search_device="cpu"`` with ``device="cpu"`` runs the same path on the
        CPU. Not saved with the model (pass it to :meth:`load`). ValueError for a backend
        that is not pqkit's, or CUDA asked for and absent.

    Attributes
    ----------
    backend_ : Backend
        The fitted memory-bank index.
    backend_params_ : dict
        The backend parameters the bank was built with (``"auto"`` sizes replaced by numbers).
    feature_shape_ : (h, w, d)
        Patch grid and feature length.
    """

    def __init__(self, backbone="efficientnet_lite0", layers=None, image_size: int = 224, target_dim: int = 128,
                 coreset_method: str = "v1", coreset_ratio: float = 0.1, projection_dim: int = 128,
                 backend: str = "pqkit_flat", backend_params: dict | None = None, num_neighbors: int = 9,
                 seed: int = 0, batch_size: int = 16, device="cpu", search_device="auto"):
        if coreset_method not in COMPRESSION_METHODS:
            raise ValueError(f"coreset_method must be one of {list(COMPRESSION_METHODS)}, got {coreset_method!r}")
        if not isinstance(coreset_ratio, (int, float)) or not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        self.backbone = backbone
        self.layers = None if layers is None else list(layers)
        self.image_size = check_positive_int(image_size, "image_size")
        self.target_dim = check_positive_int(target_dim, "target_dim")
        self.coreset_method = coreset_method
        self.coreset_ratio = float(coreset_ratio)
        self.projection_dim = check_positive_int(projection_dim, "projection_dim")
        self.backend = backend
        self.backend_params = dict(backend_params or {})
        make_backend(backend, **self.backend_params)  # fail early on bad parameters
        self.num_neighbors = check_int(num_neighbors, "num_neighbors", minimum=2)
        self.seed = check_int(seed, "seed", minimum=0)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.device = device
        self.search_device = _search_device(search_device, device, backend)
        self._embedder = None

    # ------------------------------------------------------------------ features
    @property
    def embedder(self):
        """The :class:`~pqkit.patchcore.embedding.PatchEmbedder` (built on first use; needs torch)."""
        if self._embedder is None:
            from .embedding import PatchEmbedder

            self._embedder = PatchEmbedder(self.backbone, self.layers, self.image_size, self.target_dim,
                                           self.batch_size, self.device)
            self.layers = self._embedder.layers
        return self._embedder

    def embed(self, paths, progress: bool = True) -> np.ndarray:
        """Patch features (n, h, w, target_dim) float32 of image files."""
        return self.embedder.embed_paths(paths, progress=progress)

    # ------------------------------------------------------------------ fit
    def fit(self, paths, progress: bool = True) -> "PatchCore":
        """Build the memory bank from normal training images (file paths); ``progress`` shows a
        bar for the features and a line per later step on stderr."""
        return self.fit_features(self.embed(paths, progress=progress), progress=progress)

    def fit_features(self, features: np.ndarray, progress: bool = False) -> "PatchCore":
        """Build the memory bank from patch features: ``subsample_embedding`` (the coreset), then
        the backend's index.

        Parameters
        ----------
        features : numpy.ndarray of float32, shape (n_images, h, w, d)
        progress : bool, default False
            Print a line on stderr when each step starts and ends (the coreset of a large bank
            takes minutes).
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 4 or features.shape[0] == 0:
            raise ValueError(f"features must have shape (n_images, h, w, d) with n_images >= 1, got {features.shape}")
        flat = features.reshape(-1, features.shape[-1])
        n_select = self._bank_size(flat.shape[0])
        status = _status if progress else (lambda text: None)
        start = time.perf_counter()
        if n_select == flat.shape[0]:
            selected = np.arange(n_select)
            status(f"memory bank: all {n_select:,} patches (no coreset)")
        else:
            status(f"coreset: choosing {n_select:,} of {flat.shape[0]:,} patches ({_COMPRESSION_NAMES[self.coreset_method]})...")
            weights = patch_variance_weights(features) if self.coreset_method == "v2" else None
            selected = coreset_indices(flat, n_select, self.coreset_method, self.projection_dim, self.seed, weights)
            status(f"coreset: done in {time.perf_counter() - start:.1f} s")
        backend = make_backend(self.backend, **self.backend_params)
        if self.search_device is not None:
            backend.to_device(self.search_device)
        start = time.perf_counter()
        status(f"index: building {self.backend} on {n_select:,} vectors...")
        backend.fit(flat[selected])
        sizes = ", ".join(f"{k} {v}" for k, v in backend.params.items() if k != "seed")
        status(f"index: {self.backend}{f' ({sizes})' if sizes else ''} built in {time.perf_counter() - start:.1f} s")
        self.backend_ = backend
        self.backend_params_ = dict(backend.params)
        self.feature_shape_ = tuple(int(v) for v in features.shape[1:])
        self.n_train_patches_ = int(flat.shape[0])
        self.bank_size_ = int(n_select)
        return self

    def _bank_size(self, n_patches: int) -> int:
        if self.coreset_method == "all":
            return n_patches
        return min(n_patches, max(1, int(round(self.coreset_ratio * n_patches))))

    def _check_fitted(self):
        if not hasattr(self, "backend_"):
            raise ValueError("PatchCore is not fitted; call fit(train_paths) or PatchCore.load(directory)")

    # ------------------------------------------------------------------ predict
    def score_features(self, features: np.ndarray, reweight: bool = True):
        """Image scores and patch-score grids of precomputed patch features.

        Returns
        -------
        scores : numpy.ndarray of float64, shape (n,)
        distances : numpy.ndarray of float32, shape (n, h, w)
            Patch scores (Euclidean nearest-neighbour distances).
        """
        self._check_fitted()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 4 or features.shape[1:] != self.feature_shape_:
            raise ValueError(f"features must have shape (n, {', '.join(map(str, self.feature_shape_))}) "
                             f"like the training features, got {features.shape}")
        distances, nearest = patch_scores(self.backend_, features)
        scores = image_scores(features, distances, nearest, self.backend_, self.num_neighbors, reweight)
        return scores, distances

    def predict(self, paths, progress: bool = True, maps: bool = True):
        """Score image files.

        Returns
        -------
        scores : numpy.ndarray of float64, shape (n,)
        maps : numpy.ndarray of float32, shape (n, image_size, image_size), or None
            Anomaly maps (upsampled, Gaussian sigma 4), when ``maps``.
        """
        self._check_fitted()
        if self.search_device is not None:
            return self._predict_on_device(paths, progress, maps)
        features = self.embed(paths, progress=progress)
        start = time.perf_counter()
        if progress:
            _status(f"scoring: nearest neighbours of {int(np.prod(features.shape[:3])):,} patches "
                    f"({self.backend}, bank of {self.bank_size_:,})...")
        scores, distances = self.score_features(features)
        result = anomaly_maps(distances, self.image_size) if maps else None
        if progress:
            _status(f"scoring: done in {time.perf_counter() - start:.1f} s")
        return scores, result

    def _predict_on_device(self, paths, progress: bool, maps: bool):
        """:meth:`predict` with the patch features kept on the search device, batch by batch:
        ``generate_embedding`` (the backbone, on ``device``), ``nearest_neighbors`` (the bank on
        the torch engine, searched with the features where they lie), then
        ``compute_anomaly_score``. The features never travel to the host: per patch only its
        nearest squared distance and id come back (12 bytes, against ``4 * d`` for a feature),
        and per image the one feature ``m_test*`` the reweighting (equation 7) needs, picked on
        the device."""
        from tqdm.auto import tqdm

        from ..vision.features import _torch, load_image

        torch = _torch()
        paths = list(paths)
        if not paths:
            raise ValueError("no images to score (empty list of paths)")
        embedder = self.embedder
        h, w, d = self.feature_shape_
        grids, nearest, tests = [], [], []
        device = torch.device(self.search_device)
        for start in tqdm(range(0, len(paths), self.batch_size), disable=not progress,
                          desc="scoring", unit="batch"):
            images = [load_image(p) for p in paths[start:start + self.batch_size]]
            features = embedder.embed_batch(images, as_tensor=True).to(device)
            if tuple(features.shape[1:]) != (h, w, d):
                raise ValueError(f"features of shape {tuple(features.shape[1:])} do not match the "
                                 f"training features {(h, w, d)}")
            n = features.shape[0]
            squared, ids = self.backend_.search_on_device(features.reshape(-1, d), 1)
            grid = np.sqrt(np.maximum(squared[:, 0], 0.0)).reshape(n, h, w).astype(np.float32)
            best = torch.from_numpy(grid.reshape(n, -1).argmax(axis=1)).to(device)
            m_test = features.reshape(n, -1, d)[torch.arange(n, device=device), best]
            grids.append(grid)
            nearest.append(ids[:, 0].reshape(n, h, w))
            tests.append(m_test.cpu().numpy())
        distances = np.concatenate(grids)
        flat = distances.reshape(distances.shape[0], -1)
        best = flat.argmax(axis=1)
        s_star = flat[np.arange(flat.shape[0]), best].astype(np.float64)
        m_star_ids = np.concatenate(nearest).reshape(flat.shape[0], -1)[np.arange(flat.shape[0]),
                                                                         best]
        scores = reweighted_scores(np.concatenate(tests), s_star, m_star_ids, self.backend_,
                                   self.num_neighbors)
        return scores, (anomaly_maps(distances, self.image_size) if maps else None)

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        if not isinstance(self.backbone, str):
            backbone = None
        else:
            backbone = self.backbone
        return {"backbone": backbone, "layers": self.layers, "image_size": self.image_size,
                "target_dim": self.target_dim, "coreset_method": self.coreset_method,
                "coreset_ratio": self.coreset_ratio, "projection_dim": self.projection_dim,
                "backend": self.backend, "backend_params": self.backend_params,
                "num_neighbors": self.num_neighbors, "seed": self.seed, "batch_size": self.batch_size}

    def save(self, directory, overwrite: bool = False) -> None:
        """Write the model to the folder ``directory`` (see the module docstring for the layout).

        A save is all-or-nothing: after a crash the folder holds the old or the new model; it never
        deletes anything it did not write. The members are written and synced into a new data
        folder, and one ``os.replace`` of the manifest switches to it (:mod:`pqkit._atomic`).

        Parameters
        ----------
        directory : str or os.PathLike
            A new folder (missing parents are created), an empty folder, or a saved PatchCore
            model (replaced only with ``overwrite=True``).
        overwrite : bool, default False
            Replace a PatchCore model saved in ``directory``.

        Raises
        ------
        pqkit._atomic.ArtifactExistsError
            ``directory`` is a file, a folder that is neither empty nor a PatchCore model, or a
            model while ``overwrite`` is False (a FileExistsError and a ValueError); nothing was
            changed.
        """
        self._check_fitted()
        backend = self.backend_
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.config(),
                "fitted_backend_params": self.backend_params_,
                "layers": self.layers if self.layers is not None else self.embedder_layers(),
                "feature_shape": list(self.feature_shape_), "n_train_patches": self.n_train_patches_,
                "bank_size": self.bank_size_, "backend_file": backend.file_name}
        config = json.dumps(meta, indent=2).encode("utf-8")

        def write_members(folder):
            _atomic.write_bytes(os.path.join(folder, CONFIG_FILE), config)
            backend._save(os.path.join(folder, backend.file_name))

        _atomic.save_folder(directory, write_members, kind=FORMAT, overwrite=overwrite, what="PatchCore model",
                            legacy_members=_legacy_members)

    @staticmethod
    def check_save_target(directory, overwrite: bool = False) -> None:
        """Raise as :meth:`save` would for ``directory``, before a model is fitted (writes nothing)."""
        _atomic.check_folder_target(directory, kind=FORMAT, overwrite=overwrite, what="PatchCore model",
                                    legacy_members=_legacy_members)

    def embedder_layers(self):
        from ..vision.features import BACKBONES

        if isinstance(self.backbone, str):
            return list(BACKBONES[self.backbone]["patch_layers"])
        return None

    @classmethod
    def load(cls, directory, backbone=None, device="cpu", search_device="auto") -> "PatchCore":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        directory : str
        backbone : torch.nn.Module, optional
            Required when the model was fitted with a custom module (its name is not saved).
        device : str, default "cpu"
        search_device : str or None, default "auto"
            As for :class:`PatchCore`; the saved bank moves there without retraining.

        Returns
        -------
        PatchCore
            Fitted, with the saved memory bank.

        Raises
        ------
        ValueError
            Not a saved model, a member that differs from the manifest (size or SHA-256), or an
            invalid ``config.json`` (the message names the field).
        """
        directory = os.fspath(directory)

        def load_members(folder):
            meta = _read_config(folder)
            if meta["backbone"] is None and backbone is None:
                raise ValueError("this model was fitted with a custom backbone module; pass it as backbone=")
            model = cls(backbone=backbone if backbone is not None else meta["backbone"], layers=meta["layers"],
                        image_size=meta["image_size"], target_dim=meta["target_dim"],
                        coreset_method=meta["coreset_method"], coreset_ratio=meta["coreset_ratio"],
                        projection_dim=meta["projection_dim"], backend=meta["backend"],
                        backend_params=meta["backend_params"], num_neighbors=meta["num_neighbors"],
                        seed=meta["seed"], batch_size=meta["batch_size"], device=device,
                        search_device=search_device)
            # the sizes the bank was built with ("auto" ones resolved; older files have only backend_params)
            fitted = meta.get("fitted_backend_params", meta["backend_params"])
            model.backend_ = BACKENDS[meta["backend"]].load(os.path.join(folder, meta["backend_file"]),
                                                            meta["backend"], fitted)
            if model.search_device is not None:
                model.backend_.to_device(model.search_device)
            model.backend_params_ = dict(model.backend_.params)
            model.feature_shape_ = tuple(meta["feature_shape"])
            model.n_train_patches_ = meta["n_train_patches"]
            model.bank_size_ = meta["bank_size"]
            return model

        return _atomic.load_folder(directory, load_members, kind=FORMAT, what="PatchCore model")


_COMPRESSION_NAMES = {"v1": "greedy k-center", "v2": "variance-weighted greedy k-center",
                      "random": "random sample", "all": "all patches"}


def _search_device(search_device, device, backend: str):
    """The torch device of a pqkit memory bank, or None for the default engine (see
    :class:`PatchCore`)."""
    if search_device == "auto":
        is_cuda = isinstance(device, str) and device.split(":")[0] == "cuda"
        search_device = device if is_cuda and backend.startswith("pqkit_") else None
    if search_device is None:
        return None
    if not backend.startswith("pqkit_"):
        raise ValueError(f"search_device needs a pqkit backend (pqkit_flat, pqkit_pq, pqkit_ivfpq, "
                         f"pqkit_ivfpq_refine), got backend={backend!r}; use search_device=None")
    from .. import engine

    return engine.resolve_device("torch", search_device)


def _status(text: str) -> None:
    """One progress line on stderr (where the progress bars are)."""
    print(text, file=sys.stderr, flush=True)


def _read_config(folder) -> dict:
    """The checked ``config.json`` of a model's member folder (ValueError naming what is wrong)."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"no PatchCore model in {folder!r} ({CONFIG_FILE} missing); write one with "
                         "PatchCore.save or `pqkit patchcore fit --out <folder>`")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path!r} is larger than {MAX_CONFIG_BYTES} bytes; not a PatchCore config")
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a pqkit PatchCore config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    missing = [key for key in _CONFIG_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{path!r} lacks the fields {missing}")
    if meta["backend"] not in BACKENDS:
        raise ValueError(f"{path!r}: unknown backend {meta['backend']!r}; known: {sorted(BACKENDS)}")
    expected = BACKENDS[meta["backend"]].file_name
    if meta["backend_file"] != expected:
        raise ValueError(f"{path!r}: backend_file must be {expected!r} for backend {meta['backend']!r}, "
                         f"got {meta['backend_file']!r}")
    for key in ("backend_params", "fitted_backend_params"):
        if key in meta and not isinstance(meta[key], dict):
            raise ValueError(f"{path!r}: {key} must be an object")
    shape = meta["feature_shape"]
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ValueError(f"{path!r}: feature_shape must be three ints > 0, got {shape!r}")
    return meta


def _legacy_members(folder) -> list | None:
    """The files of a model saved directly into ``folder`` (before manifests), or None if it holds none."""
    path = os.path.join(folder, CONFIG_FILE)
    try:
        if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > MAX_CONFIG_BYTES:
            return None
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    members = [CONFIG_FILE]
    bank = meta.get("backend_file")
    if bank in {cls.file_name for cls in BACKENDS.values()}:
        bank_path = os.path.join(folder, bank)
        if os.path.isfile(bank_path) and not os.path.islink(bank_path):
            members.append(bank)
    return members
