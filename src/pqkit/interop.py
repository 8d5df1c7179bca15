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

from .index import Index, IndexFlat, IndexIVFFlat, IndexIVFPQ, IndexPQ
from .refine import IndexRefine
from .transforms import OPQ, PCA, IndexPreTransform, LinearTransform

__all__ = ["from_faiss", "read_faiss_index", "to_faiss"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            f"this needs faiss ({exc}); install it with: pip install faiss-cpu"
        ) from None
    return faiss


def _unsupported(what: str) -> ValueError:
    return ValueError(
        f"{what} is not supported by pqkit; supported: IndexFlat(L2/IP), IndexPQ, IndexIVFFlat, "
        "IndexIVFPQ (by_residual, no polysemous), IndexPreTransform with PCAMatrix/OPQMatrix, "
        "IndexRefineFlat, IndexRefine with an IndexPQ refine index, IndexIDMap(2) over Flat/PQ"
    )


# =============================================================================== FAISS -> pqkit
def _metric_from_faiss(faiss, index) -> str:
    if index.metric_type == faiss.METRIC_L2:
        return "l2"
    if index.metric_type == faiss.METRIC_INNER_PRODUCT:
        return "ip"
    raise _unsupported(f"metric_type {index.metric_type} (only METRIC_L2 and "
                       "METRIC_INNER_PRODUCT)")


def _vector(faiss, vec, dtype=None) -> np.ndarray:
    arr = faiss.vector_to_array(vec)
    return arr if dtype is None else arr.view(dtype)


def _pq_codebooks(faiss, pq) -> np.ndarray:
    return _vector(faiss, pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).copy()


def _invlists_arrays(faiss, ivf, code_size: int) -> dict:
    invlists = ivf.invlists
    if type(invlists).__name__ != "ArrayInvertedLists":
        invlists = faiss.downcast_InvertedLists(invlists) if hasattr(
            faiss, "downcast_InvertedLists") else invlists
    sizes = np.array([invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    ids = np.empty(int(sizes.sum()), dtype=np.int64)
    codes = np.empty((ids.size, code_size), dtype=np.uint8)
    start = 0
    for list_no, size in enumerate(sizes.tolist()):
        if size:
            ids_ptr = invlists.get_ids(list_no)
            codes_ptr = invlists.get_codes(list_no)
            ids[start:start + size] = faiss.rev_swig_ptr(ids_ptr, size)
            codes[start:start + size] = np.frombuffer(
                faiss.rev_swig_ptr(codes_ptr, size * code_size), dtype=np.uint8
            ).reshape(size, code_size)
            invlists.release_ids(list_no, ids_ptr)
            invlists.release_codes(list_no, codes_ptr)
        start += size
    return {"list_sizes": sizes, "ids": ids, "codes": codes}


def _coarse_centroids(faiss, ivf, metric: str) -> np.ndarray:
    quantizer = faiss.downcast_index(ivf.quantizer)
    if type(quantizer).__name__ not in ("IndexFlat", "IndexFlatL2", "IndexFlatIP"):
        raise _unsupported(f"an IVF coarse quantizer of type {type(quantizer).__name__} "
                           "(only a flat quantizer)")
    if _metric_from_faiss(faiss, quantizer) != metric:
        raise _unsupported("an IVF whose coarse quantizer metric differs from the index metric")
    if quantizer.ntotal != ivf.nlist:
        raise ValueError(f"the coarse quantizer holds {quantizer.ntotal} centroids, expected "
                         f"nlist={ivf.nlist}; is the faiss index trained?")
    return quantizer.reconstruct_n(0, ivf.nlist)


def _check_unique_ids(ids: np.ndarray) -> None:
    if ids.size and np.unique(ids).size != ids.size:
        raise ValueError(
            "the faiss index holds duplicate ids; pqkit requires unique ids (remove the "
            "duplicates in faiss first)"
        )
    if ids.size and ids.min() < 0:
        raise ValueError("the faiss index holds negative ids; pqkit requires ids >= 0")


def _from_faiss(faiss, owner, ids=None) -> Index:
    # ``owner`` may be the only Python reference owning the C++ index (faiss.read_index): keep
    # it alive while the downcast view is used.
    index = faiss.downcast_index(owner)
    name = type(index).__name__
    if not index.is_trained:
        raise ValueError(f"the faiss {name} is not trained; train it (or convert a trained one)")
    if name in ("IndexIDMap", "IndexIDMap2"):
        inner_ids = _vector(faiss, index.id_map).astype(np.int64)
        return _from_faiss(faiss, index.index, ids=inner_ids)
    if ids is not None and name not in ("IndexFlat", "IndexFlatL2", "IndexFlatIP", "IndexPQ"):
        raise _unsupported(f"IndexIDMap over {name}")
    d = index.d
    if name in ("IndexFlat", "IndexFlatL2", "IndexFlatIP"):
        metric = _metric_from_faiss(faiss, index)
        ids = np.arange(index.ntotal, dtype=np.int64) if ids is None else ids
        _check_unique_ids(ids)
        vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.empty((0, d),
                                                                                   np.float32)
        return IndexFlat._from_state({"d": d, "metric": metric},
                                     {"vectors": vectors, "ids": ids})
    if name == "IndexPQ":
        metric = _metric_from_faiss(faiss, index)
        if index.search_type != faiss.IndexPQ.ST_PQ:
            raise _unsupported(f"IndexPQ with search_type {index.search_type} (polysemous or "
                               "Hamming search; only ST_PQ)")
        pq = index.pq
        ids = np.arange(index.ntotal, dtype=np.int64) if ids is None else ids
        _check_unique_ids(ids)
        codes = _vector(faiss, index.codes).reshape(index.ntotal, pq.code_size)
        return IndexPQ._from_state(
            {"d": d, "metric": metric, "M": pq.M, "nbits": pq.nbits, "seed": 1234},
            {"codes": codes, "ids": ids, "codebooks": _pq_codebooks(faiss, pq)})
    if name in ("IndexIVFFlat", "IndexIVFPQ"):
        metric = _metric_from_faiss(faiss, index)
        centroids = _coarse_centroids(faiss, index, metric)
        params = {"d": d, "nlist": index.nlist, "metric": metric,
                  "nprobe": max(1, min(int(index.nprobe), index.nlist)), "seed": 1234}
        if name == "IndexIVFFlat":
            arrays = _invlists_arrays(faiss, index, 4 * d)
            arrays["centroids"] = centroids
            _check_unique_ids(arrays["ids"])
            return IndexIVFFlat._from_state(params, arrays)
        if not index.by_residual:
            raise _unsupported("IndexIVFPQ with by_residual=False (pqkit always encodes "
                               "residuals)")
        # Polysemous *training* only permutes the codebook entries (codes stay plain PQ codes);
        # polysemous *search* (a Hamming threshold) changes the results.
        if index.polysemous_ht != 0:
            raise _unsupported(f"IndexIVFPQ with polysemous search (polysemous_ht="
                               f"{index.polysemous_ht}; set it to 0)")
        pq = index.pq
        arrays = _invlists_arrays(faiss, index, pq.code_size)
        _check_unique_ids(arrays["ids"])
        arrays["centroids"] = centroids
        arrays["codebooks"] = _pq_codebooks(faiss, pq)
        params.update(M=pq.M, nbits=pq.nbits)
        return IndexIVFPQ._from_state(params, arrays)
    if name == "IndexPreTransform":
        inner = _from_faiss(faiss, index.index)
        for position in reversed(range(index.chain.size())):
            inner = IndexPreTransform(_transform_from_faiss(faiss, index.chain.at(position)),
                                      inner)
        return inner
    if name in ("IndexRefineFlat", "IndexRefine"):
        base = _from_faiss(faiss, index.base_index)
        refine = _from_faiss(faiss, index.refine_index)
        if not isinstance(refine, (IndexFlat, IndexPQ)):
            raise _unsupported(f"faiss {name} with a {type(refine).__name__} refine index")
        if refine.ntotal != base.ntotal or not base._contains(
                np.arange(refine.ntotal, dtype=np.int64)).all():
            raise ValueError(f"the {name}'s base index must hold ids 0..ntotal-1, "
                             "aligned with its refine index")
        return IndexRefine._assemble(base, refine, index.k_factor)
    raise _unsupported(f"faiss {name}")


def _transform_from_faiss(faiss, vt):
    vt = faiss.downcast_VectorTransform(vt)
    name = type(vt).__name__
    if not vt.is_trained:
        raise ValueError(f"the faiss {name} is not trained")
    A = _vector(faiss, vt.A).reshape(vt.d_out, vt.d_in)
    b = _vector(faiss, vt.b) if vt.have_bias else None
    if name == "PCAMatrix":
        # With random_rotation or balanced_bins, A already includes them: the map is exact.
        transform = PCA(vt.d_in, vt.d_out, eigen_power=float(vt.eigen_power))
        transform.set_matrix(A, b)
        transform.mean = _vector(faiss, vt.mean).copy() if vt.mean.size() else None
        return transform
    if name == "OPQMatrix":
        transform = OPQ(vt.d_in, vt.M, vt.d_out, niter=vt.niter, niter_pq=vt.niter_pq,
                        niter_pq_0=vt.niter_pq_0)
        return transform.set_matrix(A, b)
    if isinstance(vt, faiss.LinearTransform):
        # Any other linear map (RandomRotationMatrix, a plain LinearTransform, an OPQMatrix
        # read back from a file): kept as its matrix.
        return LinearTransform(vt.d_in, vt.d_out).set_matrix(A, b)
    raise _unsupported(f"faiss transform {name} (only linear transforms)")


def from_faiss(index) -> Index:
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


def read_faiss_index(path) -> Index:
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
def _metric_to_faiss(faiss, metric: str):
    if metric == "cosine":
        raise ValueError(
            "faiss has no cosine metric; build the pqkit index with metric='ip' on L2-normalised "
            "vectors (and normalise queries) to move it to faiss"
        )
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _sorted_state(arrays: dict, key: str):
    """Rows of ``arrays[key]`` and ids, ordered by id."""
    order = np.argsort(arrays["ids"], kind="stable")
    return arrays[key][order], arrays["ids"][order]


def _with_ids(faiss, index, ids, fill):
    """Fill ``index`` (call ``fill(index)``) and wrap it in IndexIDMap2 unless its implicit ids
    0..n-1 are the ids (faiss wraps only empty indexes, so wrapping comes first)."""
    if np.array_equal(ids, np.arange(ids.size)):
        fill(index)
        return index
    wrapped = faiss.IndexIDMap2(index)
    fill(index)
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, dtype=np.int64), wrapped.id_map)
    wrapped.ntotal = int(ids.size)
    wrapped.construct_rev_map()
    return wrapped


def _flat_quantizer(faiss, centroids, metric):
    quantizer = faiss.IndexFlat(centroids.shape[1], metric)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return quantizer


def _to_faiss(faiss, index):
    if not index.is_trained:
        raise ValueError(f"the pqkit {type(index).__name__} is not trained")
    params, arrays = index._get_state()
    if isinstance(index, IndexFlat):
        metric = _metric_to_faiss(faiss, index.metric)
        vectors, ids = _sorted_state(arrays, "vectors")

        def fill(out):
            if vectors.shape[0]:
                out.add(np.ascontiguousarray(vectors))

        return _with_ids(faiss, faiss.IndexFlat(index.d, metric), ids, fill)
    if isinstance(index, IndexPQ):
        metric = _metric_to_faiss(faiss, index.metric)
        pq = index.pq
        out = faiss.IndexPQ(index.d, pq.M, pq.nbits, metric)
        faiss.copy_array_to_vector(pq.codebooks.ravel(), out.pq.centroids)
        out.is_trained = True
        codes, ids = _sorted_state(arrays, "codes")

        def fill(out):
            faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), out.codes)
            out.ntotal = int(ids.size)

        return _with_ids(faiss, out, ids, fill)
    if isinstance(index, (IndexIVFFlat, IndexIVFPQ)):
        metric = _metric_to_faiss(faiss, index.metric)
        quantizer = _flat_quantizer(faiss, index.centroids, metric)
        if isinstance(index, IndexIVFFlat):
            out = faiss.IndexIVFFlat(quantizer, index.d, index.nlist, metric)
        else:
            pq = index.pq
            out = faiss.IndexIVFPQ(quantizer, index.d, index.nlist, pq.M, pq.nbits, metric)
            faiss.copy_array_to_vector(pq.codebooks.ravel(), out.pq.centroids)
            out.by_residual = True
        out.is_trained = True
        if isinstance(index, IndexIVFPQ):
            out.precompute_table()
        sizes, ids, codes = arrays["list_sizes"], arrays["ids"], arrays["codes"]
        start = 0
        for list_no, size in enumerate(sizes.tolist()):
            if size:
                list_ids = np.ascontiguousarray(ids[start:start + size])
                list_codes = np.ascontiguousarray(codes[start:start + size])
                out.invlists.add_entries(list_no, size, faiss.swig_ptr(list_ids),
                                         faiss.swig_ptr(list_codes))
            start += size
        out.ntotal = int(ids.size)
        out.nprobe = index.nprobe
        return out
    if isinstance(index, IndexPreTransform):
        inner = _to_faiss(faiss, index.index)
        transform = index.transform
        if isinstance(transform, OPQ):
            vt = faiss.OPQMatrix(transform.d_in, transform.M, transform.d_out)
        elif isinstance(transform, PCA):
            vt = faiss.PCAMatrix(transform.d_in, transform.d_out, transform.eigen_power, False)
        else:
            vt = faiss.LinearTransform(transform.d_in, transform.d_out, True)
        faiss.copy_array_to_vector(transform.A.ravel(), vt.A)
        vt.have_bias = True
        faiss.copy_array_to_vector(transform.b.ravel(), vt.b)
        vt.is_trained = True
        return faiss.IndexPreTransform(vt, inner)
    if isinstance(index, IndexRefine) and isinstance(index.refine_index, IndexPQ):
        base = _to_faiss(faiss, index.base_index)
        refine = _to_faiss(faiss, index.refine_index)  # ids 0..ntotal-1 or a clear error
        if not isinstance(refine, faiss.IndexPQ):
            raise ValueError("faiss IndexRefine needs its refine codes addressed by row: add the "
                             "vectors with add(), not add_with_ids()")
        out = faiss.IndexRefine(base, refine)
        out.k_factor = float(index.k_factor)
        return out
    if isinstance(index, IndexRefine):
        base = _to_faiss(faiss, index.base_index)
        _, refine_arrays = index.refine_index._get_state()
        vectors, ids = _sorted_state(refine_arrays, "vectors")
        if not np.array_equal(ids, np.arange(ids.size)):
            raise ValueError("faiss IndexRefineFlat needs ids 0..ntotal-1 (its refine vectors "
                             "are addressed by row); add the vectors with add(), not "
                             "add_with_ids()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        out = faiss.IndexRefineFlat(base, faiss.swig_ptr(vectors)) if ids.size else \
            faiss.IndexRefineFlat(base)
        out.k_factor = float(index.k_factor)
        return out
    raise ValueError(f"cannot convert a {type(index).__name__} to faiss")


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
    if not isinstance(index, Index):
        raise TypeError(f"expected a pqkit index, got {type(index).__name__}")
    return _to_faiss(faiss, index)
