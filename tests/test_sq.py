"""8-bit scalar quantization: ScalarQuantizer, IndexScalarQuantizer and the Refine(SQ8) store."""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from pqkit._validation import normalize_rows
from pqkit.indexes import sq as sq_module
from tests.conftest import clustered_split, fashion_split

D = 24


@pytest.fixture(scope="module")
def data():
    return clustered_split(6000, 40, D, seed=5, n_clusters=30)


# ------------------------------------------------------------------------------- the quantizer
def test_levels_span_the_training_range_and_codes_are_the_nearest_level(data):
    base, _ = data
    sq = pqkit.ScalarQuantizer(D).train(base)
    np.testing.assert_array_equal(sq.vmin, base.min(axis=0))
    np.testing.assert_array_equal(sq.step, (base.max(axis=0) - base.min(axis=0)) / np.float32(255))
    codes = sq.encode(base)
    assert codes.dtype == np.uint8 and codes.shape == base.shape
    assert codes.min() == 0 and codes.max() == 255  # the training extremes take the end levels
    decoded = sq.decode(codes)
    np.testing.assert_array_equal(decoded, sq.vmin + codes.astype(np.float32) * sq.step)
    # each value's level is the nearest one: its error is at most half a step (plus rounding)
    assert (np.abs(decoded - base) <= sq.step * 0.5 + 1e-5 * np.abs(base).max()).all()
    # no other level is nearer
    for shift in (-1, 1):
        other = np.clip(codes.astype(np.int64) + shift, 0, 255)
        moved = sq.vmin + other.astype(np.float32) * sq.step
        assert (np.abs(moved - base) >= np.abs(decoded - base) - 1e-6).all()


def test_eight_bit_pixels_are_coded_without_loss():
    pixels = fashion_split(3000, 10)[0]
    sq = pqkit.ScalarQuantizer(pixels.shape[1]).train(pixels)
    full_range = (sq.vmin == 0) & (pixels.max(axis=0) == 255)
    assert full_range.sum() > pixels.shape[1] // 2
    decoded = sq.decode(sq.encode(pixels))
    np.testing.assert_array_equal(decoded[:, full_range], pixels[:, full_range])


def test_values_outside_the_range_take_the_end_levels_and_constant_dimensions_code_zero():
    x = np.zeros((10, 3), np.float32)
    x[:, 0] = np.arange(10)
    x[:, 2] = 7.0  # constant: step 0
    sq = pqkit.ScalarQuantizer(3).train(x)
    assert sq.step[2] == 0 and sq.step[1] == 0
    out = sq.encode(np.array([[-5.0, 1.0, 9.0], [100.0, -1.0, 7.0]], np.float32))
    np.testing.assert_array_equal(out, [[0, 0, 0], [255, 0, 0]])
    np.testing.assert_array_equal(sq.decode(out)[:, 2], [7.0, 7.0])


def test_quantizer_refusals():
    sq = pqkit.ScalarQuantizer(4)
    with pytest.raises(ValueError, match="not trained"):
        sq.encode(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="at least 1 training vector"):
        sq.train(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="step must be >= 0.*dimension 2"):
        sq.set_ranges(np.zeros(4), np.array([1, 1, -1, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        sq.set_ranges(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        sq.set_ranges(np.zeros(4), np.array([1, np.nan, 1, 1.0]))
    with pytest.raises(ValueError, match="highest level"):
        sq.set_ranges(np.zeros(4), np.full(4, 1e16))  # 255 steps past the bound
    sq.set_ranges(np.zeros(4), np.ones(4))
    with pytest.raises(TypeError, match="uint8"):
        sq.decode(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        sq.decode(np.zeros((2, 5), np.uint8))


def test_levels_are_fixed_while_the_index_holds_vectors(data):
    base, _ = data
    index = pqkit.IndexScalarQuantizer(D)
    index.train(base)
    index.add(base[:10])
    with pytest.raises(ValueError, match="holds 10 vectors coded with the current levels"):
        index.sq.set_ranges(np.zeros(D), np.ones(D))
    with pytest.raises(ValueError, match="holds 10 vectors coded with the current levels"):
        index.sq.train(base * 2)  # through the quantizer itself: refused alike
    with pytest.raises(ValueError, match="reset"):
        index.train(base)
    index.reset()
    index.sq.set_ranges(np.zeros(D), np.ones(D))
    index.add(base[:3])
    np.testing.assert_array_equal(index.reconstruct_n(np.arange(3)),
                                  np.clip(np.rint(base[:3]), 0, 255))


# ------------------------------------------------------------------------------- the index
def _flat_twin(index: pqkit.IndexScalarQuantizer, metric: str) -> pqkit.IndexFlat:
    """An IndexFlat holding the reconstructions under the same ids ("cosine": as inner
    products of the stored, already normalised levels)."""
    ids = index._store.ids
    flat = pqkit.IndexFlat(index.d, "ip" if metric == "cosine" else metric)
    flat.add_with_ids(index.reconstruct_n(ids), ids)
    return flat


@pytest.mark.parametrize("block_rows", [None, 1000, 7])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_search_equals_flat_search_over_the_reconstructions(data, metric, block_rows, monkeypatch):
    """Block by block or in one block, filtered or not, k-NN and range: the exact search of the
    decoded vectors, bit for bit (ids and distances)."""
    if block_rows is not None:
        monkeypatch.setattr(sq_module, "BLOCK_FLOATS", block_rows * D)
    base, queries = data
    index = pqkit.IndexScalarQuantizer(D, metric)
    index.train(base)
    index.add_with_ids(base, np.arange(base.shape[0], dtype=np.int64)[::-1] * 3 + 11)
    flat = _flat_twin(index, metric)
    q = normalize_rows(queries.copy()) if metric == "cosine" else queries
    ids = index._store.ids
    rng = np.random.default_rng(3)
    filters = [None, pqkit.IDSelectorBatch(ids[::4]), pqkit.IDSelectorNot(pqkit.IDSelectorBatch(ids[:500])),
               pqkit.IDSelectorPerQuery([rng.choice(ids, 30, replace=False) for _ in range(q.shape[0])])]
    for f in filters:
        for k in (1, 10, 50):
            got = index.search(queries, k, filter=f)
            want = flat.search(q, k, filter=f)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
    D10, _ = flat.search(q, 10)
    radius = float(np.median(D10[:, -1]))
    for f in filters[:2]:
        got = index.range_search(queries, radius, filter=f)
        want = flat.range_search(q, radius, filter=f)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="max_results = 5"):
        index.range_search(queries, radius, max_results=5)


def test_empty_and_untrained_index(data):
    base, queries = data
    index = pqkit.IndexScalarQuantizer(D, "ip")
    with pytest.raises(ValueError, match="train"):
        index.search(queries, 3)
    index.train(base)
    D_, I_ = index.search(queries, 3)
    assert (I_ == -1).all() and np.isneginf(D_).all()
    lims, Dr, Ir = index.range_search(queries, 0.5)
    assert lims.shape == (queries.shape[0] + 1,) and Ir.size == 0


def test_memory_and_estimate(data):
    base, _ = data
    index = pqkit.index_factory(D, "SQ8")
    assert isinstance(index, pqkit.IndexScalarQuantizer) and index.code_size == D
    n = base.shape[0]
    estimate = pqkit.estimate_memory("SQ8", n, D)
    index.train(base)
    index.add(base)
    # The ids add assigns (0..n-1) are implicit: a byte per dimension, and the range table.
    assert index.memory_usage_bytes() == estimate == n * D + 8 * D
    removed = index.remove_ids(np.arange(0, 100))
    assert removed == 100 and index.ntotal == n - 100
    # The removal broke the sequence: the ids are stored from then on, 8 bytes per row.
    assert index.memory_usage_bytes() == n * (D + 8) + 8 * D


# ------------------------------------------------------------------------------- Refine(SQ8)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_refine_sq_reranks_with_the_decoded_vectors(data, metric):
    """The second stage's distances are those to the decoded codes, and the results are the ones
    an exact re-ranking of the same candidates over the reconstructions gives, bit for bit."""
    base, queries = data
    index = pqkit.index_factory(D, "IVF16,PQ6x4,Refine(SQ8)", metric)
    assert isinstance(index.refine_index, pqkit.IndexScalarQuantizer)
    index.train(base)
    index.add(base)
    index.nprobe, index.k_factor = 4, 5
    D_, I_ = index.search(queries, 10)
    xq = index._prepare(queries)
    candidates = index.base_index._candidates(xq, 50)  # the base index has nprobe 4
    rows = np.where(candidates >= 0, candidates, -1)
    decoded = index.refine_index.reconstruct_n(np.arange(base.shape[0]))
    want = pqkit.engine.core("cpp").rerank(xq, decoded, rows, candidates, 10,
                                           "l2" if metric == "l2" else "ip", 1)
    np.testing.assert_array_equal(I_, want[1])
    np.testing.assert_array_equal(D_, want[0])
    # finer than the base's own distances: recall against the exact neighbours rises
    exact = pqkit.IndexFlat(D, metric)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    _, approx = index.base_index.search(queries, 10)
    def recall(found):
        return np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(found, truth)])
    exact_rerank = pqkit.engine.core("cpp").rerank(xq, np.ascontiguousarray(
        normalize_rows(base.copy()) if metric == "cosine" else base), rows, candidates, 10,
        "l2" if metric == "l2" else "ip", 1)[1]
    assert recall(I_) > recall(approx) + 0.2
    assert recall(I_) >= recall(exact_rerank) - 0.02, (recall(I_), recall(exact_rerank))


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_rerank_sq_engine_call(data, metric, backend):
    """rerank_sq equals rerank over vmin + codes * step on every engine and thread count, and
    refuses rows outside the store, wrong dtypes and shapes."""
    base, queries = data
    sq = pqkit.ScalarQuantizer(D).train(base)
    codes = sq.encode(base)
    rng = np.random.default_rng(9)
    rows = rng.integers(-1, base.shape[0], size=(queries.shape[0], 60))
    ids = np.where(rows >= 0, rows * 2 + 1, -1)
    engine = pqkit.engine.core(backend)
    want = pqkit.engine.core("cpp").rerank(queries, sq.decode(codes), rows, ids, 10, metric, 1)
    for threads in (1, 2, 3):
        got = engine.rerank_sq(queries, codes, sq.vmin, sq.step, rows, ids, 10, metric, threads)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        one = engine.rerank_sq(queries[:1], codes, sq.vmin, sq.step, rows[:1], ids[:1], 10, metric,
                               threads)  # a single query: candidates split over the threads
        for a, b in zip(one, want):
            np.testing.assert_array_equal(a, b[:1])
    bad = rows.copy()
    bad[2, 3] = base.shape[0]
    with pytest.raises(ValueError, match="outside -1"):
        engine.rerank_sq(queries, codes, sq.vmin, sq.step, bad, ids, 10, metric, 1)
    with pytest.raises((TypeError, ValueError)):
        engine.rerank_sq(queries, codes.astype(np.int32), sq.vmin, sq.step, rows, ids, 10, metric, 1)
    with pytest.raises(ValueError):
        engine.rerank_sq(queries, codes, sq.vmin[:-1], sq.step, rows, ids, 10, metric, 1)


def test_refine_sq_is_not_converted_to_faiss(data):
    pytest.importorskip("faiss")
    base, _ = data
    index = pqkit.index_factory(D, "IVF8,PQ6x4,Refine(SQ8)")
    index.train(base)
    index.add(base[:100])
    with pytest.raises(ValueError, match="IndexScalarQuantizer refine"):
        pqkit.to_faiss(index)
    with pytest.raises(ValueError, match="cannot convert"):
        pqkit.to_faiss(index.refine_index)


def test_refine_sq_reaches_flat_recall_on_fashion_pixels_at_a_quarter_of_the_refine_bytes():
    base, queries = fashion_split(8000, 100)
    exact = pqkit.IndexFlat(base.shape[1])
    exact.add(base)
    _, truth = exact.search(queries, 10)
    found = {}
    for refine in ("RFlat", "Refine(SQ8)"):
        index = pqkit.index_factory(base.shape[1], f"IVF32,PQ49x4,{refine}")
        index.train(base)
        index.add(base)
        index.nprobe, index.k_factor = 8, 8
        found[refine] = index.search(queries, 10)[1]
        if refine != "RFlat":
            assert index.refine_index.memory_usage_bytes() * 3.5 < exact.memory_usage_bytes()
    agree = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(found["Refine(SQ8)"], found["RFlat"])])
    assert agree >= 0.99, agree
