"""Files with a valid checksum but hostile contents are refused before any large allocation."""
import hashlib
import json
import struct

import numpy as np
import pytest

import pqkit
from pqkit import _io


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
