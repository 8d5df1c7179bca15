"""The metrics: one table that every index, quantizer and engine call reads.

A metric says which distance the engines compute (``engine``: ``"l2"`` or ``"ip"``), which way
results are ordered, what pads a result row that has fewer than k neighbours, and whether vectors
are L2-normalised before anything else (``"cosine"``). A new metric is one more row here plus the
engine code that computes its distance (``cpp/common/metric.h`` and the kernels).

- ``"l2"``: the engines compute squared L2; smallest first; rows padded with ``+inf``.
- ``"ip"``: inner product; largest first; padded with ``-inf``.
- ``"cosine"``: rows L2-normalised first, then inner product (cosine similarity); largest first;
  padded with ``-inf``.

Examples
--------
>>> from pqkit import metrics
>>> m = metrics.get("cosine")
>>> m.engine, m.higher_is_better, m.pad, m.normalizes
('ip', True, -inf, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Metric", "METRICS", "NAMES", "get"]


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes
    ----------
    name : str
        The user-facing name (``metric=`` of every index).
    engine : {"l2", "ip"}
        The distance the engines compute for it.
    higher_is_better : bool
        Results are ordered largest first (similarities) instead of smallest first (distances).
    normalizes : bool
        Vectors are L2-normalised at train, add and search (zero rows are refused).
    """

    name: str
    engine: str
    higher_is_better: bool
    normalizes: bool

    @property
    def pad(self) -> float:
        """The distance that pads a result row: the worst possible value, ``+inf`` or ``-inf``."""
        return -math.inf if self.higher_is_better else math.inf


METRICS = {
    "l2": Metric("l2", "l2", higher_is_better=False, normalizes=False),
    "ip": Metric("ip", "ip", higher_is_better=True, normalizes=False),
    "cosine": Metric("cosine", "ip", higher_is_better=True, normalizes=True),
}

#: The metric names, in the order messages list them.
NAMES = tuple(METRICS)


def get(name: str) -> Metric:
    """The :class:`Metric` of a validated name (see :func:`pqkit._validation.check_metric`)."""
    return METRICS[name]
