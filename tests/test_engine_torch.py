"""The torch engine against the compiled core, on the CPU (the code path a GPU runs).

Each index is built once on the compiled core and moved with ``Index.to("torch", device)``
(same centroids, codebooks and codes), then both answer the same searches.

The tolerance. The torch engine sums whole-vector distances (exact search, coarse probing)
through a matrix product, in the order the library picks, so a distance can differ from the
core's by float32 rounding of a sum of ``d`` terms: at most about ``d * 2**-24`` of the terms'
magnitude. With ``d <= 1024`` that is below ``6e-5``; the tests allow
``RTOL = 1e-4`` of each query's scale, ``max_j |D[q, j]| + ||q||^2`` (the magnitude of the
terms of an L2 key through norms, and a bound of every inner product for unit-scale data).
Ids must be equal except at near-ties: where the two engines' ids differ at a rank, both
engines' distances at that rank must agree within the tolerance (two candidates whose keys
are that close may come out in either order), and such ranks stay rare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pqkit
from pqkit import engine
from tests.conftest import skip_or_fail

RTOL = 1e-4
MAX_TIE_FRACTION = 0.02

def _torch_available() -> bool:
    return "torch" in engine.available_backends()


@pytest.fixture(scope="module", autouse=True)
def _needs_torch():
    if not _torch_available():
        skip_or_fail("the gpu extra is not installed: pip install 'pqkit[gpu]'")


DEVICE = "cpu"


# ------------------------------------------------------------------------------ data, checks
def _data(d=32, n=2000, nq=25, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)).astype(np.float32) * 2
    x = (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, d))).astype(np.float32)
    q = (centers[rng.integers(0, 20, nq)] + rng.standard_normal((nq, d))).astype(np.float32)
    return x, q


def assert_parity(q, reference, got, metric="l2"):
    """``got`` (torch) equals ``reference`` (core) up to the stated tolerance and tie rule."""
    (Dr, Ir), (Dg, Ig) = reference, got
    assert Dg.dtype == np.float32 and Ig.dtype == np.int64 and Ig.shape == Ir.shape
    assert np.array_equal(Ir == -1, Ig == -1), "padding differs"
    finite = np.where(np.isfinite(Dr), np.abs(Dr), 0)
    qn = (q.astype(np.float64) ** 2).sum(1) if metric != "cosine" else np.ones(q.shape[0])
    tol = RTOL * (finite.max(1, initial=0) + qn)[:, None]
    both = np.isfinite(Dr)
    assert np.array_equal(both, np.isfinite(Dg))
    err = np.abs(np.where(both, Dr, 0).astype(np.float64) - np.where(both, Dg, 0))
    assert (err <= tol).all(), f"distances differ by up to {err.max()} (tolerance {tol.min()})"
    differ = Ir != Ig
    assert differ.mean() <= MAX_TIE_FRACTION, f"{differ.mean():.3f} of the ids differ"
    # At a rank where the ids differ, the two candidates are a near-tie: each engine's distance
    # of its own candidate is within the tolerance of the other's.
    assert (err[differ] <= np.broadcast_to(tol, differ.shape)[differ]).all()


def assert_range_parity(reference, got, radius, metric):
    """Range results: the same sets except ids whose distance is within the tolerance of the
    radius; the distances of common ids within it."""
    (lr, Dr, Ir), (lg, Dg, Ig) = reference, got
    assert lr.shape == lg.shape and lg[0] == 0 and lg[-1] == Ig.size == Dg.size
    for qi in range(lr.size - 1):
        a = dict(zip(Ir[lr[qi]:lr[qi + 1]].tolist(), Dr[lr[qi]:lr[qi + 1]].tolist()))
        b = dict(zip(Ig[lg[qi]:lg[qi + 1]].tolist(), Dg[lg[qi]:lg[qi + 1]].tolist()))
        tol = RTOL * (max([abs(v) for v in a.values()], default=0) + abs(radius) + 1)
        for i in a.keys() & b.keys():
            assert abs(a[i] - b[i]) <= tol
        for i in a.keys() ^ b.keys():
            assert abs(a.get(i, b.get(i)) - radius) <= tol, (qi, i)
        keys = Dg[lg[qi]:lg[qi + 1]] * (1 if metric == "l2" else -1)
        assert (np.diff(keys) >= 0).all(), "range results not sorted by distance"


def _build(kind, metric, nbits=8, d=32, seed=0):
    x, q = _data(d=d, seed=seed)
    if kind == "flat":
        index = pqkit.IndexFlat(d, metric, backend="cpp")
    elif kind == "pq":
        index = pqkit.IndexPQ(d, 8, nbits, metric, backend="cpp")
    elif kind == "ivfpq":
        index = pqkit.IndexIVFPQ(d, 16, 8, nbits, metric, nprobe=4, backend="cpp")
    elif kind == "ivfflat":
        index = pqkit.IndexIVFFlat(d, 16, metric, nprobe=4, backend="cpp")
    elif kind == "sq":
        index = pqkit.IndexScalarQuantizer(d, metric, backend="cpp")
    elif kind == "refine_sq":  # re-ranked from 8-bit scalar-quantizer codes
        base = pqkit.IndexIVFPQ(d, 16, 8, nbits, metric, nprobe=4, backend="cpp")
        index = pqkit.IndexRefine(base, 4.0, pqkit.IndexScalarQuantizer(d, metric, backend="cpp"))
    else:  # refine
        base = pqkit.IndexIVFPQ(d, 16, 8, nbits, metric, nprobe=4, backend="cpp")
        index = pqkit.IndexRefine(base, k_factor=4.0)
    with _quiet():
        index.train(x)
    index.add(x)
    return index, x, q


class _quiet:
    """Small training sets warn that centroids may be poor; the tests accept that."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", pqkit.TrainingWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


KINDS = [("flat", 8), ("pq", 4), ("pq", 8), ("ivfpq", 4), ("ivfpq", 8), ("ivfflat", 8),
         ("refine", 4), ("refine", 8), ("sq", 8), ("refine_sq", 4)]
METRICS = ["l2", "ip", "cosine"]


def check_search_parity(kind, nbits, metric, device):
    """Every search form of one index on the core and on the torch engine of ``device``."""
    ref, x, q = _build(kind, metric, nbits)
    moved = ref.to("torch", device=device)
    assert moved.backend == "torch" and moved.device == str(engine.core("torch", device).device)
    assert moved.ntotal == ref.ntotal and type(moved) is type(ref)
    if kind in ("refine", "refine_sq"):
        check_refine(q, ref, moved, metric)
        return ref, moved, x, q
    assert_parity(q, ref.search(q, 10), moved.search(q, 10), metric)
    assert_parity(q[:1], ref.search(q[:1], 7), moved.search(q[:1], 7), metric)
    assert_parity(q, ref.search(q, 3000), moved.search(q, 3000), metric)  # padded rows
    allow = pqkit.IDSelectorBatch(np.arange(0, x.shape[0], 3))
    assert_parity(q, ref.search(q, 10, filter=allow), moved.search(q, 10, filter=allow), metric)
    rng = np.random.default_rng(1)
    per_query = pqkit.IDSelectorPerQuery([rng.choice(x.shape[0], 50, replace=False)
                                          for _ in range(q.shape[0])])
    D, I = moved.search(q, 10, filter=per_query)
    for qi in range(q.shape[0]):
        assert set(I[qi][I[qi] >= 0]) <= set(per_query.ids[per_query.offsets[qi]:
                                                           per_query.offsets[qi + 1]])
    assert_parity(q, ref.search(q, 10, filter=per_query), (D, I), metric)
    if kind in ("ivfpq", "ivfflat", "refine"):
        assert_parity(q, ref.search(q, 10, nprobe=2), moved.search(q, 10, nprobe=2), metric)
    if kind in ("ivfpq", "ivfflat"):
        few = pqkit.IDSelectorBatch(np.arange(0, x.shape[0], 97))
        assert_parity(q, ref.search(q, 10, nprobe=1, max_probe=16, filter=few),
                      moved.search(q, 10, nprobe=1, max_probe=16, filter=few), metric)
    D0, _ = ref.search(q, 5)
    radius = float(np.median(D0[:, -1]))
    assert_range_parity(ref.range_search(q, radius), moved.range_search(q, radius), radius,
                        "l2" if metric == "l2" else "ip")
    return ref, moved, x, q


def check_refine(q, ref, moved, metric):
    """IndexRefine: the core ranks the base's candidates by its byte-quantized tables'
    estimates, the torch engine by exact ADC keys (as the Numba engine does), so a candidate
    list can differ and with it, rarely, a refined result. An id both return has the same exact
    distance (within the tolerance), the results overlap almost entirely, and the same
    candidates reach the same refined result (the second stage alone)."""
    for params in ({}, {"nprobe": 2}, {"k_factor": 8.0}):
        (Dr, Ir), (Dg, Ig) = ref.search(q, 10, **params), moved.search(q, 10, **params)
        overlap = np.mean([len(set(Ir[i]) & set(Ig[i])) / 10 for i in range(q.shape[0])])
        assert overlap >= 0.9, overlap
        for i in range(q.shape[0]):
            mine = dict(zip(Ig[i].tolist(), Dg[i].tolist()))
            for j, dist in zip(Ir[i].tolist(), Dr[i].tolist()):
                if j in mine:
                    assert abs(mine[j] - dist) <= RTOL * (abs(dist) + 1)
    xq = ref._prepare(q)  # rerank takes converted queries (normalised for "cosine")
    candidates = ref.base_index.search(q, 40)[1]
    assert_parity(xq, ref.rerank(xq, candidates, 10), moved.rerank(xq, candidates, 10), metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind, nbits", KINDS)
def test_torch_engine_searches_as_the_core(kind, nbits, metric):
    check_search_parity(kind, nbits, metric, DEVICE)


# ------------------------------------------------------------------------------ moving, files
@pytest.mark.parametrize("kind, nbits", [("flat", 8), ("pq", 4), ("ivfpq", 4), ("ivfpq", 8),
                                         ("refine", 8)])
def test_to_round_trip_keeps_the_index_and_its_file(tmp_path, kind, nbits):
    ref, x, q = _build(kind, "l2", nbits)
    moved = ref.to("torch", device=DEVICE)
    back = moved.to("cpp")
    assert back.backend == "cpp" and back.device is None
    D, I = ref.search(q, 10)
    D2, I2 = back.search(q, 10)
    assert np.array_equal(I, I2) and np.array_equal(D, D2)  # the core again: bit for bit
    paths = [tmp_path / f"{name}.pqkit" for name in ("cpp", "torch", "back")]
    for index, path in zip((ref, moved, back), paths):
        index.save(path)
    data = [p.read_bytes() for p in paths]
    assert data[0] == data[1] == data[2]
    loaded = pqkit.load(paths[1]).to("torch", device=DEVICE)
    assert_parity(q, ref.search(q, 10), loaded.search(q, 10))


def test_an_index_built_on_torch_adds_and_searches_as_the_core():
    """Train, add, remove and search on the torch engine; the core on the same state agrees,
    and the codes added by each engine are the same but for near-ties."""
    x, q = _data()
    with _quiet():
        index = pqkit.IndexIVFPQ(32, 16, 8, 4, "l2", nprobe=4, backend="torch",
                                 device=DEVICE).train(x)
    index.add(x[:1500])
    index.add(x[1500:])
    assert index.remove_ids(np.arange(0, 100)) == 100 and index.ntotal == 1900
    core = index.to("cpp")
    assert_parity(q, core.search(q, 10), index.search(q, 10))
    # The same codebooks encode alike on both engines.
    same = pqkit.IndexIVFPQ(32, 16, 8, 4, "l2", nprobe=4, backend="cpp")
    same.set_centroids(index.centroids)
    same.pq.set_codebooks(index.pq.codebooks)
    same.add(x)
    fresh = same.to("torch", device=DEVICE)
    fresh.reset()
    fresh.add(x)
    assert np.mean(same.pq.encode(x) == fresh.pq.encode(x)) >= 0.999
    assert_parity(q, same.search(q, 10), fresh.search(q, 10))
    # Recall of the torch-trained index against exact search is that of an IVF-PQ index.
    exact = pqkit.IndexFlat(32, backend="cpp")
    exact.add(x)
    _, gt = exact.search(q, 1)
    _, got = fresh.search(q, 10)
    assert np.mean([gt[i, 0] in got[i] for i in range(q.shape[0])]) >= 0.6


def test_kmeans_on_torch_trains_as_well_as_the_core():
    """Another random stream, so other local optima: over a few seeds the objectives are
    comparable, and each is the sum of the squared distances to the final assignment's
    centroids at the last iteration."""
    x, _ = _data(n=3000)
    ours, cores = [], []
    for seed in range(4):
        cores.append(pqkit.KMeans(32, 20, seed=seed, backend="cpp").train(x).objective)
        b = pqkit.KMeans(32, 20, seed=seed, backend="torch", device=DEVICE).train(x)
        assert b.centroids.shape == (20, 32) and b.centroids.dtype == np.float32
        ours.append(b.objective)
    assert np.mean(ours) <= 1.2 * np.mean(cores), (ours, cores)
    a = pqkit.KMeans(32, 20, seed=3, backend="cpp").train(x)
    Da, Ia = a.assign(x[:200])
    labels, dist = engine.core("torch", DEVICE).coarse_assign(x[:200], a.centroids, "l2", 1)
    assert np.mean(labels == Ia) >= 0.99
    assert np.allclose(dist, Da, rtol=1e-4, atol=1e-3)


def test_engine_calls_agree_with_the_core():
    """Codes, packing, tables, the IVF-PQ bias and mapped (external) lists."""
    core, te = engine.core("cpp"), engine.core("torch", DEVICE)
    x, q = _data(n=1000)
    for nbits in (1, 4, 5, 8, 12):
        rng = np.random.default_rng(nbits)
        idx = rng.integers(0, 1 << nbits, (50, 6)).astype(np.int32)
        packed = core.pq_pack_codes(idx, nbits)
        assert np.array_equal(te.pq_pack_codes(idx, nbits), packed)
        assert np.array_equal(te.pq_unpack_codes(packed, 6, nbits), idx)
    with pytest.raises(ValueError, match="0..15"):
        te.pq_pack_codes(np.full((1, 2), 16, dtype=np.int32), 4)
    cb = core.pq_train(x, 8, 4, 10, 1, 256, 1)
    pc, pt = core.PQCodebooks(cb, 4), te.PQCodebooks(cb, 4)
    codes = core.pq_encode(x, pc, 1)
    assert np.array_equal(te.pq_encode(x, pt, 1), codes)
    assert np.array_equal(te.pq_decode(codes, pt, 1), core.pq_decode(codes, pc, 1))
    for metric in ("l2", "ip"):
        assert np.allclose(te.pq_distance_tables(q, pt, metric, 1),
                           core.pq_distance_tables(q, pc, metric, 1), rtol=1e-5, atol=1e-5)
    cents = x[:16].copy()
    cc, ct = core.CoarseQuantizer(cents, "l2"), te.CoarseQuantizer(cents, "l2")
    lists = np.arange(x.shape[0], dtype=np.int64) % 16
    assert np.allclose(te.ivfpq_code_bias(codes, lists, ct, pt, 1),
                       core.ivfpq_code_bias(codes, lists, cc, pc, 1), rtol=1e-4, atol=1e-3)
    owned = core.InvertedLists(16, pc.code_size, "blocked", False)
    owned.add(lists, np.arange(x.shape[0], dtype=np.int64) * 3, codes)
    sizes, ids, blocks, _ = owned.export_blocked()
    external = te.external_lists(16, pc.code_size, "blocked", sizes, ids, blocks)
    assert external.read_only and external.ntotal == x.shape[0]
    with pytest.raises(ValueError, match="read-only"):
        external.remove_ids(ids[:1])
    for a, b in zip(external.export_blocked()[:3], (sizes, ids, blocks)):
        assert np.array_equal(a, b)
    cip, tip = core.CoarseQuantizer(cents, "ip"), te.CoarseQuantizer(cents, "ip")
    assert_parity(q, core.ivfpq_search(q, cip, pc, owned, 3, 10, "ip", 1),
                  te.ivfpq_search(q, tip, pt, external, 3, 10, "ip", 1), "ip")
    got = external.locate(ids[[5, 700]])
    want = owned.locate(ids[[5, 700]])
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


# ------------------------------------------------------------------------------ errors, imports
def test_cuda_asked_for_and_absent_is_a_clear_error(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for make in (lambda: pqkit.IndexFlat(8, device="cuda"),
                 lambda: pqkit.IndexIVFPQ(8, 4, 2, backend="torch", device="cuda:0"),
                 lambda: pqkit.IndexFlat(8, backend="cpp").to("torch", device="cuda")):
        with pytest.raises(ValueError, match=r"no CUDA device.*pqkit\[gpu\]"):
            make()
    with pytest.raises(ValueError, match="needs the torch engine"):
        pqkit.IndexFlat(8, backend="cpp", device="cuda")
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        pqkit.IndexFlat(8, backend="torch", device="tpu")
    with pytest.raises(TypeError, match="device must be"):
        pqkit.IndexFlat(8, backend="torch", device=3)


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    for name in [m for m in sys.modules if m.startswith("pqkit.engine.torch")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(engine, "_modules", {k: v for k, v in engine._modules.items()
                                             if k != "torch"})
    monkeypatch.setattr(engine, "_errors", {})
    with pytest.raises(ValueError, match=r"pip install 'pqkit\[gpu\]'"):
        pqkit.IndexFlat(8, backend="torch")
    assert "torch" not in engine.available_backends()


def test_import_pqkit_stays_torch_free():
    code = ("import sys, numpy as np, pqkit\n"
            "i = pqkit.IndexIVFPQ(8, 2, 2, 4, backend='cpp')\n"
            "assert 'torch' not in sys.modules, 'pqkit imported torch'\n")
    # the pqkit this test session imported (an installed copy or the source tree)
    env = dict(os.environ, PYTHONPATH=str(Path(pqkit.__file__).resolve().parent.parent))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
