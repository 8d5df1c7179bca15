"""All-or-nothing saves: index files, galleries and PatchCore models.

The kill campaign forks a child that saves and kills it with SIGKILL, both before each file-system
step of the save in turn (deterministically) and after a random delay, then checks that the target
holds the complete old or the complete new artifact (compared by content), that nothing outside
the target and its recognisable temporary names changed, and that the next save removes every
leftover. The unit tests check ownership (a save never replaces what it did not write), the
overwrite rules, injected failures, permissions under two umasks, leftover patterns, the image
root of galleries and the PatchCore backends.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import threading
import time
import warnings

import numpy as np
import pytest

import pqkit
from pqkit import _atomic
from pqkit import io as _io
from pqkit.patchcore import PatchCore
from pqkit.patchcore.neighbors import BACKENDS
from pqkit.retrieval import Gallery
from tests.conftest import skip_or_fail

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork (POSIX only)")

TMP_RE = re.compile(r".*\.[0-9a-f]{16}\.pqkit-tmp")
DATA_RE = re.compile(r"pqkit-data-[0-9a-f]{16}")

# ------------------------------------------------------------------------------ artifacts
# Each kind: save(obj, path), and a fingerprint of what a path holds (content, not "it loads").


def _index(seed: int, n: int):
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    index = pqkit.IndexFlat(8)
    index.add(x)
    return index


def _gallery(seed: int, n: int, root):
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    return Gallery.from_vectors(x, ids=np.arange(n) * 2 + seed, labels=np.arange(n) % 3,
                                paths=[f"c{i % 3}/{seed}-{i}.png" for i in range(n)], root=str(root))


def _model(seed: int, backend: str, params=None, n_images: int = 3):
    features = np.random.default_rng(seed).standard_normal((n_images, 4, 4, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny banks for the quantised backends
        return PatchCore(backend=backend, backend_params=params or {}, coreset_method="all",
                         seed=seed).fit_features(features)


def _index_fingerprint(path):
    return ("index", _io.index_to_bytes(pqkit.load(path)))


def _gallery_fingerprint(path):
    g = Gallery.load(path)
    return ("gallery", _io.index_to_bytes(g.index), g.ids.tolist(), g.labels.tolist(), g.paths, g.root,
            g.metric, g.description)


def _model_fingerprint(path):
    m = PatchCore.load(path)
    bank = m.backend_.reconstruct(np.arange(m.bank_size_))
    return ("model", json.dumps(m.config(), sort_keys=True), m.feature_shape_, bank.tobytes())


def _state(path, fingerprint):
    """What ``path`` holds: "absent", a fingerprint, or "broken"."""
    if not os.path.lexists(path):
        return "absent"
    try:
        return fingerprint(path)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a broken target
        return ("broken", repr(exc))


def _snapshot(root, ours):
    """Every entry under ``root`` except ``ours(relpath)``: type, mode and content."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            if ours(rel):
                if name in dirs:
                    dirs.remove(name)
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(full, "rb") as handle:
                    found[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(handle.read()).hexdigest())
    return found


def _ours(target_name):
    """Names a save to ``target_name`` may create: the target's own files and its temporary names."""
    sibling = re.compile(rf"\.{re.escape(target_name)}\.[0-9a-f]{{16}}\.pqkit-tmp")

    def ours(rel):
        parts = rel.split(os.sep)
        if sibling.fullmatch(parts[0]):
            return True
        if parts[0] != target_name:
            return False
        return len(parts) == 1 or parts[1] == "pqkit-manifest.json" or bool(
            DATA_RE.fullmatch(parts[1]) or TMP_RE.fullmatch(parts[1]))
    return ours


def _leftovers(parent, target_name):
    """Temporary names of saves to the target still present (beside it and inside it)."""
    sibling = re.compile(rf"\.{re.escape(target_name)}\.[0-9a-f]{{16}}\.pqkit-tmp")
    found = [n for n in os.listdir(parent) if sibling.fullmatch(n)]
    target = os.path.join(parent, target_name)
    if os.path.isdir(target):
        data = [n for n in os.listdir(target) if DATA_RE.fullmatch(n)]
        found += [n for n in os.listdir(target) if TMP_RE.fullmatch(n)]
        found += data[1:] if len(data) > 1 else []
    return found


# ------------------------------------------------------------------------------ fault injection
_STEPS = ("open", "mkdir", "rename", "replace", "fsync", "unlink", "rmdir", "scandir", "listdir")


class _Faults:
    """Wraps the os functions a save calls; at step ``at`` kills the process or raises."""

    def __init__(self, at=None, action="count"):
        self.at, self.action, self.count = at, action, 0

    def step(self):
        if self.count == self.at:
            if self.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            self.count += 1
            raise OSError(errno.EIO, "injected fault")
        self.count += 1

    def install(self, setattr_):
        for name in _STEPS:
            original = getattr(os, name)

            def wrapper(*args, _original=original, **kwargs):
                self.step()
                return _original(*args, **kwargs)
            setattr_(os, name, wrapper)


def _fork(save, kill_at=None, ready=None) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a process with threads
        pid = os.fork()
    if pid == 0:  # the child: save, then leave without running any of the parent's cleanup
        code = 0
        try:
            if kill_at is not None:
                _Faults(kill_at, "kill").install(setattr)
            if ready is not None:
                os.write(ready, b"1")
            save()
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    return pid


def _wait(pid) -> str:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the saving child failed ({status})"
    return "completed"


# ------------------------------------------------------------------------------ kill campaign
class _Campaign:
    """Kill saves of one artifact kind in ``parent/target_name``, alternating two versions."""

    def __init__(self, tmp_path, kind, target_name, versions, save, fingerprint, inside_user_file):
        self.parent = tmp_path / kind
        self.parent.mkdir()
        self.target = self.parent / target_name
        self.target_name = target_name
        self.versions, self.save, self.fingerprint = versions, save, fingerprint
        self.inside_user_file = inside_user_file
        self.ours = _ours(target_name)
        # the other files of the parent, some with names close to the target's temporary names
        (self.parent / "data").mkdir()
        (self.parent / "data" / "results.csv").write_text("a,b\n1,2\n")
        (self.parent / "notes.txt").write_text("keep me")
        (self.parent / f"{target_name}.bak").write_bytes(b"user backup")
        (self.parent / f".{target_name}.0123456789abcdeg.pqkit-tmp").write_bytes(b"not hex: not ours")
        (self.parent / f".other.0123456789abcdef.pqkit-tmp").write_bytes(b"another target's name")
        (self.parent / f"{target_name}.0123456789abcdef.pqkit-tmp").write_bytes(b"no leading dot")
        # the two versions as they load back
        self.expected = []
        for i, version in enumerate(versions):
            reference = tmp_path / f"{kind}-reference-{i}" / target_name
            reference.parent.mkdir()
            save(version, reference)
            self.expected.append(fingerprint(reference))
        assert self.expected[0] != self.expected[1]
        self.current = None  # index into versions of what the target holds, None when absent
        self.counts = {"kills": 0, "old": 0, "new": 0, "broken": 0, "completed": 0, "lost": 0}

    def complete_save(self, version: int) -> None:
        """A save that runs to its end: it must remove every leftover of the killed one."""
        self.save(self.versions[version], self.target)
        self.current = version
        assert _leftovers(self.parent, self.target_name) == []
        if self.inside_user_file and self.target.is_dir():
            user = self.target / "user-notes.txt"
            if not user.exists():
                user.write_text("the user's own file inside the artifact folder")

    def start(self, absent: bool) -> tuple:
        if absent:
            if self.target.is_dir():
                shutil.rmtree(self.target)
            elif self.target.exists():
                self.target.unlink()
            self.current = None
        elif self.current is None:
            self.complete_save(0)
        new = 0 if self.current is None else 1 - self.current
        baseline = _snapshot(self.parent, self.ours)
        return new, baseline

    def check(self, new: int, baseline, outcome: str) -> None:
        old_state = "absent" if self.current is None else self.expected[self.current]
        state = _state(self.target, self.fingerprint)
        if outcome == "killed":
            self.counts["kills"] += 1
            if state == old_state:
                self.counts["old"] += 1
            elif state == self.expected[new]:
                self.counts["new"] += 1
            else:
                self.counts["broken"] += 1
        else:
            self.counts["completed"] += 1
            assert state == self.expected[new]
        assert state in (old_state, self.expected[new]), f"target holds neither the old nor the new: {state}"
        if _snapshot(self.parent, self.ours) != baseline:
            self.counts["lost"] += 1
        assert _snapshot(self.parent, self.ours) == baseline, "a save touched what it did not write"
        self.complete_save(new)

    def probe(self, monkeypatch, absent: bool) -> tuple:
        """(file-system steps, seconds) of one complete save."""
        new, baseline = self.start(absent)
        faults = _Faults()
        with monkeypatch.context() as patch:
            faults.install(patch.setattr)
            tick = time.perf_counter()
            self.save(self.versions[new], self.target)
            seconds = time.perf_counter() - tick
        self.current = new
        self.check(new, baseline, "completed")
        return faults.count, seconds

    def kill_at_each_step(self, monkeypatch, absent: bool) -> None:
        steps, _ = self.probe(monkeypatch, absent)
        assert steps >= 5
        for at in range(steps):
            new, baseline = self.start(absent)
            outcome = _wait(_fork(lambda: self.save(self.versions[new], self.target), kill_at=at))
            assert outcome == "killed", f"step {at} of {steps} was not reached"
            self.check(new, baseline, outcome)

    def kill_at_random(self, monkeypatch, rng, kills: int) -> None:
        _, seconds = self.probe(monkeypatch, False)
        while self.counts["kills"] < kills:
            new, baseline = self.start(absent=rng.random() < 0.25)
            ready_read, ready_write = os.pipe()
            pid = _fork(lambda: self.save(self.versions[new], self.target), ready=ready_write)
            os.close(ready_write)
            os.read(ready_read, 1)
            os.close(ready_read)
            time.sleep(rng.uniform(0, 1.5 * seconds))
            os.kill(pid, signal.SIGKILL)
            self.check(new, baseline, _wait(pid))

    def run(self, monkeypatch, seed: int, kills: int = 120, random_kills: int = 40) -> dict:
        tick = time.perf_counter()
        self.kill_at_each_step(monkeypatch, absent=False)
        self.kill_at_each_step(monkeypatch, absent=True)
        steps = self.counts["kills"]
        self.kill_at_random(monkeypatch, np.random.default_rng(seed), max(kills, steps + random_kills))
        print(f"\n{self.target_name}: {steps} kills at each step, {self.counts['kills'] - steps} at random "
              f"times; {self.counts} in {time.perf_counter() - tick:.1f} s")
        assert self.counts["kills"] >= 100 and self.counts["broken"] == 0 and self.counts["lost"] == 0
        assert self.counts["old"] > 0 and self.counts["new"] > 0
        return self.counts


@needs_fork
def test_kill_index_file_saves(tmp_path, monkeypatch):
    campaign = _Campaign(tmp_path, "index", "bank.pqkit", [_index(1, 3000), _index(2, 2000)],
                         lambda index, path: index.save(path), _index_fingerprint, inside_user_file=False)
    campaign.run(monkeypatch, seed=11)


@needs_fork
def test_kill_gallery_saves(tmp_path, monkeypatch):
    images = tmp_path / "images"
    versions = [_gallery(1, 120, images), _gallery(2, 90, images)]
    campaign = _Campaign(tmp_path, "gallery", "photos.gallery", versions,
                         lambda g, path: g.save(path, overwrite=True), _gallery_fingerprint, inside_user_file=True)
    campaign.run(monkeypatch, seed=12)


@needs_fork
def test_kill_patchcore_saves(tmp_path, monkeypatch):
    versions = [_model(1, "pqkit_flat"), _model(2, "exact_knn")]  # different member files too
    campaign = _Campaign(tmp_path, "patchcore", "model", versions,
                         lambda m, path: m.save(path, overwrite=True), _model_fingerprint, inside_user_file=True)
    campaign.run(monkeypatch, seed=13)


# ------------------------------------------------------------------------------ injected failures
@pytest.mark.parametrize("kind", ["index", "gallery", "patchcore"])
def test_failure_at_each_step_leaves_old_or_new(tmp_path, monkeypatch, kind):
    """An exception at every file-system step in turn: the target holds the old or the new
    artifact, the failed save cleans up after itself, and the next save leaves nothing behind."""
    if kind == "index":
        versions, save, fingerprint, name = [_index(1, 50), _index(2, 40)], lambda o, p: o.save(p), \
            _index_fingerprint, "i.pqkit"
    elif kind == "gallery":
        versions, save, fingerprint, name = [_gallery(1, 40, tmp_path), _gallery(2, 30, tmp_path)], \
            lambda o, p: o.save(p, overwrite=True), _gallery_fingerprint, "g"
    else:
        versions, save, fingerprint, name = [_model(1, "pqkit_flat"), _model(2, "exact_knn")], \
            lambda o, p: o.save(p, overwrite=True), _model_fingerprint, "m"
    target = tmp_path / name
    save(versions[0], target)
    old = fingerprint(target)
    faults = _Faults()
    with monkeypatch.context() as patch:
        faults.install(patch.setattr)
        save(versions[1], target)
    new = fingerprint(target)
    steps, outcomes = faults.count, {"old": 0, "new": 0}
    for at in range(steps):
        save(versions[0], target)
        with monkeypatch.context() as patch:
            _Faults(at, "raise").install(patch.setattr)
            try:
                save(versions[1], target)
            except OSError as exc:
                assert "injected fault" in str(exc)
        state = _state(target, fingerprint)
        assert state in (old, new), f"fault at step {at}: {state}"
        outcomes["old" if state == old else "new"] += 1
    save(versions[0], target)
    assert _leftovers(str(tmp_path), name) == [] and fingerprint(target) == old
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes


def test_failure_after_the_first_member_keeps_the_old_artifact(tmp_path, monkeypatch):
    images = tmp_path / "images"
    old_gallery, new_gallery = _gallery(1, 40, images), _gallery(2, 30, images)
    old_gallery.save(tmp_path / "g")
    before = _gallery_fingerprint(tmp_path / "g")
    real_write_bytes = _atomic.write_bytes

    def fail_on_metadata(path, data):
        if os.path.basename(path) == "gallery.json":  # written after index.pqkit
            assert os.path.isfile(os.path.join(os.path.dirname(path), "index.pqkit"))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_bytes(path, data)

    monkeypatch.setattr(_atomic, "write_bytes", fail_on_metadata)
    with pytest.raises(OSError, match="No space"):
        new_gallery.save(tmp_path / "g", overwrite=True)
    monkeypatch.undo()
    assert _gallery_fingerprint(tmp_path / "g") == before
    assert _leftovers(str(tmp_path), "g") == [] and len(os.listdir(tmp_path / "g")) == 2

    model = _model(1, "pqkit_flat")
    model.save(tmp_path / "m")
    before = _model_fingerprint(tmp_path / "m")
    other = _model(2, "exact_knn")

    def fail(path):
        assert os.path.isfile(os.path.join(os.path.dirname(path), "config.json"))  # the first member
        raise OSError(errno.EIO, "disk failed")

    monkeypatch.setattr(other.backend_, "_save", fail)
    with pytest.raises(OSError, match="disk failed"):
        other.save(tmp_path / "m", overwrite=True)
    assert _model_fingerprint(tmp_path / "m") == before
    assert _leftovers(str(tmp_path), "m") == []


# ------------------------------------------------------------------------------ ownership
def _unrelated_folder(folder):
    folder.mkdir()
    (folder / "config.json").write_text('{"learning_rate": 0.1}')
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    (folder / "data").mkdir()
    (folder / "data" / "results.csv").write_text("epoch,loss\n1,0.5\n")
    return _snapshot(folder, lambda rel: False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_unrelated_folder_is_never_replaced(tmp_path, overwrite):
    folder = tmp_path / "work"
    before = _unrelated_folder(folder)
    mtimes = {p: os.stat(folder / p).st_mtime_ns for p in before}
    saves = [lambda: _model(1, "pqkit_flat").save(folder, overwrite=overwrite),
             lambda: _gallery(1, 20, tmp_path).save(folder, overwrite=overwrite),
             lambda: PatchCore.check_save_target(folder, overwrite=overwrite),
             lambda: Gallery.check_save_target(folder, overwrite=overwrite)]
    for save in saves:
        with pytest.raises(_atomic.ArtifactExistsError, match="not empty and holds no .*config.json, data"):
            save()
        assert _snapshot(folder, lambda rel: False) == before
        assert {p: os.stat(folder / p).st_mtime_ns for p in before} == mtimes
    assert sorted(os.listdir(tmp_path)) == ["work"]  # no temporary folder either
    with pytest.raises(ValueError):  # it is a ValueError for callers that catch those
        _model(1, "pqkit_flat").save(folder)
    # a file named like a member of the other kind is not an artifact of this kind either
    with pytest.raises(_atomic.ArtifactExistsError):
        _index(1, 10).save(folder / "thesis.tex")
    assert _snapshot(folder, lambda rel: False) == before


def test_overwrite_rules(tmp_path):
    model, gallery = _model(1, "pqkit_flat"), _gallery(1, 20, tmp_path)
    model.save(tmp_path / "m")
    gallery.save(tmp_path / "g")
    for save, target, kind in [(model.save, "m", "PatchCore model"), (gallery.save, "g", "gallery")]:
        with pytest.raises(_atomic.ArtifactExistsError, match=f"already holds a {kind}; pass overwrite=True"):
            save(tmp_path / target)
        save(tmp_path / target, overwrite=True)
    # an artifact of another kind is not replaced, even with overwrite=True
    with pytest.raises(_atomic.ArtifactExistsError, match="holds a pqkit-gallery, not a PatchCore model"):
        model.save(tmp_path / "g", overwrite=True)
    with pytest.raises(ValueError, match="holds a pqkit-patchcore, not a gallery"):
        Gallery.load(tmp_path / "m")
    # a file where a folder is expected
    (tmp_path / "file").write_text("x")
    with pytest.raises(_atomic.ArtifactExistsError, match="not a folder"):
        gallery.save(tmp_path / "file", overwrite=True)
    # an empty folder is used as it is (tempfile.mkdtemp makes those)
    (tmp_path / "empty").mkdir()
    gallery.save(tmp_path / "empty")
    assert Gallery.load(tmp_path / "empty").ids.tolist() == gallery.ids.tolist()


def test_index_save_replaces_only_index_files(tmp_path):
    a, b = _index(1, 30), _index(2, 20)
    a.save(tmp_path / "x.pqkit")
    b.save(tmp_path / "x.pqkit")  # replaces its own file type by default, as faiss.write_index does
    assert pqkit.load(tmp_path / "x.pqkit").ntotal == 20
    with pytest.raises(_atomic.ArtifactExistsError, match="already holds a pqkit index file"):
        _io.save(a, tmp_path / "x.pqkit", overwrite=False)
    (tmp_path / "empty.pqkit").write_bytes(b"")  # what tempfile.mkstemp leaves: nothing to lose
    a.save(tmp_path / "empty.pqkit")
    assert pqkit.load(tmp_path / "empty.pqkit").ntotal == 30
    (tmp_path / "notes.pqkit").write_bytes(b"PQKI")  # a prefix of the magic is not an index
    with pytest.raises(FileExistsError, match="not a pqkit index file"):
        a.save(tmp_path / "notes.pqkit")
    assert (tmp_path / "notes.pqkit").read_bytes() == b"PQKI"
    # a symlink is followed: the file it points to is replaced, the link kept
    os.symlink("x.pqkit", tmp_path / "link.pqkit")
    a.save(tmp_path / "link.pqkit")
    assert os.path.islink(tmp_path / "link.pqkit") and pqkit.load(tmp_path / "x.pqkit").ntotal == 30
    os.symlink("missing.pqkit", tmp_path / "dangling.pqkit")  # nothing is created where it points
    with pytest.raises(FileExistsError, match="symbolic link to a missing"):
        a.save(tmp_path / "dangling.pqkit")
    os.unlink(tmp_path / "dangling.pqkit")
    assert sorted(os.listdir(tmp_path)) == ["empty.pqkit", "link.pqkit", "notes.pqkit", "x.pqkit"]


# ------------------------------------------------------------------------------ leftovers
def test_next_save_removes_only_its_own_leftovers(tmp_path):
    index = _index(1, 30)
    hexa = "0123456789abcdef"
    mine = [f".x.pqkit.{hexa}.pqkit-tmp", f".x.pqkit.{hexa[::-1]}.pqkit-tmp"]
    (tmp_path / mine[0]).write_bytes(b"half an index")
    (tmp_path / mine[1]).mkdir()
    (tmp_path / mine[1] / "member").write_bytes(b"x")
    earlier = f".x.pqkit.{hexa}.tmp"  # the temporary name of earlier pqkit versions
    (tmp_path / earlier).write_bytes(_io.MAGIC + b"cut short")
    keep = [f".x.pqkit.{hexa}.tmp.bak", f".y.pqkit.{hexa}.pqkit-tmp", f".x.pqkit.{hexa.upper()}.pqkit-tmp",
            f"x.pqkit.{hexa}.pqkit-tmp", f".x.pqkit.{hexa}0.pqkit-tmp", f".x.pqkit.{hexa[1:]}.tmp", ".x.pqkit"]
    for name in keep:
        (tmp_path / name).write_bytes(b"not a leftover of saves to x.pqkit")
    foreign_tmp = f".x.pqkit.{hexa[:-1]}e.tmp"
    (tmp_path / foreign_tmp).write_bytes(b"matches the old pattern but holds no pqkit header")
    os.symlink("/", tmp_path / f".x.pqkit.{hexa[:-1]}0.pqkit-tmp")  # never followed, never removed
    index.save(tmp_path / "x.pqkit")
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(keep + [foreign_tmp, f".x.pqkit.{hexa[:-1]}0.pqkit-tmp", "x.pqkit"])

    # inside an artifact folder: stale data folders and temporary names go, the user's files stay
    gallery = _gallery(1, 20, tmp_path)
    gallery.save(tmp_path / "g")
    stale = ["pqkit-data-" + hexa, f".pqkit-data.{hexa}.pqkit-tmp", f".pqkit-manifest.json.{hexa}.pqkit-tmp"]
    for name in stale[:2]:
        (tmp_path / "g" / name).mkdir()
        (tmp_path / "g" / name / "index.pqkit").write_bytes(b"x")
    (tmp_path / "g" / stale[2]).write_text("{")
    user = ["pqkit-data-notes", "README.md", ".pqkit-data.backup"]
    for name in user:
        (tmp_path / "g" / name).write_text("mine")
    gallery.save(tmp_path / "g", overwrite=True)
    names = sorted(os.listdir(tmp_path / "g"))
    assert [n for n in names if DATA_RE.fullmatch(n)] != [] and not set(stale) & set(names)
    assert sorted(set(names) - {"pqkit-manifest.json"} - {n for n in names if DATA_RE.fullmatch(n)}) == sorted(user)


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_modes_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        _index(1, 20).save(tmp_path / "i.pqkit")
        _gallery(1, 20, tmp_path).save(tmp_path / "new" / "g")  # the missing parent is created too
        _gallery(2, 20, tmp_path).save(tmp_path / "new" / "g", overwrite=True)  # in place
        _model(1, "exact_knn").save(tmp_path / "m")
        _model(1, "exact_knn").backend_.save(tmp_path / "bank.npy")
    finally:
        os.umask(previous)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    for folder, dirs, files in os.walk(tmp_path):
        for name in dirs:
            if os.path.join(folder, name) != str(tmp_path):
                assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == dir_mode, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == file_mode, name


# ------------------------------------------------------------------------------ PatchCore backends
_BACKEND_PARAMS = {
    "pqkit_pq": {"m": 4, "nbits": 4},
    "pqkit_ivfpq": {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4},
    "pqkit_ivfpq_refine": {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4, "k_factor": 4},
    "faiss_ivfpq": {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4},
    "faiss_ivfpq_refine": {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4, "k_factor": 4},
}


@pytest.mark.parametrize("name, refine_m", [(name, 0) for name in sorted(BACKENDS)]
                         + [(name, 4) for name in sorted(BACKENDS) if name.endswith("_refine")])
def test_model_save_load_with_every_backend(tmp_path, name, refine_m):
    if name.startswith("faiss"):
        try:
            import faiss  # noqa: F401
        except ImportError:
            skip_or_fail("faiss missing: pip install faiss-cpu")
    params = dict(_BACKEND_PARAMS.get(name, {}), **({"refine_m": refine_m} if refine_m else {}))
    model = _model(3, name, params, n_images=17 if refine_m else 3)  # 8-bit refine codes: 256+ vectors
    features = np.random.default_rng(9).standard_normal((2, 4, 4, 8)).astype(np.float32)
    scores, distances = model.score_features(features)
    model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "pqkit-manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == sorted(["config.json", BACKENDS[name].file_name])
    loaded = PatchCore.load(tmp_path / "m")
    assert loaded.backend == name and loaded.backend_params == model.backend_params
    loaded_scores, loaded_distances = loaded.score_features(features)
    np.testing.assert_array_equal(loaded_scores, scores)
    np.testing.assert_array_equal(loaded_distances, distances)


def test_backend_file_names_come_from_the_classes():
    import pqkit.patchcore.model as model_module

    assert not hasattr(model_module, "_BACKEND_FILES")
    assert {cls.file_name for cls in BACKENDS.values()} == {"memory_bank.pqkit", "memory_bank.npy",
                                                             "memory_bank.faiss"}


# ------------------------------------------------------------------------------ earlier layouts
def test_folders_saved_before_manifests_load_and_are_replaced(tmp_path):
    gallery, model = _gallery(1, 20, tmp_path), _model(1, "pqkit_flat")
    for artifact, name, fingerprint in [(gallery, "g", _gallery_fingerprint), (model, "m", _model_fingerprint)]:
        artifact.save(tmp_path / "current" / name)
        data = next((tmp_path / "current" / name).glob("pqkit-data-*"))
        legacy = tmp_path / name
        shutil.copytree(data, legacy)  # the layout of earlier versions: the members in the folder itself
        (legacy / "user.txt").write_text("mine")
        assert fingerprint(legacy) == fingerprint(tmp_path / "current" / name)
        with pytest.raises(_atomic.ArtifactExistsError, match="overwrite=True"):
            artifact.save(legacy)
        artifact.save(legacy, overwrite=True)
        names = sorted(os.listdir(legacy))
        assert names[0] == "pqkit-data-" + names[0][11:] and names[1:] == ["pqkit-manifest.json", "user.txt"]
        assert fingerprint(legacy) == fingerprint(tmp_path / "current" / name)


# ------------------------------------------------------------------------------ damaged folders
def test_members_are_checked_against_the_manifest(tmp_path):
    gallery = _gallery(1, 20, tmp_path)
    gallery.save(tmp_path / "g")
    data = next((tmp_path / "g").glob("pqkit-data-*"))
    meta = data / "gallery.json"
    original = meta.read_bytes()
    meta.write_bytes(original.replace(b'"cosine"', b'"l2"    '))  # same size, other content
    with pytest.raises(ValueError, match="gallery.json' does not match its SHA-256"):
        Gallery.load(tmp_path / "g")
    meta.write_bytes(original[:-1])
    with pytest.raises(ValueError, match="has .* bytes, the manifest says"):
        Gallery.load(tmp_path / "g")
    (tmp_path / "g" / "pqkit-manifest.json").write_text('{"format": "pqkit-artifact"}')
    with pytest.raises(ValueError, match="invalid pqkit manifest"):
        Gallery.load(tmp_path / "g")
    with pytest.raises(_atomic.ArtifactExistsError, match="invalid pqkit manifest"):
        gallery.save(tmp_path / "g", overwrite=True)  # what it cannot read, it does not replace
    assert (tmp_path / "g" / "pqkit-manifest.json").read_text() == '{"format": "pqkit-artifact"}'


def test_loads_while_saving_see_old_or_new(tmp_path):
    versions = [_gallery(1, 60, tmp_path), _gallery(2, 50, tmp_path)]
    versions[0].save(tmp_path / "g")
    expected = {len(v) for v in versions}
    errors, seen, done = [], set(), threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add(len(Gallery.load(tmp_path / "g")))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    writers = [threading.Thread(target=lambda i=i: [versions[(i + j) % 2].save(tmp_path / "g", overwrite=True)
                                                    for j in range(15)]) for i in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    for reader in readers:
        reader.join()
    assert errors == [] and seen <= expected and seen
    assert _leftovers(str(tmp_path), "g") == []


# ------------------------------------------------------------------------------ gallery image root
def _legacy_gallery(tmp_path, gallery, name="g"):
    """A gallery folder in the earlier layout, whose gallery.json a test may edit."""
    gallery.save(tmp_path / "saved" / name)
    folder = tmp_path / name
    shutil.copytree(next((tmp_path / "saved" / name).glob("pqkit-data-*")), folder)
    return folder, json.loads((folder / "gallery.json").read_text())


def test_gallery_paths_are_confined_to_the_image_root(tmp_path):
    root = tmp_path / "images"
    (root / "c0").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.png").write_bytes(b"private")
    gallery = Gallery.from_vectors(np.eye(4, dtype=np.float32), paths=["c0/a.png", "c0/b.png", "c1/c.png", "d.png"],
                                   root=str(root))
    folder, meta = _legacy_gallery(tmp_path, gallery)
    assert Gallery.load(folder).path_of(2) == str(root / "c1" / "c.png")  # missing files are fine

    def load_with(paths):
        (folder / "gallery.json").write_text(json.dumps({**meta, "entries": {**meta["entries"], "path": paths}}))
        return Gallery.load(folder)

    with pytest.raises(ValueError, match=r"entry 3 \(id 3\): image path '/etc/passwd.png' is absolute"):
        load_with(["c0/a.png", "c0/b.png", "c1/c.png", "/etc/passwd.png"])
    with pytest.raises(ValueError, match=r"entry 1 \(id 1\): image path 'c0/../../x.png'"):
        load_with(["c0/a.png", "c0/../../x.png", "c1/c.png", "d.png"])
    load_with(meta["entries"]["path"])
    os.symlink(outside / "key.png", root / "c0" / "b.png")  # a file link out of the root
    with pytest.raises(ValueError, match=r"entry 1 \(id 1\): image path 'c0/b.png' resolves to .*secret.*outside"):
        Gallery.load(folder)
    with pytest.raises(ValueError, match=r"cannot save the gallery .*entry 1 \(id 1\): image path 'c0/b.png'"):
        gallery.save(tmp_path / "not-saved")  # what would not load again is not saved
    assert not (tmp_path / "not-saved").exists()
    os.unlink(root / "c0" / "b.png")
    os.symlink(outside, root / "c1")  # a folder link out of the root
    with pytest.raises(ValueError, match=r"entry 2 \(id 2\): image path 'c1/c.png' resolves to .*outside"):
        Gallery.load(folder)
    os.unlink(root / "c1")
    (root / "real.png").write_bytes(b"x")
    os.symlink(root / "real.png", root / "d.png")  # a link that stays inside is fine
    assert Gallery.load(folder).path_of(3) == str(root / "d.png")
    # a gallery whose paths could not load again is not saved
    bad = Gallery.from_vectors(np.eye(2, dtype=np.float32), paths=["a.png", str(outside / "key.png")], root=str(root))
    with pytest.raises(ValueError, match=r"entry 1 \(id 1\): image path .* is empty, absolute"):
        bad.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_gallery_without_root_uses_its_folder(tmp_path):
    gallery = Gallery.from_vectors(np.eye(2, dtype=np.float32), paths=["a.png", "b.png"])
    gallery.save(tmp_path / "g")
    assert Gallery.load(tmp_path / "g").path_of(1) == str((tmp_path / "g" / "b.png").resolve())


# ------------------------------------------------------------------------------ command line
def test_cli_refuses_an_existing_gallery_before_embedding(tmp_path, capsys):
    from PIL import Image

    from pqkit.__main__ import main

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i + 20, dtype=np.uint8)).save(tmp_path / "imgs" / "a" / f"{i}.png")
    args = ["retrieve", "index", str(tmp_path / "imgs"), "--out", str(tmp_path / "g"), "--embedder", "pixels",
            "--size", "4", "--quiet"]
    assert main(args) == 0
    first = sorted(os.listdir(tmp_path / "g"))
    capsys.readouterr()
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a gallery" in err and "--overwrite" in err
    assert sorted(os.listdir(tmp_path / "g")) == first
    assert main(args + ["--overwrite"]) == 0
    assert sorted(os.listdir(tmp_path / "g")) != first and len(os.listdir(tmp_path / "g")) == 2

    # the model folder is checked before the data is read or a model fitted
    before = _unrelated_folder(tmp_path / "work")
    capsys.readouterr()
    try:
        code = main(["patchcore", "fit", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "work"),
                     "--quiet"])
    except SystemExit as exc:
        code, message = exc.code, capsys.readouterr().err
    except ValueError as exc:
        code, message = None, str(exc)
    else:
        message = capsys.readouterr().err
    assert code != 0 and "not empty and holds no PatchCore model" in message
    assert _snapshot(tmp_path / "work", lambda rel: False) == before
