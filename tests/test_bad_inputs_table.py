"""Every public entry point against the issue's list of bad inputs, as one table.

Each row is (entry point, input, outcome): the outcome is either a typed exception whose
message must match a pattern (so it says what was expected and what was given), or a
documented correct result checked by a function. The whole table runs on both engines; one
test per engine reports every row that misbehaves at once, and the number of rows tried (also
recorded as the ``bad_input_cases`` junit property). A crash would take the test process down,
so a passing run also shows zero crashes.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import pqkit
from pqkit import io as _io
from tests.conftest import clustered_split

D = 16
NLIST = 8
KINDS = ("Flat", "PQ", "IVFFlat", "IVFPQ")
BACKENDS = pqkit.available_backends()  # both in CI (the test extra installs numba)


@dataclass
class Case:
    name: str
    call: Callable
    error: type | None = None  # expected exception type, or None for a documented result
    match: str = ""  # regex the message must contain
    check: Callable | None = None  # for documented results: check(result) -> None (asserts)


@pytest.fixture(scope="module")
def data():
    base, queries = clustered_split(2_000, 30, D, seed=17, n_clusters=20)
    return base, queries


@pytest.fixture(scope="module")
def trained(data):
    """Centroids and codebooks trained once (C++), injected into every fresh index."""
    base, _ = data
    centroids = pqkit.KMeans(D, NLIST, niter=5, backend="cpp").train(base).centroids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        codebooks = pqkit.ProductQuantizer(D, 4, 4, niter=3, backend="cpp").train(base).codebooks
        residual_codebooks = pqkit.IndexIVFPQ(D, NLIST, 4, 4, backend="cpp").set_centroids(
            centroids)
        residual_codebooks.pq.niter = 3
        residual_codebooks._pq.train(base - centroids[pqkit.KMeans(D, NLIST).set_centroids(
            centroids).assign(base)[1]])
    return centroids, codebooks, residual_codebooks.pq.codebooks


def _make(kind, backend, trained, ready=True, fill=0, base=None, metric="l2"):
    centroids, codebooks, residual_codebooks = trained
    index = {
        "Flat": lambda: pqkit.IndexFlat(D, metric, backend=backend),
        "PQ": lambda: pqkit.IndexPQ(D, 4, 4, metric, backend=backend),
        "IVFFlat": lambda: pqkit.IndexIVFFlat(D, NLIST, metric, nprobe=2, backend=backend),
        "IVFPQ": lambda: pqkit.IndexIVFPQ(D, NLIST, 4, 4, metric, nprobe=2, backend=backend),
    }[kind]()
    if ready:
        if kind.startswith("IVF"):
            index.set_centroids(centroids)
        if kind == "PQ":
            index.pq.set_codebooks(codebooks)
        if kind == "IVFPQ":
            index.pq.set_codebooks(residual_codebooks)
    if fill:
        index.add(base[:fill])
    return index


# ------------------------------------------------------------------------ result checks
def _equals(reference: Callable):
    """The result equals what the reference (the same call on clean float32 input) returns."""
    def check(result):
        expected = reference()
        for got, want in zip(result if isinstance(result, tuple) else (result,),
                             expected if isinstance(expected, tuple) else (expected,)):
            np.testing.assert_array_equal(got, want)
    return check


def _padded(n, k, n_real, pad=np.inf):
    def check(result):
        Dist, I = result
        assert Dist.shape == (n, k) and I.shape == (n, k)
        assert Dist.dtype == np.float32 and I.dtype == np.int64
        assert (I[:, n_real:] == -1).all() and (Dist[:, n_real:] == pad).all()
        assert (I[:, :n_real] >= 0).all()
    return check


def _is(value):
    def check(result):
        assert result == value, (result, value)
    return check


# ------------------------------------------------------------------------ bad vectors
def _bad_vectors(x):
    """(label, array, error type, message pattern) for vectors where (n, D) float32 is expected."""
    nan, inf = x.copy(), x.copy()
    nan[3, 2] = np.nan
    inf[1, 0] = -np.inf
    wide = np.zeros((x.shape[0], D + 3), np.float32)
    finite = "NaN or infinite"
    floats = "floating-point"
    return [
        ("NaN", nan, ValueError, finite + r".*first at row 3"),
        ("-inf", inf, ValueError, finite + r".*first at row 1"),
        ("float64 overflow", x.astype(np.float64) * 1e300, ValueError, finite),
        ("int32", x.astype(np.int32), TypeError, floats + ".*int32"),
        ("int64", np.zeros((4, D), np.int64), TypeError, floats + ".*int64"),
        ("bool", x > 0, TypeError, floats + ".*bool"),
        ("object", x.astype(object), TypeError, floats + ".*object"),
        ("complex", x.astype(np.complex64), TypeError, floats + ".*complex"),
        ("strings", [["a"] * D], TypeError, floats),
        ("None", None, TypeError, floats),
        ("ragged list", [[1.0] * D, [1.0]], TypeError, "cannot convert"),
        ("0-d", np.float32(1.0), ValueError, r"must be 2-D .*got shape \(\)"),
        ("1-d of wrong length", x[0, :5], ValueError, rf"must have {D} columns.*\(1, 5\)"),
        ("3-d", x[:4].reshape(2, 2, D), ValueError, r"must be 2-D.*\(2, 2, 16\)"),
        ("empty 1-d", np.zeros(0, np.float32), ValueError, rf"must have {D} columns"),
        ("wrong d", wide, ValueError, rf"must have {D} columns.*\(\d+, {D + 3}\)"),
    ]


def _converted_vectors(x):
    """(label, array) that are documented to be converted to ``x`` (float32, C order)."""
    x = x.astype(np.float16).astype(np.float32)  # exactly representable in float16
    wide = np.zeros((x.shape[0], 2 * D), np.float32)
    wide[:, ::2] = x
    return x, [
        ("float16", x.astype(np.float16)),
        ("float64", x.astype(np.float64)),
        ("Fortran order", np.asfortranarray(x)),
        ("non-contiguous", wide[:, ::2]),
        ("list", x.tolist()),
    ]


# ------------------------------------------------------------------------ the table
def build_cases(backend, data, trained, tmp_path):
    base, queries = data
    cases: list[Case] = []

    def add(name, call, error=None, match="", check=None):
        cases.append(Case(name, call, error, match, check))

    def make(kind, **kwargs):
        return _make(kind, backend, trained, base=base, **kwargs)

    q = np.array(queries[:6])
    for kind in KINDS:
        # vectors given to every method that takes them
        for method in ("train", "add", "add_with_ids", "search"):
            for label, bad, error, match in _bad_vectors(q):
                def call(kind=kind, method=method, bad=bad):
                    index = make(kind, fill=50)
                    if method == "train":
                        index.reset()
                        return index.train(bad)
                    if method == "add_with_ids":
                        return index.add_with_ids(bad, np.arange(1000, 1000 + len(np.atleast_2d(
                            np.asarray(bad, dtype=object)))))
                    if method == "search":
                        return index.search(bad, 3)
                    return index.add(bad)
                # add_with_ids checks the ids' length after converting x: for x that cannot be
                # converted the x error comes first, for a 0-d x the ids length is wrong.
                add(f"{kind}.{method}({label})", call, error, match)
            ref_x, converted = _converted_vectors(q)
            for label, conv in converted:
                if method == "search":
                    index = make(kind, fill=300)
                    add(f"{kind}.search({label})", lambda index=index, conv=conv:
                        index.search(conv, 4),
                        check=_equals(lambda index=index, ref_x=ref_x: index.search(ref_x, 4)))
                elif method == "add":
                    def added(kind=kind, data_=conv):
                        index = make(kind)
                        index.add(data_)
                        return index.reconstruct_n(np.arange(len(ref_x)))
                    def expected(kind=kind):
                        index = make(kind)
                        index.add(ref_x)
                        return index.reconstruct_n(np.arange(len(ref_x)))
                    add(f"{kind}.add({label})", added, check=_equals(expected))
            empty = np.zeros((0, D), np.float32)
            if method == "search":
                add(f"{kind}.search(empty batch)", lambda kind=kind: make(kind, fill=20).search(
                    empty, 3), check=_padded(0, 3, 0))
            elif method == "train":
                if kind == "Flat":
                    add("Flat.train(empty)", lambda: make("Flat").train(empty),
                        check=lambda r: None)
                else:
                    add(f"{kind}.train(empty)", lambda kind=kind: make(kind, ready=False).train(
                        empty), ValueError, r"needs at least \d+ training vectors.*got 0")
            elif method == "add":
                def add_empty(kind=kind):
                    index = make(kind, fill=10)
                    index.add(empty)
                    return index.ntotal
                add(f"{kind}.add(empty)", add_empty, check=_is(10))

        # k
        for label, k, error, match in [
            ("k=0", 0, ValueError, "k must be >= 1.*got 0"),
            ("k=-3", -3, ValueError, "k must be >= 1.*got -3"),
            ("k=1.5", 1.5, TypeError, "k must be an int.*float"),
            ("k=True", True, TypeError, "k must be an int.*bool"),
            ("k='5'", "5", TypeError, "k must be an int.*str"),
            ("k=None", None, TypeError, "k must be an int"),
            ("k=2**40", 2**40, ValueError, "GiB, more than (this machine's physical memory|the process's address-space limit|the memory left under the cgroup).*allows.*k <= ntotal"),
            ("k=2**62", 2**62, ValueError, "more than .* allows"),
        ]:
            add(f"{kind}.search({label})", lambda kind=kind, k=k: make(kind, fill=20).search(q, k),
                error, match)
        def beyond_ntotal(kind=kind):
            index = make(kind, fill=5)
            if kind.startswith("IVF"):
                index.nprobe = NLIST  # every list: all 5 vectors are found
            return index.search(q, 9)
        add(f"{kind}.search(k > ntotal)", beyond_ntotal, check=_padded(len(q), 9, 5))
        add(f"{kind}.search(k=np.int64)", lambda kind=kind: make(kind, fill=30).search(
            q, np.int64(4))[1].shape, check=_is((len(q), 4)))
        add(f"{kind}.search(empty index)", lambda kind=kind: make(kind).search(q, 4),
            check=_padded(len(q), 4, 0))
        add(f"{kind}.reconstruct(empty index)", lambda kind=kind: make(kind).reconstruct(0),
            ValueError, r"ids not in the index: \[0\]")
        add(f"{kind}.remove_ids(empty index)", lambda kind=kind: make(kind).remove_ids([1, 2]),
            check=_is(0))

        # untrained
        if kind != "Flat":
            for method, call in [
                ("add", lambda index: index.add(q)),
                ("add_with_ids", lambda index: index.add_with_ids(q, np.arange(len(q)))),
                ("search", lambda index: index.search(q, 2)),
                ("reconstruct", lambda index: index.reconstruct(0)),
                ("reconstruct_n", lambda index: index.reconstruct_n([0])),
            ]:
                add(f"{kind}.{method}(untrained)", lambda kind=kind, call=call: call(
                    make(kind, ready=False)), ValueError, r"not trained; call \.train\(x\)")
            add(f"{kind}.train(fewer points than centroids)", lambda kind=kind: make(
                kind, ready=False).train(base[:3]), ValueError,
                r"needs at least \d+ training vectors .*got 3")
            add(f"{kind}.train(while holding vectors)", lambda kind=kind: make(
                kind, fill=20).train(base), ValueError, r"stale; call reset\(\) first")

        # ids
        two = q[:2]
        for label, ids, error, match in [
            ("duplicate", [7, 7], ValueError, r"ids must be unique.*duplicates \[7\]"),
            ("already present", [3, 1000], ValueError, r"already in the index: \[3\]"),
            ("negative", [-1, 5], ValueError, r"ids must be >= 0, got -1"),
            ("float", [1.0, 2.0], TypeError, "integer array.*float64"),
            ("bool", [True, False], TypeError, "integer array.*bool"),
            ("object", np.array([1, 2], dtype=object), TypeError, "integer array.*object"),
            ("strings", ["1", "2"], TypeError, "integer array"),
            ("2-d", [[1, 2]], ValueError, r"ids must be 1-D, got shape \(1, 2\)"),
            ("wrong length", [1, 2, 3], ValueError, "one id per vector: expected length 2, got 3"),
            ("uint64 beyond int64", np.array([2**63, 1], np.uint64), ValueError, "fit in int64"),
            ("None", None, TypeError, "integer array"),
        ]:
            add(f"{kind}.add_with_ids({label} ids)", lambda kind=kind, ids=ids: make(
                kind, fill=10).add_with_ids(two, ids), error, match)
        def uint8_ids(kind=kind):
            index = make(kind)
            index.add_with_ids(two, np.array([250, 7], np.uint8))
            return index.ntotal, index.remove_ids([250, 7, 8])
        add(f"{kind}.add_with_ids(uint8 ids)", uint8_ids, check=_is((2, 2)))
        for label, ids, error, match, check in [
            ("unknown", [10**6, 5000], None, "", _is(0)),
            ("negative", [-1], ValueError, r">= 0, got -1", None),
            ("float", [1.5], TypeError, "integer array.*float64", None),
            ("2-d", [[1]], ValueError, "1-D", None),
            ("mixed known/unknown", [1, 10**6], None, "", _is(1)),
            ("duplicate", [2, 2], None, "", _is(1)),
        ]:
            add(f"{kind}.remove_ids({label})", lambda kind=kind, ids=ids: make(
                kind, fill=10).remove_ids(ids), error, match, check)
        for label, key, error, match in [
            ("unknown", 10**6, ValueError, r"ids not in the index: \[1000000\]"),
            ("negative", -1, ValueError, "id must be >= 0, got -1"),
            ("float", 1.0, TypeError, "id must be an int.*float"),
            ("bool", True, TypeError, "id must be an int.*bool"),
        ]:
            add(f"{kind}.reconstruct({label})", lambda kind=kind, key=key: make(
                kind, fill=10).reconstruct(key), error, match)
        add(f"{kind}.reconstruct_n(unknown)", lambda kind=kind: make(kind, fill=10).reconstruct_n(
            [1, 99]), ValueError, r"ids not in the index: \[99\]")

        # cosine: rows without a direction
        add(f"{kind}.add(zero row, cosine)", lambda kind=kind: make(kind, metric="cosine").add(
            np.zeros((2, D), np.float32)), ValueError, "all-zero row.*cosine")

        # nprobe
        if kind.startswith("IVF"):
            for label, value, error, match in [
                ("0", 0, ValueError, rf"nprobe must be in \[1, nlist={NLIST}\].*got 0"),
                ("-1", -1, ValueError, "got -1"),
                ("> nlist", NLIST + 1, ValueError, f"got {NLIST + 1}"),
                ("float", 2.0, TypeError, "nprobe must be an int, got float"),
                ("bool", True, TypeError, "nprobe must be an int, got bool"),
            ]:
                add(f"{kind}.nprobe = {label}", lambda kind=kind, value=value: setattr(
                    make(kind), "nprobe", value), error, match)
            def probe_all(kind=kind):
                index = make(kind, fill=200)
                index.nprobe = NLIST
                return int((index.search(q, 5)[1] < 0).sum())  # no padding: all lists probed
            add(f"{kind}.nprobe = nlist", probe_all, check=_is(0))
            add(f"{kind}.set_centroids(wrong shape)", lambda kind=kind: make(
                kind, ready=False).set_centroids(np.zeros((NLIST - 1, D), np.float32)),
                ValueError,
                rf"centroids must have shape \({NLIST}, {D}\), got \({NLIST - 1}, {D}\)")
            add(f"{kind}.set_centroids(NaN)", lambda kind=kind: make(
                kind, ready=False).set_centroids(np.full((NLIST, D), np.nan, np.float32)),
                ValueError, "NaN or infinite")
            add(f"{kind}.set_centroids(int)", lambda kind=kind: make(
                kind, ready=False).set_centroids(np.zeros((NLIST, D), np.int32)),
                TypeError, "floating-point.*int32")
            add(f"{kind}.set_centroids(while holding vectors)", lambda kind=kind: make(
                kind, fill=5).set_centroids(trained[0]), ValueError, r"call reset\(\) first")

        # per-call search parameters, filters and range search
        nq = len(q)
        for label, kwargs, error, match in [
            ("filter=float ids", {"filter": np.array([1.0, 2.0])}, TypeError,
             "filter ids must be an integer array.*float64"),
            ("filter=negative id", {"filter": [3, -1]}, ValueError, "filter ids must be >= 0, got -1"),
            ("filter=2-D bool", {"filter": np.ones((2, 3), bool)}, ValueError,
             r"filter mask must be 1-D.*\(2, 3\)"),
            ("filter=str", {"filter": "even"}, TypeError, "filter must be a pqkit.IDSelector"),
            ("filter=3-tuple", {"filter": (1, 2, 3)}, TypeError, r"\(offsets, ids\), got a tuple of 3"),
            ("filter=bitmap of ints", lambda: {"filter": pqkit.IDSelectorBitmap(np.array([1, 0]))},
             TypeError, "filter mask must be a bool array"),
            ("filter=bitmap start<0", lambda: {"filter": pqkit.IDSelectorBitmap(np.ones(3, bool),
                                                                                start=-1)},
             ValueError, r"filter start must be in \[0, "),
            ("filter=offsets too short", {"filter": ([0, 1], [5])}, ValueError,
             rf"holds 1 id sets .* expected {nq + 1} offsets"),
            ("filter=offsets decreasing", {"filter": ([0, 2, 1, 3], [1, 2, 3])}, ValueError,
             "offsets must be non-decreasing, got 2 then 1"),
            ("filter=offsets past ids", {"filter": ([0, 1, 4], [1, 2])}, ValueError,
             r"offsets must start at 0 and end at len\(ids\) = 2, got 0 .. 4"),
            ("filter=float offsets", {"filter": ([0.0, 1.0], [1])}, TypeError,
             "filter offsets must be an integer array"),
            ("filter=per-query list too short", {"filter": [[1, 2], [3]]}, ValueError,
             rf"holds 2 id sets.*expected {nq + 1} offsets"),
            ("k_factor", {"k_factor": 2.0}, TypeError,
             rf"Index{'' if kind == 'Flat' else kind}.*search\(\) got k_factor, which .* does not take"),
        ] + ([] if kind.startswith("IVF") else [
            ("nprobe", {"nprobe": 2}, TypeError,
             r"search\(\) got nprobe, which .* does not take; its search parameters are: filter$"),
            ("max_probe", {"max_probe": 4}, TypeError, "got max_probe, which"),
        ]) + ([
            ("nprobe=0", {"nprobe": 0}, ValueError, rf"nprobe must be in \[1, nlist={NLIST}\].*got 0"),
            ("nprobe=1.5", {"nprobe": 1.5}, TypeError, "nprobe must be an int, got float"),
            ("max_probe < nprobe", {"nprobe": 4, "max_probe": 2}, ValueError,
             rf"max_probe must be in \[nprobe=4, nlist={NLIST}\].*got 2"),
            ("max_probe > nlist", {"max_probe": NLIST + 1}, ValueError, f"got {NLIST + 1}"),
        ] if kind.startswith("IVF") else []):
            add(f"{kind}.search({label})", lambda kind=kind, kwargs=kwargs: make(
                kind, fill=50).search(q, 3, **(kwargs() if callable(kwargs) else kwargs)),
                error, match)
        add(f"{kind}.search(filter allows nothing)", lambda kind=kind: make(kind, fill=50).search(
            q, 3, filter=[]), check=_padded(nq, 3, 0))
        add(f"{kind}.search(filter of absent ids)", lambda kind=kind: make(kind, fill=50).search(
            q, 3, filter=[10**12]), check=_padded(nq, 3, 0))

        def searched(kind=kind, **kwargs):
            index = make(kind, fill=200)
            if kind.startswith("IVF"):
                index.nprobe = NLIST
            return index.search(q, 4, **kwargs)
        add(f"{kind}.search(exclusion of absent ids)", lambda searched=searched: searched(
            filter=pqkit.IDSelectorNot([10**9])), check=_equals(searched))
        for label, call_kwargs, error, match in [
            ("radius=nan", {"radius": float("nan")}, ValueError, "radius must be a number, got nan"),
            ("radius='1'", {"radius": "1"}, TypeError, "radius must be a real number, got str"),
            ("radius=True", {"radius": True}, TypeError, "radius must be a real number, got bool"),
            ("radius=None", {"radius": None}, TypeError, "radius must be a real number"),
            ("max_results=-1", {"radius": 1.0, "max_results": -1}, ValueError,
             "max_results must be >= 0, got -1"),
            ("max_results=2.0", {"radius": 1.0, "max_results": 2.0}, TypeError,
             "max_results must be an int"),
            ("max_results beyond memory", {"radius": 1.0, "max_results": 2**61}, ValueError,
             "range-search results .* GiB, more than"),
            ("max_results exceeded", {"radius": np.inf, "max_results": 7}, ValueError,
             "range search found more than max_results = 7 results"),
            ("filter=float ids", {"radius": 1.0, "filter": [0.5]}, TypeError, "integer array"),
            ("k_factor", {"radius": 1.0, "k_factor": 2}, TypeError,
             r"range_search\(\) got k_factor, which .* does not take; its range_search parameters"),
            ("unknown parameter", {"radius": 1.0, "sel": None}, TypeError,
             "got an unknown parameter 'sel'.*a faiss selector is filter= here"),
        ] + ([] if kind.startswith("IVF") else [
            ("nprobe", {"radius": 1.0, "nprobe": 2}, TypeError,
             r"range_search\(\) got nprobe, .* its range_search parameters are: filter$"),
        ]):
            def ranged(kind=kind, call_kwargs=call_kwargs):
                index = make(kind, fill=50)
                if kind.startswith("IVF"):
                    index.nprobe = NLIST
                return index.range_search(q, **call_kwargs)
            add(f"{kind}.range_search({label})", ranged, error, match)

        def range_layout(kind=kind):
            lims, Dist, I = make(kind, fill=50).range_search(q, -1.0)
            return lims.tolist(), Dist.dtype, I.dtype, Dist.shape, I.shape
        add(f"{kind}.range_search(nothing within)", range_layout,
            check=_is(([0] * (nq + 1), np.dtype(np.float32), np.dtype(np.int64), (0,), (0,))))
        add(f"{kind}.range_search(empty index)", lambda kind=kind: make(kind).range_search(
            q, 1.0)[0].tolist(), check=_is([0] * (nq + 1)))
        add(f"{kind}.range_search(empty batch)", lambda kind=kind: make(kind, fill=5).range_search(
            np.zeros((0, D), np.float32), 1.0)[0].tolist(), check=_is([0]))
        if kind != "Flat":
            add(f"{kind}.range_search(untrained)", lambda kind=kind: make(
                kind, ready=False).range_search(q, 1.0), ValueError, r"not trained; call \.train\(x\)")

    # filter objects on their own
    for label, call, error, match in [
        ("IDSelectorNot(None)", lambda: pqkit.IDSelectorNot(None), TypeError,
         "needs a filter to invert"),
        ("IDSelectorPerQuery(str)", lambda: pqkit.IDSelectorPerQuery("abc"), TypeError,
         "one id array per query"),
        ("IDSelectorPerQuery(negative)", lambda: pqkit.IDSelectorPerQuery([[1], [-2]]), ValueError,
         "filter ids of query 1 must be >= 0"),
        ("IDSelectorBatch(2-D)", lambda: pqkit.IDSelectorBatch([[1, 2]]), ValueError,
         "filter ids must be 1-D"),
        ("IDSelectorBatch(uint64 beyond int64)", lambda: pqkit.IDSelectorBatch(
            np.array([2**63], np.uint64)), ValueError, "fit in int64"),
        ("IDSelectorPerQuery.from_csr(2-D offsets)", lambda: pqkit.IDSelectorPerQuery.from_csr(
            [[0, 1]], [1]), ValueError, "filter offsets must be 1-D"),
        ("IDSelectorPerQuery.accepts(1-D)", lambda: pqkit.IDSelectorPerQuery([[1]]).accepts([1]),
         ValueError, "needs the query of each id"),
    ]:
        add(label, call, error, match)

    # constructors (and the factory) with bad parameters
    ctors = {
        "IndexFlat": lambda **kw: pqkit.IndexFlat(kw.get("d", D), kw.get("metric", "l2"),
                                                  n_threads=kw.get("n_threads"), backend=backend),
        "IndexPQ": lambda **kw: pqkit.IndexPQ(kw.get("d", D), kw.get("M", 4), kw.get("nbits", 8),
                                              kw.get("metric", "l2"), n_threads=kw.get("n_threads"),
                                              backend=backend),
        "IndexIVFFlat": lambda **kw: pqkit.IndexIVFFlat(kw.get("d", D), kw.get("nlist", 4),
                                                        kw.get("metric", "l2"),
                                                        n_threads=kw.get("n_threads"),
                                                        backend=backend),
        "IndexIVFPQ": lambda **kw: pqkit.IndexIVFPQ(kw.get("d", D), kw.get("nlist", 4),
                                                    kw.get("M", 4), kw.get("nbits", 8),
                                                    kw.get("metric", "l2"),
                                                    n_threads=kw.get("n_threads"), backend=backend),
        "ProductQuantizer": lambda **kw: pqkit.ProductQuantizer(
            kw.get("d", D), kw.get("M", 4), kw.get("nbits", 8), n_threads=kw.get("n_threads"),
            backend=backend),
        "KMeans": lambda **kw: pqkit.KMeans(kw.get("d", D), kw.get("nlist", 4),
                                            n_threads=kw.get("n_threads"), backend=backend),
    }
    for name, ctor in ctors.items():
        for label, kw, error, match in [
            ("d=0", {"d": 0}, ValueError, "d must be >= 1, got 0"),
            ("d=-4", {"d": -4}, ValueError, "d must be >= 1, got -4"),
            ("d=16.0", {"d": 16.0}, TypeError, "d must be an int, got float"),
            ("d=True", {"d": True}, TypeError, "d must be an int, got bool"),
            ("n_threads=0", {"n_threads": 0}, ValueError, "n_threads must be >= 1, got 0"),
            ("n_threads='2'", {"n_threads": "2"}, TypeError, "n_threads must be an int"),
        ]:
            add(f"{name}({label})", lambda ctor=ctor, kw=kw: ctor(**kw), error, match)
        if name.startswith("Index"):
            add(f"{name}(metric='L2')", lambda ctor=ctor: ctor(metric="L2"), ValueError,
                "names are lower case: use 'l2'")
            add(f"{name}(metric=None)", lambda ctor=ctor: ctor(metric=None), TypeError,
                "metric must be a str")
        if "PQ" in name or name == "ProductQuantizer":
            for label, kw, error, match in [
                ("d % M != 0", {"M": 3}, ValueError,
                 r"d=16 must be divisible by M=3.*\[1, 2, 4, 8, 16\]"),
                ("M=0", {"M": 0}, ValueError, "M must be >= 1, got 0"),
                ("nbits=0", {"nbits": 0}, ValueError, r"nbits must be in \[1, 16\], got 0"),
                ("nbits=17", {"nbits": 17}, ValueError, r"nbits must be in \[1, 16\], got 17"),
                ("nbits=8.0", {"nbits": 8.0}, TypeError, "nbits must be an int"),
            ]:
                add(f"{name}({label})", lambda ctor=ctor, kw=kw: ctor(**kw), error, match)
        if "IVF" in name or name == "KMeans":
            key = "k" if name == "KMeans" else "nlist"
            add(f"{name}({key}=0)", lambda ctor=ctor: ctor(nlist=0), ValueError,
                f"{key} must be >= 1, got 0")
            if name != "KMeans":
                add(f"{name}(nlist=10**12: beyond memory)", lambda ctor=ctor: ctor(nlist=10**12),
                    ValueError, "nlist=1000000000000 inverted lists needs .* GiB, more than")
    for label, args, error, match in [
        ("d % M", (D, "PQ3"), ValueError, "divisible by M=3"),
        ("nbits 0", (D, "PQ4x0"), ValueError, r"nbits must be in \[1, 16\], got 0"),
        ("nbits 17", (D, "IVF4,PQ4x17"), ValueError, r"nbits must be in \[1, 16\], got 17"),
        ("nlist 0", (D, "IVF0,Flat"), ValueError, "nlist must be >= 1, got 0"),
        ("nlist beyond memory", (D, "IVF99999999999,Flat"), ValueError, "more than this machine"),
        ("unknown", (D, "HNSW32"), ValueError, "cannot parse index description 'HNSW32'.*Flat"),
        ("None", (D, None), TypeError, "description must be a str"),
        ("d=0", (0, "Flat"), ValueError, "d must be >= 1"),
        ("metric", (D, "Flat", "euclid"), ValueError, "metric must be one of"),
    ]:
        add(f"index_factory({label})", lambda args=args: pqkit.index_factory(*args), error, match)

    # the quantizer
    def pq(ready=True, nbits=4):
        quantizer = pqkit.ProductQuantizer(D, 4, nbits, backend=backend)
        return quantizer.set_codebooks(trained[1]) if ready else quantizer
    codes = pq().encode(q)
    for label, bad, error, match in _bad_vectors(q):
        add(f"ProductQuantizer.encode({label})", lambda bad=bad: pq().encode(bad), error, match)
        add(f"ProductQuantizer.distance_table({label})", lambda bad=bad: pq().distance_table(bad),
            error, match)
    for label, call, error, match in [
        ("encode untrained", lambda: pq(False).encode(q), ValueError, "not trained"),
        ("decode untrained", lambda: pq(False).decode(codes), ValueError, "not trained"),
        ("table untrained", lambda: pq(False).distance_table(q), ValueError, "not trained"),
        ("train too few points", lambda: pq(False).train(q), ValueError,
         r"needs at least 16 training vectors \(ksub = 2\*\*nbits.*got 6"),
        ("decode int64 codes", lambda: pq().decode(codes.astype(np.int64)), TypeError,
         "must have dtype uint8, got int64"),
        ("decode list", lambda: pq().decode(codes.tolist()), TypeError, "numpy uint8 array"),
        ("decode wrong width", lambda: pq().decode(codes[:, :1]), ValueError,
         r"shape \(n, 2\).*got \(6, 1\)"),
        ("decode 3-d", lambda: pq().decode(codes[None]), ValueError, r"shape \(n, 2\)"),
        ("unpack wrong width", lambda: pq().unpack_codes(np.zeros((2, 3), np.uint8)), ValueError,
         r"shape \(n, 2\)"),
        ("pack out of range", lambda: pq().pack_codes([[16, 0, 0, 0]]), ValueError,
         r"must lie in \[0, 16\).*\[0, 16\]"),
        ("pack negative", lambda: pq().pack_codes([[-1, 0, 0, 0]]), ValueError, r"\[-1, 0\]"),
        ("pack float", lambda: pq().pack_codes([[1.0, 0, 0, 0]]), TypeError, "integer array"),
        ("pack wrong M", lambda: pq().pack_codes([[1, 0]]), ValueError, r"shape \(n, 4\)"),
        ("table metric", lambda: pq().distance_table(q, "cos"), ValueError,
         "metric must be one of"),
        ("set_codebooks shape", lambda: pq(False).set_codebooks(np.zeros((4, 16, 3), np.float32)),
         ValueError, r"codebooks must have shape \(4, 16, 4\), got \(4, 16, 3\)"),
        ("set_codebooks NaN", lambda: pq(False).set_codebooks(np.full((4, 16, 4), np.nan)),
         ValueError, "NaN or infinite"),
        ("set_codebooks int", lambda: pq(False).set_codebooks(np.zeros((4, 16, 4), np.int8)),
         TypeError, "floating-point.*int8"),
    ]:
        add(f"ProductQuantizer.{label}", call, error, match)
    add("ProductQuantizer.decode(empty)", lambda: pq().decode(np.zeros((0, 2), np.uint8)).shape,
        check=_is((0, D)))
    add("ProductQuantizer.decode(non-contiguous)", lambda: pq().decode(
        np.repeat(codes, 2, axis=0)[::2]), check=_equals(lambda: pq().decode(codes)))

    # k-means
    def km(ready=True):
        kmeans = pqkit.KMeans(D, NLIST, backend=backend)
        return kmeans.set_centroids(trained[0]) if ready else kmeans
    for label, bad, error, match in _bad_vectors(q):
        add(f"KMeans.assign({label})", lambda bad=bad: km().assign(bad), error, match)
        add(f"KMeans.train({label})", lambda bad=bad: km(False).train(bad), error, match)
    for label, call, error, match in [
        ("assign untrained", lambda: km(False).assign(q), ValueError, "KMeans is not trained"),
        ("train n < k", lambda: km(False).train(q), ValueError,
         r"k-means with k=8 needs at least 8 training vectors .*got 6"),
        ("set_centroids shape", lambda: km(False).set_centroids(np.zeros((2, D))), ValueError,
         r"centroids must have shape \(8, 16\), got \(2, 16\)"),
        ("niter=0", lambda: pqkit.KMeans(D, 4, niter=0), ValueError, "niter must be >= 1"),
        ("seed=-1", lambda: pqkit.KMeans(D, 4, seed=-1), ValueError, "seed must be in"),
        ("max_points_per_centroid=0", lambda: pqkit.KMeans(D, 4, max_points_per_centroid=0),
         ValueError, "max_points_per_centroid must be >= 1"),
    ]:
        add(f"KMeans.{label}", call, error, match)

    # save / load
    index = make("IVFPQ", fill=100)
    good = tmp_path / f"good-{backend}.pqkit"
    index.save(good)
    text = tmp_path / "text.txt"
    text.write_text("not an index\n" * 10)
    empty_file = tmp_path / "empty.pqkit"
    empty_file.write_bytes(b"")
    for label, call, error, match in [
        ("load(missing)", lambda: pqkit.load(tmp_path / "missing.pqkit"), FileNotFoundError,
         "missing.pqkit"),
        ("load(directory)", lambda: pqkit.load(tmp_path), IsADirectoryError, "directory"),
        ("load(int)", lambda: pqkit.load(3), TypeError, "path must be a str or os.PathLike"),
        ("load(None)", lambda: pqkit.load(None), TypeError, "path must be a str"),
        ("load(text file)", lambda: pqkit.load(text), ValueError,
         "corrupted or not a pqkit file: bad magic"),
        ("load(empty file)", lambda: pqkit.load(empty_file), ValueError,
         r"corrupted or not a pqkit file: 0 bytes is shorter"),
        ("save(None)", lambda: index.save(None), TypeError, "path must be a str"),
        ("save(missing directory)", lambda: index.save(tmp_path / "no" / "x.pqkit"),
         FileNotFoundError, "does not exist"),
        ("save(directory)", lambda: index.save(tmp_path), IsADirectoryError, ""),
        ("index_from_bytes(str)", lambda: _io.index_from_bytes("PQKIT"), TypeError,
         "data must be bytes"),
        ("index_from_bytes(garbage)", lambda: _io.index_from_bytes(b"\0" * 100), ValueError,
         "bad magic"),
    ]:
        add(label, call, error, match)
    add("load(good)", lambda: pqkit.load(good).search(q, 3), check=_equals(
        lambda: index.search(q, 3)))

    # mapped loads, and what a mapped (read-only) index refuses
    version_1 = Path(__file__).parent / "corpus" / "ivfpq8-l2.pqkit"
    for label, call, error, match in [
        ("load(text file, mmap)", lambda: pqkit.load(text, mmap=True), ValueError,
         "corrupted or not a pqkit file: bad magic"),
        ("load(empty file, mmap)", lambda: pqkit.load(empty_file, mmap=True), ValueError,
         r"0 bytes is shorter"),
        ("load(mmap='yes')", lambda: pqkit.load(good, mmap="yes"), TypeError,
         "mmap and verify must be bools"),
        ("load(verify=1)", lambda: pqkit.load(good, verify=1), TypeError,
         "mmap and verify must be bools"),
        ("load(version-1 file, mmap)", lambda: pqkit.load(version_1, mmap=True), ValueError,
         r"needs a file of format version 2.*save it again"),
    ]:
        add(label, call, error, match)
    add("load(good, mmap)", lambda: pqkit.load(good, mmap=True).search(q, 3), check=_equals(
        lambda: index.search(q, 3)))
    add("load(good, mmap, verify=False)", lambda: pqkit.load(good, mmap=True, verify=False).search(
        q, 3), check=_equals(lambda: index.search(q, 3)))
    read_only = "mapped read-only from .*pqkit.load\\(path\\), without mmap"
    mapped_calls = [
        ("add", lambda m: m.add(q)), ("add_with_ids", lambda m: m.add_with_ids(q, np.arange(6) + 10**6)),
        ("add_chunks", lambda m: m.add_chunks([q])), ("remove_ids", lambda m: m.remove_ids([0])),
        ("train", lambda m: m.train(base)), ("reset", lambda m: m.reset()),
        ("set_centroids", lambda m: m.set_centroids(trained[0])),
        ("pq.set_codebooks", lambda m: m.pq.set_codebooks(trained[2])),
        ("merge_from(into mapped)", lambda m: m.merge_from(make("IVFPQ", fill=5), add_id=10**6)),
        ("merge_from(mapped other)", lambda m: make("IVFPQ").merge_from(m)),
    ]
    for label, call in mapped_calls:
        add(f"mapped IVFPQ.{label}", lambda call=call: call(pqkit.load(good, mmap=True)),
            ValueError, read_only if "other" not in label else "mapped read-only .* to merge it")

    # merge_from
    for kind in KINDS:
        other_kind = "Flat" if kind != "Flat" else "PQ"
        for label, call, error, match in [
            ("not an index", lambda kind=kind: make(kind).merge_from(base[:5]), TypeError,
             "other must be a pqkit index, got ndarray"),
            ("itself", lambda kind=kind: (lambda i: i.merge_from(i))(make(kind)), ValueError,
             "other is this index itself"),
            ("add_id=-1", lambda kind=kind: make(kind).merge_from(make(kind), add_id=-1),
             ValueError, r"add_id must be in \[0, 9223372036854775807\], got -1"),
            ("add_id=1.5", lambda kind=kind: make(kind).merge_from(make(kind), add_id=1.5),
             TypeError, "add_id must be an int"),
            ("add_id=True", lambda kind=kind: make(kind).merge_from(make(kind), add_id=True),
             TypeError, "add_id must be an int"),
            ("another type", lambda kind=kind, other_kind=other_kind: make(kind).merge_from(
                make(other_kind)), ValueError, f"differs in type \\(this Index{kind}"),
            ("another metric", lambda kind=kind: make(kind).merge_from(make(kind, metric="ip")),
             ValueError, r"differs in metric \(this 'l2', other 'ip'\)"),
            ("untrained other", lambda kind=kind: make(kind).merge_from(make(kind, ready=False)),
             ValueError if kind != "Flat" else None, "given to merge_from\\(\\) is not trained",
             ),
            ("id clash", lambda kind=kind: make(kind, fill=20).merge_from(make(kind, fill=30)),
             ValueError, r"already in this index: \[0, 1, 2, 3, 4, \.\.\.\] \(20 in all\)"),
            ("ids past 2**63 - 1", lambda kind=kind: make(kind).merge_from(
                make(kind, fill=3), add_id=2**63 - 2), ValueError, "past the largest id"),
        ]:
            if error is None:  # an IndexFlat is always trained: the merge of nothing is fine
                add(f"{kind}.merge_from({label})", call, check=_is(None))
            else:
                add(f"{kind}.merge_from({label})", call, error, match)

        def merged(kind=kind):
            index, other = make(kind, fill=40), make(kind)
            other.add(base[40:100])
            index.merge_from(other, add_id=40)
            return index.ntotal, other.ntotal, index.search(q, 5)

        def whole(kind=kind):
            index = make(kind, fill=100)
            return 100, 0, index.search(q, 5)
        add(f"{kind}.merge_from(good)", merged, check=_equals(whole))
    for kind, label, change, match in [
        ("IVFFlat", "other centroids", lambda i: i.set_centroids(trained[0] + 1), "centroids"),
        ("IVFPQ", "other centroids", lambda i: i.set_centroids(trained[0] + 1), "centroids"),
        ("PQ", "other codebooks", lambda i: i.pq.set_codebooks(trained[1] * 2), "codebooks"),
        ("IVFPQ", "other codebooks", lambda i: i.pq.set_codebooks(trained[2] * 2), "codebooks"),
    ]:
        add(f"{kind}.merge_from({label})", lambda kind=kind, change=change: make(kind).merge_from(
            (lambda o: (change(o), o)[1])(make(kind))), ValueError,
            f"differs in {match} \\(\\d+ of \\d+ values not bit-identical\\)")
    def other_nlist():
        other = pqkit.IndexIVFPQ(D, 2 * NLIST, 4, 4, backend=backend)
        other.set_centroids(np.concatenate([trained[0], trained[0] + 1]))
        other.pq.set_codebooks(trained[2])
        return make("IVFPQ").merge_from(other)
    add("IVFPQ.merge_from(other nlist)", other_nlist, ValueError,
        r"differs in nlist \(this 8, other 16\)")

    # add_chunks
    for label, call, error, match in [
        ("add_chunks(5)", lambda: make("IVFPQ").add_chunks(5), TypeError,
         "chunks must be an iterable of arrays or \\(x, ids\\) pairs, got int"),
        ("add_chunks(3-tuple)", lambda: make("IVFPQ").add_chunks([(q, q, q)]), ValueError,
         "chunk 0 is a tuple of 3 items"),
        ("add_chunks(int vectors)", lambda: make("IVFPQ").add_chunks([q, q.astype(np.int64)]),
         TypeError, "chunk 1 \\(after 6 vectors added .*, which stay\\): x must hold floating"),
        ("add_chunks(float ids)", lambda: make("IVFPQ").add_chunks([(q, np.arange(6.0))]),
         TypeError, "chunk 0 .*ids must"),
        ("add_chunks(progress='yes')", lambda: make("IVFPQ").add_chunks([q], progress="yes"),
         TypeError, "progress must be a bool"),
        ("add_chunks(untrained)", lambda: make("IVFPQ", ready=False).add_chunks([q]), ValueError,
         "chunk 0 .*not trained"),
    ]:
        add(label, call, error, match)
    add("add_chunks(good)", lambda: make("IVFPQ").add_chunks(iter([q, (q, np.arange(6) + 50)])),
        check=_is(12))

    # the notebook-compatible classes (pqkit.compat), where this pqkit has them
    if importlib.util.find_spec("pqkit.compat") is not None:
        from pqkit import compat

        def notebook(cls_name, **kw):
            if cls_name == "CustomIndexPQ":
                return compat.CustomIndexPQ(kw.get("d", D), kw.get("m", 4), kw.get("nbits", 8))
            return compat.CustomIndexIVFPQ(kw.get("d", D), kw.get("m", 4), kw.get("nlist", 4),
                                           kw.get("nbits", 8))
        for cls_name in ("CustomIndexPQ", "CustomIndexIVFPQ"):
            for label, kw, error, match in [
                ("d % m", {"m": 3}, ValueError, "d needs to be a multiple of m"),
                ("nbits=4", {"nbits": 4}, ValueError, "Unsupported number of bits 4"),
                ("d=0", {"d": 0}, ValueError, ""),
            ]:
                add(f"compat.{cls_name}({label})", lambda cls_name=cls_name, kw=kw: notebook(
                    cls_name, **kw), error, match)
            for label, bad, error, match in _bad_vectors(q):
                add(f"compat.{cls_name}.train({label})", lambda cls_name=cls_name, bad=bad:
                    notebook(cls_name).train(bad), error, match)
            add(f"compat.{cls_name}.search(untrained)", lambda cls_name=cls_name: notebook(
                cls_name).search(q, 3), ValueError, "trained first")

    # global settings
    for label, call, error, match in [
        ("set_num_threads(0)", lambda: pqkit.set_num_threads(0), ValueError, "n must be >= 1"),
        ("set_num_threads('2')", lambda: pqkit.set_num_threads("2"), TypeError, "n must be an int"),
        ("set_simd_level('sse9')", lambda: pqkit.set_simd_level("sse9"), ValueError,
         "sse9"),
        ("set_simd_level(2)", lambda: pqkit.set_simd_level(2), TypeError, "level must be a str"),
        ("set_backend('gpu')", lambda: pqkit.set_backend("gpu"), ValueError,
         r"backend must be one of \['cpp', 'numba', 'torch'\], got 'gpu'"),
        ("set_backend(1)", lambda: pqkit.set_backend(1), TypeError, "backend must be a str"),
    ]:
        add(label, call, error, match)
    return cases


def _run_case(case: Case):
    """None if the case behaves as the table says, else a description of what went wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            result = case.call()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # anything else is judged against the table
        if case.error is None:
            return f"{case.name}: expected a result, got {type(exc).__name__}: {exc}"
        if type(exc) is not case.error:
            return (f"{case.name}: expected {case.error.__name__}, got "
                    f"{type(exc).__name__}: {exc}")
        if not re.search(case.match, str(exc), flags=re.S):
            return f"{case.name}: message {str(exc)!r} does not match {case.match!r}"
        return None
    if case.error is not None:
        return f"{case.name}: expected {case.error.__name__}, got a result"
    try:
        case.check(result)
    except AssertionError as exc:
        return f"{case.name}: wrong result: {exc}"
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_bad_input_gets_a_typed_error_or_a_documented_result(
        backend, data, trained, tmp_path, record_property, capsys):
    previous_threads = pqkit.get_num_threads()
    previous_simd = pqkit.simd_level()
    previous_backend = pqkit.get_backend()
    try:
        cases = build_cases(backend, data, trained, tmp_path)
        problems = [p for p in map(_run_case, cases) if p is not None]
    finally:
        pqkit.set_num_threads(None if previous_threads == (os.cpu_count() or 1)
                              else previous_threads)
        pqkit.set_simd_level(previous_simd)
        pqkit.set_backend(previous_backend)
    n_errors = sum(case.error is not None for case in cases)
    record_property("bad_input_cases", len(cases))
    with capsys.disabled():
        print(f"\n[{backend}] bad-input cases tried: {len(cases)} ({n_errors} typed errors, "
              f"{len(cases) - n_errors} documented results), misbehaving: {len(problems)}")
    assert len(cases) >= 900, "the table lost rows"
    assert not problems, "\n".join(problems)
