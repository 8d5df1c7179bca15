"""Indexes bigger than RAM: format version 2, mapped loads, read-only indexes, chunked adds.

* A mapped index (``pqkit.load(path, mmap=True)``, verified or not) answers bit for bit as the
  loaded one, for every index type and both engines, reconstructs the same vectors and saves the
  same file; its engine lists are read-only views of the file.
* The file layout: every array 64-byte aligned behind zero padding, the PQ codes in the blocked
  scan layout per list, the L2 IVF-PQ bias stored; version-1 files (``tests/corpus``) still load,
  convert by a save, and are refused by ``mmap=True`` with the way out.
* Integrity: ``verify=True`` refuses a damaged checksum and a stored bias one ulp off (which a
  recomputed checksum would hide); ``verify=False`` loads both (the trust assumption) but never
  skips the framing checks (alignment padding, sizes).
* A mapped index refuses every change with a ValueError naming ``pqkit.load(path)``.
* The engines' read-only lists (``external_lists``) equal owned ones and check their sizes.
* ``add`` of a ``numpy.memmap`` and ``add_chunks`` build the index one ``add`` builds; a chunk
  that fails validation leaves the index as it was.
* Memory, measured in a child process on a ~400 MB IVF-Flat file (see
  :func:`test_mapped_search_reads_only_probed_lists`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pqkit
from pqkit import io as _io
from pqkit.engine import core
from tests.conftest import clustered_split
from tests.test_crafted_files import PREFIX, parse, version_of, write

D = 16
CORPUS = Path(__file__).parent / "corpus"
FACTORIES = [("Flat", "l2"), ("Flat", "cosine"), ("PQ8x4", "ip"), ("PQ4x8", "l2"),
             ("PQ4x5", "l2"), ("IVF8,Flat", "l2"), ("IVF8,PQ4x8", "l2"), ("IVF8,PQ8x4", "ip"),
             ("IVF8,PQ4x3", "cosine"), ("IVF8,PQ4,RFlat", "l2"), ("IVF8,PQ4,Refine(PQ8)", "l2"),
             ("PCA8,IVF8,PQ4", "l2"), ("SQ8", "ip"), ("IVF8,PQ4x4,Refine(SQ8)", "cosine")]


@pytest.fixture(scope="module")
def data():
    return clustered_split(3_000, 40, D, seed=9, n_clusters=30)


def _built(description, metric, base, backend="cpp"):
    index = pqkit.index_factory(D, description, metric, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    if hasattr(index, "nprobe"):
        index.nprobe = 3
    index.add(base)
    index.remove_ids(np.arange(0, len(base), 13))  # lists with holes: padding codes matter
    return index


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------- results
@pytest.mark.parametrize("backend", pqkit.available_backends())
@pytest.mark.parametrize("description, metric", FACTORIES)
def test_mapped_index_answers_as_the_loaded_one(tmp_path, data, description, metric, backend):
    base, queries = data
    path = tmp_path / "index.pqkit"
    _built(description, metric, base).save(path)
    previous = pqkit.get_backend()
    pqkit.set_backend(backend)
    try:
        loaded = pqkit.load(path)
        mapped = pqkit.load(path, mmap=True)
        trusted = pqkit.load(path, mmap=True, verify=False)
    finally:
        pqkit.set_backend(previous)
    expected = loaded.search(queries, 10)
    for index in (mapped, trusted):
        assert index.backend == backend and index.ntotal == loaded.ntotal
        assert _same(index.search(queries, 10), expected)
        assert _same(index.search(queries[:1], 10), loaded.search(queries[:1], 10))
        ids = np.arange(1, len(base), 7)
        ids = ids[ids % 13 != 0]  # still stored
        np.testing.assert_array_equal(index.reconstruct_n(ids), loaded.reconstruct_n(ids))
        assert _io.index_to_bytes(index) == path.read_bytes()  # saves the file it maps
    # lists of the mapped index view the file (read-only engine lists, no copy)
    lists = [part._invlists for part in mapped._tree() if hasattr(part, "_invlists")]
    assert all(lists_.read_only for lists_ in lists)
    # a pickled mapped index is an ordinary, writable copy (on the default engine, as a load)
    copy = pickle.loads(pickle.dumps(mapped))
    assert _same(copy.search(queries, 10), pqkit.load(path).search(queries, 10))
    copy.remove_ids([1])


def test_search_parameters_of_a_mapped_index_stay_settable(tmp_path, data):
    base, queries = data
    path = tmp_path / "index.pqkit"
    _built("IVF8,PQ4x8", "l2", base).save(path)
    loaded, mapped = pqkit.load(path), pqkit.load(path, mmap=True)
    for index in (loaded, mapped):
        index.nprobe = 8
        index.n_threads = 2
    assert _same(mapped.search(queries, 20), loaded.search(queries, 20))
    assert mapped.memory_usage_bytes() > 0 and np.array_equal(mapped.list_sizes(), loaded.list_sizes())


# ------------------------------------------------------------------------------- file format
def test_version_2_layout_is_aligned_blocked_and_keeps_the_bias(tmp_path, data):
    base, _ = data
    index = _built("IVF8,PQ4x5", "l2", base)  # 20 bits: code_size 3, padding bits in the last byte
    raw = _io.index_to_bytes(index)
    header, arrays = parse(raw)
    assert version_of(raw) == 2
    length = PREFIX.unpack(raw[:PREFIX.size])[2]
    position = PREFIX.size + length
    for spec in header["arrays"]:
        offset = -(-position // 64) * 64
        assert not any(raw[position:offset])  # zero padding up to the aligned start
        nbytes = math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize
        assert raw[offset:offset + nbytes] == arrays[spec["name"]].tobytes()
        position = offset + nbytes
    assert position + 32 == len(raw) and raw[-32:] == hashlib.sha256(raw[:-32]).digest()
    sizes, ids, blocks, bias = index._invlists.export_blocked()
    assert arrays["codes"].shape == (int(np.sum(-(-sizes // 64))), 3, 64)
    for name, expected in (("list_sizes", sizes), ("ids", ids), ("codes", blocks), ("bias", bias)):
        np.testing.assert_array_equal(arrays[name], expected)
    # the codes of list l, as rows, are the list's codes
    first = int(np.sum(-(-sizes[:2] // 64)))
    rows = arrays["codes"][first:first + 1].transpose(0, 2, 1).reshape(64, 3)[:min(64, sizes[2])]
    np.testing.assert_array_equal(rows, index._invlists.list_codes(2)[:64])
    # inner product keeps no bias
    assert "bias" not in parse(_io.index_to_bytes(_built("IVF8,PQ4", "ip", base)))[1]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.pqkit")), ids=lambda p: p.stem)
def test_version_1_files_load_and_convert(tmp_path, path):
    assert version_of(path.read_bytes()) == 1
    old = pqkit.load(path)
    with pytest.raises(ValueError, match="needs a file of format version 2; this one has version 1"):
        pqkit.load(path, mmap=True)
    converted = tmp_path / "converted.pqkit"
    old.save(converted)
    assert version_of(converted.read_bytes()) == 2
    mapped = pqkit.load(converted, mmap=True)
    assert mapped.ntotal == old.ntotal and type(mapped) is type(old)
    if old.is_trained:
        queries = np.random.default_rng(0).standard_normal((5, old.d)).astype(np.float32)
        assert _same(mapped.search(queries, 4), old.search(queries, 4))


# ------------------------------------------------------------------------------- integrity
def test_verify_refuses_damage_and_tampering_that_verify_false_trusts(tmp_path, data):
    base, queries = data
    index = _built("IVF8,PQ4x8", "l2", base)
    header, arrays = parse(_io.index_to_bytes(index))
    tampered = tmp_path / "bias.pqkit"
    arrays["bias"][7] = np.nextafter(arrays["bias"][7], np.float32(np.inf))
    tampered.write_bytes(write(header, arrays))  # checksum recomputed: only the check sees it
    for mmap in (False, True):
        with pytest.raises(ValueError, match="stored bias of code 7 .* differs from the bias"):
            pqkit.load(tampered, mmap=mmap)
        assert pqkit.load(tampered, mmap=mmap, verify=False).ntotal == index.ntotal
    damaged = tmp_path / "damaged.pqkit"
    raw = bytearray(_io.index_to_bytes(index))
    raw[-100] ^= 1  # a byte of the codebooks (the last array), checksum left as it was
    damaged.write_bytes(bytes(raw))
    for mmap in (False, True):
        with pytest.raises(ValueError, match="checksum mismatch"):
            pqkit.load(damaged, mmap=mmap)
        trusted = pqkit.load(damaged, mmap=mmap, verify=False)  # the trust assumption
        assert trusted.search(queries, 5)[1].shape == (len(queries), 5)


def test_framing_is_checked_even_without_verification(tmp_path, data):
    base, _ = data
    raw = _io.index_to_bytes(_built("IVF8,PQ4x8", "l2", base))
    header, arrays = parse(raw)
    length = PREFIX.unpack(raw[:PREFIX.size])[2]
    position, gaps = PREFIX.size + length, []
    for arr in arrays.values():  # the padding in front of each array
        offset = -(-position // 64) * 64
        gaps += range(position, offset)
        position = offset + arr.nbytes
    assert gaps, "some array should need padding"
    padded = bytearray(raw)
    padded[gaps[0]] = 1
    shifted = raw[:8] + (1).to_bytes(4, "little") + raw[12:]  # a version-2 body read as version 1
    for name, data_, match in [("padding", bytes(padded), "nonzero padding bytes"),
                               ("misaligned", write(header, arrays, version=1)[:8]
                                + (2).to_bytes(4, "little") + write(header, arrays, version=1)[12:],
                                "bytes of array data with their alignment"),
                               ("version 1 framing", shifted, "bytes of array data")]:
        path = tmp_path / f"{name}.pqkit"
        path.write_bytes(data_)
        for verify in (True, False):
            with pytest.raises(ValueError, match="corrupted or not a pqkit file: .*" + match):
                pqkit.load(path, mmap=True, verify=verify)
    big = dict(arrays)
    big["list_sizes"] = arrays["list_sizes"].copy()
    big["list_sizes"][0] += 64  # more codes than the blocks hold: refused from the sizes alone
    path = tmp_path / "sizes.pqkit"
    path.write_bytes(write(header, big))
    with pytest.raises(ValueError, match="list_sizes must sum to"):
        pqkit.load(path, mmap=True, verify=False)


# ------------------------------------------------------------------------------- read-only
def test_mapped_index_refuses_every_change(tmp_path, data):
    base, _ = data
    path = tmp_path / "refine.pqkit"
    _built("IVF8,PQ4,RFlat", "l2", base).save(path)
    mapped = pqkit.load(path, mmap=True)
    read_only = r"mapped read-only from .*refine\.pqkit.*pqkit\.load\(path\), without mmap"
    for call in (lambda: mapped.add(base[:3]), lambda: mapped.add_with_ids(base[:3], [10**7] * 3),
                 lambda: mapped.add_chunks([base[:3]]), lambda: mapped.remove_ids([5]),
                 lambda: mapped.train(base), lambda: mapped.reset(),
                 lambda: mapped.merge_from(pqkit.load(path)),
                 lambda: mapped.base_index.add(base[:3]),  # the parts are read-only too
                 lambda: mapped.refine_index.reset(),
                 lambda: mapped.base_index.set_centroids(mapped.base_index.centroids),
                 lambda: mapped.base_index.pq.set_codebooks(mapped.base_index.pq.codebooks)):
        with pytest.raises(ValueError, match=read_only):
            call()
    writable = pqkit.load(path)
    with pytest.raises(ValueError, match="other is mapped read-only .* to merge it"):
        writable.merge_from(mapped)
    assert mapped.ntotal == writable.ntotal  # nothing changed
    writable.remove_ids([5])


# ------------------------------------------------------------------------------- engines
@pytest.mark.parametrize("backend", pqkit.available_backends())
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_external_lists_equal_owned_lists(data, backend, metric):
    base, queries = data
    index = _built("IVF8,PQ4x8", metric, base, backend=backend)
    owned, engine = index._invlists, core(backend)
    sizes, ids, blocks, bias = owned.export_blocked()
    assert (bias is None) == (metric != "l2")
    lists = engine.external_lists(8, owned.code_size, "blocked", sizes, ids, blocks, bias)
    del sizes, ids, blocks, bias  # the lists keep their arrays alive
    assert lists.read_only and not owned.read_only and lists.ntotal == owned.ntotal
    for a, b in zip(lists.export(), owned.export()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(lists.export_blocked(), owned.export_blocked()):
        assert (a is None and b is None) or np.array_equal(a, b)
    probe = np.array([3, 10**9, 44, 2999], dtype=np.int64)
    for a, b in zip(lists.locate(probe), owned.locate(probe)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lists.list_codes(5), owned.list_codes(5))
    np.testing.assert_array_equal(lists.list_ids(5), owned.list_ids(5))
    args = (queries, index._core_coarse(), index.pq._core())
    for n_threads in (1, 3):
        assert _same(engine.ivfpq_search(*args, lists, 3, 10, metric, n_threads),
                     engine.ivfpq_search(*args, owned, 3, 10, metric, n_threads))
    for call in (lambda: lists.add(np.zeros(1, np.int64), np.zeros(1, np.int64),
                                   np.zeros((1, 4), np.uint8), np.zeros(1, np.float32)),
                 lambda: lists.remove_ids(np.zeros(1, np.int64)), lambda: lists.reset()):
        with pytest.raises(ValueError, match="read-only view of external memory"):
            call()


@pytest.mark.parametrize("backend", pqkit.available_backends())
def test_external_lists_check_their_sizes(backend):
    engine = core(backend)
    ids = np.arange(70, dtype=np.int64)
    blocks = np.zeros(2 * 4 * 64, dtype=np.uint8)  # two blocks of 4-byte codes
    good = engine.external_lists(2, 4, "blocked", np.array([64, 6], np.int64), ids, blocks)
    assert good.ntotal == 70 and list(good.list_sizes()) == [64, 6]
    for sizes, codes, match in [([65, 5], blocks, "codes end|bytes"),  # 3 blocks needed
                                ([71, -1], blocks, "size|>= 0"), ([60, 6], blocks, "add up")]:
        with pytest.raises(ValueError, match=match):
            engine.external_lists(2, 4, "blocked", np.array(sizes, np.int64), ids, codes)
    with pytest.raises(ValueError):
        engine.external_lists(1, 4, "rows", np.array([70], np.int64), ids, np.zeros(279, np.uint8))


# ------------------------------------------------------------------------------- building
def test_add_of_a_memmap_builds_the_same_index_in_chunks(tmp_path, data, monkeypatch):
    from pqkit.indexes import base as base_module

    base, _ = data
    monkeypatch.setattr(base_module, "_ADD_CHUNK_BYTES", 64 * 4 * D)  # 64-row chunks
    np.save(tmp_path / "x.npy", base.astype(np.float64))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for description in ("IVF8,PQ4x8", "PCA8,IVF8,PQ4", "IVF8,PQ4,RFlat", "Flat"):
        index = pqkit.index_factory(D, description)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)
            index.train(base)
        one, chunked = pickle.loads(pickle.dumps(index)), pickle.loads(pickle.dumps(index))
        one.add(base)
        chunked.add(mapped)
        assert _io.index_to_bytes(chunked) == _io.index_to_bytes(one)
        with_ids = pickle.loads(pickle.dumps(index))
        with_ids.add_with_ids(mapped, np.arange(len(base)))
        assert _io.index_to_bytes(with_ids) == _io.index_to_bytes(one)
    # a bad row in a late chunk: the chunks added before it are taken back, ids included
    bad = np.array(base)
    bad[2900, 5] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    before = _io.index_to_bytes(one)
    with pytest.raises(ValueError, match=r"in rows 2880\.\.2943 of the memory-mapped x \(nothing "
                                         r"was added\): x contains NaN"):
        one.add(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    assert _io.index_to_bytes(one) == before
    one.add(base[:1])
    assert one.reconstruct(3000).shape == (D,)  # numbering continued at ntotal


def test_add_chunks_builds_the_index_one_add_builds(data, capsys):
    base, queries = data
    index = pqkit.index_factory(D, "IVF8,PQ4x8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(base)
    one, chunked = pickle.loads(pickle.dumps(index)), pickle.loads(pickle.dumps(index))
    one.add(base[:2000])
    one.add_with_ids(base[2000:], np.arange(2000, 3000) + 10**6)

    def parts():  # a generator: nothing but the current chunk exists at once
        for begin in range(0, 2000, 300):
            yield base[begin:min(begin + 300, 2000)]
        yield base[2000:], np.arange(2000, 3000) + 10**6

    assert chunked.add_chunks(parts(), progress=True) == 3000
    assert _io.index_to_bytes(chunked) == _io.index_to_bytes(one)
    assert "3000 vectors" in capsys.readouterr().err  # tqdm's bar
    with pytest.raises(ValueError, match="chunk 1 \\(after 10 vectors added from the chunks before "
                                         "it, which stay\\): add_chunks\\(\\): ids already in"):
        chunked.add_chunks([base[:10], (base[:2], np.array([5, 6]))])
    assert chunked.ntotal == 3010


def test_chunked_adds_keep_memory_at_a_chunk(tmp_path, monkeypatch):
    """The NumPy memory allocated while adding (tracemalloc: conversions and temporaries; the
    engine's lists are not traced) stays at a few chunks, not the whole input: 40 chunks of
    64 rows through add_chunks, and a float64 memmap of 2,560 rows through add."""
    import tracemalloc

    from pqkit.indexes import base as base_module

    d = 64
    rng = np.random.default_rng(3)
    index = pqkit.IndexIVFPQ(d, 4, 8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        index.train(rng.standard_normal((500, d)).astype(np.float32))
    chunk_bytes = 64 * d * 8  # float64 rows

    def chunks():
        for i in range(40):
            yield np.random.default_rng(i).standard_normal((64, d))

    np.save(tmp_path / "x.npy", np.random.default_rng(9).standard_normal((2560, d)))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    index.add_chunks([mapped[:5]])  # first uses (imports, prepared quantizers) outside the count
    index.reset()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert index.add_chunks(chunks()) == 2560
        peak_chunks = tracemalloc.get_traced_memory()[1]
        monkeypatch.setattr(base_module, "_ADD_CHUNK_BYTES", 64 * 4 * d)
        tracemalloc.reset_peak()
        index.add(mapped)
        peak_memmap = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = 2560 * d * 8
    assert peak_chunks < 4 * chunk_bytes < whole and peak_memmap < 4 * chunk_bytes, (
        peak_chunks, peak_memmap, chunk_bytes)
    assert index.ntotal == 5120


# ------------------------------------------------------------------------------- memory
_CHILD = r"""
import json, os, resource, sys
import numpy as np
import pqkit

path, nprobe = os.path.realpath(sys.argv[1]), int(sys.argv[2])
size = os.path.getsize(path)
pqkit.set_num_threads(1)


def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def mapping():
    # Rss and Anonymous bytes of this process's mappings of the file (from /proc/self/smaps)
    out = {"Rss": 0, "Anonymous": 0}
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) >= 6 and fields[5] == path
            elif inside and fields[0].rstrip(":") in out:
                out[fields[0].rstrip(":")] += int(fields[1]) * 1024
    return out


report = {"file": size}
queries = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
start = rss()
index = pqkit.load(path, mmap=True, verify=False)
report["after_load_unverified"] = rss() - start
report["mapped_after_load"] = mapping()["Rss"]
index.nprobe = nprobe
order = np.argsort(((index.centroids - queries) ** 2).sum(1), kind="stable")[:nprobe]
report["probed_bytes"] = int(index.list_sizes()[order].sum()) * (4 * 128 + 8)
D, I = index.search(queries, 10)
report["found"] = int((I >= 0).sum())
report["mapped_after_search"] = mapping()["Rss"]
report["anonymous_in_mapping"] = mapping()["Anonymous"]
report["after_search"] = rss() - start
del index
verified = pqkit.load(path, mmap=True)  # reads every array once, then drops those pages
report["mapped_after_verified_load"] = mapping()["Rss"]
D2, I2 = verified.search(queries, 10)
report["verified_equal"] = bool(np.array_equal(D, D2) and np.array_equal(I, I2))

# Address space: the mapping itself takes the file's size of it, so the limit allows the
# mapping plus a margin far smaller than the file for everything else. A load into memory needs
# another file's worth and must fail; the mapped load and search fit.
del verified
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
margin = 160 << 20
resource.setrlimit(resource.RLIMIT_AS, (vm + size + margin, resource.RLIM_INFINITY))
index = pqkit.load(path, mmap=True)
D3, I3 = index.search(queries, 10)
report["limited_equal"] = bool(np.array_equal(I, I3))
try:
    pqkit.load(path)
    report["in_memory_load_under_limit"] = "loaded"
except (MemoryError, ValueError) as exc:
    report["in_memory_load_under_limit"] = type(exc).__name__
report["margin"] = margin
print(json.dumps(report))
"""


def _write_large_ivfflat(path: Path, n_lists: int, per_list: int, d: int = 128) -> None:
    """A version-2 IVF-Flat file written list by list (the test never holds all of it)."""
    n = n_lists * per_list
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((n_lists, d)).astype(np.float32)
    specs = [("list_sizes", "<i8", [n_lists]), ("ids", "<i8", [n]), ("codes", "|u1", [n, 4 * d]),
             ("centroids", "<f4", [n_lists, d])]
    header = json.dumps({"index_type": "IndexIVFFlat", "pqkit_version": pqkit.__version__,
                         "params": {"d": d, "nlist": n_lists, "metric": "l2", "nprobe": 1,
                                    "seed": 1234},
                         "arrays": [{"name": a, "dtype": t, "shape": s} for a, t, s in specs]},
                        sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        def put(data):
            f.write(data)
            digest.update(data)

        def align():
            put(bytes(-f.tell() % 64))

        put(PREFIX.pack(b"PQKIT\x00\x01\n", 2, len(header)) + header)
        align()
        put(np.full(n_lists, per_list, dtype=np.int64).tobytes())
        align()
        put(np.arange(n, dtype=np.int64).tobytes())
        align()
        for l in range(n_lists):  # each list's vectors around its centroid
            put((centroids[l] + 0.1 * rng.standard_normal((per_list, d), dtype=np.float32)).tobytes())
        align()
        put(centroids.tobytes())
        f.write(digest.digest())


@pytest.mark.skipif(bool(os.environ.get("PQKIT_SANITIZED")),
                    reason="AddressSanitizer reserves terabytes of address space and shadow memory "
                           "(scripts/sanitize.sh); the memory figures hold for the release build")
def test_mapped_search_reads_only_probed_lists(tmp_path):
    """Memory of a mapped ~400 MB index, measured honestly in a fresh child process.

    RLIMIT_AS cannot bound a mapped search below the file's size (a mapping counts toward the
    address space as soon as it exists), so the child checks what a mapping promises instead:
    loading adds almost nothing to its resident set (VmRSS), a search makes resident (the
    mapping's ``Rss`` in /proc/self/smaps) about the probed lists' bytes and nothing else, all of
    it page cache (no anonymous pages: the file is never copied), and a verified load leaves
    nothing resident behind. Then an address-space limit of the mapping plus 160 MB, far below
    a second copy of the file, lets a mapped load and search run but makes a load into memory
    fail: the mapped path really does not allocate the file.
    """
    path = tmp_path / "large.pqkit"
    _write_large_ivfflat(path, n_lists=256, per_list=3200)  # 256 x 3200 x 520 B = 426 MB
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), "4"], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    size = r["file"]
    assert size > 400e6
    assert r["after_load_unverified"] < 0.01 * size and r["mapped_after_load"] < (1 << 20)
    assert r["found"] == 10
    assert 0.9 * r["probed_bytes"] <= r["mapped_after_search"] <= r["probed_bytes"] + (2 << 20)
    assert r["anonymous_in_mapping"] == 0
    assert r["after_search"] < 0.05 * size
    assert r["mapped_after_verified_load"] < (1 << 20) and r["verified_equal"]
    assert r["limited_equal"] and r["in_memory_load_under_limit"] in ("MemoryError", "ValueError")
