"""Common index behaviour: ids, removal, reconstruction, reset, sizes, padding."""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from tests import reference as ref
from tests.conftest import clustered_split

D = 16
INDEX_KINDS = ["Flat", "PQ", "IVFFlat", "IVFPQ"]


def make_index(kind: str, metric: str = "l2", trained: bool = True):
    """A small index of the given kind (trained on synthetic data unless ``trained=False``)."""
    index = {
        "Flat": lambda: pqkit.IndexFlat(D, metric=metric),
        "PQ": lambda: pqkit.IndexPQ(D, 4, 4, metric=metric),
        "IVFFlat": lambda: pqkit.IndexIVFFlat(D, 8, metric=metric),
        "IVFPQ": lambda: pqkit.IndexIVFPQ(D, 8, 4, 4, metric=metric),
    }[kind]()
    if trained:
        base, _ = clustered_split(3_000, 50, D, seed=11, n_clusters=20)
        index.train(base[:1000])
    return index


def _data():
    return clustered_split(3_000, 50, D, seed=11, n_clusters=20)


def _is_exact(kind):
    return kind in ("Flat", "IVFFlat")


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_sequential_ids_and_ntotal(kind):
    base, queries = _data()
    index = make_index(kind)
    assert index.is_trained and index.ntotal == 0 and index.d == D
    index.add(base[:100])
    index.add(base[100:250])
    assert index.ntotal == 250
    if kind.startswith("IVF"):
        index.nprobe = index.nlist
    _, I = index.search(base[:20], 1)
    if _is_exact(kind):
        np.testing.assert_array_equal(I[:, 0], np.arange(20))
    assert set(np.unique(index.search(queries, 250)[1])) == set(range(250))


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_add_with_ids_reconstruct_remove_reset(kind):
    base, queries = _data()
    index = make_index(kind)
    ids = np.arange(1000, 1300, dtype=np.int32) * 3  # any int dtype
    index.add_with_ids(base[:300], ids)
    assert index.ntotal == 300
    if kind.startswith("IVF"):
        index.nprobe = index.nlist
    _, I = index.search(queries, 300)
    assert set(I.ravel()) == set(ids.astype(np.int64).tolist())

    one = index.reconstruct(int(ids[7]))
    assert one.shape == (D,) and one.dtype == np.float32
    many = index.reconstruct_n(ids[[7, 0, 299]])
    assert many.shape == (3, D)
    np.testing.assert_array_equal(many[0], one)
    if _is_exact(kind):
        np.testing.assert_array_equal(many, base[[7, 0, 299]])
    elif kind == "PQ":
        np.testing.assert_array_equal(many, index.pq.decode(index.pq.encode(base[[7, 0, 299]])))
    else:
        # IVF-PQ stores the PQ code of the residual to the nearest coarse centroid.
        x = base[[7, 0, 299]]
        _, lists = pqkit.KMeans(D, index.nlist).set_centroids(index.centroids).assign(x)
        centroids = index.centroids[lists]
        expected = index.pq.decode(index.pq.encode(x - centroids)) + centroids
        np.testing.assert_allclose(many, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="42"):
        index.reconstruct(42)

    removed = index.remove_ids(ids[:100])
    assert removed == 100 and index.ntotal == 200
    assert index.remove_ids(ids[:100]) == 0  # already gone
    assert index.remove_ids(np.array([5, 7])) == 0  # never present
    _, I = index.search(queries, 300)
    assert not np.isin(I, ids[:100]).any()
    assert set(I[I >= 0].tolist()) == set(ids[100:].astype(np.int64).tolist())
    with pytest.raises(ValueError):
        index.reconstruct(int(ids[0]))

    # Removed ids may be added again.
    index.add_with_ids(base[:10], ids[:10])
    assert index.ntotal == 210

    index.reset()
    assert index.ntotal == 0 and index.is_trained
    D_, I_ = index.search(queries, 5)
    assert np.all(I_ == -1)
    index.add(base[:10])
    assert index.ntotal == 10


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_duplicate_ids_refused(kind):
    base, _ = _data()
    index = make_index(kind)
    index.add_with_ids(base[:3], np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="3"):
        index.add_with_ids(base[3:5], np.array([3, 4]))
    with pytest.raises(ValueError, match="9"):
        index.add_with_ids(base[3:5], np.array([9, 9]))
    assert index.ntotal == 3


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_code_size_and_memory(kind):
    base, _ = _data()
    index = make_index(kind)
    expected_code_size = {"Flat": 4 * D, "PQ": 2, "IVFFlat": 4 * D, "IVFPQ": 2}[kind]
    assert index.code_size == expected_code_size
    empty = index.memory_usage_bytes()
    assert isinstance(empty, int) and empty >= 0
    index.add(base[:1000])
    full = index.memory_usage_bytes()
    # At least the codes and the int64 ids of 1000 vectors (IndexFlat: the ids add assigns,
    # 0..n-1, are implicit; ids given to add_with_ids are stored).
    ids_bytes = 0 if kind == "Flat" else 8
    assert full - empty >= 1000 * (index.code_size + ids_bytes)
    assert full - empty <= 4 * 1000 * (index.code_size + 8)  # no runaway over-count
    if kind == "Flat":
        index.add_with_ids(base[1000:1010], np.arange(5000, 5010))
        assert index.memory_usage_bytes() >= 1010 * (index.code_size + 8)
    index.reset()
    # The vectors' memory is released (or at least no longer counted).
    assert index.memory_usage_bytes() < full


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_padding_when_k_exceeds_ntotal(kind, metric):
    base, queries = _data()
    index = make_index(kind, metric)
    pad = np.inf if metric == "l2" else -np.inf

    D_, I_ = index.search(queries[:3], 4)  # empty index
    assert D_.shape == I_.shape == (3, 4) and D_.dtype == np.float32 and I_.dtype == np.int64
    assert np.all(I_ == -1) and np.all(D_ == pad)

    index.add(base[:5])
    if kind.startswith("IVF"):
        index.nprobe = index.nlist
    D_, I_ = index.search(queries[:3], 8)
    assert np.all(I_[:, 5:] == -1) and np.all(D_[:, 5:] == pad)
    assert np.all(I_[:, :5] >= 0) and np.all(np.isfinite(D_[:, :5]))
    for row in I_:
        assert sorted(row[:5].tolist()) == list(range(5))
    step = np.diff(D_[:, :5], axis=1)
    assert np.all(step >= 0) if metric == "l2" else np.all(step <= 0)


def test_ivf_padding_when_probed_lists_hold_fewer_than_k():
    base, queries = _data()
    index = make_index("IVFFlat")
    index.add(base[:40])
    index.nprobe = 1
    D_, I_ = index.search(queries, 40)
    sizes = index.list_sizes()
    assert sizes.sum() == 40 and sizes.dtype == np.int64 and sizes.shape == (8,)
    n_found = (I_ >= 0).sum(1)
    assert np.all(n_found <= sizes.max())
    for row_d, row_i, found in zip(D_, I_, n_found):
        assert np.all(row_i[found:] == -1) and np.all(row_d[found:] == np.inf)
        assert np.all(np.isfinite(row_d[:found]))


def test_nprobe_bounds():
    index = make_index("IVFPQ", trained=False)
    index.nprobe = 8
    for bad in (0, 9):
        with pytest.raises(ValueError, match=str(bad)):
            index.nprobe = bad
    with pytest.raises(TypeError):
        index.nprobe = 2.0


def test_cosine_stores_normalised_vectors():
    base, queries = _data()
    index = pqkit.IndexFlat(D, metric="cosine")
    index.add(base[:50] * 7.0)
    np.testing.assert_allclose(np.linalg.norm(index.reconstruct_n(np.arange(50)), axis=1), 1.0, rtol=1e-5)
    D_, _ = index.search(queries, 5)
    assert np.all(D_ <= 1.0 + 1e-5) and np.all(D_ >= -1.0 - 1e-5)
    with pytest.raises(ValueError, match="zero"):
        index.add(np.zeros((1, D), np.float32))


def test_set_centroids_and_codebooks_make_ivfpq_trained():
    base, queries = _data()
    source = make_index("IVFPQ")
    target = pqkit.IndexIVFPQ(D, 8, 4, 4)
    assert not target.is_trained
    target.set_centroids(source.centroids)
    assert not target.is_trained  # codebooks still missing
    target.pq.set_codebooks(source.pq.codebooks)
    assert target.is_trained
    source.add(base)
    target.add(base)
    for index in (source, target):
        index.nprobe = 3
    np.testing.assert_array_equal(source.search(queries, 10)[1], target.search(queries, 10)[1])
    with pytest.raises(ValueError, match="reset"):
        target.set_centroids(source.centroids)


def test_repr_mentions_the_class():
    for kind in INDEX_KINDS:
        assert type(make_index(kind, trained=False)).__name__ in repr(make_index(kind, trained=False))


def test_index_base_class_is_abstract():
    with pytest.raises(TypeError):
        pqkit.Index(4)


def test_results_match_reference_after_removals():
    """Row bookkeeping after remove_ids: ids and distances still belong together."""
    base, queries = _data()
    index = pqkit.IndexFlat(D)
    index.add(base[:500])
    index.remove_ids(np.arange(0, 500, 3))
    kept = np.setdiff1d(np.arange(500), np.arange(0, 500, 3))
    D_, I_ = index.search(queries, 10)
    dist = ref.pairwise(queries, base[kept], "l2")
    ref.assert_knn_equal_up_to_ties(D_, I_, dist, 10, "l2", atol=ref.distance_tolerance(queries, base), ids=kept)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_add_after_remove_never_reuses_a_stored_id(kind):
    """add() numbers after the largest id stored since the last reset (ntotal would collide)."""
    base, _ = _data()
    index = make_index(kind)
    index.add(base[:10])  # ids 0..9
    assert index.remove_ids(np.array([3])) == 1  # ntotal is 9, id 9 still stored
    index.add(base[10:12])
    assert index.ntotal == 11
    np.testing.assert_array_equal(index.reconstruct_n(np.array([10, 11])).shape, (2, D))
    with pytest.raises(ValueError):
        index.reconstruct(3)
    index.add_with_ids(base[12:13], np.array([100]))
    index.add(base[13:14])
    index.reconstruct(101)
    index.reset()
    index.add(base[:2])  # numbering restarts at 0 after reset
    if kind.startswith("IVF"):
        index.nprobe = index.nlist
    np.testing.assert_array_equal(np.sort(index.search(base[:2], 2)[1].ravel()), [0, 0, 1, 1])


@pytest.mark.parametrize("factory", ["Flat", "SQ8", "IVF8,PQ4x4,RFlat", "IVF8,PQ4x4,Refine(SQ8)"])
def test_implicit_row_ids_search_as_stored_ones(factory, tmp_path):
    """A row store keeps no ids while they are the 0..n-1 that add assigns (8 bytes per row
    saved); an index holding the same vectors under ids it stores (added in another order, then
    given the same ids) returns the same results for every kind of search, and each change
    that breaks the sequence (ids given, a removal) writes the ids out without changing any."""
    base, queries = _data()
    n, half = 1200, 600
    implicit = pqkit.index_factory(D, factory)
    implicit.train(base[:1000])
    implicit.add(base[:half])
    implicit.add_with_ids(base[half:n], np.arange(half, n))  # continues the sequence
    order = np.random.default_rng(3).permutation(n)
    stored = pqkit.index_factory(D, factory)
    stored.train(base[:1000])
    stored.add_with_ids(base[order], order)
    row_store = lambda index: getattr(index, "refine_index", index)._store  # noqa: E731
    assert row_store(implicit)._ids is None and row_store(stored)._ids is not None
    saved = 8 * n  # the 8-byte ids of every row
    assert stored.memory_usage_bytes() - implicit.memory_usage_bytes() >= saved - 8 * 16

    def same(a, b):
        if "IVF" in factory:  # two orders of the lists: the same ids, distances to rounding
            np.testing.assert_array_equal(a.search(queries, 10)[1], b.search(queries, 10)[1])
        else:
            for x, y in zip(a.search(queries, 10), b.search(queries, 10)):
                np.testing.assert_array_equal(x, y)
        radius = float(np.median(a.search(queries, 5)[0][:, -1]))
        for x, y in zip(a.range_search(queries, radius), b.range_search(queries, radius)):
            np.testing.assert_array_equal(x, y)
        allowed = np.arange(1, n, 3)
        np.testing.assert_array_equal(a.search(queries, 10, filter=allowed)[1],
                                      b.search(queries, 10, filter=allowed)[1])
        for i in (1, 5, n - 1):  # never removed below
            np.testing.assert_array_equal(a.reconstruct(i), b.reconstruct(i))
        assert a.ntotal == b.ntotal

    same(implicit, stored)
    path = tmp_path / "implicit.pqkit"
    implicit.save(path)
    loaded = pqkit.load(path)
    assert row_store(loaded)._ids is None
    same(loaded, stored)
    # Ids off the sequence: written out, the earlier rows keep theirs.
    for index in (implicit, stored):
        index.add_with_ids(base[n:n + 5], np.arange(5000, 5005))
    assert row_store(implicit)._ids is not None
    same(implicit, stored)
    # A removal: written out too (the loaded copy, implicit until now, against the stored one).
    removed = np.arange(0, n, 7)
    assert loaded.remove_ids(removed) == removed.size
    assert row_store(loaded)._ids is not None
    stored.remove_ids(removed)
    implicit.remove_ids(removed)
    same(implicit, stored)
    loaded.add_with_ids(base[n:n + 5], np.arange(5000, 5005))
    same(loaded, stored)


def test_implicit_row_ids_after_a_removal_and_a_load(tmp_path):
    """A removal writes the ids out; a load of ids 0..m-1 holds them implicit again, answers
    membership for ids beside and beyond them, and stays implicit while adds continue them."""
    base, _ = _data()
    index = pqkit.IndexFlat(D)
    index.add(base[:10])
    index.remove_ids(np.array([8, 9]))
    assert index._store._ids is not None
    index.save(tmp_path / "trimmed.pqkit")
    back = pqkit.load(tmp_path / "trimmed.pqkit")
    assert back._store._ids is None and back.ntotal == 8
    assert back._contains(np.array([0, 7, 8, 100, -1])).tolist() == [True, True, False, False, False]
    back.add_with_ids(base[8:9], np.array([8]))
    back.add(base[9:10])
    assert back._store._ids is None
    assert back.search(base[8:10], 1)[1].ravel().tolist() == [8, 9]
    with pytest.raises(ValueError, match="7"):
        back.add_with_ids(base[:1], np.array([7]))
