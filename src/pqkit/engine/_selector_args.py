"""The argument checks of an engine's ``IDSelector`` (see :meth:`pqkit.engine.protocol.Engine.IDSelector`),
shared by the Python engines (Numba and torch); the compiled core makes the same checks in
``cpp/search/selector``."""

from __future__ import annotations

import numpy as np


def check_selector_arguments(bitmap, start: int, ids, offsets, checked):
    """Validate one selector's arrays with the engine's array check ``checked``.

    Returns ``(bitmap, None, None)`` for a bitmap selector, else ``(None, ids, offsets)`` with
    ``offsets`` the CSR bounds of the id sets (``[0, len(ids)]`` for one shared set; a copy for
    per-query sets). Raises ValueError (or the checker's TypeError) as the compiled core does.
    """
    if (bitmap is None) == (ids is None):
        raise ValueError("an id selector takes a bitmap or an id array, not both nor neither")
    per_query = offsets is not None
    if bitmap is not None:
        bitmap = checked(bitmap, np.uint8, "bitmap", (-1,))
        if per_query:
            raise ValueError("a bitmap selector is shared by every query (no offsets)")
        if start < 0:
            raise ValueError(f"bitmap start must be >= 0, got {start}")
        if bitmap.shape[0] > (2**63 - 1 - start) // 8:
            raise ValueError("bitmap passes the largest id 2**63 - 1")
        return bitmap, None, None
    ids = checked(ids, np.int64, "ids", (-1,))
    if per_query:
        offsets = checked(offsets, np.int64, "offsets", (-1,))
        if offsets.shape[0] < 1:
            raise ValueError("offsets must hold at least one value (0)")
        offsets = offsets.copy()
    else:
        offsets = np.array([0, ids.shape[0]], dtype=np.int64)
    if offsets[0] != 0 or offsets[-1] != ids.shape[0]:
        raise ValueError("selector offsets must start at 0 and end at the number of ids "
                         f"({ids.shape[0]})")
    steps = np.diff(offsets)
    if (steps < 0).any():
        s = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"selector offsets must be non-decreasing, got {int(offsets[s])} "
                         f"before {int(offsets[s + 1])}")
    descending = np.flatnonzero(np.diff(ids) < 0) + 1  # positions i with ids[i - 1] > ids[i]
    if descending.size and not np.isin(descending, offsets).all():
        raise ValueError("selector ids must be sorted within each set")
    return None, ids, offsets
