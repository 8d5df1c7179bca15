"""Locally aware patch features (PatchCore, section 3.1).

For each hooked layer j with feature map ``phi_j`` of shape (C_j, H_j, W_j):

1. neighbourhood aggregation: ``phi_j`` is averaged over the 3x3 neighbourhood of each position
   (``avg_pool2d(kernel=3, stride=1, padding=1)``, the paper's ``f_agg`` with patch size p = 3);
2. every layer is upsampled (bilinear) to the spatial size of the first (shallowest) layer;
3. channel reduction: each layer's channel vector is average-pooled to ``target_dim`` values
   (``adaptive_avg_pool1d``), the layers' vectors are concatenated, and the concatenation is
   average-pooled once more to ``target_dim`` (the reference implementation's preprocessing +
   aggregation, which weighs every layer equally whatever its channel count).

The result is one ``target_dim``-vector per position of the shallowest layer: an
(n_images, H_1, W_1, target_dim) float32 array.

The forward pass stops as soon as every hooked layer has produced its output (the reference
implementation does the same): the layers after the deepest one, and the classifier head, are
never run, which makes no difference to the features and saves their time. Several layer choices
can be embedded from one forward pass (``choices``), as the backbone experiment does.
"""

from __future__ import annotations

import numpy as np

from ..vision.features import BACKBONES, FeatureExtractor, _torch, load_backbone, load_image, to_tensor

__all__ = ["PatchEmbedder", "aggregate"]


class _LayersDone(Exception):
    """Raised by a hook once every hooked layer has run: the rest of the forward pass is skipped."""


class _TruncatedExtractor(FeatureExtractor):
    """:class:`~pqkit.vision.features.FeatureExtractor` that stops the forward pass once every
    hooked layer has produced its output."""

    def _hook(self, name: str):
        def store(module, inputs, output):
            self._outputs[name] = output
            if len(self._outputs) == len(self.layers):
                raise _LayersDone

        return store

    def __call__(self, batch) -> dict:
        torch = _torch()
        self._outputs = {}
        with torch.no_grad():
            try:
                self.model(batch.to(self.device))
            except _LayersDone:
                pass
        outputs, self._outputs = self._outputs, {}
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise ValueError(f"layer(s) {missing} of {type(self.model).__name__} produced no output in the forward "
                             "pass; hook layers that the model's forward runs")
        return {name: outputs[name] for name in self.layers}


def aggregate(maps: dict, layers, target_dim: int, as_tensor: bool = False) -> np.ndarray:
    """Locally aware patch features from layer outputs (the module docstring's three steps).

    Parameters
    ----------
    maps : dict of str to torch.Tensor
        Layer outputs, each (n, C_j, H_j, W_j).
    layers : sequence of str
        The layers to combine, shallowest first: the first one sets the patch grid.
    target_dim : int
    as_tensor : bool, default False
        Return the torch tensor where the layer outputs lie (the device) instead of a NumPy copy.

    Returns
    -------
    numpy.ndarray of float32, shape (n, H_1, W_1, target_dim)
        Or a float32 torch.Tensor of that shape with ``as_tensor``.
    """
    torch = _torch()
    import torch.nn.functional as F

    first = maps[layers[0]]
    height, width = first.shape[-2:]
    pooled = []
    for name in layers:
        fmap = F.avg_pool2d(maps[name], kernel_size=3, stride=1, padding=1)
        if fmap.shape[-2:] != (height, width):
            fmap = F.interpolate(fmap, size=(height, width), mode="bilinear", align_corners=False)
        n, channels = fmap.shape[:2]
        vectors = fmap.permute(0, 2, 3, 1).reshape(-1, 1, channels)
        pooled.append(F.adaptive_avg_pool1d(vectors, target_dim))
    stacked = torch.cat(pooled, dim=2)
    reduced = F.adaptive_avg_pool1d(stacked, target_dim).reshape(n, height, width, target_dim)
    if as_tensor:
        return reduced.to(torch.float32).contiguous()
    return np.ascontiguousarray(reduced.cpu().numpy(), dtype=np.float32)


class PatchEmbedder:
    """Turn images into locally aware patch features.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default "efficientnet_lite0"
        A name for :func:`pqkit.vision.features.load_backbone`, or any module (then ``layers`` is required).
    layers : sequence of str, optional
        Hooked layers, shallowest first. Default for EfficientNet-Lite0: ``("_blocks.4",
        "_blocks.10", "_blocks.14")`` (strides 8, 16 and 32: ResNet ``layer2``/``layer3`` and the
        stride-32 stage end, which experiment 1 found worth its cost).
    image_size : int, default 224
        Images are resized to (image_size, image_size).
    target_dim : int, default 128
        Length of a patch feature.
    batch_size : int, default 16
    device : str, default "cpu"
    """

    def __init__(self, backbone="efficientnet_lite0", layers=None, image_size: int = 224,
                 target_dim: int = 128, batch_size: int = 16, device="cpu"):
        from .._validation import check_positive_int

        if isinstance(backbone, str):
            model = load_backbone(backbone)
            if layers is None:
                layers = BACKBONES[backbone]["patch_layers"]
        else:
            model = backbone
            if layers is None:
                raise ValueError("layers is required with a custom backbone module, e.g. ['layer2', 'layer3']")
        self.backbone_name = backbone if isinstance(backbone, str) else None
        self.layers = list(layers)
        self.image_size = check_positive_int(image_size, "image_size")
        self.target_dim = check_positive_int(target_dim, "target_dim")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.extractor = _TruncatedExtractor(model, self.layers, device=device)

    def _choices(self, choices) -> list:
        if choices is None:
            return [self.layers]
        choices = [list(c) for c in choices]
        unknown = sorted({name for c in choices for name in c} - set(self.layers))
        if unknown or any(not c for c in choices):
            raise ValueError(f"every layer choice must be a non-empty list of hooked layers {self.layers}, "
                             f"got {choices}")
        return choices

    def embed_batch(self, images, choices=None, as_tensor: bool = False):
        """Patch features of a batch of uint8 images.

        Parameters
        ----------
        images : list of numpy.ndarray of uint8, (H, W, 3) or (H, W)
        choices : list of lists of str, optional
            Layer choices (subsets of ``layers``, shallowest first) to aggregate from the same
            forward pass; default: ``layers`` alone.
        as_tensor : bool, default False
            Keep the features on the extractor's device as torch tensors (no copy to the host).

        Returns
        -------
        numpy.ndarray of float32, shape (n, h, w, target_dim)
            Or, with ``choices``, a list of such arrays, one per choice (tensors with
            ``as_tensor``).
        """
        maps = self.extractor(to_tensor(images, self.image_size))
        arrays = [aggregate(maps, c, self.target_dim, as_tensor) for c in self._choices(choices)]
        return arrays if choices is not None else arrays[0]

    def embed_paths(self, paths, progress: bool = True, desc: str = "patch features", choices=None):
        """Patch features of image files, in batches under ``torch.no_grad`` with a tqdm bar.

        Parameters
        ----------
        paths : sequence of str
        progress : bool, default True
        desc : str
            The progress bar's label.
        choices : list of lists of str, optional
            As in :meth:`embed_batch`.

        Returns
        -------
        numpy.ndarray of float32, shape (n, h, w, target_dim)
            Or, with ``choices``, a list of such arrays, one per choice.
        """
        from tqdm.auto import tqdm

        paths = list(paths)
        if not paths:
            raise ValueError("no images to embed (empty list of paths)")
        wanted = self._choices(choices)
        out = None
        for start in tqdm(range(0, len(paths), self.batch_size), disable=not progress, desc=desc, unit="batch"):
            images = [load_image(p) for p in paths[start:start + self.batch_size]]
            arrays = self.embed_batch(images, wanted)
            if out is None:  # filled in place: no second copy of a large feature array
                out = [np.empty((len(paths), *a.shape[1:]), dtype=np.float32) for a in arrays]
            for array, chunk in zip(out, arrays):
                array[start:start + len(chunk)] = chunk
        return out if choices is not None else out[0]

    def close(self) -> None:
        """Detach the hooks from the backbone (before another embedder hooks the same module)."""
        self.extractor.remove()

    def config(self) -> dict:
        """Parameters that rebuild this embedder (``backbone`` is None for a custom module)."""
        return {"backbone": self.backbone_name, "layers": self.layers, "image_size": self.image_size,
                "target_dim": self.target_dim}
