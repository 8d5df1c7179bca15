"""Id selectors of the torch engine: the sets live on the engine's device, and a scan asks
:meth:`IDSelector.allowed` for a whole batch of candidate ids at once, before any of them can
enter a top-k or a range result."""

from __future__ import annotations

import numpy as np
import torch

from .._selector_args import check_selector_arguments
from ._common import checked, to_device


class IDSelector:
    """Which ids a search may return (arguments as :meth:`pqkit.engine.protocol.Engine.IDSelector`).

    A bitmap becomes a boolean mask on the device; sorted ids stay sorted (one set), or are laid
    out one padded row per query (per-query sets), for ``torch.searchsorted``.
    """

    device = torch.device("cpu")  # the engine's subclass sets its device

    def __init__(self, bitmap, start, ids, offsets, exclude):
        self._exclude = bool(exclude)
        self.start = int(start)
        self.per_query = offsets is not None
        bitmap, ids, offsets = check_selector_arguments(bitmap, self.start, ids, offsets, checked)
        if bitmap is not None:
            mask = np.unpackbits(bitmap, bitorder="little").astype(bool)
            self.mask = to_device(mask, self.device)
            self._sets = 0
            return
        steps = np.diff(offsets)
        self.mask = None
        self._sets = offsets.shape[0] - 1 if self.per_query else 0
        if not self.per_query:
            self.sorted_ids = to_device(ids.copy(), self.device)
            return
        # One row per query, padded with the largest int64 (no stored id reaches it) so that
        # each row stays sorted for searchsorted.
        width = max(int(steps.max()) if steps.size else 0, 1)
        rows = np.full((self._sets, width), np.iinfo(np.int64).max, dtype=np.int64)
        owner = np.repeat(np.arange(self._sets), steps)
        rows[owner, np.arange(ids.shape[0]) - offsets[owner]] = ids
        self.sorted_ids = to_device(rows, self.device)

    @property
    def n_sets(self) -> int:
        return int(self._sets)

    @property
    def exclude(self) -> bool:
        return self._exclude

    def check_queries(self, nq: int) -> None:
        if self.per_query and self._sets != nq:
            raise ValueError(f"the selector holds one id set per query for {self._sets} queries, "
                             f"got {nq} queries")

    def allowed(self, ids: torch.Tensor, first_query: int = 0) -> torch.Tensor:
        """Whether each candidate id may be returned (bool, the shape of ``ids``).

        ``ids`` is ``(c,)`` (one set for every query) or ``(nq_batch, c)`` for the queries
        ``first_query ..`` of the call; padding ids (-1) come out allowed or not, the caller
        masks them.
        """
        if self.mask is not None:
            n = self.mask.shape[0]
            inside = (ids >= self.start) & (ids < self.start + n)
            pos = (ids - self.start).clamp(0, max(n - 1, 0))
            hit = inside & self.mask[pos] if n else torch.zeros_like(ids, dtype=torch.bool)
        elif not self.per_query:
            s = self.sorted_ids
            if s.numel() == 0:
                hit = torch.zeros_like(ids, dtype=torch.bool)
            else:
                pos = torch.searchsorted(s, ids).clamp(max=s.numel() - 1)
                hit = s[pos] == ids
        else:
            rows = self.sorted_ids[first_query:first_query + ids.shape[0]]
            pos = torch.searchsorted(rows, ids.contiguous()).clamp(max=rows.shape[1] - 1)
            hit = rows.gather(1, pos) == ids
        return ~hit if self._exclude else hit


def check_selector(selector, nq: int):
    """``selector`` (None or this engine's IDSelector) checked against ``nq`` queries."""
    if selector is None:
        return None
    if not isinstance(selector, IDSelector):
        raise TypeError(f"selector must be an IDSelector of this engine or None, got "
                        f"{type(selector).__name__}")
    selector.check_queries(nq)
    return selector
