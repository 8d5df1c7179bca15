"""Crafted index files: structural attacks with a valid checksum.

Byte fuzzing (``test_fuzz_load``) mostly hits the framing. These files are made the way an attacker
would make them: each seed index (every type and state) is parsed, then one header field or one
array is set to a value chosen to break an invariant of its index type (overflowing, negative,
huge, zero, wrong dtype, wrong shape, non-finite, beyond the magnitude bound, list sizes whose
int64 sum wraps, duplicated or extreme ids, code padding bits, stray or missing arrays and
parameters), or to a different but valid value (another nprobe, sizes moved between lists, ids
permuted). The file is written back with its checksum recomputed, so every file reaches the
parsers.

The seeds are files of format version 2 (what pqkit writes: 64-byte aligned arrays, PQ codes in
the blocked scan layout, the L2 IVF-PQ bias stored) and, for a few of them, the same index in
format version 1 (codes as rows, no bias), which pqkit still reads.

First every (seed, field or array, attack) pair is enumerated once; random pairs of attacks fill
up the rest of the cases. Each file is loaded and searched in a child process (a crash or a hang
cannot hide inside pytest) under an address-space limit, and must either

* raise ``ValueError("corrupted or not a pqkit file: ...")`` at load, or
* load into an index whose ``search`` equals a NumPy reference computed from the file's own
  contents (up to float rounding and near-ties; see ``tests/reference.py``), with no ``-1``
  padding while enough vectors are reachable, and whose ``memory_usage_bytes`` stays within a
  small multiple of the file's size.

Every case is loaded three ways: from bytes, mapped (``pqkit.load(path, mmap=True)``, which runs
the same checks on the mapped arrays) and mapped without verification (``verify=False``). The
first two must agree: both refuse, or both load and the mapped index answers bit for bit as the
other (a version-1 file cannot be mapped: a ValueError). The unverified load trusts the file, so
its answers are not judged, but it must refuse with a ValueError or load and search with at most
a typed error: never a crash, a hang or another exception (the engine never reads outside the
arrays whatever their contents).

A loaded index may refuse a search with a typed error (ValueError/TypeError) where an index built
from the same contents would too (a transform mapping queries beyond the float range); those are
counted apart. Environment: ``PQKIT_CRAFTED_CASES`` (default 10,000), ``PQKIT_CRAFTED_SEED``
(default 0).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

CASES = int(os.environ.get("PQKIT_CRAFTED_CASES", "10000"))
SEED = int(os.environ.get("PQKIT_CRAFTED_SEED", "0"))
PREFIX = struct.Struct("<8sII")
K = 5
# memory_usage_bytes of a loaded index: at most this multiple of the file size plus the allowance.
MEMORY_FACTOR = 4
MEMORY_ALLOWANCE = 64 << 20
AMBIGUOUS_ROWS = [0]  # query rows the oracle skipped: two lists equally near at the nprobe cut


# ------------------------------------------------------------------------------- files
def _offsets(version: int, header_length: int, arrays) -> tuple:
    """(offset of each array, end of the data): consecutive after the header (version 1), or
    each at the next multiple of 64 (version 2)."""
    position = PREFIX.size + header_length
    offsets = []
    for arr in arrays:
        offset = -(-position // 64) * 64 if version >= 2 else position
        offsets.append(offset)
        position = offset + arr
    if version >= 2 and not offsets:
        position = -(-position // 64) * 64
    return offsets, position


def parse(data: bytes) -> tuple:
    """(header dict, {name: array}) of a well-formed file of either format version."""
    magic, version, length = PREFIX.unpack(data[:PREFIX.size])
    header = json.loads(data[PREFIX.size:PREFIX.size + length])
    sizes = [math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize for spec in header["arrays"]]
    offsets, _ = _offsets(version, length, sizes)
    arrays = {}
    for spec, offset in zip(header["arrays"], offsets):
        dtype = np.dtype(spec["dtype"])
        count = math.prod(spec["shape"])
        arrays[spec["name"]] = np.frombuffer(data, dtype, count, offset).reshape(spec["shape"]).copy()
    return header, arrays


def version_of(data: bytes) -> int:
    return PREFIX.unpack(data[:PREFIX.size])[1]


def write(header: dict, arrays: dict, version: int = 2) -> bytes:
    """A file of this header and these arrays (the array list rebuilt, the arrays aligned as
    ``version`` lays them out), checksum recomputed."""
    header = dict(header)
    header["arrays"] = [{"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}
                        for name, arr in arrays.items()]
    raw = json.dumps(header).encode()
    payload = [np.ascontiguousarray(arr).tobytes() for arr in arrays.values()]
    offsets, end = _offsets(version, len(raw), [len(p) for p in payload])
    out = bytearray(PREFIX.pack(b"PQKIT\x00\x01\n", version, len(raw)) + raw)
    for offset, body in zip(offsets, payload):
        out += bytes(offset - len(out)) + body
    out += bytes(end - len(out))
    return bytes(out) + hashlib.sha256(out).digest()


def to_rows(header: dict, arrays: dict) -> dict:
    """The arrays of a version-2 file in the row form of version 1: blocked PQ codes as rows in
    list order and no stored bias (the form the NumPy reference reads). Composite parts too."""
    return _to_rows(header["index_type"], header["params"], arrays, "")


def _to_rows(index_type: str, params: dict, arrays: dict, prefix: str) -> dict:
    out = dict(arrays)
    if index_type in ("IndexPQ", "IndexIVFPQ"):
        out.pop(prefix + "bias", None)
        blocks = arrays.get(prefix + "codes")
        ids = arrays.get(prefix + "ids")
        if blocks is not None and blocks.ndim == 3 and ids is not None:
            sizes = (arrays[prefix + "list_sizes"] if index_type == "IndexIVFPQ"
                     else np.array([ids.size], dtype=np.int64))
            starts = np.concatenate(([0], np.cumsum(-(-sizes // 64))))
            rows = [blocks[starts[l]:starts[l + 1]].transpose(0, 2, 1).reshape(-1, blocks.shape[1])[:sizes[l]]
                    for l in range(sizes.size)]
            out[prefix + "codes"] = (np.concatenate(rows) if rows
                                     else np.empty((0, blocks.shape[1]), np.uint8))
    for key, part in params.items():
        if isinstance(part, dict) and set(part) == {"type", "params"}:
            out = _to_rows(part["type"], part["params"], out, prefix + key + ".")
    return out


#: Seeds also given as version-1 files (still read, never mapped).
V1_SEEDS = ("ivfpq8-l2", "pq4-ip", "refine-ivfpq-flat", "ivfflat-l2")


def seeds() -> dict:
    """name -> file bytes of small indexes of every type and state (format version 2), and of
    :data:`V1_SEEDS` in format version 1 (named ``"v1-<name>"``)."""
    from pqkit import io as _io
    from tests.test_fuzz_load import build_seed_indexes

    import pqkit

    indexes = build_seed_indexes()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        flat = pqkit.IndexFlat(8, "cosine")
        flat.add(x[:40])
        indexes["flat-cosine"] = flat
        ivfflat = pqkit.IndexIVFFlat(8, 6, "l2", nprobe=2)
        ivfflat.train(x)
        ivfflat.add_with_ids(x[:60], np.arange(60) * 7 + 3)
        indexes["ivfflat-l2"] = ivfflat
        ivfpq = pqkit.IndexIVFPQ(8, 5, 4, 4, "cosine", nprobe=2)
        ivfpq.pq.niter = 2
        ivfpq.train(x)
        ivfpq.add(x[:50])
        indexes["ivfpq4-cosine"] = ivfpq
        # anisotropic PQ: the optional "anisotropic_eta" parameter
        aniso_pq = pqkit.IndexPQ(8, 4, 4, "ip", anisotropic_eta=4.0)
        aniso_pq.pq.niter = 2
        aniso_pq.train(x)
        aniso_pq.add(x[:30])
        indexes["pq4-ip-anisotropic"] = aniso_pq
        aniso_ivfpq = pqkit.IndexIVFPQ(8, 4, 2, 4, "cosine", nprobe=2, anisotropic_eta=2.5)
        aniso_ivfpq.pq.niter = 2
        aniso_ivfpq.train(x)
        aniso_ivfpq.add(x[:40])
        indexes["ivfpq4-cosine-anisotropic"] = aniso_ivfpq
        refine = pqkit.IndexRefine(pqkit.IndexIVFPQ(8, 4, 2, 8, nprobe=4))
        refine.base_index.pq.niter = 2
        refine.train(x)
        refine.add(x[:40])
        indexes["refine-ivfpq-flat"] = refine
    out = {name: _io.index_to_bytes(index) for name, index in sorted(indexes.items())}
    for name in V1_SEEDS:
        header, arrays = parse(out[name])
        out[f"v1-{name}"] = write(header, to_rows(header, arrays), version=1)
    return out


# ------------------------------------------------------------------------------- attacks
def _int_values(value: int) -> list:
    return [value - 1, value + 1, 2 * value, value // 2, -value]


HOSTILE_VALUES = [
    0, -1, 1, 2, 3, 4, 7, 8, 16, 17, 255, 256, 2**31 - 1, 2**31, 2**32 + 1, 2**53 + 1, 2**62,
    2**63 - 1, 2**63, 2**64, -(2**63), 30_000_000, 1.0, 0.5, 1e300, -0.0, math.nan, math.inf,
    -math.inf, True, False, None, "8", "", "l2", "ip", "cosine", "L2", "IndexFlat", [], [8], {},
]


def leaf_paths(obj, path=()):
    """Paths of every non-container value inside a JSON value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaf_paths(value, path + (key,))
    else:
        yield path


def container_paths(obj, path=()):
    """Paths of every dict inside a JSON value (where keys can be dropped or added)."""
    if isinstance(obj, dict):
        yield path
        for key, value in obj.items():
            yield from container_paths(value, path + (key,))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def param_attacks(params: dict) -> list:
    """(name, function(header, arrays)) for every parameter field."""
    attacks = []
    for path in leaf_paths(params):
        current = _get(params, path)
        values = list(HOSTILE_VALUES)
        if type(current) is int:
            values += _int_values(current)
        for value in values:
            def attack(header, arrays, path=path, value=value):
                _get(header["params"], path[:-1])[path[-1]] = value
            attacks.append((f"param {'.'.join(map(str, path))}={value!r}"[:80], attack))
    for path in container_paths(params):
        for key in list(_get(params, path)):
            def drop(header, arrays, path=path, key=key):
                del _get(header["params"], path)[key]
            attacks.append((f"drop param {'.'.join(map(str, path + (key,)))}", drop))

        def extra(header, arrays, path=path):
            _get(header["params"], path)["extra"] = 1
        attacks.append((f"extra param in {'.'.join(map(str, path)) or 'params'}", extra))
    return attacks


def header_attacks() -> list:
    attacks = []
    for type_name in ("IndexFlat", "IndexPQ", "IndexScalarQuantizer", "IndexIVFFlat", "IndexIVFPQ",
                      "IndexRefine",
                      "IndexPreTransform", "Index", "_IndexIVF", "ProductQuantizer"):
        def retype(header, arrays, type_name=type_name):
            header["index_type"] = type_name
        attacks.append((f"index_type={type_name}", retype))
    return attacks


def _role(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    return {"ids": "ids", "list_sizes": "sizes", "codes": "codes", "bias": "bias"}.get(last, "floats")


def _set_some(rng, arr, value):
    flat = arr.reshape(-1)
    if flat.size:
        for i in rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 4))), replace=False):
            flat[i] = value


def array_attacks(arrays: dict, params: dict) -> list:
    """(name, function(header, arrays)) for every stored array."""
    attacks = []
    dtypes = (np.float32, np.int64, np.uint8)
    for name in list(arrays):
        role = _role(name)

        def add(label, fn, name=name):
            def attack(header, arrays, rng):
                fn(arrays, name, rng)
            attacks.append((f"{name}: {label}", attack))

        for dtype in dtypes:
            if arrays[name].dtype != dtype:
                def cast(arrays, name, rng, dtype=dtype):
                    with np.errstate(all="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        arrays[name] = arrays[name].astype(dtype)
                add(f"cast to {np.dtype(dtype)}", cast)

                def view(arrays, name, rng, dtype=dtype):
                    raw = arrays[name].reshape(-1).view(np.uint8)
                    size = np.dtype(dtype).itemsize
                    arrays[name] = raw[: raw.size // size * size].view(dtype).copy()
                add(f"reinterpret as {np.dtype(dtype)}", view)
        add("drop", lambda arrays, name, rng: arrays.pop(name))
        add("rename", lambda arrays, name, rng: arrays.__setitem__(name + "x", arrays.pop(name)))
        add("append a row", lambda arrays, name, rng: arrays.__setitem__(
            name, np.concatenate([arrays[name], arrays[name][-1:]]) if arrays[name].size
            else np.zeros((1,) + arrays[name].shape[1:], arrays[name].dtype)))
        add("drop a row", lambda arrays, name, rng: arrays.__setitem__(name, arrays[name][:-1]))
        add("empty", lambda arrays, name, rng: arrays.__setitem__(name, arrays[name][:0]))
        add("flatten", lambda arrays, name, rng: arrays.__setitem__(name, arrays[name].reshape(-1)))
        add("extra axis", lambda arrays, name, rng: arrays.__setitem__(name, arrays[name][..., None]))
        add("transpose", lambda arrays, name, rng: arrays.__setitem__(
            name, np.ascontiguousarray(arrays[name].T)))
        if role == "bias":  # a stored bias one ulp off, or of another code
            def ulp(arrays, name, rng):
                bias = arrays[name]
                if bias.size:
                    i = int(rng.integers(bias.size))
                    bias[i] = np.nextafter(bias[i], np.float32(np.inf))
            add("one ulp up", ulp)

            def rotate(arrays, name, rng):
                arrays[name] = np.roll(arrays[name], 1)
            add("rotated", rotate)
        if role in ("floats", "bias"):
            for value in (np.nan, np.inf, -np.inf, 3e38, -3e38, 1e20, 1e-45, -0.0, "over", "under"):
                def put(arrays, name, rng, value=value):
                    arr = arrays[name]
                    if isinstance(value, str):  # just beyond or within the magnitude bound
                        d = arr.shape[-1] if arr.ndim else 1
                        if name.endswith("codebooks"):
                            d = arr.shape[0] * arr.shape[-1]
                        # pqkit's documented bound: |value| <= sqrt(2**120 / d)
                        bound = np.float32(math.sqrt(2.0**120 / max(d, 1)))
                        value = (np.nextafter(bound, np.float32(np.inf)) if value == "over"
                                 else bound)
                    _set_some(rng, arr, value)
                add(f"values {value}", put)
            for scale in (1e20, 1e-30, -1.0):
                add(f"scaled by {scale}", lambda arrays, name, rng, scale=scale: arrays.__setitem__(
                    name, (arrays[name].astype(np.float64) * scale).astype(arrays[name].dtype)))
        elif role == "ids":
            for value in (-1, -(2**63), 2**63 - 1, 2**62, 0):
                add(f"values {value}", lambda arrays, name, rng, value=value: _set_some(
                    rng, arrays[name], value))

            def duplicate(arrays, name, rng):
                ids = arrays[name]
                if ids.size > 1:
                    ids[int(rng.integers(1, ids.size))] = ids[0]
            add("duplicate id", duplicate)
            add("permute", lambda arrays, name, rng: rng.shuffle(arrays[name]))
        elif role == "sizes":
            for value in (-1, 2**63 - 1, -(2**63), 1, 0):
                add(f"values {value}", lambda arrays, name, rng, value=value: _set_some(
                    rng, arrays[name], value))

            def wrap(arrays, name, rng):  # the int64 sum wraps around to the true total
                sizes = arrays[name]
                if sizes.size >= 2:
                    with np.errstate(over="ignore"):
                        sizes[0] = sizes[0] + np.int64(2**62)
                        sizes[1] = sizes[1] + np.int64(2**62)
                        sizes[-1] = sizes[-1] - np.int64(2**62) * 2 if sizes.size > 2 else sizes[-1]
            add("sum wraps", wrap)

            def wrap4(arrays, name, rng):
                sizes = arrays[name]
                if sizes.size >= 4:
                    with np.errstate(over="ignore"):
                        for i in range(4):
                            sizes[i] = sizes[i] + np.int64(2**62)
            add("four sizes of 2**62", wrap4)

            def move(arrays, name, rng):  # valid: entries change lists
                sizes = arrays[name]
                full = np.flatnonzero(sizes > 0)
                if full.size and sizes.size > 1:
                    src = int(rng.choice(full))
                    dst = int((src + 1 + rng.integers(sizes.size - 1)) % sizes.size)
                    sizes[src] -= 1
                    sizes[dst] += 1
            add("move one entry to another list", move)

            def gather(arrays, name, rng):
                sizes = arrays[name]
                total = int(sizes.sum())
                sizes[:] = 0
                if sizes.size:
                    sizes[-1] = total
            add("all entries in the last list", gather)
        else:  # codes
            add("random bytes", lambda arrays, name, rng: arrays.__setitem__(
                name, rng.integers(0, 256, arrays[name].shape, dtype=np.uint8)))
            add("all 0xff", lambda arrays, name, rng: arrays[name].fill(255))

            def swap(arrays, name, rng):
                codes = arrays[name]
                if codes.shape[0] > 1:
                    codes[[0, -1]] = codes[[-1, 0]]
            add("swap rows", swap)

            def padding_code(arrays, name, rng):  # blocked codes: a byte of a padding code
                codes = arrays[name]
                if codes.ndim == 3 and codes.size:
                    codes[-1, int(rng.integers(codes.shape[1])), -1] = 1
            add("padding code set", padding_code)

            def nan_floats(arrays, name, rng):  # raw float32 codes of IVFFlat
                codes = arrays[name]
                if codes.size >= 4:
                    codes.reshape(-1)[:4] = np.frombuffer(struct.pack("<f", math.nan), np.uint8)
            add("NaN float bytes", nan_floats)
    attacks.append(("extra array", lambda header, arrays, rng: arrays.__setitem__(
        "extra", np.zeros((2, 2), np.float32))))
    return attacks


def all_attacks(header: dict, arrays: dict) -> list:
    """Every attack on one seed, each a function(header, arrays, rng) mutating in place."""
    out = [(name, (lambda fn: lambda h, a, rng: fn(h, a))(fn))
           for name, fn in param_attacks(header["params"]) + header_attacks()]
    return out + array_attacks(arrays, header["params"])


def crafted_cases(n_cases: int, seed: int):
    """Yield (seed name, attack names, file bytes): each attack once, then random pairs."""
    rng = np.random.default_rng(seed)
    files = seeds()
    parsed = {name: parse(data) for name, data in files.items()}
    versions = {name: version_of(data) for name, data in files.items()}
    plan = []
    for name, (header, arrays) in parsed.items():
        for attack in all_attacks(header, arrays):
            plan.append((name, [attack]))
    systematic = len(plan)
    order = rng.permutation(len(plan))[:n_cases] if n_cases < len(plan) else range(len(plan))
    chosen = [plan[i] for i in order]
    names = sorted(parsed)
    while len(chosen) < n_cases:
        name = names[int(rng.integers(len(names)))]
        header, arrays = parsed[name]
        attacks = all_attacks(header, arrays)
        picks = rng.choice(len(attacks), size=2, replace=False)
        chosen.append((name, [attacks[i] for i in picks]))
    for name, attacks in chosen:
        header, arrays = parsed[name]
        header, arrays = copy.deepcopy(header), {k: v.copy() for k, v in arrays.items()}
        for _, attack in attacks:
            try:
                attack(header, arrays, rng)
            except (KeyError, IndexError, TypeError, ValueError, OverflowError):
                pass  # an earlier attack removed or retyped what this one targets
        yield (name, " + ".join(label for label, _ in attacks),
               write(header, arrays, versions[name]), systematic)


# ------------------------------------------------------------------------------- the oracle
def _core_metric(metric: str) -> str:
    return "l2" if metric == "l2" else "ip"


def _better_first(dist: np.ndarray, metric: str) -> np.ndarray:
    return np.argsort(dist if metric == "l2" else -dist, axis=-1, kind="stable")


def reference_candidates(index_type: str, params: dict, arrays: dict, queries: np.ndarray):
    """For each query: None (ambiguous probing) or (distances over the candidates, their ids,
    the squared-norm scale of the vectors involved), the candidates being what the index may
    return (all stored vectors, or those of the probed lists)."""
    from tests import reference as ref

    if index_type == "IndexPreTransform":
        inner = params["index"]
        A = arrays["transform.A"].astype(np.float64)
        b = arrays["transform.b"].astype(np.float64)
        moved = (queries.astype(np.float64) @ A.T + b).astype(np.float32)
        return reference_candidates(inner["type"], inner["params"],
                                    {k[6:]: v for k, v in arrays.items() if k.startswith("index.")},
                                    moved)
    metric = params["metric"]
    core = _core_metric(metric)
    q = queries.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    ids = arrays["ids"]
    if index_type in ("IndexFlat", "IndexPQ", "IndexScalarQuantizer"):
        if index_type == "IndexFlat":
            vectors = arrays["vectors"].astype(np.float64)
            dist = ref.pairwise(q, vectors, core)
        elif index_type == "IndexScalarQuantizer":  # levels vmin + code * step (float32)
            codes = arrays["codes"]
            vectors = (arrays["vmin"] + codes.astype(np.float32) * arrays["step"]
                       if codes.size else np.empty(codes.shape, np.float32)).astype(np.float64)
            dist = ref.pairwise(q, vectors, core)
        else:
            indices = ref.unpack_codes(arrays["codes"], params["M"], params["nbits"])
            vectors = ref.pq_decode(indices, arrays["codebooks"]).astype(np.float64)
            dist = ref.adc(ref.pq_tables(q, arrays["codebooks"], core), indices)
        scale = _scale(q, vectors)
        return [(row, ids, scale) for row in dist]
    centroids = arrays["centroids"].astype(np.float64)
    list_nos = np.repeat(np.arange(params["nlist"]), arrays["list_sizes"])
    if index_type == "IndexIVFFlat":
        vectors = arrays["codes"].view(np.float32).reshape(len(ids), -1).astype(np.float64)
    else:
        indices = ref.unpack_codes(arrays["codes"], params["M"], params["nbits"])
        vectors = centroids[list_nos] + ref.pq_decode(indices, arrays["codebooks"]).astype(np.float64)
    coarse = ref.pairwise(q, centroids, core)
    scale = _scale(q, vectors, centroids)
    out = []
    for row, coarse_row in zip(q, coarse):
        order = _better_first(coarse_row, core)
        nprobe = params["nprobe"]
        if nprobe < order.size and abs(coarse_row[order[nprobe - 1]] - coarse_row[order[nprobe]]) <= 1e-4 * scale:
            out.append(None)  # which of two equally near lists is probed is a rounding matter
            continue
        members = np.flatnonzero(np.isin(list_nos, order[:nprobe]))
        out.append((ref.pairwise(row[None], vectors[members], core)[0], ids[members], scale))
    return out


def _scale(*arrays) -> float:
    """The largest squared norm among these vectors: float32 distances err by a few ulps of it."""
    return max([float(np.max(np.sum(a * a, axis=1))) for a in arrays if a.size] + [1e-30])


def check_answer(index_type: str, params: dict, arrays: dict, queries, D, I) -> str | None:
    """None if (D, I) is what the file's contents give; otherwise what is wrong."""
    from tests import reference as ref

    if index_type == "IndexRefine":
        return check_refine_answer(params, arrays, queries, D, I)
    arrays = _to_rows(index_type, params, arrays, "")
    candidates = reference_candidates(index_type, params, arrays, queries)
    metric = params["index"]["params"]["metric"] if index_type == "IndexPreTransform" else params["metric"]
    for row, cand in enumerate(candidates):
        if cand is None:
            AMBIGUOUS_ROWS[0] += 1
            continue
        dist, ids, scale = cand
        try:
            ref.assert_knn_equal_up_to_ties(D[row:row + 1], I[row:row + 1], dist[None], K,
                                            "l2" if metric == "l2" else "ip",
                                            atol=1e-4 * scale, rtol=1e-4, ids=ids)
        except AssertionError as exc:
            return f"query {row}: {str(exc).strip().splitlines()[0][:300]}"
    return None


def check_refine_answer(params, arrays, queries, D, I) -> str | None:
    """IndexRefine: every returned id is stored, its distance is its exact refine distance, rows
    are sorted and free of repeats, and a base without lists pads nothing while ntotal >= k."""
    refine = params["refine"]
    arrays = _to_rows("IndexRefine", params, arrays, "")
    part = {k[7:]: v for k, v in arrays.items() if k.startswith("refine.")}
    # the refine distances of every stored vector, one "candidate set" per query
    full = reference_candidates(refine["type"], refine["params"], part, queries)
    metric = refine["params"]["metric"]
    for row, (dist, ids, scale) in enumerate(full):
        lookup = {int(v): float(d) for v, d in zip(ids, dist)}
        found = I[row][I[row] >= 0]
        if np.unique(found).size != found.size:
            return f"query {row}: repeated ids {I[row]}"
        if any(int(v) not in lookup for v in found):
            return f"query {row}: ids never stored {I[row]}"
        truth = np.array([lookup[int(v)] for v in found])
        if not np.allclose(D[row][: found.size], truth, rtol=1e-4, atol=1e-4 * scale):
            return f"query {row}: refine distances {D[row]} differ from the exact ones {truth}"
        step = np.diff(D[row][: found.size].astype(np.float64))
        if not (np.all(step >= -1e-4 * scale) if metric == "l2" else np.all(step <= 1e-4 * scale)):
            return f"query {row}: not sorted {D[row]}"
        if params["base"]["type"] in ("IndexFlat", "IndexPQ") and found.size < min(K, len(ids)):
            return f"query {row}: padded with -1 although {len(ids)} vectors are stored"
    return None


# ------------------------------------------------------------------------------- campaign
def campaign(n_cases: int, seed: int) -> dict:
    """Run the crafted-file campaign in this process (the child); return the summary."""
    import faulthandler
    import resource

    import pqkit
    from pqkit import io as _io

    pqkit.set_num_threads(1)
    if not os.environ.get("PQKIT_SANITIZED"):  # ASan reserves terabytes of address space
        with open("/proc/self/statm") as f:
            vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
        cap = vm_bytes + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    stats = {"cases": 0, "refused": 0, "loaded": 0, "answered_exactly": 0, "ambiguous_rows": 0,
             "search_refused": 0, "search_refused_examples": {}, "other_errors": 0,
             "wrong_answers": 0, "failures": [], "systematic": 0, "by_seed": {},
             "mapped_loaded": 0, "mapped_answered_identically": 0, "unverified_loaded": 0,
             "unverified_searched": 0}
    rng = np.random.default_rng(seed + 1)
    folder = tempfile.mkdtemp(prefix="pqkit-crafted-")
    for name, label, data, systematic in crafted_cases(n_cases, seed):
        stats["systematic"] = systematic
        stats["cases"] += 1
        stats["by_seed"][name] = stats["by_seed"].get(name, 0) + 1
        faulthandler.dump_traceback_later(30, exit=True)  # a hang ends the child loudly
        sys.stderr.write(f"case {stats['cases']}: {name}: {label}\n")
        outcome, index = None, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                index = _io.index_from_bytes(data)
        except ValueError as exc:
            stats["refused"] += 1
            if not str(exc).startswith("corrupted or not a pqkit file: "):
                outcome = f"ValueError without the file prefix: {exc}"
        except BaseException as exc:  # everything but ValueError is a failure
            if isinstance(exc, KeyboardInterrupt):
                raise
            stats["other_errors"] += 1
            outcome = f"{type(exc).__name__} at load: {str(exc)[:300]}"
        else:
            stats["loaded"] += 1
            outcome = judge_loaded(index, data, rng, stats)
            stats["ambiguous_rows"] = AMBIGUOUS_ROWS[0]
        path = os.path.join(folder, f"case{stats['cases']}.pqkit")
        with open(path, "wb") as f:
            f.write(data)
        try:
            outcome = outcome or judge_mapped(path, index if outcome is None else None,
                                              version_of(data), stats)
        finally:
            index = None
            os.unlink(path)  # a mapping still open keeps the file's data until it is closed
        faulthandler.cancel_dump_traceback_later()
        if outcome:
            stats["failures"].append(f"{name}: {label}: {outcome}")
    return stats


def judge_mapped(path: str, loaded, version: int, stats: dict) -> str | None:
    """The file loaded mapped must do what the load from bytes did (``loaded``: that index, or
    None if it was refused): refuse, or answer identically; the unverified mapped load must
    refuse or load and search with at most a typed error."""
    import pqkit

    queries = np.random.default_rng(stats["cases"]).standard_normal((3, 64)).astype(np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mapped = pqkit.load(path, mmap=True)
    except ValueError as exc:
        if loaded is not None and version >= 2:
            return f"mapped load refused what the load from bytes accepted: {exc}"
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        stats["other_errors"] += 1
        return f"{type(exc).__name__} at mapped load: {str(exc)[:300]}"
    else:
        stats["mapped_loaded"] += 1
        if loaded is None or version < 2:
            return "mapped load accepted what the load from bytes refused"
        if loaded.is_trained:
            q = queries[:, :loaded.d]
            try:
                expected = loaded.search(q, K)
            except (ValueError, TypeError):
                expected = None
            try:
                got = mapped.search(q, K)
            except (ValueError, TypeError) as exc:
                if expected is not None:
                    return f"mapped index refused a search the loaded one answered: {exc}"
            else:
                if expected is None or not (np.array_equal(got[0], expected[0])
                                            and np.array_equal(got[1], expected[1])):
                    return f"mapped index answers {got} instead of {expected}"
        stats["mapped_answered_identically"] += 1
        mapped = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unverified = pqkit.load(path, mmap=True, verify=False)
    except ValueError:
        return None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        stats["other_errors"] += 1
        return f"{type(exc).__name__} at unverified mapped load: {str(exc)[:300]}"
    stats["unverified_loaded"] += 1
    if unverified.is_trained:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                unverified.search(queries[:, :unverified.d], K)
        except (ValueError, TypeError):
            pass
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            stats["other_errors"] += 1
            return f"{type(exc).__name__} at unverified mapped search: {str(exc)[:300]}"
        stats["unverified_searched"] += 1
    return None


def judge_loaded(index, data: bytes, rng, stats: dict) -> str | None:
    header, arrays = parse(data)
    limit = MEMORY_FACTOR * len(data) + MEMORY_ALLOWANCE
    if index.memory_usage_bytes() > limit:
        return f"memory_usage_bytes {index.memory_usage_bytes()} for a {len(data)}-byte file"
    again_header, again = parse(_io_bytes(index))
    if version_of(data) < 2:  # a version-1 file saves as version 2: compare in the row form
        again = to_rows(again_header, again)
    if again_header["params"] != header["params"] or list(again) != list(arrays) or any(
            again[n].dtype != arrays[n].dtype or again[n].shape != arrays[n].shape
            or again[n].tobytes() != arrays[n].tobytes() for n in arrays):
        return ("loaded index saves differently (converted or dropped on load): params "
                f"{again_header['params']} vs {header['params']}, arrays "
                f"{[(n, str(a.dtype), a.shape) for n, a in again.items()]} vs "
                f"{[(n, str(a.dtype), a.shape) for n, a in arrays.items()]}")[:400]
    if not index.is_trained:
        return None
    queries = rng.standard_normal((3, index.d)).astype(np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            D, I = index.search(queries, K)
    except (ValueError, TypeError) as exc:
        stats["search_refused"] += 1
        stats["search_refused_examples"][type(exc).__name__ + ": " + str(exc)[:90]] = 1
        return None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        stats["other_errors"] += 1
        return f"{type(exc).__name__} at search: {str(exc)[:300]}"
    if D.shape != (3, K) or I.shape != (3, K) or D.dtype != np.float32 or I.dtype != np.int64:
        return f"search gave shapes {D.shape} {I.shape}, dtypes {D.dtype} {I.dtype}"
    if index.ntotal != _stored_count(header, arrays):
        return f"ntotal {index.ntotal} differs from the file's {_stored_count(header, arrays)} ids"
    problem = check_answer(header["index_type"], header["params"], arrays, queries, D, I)
    if problem:
        stats["wrong_answers"] += 1
        return "wrong answer: " + problem
    stats["answered_exactly"] += 1
    return None


def _io_bytes(index) -> bytes:
    from pqkit import io as _io

    return _io.index_to_bytes(index)


def _stored_count(header, arrays) -> int:
    for name in ("ids", "index.ids", "base.ids"):
        if name in arrays:
            return len(arrays[name])
    return 0


def test_crafted_files_are_refused_or_answer_exactly(record_property):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_crafted_files", str(CASES), str(SEED)],
        capture_output=True, text=True, timeout=900, cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, (
        f"crafted-file child died (crash or hang) with status {proc.returncode}:\n"
        f"{proc.stderr[-4000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("cases", "refused", "loaded", "answered_exactly", "search_refused", "other_errors",
                "wrong_answers"):
        record_property(f"crafted_{key}", stats[key])
    print(f"\ncrafted files: {stats['cases']} ({stats['systematic']} systematic attacks, the rest "
          f"random pairs) over {len(stats['by_seed'])} seeds: {stats['refused']} refused with "
          f"ValueError, {stats['loaded']} loaded ({stats['answered_exactly']} answered as the "
          f"reference, {stats['search_refused']} refused the search with a typed error), "
          f"{stats['other_errors']} untyped errors, {stats['wrong_answers']} wrong answers, "
          f"0 crashes, 0 hangs; mapped: {stats['mapped_loaded']} loaded, "
          f"{stats['mapped_answered_identically']} answered as the loaded index; unverified "
          f"mapped: {stats['unverified_loaded']} loaded, {stats['unverified_searched']} searched "
          f"without an untyped error; search refusals: "
          f"{sorted(stats['search_refused_examples'])[:4]}")
    assert stats["cases"] == CASES
    assert CASES < 1000 or stats["systematic"] >= 1000  # every seed, field and array attacked
    assert stats["answered_exactly"] > CASES // 20  # valid variants do reach the search oracle
    assert stats["mapped_answered_identically"] > CASES // 20
    assert stats["unverified_searched"] > CASES // 20
    assert not stats["failures"], "\n".join(stats["failures"][:30])


if __name__ == "__main__":
    print(json.dumps(campaign(int(sys.argv[1]), int(sys.argv[2]))))
