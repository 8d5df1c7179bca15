"""The torch engine's parity tests on a CUDA device, where one is present.

The same checks as ``tests/test_engine_torch.py`` (which runs them on the CPU in CI), on
``cuda:0``: every index type, metric and search form against the compiled core, moving indexes
to the device and back with identical files, and an index trained on the device. Without a
CUDA device (CI, a laptop) the whole module is skipped: this is the one file whose tests need
hardware CI does not have.
"""

from __future__ import annotations

import numpy as np
import pytest

from pqkit import engine

torch = pytest.importorskip("torch", reason="the gpu extra is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device here; tests/test_engine_torch.py runs the same checks on the CPU",
                allow_module_level=True)

from tests import test_engine_torch as cpu_tests  # noqa: E402 (after the device check)

DEVICE = "cuda"


@pytest.mark.parametrize("metric", cpu_tests.METRICS)
@pytest.mark.parametrize("kind, nbits", cpu_tests.KINDS)
def test_cuda_searches_as_the_core(kind, nbits, metric):
    _, moved, _, _ = cpu_tests.check_search_parity(kind, nbits, metric, DEVICE)
    assert moved.device.startswith("cuda")


@pytest.mark.parametrize("kind, nbits", [("flat", 8), ("pq", 4), ("ivfpq", 4), ("ivfpq", 8),
                                         ("refine", 8)])
def test_cuda_round_trip_keeps_the_file(tmp_path, monkeypatch, kind, nbits):
    monkeypatch.setattr(cpu_tests, "DEVICE", DEVICE)
    cpu_tests.test_to_round_trip_keeps_the_index_and_its_file(tmp_path, kind, nbits)


def test_cuda_training_and_engine_calls(monkeypatch):
    monkeypatch.setattr(cpu_tests, "DEVICE", DEVICE)
    cpu_tests.test_an_index_built_on_torch_adds_and_searches_as_the_core()
    cpu_tests.test_kmeans_on_torch_trains_as_well_as_the_core()
    cpu_tests.test_engine_calls_agree_with_the_core()


def test_cuda_data_stays_on_the_device():
    import pqkit
    x, q = cpu_tests._data()
    index = pqkit.IndexIVFPQ(32, 16, 8, 8, nprobe=4, backend="cpp")
    with cpu_tests._quiet():
        index.train(x)
    index.add(x)
    moved = index.to("torch", device=DEVICE)
    assert moved._invlists.codes.is_cuda and moved._core_coarse().centroids.is_cuda
    assert moved.pq._core().codebooks.is_cuda
    D, I = moved.search(q, 5)
    assert isinstance(D, np.ndarray) and D.dtype == np.float32 and I.dtype == np.int64
    assert engine.core("torch", DEVICE).device.type == "cuda"
