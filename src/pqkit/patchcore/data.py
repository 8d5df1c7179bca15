"""Data sets for PatchCore: MVTec-AD folder layout and the ELPV solar-cell set.

MVTec AD layout (``root`` is one category)::

    root/train/good/*.png|jpg|...                    normal training images
    root/test/good/*                                 normal test images
    root/test/<defect>/*                             anomalous test images
    root/ground_truth/<defect>/<stem>_mask.png       binary mask of test/<defect>/<stem>.*

Images may be RGB or grayscale and of any size; a mask must have its image's size.

The package ships a tiny sample category in this layout (:func:`sample_root`: 10 normal
training images, 4 normal and 6 defective test images with masks, 128x128 grayscale PNG, made
by ``bench/patchcore/make_sample.py``), so every command has something to run on anywhere.

ELPV (Deitsch et al., "Automatic classification of defective photovoltaic module cells in
electroluminescence images", Solar Energy 2019; Buerhop-Lutz et al. 2018) comes from the
``elpv-dataset`` package: 2,624 grayscale 300x300 cells with a defect probability in
{0, 1/3, 2/3, 1} and a cell type (mono/poly), image labels only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "Sample", "elpv_samples", "limit_samples", "load_mask", "mvtec_samples",
           "sample_root"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes
    ----------
    path : str
        Image file.
    label : int
        0 normal, 1 anomalous.
    defect : str
        "good" for normal images, else the defect type (folder name; "defective" for ELPV).
    mask_path : str or None
        Ground-truth mask file (MVTec layout, anomalous test images); None for normal images
        (an all-zero mask) and for sets without masks.
    """

    path: str
    label: int
    defect: str
    mask_path: str | None = None


def _image_files(folder: str) -> list:
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )


def mvtec_samples(root, split: str, require_masks: bool = True) -> list:
    """List the samples of one MVTec-layout category.

    Parameters
    ----------
    root : str or os.PathLike
        The category folder (holding ``train/``, ``test/``, ``ground_truth/``).
    split : {"train", "test"}
        "train": ``train/good`` (all label 0). "test": every folder under ``test/``; "good" is
        label 0, any other folder label 1 with its mask from ``ground_truth/<defect>/``.
    require_masks : bool, default True
        Raise if an anomalous test image has no mask; False leaves ``mask_path=None`` (pixel
        AUROC is then computed over the images that have masks).

    Returns
    -------
    list of Sample
        Sorted by defect folder, then file name.

    Raises
    ------
    ValueError
        Missing root/split folder, a split with no images, a missing mask (message names the
        expected mask path), an unknown split.
    """
    root = os.fspath(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(root):
        raise ValueError(f"data folder not found: {root!r} (expected an MVTec-layout category folder "
                         "with train/good, test/<defect> and ground_truth/<defect>)")
    if split == "train":
        folder = os.path.join(root, "train", "good")
        if not os.path.isdir(folder):
            raise ValueError(f"missing folder {folder!r}: the MVTec layout keeps normal training images "
                             "in <root>/train/good")
        files = _image_files(folder)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}")
        return [Sample(path, 0, "good") for path in files]

    test_root = os.path.join(root, "test")
    if not os.path.isdir(test_root):
        raise ValueError(f"missing folder {test_root!r}: the MVTec layout keeps test images in "
                         "<root>/test/good and <root>/test/<defect>")
    samples = []
    for defect in sorted(os.listdir(test_root)):
        folder = os.path.join(test_root, defect)
        if not os.path.isdir(folder):
            continue
        for path in _image_files(folder):
            if defect == "good":
                samples.append(Sample(path, 0, "good"))
                continue
            stem = os.path.splitext(os.path.basename(path))[0]
            mask = os.path.join(root, "ground_truth", defect, f"{stem}_mask.png")
            if not os.path.isfile(mask):
                if require_masks:
                    raise ValueError(
                        f"mask missing for anomalous test image {path!r}: expected {mask!r}; "
                        "pass require_masks=False to score without pixel AUROC for such images"
                    )
                mask = None
            samples.append(Sample(path, 1, defect, mask))
    if not samples:
        raise ValueError(f"no test images in {test_root!r}")
    if not any(s.label == 0 for s in samples) or not any(s.label == 1 for s in samples):
        raise ValueError(
            f"{test_root!r} must hold both normal (test/good) and anomalous (test/<defect>) images "
            f"for AUROC; found {sum(s.label == 0 for s in samples)} normal and "
            f"{sum(s.label == 1 for s in samples)} anomalous"
        )
    return samples


def sample_root() -> str:
    """The folder of the built-in sample category (MVTec layout, shipped with the package).

    Returns
    -------
    str
        ``<site-packages>/pqkit/patchcore/sample``: ``train/good`` (10 images), ``test/good`` (4),
        ``test/blowhole`` and ``test/crack`` (3 each) with masks in ``ground_truth/``.

    Raises
    ------
    ValueError
        The folder is missing (an installation without package data).
    """
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
    if not os.path.isdir(os.path.join(root, "train", "good")):
        raise ValueError(f"the built-in sample set is missing from {root!r}; reinstall pqkit "
                         "(pip install 'pqkit[patchcore]')")
    return root


def _evenly(items: list, count: int) -> list:
    if count >= len(items):
        return list(items)
    if count <= 0:
        return []
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def limit_samples(samples, max_images) -> list:
    """At most ``max_images`` samples, spread evenly over the list (for a quick try).

    Normal and anomalous samples are limited in proportion to their counts, at least one of each
    when both occur and ``max_images >= 2`` (so AUROC stays defined); within each, the samples
    kept are evenly spaced over the sorted list, so every defect folder is represented when there
    are enough. The order of the input is kept.

    Parameters
    ----------
    samples : list of Sample
    max_images : int or None
        None keeps every sample.

    Returns
    -------
    list of Sample
    """
    samples = list(samples)
    if max_images is None or max_images >= len(samples):
        return samples
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"max_images must be an integer >= 1 or None, got {max_images!r}")
    normal = [s for s in samples if s.label == 0]
    anomalous = [s for s in samples if s.label == 1]
    if not normal or not anomalous or max_images < 2:
        kept = set(map(id, _evenly(samples, max_images)))
    else:
        n_normal = int(round(max_images * len(normal) / len(samples)))
        n_normal = min(max(n_normal, 1), max_images - 1)
        kept = set(map(id, _evenly(normal, n_normal) + _evenly(anomalous, max_images - n_normal)))
    return [s for s in samples if id(s) in kept]


def load_mask(sample: Sample, image_size) -> np.ndarray:
    """The binary ground-truth mask of a sample, checked against its image's size.

    Parameters
    ----------
    sample : Sample
    image_size : (height, width)
        Size of the sample's image file (as read); the mask file must have exactly this size.

    Returns
    -------
    numpy.ndarray of bool, shape (height, width)
        All False for a sample without ``mask_path``.

    Raises
    ------
    ValueError
        Unreadable mask, or a mask whose size differs from the image's.
    """
    from PIL import Image, UnidentifiedImageError

    height, width = int(image_size[0]), int(image_size[1])
    if sample.mask_path is None:
        return np.zeros((height, width), dtype=bool)
    try:
        with Image.open(sample.mask_path) as mask_image:
            mask = np.asarray(mask_image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read mask {sample.mask_path!r}: {exc}") from None
    if mask.shape != (height, width):
        raise ValueError(
            f"mask {sample.mask_path!r} has size {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{sample.path!r} is {width}x{height}; masks must match their images pixel for pixel"
        )
    return mask > 127


def elpv_samples(cell_type: str = "mono", train_fraction: float = 0.5, seed: int = 0,
                 min_anomaly_probability: float = 0.5, exclude_uncertain: bool = True) -> tuple:
    """Train/test split of the ELPV solar-cell set for anomaly detection.

    Normal = defect probability 0; anomalous = probability >= ``min_anomaly_probability``
    (default: 2/3 and 1). Cells in between (probability 1/3: "possibly defective") are left
    out when ``exclude_uncertain`` (default), else counted as normal. A seeded random
    ``train_fraction`` of the normal cells forms the training set; the other normal cells and
    all anomalous cells form the test set.

    Parameters
    ----------
    cell_type : {"mono", "poly", "all"}, default "mono"
    train_fraction : float in (0, 1), default 0.5
    seed : int, default 0
    min_anomaly_probability : float in (0, 1], default 0.5
    exclude_uncertain : bool, default True

    Returns
    -------
    (train, test) : lists of Sample
        ``defect`` is "good" or "defective"; ``mask_path`` is None (ELPV has image labels only).
    """
    if cell_type not in ("mono", "poly", "all"):
        raise ValueError(f"cell_type must be 'mono', 'poly' or 'all', got {cell_type!r}")
    if not 0 < float(train_fraction) < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 0 < float(min_anomaly_probability) <= 1:
        raise ValueError(f"min_anomaly_probability must be in (0, 1], got {min_anomaly_probability}")
    try:
        import elpv_dataset
    except ImportError as exc:
        raise ImportError("the ELPV data set is not installed: pip install elpv-dataset "
                          "(or pip install 'pqkit[patchcore]')") from exc
    folder = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
    labels = os.path.join(folder, "labels.csv")
    if not os.path.isfile(labels):
        raise ValueError(f"ELPV labels not found at {labels!r}; reinstall elpv-dataset")
    normal, anomalous = [], []
    with open(labels, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) != 3:
                continue
            relative, probability, kind = parts[0], float(parts[1]), parts[2]
            if cell_type != "all" and kind != cell_type:
                continue
            path = os.path.join(folder, relative)
            if probability == 0 or (probability < min_anomaly_probability and not exclude_uncertain):
                normal.append(Sample(path, 0, "good"))
            elif probability >= min_anomaly_probability:
                anomalous.append(Sample(path, 1, "defective"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normal))
    n_train = int(round(train_fraction * len(normal)))
    train = [normal[i] for i in sorted(order[:n_train])]
    test = [normal[i] for i in sorted(order[n_train:])] + anomalous
    return train, test
