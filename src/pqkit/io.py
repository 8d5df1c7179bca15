"""The pqkit file format: ``index.save(path)``, :func:`load`, and pickling.

Layout (all integers little-endian)::

    magic           8 bytes   b"PQKIT\\x00\\x01\\n"
    format_version  uint32    1
    header_length   uint32    at most 1 MiB
    header          JSON, UTF-8, header_length bytes:
                    {"index_type": "IndexIVFPQ", "params": {...constructor arguments...},
                     "arrays": [{"name": "codes", "dtype": "|u1", "shape": [n, 16]}, ...],
                     "pqkit_version": "..."}
    array data      the arrays' raw bytes (C order) concatenated in header order
    checksum        32 bytes  SHA-256 of every byte before it

Loading never executes code (no pickle inside the file) and checks, in this order: magic,
version, header length against the file size, the header's structure, at most 16 arrays with
whitelisted dtypes (float32, int64, uint8), that the arrays' byte sizes add up exactly to the
rest of the file (before anything is allocated), the checksum (before any array is read), and
then the contents, since a valid checksum proves nothing (anyone can recompute it): each index
type accepts exactly the parameters and arrays it writes (names, dtypes and shapes; nothing is
converted), stored floats finite and within the magnitude bound, structural invariants (list
sizes in [0, n] summing to n in arithmetic that cannot wrap, unique ids >= 0, code padding bits
zero, unit rows for "cosine"), memory claimed for structures the arrays do not hold bounded by a
small multiple of the file size, and finally that the index built gives back exactly the file's
parameters. Any failure raises ValueError ("corrupted or not a pqkit file: ...").

Composite indexes (:class:`pqkit.IndexPreTransform`, :class:`pqkit.IndexRefine`) use the same
flat layout: each part's type and parameters sit under a key of the composite's params
(``{"transform": {...}, "index": {"type": "IndexIVFPQ", "params": {...}}}``) and its arrays are
named ``"<key>.<name>"`` (``"index.codes"``, ``"transform.A"``); parts nest at most
``MAX_NESTING`` levels, and the header JSON itself is refused when nested too deeply.

``pickle`` goes through the same bytes (``Index.__reduce__`` -> :func:`index_from_bytes`).
``save`` is all-or-nothing: it writes a temporary file beside the target, fsyncs it and
renames it over the target (``os.replace``), so after a crash the target holds the old or the new
index; it replaces only a pqkit index file (see :func:`save`).
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import math
import os
import re
import struct

import numpy as np

from ._version import __version__
from .indexes import registry

__all__ = ["index_from_bytes", "index_to_bytes", "load", "save"]

MAGIC = b"PQKIT\x00\x01\n"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 16
MAX_NDIM = 3
DTYPE_WHITELIST = {"<f4": np.dtype("<f4"), "<i8": np.dtype("<i8"), "|u1": np.dtype("|u1")}
_PREFIX = struct.Struct("<8sII")  # magic, format_version, header_length
_CHECKSUM_BYTES = 32
_CHUNK = 1 << 20


def _corrupted(reason: str) -> ValueError:
    return ValueError(f"corrupted or not a pqkit file: {reason}")


# ------------------------------------------------------------------------------- writing
def _write(index, f) -> None:
    if not registry.is_index(index):
        raise TypeError(f"expected a pqkit index, got {type(index).__name__}")
    params, arrays = index._get_state()
    specs, payload = [], []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr, dtype=np.asarray(arr).dtype.newbyteorder("<"))
        if arr.dtype.str not in DTYPE_WHITELIST:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}, not in the file whitelist")
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        payload.append(arr)
    header = json.dumps(
        {"index_type": type(index).__name__, "params": params, "arrays": specs,
         "pqkit_version": __version__},
        sort_keys=True, separators=(",", ":"),
    ).encode("utf-8")
    digest = hashlib.sha256()

    def put(data) -> None:
        f.write(data)
        digest.update(data)

    put(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
    put(header)
    for arr in payload:
        if arr.size:
            put(arr.reshape(-1).view(np.uint8))
    f.write(digest.digest())


def index_to_bytes(index) -> bytes:
    """Serialise an index to bytes in the pqkit file format.

    Parameters
    ----------
    index : pqkit.Index

    Returns
    -------
    bytes
    """
    buffer = io.BytesIO()
    _write(index, buffer)
    return buffer.getvalue()


def save(index, path, *, overwrite: bool = True) -> None:
    """Write ``index`` to ``path``, all-or-nothing.

    A save is all-or-nothing: after a crash the target holds the old or the new index; it never
    deletes anything it did not write. The bytes go to ``.<name>.<16 hex>.pqkit-tmp`` beside the
    target, are fsynced, and replace the target with one ``os.replace``; the directory is
    then fsynced (see :mod:`pqkit._atomic`). Leftover temporary files of an interrupted save
    to the same path (including the ``.<name>.<16 hex>.tmp`` files of earlier pqkit versions) are
    removed by the next save to it.

    Parameters
    ----------
    index : pqkit.Index
    path : str or os.PathLike
        Target file; its directory must exist. A symlink is followed.
    overwrite : bool, default True
        Replace an existing pqkit index file at ``path``, as ``faiss.write_index`` and
        ``numpy.save`` replace theirs; with False an existing index raises. A file that is not a
        pqkit index (other than an empty one) is never replaced, whatever ``overwrite`` says.

    Raises
    ------
    FileNotFoundError
        The directory of ``path`` does not exist.
    IsADirectoryError
        ``path`` is a directory.
    pqkit._atomic.ArtifactExistsError
        ``path`` exists and is not a pqkit index file, or it is one and ``overwrite`` is False
        (a subclass of both FileExistsError and ValueError). Nothing was changed.
    """
    from . import _atomic

    def write(tmp_path) -> None:
        with _atomic.create_file(tmp_path) as f:
            _write(index, f)

    def is_index_file(existing) -> bool:
        return _atomic.file_starts_with(existing, MAGIC)

    def is_earlier_leftover(base, name, leftover) -> bool:
        # the temporary files of earlier pqkit versions: this target's name, then a pqkit header
        if not re.fullmatch(rf"\.{re.escape(base)}\.[0-9a-f]{{16}}\.tmp", name) or not os.path.isfile(leftover):
            return False
        with open(leftover, "rb") as f:
            return MAGIC.startswith(f.read(len(MAGIC)))  # also an empty or cut-short header

    _atomic.save_file(path, write, is_own=is_index_file, overwrite=overwrite, what="pqkit index file",
                      extra_leftover=is_earlier_leftover)


# ------------------------------------------------------------------------------- reading
def _fspath(path):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(
            f"path must be a str or os.PathLike, got {type(path).__name__}"
        ) from None


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _corrupted(f"unexpected end of file (wanted {n} bytes, got {len(data)})")
    return data


def _parse_header(raw: bytes) -> tuple:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupted(f"header is not valid UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise _corrupted("header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise _corrupted("header is not a JSON object")
    index_type, params, specs = (header.get(k) for k in ("index_type", "params", "arrays"))
    if not isinstance(index_type, str) or not isinstance(params, dict):
        raise _corrupted("header lacks 'index_type' (str) or 'params' (object)")
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise _corrupted(f"header 'arrays' must be a list of at most {MAX_ARRAYS} entries")
    arrays, names = [], set()
    for spec in specs:
        if not isinstance(spec, dict):
            raise _corrupted("array entry is not a JSON object")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not isinstance(name, str) or name in names:
            raise _corrupted(f"array name {name!r} is missing, not a string or repeated")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPE_WHITELIST:
            raise _corrupted(
                f"array {name!r} has dtype {dtype!r}; allowed: {sorted(DTYPE_WHITELIST)}"
            )
        itemsize = DTYPE_WHITELIST[dtype].itemsize
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(type(s) is int and 0 <= s < 2**62 for s in shape)
                or math.prod(max(s, 1) for s in shape) * itemsize >= 2**62):  # numpy's limit
            raise _corrupted(f"array {name!r} has invalid shape {shape!r}")
        nbytes = DTYPE_WHITELIST[dtype].itemsize
        for s in shape:
            nbytes *= s
        arrays.append((name, DTYPE_WHITELIST[dtype], tuple(shape), nbytes))
    return index_type, params, arrays


def _read(f, size: int):
    """Read one index from file object ``f`` positioned at its start; ``size`` = total bytes."""
    fixed = _PREFIX.size + _CHECKSUM_BYTES
    if size < fixed:
        raise _corrupted(f"{size} bytes is shorter than the smallest valid file ({fixed} bytes)")
    magic, version, header_length = _PREFIX.unpack(_read_exact(f, _PREFIX.size))
    if magic != MAGIC:
        raise _corrupted(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise _corrupted(
            f"format version {version} is not supported (this pqkit {__version__} reads version "
            f"{FORMAT_VERSION}); load it with the pqkit that wrote it"
        )
    if header_length > MAX_HEADER_BYTES or header_length > size - fixed:
        raise _corrupted(
            f"header length {header_length} exceeds the limit ({MAX_HEADER_BYTES}) or the file "
            f"size ({size} bytes)"
        )
    index_type, params, arrays = _parse_header(_read_exact(f, header_length))
    data_bytes = size - fixed - header_length
    declared = sum(nbytes for *_, nbytes in arrays)
    if declared != data_bytes:
        raise _corrupted(
            f"header declares {declared} bytes of array data but the file holds {data_bytes}"
        )

    # Checksum over everything before it, streamed, before any array is allocated.
    f.seek(0)
    digest = hashlib.sha256()
    remaining = size - _CHECKSUM_BYTES
    while remaining:
        chunk = _read_exact(f, min(_CHUNK, remaining))
        digest.update(chunk)
        remaining -= len(chunk)
    if digest.digest() != _read_exact(f, _CHECKSUM_BYTES):
        raise _corrupted("SHA-256 checksum mismatch (file damaged or truncated)")

    if index_type not in registry.NAMES:
        raise _corrupted(f"unknown index type {index_type!r}; known: {sorted(registry.NAMES)}")

    f.seek(_PREFIX.size + header_length)
    loaded = {}
    for name, dtype, shape, nbytes in arrays:
        arr = np.empty(shape, dtype=dtype)
        if nbytes:
            target = arr.reshape(-1).view(np.uint8)
            if f.readinto(target) != nbytes:
                raise _corrupted(f"unexpected end of file in array {name!r}")
        loaded[name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    try:
        index = registry.index_class(index_type)._from_state(params, loaded)
    except KeyError as exc:
        raise _corrupted(f"{index_type} header lacks parameter {exc}") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise _corrupted(f"contents inconsistent with a valid {index_type}: {exc}") from None
    # Every parameter must be what the index type writes, value and JSON type alike (2 is not
    # 2.0, true is not 1): nothing in a file is converted on load.
    written = index._state_params()
    if _canonical(written) != _canonical(params):
        raise _corrupted(f"parameters {_canonical(params)[:300]} differ from what a {index_type} "
                         f"built from them writes: {_canonical(written)[:300]}")
    return index


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def load(path):
    """Load an index written by ``Index.save``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    pqkit.Index
        An instance of the saved class (IndexFlat, IndexPQ, IndexIVFFlat, IndexIVFPQ,
        IndexPreTransform or IndexRefine, with their parts); the thread setting is not saved (it is None, i.e. the global default).

    Raises
    ------
    ValueError
        The file is not a valid pqkit file (bad magic, unsupported version, inconsistent sizes,
        checksum mismatch, unknown index type, shapes inconsistent with the parameters).
    """
    path = _fspath(path)
    with open(path, "rb") as f:
        return _read(f, os.fstat(f.fileno()).st_size)


def index_from_bytes(data):
    """Rebuild an index from :func:`index_to_bytes` output (used by ``pickle``).

    Parameters
    ----------
    data : bytes-like

    Returns
    -------
    pqkit.Index
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    return _read(io.BytesIO(data), len(data))
