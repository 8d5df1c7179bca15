"""PCA / OPQ pre-transforms, IndexPreTransform, factory strings, save/load, parity with faiss."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import pqkit
from tests.conftest import clustered_split, fashion_split


@pytest.fixture(scope="module")
def data():
    return clustered_split(6000, 100, 32, seed=9, n_clusters=25)


def _recall(I, truth):
    return np.mean([np.intersect1d(a, b).size / truth.shape[1] for a, b in zip(I, truth)])


def test_pca_matches_numpy_svd_and_whitening(data):
    base, _ = data
    pca = pqkit.PCA(32, 8).train(base)
    x64 = base.astype(np.float64)
    mean = x64.mean(0)
    _, s, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    # same subspace and the same axes up to sign
    np.testing.assert_allclose(np.abs(pca.A @ vt[:8].T), np.eye(8), atol=1e-4)
    np.testing.assert_allclose(pca.eigenvalues[:8], s[:8] ** 2 / base.shape[0], rtol=1e-4)
    y = pca.apply(base)
    assert y.dtype == np.float32 and y.shape == (6000, 8)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-2 * np.abs(y).max())
    white = pqkit.PCA(32, 8, whiten=True).train(base).apply(base)
    np.testing.assert_allclose(white.var(0), 1, rtol=1e-3)
    # reverse: projection onto the kept components
    np.testing.assert_allclose(pca.apply(pca.reverse(y)), y, rtol=1e-4, atol=1e-3)


def test_pca_same_as_faiss(faiss, data):
    base, _ = data
    ours = pqkit.PCA(32, 8).train(base)
    theirs = faiss.PCAMatrix(32, 8)
    theirs.train(base)
    y_ours, y_theirs = ours.apply(base), theirs.apply(base)
    # eigenvectors are defined up to sign
    signs = np.sign((y_ours * y_theirs).sum(0))
    np.testing.assert_allclose(y_ours, y_theirs * signs, rtol=1e-3, atol=1e-3 * np.abs(y_ours).max())


def test_opq_rotation_orthonormal_and_lowers_error(data):
    base, _ = data
    opq = pqkit.OPQ(32, 8, niter=3, seed=3).train(base)
    np.testing.assert_allclose(opq.A @ opq.A.T, np.eye(32), atol=1e-4)
    np.testing.assert_allclose(opq.reverse(opq.apply(base[:10])), base[:10], rtol=1e-3, atol=1e-3)

    def pq_error(x):
        pq = pqkit.ProductQuantizer(32, 8, 4, seed=3).train(x)
        return float(((pq.decode(pq.encode(x)) - x) ** 2).sum())

    rotated = pqkit.OPQ(32, 8, nbits=4, niter=4, seed=3).train(base).apply(base)
    assert pq_error(rotated) < pq_error(base)
    reduced = pqkit.OPQ(32, 4, d_out=16, niter=2).train(base)
    assert reduced.A.shape == (16, 32)
    np.testing.assert_allclose(reduced.A @ reduced.A.T, np.eye(16), atol=1e-4)


@pytest.mark.parametrize("description,inner_d", [
    ("PCA16,IVF32,PQ8x4", 16), ("PCAW16,Flat", 16), ("OPQ8,IVF32,PQ8x4", 32),
    ("OPQ4_16,PQ4x4", 16), ("OPQ8,IVF16,PQ8x4,RFlat", 32), ("PCA16,PQ4x4,Refine(Flat)", 16)])
def test_factory_strings_train_add_search_save_load(data, description, inner_d, tmp_path):
    base, queries = data
    index = pqkit.index_factory(32, description)
    wrapper = index.base_index if isinstance(index, pqkit.IndexRefine) else index
    assert isinstance(wrapper, pqkit.IndexPreTransform) and wrapper.index.d == inner_d
    if isinstance(wrapper.transform, pqkit.OPQ):
        wrapper.transform.niter = 3
    index.train(base)
    index.add(base)
    if hasattr(wrapper.index, "nprobe"):
        index.nprobe = 8
    D, I = index.search(queries, 10)
    assert D.shape == I.shape == (100, 10) and (I >= 0).all()
    index.save(tmp_path / "i.pqkit")
    loaded = pqkit.load(tmp_path / "i.pqkit")
    D2, I2 = loaded.search(queries, 10)
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)
    I3 = pickle.loads(pickle.dumps(index)).search(queries, 10)[1]
    np.testing.assert_array_equal(I3, I)
    assert index.memory_usage_bytes() > wrapper.index.memory_usage_bytes()
    assert loaded.reconstruct(5).shape == (32,)


def test_pretransform_errors_and_hostile_nesting(data, tmp_path):
    base, _ = data
    with pytest.raises(ValueError, match="must equal the transform's d_out"):
        pqkit.IndexPreTransform(pqkit.PCA(32, 16), pqkit.IndexFlat(8))
    with pytest.raises(TypeError, match="pqkit.PCA"):
        pqkit.IndexPreTransform("PCA", pqkit.IndexFlat(8))
    with pytest.raises(ValueError, match="d_out=64 must be <= d_in=32"):
        pqkit.PCA(32, 64)
    with pytest.raises(ValueError, match="divisible by M=5"):
        pqkit.OPQ(32, 5)
    with pytest.raises(ValueError, match="cannot parse"):
        pqkit.index_factory(32, "PCA,IVF8,Flat")
    index = pqkit.IndexPreTransform(pqkit.PCA(32, 8), pqkit.IndexFlat(8))
    with pytest.raises(ValueError, match="not trained"):
        index.add(base)
    index.train(base)
    index.add(base[:10])
    # a part of unknown type or bad nesting inside a valid file is a ValueError, not a crash
    from pqkit import io as _io
    from pqkit.indexes._state import MAX_NESTING

    params, arrays = index._get_state()
    params["index"]["type"] = "Bogus"
    with pytest.raises(ValueError, match="unknown index type"):
        pqkit.IndexPreTransform._from_state(params, arrays)
    nested = pqkit.IndexFlat(8)
    for _ in range(MAX_NESTING + 1):
        nested = pqkit.IndexPreTransform(pqkit.PCA(8, 8).set_matrix(np.eye(8)), nested)
    data_bytes = _io.index_to_bytes(nested)
    with pytest.raises(ValueError, match="nest at most"):
        _io.index_from_bytes(data_bytes)


def test_transform_that_overflows_blames_the_transform_not_the_queries(data, tmp_path):
    """A saved transform with huge (finite) entries, e.g. a corrupted file: a clear error naming
    the transform, no numpy overflow warning and no "queries contain NaN"."""
    base, queries = data
    index = pqkit.IndexPreTransform(pqkit.PCA(32, 8), pqkit.IndexFlat(8))
    index.train(base)
    index.add(base[:50])
    with pytest.raises(ValueError, match="PCA matrix A holds values too large"):
        index.transform.set_matrix(np.full((8, 32), 3e38, dtype=np.float32))
    large = np.full((8, 32), 1e17, dtype=np.float32)  # within the bound of a 32-d row
    index.transform.set_matrix(large, np.zeros(8, dtype=np.float32))
    index.save(tmp_path / "large.pqkit")
    loaded = pqkit.load(tmp_path / "large.pqkit")
    with pytest.raises(ValueError, match="PCA transform maps these vectors beyond the float32 range"):
        loaded.search(queries[:2] * 10, 3)


@pytest.mark.parity
def test_opq_recall_within_001_of_faiss(faiss):
    """OPQ parity on Fashion-MNIST: OPQ8_32 + PQ8 trained the same way in both libraries."""
    base, queries = fashion_split(10_000, 1000)
    train = np.array(base[:5000])
    exact = pqkit.IndexFlat(784)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    M, d_out, niter = 8, 32, 5
    opq = faiss.OPQMatrix(784, M, d_out)
    opq.niter, opq.max_train_points = niter, 5000
    theirs = faiss.IndexPreTransform(opq, faiss.IndexPQ(d_out, M, 8))
    theirs.train(train)
    theirs.add(base)
    ours = pqkit.IndexPreTransform(
        pqkit.OPQ(784, M, d_out, niter=niter, max_train_points=5000), pqkit.IndexPQ(d_out, M, 8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)  # 5000 < 39 * 256, as in faiss
        ours.train(train)
    ours.add(base)
    r_theirs = _recall(theirs.search(queries, 10)[1], truth)
    r_ours = _recall(ours.search(queries, 10)[1], truth)
    assert r_ours >= r_theirs - 0.01, (r_ours, r_theirs)
