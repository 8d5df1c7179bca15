"""Re-ranking of approximate candidates with finer distances (FAISS ``IndexRefine``,
``IndexRefineFlat``): the exact vectors, or finer PQ codes."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_k_factor, check_positive_int
from . import _faiss
from ._state import check_parts, nest_params, nest_state, unnest_state, verifying
from .base import Index, Reranker
from .flat import IndexFlat
from .pq import IndexPQ
from .sq import IndexScalarQuantizer

__all__ = ["IndexRefine", "IndexRefineFlat"]

class IndexRefine(Index):
    """An approximate index whose candidates are re-ranked with finer distances.

    Parameters
    ----------
    base_index : pqkit.Index
        The approximate index (IndexPQ, IndexIVFPQ, an IndexPreTransform, ...). It must not hold
        vectors yet: vectors are added to both it and the refine index.
    k_factor : float, default 1.0
        ``search(x, k)`` fetches ``ceil(k * k_factor)`` candidates from ``base_index`` and returns
        the ``k`` with the smallest refined distances (largest for "ip"/"cosine").
    refine_index : pqkit.IndexFlat, pqkit.IndexScalarQuantizer or pqkit.IndexPQ, optional
        Where the refined distances come from, empty, with the base index's ``d`` and ``metric``.
        None (the default) makes an :class:`pqkit.IndexFlat`: exact distances, ``4 * d`` bytes
        per vector. An :class:`pqkit.IndexScalarQuantizer` keeps ``d`` bytes per vector (one
        per dimension), and an :class:`pqkit.IndexPQ` with finer codes than the base (e.g. 8
        bits and more sub-quantizers) ``code_size`` bytes: each candidate's distance is then
        computed directly to its decoded code (the vector ``reconstruct`` returns). Either is
        trained by :meth:`train` with the base index. An IndexPQ keeps its codes as rows, one
        contiguous read per candidate (its own ``search`` then scans a blocked copy made on
        first use).

    Attributes
    ----------
    base_index : pqkit.Index
    refine_index : pqkit.IndexFlat, pqkit.IndexScalarQuantizer or pqkit.IndexPQ
        Same metric and ids as the base index.
    k_factor : float
        Settable.
    nprobe : int
        Forwarded to ``base_index`` (IVF only).

    Notes
    -----
    Distances returned are the refine index's (exact for an IndexFlat; to the decoded codes for
    an IndexScalarQuantizer or IndexPQ) for the candidates found; a neighbour missed by
    ``base_index`` stays missed. An IndexIVFPQ base (4 or 8 bits, compiled engine) ranks its candidates by its byte-quantized
    distance table's integer estimates, as a fast-scan index does, without the exact ADC sums its
    own ``search`` returns: the candidates can differ slightly from ``base_index.search``'s, and
    the results are the same at every SIMD level and thread count. Memory is the base index plus
    the refine index (``4 * d + 8`` bytes per vector for an IndexFlat). Conversions, metrics and
    result padding: see :mod:`pqkit.indexes.base`.

    Search parameters (``search_parameters``): ``k_factor`` for this call, and every parameter
    of ``base_index`` (``nprobe``, ``filter``, ``max_probe`` for an IVF base), which it
    receives. The filter is applied inside the base index's scan and again to the candidates,
    so the re-ranking sees allowed candidates only. ``range_search`` takes ``nprobe`` and
    ``filter``: its candidates are the base index's range results for the same radius (by the
    base's approximate distances), re-ranked, and those whose refined distance is within the
    radius are returned; a vector the base places outside the radius is not found.

    Examples
    --------
    >>> import pqkit
    >>> index = pqkit.IndexRefine(pqkit.IndexPQ(32, 8), k_factor=4)
    >>> index.refine_index
    IndexFlat(d=32, metric='l2', ntotal=0, is_trained=True)
    >>> pqkit.IndexRefine(pqkit.IndexIVFPQ(32, 16, 8, 4), 8, pqkit.IndexPQ(32, 16, 8)).code_size
    20
    """

    def __init__(self, base_index, k_factor=1.0, refine_index=None):
        if not isinstance(base_index, Index):
            raise TypeError(f"base_index must be a pqkit index, got {type(base_index).__name__}")
        if base_index.ntotal:
            raise ValueError(
                f"base_index already holds {base_index.ntotal} vectors whose exact copies are "
                "unknown; wrap an empty index (reset() it) and add the vectors to the IndexRefine"
            )
        super().__init__(base_index.d, base_index.metric, base_index.n_threads,
                         base_index.backend, base_index.device)
        if refine_index is None:
            refine_index = IndexFlat(base_index.d, base_index.metric, base_index.n_threads,
                                     backend=base_index.backend, device=base_index.device)
        else:
            _check_refine_index(refine_index, base_index)
            refine_index.n_threads = base_index.n_threads
        self._attach(base_index, refine_index, k_factor)

    @property
    def k_factor(self) -> float:
        """Candidates fetched per result: ``ceil(k * k_factor)``."""
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value) -> None:
        self._k_factor = check_k_factor(value)

    @Index.n_threads.setter
    def n_threads(self, value) -> None:
        """Set on the wrapper, it applies to both parts (the base search and the re-ranking)."""
        Index.n_threads.fset(self, value)
        self.base_index.n_threads = self._n_threads
        self.refine_index.n_threads = self._n_threads

    @property
    def nprobe(self) -> int:
        """The base index's ``nprobe`` (AttributeError if it has none)."""
        return self.base_index.nprobe

    @nprobe.setter
    def nprobe(self, value) -> None:
        if not hasattr(self.base_index, "nprobe"):
            raise AttributeError(f"{type(self.base_index).__name__} has no nprobe")
        self.base_index.nprobe = value

    def _ntotal(self):
        return self.base_index.ntotal

    def _is_trained(self):
        return self.base_index.is_trained and self.refine_index.is_trained

    def _code_size(self):
        return self.base_index.code_size + self.refine_index.code_size

    def _memory_usage_bytes(self):
        return self.base_index.memory_usage_bytes() + self.refine_index.memory_usage_bytes()

    def _train(self, x):
        self.base_index.train(x)
        self.refine_index.train(x)

    def _contains(self, ids):
        return self.base_index._contains(ids)

    def _id_upper_bound(self):
        return self.base_index._id_upper_bound()

    def _restore_id_upper_bound(self, bound):
        self.base_index._restore_id_upper_bound(bound)
        self.refine_index._restore_id_upper_bound(bound)

    def _add(self, x, ids):
        self.base_index.add_with_ids(x, ids)
        self.refine_index.add_with_ids(x, ids)

    @property
    def search_parameters(self) -> tuple:
        """``k_factor`` and the base index's search parameters."""
        return ("k_factor",) + tuple(self.base_index.search_parameters)

    def _checked_values(self, nq, given):
        if "k_factor" not in given:
            return self.base_index._checked_values(nq, given)
        rest = dict(given)
        k_factor = check_k_factor(rest.pop("k_factor"))
        values = self.base_index._checked_values(nq, rest)
        values["k_factor"] = k_factor
        return values

    def _search(self, x, k, params):
        base = self.base_index
        if params.k_factor is None:
            k_factor = self._k_factor
        else:
            k_factor = params.k_factor
            if "k_factor" in base.search_parameters:
                params = params.without("k_factor")  # a wrapped refine stage keeps its own
        # More candidates than stored vectors only adds padding (k is checked by the caller).
        n_candidates = max(k, min(math.ceil(k * k_factor), base._ntotal()))
        refine = self.refine_index
        if refine._engine is base._engine:
            store = refine._rerank_store()
            if store is not None:
                try:  # both stages in one engine call where the base index has one
                    found = base._search_reranked(x, n_candidates, k, params, store)
                except ValueError:
                    found = None  # e.g. a candidate the refine index lacks: named below
                if found is not None:
                    return found
        candidates = base._candidates(x, n_candidates, params)
        return self.rerank(x, self._allowed(candidates, params), k)

    @staticmethod
    def _allowed(candidates, params):
        """The candidates the call's filter allows (others become -1)."""
        if params.filter is None:
            return candidates
        keep = candidates >= 0
        keep[keep] = params.filter.accepts(candidates, np.arange(candidates.shape[0])[:, None])[keep]
        return np.where(keep, candidates, -1)

    def _range_search(self, x, radius, params, cap):
        lims, _, ids = self.base_index._locked_range_search(x, radius, params.without("k_factor"),
                                                            cap)
        higher_is_better = self._metric_info.higher_is_better
        counts = np.zeros(x.shape[0], dtype=np.int64)
        kept_D, kept_I = [], []
        step = 256  # queries re-ranked together: their candidates padded to the longest
        for q0 in range(0, x.shape[0], step):
            q1 = min(x.shape[0], q0 + step)
            sizes = np.diff(lims[q0:q1 + 1])
            width = int(sizes.max()) if sizes.size else 0
            if width == 0:
                continue
            candidates = np.full((q1 - q0, width), -1, dtype=np.int64)
            columns = np.arange(width)[None, :] < sizes[:, None]
            candidates[columns] = ids[lims[q0]:lims[q1]]
            D, I = self.rerank(x[q0:q1], self._allowed(candidates, params), width)
            with np.errstate(invalid="ignore"):
                within = (I >= 0) & ((D > radius) if higher_is_better else (D < radius))
            counts[q0:q1] = within.sum(axis=1)  # a prefix of each row: results are best first
            kept_D.append(D[within])
            kept_I.append(I[within])
        out_lims = np.zeros(x.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=out_lims[1:])
        D = np.concatenate(kept_D) if kept_D else np.empty(0, np.float32)
        I = np.concatenate(kept_I) if kept_I else np.empty(0, np.int64)
        return out_lims, D.astype(np.float32, copy=False), I

    def rerank(self, x, candidates, k):
        """Refined distances of candidate ids and the best ``k`` of them.

        Parameters
        ----------
        x : numpy.ndarray of float32, shape (n, d)
            Queries (already converted; normalised for "cosine").
        candidates : numpy.ndarray of int64, shape (n, c)
            Candidate ids, ``-1`` for none.
        k : int

        Returns
        -------
        D : numpy.ndarray of float32, shape (n, k)
        I : numpy.ndarray of int64, shape (n, k)
        """
        refine = self.refine_index
        rows = refine._rows_of(candidates, unchecked=True)
        if rows is candidates:  # ids are rows: the engine refuses an id beyond them
            try:
                return refine._rerank_rows(x, rows, candidates, k)
            except ValueError:
                rows = refine._rows_of(candidates)  # -1 for an id not stored: named below
        lost = None if rows is candidates else (candidates >= 0) & (rows < 0)  # same: all found
        if lost is not None and lost.any():
            raise ValueError(f"candidate id {int(candidates[lost][0])} from the base index is "
                             "not in the refine index; the two must hold the same ids")
        # One compiled pass: refined distances (stored floats or decoded codes), best k by
        # (distance, id).
        return refine._rerank_rows(x, rows, candidates, k)

    def _reconstruct(self, ids):
        return self.refine_index.reconstruct_n(ids)

    def _remove(self, ids):
        removed = self.base_index.remove_ids(ids)
        self.refine_index.remove_ids(ids)
        return removed

    def _reset(self):
        self.base_index.reset()
        self.refine_index.reset()

    def _merge_differences(self, other):
        out = super()._merge_differences(other)
        if type(other) is type(self):
            out += [f"base_index.{d}" for d in self.base_index._merge_differences(other.base_index)]
            out += [f"refine_index.{d}"
                    for d in self.refine_index._merge_differences(other.refine_index)]
        return out

    def _merge_ids(self):
        return self.base_index._merge_ids()

    def _merge(self, other, add_id):
        self.base_index._merge(other.base_index, add_id)
        self.refine_index._merge(other.refine_index, add_id)

    def _state_params(self):
        return nest_params(nest_params({"k_factor": self._k_factor}, "base", self.base_index),
                           "refine", self.refine_index)

    def _get_state(self):
        params, arrays = nest_state({"k_factor": self._k_factor}, {}, "base", self.base_index)
        return nest_state(params, arrays, "refine", self.refine_index)

    def _parts(self):
        return (self.base_index, self.refine_index)

    def _exact_vectors(self):
        return self.refine_index._exact_vectors()

    def _estimate_bytes(self, n):
        return self.base_index._estimate_bytes(n) + self.refine_index._estimate_bytes(n)

    # ---- index_factory: ",RFlat" / ",Refine(Flat)" / ",Refine(SQ8)" / ",Refine(PQ{M}[x{nbits}])"
    # after a core
    _factory_role = "suffix"
    _factory_grammar = '",RFlat" | ",Refine(Flat)" | ",Refine(SQ8)" | ",Refine(PQ{M}[x{nbits}])"'
    _factory_pattern = (r",RFlat|,Refine\(Flat\)|,Refine\((?P<refine_sq>SQ8)\)"
                        r"|,Refine\(PQ(?P<refine_M>[0-9]+)(?:x(?P<refine_nbits>[0-9]+))?\)")

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        if match.group("refine_sq") is not None:
            return cls(inner, refine_index=IndexScalarQuantizer(d, metric, n_threads=n_threads,
                                                                backend=backend))
        if match.group("refine_M") is None:
            return cls(inner)
        refine_M = check_positive_int(int(match.group("refine_M")), "M (in Refine(PQ{M}))")
        refine_nbits = 8 if match.group("refine_nbits") is None else int(match.group("refine_nbits"))
        refine = IndexPQ(d, refine_M, refine_nbits, metric, n_threads=n_threads, backend=backend)
        return cls(inner, refine_index=refine)

    # ---- FAISS: IndexRefineFlat, and IndexRefine with an IndexPQ refine index
    _faiss_names = ("IndexRefineFlat", "IndexRefine")

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        name = type(index).__name__
        if ids is not None:
            raise _faiss.unsupported(f"IndexIDMap over {name}")
        base = convert(index.base_index)
        refine = convert(index.refine_index)
        if not isinstance(refine, (IndexFlat, IndexPQ)):
            raise _faiss.unsupported(f"faiss {name} with a {type(refine).__name__} refine index")
        if refine.ntotal != base.ntotal or not base._contains(
                np.arange(refine.ntotal, dtype=np.int64)).all():
            raise ValueError(f"the {name}'s base index must hold ids 0..ntotal-1, "
                             "aligned with its refine index")
        return cls._assemble(base, refine, index.k_factor)

    def _to_faiss(self, faiss, convert):
        base = convert(self.base_index)
        if isinstance(self.refine_index, IndexScalarQuantizer):
            raise ValueError("cannot convert an IndexRefine with an IndexScalarQuantizer refine "
                             "index to faiss (faiss's 8-bit scalar quantizer decodes to other "
                             "values); use an IndexFlat or IndexPQ refine index")
        if isinstance(self.refine_index, IndexPQ):
            refine = convert(self.refine_index)  # ids 0..ntotal-1 or a clear error
            if not isinstance(refine, faiss.IndexPQ):
                raise ValueError("faiss IndexRefine needs its refine codes addressed by row: add "
                                 "the vectors with add(), not add_with_ids()")
            out = faiss.IndexRefine(base, refine)
        else:
            vectors, ids = _faiss.sorted_state(self.refine_index._get_state()[1], "vectors")
            if not np.array_equal(ids, np.arange(ids.size)):
                raise ValueError("faiss IndexRefineFlat needs ids 0..ntotal-1 (its refine vectors "
                                 "are addressed by row); add the vectors with add(), not "
                                 "add_with_ids()")
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            out = (faiss.IndexRefineFlat(base, faiss.swig_ptr(vectors)) if ids.size
                   else faiss.IndexRefineFlat(base))
        out.k_factor = float(self.k_factor)
        return out

    @classmethod
    def _from_state(cls, params, arrays):
        check_parts(params, arrays, ("base", "refine"), ("k_factor",))
        base = unnest_state(params, arrays, "base")
        refine = unnest_state(params, arrays, "refine")
        if not _is_reranker(refine) or refine.d != base.d or refine.metric != base.metric:
            raise ValueError("the refine index must re-rank (an IndexFlat, IndexScalarQuantizer or "
                             "IndexPQ) and have the base index's d and metric")
        refine_ids = arrays.get("refine.ids")
        if refine.ntotal != base.ntotal or (refine.ntotal and verifying()
                                            and not base._contains(refine_ids).all()):
            raise ValueError("the refine index and the base index hold different ids")
        return cls._assemble(base, refine, params["k_factor"])

    @classmethod
    def _assemble(cls, base, refine, k_factor) -> "IndexRefine":
        """An IndexRefine over a filled base index and its matching refine index."""
        index = cls.__new__(cls)
        Index.__init__(index, base.d, base.metric, base.n_threads)
        index._attach(base, refine, k_factor)
        return index

    def _attach(self, base, refine, k_factor) -> None:
        """Sets the two parts (for the constructor and :meth:`_assemble`); a refine index may
        prepare itself (an IndexPQ keeps its codes as rows, one contiguous read per candidate)."""
        prepare = getattr(refine, "_prepare_for_reranking", None)
        if prepare is not None:
            prepare()
        self.base_index, self.refine_index = base, refine
        self.k_factor = k_factor

    def __repr__(self):
        refine = "" if isinstance(self.refine_index, IndexFlat) else f", refine_index={self.refine_index!r}"
        return f"IndexRefine({self.base_index!r}, k_factor={self._k_factor}{refine})"


def _check_refine_index(refine_index, base_index) -> None:
    """A user-given refine index: an empty re-ranking index (IndexFlat, IndexScalarQuantizer,
    IndexPQ) matching the base index."""
    if not _is_reranker(refine_index):
        raise TypeError(f"refine_index must be a pqkit.IndexFlat, pqkit.IndexScalarQuantizer or "
                        f"pqkit.IndexPQ (or None for an IndexFlat), got "
                        f"{type(refine_index).__name__}")
    if refine_index.d != base_index.d or refine_index.metric != base_index.metric:
        raise ValueError(
            f"refine_index must have the base index's d and metric: expected d={base_index.d}, "
            f"metric={base_index.metric!r}, got d={refine_index.d}, metric={refine_index.metric!r}"
        )
    if refine_index.ntotal:
        raise ValueError(f"refine_index already holds {refine_index.ntotal} vectors; pass an empty "
                         "index (reset() it): vectors are added through the IndexRefine")


def _is_reranker(index) -> bool:
    """Whether ``index`` can serve as a refine index (see :class:`pqkit.indexes.base.Reranker`)."""
    return isinstance(index, Index) and isinstance(index, Reranker)


IndexRefineFlat = IndexRefine
