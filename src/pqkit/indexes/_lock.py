"""The reader-writer lock every index holds: searches share it, changes take it alone."""

from __future__ import annotations

import threading

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation).

    Not reentrant: the public methods of :class:`Index` take it once and call only the
    private hooks, which never take it. ``read()`` and ``write()`` return reusable guard
    objects (``with lock.read(): ...``); searches take the read side on every call, so it is
    kept to one short critical section on entry and one on exit.
    """

    def __init__(self):
        self._mutex = threading.Lock()  # taken directly on the readers' path (cheaper than the condition)
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read_guard = _Guard(self._acquire_read, self._release_read)
        self._write_guard = _Guard(self._acquire_write, self._release_write)

    def read(self) -> "_Guard":
        return self._read_guard

    def write(self) -> "_Guard":
        return self._write_guard

    def _acquire_read(self) -> None:
        with self._mutex:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _Guard:
    """A context manager calling ``acquire`` on entry and ``release`` on exit (stateless, so
    one instance serves every thread)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release):
        self._acquire = acquire
        self._release = release

    def __enter__(self):
        self._acquire()
        return self

    def __exit__(self, *exc_info):
        self._release()
        return False
