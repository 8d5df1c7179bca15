"""Build an index from a FAISS-style description string."""

from __future__ import annotations

import re

from ._validation import check_metric, check_n_threads, check_positive_int
from .index import IndexFlat, IndexIVFFlat, IndexIVFPQ, IndexPQ
from .refine import IndexRefine
from .transforms import OPQ, PCA, IndexPreTransform

__all__ = ["index_factory"]

GRAMMAR = (
    '[transform ","] core [",RFlat" | ",Refine(Flat)" | ",Refine(PQ{M}[x{nbits}])"] with core one of "Flat" | "PQ{M}" | '
    '"PQ{M}x{nbits}" | "IVF{nlist},Flat" | "IVF{nlist},PQ{M}" | "IVF{nlist},PQ{M}x{nbits}" and '
    'transform one of "PCA{d_out}" | "PCAW{d_out}" (whitened) | "OPQ{M}" | "OPQ{M}_{d_out}"  '
    '(M, nbits, nlist, d_out positive integers; PQ{M} means nbits=8; examples: "Flat", "PQ16", '
    '"PQ16x4", "IVF256,Flat", "IVF1024,PQ32x8", "PCA128,IVF100,PQ8", "OPQ16,IVF1024,PQ16", '
    '"OPQ16_64,IVF256,PQ16,RFlat", "IVF256,PQ16x4,Refine(PQ32)")'
)

_PQ = r"PQ(?P<M>[0-9]+)(?:x(?P<nbits>[0-9]+))?"
_CORE = rf"(?:IVF(?P<nlist>[0-9]+),)?(?:(?P<flat>Flat)|{_PQ})"
_TRANSFORM = (r"(?:(?P<pca>PCAW?)(?P<pca_d>[0-9]+)"
              r"|OPQ(?P<opq_M>[0-9]+)(?:_(?P<opq_d>[0-9]+))?),")
_REFINE = r"(?P<refine>,RFlat|,Refine\(Flat\)|,Refine\(PQ(?P<refine_M>[0-9]+)(?:x(?P<refine_nbits>[0-9]+))?\))"
_PATTERN = re.compile(rf"(?:{_TRANSFORM})?{_CORE}{_REFINE}?")


def index_factory(d, description, metric="l2", n_threads=None, backend=None):
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

        optionally preceded by a transform (the core is then built for its output dimension)::

            "PCA{d_out},..."            -> IndexPreTransform(PCA(d, d_out), core)
            "PCAW{d_out},..."           -> the same with whitening (eigen_power=-0.5)
            "OPQ{M},..."                -> IndexPreTransform(OPQ(d, M), core)
            "OPQ{M}_{d_out},..."        -> IndexPreTransform(OPQ(d, M, d_out), core)

        and optionally followed by ``",RFlat"`` (or ``",Refine(Flat)"``), which wraps everything
        before it in :class:`pqkit.IndexRefine` (exact re-ranking in the input space, as FAISS
        ``IndexRefineFlat``; ``k_factor=1``, set ``index.k_factor`` to fetch more candidates), or
        by ``",Refine(PQ{M}[x{nbits}])"``: the same with an ``IndexPQ(d, M, nbits)`` refine index
        (re-ranking with finer codes, ``M * nbits / 8`` bytes per vector instead of ``4 * d``).

    metric : {"l2", "ip", "cosine"}, default "l2"
    n_threads : int or None, default None
    backend : {"cpp", "numba"} or None, default None
        The engine of the index (None: :func:`pqkit.get_backend`); see :class:`pqkit.Index`.

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
    >>> pqkit.index_factory(64, "PCA32,IVF256,PQ8").index.d
    32
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
    core_d = d
    transform = None
    if match.group("pca"):
        core_d = check_positive_int(int(match.group("pca_d")), "d_out (in PCA{d_out})")
        transform = PCA(d, core_d, whiten=match.group("pca") == "PCAW")
    elif match.group("opq_M"):
        opq_M = check_positive_int(int(match.group("opq_M")), "M (in OPQ{M})")
        opq_d = match.group("opq_d")
        core_d = d if opq_d is None else check_positive_int(int(opq_d), "d_out (in OPQ{M}_{d})")
        transform = OPQ(d, opq_M, core_d)
    index = _core_index(core_d, match, metric, n_threads, backend)
    if transform is not None:
        index = IndexPreTransform(transform, index)
    if match.group("refine_M"):
        refine_M = check_positive_int(int(match.group("refine_M")), "M (in Refine(PQ{M}))")
        refine_nbits = 8 if match.group("refine_nbits") is None else int(match.group("refine_nbits"))
        refine = IndexPQ(d, refine_M, refine_nbits, metric, n_threads=n_threads, backend=backend)
        index = IndexRefine(index, refine_index=refine)
    elif match.group("refine"):
        index = IndexRefine(index)
    return index


def _core_index(d, match, metric, n_threads, backend):
    nlist, M, nbits = match.group("nlist"), match.group("M"), match.group("nbits")
    if match.group("flat"):
        if nlist is None:
            return IndexFlat(d, metric, n_threads=n_threads, backend=backend)
        return IndexIVFFlat(d, check_positive_int(int(nlist), "nlist"), metric, n_threads=n_threads,
                            backend=backend)
    M = check_positive_int(int(M), "M (in PQ{M})")
    nbits = 8 if nbits is None else int(nbits)
    if nlist is None:
        return IndexPQ(d, M, nbits, metric, n_threads=n_threads, backend=backend)
    return IndexIVFPQ(
        d, check_positive_int(int(nlist), "nlist"), M, nbits, metric, n_threads=n_threads, backend=backend
    )
