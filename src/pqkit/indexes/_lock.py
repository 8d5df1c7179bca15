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
        self._read_guard = _ReadGuard(self)
        self._write_guard = _WriteGuard(self)

    def read(self) -> "_ReadGuard":
        return self._read_guard

    def write(self) -> "_WriteGuard":
        return self._write_guard


class _Guard:
    """A context manager over one lock's state (stateless, so one instance serves every
    thread). The mutex work is inline in the subclasses' ``__enter__``/``__exit__``: every
    search passes a read guard twice."""

    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock):
        self._lock = lock


class _ReadGuard(_Guard):
    """``with lock.read():``"""

    __slots__ = ()

    def __enter__(self):
        lock = self._lock
        with lock._mutex:
            while lock._writer or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1
        return self

    def __exit__(self, *exc_info):
        lock = self._lock
        with lock._mutex:
            lock._readers -= 1
            if lock._readers == 0 and lock._writers_waiting:
                lock._cond.notify_all()
        return False


class _WriteGuard(_Guard):
    """``with lock.write():``"""

    __slots__ = ()

    def __enter__(self):
        lock = self._lock
        with lock._cond:
            lock._writers_waiting += 1
            try:
                while lock._writer or lock._readers:
                    lock._cond.wait()
            finally:
                lock._writers_waiting -= 1
            lock._writer = True
        return self

    def __exit__(self, *exc_info):
        lock = self._lock
        with lock._cond:
            lock._writer = False
            lock._cond.notify_all()
        return False
