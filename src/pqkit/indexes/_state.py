"""Loading saved state: what every index type checks before it trusts a file's contents, and how
composite indexes nest the state of their parts.

A loaded file is hostile input (a valid checksum proves nothing: anyone can recompute it), so
each index type declares exactly what it writes and ``_from_state`` accepts nothing else: the
parameter names, every array's dtype and shape (no conversion on load), finite stored floats
within the magnitude bound, and the structural invariants (list sizes summing to the number of
ids, unique ids, code padding bits zero, unit rows for a normalising metric). Every count is
checked in Python integers (no wrap-around) before anything is allocated from it.

The arrays come in one of two forms (:class:`StateForm`, set by :mod:`pqkit.io` for the
duration of a save or a load with :func:`using_form`): the *row form* (the default, and the form
of format-version-1 files and of FAISS conversions: PQ codes as rows of ``code_size`` bytes) and
the *file form* of format version 2 (the PQ codes of IndexPQ and IndexIVFPQ in the engines'
blocked scan layout, each list in whole 64-code blocks, and the L2 IVF-PQ bias stored). A load
may also keep the arrays as they are, read-only views of a mapped file (``mapped``), and skip
the checks that read the large arrays (``verify=False``): checks of parameters, shapes, sizes and
small arrays (list sizes, centroids, codebooks, transforms) always run, so that no unchecked
count ever reaches the engine; only the contents of codes, ids, vectors and biases go unread.

A composite index (IndexPreTransform, IndexRefine) stores each part's parameters under a key of
its own params, ``{"type": ..., "params": {...}}``, and the part's arrays under
``"<key>.<name>"``. The file stays flat (one header, a bounded number of arrays); nesting is
bounded by ``MAX_NESTING`` so that a hostile header cannot recurse deeply.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StateForm:
    """How ``_get_state`` / ``_from_state`` lay out their arrays (see the module docstring).

    Attributes
    ----------
    blocked : bool
        The file form of format version 2 (PQ codes blocked per list, the L2 IVF-PQ bias
        stored) instead of the row form.
    mapped : bool
        Loading: the arrays are read-only views of a mapped file; the index keeps them (its
        lists point into them) instead of copying.
    verify : bool
        Loading: run the checks that read the large arrays (ids, codes, vectors, bias).
    """

    blocked: bool = False
    mapped: bool = False
    verify: bool = True


ROW_FORM = StateForm()
FILE_FORM = StateForm(blocked=True)
_form = contextvars.ContextVar("pqkit_state_form", default=ROW_FORM)


def state_form() -> StateForm:
    """The form of the save or load running in this context (the row form outside one)."""
    return _form.get()


@contextlib.contextmanager
def using_form(form: StateForm):
    """Run a save or a load in ``form`` (nested parts see the same form)."""
    token = _form.set(form)
    try:
        yield
    finally:
        _form.reset(token)


def verifying() -> bool:
    """Whether a load runs the checks that read the large arrays."""
    return _form.get().verify


def _check_params(params: dict, names, optional=()) -> None:
    """The saved parameters must be exactly ``names`` (what the writer writes), plus any of
    ``optional`` (parameters written only when they differ from their default)."""
    expected, got = set(names), set(params)
    allowed = expected | set(optional)
    if not expected <= got <= allowed:
        missing, unexpected = sorted(expected - got), sorted(got - allowed)
        also = f" and optionally {sorted(optional)}" if optional else ""
        raise ValueError(f"parameters must be {sorted(expected)}{also}; missing {missing}, "
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
    if verifying() and ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size):
        raise ValueError("stored ids must be unique and >= 0")


def _check_stored_vectors(vectors: np.ndarray, metric: str, name: str) -> None:
    """Stored float vectors: finite and within the magnitude bound; unit rows for "cosine"
    (an index normalises every vector it stores under that metric)."""
    if not verifying():
        return
    check_finite(vectors, f"stored {name}")
    if metrics.get(metric).normalizes and vectors.size:
        sqnorms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sqnorms - 1.0) > 1e-5)
        if bad.size:
            raise ValueError(f"stored {name} of a {metric} index must have unit norm; row "
                             f"{int(bad[0])} has squared norm {float(sqnorms[bad[0]]):.6g}")


def _check_code_padding(codes: np.ndarray, M: int, nbits: int) -> None:
    """Bits past the M * nbits used ones (the high bits of the last byte) must be zero, as the
    encoder writes them. ``codes`` are rows (n, code_size) or blocks (n_blocks, code_size, 64)."""
    used = (M * nbits) % 8
    if not verifying() or not used:
        return
    mask = (0xFF << used) & 0xFF
    if codes.ndim == 3:
        for start in range(0, codes.shape[0], _CHECK_BLOCKS):
            last_bytes = codes[start:start + _CHECK_BLOCKS, -1, :]
            if np.any(last_bytes & mask):
                block, col = np.argwhere(last_bytes & mask)[0]
                raise ValueError(f"code {int(col)} of block {start + int(block)} sets padding bits "
                                 f"beyond the {M} x {nbits} code bits")
        return
    if codes.size:
        bad = np.flatnonzero(codes[:, -1] & mask)
        if bad.size:
            raise ValueError(f"code of row {int(bad[0])} sets padding bits beyond the "
                             f"{M} x {nbits} code bits")


#: Blocks read at a time by the checks of blocked codes (bounded temporary memory).
_CHECK_BLOCKS = 1 << 14


def block_starts(sizes: np.ndarray) -> np.ndarray:
    """int64 (nlist + 1,): the first block of each list's codes in the blocked file form (each
    list in ``ceil(size / 64)`` whole blocks, list 0 first), then the total number of blocks.
    ``sizes`` must be checked first (:func:`_check_list_sizes`)."""
    return np.concatenate(([0], np.cumsum(-(-sizes // 64)))).astype(np.int64)


def blocked_rows(blocks: np.ndarray, offsets: np.ndarray, starts: np.ndarray, begin: int,
                 end: int) -> tuple:
    """Codes ``begin:end`` (in list order) of blocked codes as rows, and their list numbers.

    Parameters
    ----------
    blocks : numpy.ndarray of uint8, shape (n_blocks, code_size, 64)
    offsets : numpy.ndarray of int64, shape (nlist + 1,)
        First code of each list, then ntotal.
    starts : numpy.ndarray of int64, shape (nlist + 1,)
        :func:`block_starts` of the list sizes.
    begin, end : int

    Returns
    -------
    rows : numpy.ndarray of uint8, shape (end - begin, code_size)
    list_nos : numpy.ndarray of int64, shape (end - begin,)
    """
    positions = np.arange(begin, end, dtype=np.int64)
    list_nos = np.searchsorted(offsets, positions, side="right") - 1
    within = positions - offsets[list_nos]
    return blocks[starts[list_nos] + within // 64, :, within % 64], list_nos


def all_blocked_rows(blocks: np.ndarray, sizes: np.ndarray, starts: np.ndarray) -> tuple:
    """Every code of blocked codes as rows (n, code_size) and their list numbers (n,), converted
    in bounded chunks (:func:`blocked_rows` over ranges of codes)."""
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    n = int(offsets[-1])
    rows = np.empty((n, blocks.shape[1]), dtype=np.uint8)
    for begin in range(0, n, 64 * _CHECK_BLOCKS):
        end = min(n, begin + 64 * _CHECK_BLOCKS)
        rows[begin:end], _ = blocked_rows(blocks, offsets, starts, begin, end)
    return rows, np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)


def rows_to_blocks(rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Codes as rows (n, code_size) in list order to the blocked file form (n_blocks,
    code_size, 64), the codes padding each list's last block zero."""
    starts = block_starts(sizes)
    blocks = np.zeros((int(starts[-1]), rows.shape[1], 64), dtype=np.uint8)
    if rows.shape[0]:
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        list_nos = np.repeat(np.arange(sizes.size), sizes)
        within = np.arange(rows.shape[0]) - offsets[list_nos]
        blocks[starts[list_nos] + within // 64, :, within % 64] = rows
    return blocks


def _check_block_padding(blocks: np.ndarray, sizes: np.ndarray, starts: np.ndarray) -> None:
    """The codes padding each list's last block must be zero (as the writer writes them)."""
    if not verifying():
        return
    partial = np.flatnonzero(sizes % 64)
    for begin in range(0, partial.size, _CHECK_BLOCKS):
        lists = partial[begin:begin + _CHECK_BLOCKS]
        last = blocks[starts[lists + 1] - 1]  # (lists, code_size, 64)
        padding = np.arange(64)[None, :] >= (sizes[lists] % 64)[:, None]
        bad = np.any(last != 0, axis=1) & padding
        if bad.any():
            raise ValueError(f"list {int(lists[np.argwhere(bad)[0][0]])} has nonzero codes in the "
                             "padding of its last block (they must be zero)")


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
