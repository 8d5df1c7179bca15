"""pqkit.metrics: the one metric table every index reads."""

import math

import numpy as np
import pytest

import pqkit
from pqkit import metrics


def test_the_table():
    assert metrics.NAMES == ("l2", "ip", "cosine")
    assert [metrics.get(n).engine for n in metrics.NAMES] == ["l2", "ip", "ip"]
    assert [metrics.get(n).pad for n in metrics.NAMES] == [math.inf, -math.inf, -math.inf]
    assert [metrics.get(n).normalizes for n in metrics.NAMES] == [False, False, True]


@pytest.mark.parametrize("name", metrics.NAMES)
def test_indexes_follow_the_table(name):
    """Order, padding and normalisation of a search come from the table."""
    metric = metrics.get(name)
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32) * 3
    index = pqkit.IndexFlat(8, name)
    index.add(x)
    D, I = index.search(x[:4], 25)  # k > ntotal: padded
    assert np.all(D[:, 20:] == metric.pad) and np.all(I[:, 20:] == -1)
    steps = np.diff(D[:, :20], axis=1)
    assert np.all(steps <= 0) if metric.higher_is_better else np.all(steps >= 0)
    norms = np.linalg.norm(index.reconstruct_n(np.arange(20)), axis=1)
    assert np.allclose(norms, 1, atol=1e-6) == metric.normalizes


def test_unknown_metric_names_the_table():
    with pytest.raises(ValueError, match=r"\['l2', 'ip', 'cosine'\]"):
        pqkit.IndexFlat(8, "hamming")


@pytest.mark.parametrize("shape", [(10, 1 << 18), (3, 5), (0, 4), (7, (1 << 20) + 3)])
def test_cosine_normalisation_in_blocks_equals_one_division(shape, monkeypatch):
    """normalize_rows divides by float64 norms a block of rows at a time (bounded memory); the
    result is the whole-array division's, bit for bit, across block boundaries."""
    from pqkit import _validation

    monkeypatch.setattr(_validation, "_NORMALIZE_BLOCK_VALUES", 1 << 20)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) + np.float32(0.01)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    want = (x / norms[:, None]).astype(np.float32)
    got = _validation.normalize_rows(x)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="all-zero"):
        _validation.normalize_rows(np.zeros((2, 3), np.float32))
