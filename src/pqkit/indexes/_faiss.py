"""Helpers the index types use to convert themselves from and to FAISS (see
:mod:`pqkit.interop`). FAISS is never imported here: every function takes the ``faiss`` module."""

from __future__ import annotations

import numpy as np

__all__ = []


def unsupported(what: str) -> ValueError:
    return ValueError(
        f"{what} is not supported by pqkit; supported: IndexFlat(L2/IP), IndexPQ, IndexIVFFlat, "
        "IndexIVFPQ (by_residual, no polysemous), IndexPreTransform with PCAMatrix/OPQMatrix, "
        "IndexRefineFlat, IndexRefine with an IndexPQ refine index, IndexIDMap(2) over Flat/PQ"
    )


def metric_from_faiss(faiss, index) -> str:
    if index.metric_type == faiss.METRIC_L2:
        return "l2"
    if index.metric_type == faiss.METRIC_INNER_PRODUCT:
        return "ip"
    raise unsupported(f"metric_type {index.metric_type} (only METRIC_L2 and "
                       "METRIC_INNER_PRODUCT)")


def vector(faiss, vec, dtype=None) -> np.ndarray:
    arr = faiss.vector_to_array(vec)
    return arr if dtype is None else arr.view(dtype)


def pq_codebooks(faiss, pq) -> np.ndarray:
    return vector(faiss, pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).copy()


def invlists_arrays(faiss, ivf, code_size: int) -> dict:
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


def coarse_centroids(faiss, ivf, metric: str) -> np.ndarray:
    quantizer = faiss.downcast_index(ivf.quantizer)
    if type(quantizer).__name__ not in ("IndexFlat", "IndexFlatL2", "IndexFlatIP"):
        raise unsupported(f"an IVF coarse quantizer of type {type(quantizer).__name__} "
                           "(only a flat quantizer)")
    if metric_from_faiss(faiss, quantizer) != metric:
        raise unsupported("an IVF whose coarse quantizer metric differs from the index metric")
    if quantizer.ntotal != ivf.nlist:
        raise ValueError(f"the coarse quantizer holds {quantizer.ntotal} centroids, expected "
                         f"nlist={ivf.nlist}; is the faiss index trained?")
    return quantizer.reconstruct_n(0, ivf.nlist)


def check_unique_ids(ids: np.ndarray) -> None:
    if ids.size and np.unique(ids).size != ids.size:
        raise ValueError(
            "the faiss index holds duplicate ids; pqkit requires unique ids (remove the "
            "duplicates in faiss first)"
        )
    if ids.size and ids.min() < 0:
        raise ValueError("the faiss index holds negative ids; pqkit requires ids >= 0")


def metric_to_faiss(faiss, metric: str):
    if metric == "cosine":
        raise ValueError(
            "faiss has no cosine metric; build the pqkit index with metric='ip' on L2-normalised "
            "vectors (and normalise queries) to move it to faiss"
        )
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def sorted_state(arrays: dict, key: str):
    """Rows of ``arrays[key]`` and ids, ordered by id."""
    order = np.argsort(arrays["ids"], kind="stable")
    return arrays[key][order], arrays["ids"][order]


def with_ids(faiss, index, ids, fill):
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


def flat_quantizer(faiss, centroids, metric):
    quantizer = faiss.IndexFlat(centroids.shape[1], metric)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return quantizer
