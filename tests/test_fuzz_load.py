"""Fuzzing ``pqkit.load``: mutated index files give a clear ValueError or a working index.

Seeds: the small valid files in ``tests/corpus/`` (every index type, format version 1, written by
pqkit 0.1.0 and kept to show that such files still load; ``python -m tests.test_fuzz_load
--write-corpus`` would rewrite them in the current version) plus files written by this run
(format version 2). Mutations
(seeded, plain random):

* raw bytes: truncation, flipped bits and bytes, inserted and deleted bytes, a wrong version, a
  wrong checksum, a huge header length;
* re-checksummed (so they pass the checksum and reach the parsers): header JSON values replaced
  by hostile ones (huge, negative, zero, float, null, string, list, object, NaN, deep nesting),
  keys dropped or added, array shapes, dtypes and names changed, a valid header with a short or
  long body, random bytes in the array data.

Every mutated file is loaded in a child process (so a crash or a hang could not hide inside
pytest) under an address-space limit; each load must return an index (that then answers a
search with the right shapes) or raise ``ValueError("corrupted or not a pqkit file: ...")``.
The child also bounds the memory each load allocates by the file's size (tracemalloc) and the
time each load takes. The numbers are printed and recorded as junit properties.

Environment: ``PQKIT_FUZZ_CASES`` (default 10,000), ``PQKIT_FUZZ_SEED`` (default 0).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).parent / "corpus"
PREFIX = struct.Struct("<8sII")
CASES = int(os.environ.get("PQKIT_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("PQKIT_FUZZ_SEED", "0"))
# Per load: at most this many bytes traced by tracemalloc beyond a fixed allowance.
ALLOC_PER_FILE_BYTE = 8
ALLOC_FIXED = 4 << 20
SLOW_LOAD_SECONDS = 2.0


# ------------------------------------------------------------------------------- seeds
def build_seed_indexes() -> dict:
    """Small indexes of every type and state (name -> index), deterministic."""
    import pqkit

    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        flat = pqkit.IndexFlat(8)
        flat.add_with_ids(x[:20], np.arange(100, 120))
        out["flat-l2"] = flat
        out["flat-empty-ip"] = pqkit.IndexFlat(8, "ip")
        for nbits, metric in ((8, "l2"), (4, "ip"), (5, "cosine")):
            pq = pqkit.IndexPQ(8, 4, nbits, metric)
            pq.pq.niter = 2
            pq.train(x)
            pq.add(x[:30])
            out[f"pq{nbits}-{metric}"] = pq
        out["pq-untrained"] = pqkit.IndexPQ(8, 2, 8)
        ivfflat = pqkit.IndexIVFFlat(8, 4, "cosine", nprobe=2)
        ivfflat.train(x)
        ivfflat.add(x[:25])
        out["ivfflat-cosine"] = ivfflat
        for nbits, metric in ((8, "l2"), (4, "ip"), (3, "l2")):
            ivfpq = pqkit.IndexIVFPQ(8, 4, 2, nbits, metric, nprobe=3)
            ivfpq.pq.niter = 2
            ivfpq.train(x)
            ivfpq.add(x[:30])
            ivfpq.remove_ids([3, 4])
            out[f"ivfpq{nbits}-{metric}"] = ivfpq
        out["ivfpq-untrained"] = pqkit.IndexIVFPQ(8, 3, 4, 4)
        # Composite indexes, where this pqkit has them.
        if hasattr(pqkit, "IndexRefine"):
            refine = pqkit.IndexRefine(pqkit.IndexPQ(8, 2, 4), k_factor=2.0)
            refine.base_index.pq.niter = 2
            refine.train(x)
            refine.add(x[:20])
            out["refine-pq"] = refine
        if hasattr(pqkit, "IndexScalarQuantizer"):
            sq = pqkit.IndexScalarQuantizer(8, "ip")
            sq.train(x)
            sq.add_with_ids(x[:25], np.arange(25) * 5 + 2)
            out["sq-ip"] = sq
            out["sq-untrained"] = pqkit.IndexScalarQuantizer(8)
            refine_sq = pqkit.IndexRefine(pqkit.IndexIVFPQ(8, 3, 2, 4, "l2", nprobe=2), 2.0,
                                          pqkit.IndexScalarQuantizer(8))
            refine_sq.base_index.pq.niter = 2
            refine_sq.train(x)
            refine_sq.add(x[:30])
            out["refine-ivfpq-sq"] = refine_sq
        if hasattr(pqkit, "IndexPreTransform") and hasattr(pqkit, "PCA"):
            pre = pqkit.IndexPreTransform(pqkit.PCA(8, 4), pqkit.IndexIVFFlat(4, 2))
            pre.train(x)
            pre.add(x[:20])
            out["pretransform-pca-ivfflat"] = pre
    return out


def write_corpus() -> None:
    from pqkit import io as _io

    CORPUS.mkdir(exist_ok=True)
    for name, index in build_seed_indexes().items():
        (CORPUS / f"{name}.pqkit").write_bytes(_io.index_to_bytes(index))


def seed_files() -> list:
    """Corpus files plus files of freshly built indexes (the current writer's output)."""
    from pqkit import io as _io

    seeds = [p.read_bytes() for p in sorted(CORPUS.glob("*.pqkit"))]
    seeds += [_io.index_to_bytes(index) for index in build_seed_indexes().values()]
    return seeds


# ------------------------------------------------------------------------------- mutations
def _data_start(version: int, header_length: int) -> int:
    """Where the array data starts: right after the header (version 1) or at the next multiple
    of 64 (version 2, whose arrays are 64-byte aligned)."""
    end = PREFIX.size + header_length
    return -(-end // 64) * 64 if version == 2 else end


def _split(data: bytes):
    """(magic, version, header dict, body bytes) of a well-formed file; the body is everything
    from the first array on (with the alignment padding between arrays in version 2)."""
    magic, version, length = PREFIX.unpack(data[:PREFIX.size])
    header = json.loads(data[PREFIX.size:PREFIX.size + length])
    return magic, version, header, data[_data_start(version, length):-32]


def _join(magic, version, header, body: bytes, raw_header: bytes | None = None) -> bytes:
    raw = json.dumps(header).encode() if raw_header is None else raw_header
    pad = bytes(_data_start(version, len(raw)) - PREFIX.size - len(raw))
    out = PREFIX.pack(magic, version, len(raw)) + raw + pad + body
    return out + hashlib.sha256(out).digest()


def _hostile_value(rng: random.Random):
    return rng.choice([
        0, -1, 1, 2, 3, 7, 255, 256, 2**16 + 1, 2**31, 2**32 + 5, 2**40, 2**62, 2**63, 2**64,
        10**30, -(2**63), 10**400, 0.5, 1e300, -0.0, math.nan, math.inf, None, True, False, "",
        "l2", "ip", "x" * 1000, [], [1, 2], [2**40], {}, {"type": "IndexFlat", "params": {}},
        {"type": "IndexPQ", "params": {"d": 8, "M": 2}}, "IndexFlat", "IndexIVFPQ",
    ])


def _walk(obj, path=()):
    """Every (path, value) inside a JSON value."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, path + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk(value, path + (i,))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _mutate_header(rng, header):
    paths = [p for p, _ in _walk(header) if p]
    path = rng.choice(paths)
    op = rng.random()
    if op < 0.7:
        _set(header, path, _hostile_value(rng))
    elif op < 0.85:
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    else:  # add a key or an array entry
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            parent[rng.choice(["extra", "nlist", "d", "M", "nbits", "shape", "dtype", "name"])] = \
                _hostile_value(rng)
        else:
            parent.append(_hostile_value(rng))
    return header


def mutate(rng: random.Random, data: bytes) -> tuple:
    """(operator name, mutated bytes) for one valid file."""
    magic, version, header, body = _split(data)
    op = rng.choice([
        "truncate", "flip bits", "flip bytes", "insert", "delete", "version", "checksum",
        "header length", "header value", "header value", "header value", "array shape",
        "array dtype", "short body", "long body", "body bytes", "body bytes", "header bytes",
        "deep nesting", "swap arrays",
    ])
    out = bytearray(data)
    if op == "truncate":
        return op, bytes(out[:rng.randrange(len(out))])
    if op in ("flip bits", "flip bytes"):
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= (1 << rng.randrange(8)) if op == "flip bits" else rng.randrange(1, 256)
        return op, bytes(out)
    if op == "insert":
        i = rng.randrange(len(out) + 1)
        return op, bytes(out[:i] + os.urandom(rng.randint(1, 64)) + out[i:])
    if op == "delete":
        i = rng.randrange(len(out))
        return op, bytes(out[:i] + out[i + rng.randint(1, 64):])
    if op == "version":
        new_version = rng.choice([0, 2, 3, 255, 2**31, 2**32 - 1])
        fixed = rng.random() < 0.5  # with and without a valid checksum
        if fixed:
            return op, _join(magic, new_version, header, body)
        out[8:12] = struct.pack("<I", new_version)
        return op, bytes(out)
    if op == "checksum":
        out[-rng.randint(1, 32)] ^= rng.randrange(1, 256)
        return op, bytes(out)
    if op == "header length":
        out[12:16] = struct.pack("<I", rng.choice([0, 1, len(data), 2**20, 2**20 + 1, 2**32 - 1,
                                                    rng.randrange(2**32)]))
        return op, bytes(out)
    if op == "header value":
        return op, _join(magic, version, _mutate_header(rng, header), body)
    if op in ("array shape", "array dtype", "swap arrays"):
        arrays = header.get("arrays") or []
        if not arrays:
            return op, _join(magic, version, _mutate_header(rng, header), body)
        spec = rng.choice(arrays)
        if op == "array shape":
            shape = list(spec.get("shape", []))
            choice = rng.random()
            if shape and choice < 0.6:
                shape[rng.randrange(len(shape))] = rng.choice([0, 1, 2, 2**31, 2**61, 2**62 - 1])
            elif choice < 0.8:
                shape = shape + [rng.choice([1, 2])]
            else:
                shape = shape[:-1]
            spec["shape"] = shape
        elif op == "array dtype":
            spec["dtype"] = rng.choice(["<f4", "<i8", "|u1", "<f8", ">f4", "|O", "<U4", "V8"])
        else:
            rng.shuffle(arrays)
        return op, _join(magic, version, header, body)
    if op == "short body":
        return op, _join(magic, version, header, body[:rng.randrange(max(1, len(body)))])
    if op == "long body":
        return op, _join(magic, version, header, body + os.urandom(rng.randint(1, 256)))
    if op == "body bytes":
        if not body:
            return op, _join(magic, version, _mutate_header(rng, header), body)
        b = bytearray(body)
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(b))
            b[i] = rng.choice([0, 255, 0x7F, 0x80, rng.randrange(256)])
        if rng.random() < 0.3:  # a NaN or inf float32 somewhere aligned
            i = rng.randrange(max(1, len(b) // 4)) * 4
            b[i:i + 4] = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf, 3e38]))
        return op, _join(magic, version, header, bytes(b))
    if op == "header bytes":  # raw header damage, checksum recomputed
        raw = bytearray(json.dumps(header).encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return op, _join(magic, version, header, body, raw_header=bytes(raw))
    # deep nesting
    depth = rng.choice([50, 1000, 100_000])
    raw = (b"[" * depth + b"]" * depth) if rng.random() < 0.5 else json.dumps(header).encode()
    if raw[0:1] != b"[":
        nested = {"type": "IndexRefine", "params": {}}
        cur = nested
        for _ in range(min(depth, 200)):
            cur["params"] = {"base": {"type": "IndexRefine", "params": {}}}
            cur = cur["params"]["base"]
        header.setdefault("params", {})["base"] = nested
        raw = json.dumps(header).encode()
    return op, _join(magic, version, header, body, raw_header=raw)


# ------------------------------------------------------------------------------- campaign
def campaign(n_cases: int, seed: int) -> dict:
    """Run the fuzz campaign in this process; return the summary (used by the child)."""
    import faulthandler
    import resource
    import time
    import tracemalloc

    import pqkit
    from pqkit import io as _io

    pqkit.set_num_threads(1)
    seeds = seed_files()
    queries = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    # Address-space cap: anything allocating far beyond the files fails fast instead of
    # swapping; the cap is the current size plus 1 GiB.
    # (Not under AddressSanitizer, which reserves terabytes of shadow address space.)
    if not os.environ.get("PQKIT_SANITIZED"):
        with open("/proc/self/statm") as f:
            vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
        cap = vm_bytes + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    faulthandler.dump_traceback_later(120, exit=True)  # a hang ends the child loudly

    rng = random.Random(seed)
    stats = {"cases": 0, "loaded": 0, "value_errors": 0, "other_errors": 0, "by_operator": {},
             "search_refused": 0, "search_refused_examples": {},
             "max_seconds": 0.0, "max_alloc_ratio": 0.0, "failures": []}
    tracemalloc.start()
    for _ in range(n_cases):
        op, data = mutate(rng, rng.choice(seeds))
        stats["cases"] += 1
        stats["by_operator"][op] = stats["by_operator"].get(op, 0) + 1
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        start = time.perf_counter()
        outcome = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                index = _io.index_from_bytes(data)
            stats["loaded"] += 1
            if index.is_trained:
                try:
                    D, I = index.search(queries, 3)
                except (ValueError, TypeError) as exc:
                    # A valid file may hold parameters a search refuses, as it would refuse
                    # them on an index built with them (e.g. an IndexRefine k_factor of 1e30
                    # asks for more candidates than memory holds): a typed error, counted.
                    stats["search_refused"] += 1
                    stats["search_refused_examples"][type(exc).__name__ + ": "
                                                     + str(exc)[:100]] = op
                    if str(exc).startswith("x contains NaN"):  # the queries are finite
                        outcome = (f"{op}: loaded index (stored values not finite?) blames the "
                                   f"finite query: {exc}")
                else:
                    if D.shape != (2, 3) or I.shape != (2, 3) or D.dtype != np.float32:
                        outcome = f"{op}: loaded index searched to shapes {D.shape}, {I.shape}"
        except ValueError as exc:
            stats["value_errors"] += 1
            if not str(exc).startswith("corrupted or not a pqkit file: "):
                outcome = f"{op}: ValueError without the file prefix: {exc}"
        except BaseException as exc:  # judged: everything but ValueError is a failure
            if isinstance(exc, KeyboardInterrupt):
                raise
            stats["other_errors"] += 1
            outcome = f"{op}: {type(exc).__name__}: {str(exc)[:300]}"
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        ratio = (peak - base) / len(data) if len(data) >= 4096 else 0.0  # large files only
        stats["max_seconds"] = max(stats["max_seconds"], seconds)
        stats["max_alloc_ratio"] = max(stats["max_alloc_ratio"], ratio)
        if seconds > SLOW_LOAD_SECONDS:
            outcome = outcome or f"{op}: load took {seconds:.1f} s"
        if peak - base > ALLOC_FIXED + ALLOC_PER_FILE_BYTE * len(data):
            outcome = outcome or f"{op}: allocated {peak - base} bytes for a {len(data)}-byte file"
        if outcome:
            stats["failures"].append(outcome)
    tracemalloc.stop()
    stats["seeds"] = len(seeds)
    stats["max_file_bytes"] = max(len(s) for s in seeds)
    return stats


def test_corpus_files_are_valid_and_current():
    import pqkit

    files = sorted(CORPUS.glob("*.pqkit"))
    assert len(files) >= 13, (
        "the seed corpus is missing; run python -m tests.test_fuzz_load --write-corpus")
    for path in files:
        index = pqkit.load(path)
        assert index.ntotal >= 0 and index.d > 0


def test_loading_never_unpickles_or_evaluates():
    import inspect

    from pqkit import io as _io

    source = inspect.getsource(_io)
    for forbidden in ("import pickle", "pickle.load", "marshal", "eval(", "exec(",
                      "allow_pickle=True", "np.load("):
        assert forbidden not in source, forbidden


def test_fuzz_load(record_property):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_fuzz_load", "--campaign", str(CASES), str(SEED)],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, f"fuzz child died (crash or hang):\n{proc.stderr[-4000:]}"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("cases", "loaded", "value_errors", "other_errors"):
        record_property(f"fuzz_{key}", stats[key])
    print(f"\nfuzz: {stats['cases']} mutated files from {stats['seeds']} seeds: "
          f"{stats['loaded']} loaded, {stats['value_errors']} ValueError, "
          f"{stats['other_errors']} other errors, 0 crashes; {stats['search_refused']} loaded "
          f"indexes refused a search with a typed error "
          f"({sorted(stats['search_refused_examples'])[:3]}); slowest load "
          f"{stats['max_seconds'] * 1000:.1f} ms; peak allocation per load at most "
          f"{stats['max_alloc_ratio']:.1f}x the file size (files >= 4 KiB); "
          f"by operator {stats['by_operator']}")
    assert stats["cases"] == CASES
    assert stats["value_errors"] > CASES // 2  # most mutations must be refused
    assert not stats["failures"], "\n".join(stats["failures"][:30])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-corpus"]:
        write_corpus()
    elif sys.argv[1:2] == ["--campaign"]:
        print(json.dumps(campaign(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        sys.exit("usage: python -m tests.test_fuzz_load --write-corpus | --campaign N SEED")
