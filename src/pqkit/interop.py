"""Conversion between pqkit and FAISS indexes: :func:`from_faiss`, :func:`to_faiss`,
:func:`read_faiss_index`.

Trained parameters and stored data are copied, never retrained: coarse centroids, PQ codebooks,
PCA/OPQ matrices, the codes and the ids of every inverted list. PQ codes need no conversion:
pqkit packs sub-quantizer indices little-endian at ``nbits`` bits each, which is FAISS's
``PQEncoderGeneric`` layout (and plain bytes for 8 bits), so the same bytes decode to the same
vectors in both libraries. Searches then give the same ids, and distances equal up to float
rounding (both compute squared L2 or inner products in float32, in a different order).

faiss is imported only inside these functions; ``import pqkit`` never needs it.

Supported (in both directions):

==========================================  ==============================================
FAISS                                       pqkit
==========================================  ==============================================
``IndexFlat`` (``IndexFlatL2``/``IP``)      :class:`pqkit.IndexFlat`
``IndexPQ``                                 :class:`pqkit.IndexPQ`
``IndexIVFFlat``                            :class:`pqkit.IndexIVFFlat`
``IndexIVFPQ`` (``by_residual=True``)       :class:`pqkit.IndexIVFPQ`
``IndexPreTransform`` (PCA/OPQ/linear)      :class:`pqkit.IndexPreTransform` (nested per transform)
``IndexRefineFlat``                         :class:`pqkit.IndexRefine`
``IndexRefine`` with an ``IndexPQ`` refine  :class:`pqkit.IndexRefine` with an IndexPQ refine index
``IndexIDMap`` / ``IndexIDMap2`` over Flat/PQ  the same index with those ids
==========================================  ==============================================

Metrics: L2 and inner product (pqkit's ``"cosine"`` has no FAISS counterpart). Anything else
(other metrics, ``by_residual=False``, polysemous search, ``IndexIVFPQR``, fast-scan and
other index types, on-disk inverted lists, other transforms) raises ValueError naming it.
"""

from __future__ import annotations

import os

import numpy as np

from .indexes import _faiss as _tools
from .indexes import registry

__all__ = ["from_faiss", "read_faiss_index", "to_faiss"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            f"this needs faiss ({exc}); install it with: pip install faiss-cpu"
        ) from None
    return faiss


def _by_faiss_name() -> dict:
    """FAISS class name -> the pqkit index type converting it (from the registry)."""
    return {name: cls for cls in registry.index_classes().values() for name in cls._faiss_names}


def _from_faiss(faiss, owner, ids=None):
    # ``owner`` may be the only Python reference owning the C++ index (faiss.read_index): keep
    # it alive while the downcast view is used.
    index = faiss.downcast_index(owner)
    name = type(index).__name__
    if not index.is_trained:
        raise ValueError(f"the faiss {name} is not trained; train it (or convert a trained one)")
    if name in ("IndexIDMap", "IndexIDMap2"):
        if ids is not None:
            raise _tools.unsupported("an IndexIDMap inside an IndexIDMap")
        inner_ids = _tools.vector(faiss, index.id_map).astype(np.int64)
        return _from_faiss(faiss, index.index, ids=inner_ids)
    cls = _by_faiss_name().get(name)
    if cls is None:
        raise _tools.unsupported(f"faiss {name}")
    return cls._from_faiss(faiss, index, ids, lambda part: _from_faiss(faiss, part))


def _to_faiss(faiss, index):
    if not index.is_trained:
        raise ValueError(f"the pqkit {type(index).__name__} is not trained")
    return index._to_faiss(faiss, lambda part: _to_faiss(faiss, part))


def from_faiss(index):
    """Convert a trained FAISS index into the equivalent pqkit index, without retraining.

    Parameters
    ----------
    index : faiss.Index
        See the module docstring for the supported types.

    Returns
    -------
    pqkit.Index
        Same centroids, codebooks, transform matrices, codes, ids and ``nprobe``; searches give
        the same ids, distances equal up to float rounding.

    Raises
    ------
    ImportError
        faiss is not installed.
    ValueError
        Unsupported index type or option (the message names it), untrained index, duplicate
        ids.

    Examples
    --------
    >>> import faiss, numpy as np, pqkit                          # doctest: +SKIP
    >>> index = pqkit.from_faiss(faiss.read_index("trained.faiss"))  # doctest: +SKIP
    """
    faiss = _faiss()
    if not isinstance(index, faiss.Index):
        raise TypeError(f"expected a faiss.Index, got {type(index).__name__}")
    return _from_faiss(faiss, index)


def read_faiss_index(path):
    """Read a FAISS index file (``faiss.write_index``) and convert it with :func:`from_faiss`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    pqkit.Index
    """
    faiss = _faiss()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no faiss index file at {path!r}")
    return _from_faiss(faiss, faiss.read_index(path))


# =============================================================================== pqkit -> FAISS
def to_faiss(index):
    """Convert a trained pqkit index into the equivalent FAISS index, without retraining.

    Parameters
    ----------
    index : pqkit.Index
        See the module docstring for the supported types (not the "cosine" metric).

    Returns
    -------
    faiss.Index
        Same centroids, codebooks, matrices, codes, ids and ``nprobe``. Ids other than
        ``0..ntotal-1`` on a Flat or PQ index come wrapped in ``faiss.IndexIDMap2``.

    Raises
    ------
    ImportError
        faiss is not installed.
    ValueError
        Untrained index, "cosine" metric, or ids faiss cannot represent there.
    """
    faiss = _faiss()
    if not registry.is_index(index):
        raise TypeError(f"expected a pqkit index, got {type(index).__name__}")
    return _to_faiss(faiss, index)
