"""Build an index from a FAISS-style description string."""

from __future__ import annotations

import re

from ._validation import check_metric, check_n_threads, check_positive_int
from .index import IndexFlat, IndexIVFFlat, IndexIVFPQ, IndexPQ

__all__ = ["index_factory"]

GRAMMAR = (
    '"Flat" | "PQ{M}" | "PQ{M}x{nbits}" | "IVF{nlist},Flat" | "IVF{nlist},PQ{M}" | '
    '"IVF{nlist},PQ{M}x{nbits}"  (M, nbits, nlist positive integers; PQ{M} means nbits=8; '
    'examples: "Flat", "PQ16", "PQ16x4", "IVF256,Flat", "IVF1024,PQ32x8")'
)

_PQ = r"PQ(?P<M>[0-9]+)(?:x(?P<nbits>[0-9]+))?"
_PATTERN = re.compile(rf"(?:IVF(?P<nlist>[0-9]+),)?(?:(?P<flat>Flat)|{_PQ})")


def index_factory(d, description, metric="l2", n_threads=None):
    """Create an untrained index from a description string (FAISS ``index_factory`` subset).

    Parameters
    ----------
    d : int
        Vector dimension.
    description : str
        One of (case-sensitive, no spaces)::

            "Flat"                      -> IndexFlat(d)
            "PQ{M}" / "PQ{M}x{nbits}"   -> IndexPQ(d, M, nbits)      (nbits defaults to 8)
            "IVF{nlist},Flat"           -> IndexIVFFlat(d, nlist)
            "IVF{nlist},PQ{M}[x{nbits}]"-> IndexIVFPQ(d, nlist, M, nbits)

    metric : {"l2", "ip", "cosine"}, default "l2"
    n_threads : int or None, default None

    Returns
    -------
    Index
        IVF indexes start with ``nprobe=1``.

    Raises
    ------
    TypeError
        ``description`` is not a str.
    ValueError
        The string does not match the grammar (the message lists it), or the parameters are
        invalid for ``d`` (e.g. ``d % M != 0``).

    Examples
    --------
    >>> import pqkit
    >>> pqkit.index_factory(64, "IVF256,PQ16x4")
    IndexIVFPQ(d=64, nlist=256, metric='l2', nprobe=1, ntotal=0, is_trained=False)
    """
    d = check_positive_int(d, "d")
    metric = check_metric(metric)
    n_threads = check_n_threads(n_threads)
    if not isinstance(description, str):
        raise TypeError(
            f"description must be a str, got {type(description).__name__}; accepted: {GRAMMAR}"
        )
    match = _PATTERN.fullmatch(description.strip())
    if match is None:
        raise ValueError(f"cannot parse index description {description!r}; accepted: {GRAMMAR}")
    nlist, M, nbits = match.group("nlist"), match.group("M"), match.group("nbits")
    if match.group("flat"):
        if nlist is None:
            return IndexFlat(d, metric, n_threads=n_threads)
        return IndexIVFFlat(d, check_positive_int(int(nlist), "nlist"), metric, n_threads=n_threads)
    M = check_positive_int(int(M), "M (in PQ{M})")
    nbits = 8 if nbits is None else int(nbits)
    if nlist is None:
        return IndexPQ(d, M, nbits, metric, n_threads=n_threads)
    return IndexIVFPQ(
        d, check_positive_int(int(nlist), "nlist"), M, nbits, metric, n_threads=n_threads
    )
