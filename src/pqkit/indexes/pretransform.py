"""IndexPreTransform: a linear transform (PCA, OPQ) applied before a wrapped index."""

from __future__ import annotations

from .._validation import as_float_matrix, check_positive_int, is_torch_tensor
from ..transforms import OPQ, PCA, LinearTransform, transform_from_state
from . import _faiss
from ._state import check_parts, nest_params, nest_state, unnest_state
from .base import Index, _array_difference

__all__ = ["IndexPreTransform"]


class IndexPreTransform(Index):
    """Apply a linear transform (PCA, OPQ) before an index (FAISS ``IndexPreTransform``).

    Parameters
    ----------
    transform : LinearTransform
        :class:`PCA` or :class:`OPQ`, trained or not.
    index : pqkit.Index
        The wrapped index, of dimension ``transform.d_out``.

    Attributes
    ----------
    transform : LinearTransform
    index : pqkit.Index
    nprobe : int
        Forwarded to the wrapped index (IVF indexes only).

    Notes
    -----
    ``d`` is ``transform.d_in``; the metric is the wrapped index's (for "cosine" the wrapped
    index normalises the transformed vectors). ``train(x)`` trains the transform if it is not
    trained yet, then trains the wrapped index on ``transform.apply(x)``. ``reconstruct``
    returns ``transform.reverse`` of the wrapped index's reconstruction. Saved, loaded and
    pickled like every index.

    Search parameters (``search_parameters``): those of the wrapped index, all passed to it
    (``search`` and ``range_search``, whose queries it transforms first).

    Examples
    --------
    >>> import pqkit
    >>> index = pqkit.IndexPreTransform(pqkit.PCA(64, 32), pqkit.IndexIVFPQ(32, 16, 8))
    >>> index.d, index.index.d
    (64, 32)
    """

    def __init__(self, transform, index):
        if not isinstance(transform, LinearTransform):
            raise TypeError(
                f"transform must be a pqkit.PCA, pqkit.OPQ or LinearTransform, got {type(transform).__name__}")
        if not isinstance(index, Index):
            raise TypeError(f"index must be a pqkit index, got {type(index).__name__}")
        if index.d != transform.d_out:
            raise ValueError(
                f"the index dimension ({index.d}) must equal the transform's d_out "
                f"({transform.d_out}); build the index with d={transform.d_out}"
            )
        self.transform = transform
        self.index = index
        super().__init__(transform.d_in, index.metric, index.n_threads)

    @Index.n_threads.setter
    def n_threads(self, value) -> None:
        """Set on the wrapper, it applies to the wrapped index too."""
        Index.n_threads.fset(self, value)
        self.index.n_threads = self._n_threads

    @property
    def nprobe(self) -> int:
        """The wrapped index's ``nprobe`` (AttributeError if it has none)."""
        return self.index.nprobe

    @nprobe.setter
    def nprobe(self, value) -> None:
        if not hasattr(self.index, "nprobe"):
            raise AttributeError(f"{type(self.index).__name__} has no nprobe")
        self.index.nprobe = value

    def _prepare(self, x, name="x", keep_tensor=False):
        if is_torch_tensor(x):  # the transform runs in NumPy
            x = x.detach().cpu().numpy()
        return as_float_matrix(x, self._d, name=name)  # the wrapped index handles the metric

    def _ntotal(self):
        return self.index.ntotal

    def _is_trained(self):
        return self.transform.is_trained and self.index.is_trained

    def _code_size(self):
        return self.index.code_size

    def _memory_usage_bytes(self):
        return self.index.memory_usage_bytes() + self.transform._nbytes()

    def _train(self, x):
        if not self.transform.is_trained:
            self.transform.train(x)
        self.index.train(self.transform.apply(x))

    def _contains(self, ids):
        return self.index._contains(ids)

    def _id_upper_bound(self):
        return self.index._id_upper_bound()

    def _restore_id_upper_bound(self, bound):
        self.index._restore_id_upper_bound(bound)

    def _add(self, x, ids):
        self.index.add_with_ids(self.transform.apply(x), ids)

    @property
    def search_parameters(self) -> tuple:
        """The wrapped index's search parameters (all passed to it)."""
        return tuple(self.index.search_parameters)

    def _checked_values(self, nq, given):
        return self.index._checked_values(nq, given)

    def _search(self, x, k, params):
        return self.index._locked_search(self.transform.apply(x), k, self.index._search, params)

    def _range_search(self, x, radius, params, cap):
        return self.index._locked_range_search(self.transform.apply(x), radius, params, cap)

    def _reconstruct(self, ids):
        return self.transform.reverse(self.index.reconstruct_n(ids))

    def _remove(self, ids):
        return self.index.remove_ids(ids)

    def _reset(self):
        self.index.reset()

    def _merge_differences(self, other):
        out = super()._merge_differences(other)
        if type(other) is type(self):
            mine, mine_arrays = self.transform._state()
            theirs, their_arrays = other.transform._state()
            if type(self.transform) is not type(other.transform) or mine != theirs:
                out.append(f"transform (this {self.transform!r}, other {other.transform!r})")
            else:
                for name in sorted(set(mine_arrays) | set(their_arrays)):
                    difference = _array_difference(f"transform.{name}", mine_arrays.get(name),
                                                   their_arrays.get(name))
                    out += [difference] if difference else []
            out += [f"index.{d}" for d in self.index._merge_differences(other.index)]
        return out

    def _merge_ids(self):
        return self.index._merge_ids()

    def _merge(self, other, add_id):
        self.index._merge(other.index, add_id)

    def _state_params(self):
        return nest_params({"transform": self.transform._state()[0]}, "index", self.index)

    def _get_state(self):
        params, arrays = self.transform._state()
        return nest_state({"transform": params}, {f"transform.{k}": v for k, v in arrays.items()},
                          "index", self.index)

    def _parts(self):
        return (self.index,)

    def _estimate_bytes(self, n):
        t = self.transform
        return self.index._estimate_bytes(n) + 4 * (t.d_out * t.d_in + t.d_out)

    # ---- index_factory: "PCA{d_out}," "PCAW{d_out}," "OPQ{M}," "OPQ{M}_{d_out}," before a core
    _factory_role = "prefix"
    _factory_grammar = '"PCA{d_out}," | "PCAW{d_out}," (whitened) | "OPQ{M}," | "OPQ{M}_{d_out},"'
    _factory_pattern = (r"(?:(?P<pca>PCAW?)(?P<pca_d>[0-9]+)"
                        r"|OPQ(?P<opq_M>[0-9]+)(?:_(?P<opq_d>[0-9]+))?),")

    @classmethod
    def _factory_inner_d(cls, d, match) -> int:
        """The dimension of the core index after this prefix's transform."""
        if match.group("pca"):
            return check_positive_int(int(match.group("pca_d")), "d_out (in PCA{d_out})")
        opq_d = match.group("opq_d")
        return d if opq_d is None else check_positive_int(int(opq_d), "d_out (in OPQ{M}_{d})")

    @classmethod
    def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
        if match.group("pca"):
            transform = PCA(d, inner.d, whiten=match.group("pca") == "PCAW")
        else:
            transform = OPQ(d, check_positive_int(int(match.group("opq_M")), "M (in OPQ{M})"),
                            inner.d)
        return cls(transform, inner)

    # ---- FAISS: IndexPreTransform over a chain of linear transforms
    _faiss_names = ("IndexPreTransform",)

    @classmethod
    def _from_faiss(cls, faiss, index, ids, convert):
        if ids is not None:
            raise _faiss.unsupported("IndexIDMap over IndexPreTransform")
        inner = convert(index.index)
        for position in reversed(range(index.chain.size())):
            inner = cls(_transform_from_faiss(faiss, index.chain.at(position)), inner)
        return inner

    def _to_faiss(self, faiss, convert):
        inner = convert(self.index)
        transform = self.transform
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

    @classmethod
    def _from_state(cls, params, arrays):
        check_parts(params, arrays, ("transform", "index"), ())
        transform_arrays = {k[len("transform."):]: v for k, v in arrays.items()
                            if k.startswith("transform.")}
        transform = transform_from_state(params.get("transform"), transform_arrays)
        return cls(transform, unnest_state(params, arrays, "index"))

    def __repr__(self):
        return f"IndexPreTransform({self.transform!r}, {self.index!r})"


def _transform_from_faiss(faiss, vt):
    vt = faiss.downcast_VectorTransform(vt)
    name = type(vt).__name__
    if not vt.is_trained:
        raise ValueError(f"the faiss {name} is not trained")
    A = _faiss.vector(faiss, vt.A).reshape(vt.d_out, vt.d_in)
    b = _faiss.vector(faiss, vt.b) if vt.have_bias else None
    if name == "PCAMatrix":
        # With random_rotation or balanced_bins, A already includes them: the map is exact.
        transform = PCA(vt.d_in, vt.d_out, eigen_power=float(vt.eigen_power))
        transform.set_matrix(A, b)
        transform.mean = _faiss.vector(faiss, vt.mean).copy() if vt.mean.size() else None
        return transform
    if name == "OPQMatrix":
        transform = OPQ(vt.d_in, vt.M, vt.d_out, niter=vt.niter, niter_pq=vt.niter_pq,
                        niter_pq_0=vt.niter_pq_0)
        return transform.set_matrix(A, b)
    if isinstance(vt, faiss.LinearTransform):
        # Any other linear map (RandomRotationMatrix, a plain LinearTransform, an OPQMatrix
        # read back from a file): kept as its matrix.
        return LinearTransform(vt.d_in, vt.d_out).set_matrix(A, b)
    raise _faiss.unsupported(f"faiss transform {name} (only linear transforms)")
