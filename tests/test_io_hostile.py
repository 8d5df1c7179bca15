"""Files with a valid checksum but hostile contents are refused before any large allocation."""
import hashlib
import pickle
import json
import struct

import numpy as np
import pytest

import pqkit
from pqkit import io as _io


def _reforge(data: bytes, mutate) -> bytes:
    """Rewrite the JSON header with ``mutate`` and recompute the checksum."""
    magic, version, header_length = struct.unpack("<8sII", data[:16])
    header = json.loads(data[16 : 16 + header_length])
    mutate(header)
    raw = json.dumps(header).encode()
    body = struct.pack("<8sII", magic, version, len(raw)) + raw + data[16 + header_length : -32]
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("factory", ["IVF4,Flat", "IVF4,PQ2x4"])
@pytest.mark.parametrize(
    "param, value", [("nlist", 10**12), ("nlist", 0), ("d", 10**12), ("nprobe", -1), ("metric", "x")]
)
def test_reforged_parameters_raise_value_error(factory, param, value):
    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    index = pqkit.index_factory(8, factory)
    index.train(x)
    index.add(x)
    forged = _reforge(_io.index_to_bytes(index), lambda h: h["params"].__setitem__(param, value))
    with pytest.raises(ValueError, match="corrupted or not a pqkit file"):
        _io.index_from_bytes(forged)


# --------------------------------------------------------------- crafted contents, one per defect
# (tests/test_crafted_files.py attacks every field and array of every type; these name the
# defects one by one.)
from tests.test_crafted_files import parse, write  # noqa: E402


def _ivf(kind="IVF4,PQ2x4", n=200, metric="l2"):
    x = np.random.default_rng(1).standard_normal((1500, 8)).astype(np.float32)
    index = pqkit.index_factory(8, kind, metric)
    index.train(x)
    index.add(x[:n])
    return parse(_io.index_to_bytes(index))


def _refused(header, arrays, match):
    data = write(header, arrays)
    with pytest.raises(ValueError, match="corrupted or not a pqkit file: .*" + match):
        _io.index_from_bytes(data)
    with pytest.raises(ValueError, match="corrupted or not a pqkit file"):
        pickle.loads(pickle.dumps(_Unpickles(data)))  # the pickle path runs the same checks


class _Unpickles:
    """Pickles as the bytes of an index (what Index.__reduce__ produces)."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return (_io.index_from_bytes, (self.data,))


@pytest.mark.parametrize("kind", ["IVF4,PQ2x4", "IVF4,Flat"])
def test_list_sizes_whose_int64_sum_wraps_are_refused(kind):
    header, arrays = _ivf(kind)
    sizes = arrays["list_sizes"]
    with np.errstate(over="ignore"):
        sizes += np.int64(2**62)  # four lists: the int64 sum wraps back to the true total
    assert int(sizes.sum()) == 200
    _refused(header, arrays, "list_sizes must lie in")


@pytest.mark.parametrize("name, dtype", [("vectors", np.int64), ("vectors", np.uint8),
                                          ("ids", np.float32)])
def test_arrays_of_another_dtype_are_refused_not_converted(name, dtype):
    index = pqkit.IndexFlat(8)
    index.add(np.arange(80, dtype=np.float32).reshape(10, 8))
    header, arrays = parse(_io.index_to_bytes(index))
    arrays[name] = arrays[name].astype(dtype)
    _refused(header, arrays, f"array '{name}' has dtype")


@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38, 1e20])
@pytest.mark.parametrize("kind, name", [("IVF4,Flat", "codes"), ("IVF4,Flat", "centroids"),
                                        ("IVF4,PQ2x4", "codebooks"), ("IVF4,PQ2x4", "centroids")])
def test_stored_floats_non_finite_or_beyond_the_bound_are_refused(kind, name, value):
    header, arrays = _ivf(kind)
    target = arrays[name].view(np.float32) if name == "codes" else arrays[name]
    target.reshape(-1)[5] = value
    _refused(header, arrays, "NaN or infinite|too large")


def test_huge_nlist_is_refused_before_allocating_its_lists():
    """A file declaring 2,000,000 empty lists (16 MB of list sizes) would claim 160 MB of list
    bookkeeping: refused; memory_usage_bytes counts that bookkeeping for indexes that load."""
    header, arrays = _ivf("IVF4,Flat", n=0)
    del arrays["centroids"]
    header["params"]["nlist"] = 2_000_000
    arrays["list_sizes"] = np.zeros(2_000_000, np.int64)
    _refused(header, arrays, "inverted lists would take")
    empty = pqkit.IndexIVFFlat(8, 100_000)
    assert empty.memory_usage_bytes() >= 100_000 * 64


def test_extra_parameters_and_retyped_parameters_are_refused():
    header, arrays = _ivf()
    header["params"]["nprobe"] = 2.0  # the writer writes an int
    _refused(header, arrays, "differ from what a IndexIVFPQ built from them writes|nprobe")
    header, arrays = _ivf()
    header["params"]["extra"] = 1
    _refused(header, arrays, "unexpected \\['extra'\\]")


def test_code_padding_bits_and_non_unit_cosine_rows_are_refused():
    header, arrays = _ivf("IVF4,PQ4x5")  # 20 bits in 3 bytes: the top 4 bits are padding
    arrays["codes"][3, -1] |= 0x80
    _refused(header, arrays, "padding bits")
    index = pqkit.IndexFlat(8, "cosine")
    index.add(np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32))
    header, arrays = parse(_io.index_to_bytes(index))
    arrays["vectors"][2] *= 2
    _refused(header, arrays, "unit norm")
