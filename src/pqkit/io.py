from __future__ import annotations

import hashlib
import io
import json
import math
import mmap as _mmap
import os
import re
import struct
import sys

import numpy as np

from ._version import __version__
from .indexes import registry
from .indexes._state import FILE_FORM, StateForm, using_form

__all__ = ["index_from_bytes", "index_to_bytes", "load", "save"]

MAGIC = b"PQKIT\x00\x01\n"
FORMAT_VERSION = 2
#: The format versions this pqkit reads (version 1: no alignment, codes as rows, no bias).
READ_VERSIONS = (1, 2)
#: Version 2: every array starts at a multiple of this many bytes.
ALIGNMENT = 64
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 16
MAX_NDIM = 3
DTYPE_WHITELIST = {"<f4": np.dtype("<f4"), "<i8": np.dtype("<i8"), "|u1": np.dtype("|u1")}
_PREFIX = struct.Struct("<8sII")  # magic, format_version, header_length
_CHECKSUM_BYTES = 32
_CHUNK = 1 << 20


def _corrupted(reason: str) -> ValueError:
    return ValueError(f"corrupted or not a pqkit file: {reason}")


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _array_offsets(version: int, header_length: int, sizes) -> tuple:
    """(offset of each array, end of the last one) for arrays of ``sizes`` bytes, in Python
    integers (no wrap-around): consecutive after the header (version 1), or each at the next
    multiple of :data:`ALIGNMENT` (version 2)."""
    position = _PREFIX.size + header_length
    offsets = []
    for nbytes in sizes:
        offset = _aligned(position) if version >= 2 else position
        offsets.append(offset)
        position = offset + nbytes
    return offsets, (_aligned(position) if version >= 2 and not offsets else position)


# ------------------------------------------------------------------------------- writing
def _write(index, f) -> None:
    if not registry.is_index(index):
        raise TypeError(f"expected a pqkit index, got {type(index).__name__}")
    with using_form(FILE_FORM):
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
    offsets, end = _array_offsets(FORMAT_VERSION, len(header), [arr.nbytes for arr in payload])
    position = _PREFIX.size + len(header)
    for offset, arr in zip(offsets, payload):
        put(bytes(offset - position))
        if arr.size:
            put(arr.reshape(-1).view(np.uint8))
        position = offset + arr.nbytes
    put(bytes(end - position))
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


def _read(f, size: int, mapping_of=None, verify: bool = True):
    """Read one index from file object ``f`` positioned at its start; ``size`` = total bytes.

    ``mapping_of``: a function returning a read-only mapping of the file (for ``mmap=True``);
    the arrays are then views of it instead of copies. ``verify``: see :func:`load`.
    """
    fixed = _PREFIX.size + _CHECKSUM_BYTES
    if size < fixed:
        raise _corrupted(f"{size} bytes is shorter than the smallest valid file ({fixed} bytes)")
    magic, version, header_length = _PREFIX.unpack(_read_exact(f, _PREFIX.size))
    if magic != MAGIC:
        raise _corrupted(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version not in READ_VERSIONS:
        raise _corrupted(
            f"format version {version} is not supported (this pqkit {__version__} reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}); load it with the pqkit that wrote it"
        )
    if header_length > MAX_HEADER_BYTES or header_length > size - fixed:
        raise _corrupted(
            f"header length {header_length} exceeds the limit ({MAX_HEADER_BYTES}) or the file "
            f"size ({size} bytes)"
        )
    index_type, params, arrays = _parse_header(_read_exact(f, header_length))
    offsets, end = _array_offsets(version, header_length, [nbytes for *_, nbytes in arrays])
    data_start = _PREFIX.size + header_length
    if end != size - _CHECKSUM_BYTES:
        raise _corrupted(
            f"header declares {end - data_start} bytes of array data"
            f"{' with their alignment' if version >= 2 else ''} but the file holds "
            f"{size - _CHECKSUM_BYTES - data_start}"
        )
    if mapping_of is not None and version < 2:
        raise ValueError(
            f"pqkit.load(path, mmap=True) needs a file of format version 2; this one has version "
            f"{version} (written by an earlier pqkit): load it with pqkit.load(path) and save it "
            "again to convert it"
        )
    if version >= 2:  # the alignment padding: zero bytes, as the writer writes them
        position = data_start
        for offset, (_, _, _, nbytes) in zip(offsets + [end], arrays + [(None, None, None, 0)]):
            f.seek(position)
            if any(_read_exact(f, offset - position)):
                raise _corrupted(f"nonzero padding bytes at offset {position} (alignment padding "
                                 "must be zero)")
            position = offset + nbytes

    if verify:  # the checksum over everything before it, streamed, before any array is read
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

    mapping = mapping_of() if mapping_of is not None else None
    loaded = {}
    for (name, dtype, shape, nbytes), offset in zip(arrays, offsets):
        if mapping is not None and nbytes:
            arr = np.frombuffer(mapping, dtype=dtype, count=math.prod(shape), offset=offset)
            loaded[name] = arr.reshape(shape)  # little-endian is native here (see load)
            continue
        arr = np.empty(shape, dtype=dtype)
        if nbytes:
            f.seek(offset)
            target = arr.reshape(-1).view(np.uint8)
            if f.readinto(target) != nbytes:
                raise _corrupted(f"unexpected end of file in array {name!r}")
        loaded[name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    form = StateForm(blocked=version >= 2, mapped=mapping is not None, verify=verify)
    try:
        with using_form(form):
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
    if mapping is not None and verify and hasattr(mapping, "madvise"):
        # The checks read the mapped arrays through this process's page tables; drop those
        # pages from its resident set (they stay in the page cache), so that only searched
        # lists become resident again.
        mapping.madvise(_mmap.MADV_DONTNEED)
    return index


def _canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def load(path, *, mmap: bool = False, verify: bool = True):
    """Load an index written by ``Index.save``.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool, default False
        Map the file instead of reading it: codes, ids, vectors and biases stay in the file
        and are paged in by the operating system when a search reads them (only the probed
        lists of an IVF index), so loading takes little time and memory, the index may be
        larger than RAM, and processes mapping the same file share one copy in the page
        cache. Centroids, codebooks and transforms are read into memory. The index is
        read-only: ``add``, ``add_with_ids``, ``add_chunks``, ``remove_ids``, ``train``,
        ``reset``, ``merge_from``, ``set_centroids`` and codebook changes raise ValueError
        (load without ``mmap`` for a writable copy). The file must not be changed while
        mapped (``save`` to the same path replaces it with a new file, which is safe). Needs a
        file of format version 2 (what this pqkit writes): older files raise ValueError and can
        be converted by loading and saving them. Results equal those of the loaded index, bit
        for bit. With the Numba engine, IndexPQ and IndexIVFPQ scans copy the lists they read
        into rows first.
    verify : bool, default True
        Check the SHA-256 checksum (one sequential pass over the file) and every stored array
        (ids unique and >= 0, codes and their padding, finite vectors, the bias equal to the
        one the codes give), as for any untrusted file. With False, only the header, the
        sizes and the small arrays (list sizes, centroids, codebooks, transforms) are checked:
        use it only for files you trust, written by pqkit and unchanged since. Such a load
        reads nothing else (with ``mmap=True`` it takes milliseconds), a damaged file cannot
        make the engine read outside its arrays, but it may give wrong results or duplicate
        ids instead of an error. No warning is emitted either way.

    Returns
    -------
    pqkit.Index
        An instance of the saved class (IndexFlat, IndexPQ, IndexIVFFlat, IndexIVFPQ,
        IndexPreTransform or IndexRefine, with their parts); the thread setting is not saved
        (it is None, i.e. the global default).

    Raises
    ------
    ValueError
        The file is not a valid pqkit file (bad magic, unsupported version, inconsistent sizes,
        checksum mismatch, unknown index type, shapes inconsistent with the parameters), or
        ``mmap=True`` for a version-1 file.

    Examples
    --------
    >>> import os, tempfile, numpy as np, pqkit
    >>> index = pqkit.IndexFlat(4)
    >>> index.add(np.eye(4, dtype=np.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "flat.pqkit")
    >>> index.save(path)
    >>> mapped = pqkit.load(path, mmap=True)
    >>> mapped.search(np.eye(4, dtype=np.float32)[:1], k=1)[1].tolist()
    [[0]]
    """
    path = _fspath(path)
    if not isinstance(mmap, (bool, np.bool_)) or not isinstance(verify, (bool, np.bool_)):
        raise TypeError(f"mmap and verify must be bools, got {type(mmap).__name__} and "
                        f"{type(verify).__name__}")
    if mmap and sys.byteorder != "little":
        raise ValueError("pqkit.load(path, mmap=True) needs a little-endian machine (the file's "
                         "byte order); load it without mmap")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mapping_of = (lambda: _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)) if mmap else None
        index = _read(f, size, mapping_of, bool(verify))
    if mmap:
        _mark_read_only(index, os.path.abspath(path))
    return index


def _mark_read_only(index, path: str) -> None:
    """A mapped index and its parts refuse every change (see :func:`load`)."""
    index._mapped_path = path
    for part in index._parts():
        _mark_read_only(part, path)


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
