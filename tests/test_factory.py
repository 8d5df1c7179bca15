"""pqkit.index_factory: the FAISS description strings, and bad strings."""

from __future__ import annotations

import pytest

import pqkit


@pytest.mark.parametrize(
    "d, description, cls, attrs",
    [
        (64, "Flat", pqkit.IndexFlat, {}),
        (64, "PQ16", pqkit.IndexPQ, {"M": 16, "nbits": 8, "code_size": 16}),
        (64, "PQ16x4", pqkit.IndexPQ, {"M": 16, "nbits": 4, "code_size": 8}),
        (64, "PQ8x12", pqkit.IndexPQ, {"M": 8, "nbits": 12, "code_size": 12}),
        (64, "IVF256,Flat", pqkit.IndexIVFFlat, {"nlist": 256, "code_size": 256}),
        (128, "IVF1024,PQ32x8", pqkit.IndexIVFPQ, {"nlist": 1024, "M": 32, "nbits": 8, "code_size": 32}),
        (96, "IVF100,PQ12", pqkit.IndexIVFPQ, {"nlist": 100, "M": 12, "nbits": 8, "code_size": 12}),
    ],
)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_accepted_strings(d, description, cls, attrs, metric):
    index = pqkit.index_factory(d, description, metric=metric)
    assert type(index) is cls
    assert index.d == d and index.metric == metric and index.ntotal == 0
    assert index.is_trained == (cls is pqkit.IndexFlat)
    for name, value in attrs.items():
        owner = index.pq if name in ("M", "nbits") else index
        assert getattr(owner, name) == value, (name, getattr(owner, name), value)
    if hasattr(index, "nprobe"):
        assert index.nprobe == 1


def test_factory_index_trains_and_searches(small_clustered):
    base, queries = small_clustered
    index = pqkit.index_factory(16, "IVF16,PQ4x4")
    index.train(base)
    index.add(base)
    D, I = index.search(queries, 5)
    assert D.shape == I.shape == (queries.shape[0], 5) and (I >= 0).all()


@pytest.mark.parametrize("description, refine_M, refine_nbits", [("IVF16,PQ8x4,Refine(PQ32)", 32, 8),
                                                                   ("PCA32,PQ8,Refine(PQ16x6)", 16, 6)])
def test_refine_with_pq_codes(description, refine_M, refine_nbits):
    """Refine(PQ...) re-ranks with an IndexPQ of the input dimension."""
    index = pqkit.index_factory(64, description, metric="ip")
    assert isinstance(index, pqkit.IndexRefine) and type(index.refine_index) is pqkit.IndexPQ
    refine = index.refine_index
    assert (refine.d, refine.metric, refine.pq.M, refine.pq.nbits) == (64, "ip", refine_M, refine_nbits)
    assert not index.is_trained


@pytest.mark.parametrize(
    "description",
    ["IVF16,PQ8,Refine(PQ)", "IVF16,PQ8,Refine(PQ7)", "IVF16,PQ8,Refine(PQ16x17)", "IVF16,PQ8,Refine(IVF4,PQ8)",
     "IVF16,PQ8,RPQ16", "", "flat", "FLAT", "PQ", "PQx8", "PQ16x", "PQ0", "PQ16x0", "PQ16x17", "IVF,Flat", "IVF0,Flat", "IVF256",
     "IVF256,", "IVF256;Flat", "IVF256,PQ", "IVF256,Flat,PQ8", "Flat,IVF256", "HNSW32", "OPQ16",
     "PCA32", "PCA0,Flat", "OPQ7,PQ16", "IVF256,PQ16x4fs", "PQ-4", "IVF-1,Flat", "PQ16 x4", "IVF256,PQ7"],
)
def test_bad_strings(description):
    with pytest.raises(ValueError) as err:
        pqkit.index_factory(64, description)
    message = str(err.value)
    # The message names what was wrong; grammar errors list the accepted forms.
    assert message


def test_grammar_is_listed_for_unparseable_strings():
    with pytest.raises(ValueError) as err:
        pqkit.index_factory(64, "HNSW32")
    assert "HNSW32" in str(err.value) and "IVF" in str(err.value) and "PQ" in str(err.value)


def test_d_not_divisible_by_m():
    with pytest.raises(ValueError) as err:
        pqkit.index_factory(50, "PQ16")
    assert "50" in str(err.value) and "16" in str(err.value)


def test_non_string_description_and_bad_metric():
    with pytest.raises(TypeError):
        pqkit.index_factory(64, 16)
    with pytest.raises(ValueError, match="l2"):
        pqkit.index_factory(64, "Flat", metric="L1")


@pytest.mark.parametrize("description", ["Flat", "PQ8", "IVF16,Flat", "IVF16,PQ8", "PCA16,IVF16,PQ8,RFlat"])
def test_backend_reaches_the_core_index(description):
    index = pqkit.index_factory(32, description, backend="numba")
    while isinstance(index, (pqkit.IndexRefine, pqkit.IndexPreTransform)):  # unwrap the wrappers
        index = index.base_index if isinstance(index, pqkit.IndexRefine) else index.index
    assert index.backend == "numba"
    with pytest.raises(ValueError, match="backend"):
        pqkit.index_factory(32, description, backend="fortran")
