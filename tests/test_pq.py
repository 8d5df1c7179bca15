"""ProductQuantizer against the NumPy reference: training, encode, decode, tables, packing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pqkit
from tests import reference as ref
from tests.conftest import clustered_split


def _random_codebooks(M, nbits, dsub, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((M, 1 << nbits, dsub)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# packing layout


@pytest.mark.parametrize("nbits", list(range(1, 17)))
@pytest.mark.parametrize("M", [1, 3, 8])
def test_pack_unpack_match_faiss_bit_layout(M, nbits):
    rng = np.random.default_rng(M * 100 + nbits)
    indices = rng.integers(0, 1 << nbits, size=(50, M))
    indices[0] = 0
    indices[1] = (1 << nbits) - 1  # all ones: catches bits spilling into the neighbour
    pq = pqkit.ProductQuantizer(M * 2, M, nbits)
    codes = pq.pack_codes(indices)
    assert codes.dtype == np.uint8 and codes.shape == (50, ref.code_size(M, nbits)) == (50, pq.code_size)
    np.testing.assert_array_equal(codes, ref.pack_codes(indices, nbits))
    unpacked = pq.unpack_codes(codes)
    assert unpacked.dtype == np.int32 and unpacked.shape == (50, M)
    np.testing.assert_array_equal(unpacked, indices)


def test_packing_layout_by_hand():
    """nbits=5, M=3, codes (1, 2, 31): code m fills bits [5m, 5m+5) of the little-endian stream.

    Set bits: 0 (code 1), 6 (code 2 = 0b10 starting at bit 5) and 10..14 (code 31), so
    byte 0 = 2**0 + 2**6 = 0x41 and byte 1 = 0b0111_1100 = 0x7c.
    """
    pq = pqkit.ProductQuantizer(6, 3, nbits=5)
    codes = pq.pack_codes(np.array([[1, 2, 31]]))
    np.testing.assert_array_equal(codes, np.array([[0x41, 0x7C]], dtype=np.uint8))


def test_pack_rejects_out_of_range_and_non_integer():
    pq = pqkit.ProductQuantizer(8, 2, nbits=4)
    with pytest.raises(ValueError, match="16"):
        pq.pack_codes(np.array([[0, 16]]))
    with pytest.raises(TypeError):
        pq.pack_codes(np.array([[0.0, 1.0]]))


# ---------------------------------------------------------------------------------------------
# encode / decode / distance tables with injected codebooks


@pytest.mark.parametrize("M, nbits, dsub", [(4, 4, 4), (4, 8, 4), (3, 5, 3), (8, 8, 2), (2, 16, 2), (5, 1, 1)])
def test_encode_decode_tables_match_numpy(M, nbits, dsub):
    d = M * dsub
    codebooks = _random_codebooks(M, nbits, dsub)
    x = np.random.default_rng(1).standard_normal((300, d)).astype(np.float32)
    pq = pqkit.ProductQuantizer(d, M, nbits).set_codebooks(codebooks)
    assert pq.is_trained and pq.ksub == 1 << nbits and pq.dsub == dsub
    assert pq.code_size == ref.code_size(M, nbits)

    codes = pq.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (300, pq.code_size)
    got = ref.unpack_codes(codes, M, nbits)
    ref.assert_codes_equal_up_to_ties(x, codebooks, got, ref.pq_assign(x, codebooks))
    # The packed bytes are exactly the reference packing of the chosen indices.
    np.testing.assert_array_equal(codes, ref.pack_codes(got, nbits))

    decoded = pq.decode(codes)
    assert decoded.dtype == np.float32 and decoded.shape == (300, d)
    np.testing.assert_array_equal(decoded, ref.pq_decode(got, codebooks))

    for metric in ("l2", "ip"):
        tables = pq.distance_table(x[:20], metric=metric)
        assert tables.dtype == np.float32 and tables.shape == (20, M, 1 << nbits)
        np.testing.assert_allclose(tables, ref.pq_tables(x[:20], codebooks, metric), rtol=1e-5, atol=1e-5)
    cosine = pq.distance_table(x[:20], metric="cosine")
    unit = x[:20] / np.linalg.norm(x[:20].astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(cosine, ref.pq_tables(unit, codebooks, "ip"), rtol=1e-5, atol=1e-5)


def test_decode_of_encode_is_the_nearest_reconstruction(clustered):
    base, _ = clustered
    pq = pqkit.ProductQuantizer(32, 8, nbits=8).train(base[:10_000])
    x = base[10_000:10_500]
    recon = pq.decode(pq.encode(x))
    # Re-encoding a reconstruction gives the same code (each sub-centroid is its own nearest).
    np.testing.assert_array_equal(pq.encode(recon), pq.encode(x))
    err = ((recon.astype(np.float64) - x) ** 2).sum(1).mean()
    assert err < 0.5 * ((x - x.mean(0)) ** 2).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("nbits", [4, 5, 8])
def test_train_shapes_determinism_and_quality(clustered, nbits):
    base, _ = clustered
    x = base[:10_000]  # >= 39 * 256 points per sub-quantizer
    pq = pqkit.ProductQuantizer(32, 8, nbits=nbits, seed=3).train(x)
    assert pq.codebooks.shape == (8, 1 << nbits, 4) and pq.codebooks.dtype == np.float32
    assert np.isfinite(pq.codebooks).all()
    again = pqkit.ProductQuantizer(32, 8, nbits=nbits, seed=3).train(x)
    np.testing.assert_array_equal(pq.codebooks, again.codebooks)
    # Each sub-codebook is a k-means solution: far better than random training points.
    err_trained = ref.pq_sub_distances(x[:2000], pq.codebooks).min(2).sum()
    rng = np.random.default_rng(0)
    random_books = x[rng.choice(x.shape[0], 1 << nbits, replace=False)].reshape(1 << nbits, 8, 4).transpose(1, 0, 2)
    err_random = ref.pq_sub_distances(x[:2000], random_books).min(2).sum()
    assert err_trained < 0.9 * err_random


def test_train_16_bits_small():
    """nbits=16 (65536 centroids per sub-quantizer) on a tiny dimension with niter=2."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70_000, 2)).astype(np.float32)
    pq = pqkit.ProductQuantizer(2, 1, nbits=16, niter=2)
    with pytest.warns(pqkit.TrainingWarning):  # 70k points for 65536 centroids
        pq.train(x)
    assert pq.codebooks.shape == (1, 65536, 2) and np.isfinite(pq.codebooks).all()
    assert pq.code_size == 2
    queries = rng.standard_normal((200, 2)).astype(np.float32)
    codes = pq.encode(queries)
    got = ref.unpack_codes(codes, 1, 16)
    ref.assert_codes_equal_up_to_ties(queries, pq.codebooks, got, ref.pq_assign(queries, pq.codebooks),
                                      max_mismatch_fraction=0.02)
    np.testing.assert_array_equal(pq.decode(codes), ref.pq_decode(got, pq.codebooks))


def test_train_needs_ksub_points():
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\b256\b.*\b100\b|\b100\b.*\b256\b"):
        pqkit.ProductQuantizer(8, 2, nbits=8).train(x)


def test_training_warning_for_few_points():
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    with pytest.warns(pqkit.TrainingWarning):
        pqkit.ProductQuantizer(8, 2, nbits=4).train(x)  # 300 < 39 * 16


def test_use_before_training_raises():
    pq = pqkit.ProductQuantizer(8, 2, nbits=4)
    for call in (lambda: pq.encode(np.zeros((1, 8), np.float32)),
                 lambda: pq.decode(np.zeros((1, 1), np.uint8)),
                 lambda: pq.distance_table(np.zeros((1, 8), np.float32))):
        with pytest.raises(ValueError, match="train"):
            call()


# ---------------------------------------------------------------------------------------------
# property-based: random small shapes


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    M=st.integers(1, 6),
    dsub=st.integers(1, 5),
    nbits=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_encode_decode_random_shapes(n, M, dsub, nbits, seed):
    codebooks = _random_codebooks(M, nbits, dsub, seed)
    x = np.random.default_rng(seed + 1).standard_normal((n, M * dsub)).astype(np.float32)
    pq = pqkit.ProductQuantizer(M * dsub, M, nbits).set_codebooks(codebooks)
    codes = pq.encode(x)
    got = pq.unpack_codes(codes).astype(np.int64)
    ref.assert_codes_equal_up_to_ties(x, codebooks, got, ref.pq_assign(x, codebooks), max_mismatch_fraction=1.0)
    np.testing.assert_array_equal(codes, ref.pack_codes(got, nbits))
    np.testing.assert_array_equal(pq.decode(codes), ref.pq_decode(got, codebooks))


def test_quantizer_copies_and_pickles_with_its_engine_state():
    """deepcopy and pickle drop the engine's prepared codebooks and rebuild them on demand."""
    import copy
    import pickle

    base, _ = clustered_split(3000, 1, 16, seed=4)
    pq = pqkit.ProductQuantizer(16, 4, 6, seed=3).train(base)
    codes = pq.encode(base)  # builds the prepared copy
    for clone in (copy.deepcopy(pq), pickle.loads(pickle.dumps(pq))):
        np.testing.assert_array_equal(clone.encode(base), codes)
        assert not clone.codebooks.flags.writeable
