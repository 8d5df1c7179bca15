"""Parity with faiss for filtered search and range search, on injected indexes.

A faiss index is trained and filled, then converted with ``pqkit.from_faiss`` (the same
centroids, codebooks, codes and lists), and both search with the same selector: faiss's
``IDSelectorBatch`` / ``IDSelectorBitmap`` through ``SearchParameters(sel=...)`` (IVF:
``SearchParametersIVF(sel=..., nprobe=...)``), pqkit's ``IDSelectorBatch`` /
``IDSelectorBitmap``. Ids must be identical up to float near-ties (two implementations sum
distances in different orders); range results may differ only at the radius, within the same
tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from tests import reference as ref
from tests.conftest import clustered_split
from tests.parity import helpers as h

K, NLIST, NPROBE = 10, 32, 4
KINDS = ("Flat", "IVF32,Flat", "IVF32,PQ8", "IVF32,PQ16x4")


@pytest.fixture(scope="module")
def data():
    base, queries = clustered_split(8_000, 60, 32, seed=41, n_clusters=40)
    return base, queries


def _faiss_index(faiss, kind, metric, base):
    d, fm = base.shape[1], h.faiss_metric(faiss, metric)
    if kind == "Flat":
        index = faiss.IndexFlat(d, fm)
    elif kind == "PQ8":
        index = faiss.IndexPQ(d, 8, 8, fm)
    elif kind == "IVF32,Flat":
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, fm), d, NLIST, fm)
    else:
        M, nbits = (8, 8) if kind == "IVF32,PQ8" else (16, 4)
        index = faiss.IndexIVFPQ(faiss.IndexFlat(d, fm), d, NLIST, M, nbits, fm)
    index.train(base)
    index.add(base)
    return index


@pytest.fixture(scope="module")
def pairs(faiss, data):
    """(kind, metric) -> (faiss index, pqkit index converted from it)."""
    base, _ = data
    out = {}
    for kind in KINDS + ("PQ8",):
        for metric in ("l2", "ip"):
            theirs = _faiss_index(faiss, kind, metric, base)
            ours = pqkit.from_faiss(theirs)
            if kind.startswith("IVF"):
                theirs.nprobe = ours.nprobe = NPROBE
            out[kind, metric] = theirs, ours
    return out


def _selectors(faiss, n, fraction, seed):
    """(faiss selector, pqkit filter, allowed ids) of a random subset, as a batch and a bitmap;
    the faiss selectors keep their arrays alive through the returned tuple."""
    rng = np.random.default_rng(seed)
    allowed = np.flatnonzero(rng.random(n) < fraction).astype(np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[allowed] = True
    packed = np.packbits(mask, bitorder="little")
    return [
        (faiss.IDSelectorBatch(allowed), pqkit.IDSelectorBatch(allowed), allowed, None),
        (faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed)), pqkit.IDSelectorBitmap(mask), allowed,
         packed),
    ]


def _params(faiss, kind, sel, nprobe=NPROBE):
    if kind.startswith("IVF"):
        return faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
    return faiss.SearchParameters(sel=sel)


def _boundary_ties(ours, queries, nprobe):
    """Queries whose nprobe-th and next coarse centroids are near-tied (faiss may probe another
    list there)."""
    if not hasattr(ours, "centroids"):
        return np.zeros(queries.shape[0], dtype=bool)
    scores = ref.pairwise(queries, ours.centroids, "l2" if ours.metric == "l2" else "ip")
    scores = np.sort(scores if ours.metric == "l2" else -scores, axis=1)
    gap = np.abs(scores[:, nprobe] - scores[:, nprobe - 1])
    return gap <= h.RTOL * np.abs(scores[:, nprobe]) + ref.distance_tolerance(queries, ours.centroids)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search_matches_faiss_selectors(faiss, data, pairs, kind, metric, fraction):
    base, queries = data
    theirs, ours = pairs[kind, metric]
    atol = ref.distance_tolerance(queries, base)
    exempt = _boundary_ties(ours, queries, NPROBE)
    for sel, selector, allowed, _keep in _selectors(faiss, base.shape[0], fraction, seed=7):
        D_ours, I_ours = ours.search(queries, K, filter=selector, **(
            {"nprobe": NPROBE} if kind.startswith("IVF") else {}))
        D_theirs, I_theirs = theirs.search(queries, K + 1, params=_params(faiss, kind, sel))
        assert np.isin(I_ours[I_ours >= 0], allowed).all()
        np.testing.assert_array_equal(I_ours < 0, I_theirs[:, :K] < 0)  # the same padding
        h.assert_same_neighbours(D_ours, I_ours, D_theirs[:, :K], I_theirs[:, :K],
                                 D_theirs[:, K], atol=atol, exempt_rows=exempt)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_filtered_index_pq_matches_faiss_over_the_allowed_codes(faiss, data, pairs, metric):
    """faiss's IndexPQ takes no selector in search: it holds the allowed codes only instead."""
    base, queries = data
    theirs, ours = pairs["PQ8", metric]
    codes = faiss.vector_to_array(theirs.codes).reshape(theirs.ntotal, theirs.code_size)
    for fraction in (0.01, 0.1, 0.5):
        allowed = np.flatnonzero(np.random.default_rng(3).random(base.shape[0]) < fraction)
        subset = faiss.IndexPQ(base.shape[1], 8, 8, h.faiss_metric(faiss, metric))
        subset.pq = theirs.pq
        subset.is_trained = True
        subset.add_sa_codes(np.ascontiguousarray(codes[allowed]))
        D_theirs, rows = subset.search(queries, K + 1)
        I_theirs = np.where(rows >= 0, allowed[np.maximum(rows, 0)], -1)
        D_ours, I_ours = ours.search(queries, K, filter=allowed)
        h.assert_same_neighbours(D_ours, I_ours, D_theirs[:, :K], I_theirs[:, :K], D_theirs[:, K],
                                 atol=ref.distance_tolerance(queries, base))


@pytest.mark.parametrize("kind", ["Flat", "IVF32,PQ8"])
def test_per_query_filter_matches_faiss_query_by_query(faiss, data, pairs, kind):
    base, queries = data
    theirs, ours = pairs[kind, "l2"]
    queries = queries[:12]
    rng = np.random.default_rng(11)
    sets = [np.flatnonzero(rng.random(base.shape[0]) < rng.uniform(0.002, 0.3))
            for _ in range(queries.shape[0])]
    D_ours, I_ours = ours.search(queries, K, filter=sets)
    exempt = _boundary_ties(ours, queries, NPROBE)
    for q, allowed in enumerate(sets):
        sel = faiss.IDSelectorBatch(allowed.astype(np.int64))
        D_theirs, I_theirs = theirs.search(queries[q:q + 1], K + 1, params=_params(faiss, kind, sel))
        h.assert_same_neighbours(D_ours[q:q + 1], I_ours[q:q + 1], D_theirs[:, :K], I_theirs[:, :K],
                                 D_theirs[:, K], atol=ref.distance_tolerance(queries, base),
                                 exempt_rows=exempt[q:q + 1])


def _assert_same_ranges(ours_result, theirs_result, radius, tol, exempt):
    """The same ids per query except at the radius (within tol), the same distances."""
    lims_o, D_o, I_o = ours_result
    lims_t, D_t, I_t = theirs_result
    assert lims_o.shape == lims_t.shape
    n_differ = 0
    for q in range(lims_o.size - 1):
        if exempt[q]:
            continue
        o = dict(zip(I_o[lims_o[q]:lims_o[q + 1]].tolist(), D_o[lims_o[q]:lims_o[q + 1]].tolist()))
        t = dict(zip(I_t[lims_t[q]:lims_t[q + 1]].tolist(), D_t[lims_t[q]:lims_t[q + 1]].tolist()))
        for i in o.keys() & t.keys():
            assert abs(o[i] - t[i]) <= tol, (q, i, o[i], t[i])
        for i in o.keys() ^ t.keys():
            assert abs(o.get(i, t.get(i)) - radius) <= tol, (q, i, o.get(i), t.get(i), radius)
            n_differ += 1
    assert n_differ <= 0.001 * max(1, lims_o[-1])


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", KINDS + ("PQ8",))
def test_range_search_matches_faiss(faiss, data, pairs, kind, metric):
    base, queries = data
    theirs, ours = pairs[kind, metric]
    nprobe = {"nprobe": NPROBE} if kind.startswith("IVF") else {}
    D_knn, _ = ours.search(queries, 40, **nprobe)
    radius = float(np.float32(np.median(D_knn[:, 30])))  # a float32 radius: the same in both
    tol = h.RTOL * abs(radius) + ref.distance_tolerance(queries, base)
    exempt = _boundary_ties(ours, queries, NPROBE)
    params = _params(faiss, kind, None) if kind.startswith("IVF") else None
    _assert_same_ranges(ours.range_search(queries, radius, **nprobe),
                        theirs.range_search(queries, radius, params=params), radius, tol, exempt)
    for sel, selector, allowed, _keep in _selectors(faiss, base.shape[0], 0.1, seed=2):
        got = ours.range_search(queries, radius, filter=selector, **nprobe)
        assert np.isin(got[2], allowed).all()
        _assert_same_ranges(got, theirs.range_search(queries, radius,
                                                     params=_params(faiss, kind, sel)),
                            radius, tol, exempt)
