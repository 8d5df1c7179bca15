"""The Numba engine against the C++ core (an independent oracle): same codes, ids, distances.

Codebooks and centroids are trained once by the C++ backend and injected into both engines, so
every difference would be a difference of the encode / table / scan code. Both engines
document the same float operation order (cpp/kernels/kernels.h), so results are compared exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import pqkit
from tests.conftest import IN_CI, clustered_split, skip_or_fail

try:
    import numba  # noqa: F401
except ImportError:
    if IN_CI:  # the test extra brings numba: in CI its absence is an error
        raise
    pytest.skip("the numba extra is not installed: pip install 'pqkit[numba]'",
                allow_module_level=True)

# (d, M): dsub 4 and 8 take the core's direct nearest-centroid path (d < 16), dsub 16 and 20
# the norms path; d = 40 exercises the 16-lane dot products with a tail.
SHAPES = [(16, 4), (32, 4), (40, 2)]
N_BASE, N_QUERY = 1500, 40


def _data(d):
    base, queries = clustered_split(N_BASE, N_QUERY, d, seed=31 + d, n_clusters=12)
    return base, queries


def _assert_same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    differ = int((a != b).sum())
    assert differ == 0, f"{what}: {differ} of {a.size} entries differ between numba and cpp"


def _pq_pair(d, M, nbits, base):
    trained = pqkit.ProductQuantizer(d, M, nbits, niter=4, seed=5, backend="cpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        trained.train(base)
    pair = [pqkit.ProductQuantizer(d, M, nbits, backend=b).set_codebooks(trained.codebooks)
            for b in ("cpp", "numba")]
    return pair


@pytest.mark.parametrize("nbits", [4, 8, 5])
@pytest.mark.parametrize("d,M", SHAPES)
def test_quantizer_codes_decode_and_tables(d, M, nbits):
    base, queries = _data(d)
    cpp, nb = _pq_pair(d, M, nbits, base)
    codes = cpp.encode(base)
    _assert_same(nb.encode(base), codes, "codes")
    _assert_same(nb.decode(codes), cpp.decode(codes), "decode")
    _assert_same(nb.unpack_codes(codes), cpp.unpack_codes(codes), "unpack")
    _assert_same(nb.pack_codes(cpp.unpack_codes(codes)), codes, "pack")
    for metric in ("l2", "ip", "cosine"):
        _assert_same(nb.distance_table(queries, metric), cpp.distance_table(queries, metric),
                     f"{metric} tables")


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_flat_search(metric):
    base, queries = _data(40)
    results = []
    for backend in ("cpp", "numba"):
        index = pqkit.IndexFlat(40, metric=metric, backend=backend)
        index.add(base)
        results.append(index.search(queries, 15))
    for got, want, what in zip(results[1], results[0], ("D", "I")):
        _assert_same(got, want, f"flat {metric} {what}")


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_rerank(metric):
    """The compiled exact re-ranking (IndexRefine's second stage), with padding and custom ids."""
    base, queries = _data(40)
    rng = np.random.default_rng(3)
    rows = rng.integers(-1, base.shape[0], size=(queries.shape[0], 30))
    rows[:, 25:] = -1  # padding, as a base index returns it
    ids = np.where(rows >= 0, 1000 + 7 * rows, -1)
    results = [pqkit.engine.core(backend).rerank(queries, base, rows, ids, 12, metric, 2)
               for backend in ("cpp", "numba")]
    for got, want, what in zip(results[1], results[0], ("D", "I")):
        _assert_same(got, want, f"rerank {metric} {what}")
    D, I = results[0]
    pair = ((queries[:, None, :] - base[rows]) ** 2).sum(-1) if metric == "l2" else \
        -(queries[:, None, :] * base[rows]).sum(-1)
    pair = np.where(rows >= 0, pair, np.inf)
    best = np.sort(pair, axis=1)[:, :12]
    np.testing.assert_allclose(D if metric == "l2" else -D, best, rtol=1e-5, atol=1e-4)
    assert np.isin(I, ids).all() and not (I == -1).any()
    for backend in ("cpp", "numba"):
        engine = pqkit.engine.core(backend)
        bad = rows.copy()
        bad[3, 4] = base.shape[0]
        with pytest.raises(ValueError, match="outside -1"):
            engine.rerank(queries, base, bad, ids, 5, metric, 1)
        with pytest.raises((TypeError, ValueError)):
            engine.rerank(queries, base, rows.astype(np.int32), ids, 5, metric, 1)


@pytest.mark.parametrize("nbits", [8, 5])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_rerank_pq(metric, nbits):
    """Re-ranking with PQ codes (an IndexPQ refine store): both engines decode the candidates and
    give the same keys, equal to the stored-float re-ranking of the decoded vectors."""
    d, M = 32, 8
    base, queries = _data(d)
    rng = np.random.default_rng(4)
    rows = rng.integers(-1, base.shape[0], size=(queries.shape[0], 20))
    ids = np.where(rows >= 0, 3 * rows + 1, -1)
    results, decoded = [], None
    for pq in _pq_pair(d, M, nbits, base):
        engine = pqkit.engine.core(pq.backend)
        lists = engine.InvertedLists(1, pq.code_size, "blocked")
        lists.add(np.zeros(base.shape[0], dtype=np.int64), np.arange(base.shape[0], dtype=np.int64), pq.encode(base))
        results.append(engine.rerank_pq(queries, pq._core(), lists, rows, ids, 7, metric, 2))
        decoded = pq.decode(pq.encode(base))
        bad = rows.copy()
        bad[0, 0] = base.shape[0]
        with pytest.raises(ValueError, match="outside -1"):
            engine.rerank_pq(queries, pq._core(), lists, bad, ids, 7, metric, 1)
        wrong = engine.InvertedLists(1, pq.code_size + 1, "blocked")
        with pytest.raises(ValueError, match="one list of codes"):
            engine.rerank_pq(queries, pq._core(), wrong, rows, ids, 7, metric, 1)
    for got, want, what in zip(results[1], results[0], ("D", "I")):
        _assert_same(got, want, f"rerank_pq {metric} {nbits} bits {what}")
    plain = pqkit.engine.core("cpp").rerank(queries, decoded, rows, ids, 7, metric, 1)
    for got, want, what in zip(results[0], plain, ("D", "I")):
        _assert_same(got, want, f"rerank_pq vs rerank of the decoded vectors {what}")


def test_kmeans_assign_and_coarse_assignment():
    base, queries = _data(32)
    centroids = pqkit.KMeans(32, 20, niter=3, backend="cpp").train(base).centroids
    for dims in (32, 8):  # the direct path (d <= 32) at two widths
        out = [pqkit.KMeans(dims, 20, backend=b).set_centroids(centroids[:, :dims])
               .assign(np.ascontiguousarray(base[:, :dims])) for b in ("cpp", "numba")]
        _assert_same(out[1][0], out[0][0], f"assign distances d={dims}")
        _assert_same(out[1][1], out[0][1], f"assign labels d={dims}")


@pytest.mark.parametrize("d", [40, 50, 128, 256, 300])
def test_nearest_centroid_paths_across_chunks(d, simd_level):
    """L2 nearest centroid for d = 33..256 (norms and sequential inner products over transposed
    chunks of centroids) and beyond (dot-product tiles): the same labels and distances at every
    SIMD level, thread count and in Numba; the first of equal centroids wins even when the two
    sit in different chunks; a NaN row gets (-1, +inf)."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((400, d)).astype(np.float32)
    c = rng.standard_normal((3001, d)).astype(np.float32)  # several chunks for every d here
    c[2900] = c[100]
    c[1500] = c[1499]
    x[3], x[4] = c[100], c[1499]
    x[5, 7] = np.nan
    cpp, nb = pqkit.engine.core("cpp"), pqkit.engine.core("numba")
    labels, dist = cpp.coarse_assign(x, c, "l2", 1)
    for got, what in ((cpp.coarse_assign(x, c, "l2", 2), "2 threads"), (nb.coarse_assign(x, c, "l2", 1), "numba")):
        _assert_same(got[0], labels, f"labels d={d} {simd_level} vs {what}")
        _assert_same(got[1], dist, f"distances d={d} {simd_level} vs {what}")
    assert labels[3] == 100 and labels[4] == 1499
    assert labels[5] == -1 and dist[5] == np.inf
    exact = ((x.astype(np.float64)[:, None, :] - c[None].astype(np.float64)) ** 2).sum(-1)
    rows = np.r_[0:3, 6:400]
    np.testing.assert_array_equal(labels[rows], exact[rows].argmin(1))
    np.testing.assert_allclose(dist[rows], exact[rows].min(1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_indexpq_search(nbits, metric):
    base, queries = _data(32)
    cpp_pq, _ = _pq_pair(32, 8, nbits, base)
    results = []
    for backend in ("cpp", "numba"):
        index = pqkit.IndexPQ(32, 8, nbits, metric=metric, backend=backend)
        index.pq.set_codebooks(cpp_pq.codebooks)
        index.add_with_ids(base, np.arange(N_BASE, dtype=np.int64)[::-1] * 3)
        assert index.remove_ids(np.arange(0, 300, 3)) == 100
        results.append(index.search(queries, 20) + (index.reconstruct_n(np.arange(300, 600, 3)),))
    for got, want, what in zip(results[1], results[0], ("D", "I", "reconstruct")):
        _assert_same(got, want, f"IndexPQ nbits={nbits} {metric} {what}")


def _ivf_pair(cls, d, nlist, metric, base, **kwargs):
    """An index per engine with the same injected centroids (and PQ codebooks)."""
    reference = cls(d, nlist, metric=metric, backend="cpp", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        if hasattr(reference, "pq"):
            reference.pq.niter = 4
        reference.train(base)
    pair = []
    for backend in ("cpp", "numba"):
        index = cls(d, nlist, metric=metric, backend=backend, **kwargs)
        index.set_centroids(reference.centroids)
        if hasattr(index, "pq"):
            index.pq.set_codebooks(reference.pq.codebooks)
        index.add(base)
        pair.append(index)
    return pair


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivfflat_search(metric):
    base, queries = _data(16)
    pair = _ivf_pair(pqkit.IndexIVFFlat, 16, 12, metric, base)
    _assert_same(pair[1].list_sizes(), pair[0].list_sizes(), "list sizes")
    for nprobe in (1, 3, 12):
        out = []
        for index in pair:
            index.nprobe = nprobe
            out.append(index.search(queries, 10))
        _assert_same(out[1][0], out[0][0], f"ivfflat {metric} nprobe={nprobe} D")
        _assert_same(out[1][1], out[0][1], f"ivfflat {metric} nprobe={nprobe} I")


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("d,M", [(8, 4), (50, 10), (150, 10), (256, 16), (300, 10)])
def test_coarse_probe_across_transposed_blocks(d, M, metric, simd_level, restore_threads):
    """IVF probing for d <= 256 sums inner products sequentially over transposed groups of 64
    coarse centroids, in blocks of rows (beyond: dot-product tiles). With more lists than one
    block holds (1024 rows for d <= 128, 832 for d = 150, 512 for d = 256), a last group shorter
    than 64 and equal centroids in different blocks: the same ids and
    distances (the coarse distance is part of each IVF-PQ key) at every SIMD level, thread count
    and in Numba, and the first of equal centroids is probed first."""
    rng = np.random.default_rng(d)
    nlist = 1100 if d <= 128 else 600
    centroids = rng.standard_normal((nlist, d)).astype(np.float32)
    centroids[nlist - 50] = centroids[10]  # equal to a centroid of the first block
    base = rng.standard_normal((3000, d)).astype(np.float32)
    base[7] = centroids[10]
    queries = np.concatenate([base[7:8], rng.standard_normal((40, d)).astype(np.float32)])
    flat = pqkit.IndexIVFFlat(d, nlist, metric="l2", backend="cpp")
    flat.set_centroids(centroids)
    flat.add(base)
    flat.nprobe = 1
    D, I = flat.search(queries[:1], 1)
    assert I[0, 0] == 7 and D[0, 0] == 0.0, "the query should probe list 10, the first of two equal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        trained = pqkit.IndexPQ(d, M, 8, backend="cpp")
        trained.pq.niter = 2
        trained.train(base)
    out = []
    for backend, threads in (("cpp", 1), ("cpp", 2), ("numba", 1)):
        pqkit.set_num_threads(threads)
        index = pqkit.IndexIVFPQ(d, nlist, M=M, nbits=8, metric=metric, backend=backend)
        index.set_centroids(centroids)
        index.pq.set_codebooks(trained.pq.codebooks)
        index.add(base)
        index.nprobe = 8
        out.append(index.search(queries, 10))
    for (got_D, got_I), what in zip(out[1:], ("2 threads", "numba")):
        _assert_same(got_I, out[0][1], f"d={d} {metric} {simd_level} ids vs {what}")
        _assert_same(got_D, out[0][0], f"d={d} {metric} {simd_level} distances vs {what}")


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("d,M", [(32, 8), (40, 2)])
def test_ivfpq_search(d, M, nbits, metric):
    base, queries = _data(d)
    pair = _ivf_pair(pqkit.IndexIVFPQ, d, 10, metric, base, M=M, nbits=nbits)
    _assert_same(pair[1].list_sizes(), pair[0].list_sizes(), "list sizes")
    for index in pair:  # removal keeps the order of the remaining codes in each list
        assert index.remove_ids(np.arange(1, N_BASE, 7)) == len(range(1, N_BASE, 7))
    for nprobe in (1, 4, 10):
        out = []
        for index in pair:
            index.nprobe = nprobe
            out.append(index.search(queries, 12))
        _assert_same(out[1][1], out[0][1], f"ivfpq nbits={nbits} {metric} nprobe={nprobe} I")
        _assert_same(out[1][0], out[0][0], f"ivfpq nbits={nbits} {metric} nprobe={nprobe} D")
    _assert_same(pair[1].reconstruct_n(np.arange(0, N_BASE, 7)),
                 pair[0].reconstruct_n(np.arange(0, N_BASE, 7)), "reconstruct")


def test_numba_training_and_thread_count(restore_threads):
    """Numba trains with its own random stream: not equal to cpp, but as good, and the same for
    any thread count; saved indexes load on either engine with the same search results."""
    base, queries = _data(16)
    objectives = {}
    for backend in ("cpp", "numba"):
        km = pqkit.KMeans(16, 24, niter=8, seed=3, backend=backend).train(base)
        objectives[backend] = km.objective
    assert objectives["numba"] < 1.15 * objectives["cpp"], objectives

    outputs = []
    for n_threads in (1, 3):
        index = pqkit.IndexIVFPQ(16, 8, 4, 8, nprobe=3, backend="numba", n_threads=n_threads)
        index.pq.niter = 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            index.train(base)
        index.add(base)
        outputs.append((index.centroids, index.pq.codebooks) + index.search(queries, 5))
    for a, b in zip(*outputs):
        _assert_same(a, b, "numba results with 1 and 3 threads")

    # The file format does not depend on the engine.
    restored = pqkit.io.index_from_bytes(pqkit.io.index_to_bytes(index))
    assert restored.backend == pqkit.get_backend()
    for a, b in zip(restored.search(queries, 5), outputs[1][2:]):
        _assert_same(a, b, "reloaded on the default engine")


def test_backend_selection_is_validated():
    import importlib.util

    torch = ["torch"] if importlib.util.find_spec("torch") is not None else []
    assert pqkit.available_backends() == ["cpp", "numba"] + torch
    with pytest.raises(ValueError, match="backend must be one of"):
        pqkit.IndexFlat(4, backend="gpu")
    with pytest.raises(TypeError, match="backend must be a str"):
        pqkit.KMeans(4, 2, backend=1)
    previous = pqkit.get_backend()
    try:
        pqkit.set_backend("numba")
        assert pqkit.IndexPQ(8, 2).backend == "numba"
        assert pqkit.index_factory(8, "IVF4,PQ2").pq.backend == "numba"
    finally:
        pqkit.set_backend(previous)
    assert pqkit.IndexFlat(4).backend == previous


def _run(code: str, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env))


def test_fallback_when_the_core_cannot_be_imported():
    """With pqkit.engine._core unimportable, import warns (BackendWarning) and everything runs on Numba."""
    proc = _run("""
        import sys, warnings
        sys.modules["pqkit.engine._core"] = None  # makes `import pqkit.engine._core` raise ImportError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import pqkit
        import numpy as np
        assert [w.category.__name__ for w in caught] == ["BackendWarning"], caught
        assert "could not be imported" in str(caught[0].message)
        x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
        index = pqkit.index_factory(8, "IVF4,PQ2x4")
        index.train(x)
        index.add(x)
        D, I = index.search(x[:3], 1)
        print(pqkit.get_backend(), index.backend, pqkit.available_backends(), pqkit.simd_level(),
              I[:, 0].tolist())
        try:
            pqkit.IndexFlat(8, backend="cpp")
        except ValueError as exc:
            print("refused:", "not available" in str(exc))
    """)
    assert proc.returncode == 0, proc.stderr
    import importlib.util

    engines = ["numba"] + (["torch"] if importlib.util.find_spec("torch") is not None else [])
    assert proc.stdout.split("\n")[0] == f"numba numba {engines} scalar [0, 1, 2]"
    assert "refused: True" in proc.stdout


def test_environment_variable_selects_numba_without_warning():
    proc = _run("""
        import warnings
        warnings.simplefilter("error")
        import pqkit
        print(pqkit.get_backend(), pqkit.IndexFlat(4).backend)
    """, PQKIT_BACKEND="numba")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numba", "numba"]


# --------------------------------------------------------------------------- the scalar core
WORKLOAD = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    import pqkit
    warnings.simplefilter("ignore")
    x = np.random.default_rng(3).standard_normal((1200, 16)).astype(np.float32)
    out = {"levels": np.array(pqkit.available_simd_levels()), "level": np.array(pqkit.simd_level())}
    for name in ("Flat", "PQ4x8", "PQ8x4", "IVF8,Flat", "IVF8,PQ4x8", "IVF8,PQ8x4"):
        index = pqkit.index_factory(16, name)
        if hasattr(index, "pq"):
            index.pq.niter = 3
        index.train(x)
        index.add(x)
        if hasattr(index, "nprobe"):
            index.nprobe = 3
        out[name + ".D"], out[name + ".I"] = index.search(x[:50], 5)
        if hasattr(index, "pq"):
            out[name + ".codebooks"] = index.pq.codebooks
    np.savez(sys.argv[1], **out)
    """
)


def _workload(tmp_path, name, prefix=(), **env):
    path = tmp_path / f"{name}.npz"
    proc = subprocess.run([*prefix, sys.executable, "-c", WORKLOAD, str(path)], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def _compare_outputs(got, want, what):
    keys = [k for k in want if k not in ("levels", "level")]
    assert sorted(got) == sorted(want)
    for key in keys:
        _assert_same(got[key], want[key], f"{what}: {key}")


def test_scalar_level_from_the_environment_gives_the_same_results(tmp_path):
    """PQKIT_SIMD=scalar runs the portable kernels (no AVX2/AVX-512 dispatch) bit-identically."""
    best = _workload(tmp_path, "best")
    scalar = _workload(tmp_path, "scalar", PQKIT_SIMD="scalar")
    assert str(scalar["level"]) == "scalar"
    assert str(best["level"]) == pqkit.available_simd_levels()[-1]
    _compare_outputs(scalar, best, "PQKIT_SIMD=scalar vs the best level")


def test_core_on_an_emulated_cpu_without_avx(tmp_path):
    """Under qemu-user with a Nehalem CPU model (no AVX, AVX2, AVX-512 in CPUID) the core
    imports, picks the scalar level and gives the native results.

    QEMU's user mode decodes AVX2 even for CPU models without it, so this proves the run-time
    selection and the import, not the absence of AVX instructions in the scalar path; that is
    checked statically by scripts/check_scalar_isa.py (object files built without -mavx*).
    """
    import shutil

    qemu = shutil.which("qemu-x86_64")
    if qemu is None or not sys.platform.startswith("linux"):
        skip_or_fail("qemu-x86_64 not found: apt-get install qemu-user")
    native = _workload(tmp_path, "native", PQKIT_SIMD="scalar")
    emulated = _workload(tmp_path, "emulated", prefix=(qemu, "-cpu", "Nehalem"))
    assert emulated["levels"].tolist() == ["scalar"]
    assert str(emulated["level"]) == "scalar"
    _compare_outputs(emulated, native, "emulated Nehalem vs native scalar")


def test_no_avx_instructions_outside_the_dispatched_kernels():
    """Static check of the build's object files (scripts/check_scalar_isa.py)."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    builds = sorted(root.glob("build/*/CMakeFiles/_core.dir/cpp"))
    if not builds or shutil.which("objdump") is None:
        skip_or_fail("needs the CMake build directory of _core (build/) and binutils' objdump")
    proc = subprocess.run([sys.executable, str(root / "scripts" / "check_scalar_isa.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 problem(s)" in proc.stdout
