"""PatchCore with its memory bank on the torch engine (``search_device``), end to end on the
built-in sample set, on the CPU (the code path ``device="cuda"`` runs on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from pqkit import engine
from tests.conftest import skip_or_fail


@pytest.fixture(scope="module")
def sample_paths():
    if "torch" not in engine.available_backends():
        skip_or_fail("the gpu extra is not installed: pip install 'pqkit[gpu]'")
    from pqkit.patchcore import mvtec_samples, sample_root

    train = [s.path for s in mvtec_samples(sample_root(), "train")][:6]
    test = mvtec_samples(sample_root(), "test")  # a few of each kind keep the test fast
    test = [s for s in test if s.label == 0][:3] + [s for s in test if s.label == 1][:4]
    return train, [s.path for s in test], np.array([s.label for s in test])


@pytest.mark.parametrize("backend, params", [
    ("pqkit_flat", {}),
    ("pqkit_ivfpq_refine", {"k_factor": 4.0}),
])
def test_patchcore_on_the_torch_engine_scores_as_the_host_path(sample_paths, tmp_path, backend,
                                                              params, monkeypatch):
    """A bank fitted on the compiled core, loaded onto the torch engine: predict sends each
    batch's features from the backbone to the bank search as a tensor (never a NumPy array)
    and the scores equal the host path's to float rounding. A bank fitted on the torch engine
    (trained there) detects as well."""
    from pqkit.patchcore import PatchCore, image_auroc

    train, test, labels = sample_paths
    common = dict(image_size=64, coreset_ratio=0.5, backend=backend, backend_params=params,
                  batch_size=4)
    host = PatchCore(**common).fit(train, progress=False)
    assert host.backend_.index.backend != "torch"
    want, want_maps = host.predict(test, progress=False)
    host.save(tmp_path / "model")
    on_device = PatchCore.load(tmp_path / "model", search_device="cpu")
    assert on_device.backend_.index.backend == "torch"

    import pqkit.indexes.base as base

    seen = []
    original = base.Index._prepare

    def spy(self, x, name="x", keep_tensor=False):
        seen.append(type(x).__module__.partition(".")[0])
        return original(self, x, name, keep_tensor)

    monkeypatch.setattr(base.Index, "_prepare", spy)
    scores, maps = on_device.predict(test, progress=False)
    monkeypatch.undo()
    assert seen and seen[0] == "torch", seen  # the first search got the device tensor
    assert scores.shape == (len(test),) and maps.shape == (len(test), 64, 64)
    np.testing.assert_allclose(scores, want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(maps, want_maps, rtol=1e-3, atol=1e-3)

    if backend == "pqkit_flat":
        return
    trained = PatchCore(**common, search_device="cpu").fit(train, progress=False)
    assert trained.backend_.index.backend == "torch"
    got, _ = trained.predict(test, progress=False, maps=False)
    assert image_auroc(labels, got) >= image_auroc(labels, want) - 0.15


def test_search_device_errors(monkeypatch):
    if "torch" not in engine.available_backends():
        skip_or_fail("the gpu extra is not installed: pip install 'pqkit[gpu]'")
    import torch

    from pqkit.patchcore import PatchCore

    with pytest.raises(ValueError, match="needs a pqkit backend"):
        PatchCore(backend="exact_knn", search_device="cpu")
    assert PatchCore(backend="exact_knn", device="cpu").search_device is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"no CUDA device.*pqkit\[gpu\]"):
        PatchCore(device="cuda")
