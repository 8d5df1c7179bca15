"""Per-call search parameters: a small immutable value, never index state.

``index.search(x, k, nprobe=..., k_factor=..., filter=..., max_probe=...)`` and
``index.range_search(x, radius, nprobe=..., filter=...)`` pack the parameters given for that
call into a :class:`SearchParams`, validated once (:meth:`pqkit.Index._search_params`) and
handed down to the index's search hooks and to the indexes it wraps. The index itself is not
changed, so threads searching one index with different parameters do not see each other's; a
parameter left out (None) means the index's own setting (``index.nprobe``,
``index.k_factor``).

Each index type declares the names it takes in its class attribute ``search_parameters``;
wrappers (:class:`pqkit.IndexPreTransform`, :class:`pqkit.IndexRefine`) add those of the index
they wrap.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["NAMES", "RANGE_NAMES", "SearchParams"]


class SearchParams(NamedTuple):
    """The validated parameters of one search call (None: the index's own setting).

    An immutable tuple (built once per call, handed down through the wrapped indexes: a single
    query's Python overhead counts beside the kernel's few microseconds).

    Attributes
    ----------
    nprobe : int or None
        IVF indexes: inverted lists scanned per query.
    k_factor : float or None
        IndexRefine: candidates fetched per result (``ceil(k * k_factor)``).
    filter : pqkit.filters.IDSelector or None
        The ids the search may return.
    max_probe : int or None
        IVF indexes: the most lists scanned per query while fewer than ``k`` results are found.
    """

    nprobe: int | None = None
    k_factor: float | None = None
    filter: object | None = None
    max_probe: int | None = None

    def given(self) -> dict:
        """The parameters set for this call, by name."""
        return {name: value for name, value in zip(self._fields, self) if value is not None}

    def without(self, *names: str) -> "SearchParams":
        """The same parameters with ``names`` reset to None (what a wrapper passes down)."""
        if all(getattr(self, name) is None for name in names):
            return self  # immutable: sharing it is safe
        return self._replace(**dict.fromkeys(names))


#: Every per-call search parameter, in the order messages list them.
NAMES = SearchParams._fields
#: Those ``range_search`` takes (no top-k to widen or to refine).
RANGE_NAMES = ("nprobe", "filter")
