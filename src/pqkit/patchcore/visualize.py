"""Anomaly-map overlays and a contact sheet of the highest-scored images (``score --maps DIR``).

For each scored image, ``DIR/<defect>/<name>.png`` shows the image beside its anomaly map laid
over it (``inferno`` colours, more opaque where the score is higher) and, when the image has a
ground-truth mask, the mask's outline in green, with a caption (rank, score, defect). All maps
share one colour scale, from the 1st percentile to the maximum over every map scored, so a normal
image looks calm and an anomaly stands out. ``DIR/worst.png`` is a contact sheet of the
highest-scored images (the ones a user inspects first; a normal image among them is a false
alarm), and ``DIR/index.html`` a static page listing every overlay, highest score first.

The file names depend only on the samples, so :func:`map_files` lists them before any scoring and
the command line refuses to replace existing ones without ``--overwrite``; each file is written
all-or-nothing.
"""

from __future__ import annotations

import html
import os

import numpy as np

__all__ = ["CONTACT_SHEET", "INDEX_PAGE", "map_files", "write_maps"]

CONTACT_SHEET = "worst.png"
INDEX_PAGE = "index.html"
#: Displayed size of each half of an overlay (pixels): small maps are enlarged, large ones shrunk.
DISPLAY = 256
_CAPTION = 22
_OUTLINE = (60, 255, 90)


def map_files(samples) -> list:
    """Relative paths of the overlay of each sample, ``<defect>/<stem>.png`` (``-2``, ``-3``... on
    a clash), then the contact sheet and the index page.

    Parameters
    ----------
    samples : list of pqkit.patchcore.Sample

    Returns
    -------
    list of str
        ``len(samples) + 2`` relative paths; the first ``len(samples)`` in the order of ``samples``.
    """
    names, seen = [], set()
    for sample in samples:
        stem = os.path.splitext(os.path.basename(sample.path))[0]
        name, suffix = f"{sample.defect}/{stem}.png", 2
        while name in seen:
            name, suffix = f"{sample.defect}/{stem}-{suffix}.png", suffix + 1
        seen.add(name)
        names.append(name)
    return names + [CONTACT_SHEET, INDEX_PAGE]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels on the border of a boolean mask, two pixels wide."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, iterations=2)
    return mask & ~inner


def overlay_panel(sample, anomaly_map: np.ndarray, low: float, high: float, caption: str):
    """One overlay: the image and the map over it, side by side, with a caption.

    Parameters
    ----------
    sample : Sample
    anomaly_map : numpy.ndarray of float, shape (S, S)
    low, high : float
        The shared colour scale.
    caption : str

    Returns
    -------
    PIL.Image.Image
        RGB, ``2 * DISPLAY`` x ``DISPLAY + 22`` pixels.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    from ..vision.features import load_image
    from ._common import _mask_at

    image = load_image(sample.path, DISPLAY).astype(np.float32)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(anomaly_map, dtype=np.float32))  # mode "F"
                         .resize((DISPLAY, DISPLAY), Image.BILINEAR))
    level = np.clip((resized - low) / max(high - low, 1e-12), 0.0, 1.0)
    heat = colormaps["inferno"](level)[..., :3] * 255.0
    alpha = (0.25 + 0.6 * level)[..., None]
    blended = (1 - alpha) * image + alpha * heat
    if sample.mask_path is not None:
        border = _outline(_mask_at(sample, DISPLAY))
        blended[border] = _OUTLINE
    panel = Image.new("RGB", (2 * DISPLAY, DISPLAY + _CAPTION), (255, 255, 255))
    panel.paste(Image.fromarray(image.astype(np.uint8)), (0, 0))
    panel.paste(Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)), (DISPLAY, 0))
    ImageDraw.Draw(panel).text((6, DISPLAY + 3), caption, fill=(0, 0, 0), font=_font(14))
    return panel


def _contact_sheet(panels: list, columns: int = 2):
    from PIL import Image

    width, height = panels[0].size
    rows = (len(panels) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * width + (columns - 1) * 8, rows * height + (rows - 1) * 8), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % columns) * (width + 8), (i // columns) * (height + 8)))
    return sheet


def _index_page(samples, scores, names, order, low, high) -> str:
    rows = []
    for rank, i in enumerate(order, 1):
        sample = samples[i]
        kind = "normal" if sample.label == 0 else f"anomalous ({sample.defect})"
        rows.append(f"<tr><td>{rank}</td><td>{scores[i]:.4g}</td><td>{html.escape(kind)}</td>"
                    f"<td>{html.escape(os.path.basename(sample.path))}</td>"
                    f"<td><img src=\"{html.escape(names[i])}\" width=\"{DISPLAY}\" loading=\"lazy\"></td></tr>")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>PatchCore anomaly maps</title>\n"
            "<style>body{font-family:sans-serif} td{padding:4px 10px;vertical-align:middle}"
            " tr:nth-child(even){background:#f3f3f3}</style></head><body>\n"
            f"<h1>PatchCore anomaly maps</h1>\n<p>{len(samples)} images, highest anomaly score first. "
            f"Colour scale shared by all maps: {low:.4g} (dark) to {high:.4g} (yellow); "
            "green outlines are the ground-truth masks. "
            f"<a href=\"{CONTACT_SHEET}\">Contact sheet of the highest-scored images</a>.</p>\n"
            "<table><tr><th>rank</th><th>score</th><th>image</th><th>file</th><th>map</th></tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")


def write_maps(out_dir, samples, scores, maps, worst: int = 16, progress: bool = False) -> list:
    """Write the overlays, the contact sheet and the index page (module docstring).

    Parameters
    ----------
    out_dir : str or os.PathLike
        Created if missing; only the files of :func:`map_files` are written (each replaced
        all-or-nothing, so check them first: the command line refuses to replace without
        ``--overwrite``).
    samples : list of Sample
    scores : numpy.ndarray of float, shape (n,)
    maps : numpy.ndarray of float, shape (n, S, S)
        Anomaly maps (:meth:`PatchCore.predict`).
    worst : int, default 16
        Images on the contact sheet: the highest-scored ones.
    progress : bool, default False
        A tqdm bar over the images.

    Returns
    -------
    list of str
        The paths written.
    """
    from tqdm.auto import tqdm

    from ._common import _replace_atomically

    scores = np.asarray(scores, dtype=np.float64)
    maps = np.asarray(maps)
    if len(samples) != len(scores) or maps.shape[0] != len(samples):
        raise ValueError(f"samples, scores and maps must have one entry per image, got {len(samples)}, "
                         f"{len(scores)} and {maps.shape[0]}")
    out_dir = os.fspath(out_dir)
    names = map_files(samples)
    low, high = float(np.percentile(maps, 1)), float(maps.max())
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    rank = {i: r for r, i in enumerate(order, 1)}
    written, sheet = [], {}
    for i in tqdm(range(len(samples)), disable=not progress, desc="anomaly maps", unit="image"):
        sample = samples[i]
        kind = "normal" if sample.label == 0 else sample.defect
        caption = f"#{rank[i]}  score {scores[i]:.4g}  {kind}  {os.path.basename(sample.path)}"
        panel = overlay_panel(sample, maps[i], low, high, caption)
        path = os.path.join(out_dir, names[i])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _replace_atomically(path, lambda tmp, panel=panel: panel.save(tmp, format="PNG"))
        written.append(path)
        if rank[i] <= worst:
            sheet[rank[i]] = panel
    if sheet:
        path = os.path.join(out_dir, CONTACT_SHEET)
        image = _contact_sheet([sheet[r] for r in sorted(sheet)])
        _replace_atomically(path, lambda tmp: image.save(tmp, format="PNG"))
        written.append(path)
    page = _index_page(samples, scores, names, order, low, high).encode("utf-8")
    path = os.path.join(out_dir, INDEX_PAGE)

    def write_page(tmp):
        with open(tmp, "xb") as handle:
            handle.write(page)

    _replace_atomically(path, write_page)
    written.append(path)
    return written
