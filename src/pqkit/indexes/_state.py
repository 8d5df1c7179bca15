"""Loading saved state: what every index type checks before it trusts a file's contents, and how
composite indexes nest the state of their parts.

A loaded file is hostile input (a valid checksum proves nothing: anyone can recompute it), so
each index type declares exactly what it writes and ``_from_state`` accepts nothing else: the
parameter names, every array's dtype and shape (no conversion on load), finite stored floats
within the magnitude bound, and the structural invariants (list sizes summing to the number of
ids, unique ids, code padding bits zero, unit rows for a normalising metric). Every count is
checked in Python integers (no wrap-around) before anything is allocated from it.

A composite index (IndexPreTransform, IndexRefine) stores each part's parameters under a key of
its own params, ``{"type": ..., "params": {...}}``, and the part's arrays under
``"<key>.<name>"``. The file stays flat (one header, a bounded number of arrays); nesting is
bounded by ``MAX_NESTING`` so that a hostile header cannot recurse deeply.
"""

from __future__ import annotations

import contextvars

import numpy as np

from .. import metrics
from .._validation import check_finite
from . import registry

__all__ = []

#: A load may claim at most this multiple of the bytes its arrays occupy in the file, plus
#: ``_LOAD_FIXED_ALLOWANCE``, for structures the arrays do not hold themselves (empty inverted lists).
_LOAD_MEMORY_FACTOR = 4
_LOAD_FIXED_ALLOWANCE = 64 << 20
_N = "n"  # in an array spec's shape: the number of stored vectors (the length of "ids")


def _check_params(params: dict, names) -> None:
    """The saved parameters must be exactly ``names`` (what the writer writes)."""
    expected, got = set(names), set(params)
    if got != expected:
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        raise ValueError(f"parameters must be {sorted(expected)}; missing {missing}, "
                         f"unexpected {unexpected}")


def _check_arrays(arrays: dict, spec: dict) -> int:
    """Check stored arrays against ``spec`` (name -> (dtype, shape, required)); returns n.

    A shape entry ``"n"`` stands for the number of stored vectors, the length of ``"ids"``. No
    other array may be present; dtypes must match exactly.
    """
    unexpected = sorted(set(arrays) - set(spec))
    if unexpected:
        raise ValueError(f"unexpected arrays {unexpected}; expected only {sorted(spec)}")
    missing = sorted(name for name, (_, _, required) in spec.items()
                     if required and name not in arrays)
    if missing:
        raise ValueError(f"missing arrays {missing}")
    n = None
    if "ids" in arrays:
        ids = arrays["ids"]
        n = ids.shape[0] if ids.ndim == 1 else -1
    for name, arr in arrays.items():
        dtype, shape, _ = spec[name]
        if arr.dtype != dtype:
            raise ValueError(f"array {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        expected = tuple(n if s == _N else s for s in shape)
        _check_shape(arr, expected, name)
    return n


def _check_shape(arr: np.ndarray, shape: tuple, name: str) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"array {name!r} has shape {arr.shape}, expected {tuple(shape)}")


def _check_load_memory(nbytes: int, arrays: dict, what: str) -> None:
    """Refuse a structure of ``nbytes`` that a file of these arrays cannot justify."""
    budget = _LOAD_MEMORY_FACTOR * sum(int(a.nbytes) for a in arrays.values()) + _LOAD_FIXED_ALLOWANCE
    if nbytes > budget:
        raise ValueError(f"{what} would take {nbytes} bytes of memory, more than a load of "
                         f"{sum(int(a.nbytes) for a in arrays.values())} bytes of arrays may "
                         f"claim ({budget})")


def _check_stored_ids(ids: np.ndarray) -> None:
    if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
        raise ValueError("stored ids must be unique and >= 0")


def _check_stored_vectors(vectors: np.ndarray, metric: str, name: str) -> None:
    """Stored float vectors: finite and within the magnitude bound; unit rows for "cosine"
    (an index normalises every vector it stores under that metric)."""
    check_finite(vectors, f"stored {name}")
    if metrics.get(metric).normalizes and vectors.size:
        sqnorms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sqnorms - 1.0) > 1e-5)
        if bad.size:
            raise ValueError(f"stored {name} of a {metric} index must have unit norm; row "
                             f"{int(bad[0])} has squared norm {float(sqnorms[bad[0]]):.6g}")


def _check_code_padding(codes: np.ndarray, M: int, nbits: int) -> None:
    """Bits past the M * nbits used ones (the high bits of the last byte) must be zero, as the
    encoder writes them."""
    used = (M * nbits) % 8
    if used and codes.size:
        mask = (0xFF << used) & 0xFF
        bad = np.flatnonzero(codes[:, -1] & mask)
        if bad.size:
            raise ValueError(f"code of row {int(bad[0])} sets padding bits beyond the "
                             f"{M} x {nbits} code bits")


def _check_list_sizes(sizes: np.ndarray, n: int) -> None:
    """Each list size in [0, n] and their exact sum (Python integers: no wrap-around) equal to n."""
    if sizes.size and (int(sizes.min()) < 0 or int(sizes.max()) > n):
        raise ValueError(f"list_sizes must lie in [0, {n}] (the number of stored ids)")
    total = int(sizes.sum()) if sizes.size * max(n, 1) < 2**62 else sum(int(s) for s in sizes)
    if total != n:
        raise ValueError(f"list_sizes must sum to {n} (the number of stored ids), got {total}")


# ------------------------------------------------------------------ composite indexes
MAX_NESTING = 4
_nesting = contextvars.ContextVar("pqkit_io_nesting", default=0)


def nest_state(params: dict, arrays: dict, key: str, part) -> tuple:
    """Add the state of ``part`` (a pqkit index) under ``key`` to ``(params, arrays)``."""
    part_params, part_arrays = part._get_state()
    params = dict(params)
    params[key] = {"type": type(part).__name__, "params": part_params}
    arrays = dict(arrays)
    arrays.update({f"{key}.{name}": arr for name, arr in part_arrays.items()})
    return params, arrays


def check_parts(params: dict, arrays: dict, parts, own_params) -> None:
    """A composite's saved state holds exactly its parts (keys ``parts``, arrays prefixed by
    ``"<part>."``) and its own parameters ``own_params``: nothing else is accepted."""
    expected = set(parts) | set(own_params)
    if set(params) != expected:
        raise ValueError(f"parameters must be {sorted(expected)}, got {sorted(params)}")
    stray = sorted(name for name in arrays if name.split(".", 1)[0] not in parts or "." not in name)
    if stray:
        raise ValueError(f"arrays {stray} belong to no part ({sorted(parts)})")


def nest_params(params: dict, key: str, part) -> dict:
    """``params`` with the parameters of ``part`` under ``key``, as :func:`nest_state` writes them."""
    params = dict(params)
    params[key] = {"type": type(part).__name__, "params": part._state_params()}
    return params


def unnest_state(params: dict, arrays: dict, key: str):
    """Rebuild the part stored under ``key`` by :func:`nest_state` (ValueError if invalid)."""
    spec = params.get(key)
    if (not isinstance(spec, dict) or set(spec) != {"type", "params"}
            or not isinstance(spec.get("type"), str) or not isinstance(spec.get("params"), dict)):
        raise ValueError(f"part {key!r} must be an object with 'type' (str) and 'params' (object)")
    if spec["type"] not in registry.NAMES:
        raise ValueError(f"part {key!r} has unknown index type {spec['type']!r}")
    depth = _nesting.get()
    if depth >= MAX_NESTING:
        raise ValueError(f"composite indexes nest at most {MAX_NESTING} levels deep")
    prefix = key + "."
    part_arrays = {name[len(prefix):]: arr for name, arr in arrays.items()
                   if name.startswith(prefix)}
    token = _nesting.set(depth + 1)
    try:
        return registry.index_class(spec["type"])._from_state(spec["params"], part_arrays)
    finally:
        _nesting.reset(token)
