"""Threads, Ctrl-C and memory: many threads on one index, writers among readers, RSS over time.

* Many Python threads searching one index at once get exactly the serial results.
* A writer adding and removing vectors while readers search: every search result equals the
  serial result of one of the two states the index passes through (the reader-writer lock makes
  each write atomic for readers), and nothing crashes. The stress runs for a fixed time.
* Ctrl-C during a long ``train`` raises KeyboardInterrupt promptly (``search`` is covered by
  tests/test_interrupt_and_gil.py).
* RSS stays bounded over 100,000 small searches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import pqkit
from tests.conftest import clustered_split

D = 16
KINDS = ["Flat", "PQ", "IVFFlat", "IVFPQ"]
STRESS_SECONDS = 1.5  # per (kind, backend) of the writer test


def _backends():
    return pqkit.available_backends()  # both in CI (the test extra installs numba)


def _index(kind, backend, base):
    index = {
        "Flat": lambda: pqkit.IndexFlat(D, backend=backend),
        "PQ": lambda: pqkit.IndexPQ(D, 4, 8, backend=backend),
        "IVFFlat": lambda: pqkit.IndexIVFFlat(D, 16, nprobe=4, backend=backend),
        "IVFPQ": lambda: pqkit.IndexIVFPQ(D, 16, 4, 8, nprobe=4, backend=backend),
    }[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        if hasattr(index, "pq"):
            index.pq.niter = 4
        if kind != "Flat":
            reference = {"PQ": lambda: pqkit.IndexPQ(D, 4, 8),
                         "IVFFlat": lambda: pqkit.IndexIVFFlat(D, 16),
                         "IVFPQ": lambda: pqkit.IndexIVFPQ(D, 16, 4, 8)}[kind]()
            if hasattr(reference, "pq"):
                reference.pq.niter = 4
            reference.train(base[:2000])  # the C++ engine trains; both engines get its result
            if kind.startswith("IVF"):
                index.set_centroids(reference.centroids)
            if hasattr(index, "pq"):
                index.pq.set_codebooks(reference.pq.codebooks)
    return index


def _run_threads(n, target):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_searches_equal_serial_results(kind, backend):
    base, queries = clustered_split(5_000, 160, D, seed=41, n_clusters=30)
    index = _index(kind, backend, base)
    index.add(base)
    index.n_threads = 2  # engine threads inside each call, on top of the Python threads
    chunks = np.array_split(np.arange(len(queries)), 8)
    serial = [index.search(queries[c], 10) for c in chunks]
    got = {}

    def worker(i):
        for repeat in range(3):
            for j in range(len(chunks)):
                c = (i + j) % len(chunks)
                got[(i, repeat, c)] = index.search(queries[chunks[c]], 10)

    _run_threads(8, worker)
    assert len(got) == 8 * 3 * len(chunks)
    for (_, _, c), (Dist, I) in got.items():
        np.testing.assert_array_equal(I, serial[c][1])
        np.testing.assert_array_equal(Dist, serial[c][0])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", KINDS)
def test_add_and_remove_while_searching_is_atomic(kind, backend):
    base, queries = clustered_split(4_000, 40, D, seed=43, n_clusters=30)
    index = _index(kind, backend, base)
    stable, extra = base[:3000], base[3000:]
    extra_ids = np.arange(10_000, 10_000 + len(extra))
    index.add(stable)
    # The two states the index alternates between, and their serial results.
    without = index.search(queries, 8)
    index.add_with_ids(extra, extra_ids)
    with_extra = index.search(queries, 8)
    assert index.remove_ids(extra_ids) == len(extra)
    np.testing.assert_array_equal(index.search(queries, 8)[1], without[1])
    assert not np.array_equal(without[1], with_extra[1])  # the states are distinguishable

    stop = time.monotonic() + STRESS_SECONDS
    counts = {"searches": 0, "writes": 0, "seen_with": 0, "seen_without": 0}

    def writer():
        while time.monotonic() < stop:
            index.add_with_ids(extra, extra_ids)
            assert index.ntotal == len(stable) + len(extra)
            assert index.remove_ids(extra_ids) == len(extra)
            counts["writes"] += 1

    def reader(i):
        while time.monotonic() < stop:
            Dist, I = index.search(queries, 8)
            if np.array_equal(I, with_extra[1]):
                np.testing.assert_array_equal(Dist, with_extra[0])
                counts["seen_with"] += 1
            else:
                np.testing.assert_array_equal(I, without[1])
                np.testing.assert_array_equal(Dist, without[0])
                counts["seen_without"] += 1
            counts["searches"] += 1

    _run_threads(4, lambda i: writer() if i == 0 else reader(i))
    assert counts["writes"] >= 1 and counts["searches"] >= 1, counts
    assert index.ntotal == len(stable)


def test_writers_are_not_starved_by_readers():
    base, queries = clustered_split(20_000, 200, D, seed=47, n_clusters=30)
    index = pqkit.IndexFlat(D)
    index.add(base)
    stop = threading.Event()

    def reader(i):
        while not stop.is_set():
            index.search(queries, 5)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        start = time.monotonic()
        index.add(base[:10])
        waited = time.monotonic() - start
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert index.ntotal == len(base) + 10
    # A searching reader holds the lock for one search (well under a second here); a waiting
    # writer blocks new readers, so it gets in after the running searches.
    assert waited < 10.0


LONG_TRAIN = textwrap.dedent(
    """
    import os, signal, threading, time, warnings
    import numpy as np
    import pqkit
    warnings.simplefilter("ignore")
    # A process started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then installs no handler: install the default one so Ctrl-C is simulated.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400_000, 128), dtype=np.float32)
    index = pqkit.IndexIVFPQ(128, 4096, 16, 8)
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    start = time.perf_counter()
    try:
        index.train(x)
    except KeyboardInterrupt:
        print("INTERRUPTED", time.perf_counter() - start, index.is_trained)
    else:
        print("FINISHED", time.perf_counter() - start, index.is_trained)
    """
)


def test_ctrl_c_interrupts_a_long_train():
    proc = subprocess.run([sys.executable, "-c", LONG_TRAIN], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    status, seconds, trained = proc.stdout.split()
    assert status == "INTERRUPTED"
    assert float(seconds) < 6.0
    assert trained == "False"  # an interrupted train leaves the index untrained


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.skipif(bool(os.environ.get("PQKIT_SANITIZED")),
                    reason="AddressSanitizer's quarantine grows RSS by design")
def test_rss_is_bounded_over_100k_small_searches():
    base, queries = clustered_split(2_000, 64, D, seed=53, n_clusters=20)
    indexes = [_index(kind, "cpp", base) for kind in KINDS]
    for index in indexes:
        index.add(base)
        index.n_threads = 1
    n_per_index = 25_000  # 100,000 searches in all

    def run(n):
        for i in range(n):
            for index in indexes:
                index.search(queries[i % 64], 5)

    run(2_000)  # warm-up: caches, allocator pools
    before = _rss_bytes()
    run(n_per_index)
    grown = _rss_bytes() - before
    # A leak of even 64 bytes per search would add 6 MB; allow 4 MB of allocator noise.
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over {4 * n_per_index} searches"


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", ["PQ", "IVFPQ"])
def test_replacing_codebooks_while_searching_is_atomic(kind, backend):
    """A thread calling ``index.pq.set_codebooks`` back and forth between two codebooks
    while others search: the quantizer of an index changes under the index's write lock, so every
    result equals the serial result under one of the two codebooks (IVF-PQ's per-code bias
    included), never a mix."""
    base, queries = clustered_split(4_000, 48, D, seed=47, n_clusters=30)
    index = _index(kind, backend, base)
    index.add(base[:3000])
    first = index.pq.codebooks
    other = np.ascontiguousarray(first[:, ::-1])  # the same centroids, numbered backwards
    serial = {}
    for name, codebooks in (("other", other), ("first", first)):
        index.pq.set_codebooks(codebooks)
        serial[name] = index.search(queries, 10)
    assert not np.array_equal(serial["first"][0], serial["other"][0])  # distinguishable
    results, stop = [], threading.Event()

    def writer():
        flip = 0
        while not stop.is_set():
            index.pq.set_codebooks(other if flip % 2 == 0 else first)
            flip += 1

    def reader(i):
        for _ in range(40):
            results.append(index.search(queries, 10))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _run_threads(3, reader)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert len(results) == 120
    mixed = 0
    for Dist, I in results:
        if not any(np.array_equal(Dist, s[0]) and np.array_equal(I, s[1]) for s in serial.values()):
            mixed += 1
    assert mixed == 0, f"{mixed} of {len(results)} results match neither codebook's serial answer"
