"""save/load and pickle round trips; corrupted files raise ValueError."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest

import pqkit
from tests.test_api import INDEX_KINDS, _data, make_index

MAGIC = b"PQKIT\x00\x01\n"


def _filled(kind, metric="l2"):
    base, _ = _data()
    index = make_index(kind, metric)
    index.add_with_ids(base[:500], np.arange(500) * 2 + 7)
    if kind.startswith("IVF"):
        index.nprobe = 3
    return index


def _same_index(a, b, queries):
    assert type(a) is type(b)
    assert (a.d, a.metric, a.ntotal, a.is_trained, a.code_size) == (b.d, b.metric, b.ntotal, b.is_trained, b.code_size)
    if hasattr(a, "nprobe"):
        assert a.nprobe == b.nprobe and a.nlist == b.nlist
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.list_sizes(), b.list_sizes())
    if hasattr(a, "pq"):
        np.testing.assert_array_equal(a.pq.codebooks, b.pq.codebooks)
        assert (a.pq.M, a.pq.nbits) == (b.pq.M, b.pq.nbits)
    Da, Ia = a.search(queries, 10)
    Db, Ib = b.search(queries, 10)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)
    ids = np.arange(500) * 2 + 7
    np.testing.assert_array_equal(a.reconstruct_n(ids[::37]), b.reconstruct_n(ids[::37]))


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_save_load_round_trip(tmp_path, kind, metric):
    _, queries = _data()
    index = _filled(kind, metric)
    path = tmp_path / f"{kind}.pqkit"
    index.save(path)
    loaded = pqkit.load(path)
    _same_index(index, loaded, queries)
    loaded.save(str(tmp_path / "again.pqkit"))  # str paths work too
    assert (tmp_path / "again.pqkit").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_pickle_round_trip(kind):
    _, queries = _data()
    index = _filled(kind)
    clone = pickle.loads(pickle.dumps(index))
    _same_index(index, clone, queries)
    # The clone is independent.
    clone.reset()
    assert index.ntotal == 500


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_round_trip_of_empty_and_untrained(tmp_path, kind):
    _, queries = _data()
    trained_empty = make_index(kind)
    trained_empty.save(tmp_path / "empty.pqkit")
    loaded = pqkit.load(tmp_path / "empty.pqkit")
    assert loaded.ntotal == 0 and loaded.is_trained
    assert np.all(loaded.search(queries, 3)[1] == -1)

    untrained = make_index(kind, trained=False)
    clone = pickle.loads(pickle.dumps(untrained))
    assert clone.is_trained == untrained.is_trained
    base, _ = _data()
    clone.train(base[:1000])
    clone.add(base[:100])
    assert clone.ntotal == 100


def test_loaded_index_keeps_working(tmp_path):
    base, queries = _data()
    index = _filled("IVFPQ")
    index.save(tmp_path / "i.pqkit")
    loaded = pqkit.load(tmp_path / "i.pqkit")
    for target in (index, loaded):
        target.add_with_ids(base[500:600], np.arange(5000, 5100))
        target.remove_ids(np.arange(7, 207, 2))
    _same_index_counts = (index.ntotal, loaded.ntotal)
    assert _same_index_counts == (500, 500)
    np.testing.assert_array_equal(index.search(queries, 10)[1], loaded.search(queries, 10)[1])


# ---------------------------------------------------------------------------------------------
# corrupted files


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory):
    """The bytes of a saved IndexIVFPQ."""
    path = tmp_path_factory.mktemp("io") / "index.pqkit"
    _filled("IVFPQ").save(path)
    data = path.read_bytes()
    assert data[:8] == MAGIC
    return data


def _load_bytes(tmp_path, data: bytes):
    path = tmp_path / "damaged.pqkit"
    path.write_bytes(data)
    return pqkit.load(path)


def _rechecksum(body: bytes) -> bytes:
    """Append a fresh SHA-256 so that only the deliberate damage is detected."""
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("keep", [0, 5, 8, 20, 100, 0.5, -1, -33])
def test_truncated_file(tmp_path, saved_bytes, keep):
    cut = int(len(saved_bytes) * keep) if isinstance(keep, float) else keep
    with pytest.raises(ValueError, match="pqkit file"):
        _load_bytes(tmp_path, saved_bytes[:cut])


def test_trailing_garbage(tmp_path, saved_bytes):
    with pytest.raises(ValueError):
        _load_bytes(tmp_path, saved_bytes + b"\x00" * 16)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9, -1])
def test_flipped_byte(tmp_path, saved_bytes, where):
    data = bytearray(saved_bytes)
    pos = int(len(data) * where) if where > 0 else len(data) + where
    data[pos] ^= 0x10
    with pytest.raises(ValueError, match="checksum|pqkit file"):
        _load_bytes(tmp_path, bytes(data))


def test_flipped_byte_in_every_region_of_a_small_file(tmp_path):
    """Every single-byte change anywhere in a small file is detected."""
    base, _ = _data()
    index = pqkit.IndexPQ(16, 4, 4)
    index.train(base[:1000])
    index.add(base[:3])
    path = tmp_path / "small.pqkit"
    index.save(path)
    data = path.read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 97)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        with pytest.raises(ValueError):
            _load_bytes(tmp_path, bytes(damaged))


def test_wrong_magic(tmp_path, saved_bytes):
    body = b"NOTPQKIT" + saved_bytes[8:-32]
    with pytest.raises(ValueError, match="magic"):
        _load_bytes(tmp_path, _rechecksum(body))
    with pytest.raises(ValueError):
        _load_bytes(tmp_path, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ValueError):
        _load_bytes(tmp_path, b"")


@pytest.mark.parametrize("version", [0, 3, 999, 2**32 - 1])
def test_wrong_version(tmp_path, saved_bytes, version):
    body = saved_bytes[:8] + struct.pack("<I", version) + saved_bytes[12:-32]
    with pytest.raises(ValueError, match="version") as err:
        _load_bytes(tmp_path, _rechecksum(body))
    assert str(version) in str(err.value)


def test_oversized_header_length_is_refused_before_allocating(tmp_path, saved_bytes):
    body = saved_bytes[:12] + struct.pack("<I", 2**32 - 1) + saved_bytes[16:-32]
    with pytest.raises(ValueError):
        _load_bytes(tmp_path, _rechecksum(body))


def test_tampered_header_with_valid_checksum(tmp_path, saved_bytes):
    """A header edited consistently (valid checksum) but describing impossible contents."""
    (header_length,) = struct.unpack("<I", saved_bytes[12:16])
    header = saved_bytes[16 : 16 + header_length]
    rest = saved_bytes[16 + header_length : -32]
    for old, new in ((b'"IndexIVFPQ"', b'"IndexEvil1"'), (b'"<f4"', b'"|O8"'), (b'"nbits":4', b'"nbits":5')):
        assert old in header, (old, header)
        edited = header.replace(old, new, 1)
        body = saved_bytes[:12] + struct.pack("<I", len(edited)) + edited + rest
        with pytest.raises(ValueError):
            _load_bytes(tmp_path, _rechecksum(body))


def test_unpickling_garbage_raises_value_error():
    index = _filled("Flat")
    reducer, (payload,) = index.__reduce__()
    with pytest.raises(ValueError):
        reducer(payload[:-1])
    with pytest.raises(ValueError):
        reducer(payload[:40] + bytes([payload[40] ^ 1]) + payload[41:])


def test_load_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        pqkit.load(tmp_path / "nope.pqkit")
