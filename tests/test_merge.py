"""Index.merge_from: parts built from one training merge into the index one add builds.

* Merging parts (filled from copies of one trained index, in order, with ``add_id`` shifting
  their ids) gives search results identical, bit for bit, to one index holding every vector,
  for every index type and both engines, and the same saved file; the parts end empty and
  trained, ready to be filled again.
* Parity with ``faiss.merge_from`` on injected codebooks: the same lists, codes and ids.
* A refused merge changes neither index; two threads merging a<-b and b<-a at once finish.

Bad arguments (types, ``add_id``, untrained or mapped indexes, each kind of difference) are rows
of ``tests/test_bad_inputs_table.py``.
"""

from __future__ import annotations

import pickle
import threading
import warnings

import numpy as np
import pytest

import pqkit
from pqkit import io as _io
from tests.conftest import clustered_split, skip_or_fail

D = 16
FACTORIES = [("Flat", "l2"), ("PQ8x4", "ip"), ("IVF8,Flat", "cosine"), ("IVF8,PQ4x8", "l2"),
             ("IVF8,PQ8x4", "ip"), ("IVF8,PQ4x5", "l2"), ("IVF8,PQ4,RFlat", "l2"),
             ("IVF8,PQ4,Refine(PQ8)", "l2"), ("PCA8,IVF8,PQ4", "l2"), ("OPQ4,PQ4", "l2"),
             ("SQ8", "cosine"), ("IVF8,PQ4x4,Refine(SQ8)", "l2")]


@pytest.fixture(scope="module")
def data():
    return clustered_split(3_000, 40, D, seed=5, n_clusters=30)


def _trained(description, metric, backend, base):
    index = pqkit.index_factory(D, description, metric, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    if hasattr(index, "nprobe"):
        index.nprobe = 3
    return index


def _copy(index):
    return pickle.loads(pickle.dumps(index))


@pytest.mark.parametrize("backend", pqkit.available_backends())
@pytest.mark.parametrize("description, metric", FACTORIES)
def test_merged_parts_answer_as_one_index(data, description, metric, backend):
    base, queries = data
    trained = _trained(description, metric, backend, base)
    whole = _copy(trained)
    whole.add(base)
    bounds = [0, 700, 1900, 3000]
    parts = [_copy(trained) for _ in bounds[:-1]]
    for part, begin, end in zip(parts, bounds, bounds[1:]):
        part.add(base[begin:end])  # ids 0, 1, ... in each part
    merged = parts[0]
    for part, begin in zip(parts[1:], bounds[1:]):
        merged.merge_from(part, add_id=begin)
        assert part.ntotal == 0 and part.is_trained
    D1, I1 = whole.search(queries, 10)
    D2, I2 = merged.search(queries, 10)
    np.testing.assert_array_equal(I2, I1)
    np.testing.assert_array_equal(D2, D1)
    assert _io.index_to_bytes(merged) == _io.index_to_bytes(whole)  # the same lists, in order
    # an emptied part is an ordinary empty index: it fills and merges again
    parts[1].add_with_ids(base[:10], np.arange(10) + 10**6)
    merged.merge_from(parts[1])
    assert merged.ntotal == 3010 and merged.reconstruct_n(np.arange(10) + 10**6).shape == (10, D)


def test_parallel_build_by_threads_merges_to_the_serial_index(data):
    """The building block of parallel builds: threads fill copies of one trained index, then the
    copies merge in order."""
    base, queries = data
    trained = _trained("IVF8,PQ4x8", "l2", "cpp", base)
    serial = _copy(trained)
    serial.add(base)
    parts = [_copy(trained) for _ in range(4)]
    bounds = np.linspace(0, len(base), 5).astype(int)
    threads = [threading.Thread(target=part.add, args=(base[b:e],))
               for part, b, e in zip(parts, bounds, bounds[1:])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for part, begin in zip(parts[1:], bounds[1:]):
        parts[0].merge_from(part, add_id=int(begin))
    assert _io.index_to_bytes(parts[0]) == _io.index_to_bytes(serial)


def test_refused_merges_change_nothing(data):
    base, _ = data
    trained = _trained("IVF8,PQ4x8", "l2", "cpp", base)
    index, other = _copy(trained), _copy(trained)
    index.add(base[:100])
    other.add_with_ids(base[100:200], np.arange(100) + 50)  # ids 50..99 clash
    before = (_io.index_to_bytes(index), _io.index_to_bytes(other))
    with pytest.raises(ValueError, match=r"already in this index: \[50, 51, 52, 53, 54, \.\.\.\] "
                                         r"\(50 in all\).*add_id=100"):
        index.merge_from(other)
    with pytest.raises(ValueError, match="past the largest id"):
        index.merge_from(other, add_id=2**63 - 100)
    other_training = _trained("IVF8,PQ4x8", "l2", "cpp", base[::-1])
    with pytest.raises(ValueError, match=r"differs in centroids \(\d+ of 128 values not "
                                         r"bit-identical\); codebooks \(\d+ of 4096 values"):
        index.merge_from(other_training)
    assert (_io.index_to_bytes(index), _io.index_to_bytes(other)) == before
    index.merge_from(other, add_id=100)  # the fix the message names
    assert index.ntotal == 200 and other.ntotal == 0


def test_wrappers_name_the_part_that_differs(data):
    base, _ = data
    refine = _trained("IVF8,PQ4,RFlat", "l2", "cpp", base)
    other = _trained("IVF8,PQ4,RFlat", "l2", "cpp", base[::-1])
    with pytest.raises(ValueError, match=r"base_index\.centroids.*base_index\.codebooks"):
        refine.merge_from(other)
    pre = _trained("PCA8,IVF8,PQ4", "l2", "cpp", base)
    other = _copy(pre)
    other.transform.set_matrix(other.transform.A * 2, other.transform.b)
    with pytest.raises(ValueError, match=r"transform\.A \(128 of 128 values not bit-identical\)"):
        pre.merge_from(other)
    shared = pqkit.IndexRefine(pre.index)
    with pytest.raises(ValueError, match="shares a part"):
        pqkit.IndexPreTransform(pre.transform, pre.index).merge_from(shared)


def test_opposite_merges_in_two_threads_do_not_deadlock(data):
    """a.merge_from(b) and b.merge_from(a) at once: both take the two locks in one order, so
    each merge runs whole before the other, and every vector ends in one of the two."""
    base, _ = data
    trained = _trained("IVF8,PQ4x8", "l2", "cpp", base)
    a, b = _copy(trained), _copy(trained)
    a.add(base[:1500])
    b.add_with_ids(base[1500:], np.arange(1500, 3000))
    errors = []

    def merge_many(into, other):
        for _ in range(200):
            try:
                into.merge_from(other)
            except BaseException as exc:  # noqa: BLE001 - any failure is reported below
                errors.append(exc)

    threads = [threading.Thread(target=merge_many, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "merge_from deadlocked"
    assert not errors
    assert a.ntotal + b.ntotal == 3000 and 0 in (a.ntotal, b.ntotal)
    full = a if a.ntotal else b
    assert np.array_equal(np.sort(full._merge_ids()), np.arange(3000))


# ------------------------------------------------------------------------------- faiss parity
@pytest.fixture(scope="module")
def faiss_module():
    try:
        import faiss
    except ImportError:
        skip_or_fail("faiss-cpu is not installed: pip install faiss-cpu")
    return faiss


@pytest.mark.parametrize("description, metric", [("IVF8,PQ4x8", "l2"), ("IVF8,PQ8x4", "ip"),
                                                 ("IVF8,Flat", "l2"), ("PQ4x8", "l2"),
                                                 ("Flat", "ip")])
def test_merge_matches_faiss_merge_from(data, faiss_module, description, metric):
    """The same trained index in both libraries (faiss gets pqkit's centroids and codebooks),
    halves added to each, merged: faiss's merged index, converted back, holds exactly pqkit's
    lists (codes, ids, order) and answers alike. faiss's flat indexes number by position and take
    only add_id=0; pqkit's keep ids, so there pqkit's add_id = ntotal gives the same ids."""
    base, queries = data
    trained = _trained(description, metric, "cpp", base)
    faiss_add_id = 1200 if description.startswith("IVF") else 0
    ours, theirs = _copy(trained), _copy(trained)
    ours.add(base[:1200])
    theirs.add(base[1200:])
    fa, fb = pqkit.to_faiss(_copy(trained)), pqkit.to_faiss(_copy(trained))
    fa.add(base[:1200])
    fb.add(base[1200:])
    fa.merge_from(fb, faiss_add_id)
    assert fb.ntotal == 0 and fa.ntotal == 3000
    ours.merge_from(theirs, add_id=1200)
    converted = pqkit.from_faiss(fa)
    state, faiss_state = ours._get_state()[1], converted._get_state()[1]
    assert sorted(state) == sorted(faiss_state)
    for name in state:
        np.testing.assert_array_equal(faiss_state[name], state[name], err_msg=name)
    if hasattr(converted, "nprobe"):
        converted.nprobe = ours.nprobe
    D1, I1 = ours.search(queries, 10)
    D2, I2 = converted.search(queries, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
