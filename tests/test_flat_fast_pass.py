"""Exact search's fast pass (FMA ranking, exact recomputation of the candidates within the
rounding-error bound, cpp/search/flat.cpp): results equal the scalar level's, bit for bit, at every
SIMD level and thread count, and the Numba engine's, on adversarial near-ties and magnitudes near
the validation bound |v| <= sqrt(2**120 / d)."""

from __future__ import annotations

import numpy as np
import pytest

import pqkit

LEVELS = pqkit.available_simd_levels()
DIMS = (1, 2, 15, 16, 17, 50, 128, 300, 784, 1280)


def _near_ties(d: int, n: int, scale: float, seed: int) -> tuple:
    """Rows at equal or near-equal distance (and inner product) from the queries.

    Sign patterns of one magnitude vector have equal norms and, against a query on an axis,
    equal or mirrored inner products; duplicates tie exactly; rows one ulp apart and rows scaled
    by (1 +- few ulps) sit within the fast pass's rounding error of each other.
    """
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(0.5, 1.0, d).astype(np.float32)
    signs = rng.choice(np.float32([-1.0, 1.0]), size=(n // 4, d))
    rows = [signs * magnitude]
    base = rng.standard_normal((n // 8, d)).astype(np.float32)
    rows.append(np.repeat(base[:4], 4, axis=0))                                 # exact duplicates
    rows.append(np.nextafter(base, np.float32(np.inf)))                           # one ulp away
    rows.append(base * np.float32(1 + 2.0 ** -22))                                # a few ulps in norm
    # a cloud of rows within a few ulps of one row: their exact keys differ by rounding alone,
    # so the fast pass's order among them differs from the exact one
    cloud = np.repeat(base[:1], n // 4, axis=0)
    for _ in range(3):
        step = rng.choice([-np.inf, np.inf], size=cloud.shape).astype(np.float32)
        cloud = np.where(rng.random(cloud.shape) < 0.5, np.nextafter(cloud, step), cloud)
    rows.append(cloud.astype(np.float32))
    rows.append(rng.standard_normal((n - sum(len(r) for r in rows), d)).astype(np.float32))
    data = np.concatenate(rows).astype(np.float32)
    queries = np.concatenate([
        np.eye(d, dtype=np.float32)[: min(d, 3)] * magnitude[: min(d, 3), None].max(),
        data[n // 4: n // 4 + 3],                                                 # a duplicated row
        base[:3],
        base[:1] + rng.standard_normal((4, d)).astype(np.float32),                 # near the cloud
        rng.standard_normal((5, d)).astype(np.float32),
        np.zeros((1, d), np.float32),
    ]).astype(np.float32)
    limit = np.float32(np.sqrt(2.0 ** 120 / d))
    peak = max(float(np.abs(data).max()), float(np.abs(queries).max()))
    factor = np.float32(scale * limit / peak)
    return (data * factor).astype(np.float32), (queries * factor).astype(np.float32)


def _results(index, queries, k, radius, options=({},)) -> list:
    out = []
    for kwargs in options:  # per-call search parameters (filters, widened probing)
        out += list(index.search(queries, k, **kwargs))
        out += list(index.search(queries[:1], k, **kwargs))
        out += list(index.search(queries[1:3], k, **kwargs))  # a few queries: the fast pass without packing
    if radius is not None:
        out += list(index.range_search(queries, radius))
    return out


def _all_levels_and_threads(make_index, queries, k, radius, options=({},)) -> dict:
    previous_level = pqkit.simd_level()
    core = pqkit.engine.core("cpp")
    results = {}
    try:
        for level in LEVELS:
            pqkit.set_simd_level(level)
            index = make_index()
            for threads in (1, 2, 3):
                index.n_threads = threads
                results[(level, threads)] = _results(index, queries, k, radius, options)
            # one query split over threads at any size
            split_before = core._set_min_split_bytes(0)
            try:
                index.n_threads = 2
                results[(level, "split")] = _results(index, queries, k, radius, options)
            finally:
                core._set_min_split_bytes(split_before)
    finally:
        pqkit.set_simd_level(previous_level)
    return results


def _assert_identical(results: dict, label: str) -> None:
    reference = results[("scalar", 1)]
    for key, arrays in results.items():
        assert len(arrays) == len(reference)
        for i, (got, want) in enumerate(zip(arrays, reference)):
            np.testing.assert_array_equal(got, want, err_msg=f"{label}: {key} output {i}")


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("scale", [1e-3, 0.999])
def test_near_ties_identical_across_levels_and_threads(d, metric, scale):
    n = 600 if d <= 300 else 260
    data, queries = _near_ties(d, n, scale, seed=d)
    if metric == "cosine":  # the all-zero query has no direction
        queries = queries[:-1]

    def make():
        index = pqkit.IndexFlat(d, metric=metric)
        index.add(data)
        return index

    probe = make()
    D, _ = probe.search(queries, 10)
    radius = float(np.median(D[:, 5])) if metric == "l2" else None
    results = _all_levels_and_threads(make, queries, 10, radius)
    _assert_identical(results, f"d={d} {metric} scale={scale}")
    # the ties are there: some query has several rows at its k-th distance or better equal keys
    assert any(np.unique(row).size < row.size for row in results[("scalar", 1)][0])


@pytest.mark.parametrize("d", [64, 128, 300, 1280])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("scale", [1e-3, 0.999])
def test_ivf_flat_list_scan_identical_across_levels_and_threads(d, metric, scale):
    """IVF-Flat's list scan takes its own fast pass (FMA values, exact keys for the rows within
    the bound, cpp/search/ivf.cpp) from d = 64: batch, single queries, a probe split over threads,
    range search, filters and widened probing equal the scalar level's."""
    n = 600 if d <= 300 else 320
    data, queries = _near_ties(d, n, scale, seed=d + 3)
    if metric == "cosine":
        queries = queries[:-1]
    allowed = np.arange(0, n, 3)

    def make():
        index = pqkit.IndexIVFFlat(d, 8, metric=metric, nprobe=4, seed=1)
        index.train(data)
        index.add(data)
        return index

    D, _ = make().search(queries, 10)
    radius = float(np.median(D[:, 5]))
    options = ({}, {"filter": allowed, "max_probe": 8})
    results = _all_levels_and_threads(make, queries, 10, radius, options)
    _assert_identical(results, f"IVF-Flat d={d} {metric} scale={scale}")
    assert any(np.unique(row).size < row.size for row in results[("scalar", 1)][0])


@pytest.mark.parametrize("k", [1, 5, 40, 200])
def test_large_and_small_k_with_filters(k):
    d = 128
    data, queries = _near_ties(d, 700, 0.5, seed=5)
    allowed = np.arange(0, 700, 3)
    previous = pqkit.simd_level()
    try:
        outputs = {}
        for level in LEVELS:
            pqkit.set_simd_level(level)
            for metric in ("l2", "ip"):
                index = pqkit.IndexFlat(d, metric=metric)
                index.add(data)
                outputs[(level, metric)] = (index.search(queries, k),
                                            index.search(queries, k, filter=allowed))
        for (level, metric), got in outputs.items():
            want = outputs[("scalar", metric)]
            for (gd, gi), (wd, wi) in zip(got, want):
                np.testing.assert_array_equal(gi, wi, err_msg=f"{level} {metric} k={k}")
                np.testing.assert_array_equal(gd, wd, err_msg=f"{level} {metric} k={k}")
    finally:
        pqkit.set_simd_level(previous)


@pytest.mark.parametrize("d", [50, 300])
def test_coarse_search_and_kmeans_assignment_identical(d):
    """Batched coarse search (IVF probes) and k-means assignment take the fast pass."""
    data, queries = _near_ties(d, 800, 0.01, seed=11)
    previous = pqkit.simd_level()
    outputs = {}
    try:
        for level in LEVELS:
            pqkit.set_simd_level(level)
            for metric in ("l2", "ip"):
                index = pqkit.IndexIVFFlat(d, 20, metric=metric, nprobe=3)
                index.train(data)
                index.add(data)
                km = pqkit.KMeans(d, 20, niter=2, seed=3).train(data)
                outputs[(level, metric)] = [*index.search(queries, 7), km.centroids,
                                            *km.assign(np.concatenate([queries, data[:200]]))]
        for key, got in outputs.items():
            for i, (a, b) in enumerate(zip(got, outputs[("scalar", key[1])])):
                np.testing.assert_array_equal(a, b, err_msg=f"{key} output {i}")
    finally:
        pqkit.set_simd_level(previous)


@pytest.mark.parametrize("d", [17, 128, 784])
def test_numba_engine_gives_the_same_results(d):
    numba = pytest.importorskip("numba")  # noqa: F841  (the twin engine's dependency)
    data, queries = _near_ties(d, 300, 0.999, seed=d + 1)
    for metric in ("l2", "ip"):
        got = {}
        for backend in ("cpp", "numba"):
            index = pqkit.IndexFlat(d, metric=metric, backend=backend)
            index.add(data)
            got[backend] = index.search(queries, 9)
        np.testing.assert_array_equal(got["cpp"][1], got["numba"][1])
        np.testing.assert_array_equal(got["cpp"][0], got["numba"][0])


@pytest.mark.parametrize("d", [64, 128, 300, 784])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 0.999])
def test_single_query_probing_over_half_centroids_identical(d, metric, scale):
    """Coarse centroids of many bytes keep a half-precision copy that the probing of one to
    three queries reads (cpp/search/flat.cpp, VectorSet::keep_half: the bound widened by each
    row's distance to its copy, then exact keys): on near-tie centroids, at magnitudes near the
    validation bound and far below one, the probes, hence the results, equal the scalar
    level's at every level and thread count."""
    rows, queries = _near_ties(d, 256, scale, seed=d + 7)
    if metric == "cosine":
        queries = queries[:-1]
    # Rows on a sphere around one query (equal L2 distance but for float rounding) and on a
    # plane orthogonal to another (equal inner product): their half copies are off by about
    # 2^-12 of their norm, so the half keys' order is not the exact one and only the widened
    # bound recovers it (the near ties above round alike and keep their order).
    rng = np.random.default_rng(d)
    directions = rng.standard_normal((64, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    center = rows[-1].astype(np.float64) / 2  # within the magnitude bound at any scale
    sphere = center + np.linalg.norm(center) / 4 * directions[:32]
    axis = rows[-2].astype(np.float64) / 2
    size = np.linalg.norm(axis)
    axis /= size
    across = directions[32:] - (directions[32:] @ axis)[:, None] * axis
    plane = size * axis + size * across / np.linalg.norm(across, axis=1, keepdims=True)
    rows = np.concatenate([rows[:-64], sphere.astype(np.float32), plane.astype(np.float32)])
    # first: _results searches queries[:1] and queries[1:3] alone (the half copy's callers)
    queries = np.concatenate([center[None], (size * axis)[None], queries]).astype(np.float32)
    data = np.concatenate([rows, rows[::-1] * np.float32(1 - 2.0 ** -10)])
    core = pqkit.engine.core("cpp")
    previous = core._set_half_centroid_bytes(0)  # every coarse quantizer keeps its half copy

    def make():
        index = pqkit.IndexIVFFlat(d, len(rows), metric=metric, nprobe=5)
        index.set_centroids(rows)
        index.add(data)
        return index

    try:
        keeps = make()._core_coarse().keeps_half
        D, _ = make().search(queries, 10)
        radius = float(np.median(D[:, 5]))
        results = _all_levels_and_threads(make, queries, 10, radius, ({}, {"max_probe": 40}))
    finally:
        core._set_half_centroid_bytes(previous)
    assert keeps, "the coarse quantizer kept no half copy"
    _assert_identical(results, f"half centroids d={d} {metric} scale={scale}")
    assert any(np.unique(row).size < row.size for row in results[("scalar", 1)][0])


def test_half_copy_is_kept_from_the_threshold_only():
    core = pqkit.engine.core("cpp")
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((64, 128)).astype(np.float32)  # 32 KiB
    previous = core._set_half_centroid_bytes(64 * 128 * 4)
    try:
        assert core.CoarseQuantizer(centroids, "l2").keeps_half
        assert not core.CoarseQuantizer(centroids[:63], "l2").keeps_half
        wide = centroids.copy()
        wide[3, 5] = np.float32(1e20)  # the power-of-two scale takes it into the half range
        assert core.CoarseQuantizer(wide, "l2").keeps_half
        wide[3, 5] = np.float32(3e38)  # a scale of 2^-113: past the range the bound is kept in
        assert not core.CoarseQuantizer(wide, "l2").keeps_half
    finally:
        core._set_half_centroid_bytes(previous)
