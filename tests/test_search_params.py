"""Per-call search parameters: ``search(x, k, nprobe=, k_factor=, filter=, max_probe=)``.

They apply to one call without changing the index, are safe while other threads search the
same index with other values, are declared per type (anything else is a TypeError naming the
accepted ones) and are passed down by the wrappers.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import pqkit
from tests.conftest import clustered_split

D_DIM, NLIST, K = 16, 32, 10
BACKENDS = pqkit.available_backends()


@pytest.fixture(scope="module")
def data():
    return clustered_split(4_000, 60, D_DIM, seed=31, n_clusters=40)


@pytest.fixture(scope="module", params=BACKENDS)
def ivfpq(request, data):
    base, _ = data
    index = pqkit.IndexIVFPQ(D_DIM, NLIST, 4, 8, nprobe=2, backend=request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    index.add(base)
    return index


def test_a_parameter_applies_to_one_call_and_leaves_the_index_unchanged(ivfpq, data):
    _, queries = data
    default = ivfpq.search(queries, K)
    per_call = ivfpq.search(queries, K, nprobe=8)
    assert ivfpq.nprobe == 2
    np.testing.assert_array_equal(ivfpq.search(queries, K)[1], default[1])
    ivfpq.nprobe = 8  # the attribute stays the default of later calls
    try:
        np.testing.assert_array_equal(ivfpq.search(queries, K)[1], per_call[1])
        np.testing.assert_array_equal(ivfpq.search(queries, K)[0], per_call[0])
        np.testing.assert_array_equal(ivfpq.search(queries, K, nprobe=2)[1], default[1])
    finally:
        ivfpq.nprobe = 2
    assert not np.array_equal(default[1], per_call[1])  # nprobe matters on this data


def test_threads_search_one_index_with_different_nprobe_at_once(ivfpq, data):
    """Each thread's results equal its serial ones, whatever the others ask for meanwhile."""
    _, queries = data
    settings = [1, 2, 3, 4, 6, 8]
    serial = {nprobe: ivfpq.search(queries, K, nprobe=nprobe) for nprobe in settings}
    errors, start = [], threading.Barrier(len(settings))

    def run(nprobe):
        try:
            start.wait()
            for _ in range(15):
                D, I = ivfpq.search(queries, K, nprobe=nprobe)
                if not (np.array_equal(I, serial[nprobe][1]) and np.array_equal(D, serial[nprobe][0])):
                    errors.append(nprobe)
                    return
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(nprobe,)) for nprobe in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({serial[p][1].tobytes() for p in settings}) >= 4  # the settings give different results


@pytest.mark.parametrize("make, name, accepted", [
    (lambda: pqkit.IndexFlat(8), "IndexFlat", "filter"),
    (lambda: pqkit.IndexPQ(8, 2, 4), "IndexPQ", "filter"),
    (lambda: pqkit.IndexIVFFlat(8, 4), "IndexIVFFlat", "nprobe, filter, max_probe"),
    (lambda: pqkit.IndexRefine(pqkit.IndexPQ(8, 2, 4)), "IndexRefine", "k_factor, filter"),
    (lambda: pqkit.IndexPreTransform(pqkit.PCA(8, 4), pqkit.IndexPQ(4, 2, 4)),
     "IndexPreTransform", "filter"),
])
def test_an_inapplicable_parameter_is_a_type_error_naming_the_accepted_ones(make, name, accepted):
    index = make()
    x = np.zeros((2, 8), np.float32)
    given = {"nprobe": 2, "k_factor": 2.0, "max_probe": 3}
    wrong = [p for p in given if p not in index.search_parameters]
    assert wrong
    for param in wrong:
        with pytest.raises(TypeError, match=rf"{name}\.search\(\) got {param}, which {name} does "
                                            rf"not take; its search parameters are: {accepted}$"):
            index.search(x, 1, **{param: given[param]})
    if "nprobe" in wrong:
        with pytest.raises(TypeError, match=rf"{name}\.range_search\(\) got nprobe, .*its "
                                            r"range_search parameters are: filter$"):
            index.range_search(x, 1.0, nprobe=2)


def test_an_unknown_parameter_names_the_accepted_ones_and_the_faiss_spelling():
    index = pqkit.IndexIVFFlat(8, 4)
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(TypeError, match=r"IndexIVFFlat\.search\(\) got an unknown parameter "
                                        r"'sel'; its search parameters are: nprobe, filter, "
                                        r"max_probe; a faiss selector is filter= here"):
        index.search(x, 1, sel=None)
    with pytest.raises(TypeError, match=r"unknown parameter 'nlist'; its range_search parameters "
                                        r"are: nprobe, filter$"):
        index.range_search(x, 1.0, nlist=4)
    with pytest.raises(TypeError, match="instead of a SearchParameters object"):
        pqkit.IndexFlat(8).search(x, 1, params=object())


def test_parameter_values_are_validated_with_expected_and_got(ivfpq, data):
    _, queries = data
    for kwargs, error, match in [
        ({"nprobe": 0}, ValueError, rf"nprobe must be in \[1, nlist={NLIST}\].*got 0"),
        ({"nprobe": NLIST + 1}, ValueError, f"got {NLIST + 1}"),
        ({"nprobe": 2.0}, TypeError, "nprobe must be an int, got float"),
        ({"nprobe": True}, TypeError, "nprobe must be an int, got bool"),
        ({"max_probe": 1}, ValueError, rf"max_probe must be in \[nprobe=2, nlist={NLIST}\].*got 1"),
        ({"nprobe": 8, "max_probe": 4}, ValueError, r"\[nprobe=8, nlist"),
        ({"max_probe": "all"}, TypeError, "max_probe must be an int, got str"),
        ({"filter": 1.5}, TypeError, "filter must be a pqkit.IDSelector"),
    ]:
        with pytest.raises(error, match=match):
            ivfpq.search(queries, K, **kwargs)
    refine = pqkit.IndexRefine(pqkit.IndexFlat(D_DIM))
    with pytest.raises(ValueError, match=r"k_factor must be a finite number in \[1, 1024\].*got 0.5"):
        refine.search(queries, K, k_factor=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrappers_pass_parameters_down(backend, data):
    base, queries = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(D_DIM, NLIST, 4, 8, nprobe=1, backend=backend),
                                   k_factor=1)
        refine.train(base)
        refine.add(base)
        pca = pqkit.PCA(D_DIM, 12).train(base)
        inner = pqkit.IndexIVFFlat(12, NLIST, nprobe=1, backend=backend)
        pre = pqkit.IndexPreTransform(pca, inner)
        pre.train(base)
        pre.add(base)
    per_call = refine.search(queries, K, nprobe=8, k_factor=4)
    assert refine.nprobe == 1 and refine.k_factor == 1
    refine.nprobe, refine.k_factor = 8, 4
    np.testing.assert_array_equal(refine.search(queries, K)[1], per_call[1])
    np.testing.assert_array_equal(refine.search(queries, K)[0], per_call[0])
    per_call = pre.search(queries, K, nprobe=8, max_probe=NLIST)
    assert inner.nprobe == 1
    inner.nprobe = 8
    np.testing.assert_array_equal(pre.search(queries, K)[1], per_call[1])
    assert refine.search_parameters == ("k_factor", "nprobe", "filter", "max_probe")
    assert pre.search_parameters == ("nprobe", "filter", "max_probe")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_per_call_k_factor_stays_with_the_outer_of_nested_refine_stages(backend, data):
    """IndexRefine over an IndexRefine: the call's k_factor is the outer stage's; the inner
    stage keeps its own (a leaked k_factor would fetch more inner candidates)."""
    base, queries = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        inner = pqkit.IndexRefine(pqkit.IndexIVFPQ(D_DIM, NLIST, 4, 4, nprobe=4, backend=backend),
                                  1, pqkit.IndexPQ(D_DIM, 8, 8, backend=backend))
        outer = pqkit.IndexRefine(inner, k_factor=1)
        outer.train(base)
        outer.add(base)
    for repeat in range(2):  # the second call takes the remembered parameters
        per_call = outer.search(queries, K, k_factor=4)
        assert outer.k_factor == 1 and inner.k_factor == 1
    outer.k_factor = 4
    expected = outer.search(queries, K)
    np.testing.assert_array_equal(per_call[1], expected[1])
    np.testing.assert_array_equal(per_call[0], expected[0])
    inner.k_factor = 4
    assert not np.array_equal(outer.search(queries, K)[1], expected[1])  # the test can fail


def test_remembered_parameters_are_checked_by_type_and_value(ivfpq, data):
    """A pair of nprobe / k_factor values is validated once per index and remembered; a value
    equal to a remembered one but of another type (True == 1) is still checked."""
    _, queries = data
    ivfpq.search(queries[:2], K, nprobe=1)
    with pytest.raises(TypeError, match="nprobe must be an int"):
        ivfpq.search(queries[:2], K, nprobe=True)
    with pytest.raises(TypeError, match="k_factor"):
        ivfpq.search(queries[:2], K, nprobe=1, k_factor=2)  # not a parameter of IndexIVFPQ
    with pytest.raises(ValueError, match="nprobe must be in"):
        ivfpq.search(queries[:2], K, nprobe=NLIST + 1)
    ivfpq.search(queries[:2], K, nprobe=NLIST)
    with pytest.raises(ValueError, match="nprobe must be in"):
        ivfpq.search(queries[:2], K, nprobe=NLIST + 1)  # a refusal is not remembered
    for nprobe in range(1, 200):  # the memo stays bounded
        ivfpq.search(queries[:1], 1, nprobe=1 + nprobe % NLIST)
    assert len(ivfpq._params_memo) <= 64


def _lists_needed(index, queries, allowed_ids, nprobe, max_probe):
    """The lists each query scans under max_probe: its nearest, in order, from nprobe on until
    they hold K allowed vectors (or max_probe lists), computed with NumPy."""
    scores = ((queries[:, None, :].astype(np.float64) - index.centroids[None]) ** 2).sum(-1)
    order = np.argsort(scores, axis=1, kind="stable")
    list_nos = np.asarray(index._invlists.locate(allowed_ids)[0])
    per_list = np.bincount(list_nos, minlength=index.nlist)
    cumulative = np.cumsum(per_list[order], axis=1)
    needed = np.argmax(cumulative >= K, axis=1) + 1
    needed[cumulative[:, -1] < K] = index.nlist
    return np.clip(needed, nprobe, max_probe), np.sort(scores, axis=1)


@pytest.mark.parametrize("kind", ["IVFFlat", "IVFPQ"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_max_probe_widens_until_k_allowed_results(backend, kind, data):
    """With a selective filter, nprobe lists hold fewer than k allowed vectors; max_probe scans
    the next lists one at a time: the result equals a search with the smallest nprobe whose
    lists hold k allowed vectors (capped at max_probe), found with NumPy."""
    base, queries = data
    index = (pqkit.IndexIVFFlat(D_DIM, NLIST, backend=backend) if kind == "IVFFlat"
             else pqkit.IndexIVFPQ(D_DIM, NLIST, 8, 4, backend=backend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    index.add(base)
    allowed = np.flatnonzero(np.random.default_rng(0).random(base.shape[0]) < 0.01)
    for nprobe, max_probe in ((1, NLIST), (2, 6)):
        D, I = index.search(queries, K, filter=allowed, nprobe=nprobe, max_probe=max_probe)
        needed, scores = _lists_needed(index, queries, allowed, nprobe, max_probe)
        plain = index.search(queries, K, filter=allowed, nprobe=nprobe)
        assert (plain[1] < 0).sum() > (I < 0).sum()  # widening found more
        for q in range(queries.shape[0]):
            p = int(needed[q])
            if p < NLIST and abs(scores[q, p] - scores[q, p - 1]) <= 1e-4 * scores[q, p]:
                continue  # near-tied centroids at the boundary
            D_q, I_q = index.search(queries[q:q + 1], K, filter=allowed, nprobe=p)
            np.testing.assert_array_equal(I[q], I_q[0])
            np.testing.assert_array_equal(D[q], D_q[0])
        if max_probe == NLIST:
            assert (I >= 0).all()  # 40 allowed vectors, k = 10: always found
