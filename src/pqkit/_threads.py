"""Global default thread count.

Every quantizer and index takes ``n_threads=None``; None means "use the global setting", which is
:func:`get_num_threads`. Results never depend on the thread count (the core splits work into
fixed blocks and merges them in a fixed order).
"""

from __future__ import annotations

import os

from ._validation import check_n_threads, check_positive_int

__all__ = ["get_num_threads", "resolve", "set_num_threads"]

_num_threads: int | None = None  # None: all cores (os.cpu_count())
_CPU_COUNT = os.cpu_count() or 1  # read once: the call costs microseconds, paid on every search


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads used when ``n_threads`` is None.

    Parameters
    ----------
    n : int or None
        Number of worker threads, >= 1. None restores the default (``os.cpu_count()``).
    """
    global _num_threads
    _num_threads = None if n is None else check_positive_int(n, "n")


def get_num_threads() -> int:
    """Return the default number of threads (``os.cpu_count()`` unless set)."""
    if _num_threads is not None:
        return _num_threads
    return _CPU_COUNT


def resolve(n_threads: int | None) -> int:
    """Return the thread count to pass to the core: ``n_threads`` or the global default."""
    if n_threads is None:
        return _CPU_COUNT if _num_threads is None else _num_threads
    if type(n_threads) is int and n_threads >= 1:  # as an index's setter stored it
        return n_threads
    return check_n_threads(n_threads)
