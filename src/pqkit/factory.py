"""Build an index from a FAISS-style description string."""

from __future__ import annotations

import re

from ._validation import check_metric, check_n_threads, check_positive_int
from .indexes import registry

__all__ = ["grammar", "index_factory"]

def grammar() -> str:
    """The accepted descriptions, assembled from the registered index types' tokens."""
    tokens = {role: [] for role in ("prefix", "core", "suffix")}
    for cls in registry.index_classes().values():
        if cls._factory_pattern is not None:
            tokens[cls._factory_role].append(cls._factory_grammar)
    return (f'[prefix] core [suffix] with core one of {" | ".join(tokens["core"])}; prefix one of '
            f'{" | ".join(tokens["prefix"])}; suffix one of {" | ".join(tokens["suffix"])} (M, nbits, '
            'nlist, d_out positive integers; PQ{M} means nbits=8; examples: "Flat", "PQ16", "PQ16x4", '
            '"IVF256,Flat", "IVF1024,PQ32x8", "PCA128,IVF100,PQ8", "OPQ16,IVF1024,PQ16", '
            '"OPQ16_64,IVF256,PQ16,RFlat", "IVF256,PQ16x4,Refine(PQ32)", "IVF256,PQ16x4,Refine(SQ8)")')


def _patterns(role: str) -> list:
    """(class, compiled pattern) of every registered index type with this factory role."""
    return [(cls, re.compile(cls._factory_pattern)) for cls in registry.index_classes().values()
            if cls._factory_pattern is not None and cls._factory_role == role]


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
            "SQ8"                       -> IndexScalarQuantizer(d)   (one byte per dimension)
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
        (re-ranking with finer codes, ``M * nbits / 8`` bytes per vector instead of ``4 * d``),
        or by ``",Refine(SQ8)"``: with an ``IndexScalarQuantizer(d)`` refine index (``d`` bytes
        per vector).

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
            f"description must be a str, got {type(description).__name__}; accepted: {grammar()}"
        )
    text = description.strip()
    # A description is [prefix] core [suffix]; each part is the token of one registered type.
    prefix = suffix = None
    for cls, pattern in _patterns("prefix"):
        match = pattern.match(text)
        if match:
            prefix, text = (cls, match), text[match.end():]
            break
    for cls, pattern in _patterns("suffix"):
        match = pattern.search(text)
        if match and match.end() == len(text):
            suffix, text = (cls, match), text[:match.start()]
            break
    core = next(((cls, m) for cls, pattern in _patterns("core")
                 for m in [pattern.fullmatch(text)] if m), None)
    if core is None:
        raise ValueError(f"cannot parse index description {description!r}; accepted: {grammar()}")
    core_d = d if prefix is None else prefix[0]._factory_inner_d(d, prefix[1])
    index = core[0]._from_factory(core_d, core[1], metric, n_threads, backend)
    if prefix is not None:
        index = prefix[0]._from_factory(d, prefix[1], metric, n_threads, backend, inner=index)
    if suffix is not None:
        index = suffix[0]._from_factory(d, suffix[1], metric, n_threads, backend, inner=index)
    return index
