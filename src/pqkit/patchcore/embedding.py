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
"""

from __future__ import annotations

import numpy as np

from ..vision.features import BACKBONES, FeatureExtractor, _torch, load_backbone, load_image, to_tensor

__all__ = ["PatchEmbedder"]


class PatchEmbedder:
    """Turn images into locally aware patch features.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default "efficientnet_lite0"
        A name for :func:`pqkit.vision.features.load_backbone`, or any module (then ``layers`` is required).
    layers : sequence of str, optional
        Hooked layers, shallowest first. Default for EfficientNet-Lite0: ``("_blocks.4",
        "_blocks.10")`` (strides 8 and 16, like ResNet ``layer2``/``layer3``).
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
        self.extractor = FeatureExtractor(model, self.layers, device=device)

    def embed_batch(self, images) -> np.ndarray:
        """Patch features of a batch of uint8 images.

        Parameters
        ----------
        images : list of numpy.ndarray of uint8, (H, W, 3) or (H, W)

        Returns
        -------
        numpy.ndarray of float32, shape (n, h, w, target_dim)
        """
        torch = _torch()
        import torch.nn.functional as F

        maps = self.extractor(to_tensor(images, self.image_size))
        first = maps[self.layers[0]]
        height, width = first.shape[-2:]
        pooled = []
        for name in self.layers:
            fmap = F.avg_pool2d(maps[name], kernel_size=3, stride=1, padding=1)
            if fmap.shape[-2:] != (height, width):
                fmap = F.interpolate(fmap, size=(height, width), mode="bilinear", align_corners=False)
            n, channels = fmap.shape[:2]
            vectors = fmap.permute(0, 2, 3, 1).reshape(-1, 1, channels)
            pooled.append(F.adaptive_avg_pool1d(vectors, self.target_dim))
        stacked = torch.cat(pooled, dim=2)
        reduced = F.adaptive_avg_pool1d(stacked, self.target_dim).reshape(n, height, width, self.target_dim)
        return np.ascontiguousarray(reduced.cpu().numpy(), dtype=np.float32)

    def embed_paths(self, paths, progress: bool = True, desc: str = "patch features") -> np.ndarray:
        """Patch features of image files, in batches under ``torch.no_grad`` with a tqdm bar.

        Parameters
        ----------
        paths : sequence of str
        progress : bool, default True

        Returns
        -------
        numpy.ndarray of float32, shape (n, h, w, target_dim)
        """
        from tqdm.auto import tqdm

        paths = list(paths)
        if not paths:
            raise ValueError("no images to embed (empty list of paths)")
        chunks = []
        for start in tqdm(range(0, len(paths), self.batch_size), disable=not progress, desc=desc, unit="batch"):
            images = [load_image(p) for p in paths[start:start + self.batch_size]]
            chunks.append(self.embed_batch(images))
        return np.concatenate(chunks, axis=0)

    def config(self) -> dict:
        """Parameters that rebuild this embedder (``backbone`` is None for a custom module)."""
        return {"backbone": self.backbone_name, "layers": self.layers, "image_size": self.image_size,
                "target_dim": self.target_dim}
