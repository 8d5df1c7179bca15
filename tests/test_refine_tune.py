"""IndexRefine (exact re-ranking), tune, suggest and estimate_memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pqkit
from pqkit.tune import TuneReport
from tests.conftest import clustered_split
from tests import reference as ref


@pytest.fixture(scope="module")
def data():
    return clustered_split(8000, 100, 32, seed=21, n_clusters=40)


@pytest.fixture(scope="module")
def truth(data):
    base, queries = data
    exact = pqkit.IndexFlat(32)
    exact.add(base)
    return exact.search(queries, 10)


def _recall(I, truth_I):
    return np.mean([np.intersect1d(a, b).size / truth_I.shape[1] for a, b in zip(I, truth_I)])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_refine_distances_exact_and_recall_higher(data, metric):
    base, queries = data
    approx = pqkit.IndexPQ(32, 8, 4, metric)
    approx.train(base)
    approx.add(base)
    refine = pqkit.IndexRefine(pqkit.IndexPQ(32, 8, 4, metric), k_factor=4)
    refine.train(base)
    refine.add(base)
    D, I = refine.search(queries, 10)
    # distances are the exact ones of the returned ids, best first
    exact = ref.pairwise(queries, base, metric)
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=1e-4, atol=1e-3)
    assert (np.diff(D, axis=1) >= 0).all() if metric == "l2" else (np.diff(D, axis=1) <= 0).all()
    exact_index = pqkit.IndexFlat(32, metric)
    exact_index.add(base)
    _, I_true = exact_index.search(queries, 10)
    r_approx = _recall(approx.search(queries, 10)[1], I_true)
    r_refine = _recall(I, I_true)
    assert r_refine > r_approx + 0.1, (r_refine, r_approx)
    # the candidates are the base index's top k * k_factor, re-ranked
    _, candidates = approx.search(queries, 40)
    for row in range(5):
        assert set(I[row]) <= set(candidates[row])


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivfpq_candidates_ranked_by_table_estimates(data, nbits, metric):
    """IndexRefine takes an IVF-PQ index's candidates from the quantized table's integer estimates
    (compiled engine): each estimate bounds the code's exact ADC key from the good side, the
    candidate lists nearly equal the exact-ADC ones, and the re-ranked results nearly equal a
    re-ranking of the exact-ADC candidates."""
    base, queries = data
    refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, nbits, metric=metric, nprobe=4, seed=5), k_factor=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)  # 8000 points for 256 sub-centroids
        refine.train(base)
    refine.add(base)
    ivf = refine.base_index
    D_est, I_est = ivf._search(queries, 40, estimates=True)
    _, I_exact = ivf.search(queries, 40)
    np.testing.assert_array_equal(ivf._candidates(queries, 40), I_est)
    overlap = np.mean([np.intersect1d(a, b).size / 40 for a, b in zip(I_est, I_exact)])
    assert overlap > 0.85, overlap
    assert not np.array_equal(I_est, I_exact)  # a different ranking, not the exact search again
    # Exact ADC keys of every code (all lists probed, k = ntotal).
    ivf.nprobe = 16
    D_all, I_all = ivf.search(queries, ivf.ntotal)
    ivf.nprobe = 4
    for row in range(len(queries)):
        exact_of = dict(zip(I_all[row].tolist(), D_all[row].tolist()))
        exact = np.array([exact_of[i] for i in I_est[row]], dtype=np.float64)
        slack = 1e-4 * (1.0 + np.abs(exact))
        if metric == "l2":  # a lower bound of the distance
            assert (D_est[row] <= exact + slack).all(), row
        else:               # an upper bound of the similarity
            assert (D_est[row] >= exact - slack).all(), row
        # and a close one (the table's rounding is at most one unit per sub-quantizer)
        assert np.abs(D_est[row] - exact).max() < 0.2 * (np.abs(exact).max() + 1.0), row
    D, I = refine.search(queries, 10)
    _, I_from_exact = refine.rerank(refine._prepare(queries), I_exact, 10)
    assert (I == I_from_exact).mean() > 0.95
    exact_d = ref.pairwise(queries, base, metric)
    np.testing.assert_allclose(D, np.take_along_axis(exact_d, I, axis=1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivfpq_estimate_top_k_is_a_prefix_of_the_full_estimate_ranking(data, nbits, metric, simd_level):
    """The estimate search keeps the top k by (estimate key, id) whatever the list sizes: with
    every list probed, its results equal the first k of all codes ranked by their estimate keys
    (k = ntotal pushes every code). The k chosen let a step start with room in the heap while it
    holds more codes than k, also after a shorter list, and take each way a step's first k are
    found (the small-k bound for k <= 16, the candidates sorted by the kernel sort_order for
    k = 40 and 100, the exact selection past its 256 values for k = 300), at every SIMD level;
    "ip" keys (no per-code bias) tie often, also at the k-th key."""
    base, queries = data
    ivf = pqkit.IndexIVFPQ(32, 64, 8, nbits, metric=metric, nprobe=64, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        ivf.train(base)
    # ids in no order along a list: a tie at the k-th key must go to the smaller id, not to
    # the code stored first
    ivf.add_with_ids(base, np.random.default_rng(7).permutation(len(base)).astype(np.int64) * 2 + 1)
    sizes = np.asarray(ivf._invlists.export()[0])
    assert sizes.min() < 100 < sizes.max()  # lists shorter and longer than the k below
    D_all, I_all = ivf._search(queries, ivf.ntotal, estimates=True)
    # ties broken by id: the full ranking is sorted by (key, id)
    for row in range(len(queries)):
        order = np.lexsort((I_all[row], -D_all[row] if metric == "ip" else D_all[row]))
        np.testing.assert_array_equal(order, np.arange(ivf.ntotal))
    for k in (1, 10, 40, 100, 300):
        D, I = ivf._search(queries, k, estimates=True)
        np.testing.assert_array_equal(I, I_all[:, :k], err_msg=f"k={k}")
        np.testing.assert_array_equal(D, D_all[:, :k], err_msg=f"k={k}")
    if metric == "ip":
        assert (np.diff(D_all[:, :100], axis=1) == 0).mean() > 0.05  # ties do occur


@pytest.mark.skipif("numba" not in pqkit.available_backends(), reason="needs numba")
def test_numba_engine_candidates_are_its_search(data):
    """The Numba engine has no quantized table: its candidates are its exact-ADC search."""
    base, queries = data
    ivf = pqkit.IndexIVFPQ(32, 16, 8, 4, nprobe=4, seed=5, backend="numba")
    ivf.train(base)
    ivf.add(base)
    np.testing.assert_array_equal(ivf._candidates(queries, 20), ivf.search(queries, 20)[1])


def test_refine_custom_ids_give_the_same_ranking(data):
    """Ids equal to row numbers take a direct lookup; any other ids a sorted one: same results.
    (The ids keep the rows' order, so ties between equal codes break the same way.)"""
    base, queries = data
    results = []
    for ids in (np.arange(base.shape[0]), np.arange(base.shape[0]) * 2 + 11):
        index = pqkit.IndexRefine(pqkit.IndexPQ(32, 8, 4), k_factor=3)
        index.train(base)
        index.add_with_ids(base, ids)
        D, I = index.search(queries, 10)
        results.append((D, np.where(I >= 0, (I - ids[0]) // (ids[1] - ids[0]), -1)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # a removal breaks the ids-are-rows shortcut; the lookup must follow
    index = pqkit.IndexRefine(pqkit.IndexPQ(32, 8, 4), k_factor=3)
    index.train(base)
    index.add(base)
    index.remove_ids(np.arange(0, base.shape[0], 2))
    D, I = index.search(queries, 10)
    np.testing.assert_allclose(D, ((queries[:, None, :] - base[I]) ** 2).sum(-1), rtol=1e-4, atol=1e-3)
    assert (I % 2 == 1).all()


def _two_stages(index, x, k, given):
    """IndexRefine's search made as two engine calls: the base index's candidates, then the
    re-ranking (the path a refine store whose ids are not its rows takes)."""
    xq = index._prepare(x)
    params = index._search_params(xq.shape[0], given)
    k_factor = index.k_factor if params.k_factor is None else params.k_factor
    n_candidates = max(k, min(int(np.ceil(k * k_factor)), index.ntotal))
    base_params = params.without("k_factor") if params.k_factor is not None else params
    candidates = index.base_index._candidates(xq, n_candidates, base_params)
    return index.rerank(xq, index._allowed(candidates, params), k)


@pytest.mark.parametrize("refine_kind", ["RFlat", "Refine(SQ8)", "Refine(PQ32)"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_ivfpq_refine_in_one_engine_call_equals_the_two_stages(data, refine_kind, metric, monkeypatch):
    """An IVF-PQ base over a refine store whose ids are its rows runs both stages in one
    compiled call: the same results, bit for bit, as the two calls made apart, for one query
    and a batch, any thread count, and every per-call parameter (filter and max_probe
    included)."""
    base, queries = data
    index = pqkit.index_factory(32, f"IVF16,PQ8x4,{refine_kind}", metric=metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    index.add(base)
    index.nprobe, index.k_factor = 3, 3
    fused = []
    real = pqkit.IndexIVFPQ._search_reranked

    def counted(self, *args):
        out = real(self, *args)
        fused.append(out is not None)
        return out

    monkeypatch.setattr(pqkit.IndexIVFPQ, "_search_reranked", counted)
    allowed = np.arange(0, base.shape[0], 3)
    for given in ({}, {"k_factor": 6, "nprobe": 5}, {"filter": allowed},
                  {"filter": allowed[:40], "max_probe": 16}):
        for n_threads in (1, 2):
            index.n_threads = n_threads
            for x in (queries[:1], queries):
                D, I = index.search(x, 10, **given)
                D2, I2 = _two_stages(index, x, 10, given)
                np.testing.assert_array_equal(I, I2)
                np.testing.assert_array_equal(D.view(np.int32), D2.view(np.int32))
                if "filter" in given:
                    assert np.isin(I[I >= 0], given["filter"]).all()
    assert fused and all(fused)  # every search took the one call
    assert I.shape == (queries.shape[0], 10)


def test_refine_store_with_other_ids_runs_the_two_stages(data):
    """Ids that are not row numbers (add_with_ids, or a removal) leave the refine store without
    a row view for the one-call search: the two stages run, with the same ranking."""
    base, queries = data
    results = []
    for ids in (np.arange(base.shape[0]), np.arange(base.shape[0]) * 2 + 11):
        index = pqkit.index_factory(32, "IVF16,PQ8x4,RFlat")
        index.train(base)
        index.add_with_ids(base, ids)
        index.nprobe = 4
        assert (index.refine_index._rerank_store() is None) == (ids[0] != 0)
        D, I = index.search(queries, 10)
        results.append((D, np.where(I >= 0, (I - ids[0]) // (ids[1] - ids[0]), -1)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    index.remove_ids(ids[:5])
    assert index.refine_index._rerank_store() is None


def _decoded_reference(queries, candidates, decoded, metric, k):
    """Best k of each query's candidates by the exact distance to its decoded vector, ties by id."""
    x = queries / np.linalg.norm(queries, axis=1, keepdims=True) if metric == "cosine" else queries
    vectors = decoded[np.maximum(candidates, 0)]
    key = ((x[:, None, :] - vectors) ** 2).sum(-1) if metric == "l2" else -(x[:, None, :] * vectors).sum(-1)
    key = np.where(candidates >= 0, key, np.inf)
    order = np.array([np.lexsort((c, row))[:k] for c, row in zip(candidates, key)])
    return np.take_along_axis(key, order, 1), np.take_along_axis(candidates, order, 1)


@pytest.mark.parametrize("backend", pqkit.available_backends())
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_refine_with_pq_codes_ranks_by_the_decoded_vectors(data, metric, backend):
    """A PQ refine index: the k best candidates by exact distance to their decoded codes."""
    base, queries = data
    ids = np.arange(base.shape[0], dtype=np.int64) * 3 + 7  # ids that are not row numbers
    index = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, 4, metric=metric, nprobe=4, backend=backend), 4,
                              pqkit.IndexPQ(32, 16, 8, metric=metric, backend=backend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)  # 8000 points for 256 centroids
        index.train(base)
    assert index.refine_index.is_trained
    index.add_with_ids(base, ids)
    index.remove_ids(ids[::5])  # the id lookup must follow removals
    D, I = index.search(queries, 10)
    candidates = index.base_index._candidates(queries, 40)
    decoded = np.zeros((ids.max() + 1, 32), dtype=np.float32)
    kept = ids[np.isin(ids, ids[::5], invert=True)]
    decoded[kept] = index.refine_index.reconstruct_n(kept)
    key, want_I = _decoded_reference(queries, candidates, decoded, metric, 10)
    np.testing.assert_array_equal(I, want_I)
    np.testing.assert_allclose(D, key if metric == "l2" else -key, rtol=1e-5, atol=1e-5)
    assert not np.isin(I, ids[::5]).any()
    np.testing.assert_array_equal(index.reconstruct_n(kept[:5]), decoded[kept[:5]])


def test_refine_with_pq_codes_recall_memory_and_save(data, truth, tmp_path):
    base, queries = data
    _, true_I = truth
    results = {}
    for name, refine in (("flat", None), ("pq", pqkit.IndexPQ(32, 16, 6))):
        index = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, 4, nprobe=8), 8, refine)
        index.train(base)
        index.add(base)
        results[name] = (index, _recall(index.search(queries, 10)[1], true_I))
    pq_index, pq_recall = results["pq"]
    plain = pqkit.IndexIVFPQ(32, 16, 8, 4, nprobe=8)
    plain.train(base)
    plain.add(base)
    # finer codes re-rank better than the base alone, and keep 12 bytes per vector instead of 128
    assert pq_recall > _recall(plain.search(queries, 10)[1], true_I) + 0.1, pq_recall
    assert pq_index.code_size == 4 + 12
    assert pq_index.memory_usage_bytes() < results["flat"][0].memory_usage_bytes() / 3
    assert "refine_index=IndexPQ" in repr(pq_index)
    # the refine index keeps its codes as rows; its own search scans a blocked copy (counted)
    refine = pq_index.refine_index
    twin = pqkit.IndexPQ(32, 16, 6)
    twin.pq.set_codebooks(refine.pq.codebooks)
    twin.add(base)
    before = refine.memory_usage_bytes()
    for got, want in zip(refine.search(queries, 10), twin.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    assert refine.memory_usage_bytes() > before
    np.testing.assert_array_equal(refine.reconstruct_n(np.arange(50)), twin.reconstruct_n(np.arange(50)))
    path = tmp_path / "refine_pq.pqk"
    pq_index.save(path)
    loaded = pqkit.load(path)
    assert isinstance(loaded.refine_index, pqkit.IndexPQ)
    for got, want in zip(loaded.search(queries, 10), pq_index.search(queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_refine_index_argument_is_checked(data):
    base, _ = data
    base_index = pqkit.IndexIVFPQ(32, 16, 8, 4)
    with pytest.raises(TypeError, match="refine_index must be a pqkit.IndexFlat, pqkit.IndexScalarQuantizer or pqkit.IndexPQ"):
        pqkit.IndexRefine(base_index, 4, pqkit.IndexIVFFlat(32, 8))
    with pytest.raises(TypeError, match="refine_index must be"):
        pqkit.IndexRefine(base_index, 4, "PQ16")
    with pytest.raises(ValueError, match=r"expected d=32, metric='l2', got d=16, metric='l2'"):
        pqkit.IndexRefine(base_index, 4, pqkit.IndexPQ(16, 8))
    with pytest.raises(ValueError, match=r"got d=32, metric='ip'"):
        pqkit.IndexRefine(base_index, 4, pqkit.IndexPQ(32, 8, metric="ip"))
    filled = pqkit.IndexPQ(32, 8, 4)
    filled.train(base)
    filled.add(base[:3])
    with pytest.raises(ValueError, match="refine_index already holds 3 vectors"):
        pqkit.IndexRefine(base_index, 4, filled)
    # an untrained refine index leaves the wrapper untrained until train()
    index = pqkit.IndexRefine(pqkit.IndexFlat(32), 2, pqkit.IndexPQ(32, 8, 4))
    assert not index.is_trained
    with pytest.raises(ValueError, match="not trained"):
        index.add(base)
    index.train(base)
    index.add(base)
    assert index.ntotal == base.shape[0] == index.refine_index.ntotal


@pytest.mark.parametrize("backend", pqkit.available_backends())
@pytest.mark.parametrize("refine_kind", ["Flat", "PQ"])
@pytest.mark.parametrize("row_ids", [True, False])
@pytest.mark.parametrize("base_kind", ["Flat", "IVFPQ"])
def test_a_candidate_missing_from_the_refine_index_is_named(data, backend, refine_kind, row_ids, base_kind):
    """Vectors added to the base index alone (behind the wrapper's back) come back as
    candidates the refine index lacks: a ValueError naming the id, whether the refine store's ids
    are its row numbers (the engine's row check catches it, in the one-call search of an IVF-PQ
    base too) or not (the id lookup does)."""
    base, queries = data
    refine_index = pqkit.IndexFlat(32, backend=backend) if refine_kind == "Flat" else \
        pqkit.IndexPQ(32, 8, 8, backend=backend)
    first = pqkit.IndexFlat(32, backend=backend) if base_kind == "Flat" else \
        pqkit.IndexIVFPQ(32, 4, 8, 4, nprobe=4, backend=backend)
    index = pqkit.IndexRefine(first, 2, refine_index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    ids = np.arange(1000) if row_ids else np.arange(1000) * 3 + 5
    index.add_with_ids(base[:1000], ids)
    extra = int(ids[-1]) + 7
    index.base_index.add_with_ids(queries[:1], np.array([extra]))
    D, I = index.search(queries[1:3], 5)  # far from the stray vector: every candidate is stored
    assert np.isin(I, ids).all()
    with pytest.raises(ValueError, match=f"candidate id {extra} from the base index is not in the refine index"):
        index.search(queries[:1], 5)


def test_wrapper_thread_setting_reaches_the_wrapped_indexes():
    refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 8, 8, 8))
    refine.n_threads = 1
    assert (refine.base_index.n_threads, refine.refine_index.n_threads) == (1, 1)
    assert refine.base_index.pq.n_threads == 1
    pre = pqkit.IndexPreTransform(pqkit.PCA(32, 16), pqkit.IndexPQ(16, 4, 8))
    pre.n_threads = 2
    assert pre.index.n_threads == 2 and pre.index.pq.n_threads == 2
    refine.n_threads = None
    assert refine.base_index.n_threads is None
    with pytest.raises(ValueError):
        refine.n_threads = 0


def test_refine_padding_remove_reset_errors(data):
    base, queries = data
    index = pqkit.IndexRefine(pqkit.IndexIVFFlat(32, 8), k_factor=2)
    index.train(base)
    index.add(base[:5])
    D, I = index.search(queries[:2], 10)
    assert (I[:, 5:] == -1).all() and np.isinf(D[:, 5:]).all()
    assert index.remove_ids(np.array([0, 1])) == 2 and index.ntotal == 3
    assert index.refine_index.ntotal == 3
    assert 0 not in index.search(base[:1], 3)[1]
    index.reset()
    assert index.ntotal == 0 and index.refine_index.ntotal == 0
    with pytest.raises(ValueError, match=r"k_factor must be a finite number in \[1, 1024\]"):
        index.k_factor = 0.5
    filled = pqkit.IndexFlat(32)
    filled.add(base[:3])
    with pytest.raises(ValueError, match="already holds 3 vectors"):
        pqkit.IndexRefine(filled)


def test_tune_picks_minimal_nprobe_and_k_factor(data, truth):
    base, queries = data
    index = pqkit.index_factory(32, "IVF64,PQ8x4,RFlat")
    index.train(base)
    index.add(base)
    report = pqkit.tune(index, queries, target_recall=0.9, k=10)
    assert isinstance(report, TuneReport) and report.reached
    assert report.recall >= 0.9
    assert index.nprobe == report.nprobe and index.k_factor == report.k_factor
    # the recall is what a search at that setting gives
    assert _recall(index.search(queries, 10)[1], truth[1]) == pytest.approx(report.recall)
    # minimal: one step less nprobe at the chosen k_factor misses the target
    if report.nprobe > 1:
        lower = [t for t in report.trials
                 if t["k_factor"] == report.k_factor and t["nprobe"] < report.nprobe]
        assert lower and max(t["recall"] for t in lower) < 0.9
    assert "reaches" in str(report)


def test_tune_needs_vectors_for_pq_and_reports_unreachable(data):
    base, queries = data
    index = pqkit.IndexIVFPQ(32, 32, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    index.add(base)
    with pytest.raises(ValueError, match="pass xb="):
        pqkit.tune(index, queries)
    report = pqkit.tune(index, queries, target_recall=1.0, xb=base, apply=False)
    assert not report.reached and index.nprobe == 1
    assert report.recall == max(t["recall"] for t in report.trials)
    assert [t["nprobe"] for t in report.trials] == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="target_recall"):
        pqkit.tune(index, queries, target_recall=1.5, xb=base)


@pytest.mark.parametrize("description,exact", [
    ("Flat", True), ("PQ8", True), ("PQ8x4", True), ("PCA16,PQ8x4", True), ("PQ8,RFlat", True),
    ("PQ8x4,Refine(PQ16)", True), ("IVF16,Flat", False), ("IVF16,PQ8", False),
    ("OPQ8,IVF16,PQ8x4,RFlat", False), ("IVF16,PQ8x4,Refine(PQ16x6)", False)])
def test_estimate_memory_matches_measured(data, description, exact):
    base, _ = data
    n = 5000
    estimate = pqkit.estimate_memory(description, n, 32)
    index = pqkit.index_factory(32, description)
    for part in (index, getattr(index, "base_index", None)):
        if isinstance(part, pqkit.IndexPreTransform) and isinstance(part.transform, pqkit.OPQ):
            part.transform.niter = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    index.add(base[:n])
    measured = index.memory_usage_bytes()
    if exact:
        assert estimate == measured
    else:  # equal-size lists assumed; the lists' balance moves the measured value
        assert 0.95 * measured <= estimate <= 1.05 * measured, (estimate, measured)


def test_suggest_respects_budget_and_target():
    big = pqkit.suggest(1_000_000, 128)
    assert big.factory == "Flat" and big.memory_bytes == pqkit.estimate_memory("Flat", 1_000_000, 128)
    tight = pqkit.suggest(1_000_000, 128, memory_budget=100_000_000)
    assert tight.memory_bytes <= 100_000_000 and "IVF" in tight.factory and "PQ" in tight.factory
    assert tight.nprobe is not None
    fast = pqkit.suggest(1_000_000, 128, memory_budget=2_000_000_000, target="speed")
    assert "IVF" in fast.factory and fast.factory != "Flat"
    # the exact vectors do not fit, their 8-bit scalar codes do: re-ranked with those
    sq = pqkit.suggest(1_000_000, 128, memory_budget=300_000_000)
    assert sq.factory.endswith(",Refine(SQ8)") and sq.memory_bytes <= 300_000_000
    assert pqkit.estimate_memory(sq.factory.replace("Refine(SQ8)", "RFlat"), 1_000_000, 128) > 300_000_000
    # a dimension with no small divisor goes through OPQ
    odd = pqkit.suggest(200_000, 97, memory_budget=20_000_000)
    assert odd.factory.startswith("OPQ") and odd.memory_bytes <= 20_000_000
    index = pqkit.index_factory(97, odd.factory)
    assert index.d == 97
    with pytest.raises(ValueError, match="no index fits"):
        pqkit.suggest(1_000_000, 128, memory_budget=1000)
    with pytest.raises(ValueError, match="target"):
        pqkit.suggest(1000, 8, target="memory")
