"""All-or-nothing saves: single files (``Index.save``) and multi-file artifact folders.

Guarantee
---------
A save is all-or-nothing: after a crash (an exception, ``kill -9`` or a power cut) at any point,
the target holds the old or the new artifact, complete; a save never deletes or replaces anything
it did not write.

Single files
------------
``save_file`` writes ``<dir>/.<name>.<16 hex>.pqkit-tmp``, flushes and fsyncs it, renames it
over ``<dir>/<name>`` with ``os.replace`` (atomic on POSIX) and fsyncs ``<dir>`` so that the
rename itself is durable (SQLite's and git's recipe). An existing file is replaced only when it
is a file of the same type (``is_own``), or empty.

Artifact folders
----------------
A directory rename cannot atomically replace a non-empty directory, so an artifact folder is a
stable directory whose contents are switched by replacing one small file::

    <target>/pqkit-manifest.json      the commit point: kind, the current data folder, and each
                                      member's name, size and SHA-256
    <target>/pqkit-data-<16 hex>/     the members of the current version (plain files)

Loading reads the manifest, checks every member's size and SHA-256 against it, and reads only
the data folder it names. A save:

- into a missing target: builds the whole folder (data folder and manifest) as the sibling
  ``<parent>/.<target>.<16 hex>.pqkit-tmp``, fsyncs its files and folders, renames it to
  ``<target>`` and fsyncs ``<parent>``. Before the rename the target does not exist; after
  it, it is complete.
- into an existing artifact of the same kind (``overwrite=True``) or an empty folder: writes the
  members into ``<target>/.pqkit-data.<16 hex>.pqkit-tmp``, fsyncs them, renames the folder
  to ``pqkit-data-<16 hex>``, writes the new manifest as
  ``<target>/.pqkit-manifest.json.<16 hex>.pqkit-tmp``, fsyncs it and replaces the manifest
  with ``os.replace``: the single commit point. Until then the old manifest names the old,
  untouched data folder; afterwards the new manifest names a complete, synced one. The old data
  folder is removed only after the commit.

Ownership: a target that exists and is neither an artifact of the same kind nor an empty folder
raises :class:`ArtifactExistsError` before anything is written; replacing an artifact of the same
kind needs ``overwrite=True``. Files of the user inside an artifact folder are left alone.

Leftovers of an interrupted save are recognisable by name and removed by the next save to the
same target, and only they: ``.<target>.<16 hex>.pqkit-tmp`` beside the target, and inside it
``.pqkit-data.<16 hex>.pqkit-tmp``, ``.pqkit-manifest.json.<16 hex>.pqkit-tmp`` and
``pqkit-data-<16 hex>`` folders that the manifest does not name. Saves into one directory are
serialised by an exclusive ``flock`` on it, so a save never removes the files of a concurrent
one; loads take no lock and retry when a concurrent save replaced the version they were reading.

Permissions follow the umask: files are created with mode ``0o666 & ~umask`` and folders with
``0o777 & ~umask`` (no ``mkdtemp``, whose folders are always 0700).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading

try:
    import fcntl
except ImportError:  # Windows: saves are not serialised between processes
    fcntl = None

__all__ = ["ArtifactExistsError", "create_file", "load_folder", "save_file", "save_folder",
           "write_bytes"]

TMP_SUFFIX = ".pqkit-tmp"
MANIFEST = "pqkit-manifest.json"
MANIFEST_FORMAT = "pqkit-artifact"
MANIFEST_VERSION = 1
DATA_PREFIX = "pqkit-data-"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 64
_TOKEN = r"[0-9a-f]{16}"
_DATA_RE = re.compile(rf"{DATA_PREFIX}{_TOKEN}")
_INNER_TMP_RE = re.compile(rf"\.(?:pqkit-data|{re.escape(MANIFEST)})\.{_TOKEN}{re.escape(TMP_SUFFIX)}")
_MEMBER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_CHUNK = 1 << 20


class ArtifactExistsError(FileExistsError, ValueError):
    """The target of a save exists and may not be replaced; nothing was written or removed.

    Raised when the target is not an artifact of the kind being saved (a save never replaces what
    it did not write), or when it is one and ``overwrite`` is False. It is both a
    :class:`FileExistsError` and a :class:`ValueError`.
    """


def _token() -> str:
    return secrets.token_hex(8)


def _fspath(path) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None


def _target(path) -> tuple:
    """(absolute target with symlinks resolved, parent, base name)."""
    original = _fspath(path)
    if not original:
        raise ValueError("path is empty; give a file or folder name to save to")
    target = os.path.abspath(original)
    if os.path.islink(target):  # save where the link points, as open(path, "w") would
        if not os.path.exists(target):
            raise ArtifactExistsError(f"cannot save to {original!r}: it is a symbolic link to a missing "
                                      f"{os.readlink(target)!r}; remove the link or save elsewhere")
        target = os.path.realpath(target)
    parent, base = os.path.split(target)
    if not base:
        raise ValueError(f"cannot save to {original!r}: it names no file or folder")
    return target, parent, base


# ------------------------------------------------------------------------ syncing and locking
def _open_dir(path: str):
    """A read-only descriptor of directory ``path``, or None where directories cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _fsync_dir(path: str) -> None:
    """Make the entries of ``path`` (created, renamed, removed names) durable."""
    fd = _open_dir(path)
    if fd is None:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync directories; the data itself is synced
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _sync_file(path: str) -> tuple:
    """fsync the file at ``path``; return its (size, SHA-256 hex digest)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        digest, size = hashlib.sha256(), 0
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


class _DirectoryLock:
    """Exclusive lock of a directory: ``flock`` between processes, a lock between threads.

    Re-entrant within a thread (a save may save parts of itself into the same directory).
    """

    _registry: dict = {}
    _registry_lock = threading.Lock()

    def __init__(self, directory: str):
        self.directory = directory
        self.key = None
        self.fd = None

    def __enter__(self):
        try:
            st = os.stat(self.directory)
        except OSError:
            return self
        self.key = (st.st_dev, st.st_ino)
        with self._registry_lock:
            entry = self._registry.setdefault(self.key, [threading.RLock(), 0, None])
        entry[0].acquire()
        entry[1] += 1
        if entry[1] == 1:
            fd = _open_dir(self.directory)
            if fd is not None and fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:  # file systems without flock: saves are not serialised there
                    pass
            entry[2] = fd
        return self

    def __exit__(self, *exc_info):
        if self.key is None:
            return
        entry = self._registry[self.key]
        entry[1] -= 1
        if entry[1] == 0 and entry[2] is not None:
            os.close(entry[2])  # releases the flock
            entry[2] = None
        entry[0].release()

    @classmethod
    def _after_fork(cls):
        cls._registry = {}
        cls._registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_DirectoryLock._after_fork)


# ------------------------------------------------------------------------ creating files
def create_file(path):
    """Create a new file at ``path`` (which must not exist) for binary writing.

    The mode is ``0o666 & ~umask``, as ``open(path, "wb")`` gives.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    io.BufferedWriter
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(_fspath(path), flags, 0o666), "wb")


def write_bytes(path, data: bytes) -> None:
    """Create a new file at ``path`` holding ``data`` (see :func:`create_file`)."""
    with create_file(path) as handle:
        handle.write(data)


def _remove(path: str) -> None:
    """Remove a file or a real folder (not a symlink) that a save wrote; ignore one already gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _remove_quietly(path: str) -> None:
    try:
        _remove(path)
    except OSError:
        pass


def _sibling_tmp_re(base: str):
    return re.compile(rf"\.{re.escape(base)}\.{_TOKEN}{re.escape(TMP_SUFFIX)}")


def _remove_sibling_leftovers(parent: str, base: str, extra_leftover=None) -> None:
    """Remove ``.<base>.<16 hex>.pqkit-tmp`` (and ``extra_leftover`` matches) in ``parent``."""
    pattern = _sibling_tmp_re(base)
    with os.scandir(parent) as entries:
        names = [e.name for e in entries if not e.is_symlink()]
    for name in names:
        path = os.path.join(parent, name)
        if pattern.fullmatch(name) or (extra_leftover is not None and extra_leftover(base, name, path)):
            _remove(path)


# ------------------------------------------------------------------------ single files
def save_file(path, write, *, is_own, overwrite: bool = True, what: str = "file",
              extra_leftover=None) -> None:
    """Save one file all-or-nothing: temporary sibling, ``fsync``, ``os.replace``, ``fsync`` dir.

    A save is all-or-nothing: after a crash the target holds the old or the new file; it never
    deletes anything it did not write.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its directory must exist. A symlink is followed (the file it points to is
        replaced, the link is kept).
    write : callable
        ``write(tmp_path)`` creates the file ``tmp_path`` (which does not exist) and writes it.
    is_own : callable
        ``is_own(path) -> bool``: whether an existing non-empty file is of the type being saved.
        Only such a file (or an empty one) is ever replaced.
    overwrite : bool, default True
        Whether an existing file of the same type may be replaced.
    what : str
        Name of the file type in messages ("pqkit index file").
    extra_leftover : callable, optional
        ``extra_leftover(base, name, path) -> bool``: whether the entry ``name`` (at ``path``) beside
        the target ``base`` is a leftover of an earlier writer of this file type, to remove too.

    Raises
    ------
    FileNotFoundError
        The directory does not exist.
    IsADirectoryError
        The target is a directory.
    ArtifactExistsError
        The target exists and is not a ``what`` (or ``overwrite`` is False).
    """
    target, parent, base = _target(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, f"cannot save to {target!r}: directory {parent!r} does not "
                                "exist; create it first", target)
    with _DirectoryLock(parent):
        _check_file_target(target, is_own, overwrite, what)
        _remove_sibling_leftovers(parent, base, extra_leftover)
        tmp = os.path.join(parent, f".{base}.{_token()}{TMP_SUFFIX}")
        try:
            write(tmp)
            _sync_file(tmp)
            os.replace(tmp, target)
        except BaseException:
            _remove_quietly(tmp)
            raise
        _fsync_dir(parent)


def _check_file_target(target: str, is_own, overwrite: bool, what: str) -> None:
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot save a {what} to {target!r}: it is a directory; "
                                "give a file name inside it", target)
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactExistsError(f"cannot save a {what} to {target!r}: it exists and is not a regular file; "
                                  "choose another path (nothing was changed)")
    if st.st_size == 0:
        return  # an empty file (tempfile.mkstemp makes one) holds nothing to lose
    if not is_own(target):
        raise ArtifactExistsError(
            f"cannot save a {what} to {target!r}: it exists and is not a {what}; a save never replaces "
            "what it did not write: choose another path or remove that file yourself (nothing was changed)")
    if not overwrite:
        raise ArtifactExistsError(f"{target!r} already holds a {what}; pass overwrite=True to replace it "
                                  "(nothing was changed)")


def file_starts_with(path: str, prefix: bytes) -> bool:
    """Whether the file at ``path`` starts with ``prefix``."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


# ------------------------------------------------------------------------ artifact folders
def _is_inner_leftover(name: str, current: str | None) -> bool:
    return bool(_INNER_TMP_RE.fullmatch(name) or (_DATA_RE.fullmatch(name) and name != current))


def _read_manifest(target: str):
    """The raw manifest bytes of ``target``, or None if it has none."""
    path = os.path.join(target, MANIFEST)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{path}: {size} bytes, more than a manifest holds ({MAX_MANIFEST_BYTES})")
        chunks = []
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_manifest(raw: bytes, where: str) -> dict:
    """Check the structure of a manifest; ValueError naming the bad field."""

    def bad(message):
        return ValueError(f"{where}: invalid pqkit manifest: {message}")

    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"not UTF-8 JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"expected an object with format {MANIFEST_FORMAT!r}")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise bad(f"unsupported format_version {manifest.get('format_version')!r}; this pqkit reads "
                  f"{MANIFEST_VERSION}")
    if not isinstance(manifest.get("kind"), str):
        raise bad("'kind' must be a str")
    if not isinstance(manifest.get("data"), str) or not _DATA_RE.fullmatch(manifest["data"]):
        raise bad(f"'data' must name a folder {DATA_PREFIX}<16 hex digits>, got {manifest.get('data')!r}")
    members = manifest.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise bad(f"'members' must be a list of 1 to {MAX_MEMBERS} entries")
    names = set()
    for member in members:
        if not isinstance(member, dict) or set(member) != {"name", "size", "sha256"}:
            raise bad("each member must be an object with exactly 'name', 'size' and 'sha256'")
        name, size, digest = member["name"], member["size"], member["sha256"]
        if not isinstance(name, str) or not _MEMBER_RE.fullmatch(name) or name in names:
            raise bad(f"member name {name!r} is not a plain file name or is repeated")
        names.add(name)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise bad(f"member {name!r}: 'size' must be an int >= 0")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"member {name!r}: 'sha256' must be 64 lowercase hex digits")
    return manifest


def _verify_members(data: str, members: list, where: str) -> None:
    """Every member is a regular file of the recorded size and SHA-256 (ValueError if not)."""
    try:
        st = os.lstat(data)
    except FileNotFoundError:
        raise ValueError(f"{where}: damaged: the data folder {os.path.basename(data)!r} named by "
                         f"{MANIFEST} is missing") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{where}: damaged: {os.path.basename(data)!r} is not a folder")
    for member in members:
        path = os.path.join(data, member["name"])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ValueError(f"{where}: damaged: member {member['name']!r} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{where}: damaged: member {member['name']!r} is not a regular file")
        if st.st_size != member["size"]:
            raise ValueError(f"{where}: damaged: member {member['name']!r} has {st.st_size} bytes, the "
                             f"manifest says {member['size']}")
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != member["sha256"]:
            raise ValueError(f"{where}: damaged: member {member['name']!r} does not match its SHA-256 in "
                             f"{MANIFEST}")


def load_folder(path, load_members, *, kind: str, what: str):
    """Load the current version of an artifact folder written by :func:`save_folder`.

    Parameters
    ----------
    path : str or os.PathLike
        The artifact folder.
    load_members : callable
        ``load_members(folder) -> object`` reads the members from ``folder``: the data folder
        named by the manifest after every member's size and SHA-256 were checked, or ``path``
        itself when it has no manifest (a folder written before manifests existed).
    kind : str
        The kind recorded in the manifest (``"pqkit-gallery"``, ``"pqkit-patchcore"``).
    what : str
        Name of the artifact in messages.

    Returns
    -------
    object
        What ``load_members`` returns.

    Raises
    ------
    ValueError
        An invalid manifest, a manifest of another kind, or a member that is missing or differs
        from the manifest (or what ``load_members`` raises).
    """
    folder = _fspath(path)
    where = os.path.join(folder, MANIFEST)
    for _attempt in range(10):
        raw = _read_manifest(folder)
        if raw is None:
            return load_members(folder)
        manifest = _parse_manifest(raw, where)
        if manifest["kind"] != kind:
            raise ValueError(f"{folder!r} holds a {manifest['kind']}, not a {what}")
        data = os.path.join(folder, manifest["data"])
        try:
            _verify_members(data, manifest["members"], where)
            return load_members(data)
        except (OSError, ValueError):
            if _read_manifest(folder) != raw:
                continue  # a concurrent save replaced this version: read the new one
            raise
    raise ValueError(f"{folder!r} was replaced by other saves while loading it; try again")


def _inspect_folder_target(target: str, kind: str, overwrite: bool, what: str, legacy_members):
    """Refuse a target that may not be replaced; return (exists, current data name, legacy names)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return False, None, []
    if not stat.S_ISDIR(st.st_mode):
        raise ArtifactExistsError(f"cannot save a {what} to {target!r}: it exists and is not a folder; "
                                  "choose a new or empty folder (nothing was changed)")
    refuse_overwrite = ArtifactExistsError(
        f"{target!r} already holds a {what}; pass overwrite=True (command line: --overwrite) to replace it "
        "(nothing was changed)")
    raw = _read_manifest(target)
    if raw is not None:
        try:
            manifest = _parse_manifest(raw, os.path.join(target, MANIFEST))
        except ValueError as exc:
            raise ArtifactExistsError(f"cannot save a {what} to {target!r}: {exc}; remove that folder "
                                      "yourself or choose another (nothing was changed)") from None
        if manifest["kind"] != kind:
            raise ArtifactExistsError(f"cannot save a {what} to {target!r}: it holds a {manifest['kind']}, "
                                      f"not a {what}; choose another folder (nothing was changed)")
        if not overwrite:
            raise refuse_overwrite
        legacy = legacy_members(target) if legacy_members is not None else None
        return True, manifest["data"], legacy or []
    legacy = legacy_members(target) if legacy_members is not None else None
    if legacy:
        if not overwrite:
            raise refuse_overwrite
        return True, None, legacy
    others = sorted(n for n in os.listdir(target) if not _is_inner_leftover(n, None))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ArtifactExistsError(
            f"cannot save a {what} to {target!r}: the folder is not empty and holds no {what} (it contains "
            f"{shown}); a save never replaces what it did not write: choose a new or empty folder "
            "(nothing was changed)")
    return True, None, []


def check_folder_target(path, *, kind: str, overwrite: bool, what: str, legacy_members=None) -> None:
    """Raise as :func:`save_folder` would for this target, before any work is done (writes nothing)."""
    target, _parent, _base = _target(path)
    _inspect_folder_target(target, kind, overwrite, what, legacy_members)


def _write_members(folder: str, write_members) -> list:
    """Run the writer into the empty ``folder``; fsync everything; return the manifest entries."""
    write_members(folder)
    members = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not _MEMBER_RE.fullmatch(name) or not stat.S_ISREG(os.lstat(path).st_mode):
            raise RuntimeError(f"an artifact writer left {name!r}, which is not a plain member file")
        size, digest = _sync_file(path)
        members.append({"name": name, "size": size, "sha256": digest})
    if not members:
        raise RuntimeError("an artifact writer wrote no member files")
    _fsync_dir(folder)
    return members


def _manifest_bytes(kind: str, data: str, members: list) -> bytes:
    from ._version import __version__

    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "kind": kind, "data": data,
                "members": members, "pqkit_version": __version__}
    return (json.dumps(manifest, indent=1) + "\n").encode("utf-8")


def save_folder(path, write_members, *, kind: str, overwrite: bool = False, what: str,
                legacy_members=None) -> None:
    """Save a multi-file artifact all-or-nothing (see the module docstring for the protocol).

    A save is all-or-nothing: after a crash the target holds the old or the new artifact; it
    never deletes anything it did not write.

    Parameters
    ----------
    path : str or os.PathLike
        The artifact folder. Missing parent folders are created.
    write_members : callable
        ``write_members(folder)`` writes the member files (plain names, no subfolders) into the
        empty folder ``folder``.
    kind : str
        Recorded in the manifest; only an artifact of this kind is ever replaced.
    overwrite : bool, default False
        Whether an existing artifact of this kind may be replaced.
    what : str
        Name of the artifact in messages ("gallery").
    legacy_members : callable, optional
        ``legacy_members(folder) -> list of str or None``: the member files of an artifact of this
        kind written before manifests existed (plain files in the folder itself), which the
        new version supersedes and which are removed after the commit.

    Raises
    ------
    ArtifactExistsError
        The target is a file, a folder that is neither empty nor an artifact of this kind, or an
        artifact of this kind while ``overwrite`` is False. Nothing was written or removed.
    """
    target, parent, base = _target(path)
    os.makedirs(parent, exist_ok=True)
    with _DirectoryLock(parent):
        exists, current, legacy = _inspect_folder_target(target, kind, overwrite, what, legacy_members)
        _remove_sibling_leftovers(parent, base)
        if exists:
            _save_in_place(target, write_members, kind, current, legacy)
        else:
            _save_new(target, parent, base, write_members, kind)


def _save_new(target: str, parent: str, base: str, write_members, kind: str) -> None:
    tmp = os.path.join(parent, f".{base}.{_token()}{TMP_SUFFIX}")
    data = DATA_PREFIX + _token()
    try:
        os.mkdir(tmp, 0o777)
        os.mkdir(os.path.join(tmp, data), 0o777)
        members = _write_members(os.path.join(tmp, data), write_members)
        write_bytes(os.path.join(tmp, MANIFEST), _manifest_bytes(kind, data, members))
        _sync_file(os.path.join(tmp, MANIFEST))
        _fsync_dir(tmp)
        try:
            os.rename(tmp, target)  # the commit point; replaces at most an empty folder made meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise ArtifactExistsError(f"{target!r} was created by someone else during the save; nothing "
                                          "of it was changed") from None
            raise
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)


def _save_in_place(target: str, write_members, kind: str, current, legacy: list) -> None:
    names = os.listdir(target)
    for name in names:
        if _is_inner_leftover(name, current):
            _remove(os.path.join(target, name))
    token = _token()
    tmp_data = os.path.join(target, f".pqkit-data.{token}{TMP_SUFFIX}")
    data = DATA_PREFIX + token
    tmp_manifest = os.path.join(target, f".{MANIFEST}.{_token()}{TMP_SUFFIX}")
    committed = False
    try:
        os.mkdir(tmp_data, 0o777)
        members = _write_members(tmp_data, write_members)
        os.rename(tmp_data, os.path.join(target, data))
        _fsync_dir(target)
        write_bytes(tmp_manifest, _manifest_bytes(kind, data, members))
        _sync_file(tmp_manifest)
        os.replace(tmp_manifest, os.path.join(target, MANIFEST))  # the commit point
        committed = True
        _fsync_dir(target)
    except BaseException:
        if not committed:
            for path in (tmp_data, os.path.join(target, data), tmp_manifest):
                _remove_quietly(path)
        raise
    # The new version is durable; what it supersedes was written by earlier saves. A failure to
    # remove it is not a failed save: the next save to this target removes it.
    for name in os.listdir(target):
        if _is_inner_leftover(name, data):
            _remove_quietly(os.path.join(target, name))
    for name in legacy:
        _remove_quietly(os.path.join(target, name))
    _fsync_dir(target)
