"""Input handling: accepted conversions, refused kinds, typed errors with expected and got values."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pqkit
from tests.test_api import D, INDEX_KINDS, _data, make_index


def _numbers_in(message: str, *numbers) -> bool:
    return all(re.search(rf"(?<![0-9]){n}(?![0-9])", message) for n in numbers)


def _variants(x: np.ndarray):
    """Pairs (converted input, the same values as a C-contiguous float32 array)."""
    x16 = x.astype(np.float16).astype(np.float32)  # values exactly representable in float16
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=np.float32)
    wide[:, ::2] = x
    return {
        "float64": (x.astype(np.float64), x),
        "float16": (x16.astype(np.float16), x16),
        "fortran": (np.asfortranarray(x), x),
        "strided columns": (wide[:, ::2], x),
        "negative row stride": (x[::-1], np.ascontiguousarray(x[::-1])),
        "every other row": (np.repeat(x, 2, axis=0)[::2], x),
        "list of floats": (x.tolist(), x),
    }


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_float_conversions_give_identical_results(kind):
    base, queries = _data()
    reference = make_index(kind)
    reference.add(base[:500])
    for name, (converted, exact) in _variants(np.array(queries[:20])).items():
        assert exact.dtype == np.float32 and exact.flags.c_contiguous
        D_got, I_got = reference.search(converted, 5)
        D_exp, I_exp = reference.search(exact, 5)
        np.testing.assert_array_equal(I_got, I_exp, err_msg=name)
        np.testing.assert_array_equal(D_got, D_exp, err_msg=name)

    # add() accepts the same variants and stores the same data.
    for name, (converted, exact) in _variants(np.array(base[:500])).items():
        index = make_index(kind)
        index.add(converted)
        expected = make_index(kind)
        expected.add(exact)
        np.testing.assert_array_equal(index.search(queries[:20], 5)[1], expected.search(queries[:20], 5)[1],
                                      err_msg=name)
        np.testing.assert_array_equal(index.search(queries[:20], 5)[0], expected.search(queries[:20], 5)[0],
                                      err_msg=name)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_single_vector_is_one_row(kind):
    base, queries = _data()
    index = make_index(kind)
    index.add(base[:200])
    D1, I1 = index.search(queries[3], 4)
    D2, I2 = index.search(queries[3:4], 4)
    assert D1.shape == (1, 4)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    index.add(base[200])  # one 1-D vector adds one row
    assert index.ntotal == 201


def test_training_accepts_conversions():
    base, _ = _data()
    a = pqkit.IndexIVFPQ(D, 8, 4, 4).train(base[:1000])
    b = pqkit.IndexIVFPQ(D, 8, 4, 4).train(np.asfortranarray(base[:1000].astype(np.float64)))
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.pq.codebooks, b.pq.codebooks)


def test_caller_arrays_are_not_modified():
    base, queries = _data()
    x = np.array(base[:300])
    before = x.copy()
    for metric in ("l2", "cosine"):
        index = pqkit.IndexFlat(D, metric=metric)
        index.add(x)
        index.search(x[:5], 3)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, object, np.complex64])
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_non_float_vectors_raise_type_error(kind, dtype):
    base, _ = _data()
    index = make_index(kind)
    bad = np.ones((3, D), dtype=dtype)
    for call in (index.add, lambda x: index.search(x, 2), index.train):
        with pytest.raises(TypeError) as err:
            call(bad)
        assert str(np.dtype(dtype)) in str(err.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_nan_inf_raise_value_error(kind, value):
    base, queries = _data()
    index = make_index(kind)
    bad = np.array(queries[:4])
    bad[2, 5] = value
    with pytest.raises(ValueError, match="row 2"):
        index.add(bad)
    index.add(base[:10])
    with pytest.raises(ValueError, match="NaN|infinite"):
        index.search(bad, 2)
    with pytest.raises(ValueError, match="NaN|infinite"):
        make_index(kind, trained=False).train(np.vstack([base[:1000], bad]))
    assert index.ntotal == 10


def test_float64_overflow_is_refused():
    index = pqkit.IndexFlat(D)
    x = np.zeros((1, D))
    x[0, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="NaN|infinite"):
        index.add(x)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_wrong_dimension(kind):
    index = make_index(kind)
    for call in (index.add, lambda x: index.search(x, 2)):
        with pytest.raises(ValueError) as err:
            call(np.zeros((3, D + 3), np.float32))
        assert _numbers_in(str(err.value), D, D + 3), str(err.value)
    with pytest.raises(ValueError) as err:
        index.search(np.zeros((2, 3, D), np.float32), 1)
    assert "2-D" in str(err.value)


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one(kind, k):
    base, queries = _data()
    index = make_index(kind)
    index.add(base[:10])
    with pytest.raises(ValueError) as err:
        index.search(queries, k)
    assert _numbers_in(str(err.value), 1, k), str(err.value)
    with pytest.raises(TypeError):
        index.search(queries, 2.0)


@pytest.mark.parametrize("kind", ["PQ", "IVFFlat", "IVFPQ"])
def test_add_and_search_before_training(kind):
    base, queries = _data()
    index = make_index(kind, trained=False)
    assert not index.is_trained
    for call in (lambda: index.add(base[:5]), lambda: index.search(queries, 1),
                 lambda: index.add_with_ids(base[:5], np.arange(5)), lambda: index.reconstruct_n(np.arange(1))):
        with pytest.raises(ValueError, match=r"\.train"):
            call()


def test_d_not_divisible_by_m():
    for make in (lambda: pqkit.ProductQuantizer(30, 7), lambda: pqkit.IndexPQ(30, 7),
                 lambda: pqkit.IndexIVFPQ(30, 4, 7)):
        with pytest.raises(ValueError) as err:
            make()
        assert _numbers_in(str(err.value), 30, 7), str(err.value)


@pytest.mark.parametrize("nbits", [0, 17, -3])
def test_nbits_out_of_range(nbits):
    for make in (lambda: pqkit.ProductQuantizer(16, 4, nbits), lambda: pqkit.IndexPQ(16, 4, nbits),
                 lambda: pqkit.IndexIVFPQ(16, 4, 4, nbits)):
        with pytest.raises(ValueError) as err:
            make()
        assert _numbers_in(str(err.value), nbits, 16), str(err.value)
    with pytest.raises(TypeError):
        pqkit.ProductQuantizer(16, 4, 8.0)


@pytest.mark.parametrize("bad_ids, error", [
    (np.arange(5, dtype=np.float64), TypeError),
    (np.ones(5, dtype=bool), TypeError),
    (np.array(["a", "b", "c", "d", "e"]), TypeError),
    (np.arange(5).reshape(5, 1), ValueError),
    (np.arange(4), ValueError),
    (np.array([0, 1, -2, 3, 4]), ValueError),
])
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_bad_ids(kind, bad_ids, error):
    base, _ = _data()
    index = make_index(kind)
    with pytest.raises(error) as err:
        index.add_with_ids(base[:5], bad_ids)
    message = str(err.value)
    if bad_ids.dtype.kind in "fbU":
        assert str(bad_ids.dtype) in message, message
    if bad_ids.shape == (4,):
        assert _numbers_in(message, 5, 4), message
    if bad_ids.dtype.kind == "i" and bad_ids.min() < 0:
        assert "-2" in message, message
    assert index.ntotal == 0
    with pytest.raises(TypeError):
        index.remove_ids(np.array([1.0]))
    with pytest.raises(TypeError):
        index.reconstruct(1.0)


@pytest.mark.parametrize("kind, nlist_or_ksub, make", [
    ("IVFFlat", 100, lambda: pqkit.IndexIVFFlat(D, 100)),
    ("IVFPQ", 100, lambda: pqkit.IndexIVFPQ(D, 100, 4, 4)),
    ("PQ", 256, lambda: pqkit.IndexPQ(D, 4, 8)),
    ("KMeans", 100, lambda: pqkit.KMeans(D, 100)),
])
def test_fewer_training_points_than_centroids(kind, nlist_or_ksub, make):
    base, _ = _data()
    with pytest.raises(ValueError) as err:
        make().train(base[:50])
    assert _numbers_in(str(err.value), nlist_or_ksub, 50), str(err.value)


@pytest.mark.parametrize("make, n", [
    (lambda: pqkit.IndexIVFFlat(D, 20), 500),           # 25 per list
    (lambda: pqkit.IndexIVFPQ(D, 8, 4, 6), 1000),       # 64 sub-centroids: 15 points each
    (lambda: pqkit.IndexPQ(D, 4, 5), 600),              # 32 sub-centroids: 18 points each
    (lambda: pqkit.KMeans(D, 30), 600),
    (lambda: pqkit.ProductQuantizer(D, 4, 4), 300),
])
def test_training_warning(make, n):
    base, _ = _data()
    with pytest.warns(pqkit.TrainingWarning, match="39"):
        make().train(base[:n])


def test_training_warning_can_be_silenced():
    import warnings

    base, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        pqkit.IndexIVFFlat(D, 20).train(base[:500])


def test_training_warning_points_at_the_caller():
    base, _ = _data()
    with pytest.warns(pqkit.TrainingWarning) as record:
        pqkit.IndexIVFFlat(D, 20).train(base[:500])
    assert record[0].filename == __file__


def test_bad_metric_and_constructor_types():
    with pytest.raises(ValueError, match="cosine"):
        pqkit.IndexFlat(4, metric="euclidean")
    with pytest.raises(TypeError):
        pqkit.IndexFlat(4.0)
    with pytest.raises(ValueError):
        pqkit.IndexFlat(0)
    with pytest.raises(ValueError):
        pqkit.IndexIVFFlat(4, 0)


def test_codes_are_never_converted():
    base, _ = _data()
    pq = pqkit.ProductQuantizer(D, 4, 4).train(base[:1000])
    codes = pq.encode(base[:5])
    with pytest.raises(TypeError, match="uint8"):
        pq.decode(codes.astype(np.int32))
    with pytest.raises(ValueError) as err:
        pq.decode(np.zeros((5, 3), np.uint8))
    assert _numbers_in(str(err.value), 2, 3), str(err.value)


@pytest.mark.parametrize("n", [1, 15, 784, 100_003])
def test_core_finite_check_finds_every_position(n):
    """The compiled finite check behind every float input: each non-finite value, at the first,
    a middle and the last position, is found; the largest finite floats pass."""
    from pqkit.engine import _core

    x = np.full(n, np.finfo(np.float32).max, dtype=np.float32)
    x[::2] *= -1
    assert _core.all_finite(x) and _core.all_finite(x.reshape(1, -1))
    for bad in (np.nan, np.inf, -np.inf):
        for pos in {0, n // 2, n - 1}:
            y = x.copy()
            y[pos] = bad
            assert not _core.all_finite(y), (bad, pos)
    with pytest.raises(TypeError, match="float32"):
        _core.all_finite(x.astype(np.float64))
