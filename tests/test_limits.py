"""The edges of the value, id and memory ranges.

* Magnitudes: a float vector may hold values up to ``sqrt(2**120 / d)`` (so that no squared
  distance can overflow float32); beyond that ``train``, ``add``, ``search``, ``set_centroids`` and
  ``set_codebooks`` raise ValueError naming the limit, and up to it every index answers as it does
  for the same vectors scaled down (never -1 padding while vectors are stored, never inf).
* Ids: ``add`` after the largest possible id raises ValueError (the id space is exhausted).
* Memory: size checks use what the process may allocate (RLIMIT_AS, the cgroup's limit, physical
  memory), so a search asking for more than ``ulimit -v`` allows raises ValueError, not
  MemoryError.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import pqkit
from pqkit import _validation

D = 16
FACTORIES = ["Flat", "PQ4", "PQ4x4", "IVF8,Flat", "IVF8,PQ4", "IVF8,PQ8x4", "IVF8,PQ4,RFlat"]


def _bound(d: int) -> float:
    return math.sqrt(2.0**120 / d)  # the documented limit, computed independently of pqkit


def _data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, D)) * 4
    x = centers[rng.integers(0, 20, n)] + rng.standard_normal((n, D))
    return (x / np.abs(x).max()).astype(np.float32)  # |x| <= 1


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_vectors_near_the_bound_answer_like_scaled_down_ones(factory, metric):
    """Scaling every vector by s (a power of two, exact in float32) scales L2 distances by s**2
    and inner products by s**2: the neighbours must stay the same, with finite distances."""
    x = _data()
    scale = np.float32(2.0 ** math.floor(math.log2(_bound(D) * 0.99)))
    results = []
    for s in (np.float32(1), scale):
        index = pqkit.index_factory(D, factory, metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            index.train(x * s)
        index.add(x * s)
        if hasattr(index, "nprobe"):
            index.nprobe = 3
        D_, I = index.search(x[:50] * s, 10)
        assert np.isfinite(D_).all() and (I >= 0).all(), "inf distances or -1 padding"
        results.append((D_.astype(np.float64) / (float(s) ** 2), I))
    (d1, i1), (d2, i2) = results
    agree = (i1 == i2).mean()
    assert agree > 0.97, f"only {agree:.1%} of the neighbours agree after scaling"
    np.testing.assert_allclose(d2, d1, rtol=1e-3, atol=1e-4 * float(np.abs(d1).max()))


@pytest.mark.parametrize("value", ["just over", 1e20, 1e30, 3e37])
def test_values_beyond_the_bound_are_refused_everywhere(value):
    """x * 1e20 at d = 16 used to give I = -1 from IndexFlat and inf distances from PQ indexes."""
    if value == "just over":
        value = np.nextafter(np.float32(_bound(D)), np.float32(np.inf))
    x = _data(300)
    big = x * np.float32(value)  # |x| <= 1
    big[0, 0] = value
    match = "too large for float32 distances"
    flat = pqkit.IndexFlat(D)
    with pytest.raises(ValueError, match=match):
        flat.add(big)
    flat.add(x)
    with pytest.raises(ValueError, match=match):
        flat.search(big[:3], 5)
    ivfpq = pqkit.IndexIVFPQ(D, 4, 4, 4)
    with pytest.raises(ValueError, match=match):
        ivfpq.train(big)
    with pytest.raises(ValueError, match=match):
        ivfpq.set_centroids(big[:4])
    with pytest.raises(ValueError, match=match):
        ivfpq.pq.set_codebooks(np.resize(big, (4, 16, 4)))
    with pytest.raises(ValueError, match=match):
        pqkit.KMeans(D, 4).train(big)


def test_the_bound_message_names_the_limit_and_the_fix():
    with pytest.raises(ValueError) as info:
        pqkit.IndexFlat(D).add(np.full((2, D), 1e20, np.float32))
    message = str(info.value)
    assert f"{_bound(D):.3g}" in message and "d=16" in message and "scale the vectors down" in message


def test_add_after_the_largest_id_says_the_id_space_is_exhausted():
    x = _data(4)
    for factory in ("Flat", "IVF2,Flat"):
        index = pqkit.index_factory(D, factory)
        index.train(_data(100))
        index.add_with_ids(x[:1], [2**63 - 1])
        with pytest.raises(ValueError, match="id space is exhausted"):
            index.add(x[1:2])
        assert index.ntotal == 1
        index.add_with_ids(x[1:3], [2**63 - 3, 2**63 - 2])  # explicit ids below it still work
        assert index.ntotal == 3
    index = pqkit.IndexFlat(D)
    index.add_with_ids(x[:1], [2**63 - 3])
    with pytest.raises(ValueError, match="3 sequential ids from 9223372036854775806"):
        index.add(x[1:4])
    index.add(x[1:3])  # exactly reaches the last id
    assert index.reconstruct_n([2**63 - 1]).shape == (1, D)


@pytest.mark.skipif(bool(os.environ.get("PQKIT_SANITIZED")),
                    reason="AddressSanitizer reserves terabytes of address space (runs unsanitized)")
def test_search_beyond_the_address_space_limit_is_a_value_error():
    code = textwrap.dedent("""
        import resource, numpy as np, pqkit
        resource.setrlimit(resource.RLIMIT_AS, (4_000_000_000, 4_000_000_000))
        index = pqkit.IndexFlat(4)
        index.add(np.ones((3, 4), np.float32))
        try:
            index.search(np.ones((1, 4), np.float32), 10**9)
        except ValueError as exc:
            print("ValueError:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ValueError:" in proc.stdout and "address-space limit (ulimit -v)" in proc.stdout, proc.stdout


def _fake_cgroup(tmp_path, version, limit, usage, parent_limit=None):
    proc = tmp_path / "cgroup"
    if version == 2:
        proc.write_text("0::/a/b\n")
        folder = tmp_path / "sys" / "a" / "b"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(f"{limit}\n")
        (folder / "memory.current").write_text(f"{usage}\n")
        if parent_limit is not None:
            (tmp_path / "sys" / "a" / "memory.max").write_text(f"{parent_limit}\n")
    else:
        proc.write_text("5:cpu:/\n4:memory:/job\n")
        folder = tmp_path / "sys" / "memory" / "job"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (folder / "memory.usage_in_bytes").write_text(f"{usage}\n")
    return str(proc), str(tmp_path / "sys")


@pytest.mark.parametrize("version, limit, usage, parent, expected", [
    (2, 8 << 30, 1 << 30, None, 7 << 30),
    (2, "max", 1 << 30, None, None),
    (2, "max", 1 << 30, 3 << 30, 3 << 30),   # a parent's limit applies to its children
    (1, 2 << 30, 1 << 29, None, (2 << 30) - (1 << 29)),
    (1, 9223372036854771712, 1 << 29, None, None),  # v1's "no limit"
])
def test_cgroup_memory_limits_are_read(tmp_path, version, limit, usage, parent, expected):
    proc, root = _fake_cgroup(tmp_path, version, limit, usage, parent)
    assert _validation._cgroup_memory_left(proc, root) == expected


def test_memory_checks_use_the_cgroup_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(_validation, "_cgroup_memory_left", lambda *args: 100 << 20)
    with pytest.raises(ValueError, match="cgroup's memory.max"):
        pqkit.IndexFlat(4).search(np.ones((1, 4), np.float32), 10**7)
    assert _validation.available_memory_bytes()[0] <= 100 << 20
