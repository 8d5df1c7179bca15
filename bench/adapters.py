"""Algorithms behind one small interface (the ann-benchmarks model), for ``bench/run.py`` only.

Every adapter is built from a dict of *build* parameters, then::

    algo.fit(base)                     # train + add, float32 (n, d); timed by the runner
    algo.fit_seconds                   # {"train_seconds": .., "add_seconds": ..} where they split
    algo.set_query_params(nprobe=16)   # search-time knobs; cheap, no rebuild
    I = algo.query(queries, k)         # int64 (nq, k) ids, -1 where fewer than k were found
    algo.memory_bytes()                # bytes of the index (codes, ids, centroids, codebooks)
    algo.describe()                    # dict of everything that identifies this run

Thread counts are set by the adapter itself (``set_threads``) so the runner never has to know
which library uses OpenMP, BLAS or its own pool. faiss is imported lazily: the runner imports the
faiss adapters only inside a child process whose ``FAISS_SIMD_LEVEL`` is fixed before import.

This module is never imported by the package (house rule 9).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import operator
import os
import time
from pathlib import Path
from collections import defaultdict

import numpy as np


class BaseANN:
    """The interface. Subclasses store parameters in ``__init__`` and do all work in ``fit``."""

    name = "base"
    family = "base"  # what this adapter is compared against: "flat", "pq", "ivfpq", "ivfpq-4bit"

    def __init__(self, **build_params):
        self.build_params = dict(build_params)
        self.query_params: dict = {}
        self.n_threads = 1
        self.fit_seconds: dict = {}  # train and add timed apart by adapters that can

    def _train_then_add(self, index, base) -> None:
        """``index.train(base)`` (if untrained) then ``index.add(base)``, each timed."""
        start = time.perf_counter()
        if not index.is_trained:
            index.train(base)
        middle = time.perf_counter()
        index.add(base)
        self.fit_seconds = {"train_seconds": middle - start, "add_seconds": time.perf_counter() - middle}

    def set_threads(self, n_threads: int) -> None:
        self.n_threads = int(n_threads)

    def fit(self, base: np.ndarray) -> None:
        raise NotImplementedError

    def set_query_params(self, **params) -> None:
        self.query_params = dict(params)

    def query(self, queries: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def memory_bytes(self) -> int:
        return 0

    def describe(self) -> dict:
        return {
            "algorithm": self.name,
            "family": self.family,
            "build_params": dict(self.build_params),
            "query_params": dict(self.query_params),
            "threads": self.n_threads,
        }


# --------------------------------------------------------------------------------------------
# pqkit


class PqkitIndex(BaseANN):
    """pqkit ``Flat`` / ``PQ`` / ``IVF,PQ`` built from nlist, M, nbits through ``index_factory``;
    ``refine=True`` adds ``,RFlat`` (``IndexRefineFlat``, query parameter ``k_factor``)."""

    name = "pqkit"

    def __init__(self, kind: str, nlist: int | None = None, M: int | None = None, nbits: int = 8,
                 metric: str = "l2", refine: bool = False):
        params = dict(kind=kind, nlist=nlist, M=M, nbits=nbits, metric=metric)
        if refine:  # recorded only when set, so rows without it match older raw files
            params["refine"] = True
        super().__init__(**params)
        self.kind = kind
        self.family = _family(kind, nbits)
        # ",RFlat": exact re-ranking of k * k_factor candidates (k_factor is a query parameter)
        self.description = _factory_string(kind, nlist, M, nbits) + (",RFlat" if refine else "")
        self.metric = metric

    def set_threads(self, n_threads: int) -> None:
        import pqkit

        super().set_threads(n_threads)
        pqkit.set_num_threads(self.n_threads)

    def fit(self, base):
        import pqkit

        self.index = pqkit.index_factory(base.shape[1], self.description, metric=self.metric)
        self._train_then_add(self.index, base)

    def set_query_params(self, **params):
        super().set_query_params(**params)
        if "nprobe" in params:
            self.index.nprobe = int(params["nprobe"])
        if "k_factor" in params:
            self.index.k_factor = float(params["k_factor"])

    def query(self, queries, k):
        _, ids = self.index.search(queries, k)
        return ids

    def memory_bytes(self):
        return int(self.index.memory_usage_bytes())

    def describe(self):
        import pqkit

        out = super().describe()
        out["factory"] = self.description
        out["simd_level"] = pqkit.simd_level()
        return out


# --------------------------------------------------------------------------------------------
# faiss (imported lazily, see module docstring)


class FaissIndex(BaseANN):
    """faiss ``IndexFlatL2/IP``, ``IndexPQ``, ``IndexIVFPQ``, ``IndexIVFPQFastScan``.

    ``refine=True`` wraps the index in ``IndexRefineFlat`` (exact re-ranking of ``k * k_factor``
    candidates); ``k_factor`` is a query parameter.
    """

    name = "faiss"

    def __init__(self, kind: str, nlist: int | None = None, M: int | None = None, nbits: int = 8,
                 metric: str = "l2", refine: bool = False):
        super().__init__(kind=kind, nlist=nlist, M=M, nbits=nbits, metric=metric, refine=refine)
        self.kind = kind
        self.family = _family(kind, nbits)
        self.refine = refine
        self.metric = metric

    def set_threads(self, n_threads):
        import faiss

        super().set_threads(n_threads)
        faiss.omp_set_num_threads(self.n_threads)

    # Set by the runner: a folder shared by the children of one config run (one per SIMD level).
    # The first level builds and saves each index; the others load it, so every level searches
    # the very same index and the (BLAS-bound) training runs once. The build seconds reported
    # at every level are the first build's.
    build_cache_env = "PQKIT_BENCH_FAISS_BUILD_CACHE"

    def _cache_paths(self):
        folder = os.environ.get(self.build_cache_env)
        if not folder:
            return None, None
        key = hashlib.sha256(json.dumps(self.build_params, sort_keys=True).encode()).hexdigest()[:16]
        return Path(folder) / f"{key}.faissindex", Path(folder) / f"{key}.json"

    def fit(self, base):
        import faiss

        index_path, meta_path = self._cache_paths()
        if index_path is not None and index_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("n") == base.shape[0] and meta.get("d") == base.shape[1]:
                self.index = faiss.read_index(str(index_path))
                self.base_index = faiss.downcast_index(self.index.base_index) if self.refine else self.index
                self.fit_seconds = {**meta["fit_seconds"], "build_reused_from": meta["level"]}
                return
        self._build(base)
        if index_path is not None:
            faiss.write_index(self.index, str(index_path))
            meta_path.write_text(json.dumps({"n": base.shape[0], "d": base.shape[1],
                                             "level": faiss.SIMDConfig.get_level_name(),
                                             "fit_seconds": self.fit_seconds}))

    def _build(self, base):
        import faiss

        d = base.shape[1]
        p = self.build_params
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            index = faiss.IndexFlatL2(d) if self.metric == "l2" else faiss.IndexFlatIP(d)
        elif self.kind == "pq":
            index = faiss.IndexPQ(d, p["M"], p["nbits"], metric)
        elif self.kind == "ivfpq":
            self.quantizer = faiss.IndexFlat(d, metric)
            index = faiss.IndexIVFPQ(self.quantizer, d, p["nlist"], p["M"], p["nbits"], metric)
        elif self.kind == "ivfpq-fastscan":
            self.quantizer = faiss.IndexFlat(d, metric)
            index = faiss.IndexIVFPQFastScan(self.quantizer, d, p["nlist"], p["M"], p["nbits"], metric)
        else:
            raise ValueError(f"unknown faiss kind {self.kind!r}; expected flat, pq, ivfpq, ivfpq-fastscan")
        self.base_index = index
        if self.refine:
            index = faiss.IndexRefineFlat(self.base_index)
        self._train_then_add(index, base)
        self.index = index
        self.fit_seconds["build_seconds"] = self.fit_seconds["train_seconds"] + self.fit_seconds["add_seconds"]

    def set_query_params(self, **params):
        import faiss

        super().set_query_params(**params)
        if "nprobe" in params:
            faiss.extract_index_ivf(self.base_index).nprobe = int(params["nprobe"])
        if "k_factor" in params and self.refine:
            self.index.k_factor = float(params["k_factor"])

    def query(self, queries, k):
        _, ids = self.index.search(queries, k)
        return ids

    def memory_bytes(self):
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def describe(self):
        import faiss

        out = super().describe()
        out["faiss_version"] = faiss.__version__
        out["simd_level"] = faiss.SIMDConfig.get_level_name()
        return out


# --------------------------------------------------------------------------------------------
# scikit-learn exact k-NN


class SklearnBrute(BaseANN):
    """``sklearn.neighbors.NearestNeighbors(algorithm="brute")``: exact, BLAS-backed."""

    name = "sklearn"
    family = "flat"

    def __init__(self, metric: str = "l2"):
        super().__init__(kind="brute", metric=metric)
        self.metric = "euclidean" if metric == "l2" else metric

    def fit(self, base):
        from sklearn.neighbors import NearestNeighbors

        self.model = NearestNeighbors(algorithm="brute", metric=self.metric, n_jobs=self.n_threads)
        self.model.fit(base)
        self.nbytes = base.nbytes

    def query(self, queries, k):
        from threadpoolctl import threadpool_limits

        self.model.n_jobs = self.n_threads
        with threadpool_limits(limits=self.n_threads):
            return self.model.kneighbors(queries, n_neighbors=k, return_distance=False).astype(np.int64)

    def memory_bytes(self):
        return int(self.nbytes)


# --------------------------------------------------------------------------------------------
# The notebook's CustomIndexIVFPQ, re-implemented as the slow baseline it is


class NotebookIVFPQ(BaseANN):
    """The algorithm of the notebook's ``CustomIndexIVFPQ`` (seed 003), kept as slow as it was.

    Training: sklearn ``KMeans(nlist, random_state=1)`` on the base as coarse quantizer, residuals
    to the assigned centroid, then one sklearn ``KMeans(2**nbits, random_state=1)`` per subspace.
    Index: a ``dict cell -> list of ids`` plus one ``(n, M)`` code array. Search: a Python loop
    over queries; per query ``euclidean_distances`` to all coarse centroids and ``argsort``; per
    probed cell a fresh ``(M, 2**nbits)`` distance table of the query residual (one
    ``euclidean_distances`` call per subspace), a gather of the cell's codes, ADC sums by a loop
    over subspaces, ``np.append`` of the cell's distances and ids; at the end
    ``heapq.nsmallest`` over (distance, id) pairs, padded with -1.

    ``max_train`` (not in the notebook) optionally caps the k-means training sample, so the
    baseline can be built on the large sets in finite time; it does not change the search.
    """

    name = "notebook"
    family = "ivfpq"

    def __init__(self, nlist: int, M: int, nbits: int = 8, max_train: int | None = None, seed: int = 1):
        super().__init__(kind="ivfpq", nlist=nlist, M=M, nbits=nbits, max_train=max_train)
        self.nlist, self.M, self.nbits, self.max_train, self.seed = nlist, M, nbits, max_train, seed
        self.n_centroids = 2 ** nbits

    def fit(self, base):
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        n, d = base.shape
        if d % self.M:
            raise ValueError(f"d={d} must be a multiple of M={self.M}")
        self.sub_dim = d // self.M
        train = base
        if self.max_train is not None and n > self.max_train:
            rows = np.random.default_rng(self.seed).choice(n, self.max_train, replace=False)
            train = base[np.sort(rows)]
        with threadpool_limits(limits=self.n_threads):
            self.coarse = KMeans(n_clusters=self.nlist, random_state=self.seed).fit(train)
            residual_train = train - self.coarse.cluster_centers_[self.coarse.labels_]
            self.fine = []
            for sub in range(self.M):
                block = residual_train[:, sub * self.sub_dim:(sub + 1) * self.sub_dim]
                self.fine.append(KMeans(n_clusters=self.n_centroids, random_state=self.seed).fit(block))
            cells = self.coarse.predict(base)
            residual = base - self.coarse.cluster_centers_[cells]
            code_dtype = np.uint8 if self.nbits <= 8 else np.uint16
            self.codes = np.empty((n, self.M), dtype=code_dtype)
            for sub in range(self.M):
                self.codes[:, sub] = self.fine[sub].predict(residual[:, sub * self.sub_dim:(sub + 1) * self.sub_dim])
        self.inverted_lists = defaultdict(list)
        for vector_id, cell in enumerate(cells):
            self.inverted_lists[cell].append(vector_id)

    def _search_one(self, query, k, nprobe):
        from sklearn.metrics.pairwise import euclidean_distances

        query = query[None, :]
        to_centroids = euclidean_distances(query, self.coarse.cluster_centers_, squared=True)[0]
        probed_cells = np.argsort(to_centroids)[:nprobe]
        all_distances = np.array([], dtype=np.float32)
        all_ids = np.array([], dtype=np.uint64)
        for cell in probed_cells:
            query_residual = query - self.coarse.cluster_centers_[cell]
            table = np.empty((self.M, self.n_centroids), dtype=np.float32)
            for sub in range(self.M):
                part = query_residual[:, sub * self.sub_dim:(sub + 1) * self.sub_dim]
                table[sub, :] = euclidean_distances(part, self.fine[sub].cluster_centers_, squared=True)
            cell_ids = self.inverted_lists[cell]
            cell_codes = self.codes[cell_ids]
            distances = np.zeros(len(cell_codes), dtype=np.float32)
            for sub in range(self.M):
                distances += table[sub, cell_codes[:, sub]]
            all_distances = np.append(all_distances, distances)
            all_ids = np.append(all_ids, cell_ids)
        best = heapq.nsmallest(k, zip(all_distances, all_ids), operator.itemgetter(0))
        ids = np.full(k, -1, dtype=np.int64)
        ids[:len(best)] = [int(i) for _, i in best]
        return ids

    def query(self, queries, k):
        from threadpoolctl import threadpool_limits

        nprobe = int(self.query_params.get("nprobe", 1))
        with threadpool_limits(limits=self.n_threads):
            return np.stack([self._search_one(q, k, nprobe) for q in queries])

    def memory_bytes(self):
        ids = sum(len(v) for v in self.inverted_lists.values()) * 8  # Python ints, counted as int64
        centroids = self.coarse.cluster_centers_.nbytes + sum(f.cluster_centers_.nbytes for f in self.fine)
        return int(self.codes.nbytes + ids + centroids)


# --------------------------------------------------------------------------------------------
# Any configuration by factory string, and the graph and ScaNN libraries (``bench/speed2.py``).
# These adapters take every search knob as a query parameter, so one built index serves a whole
# recall curve, and report ``available()`` so a library without a wheel is skipped by name.


def _module_available(module: str) -> tuple[bool, str]:
    """(True, "") when ``module`` imports, else (False, why): a missing wheel is not an error."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as error:  # ImportError, or a wheel that fails to load on this CPU
        return False, f"{module} does not import here ({type(error).__name__}: {error})"
    return True, ""


class PqkitFactory(BaseANN):
    """Any pqkit ``index_factory`` string, e.g. ``IVF1024,PQ25x4,Refine(PQ50)`` (no raw vectors).

    Query parameters are passed to every ``search`` call (``nprobe``, ``k_factor``), so nothing is
    stored on the index between configurations. ``anisotropic_eta`` (build) trains the PQ of an
    IVF-PQ index with the score-aware loss when the installed pqkit offers it.
    """

    name = "pqkit"
    family = "any"
    requires = "pqkit"

    def __init__(self, factory: str, metric: str = "l2", **options):
        super().__init__(factory=factory, metric=metric, **options)
        self.factory, self.metric, self.options = factory, metric, dict(options)

    def set_threads(self, n_threads):
        import pqkit

        super().set_threads(n_threads)
        pqkit.set_num_threads(self.n_threads)

    def fit(self, base):
        import pqkit

        self.index = pqkit.index_factory(base.shape[1], self.factory, metric=self.metric)
        owner = _innermost_pq_owner(self.index)
        for key, value in self.options.items():
            # Build options are attributes of the first-stage PQ (anisotropic_eta) or of its
            # index; an unknown one is an error, not a stray attribute the build ignores.
            target = next((t for t in (getattr(owner, "pq", None), owner)
                           if t is not None and hasattr(t, key)), None)
            if target is None:
                raise ValueError(f"{self.factory}: build option {key!r} is not an attribute of "
                                 f"{type(owner).__name__} or of its PQ")
            setattr(target, key, value)
        self._train_then_add(self.index, base)

    def set_query_params(self, **params):
        unknown = set(params) - set(self.index.search_parameters)
        if unknown:
            raise ValueError(f"{self.factory}: unknown query parameters {sorted(unknown)}; "
                             f"expected some of {list(self.index.search_parameters)}")
        super().set_query_params(**params)

    def query(self, queries, k):
        return self.index.search(queries, k, **self.query_params)[1]

    def memory_bytes(self):
        return int(self.index.memory_usage_bytes())

    def describe(self):
        import pqkit

        return {**super().describe(), "config": self.factory, "simd_level": pqkit.simd_level()}


def _innermost_pq_owner(index):
    """The index that owns the first-stage PQ under refine and transform wrappers."""
    for attribute in ("base_index", "index"):
        inner = getattr(index, attribute, None)
        if inner is not None and inner is not index:
            return _innermost_pq_owner(inner)
    return index


class FaissFactory(BaseANN):
    """Any faiss ``index_factory`` string: ``IVF1024,PQ25x4fs,RFlat``, ``...,Refine(SQ8)``,
    ``...,Refine(PQ50)``, ``IVF1024,PQ50``, ``HNSW32``, ``Flat``.

    Query parameters: ``nprobe``, ``efSearch``, ``k_factor`` (set through ``faiss.ParameterSpace``,
    which reaches through refine and transform wrappers) and ``simd_level``: faiss-cpu >= 1.13 is
    one dynamic-dispatch build whose level ``faiss.SIMDConfig.set_level`` switches at run time, so
    every level searches the very same index in the same process. Memory is the serialised size.
    """

    name = "faiss"
    family = "any"
    requires = "faiss"

    def __init__(self, factory: str, metric: str = "l2"):
        super().__init__(factory=factory, metric=metric)
        self.factory, self.metric = factory, metric

    def set_threads(self, n_threads):
        import faiss

        super().set_threads(n_threads)
        faiss.omp_set_num_threads(self.n_threads)

    def fit(self, base):
        import faiss

        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.index_factory(base.shape[1], self.factory, metric)
        self._train_then_add(self.index, base)

    def set_query_params(self, **params):
        import faiss

        space = faiss.ParameterSpace()
        for key, value in params.items():
            if key == "simd_level":
                continue
            name = "k_factor_rf" if key == "k_factor" else key
            space.set_index_parameter(self.index, name, float(value) if key == "k_factor" else int(value))
        super().set_query_params(**params)

    def query(self, queries, k):
        import faiss

        level = self.query_params.get("simd_level")
        if level is not None and faiss.SIMDConfig.get_level_name() != level:
            faiss.SIMDConfig.set_level(getattr(faiss, f"SIMDLevel_{level}"))
        return self.index.search(queries, k)[1]

    def memory_bytes(self):
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def describe(self):
        import faiss

        level = self.query_params.get("simd_level") or faiss.SIMDConfig.get_level_name()
        return {**super().describe(), "config": self.factory, "simd_level": level,
                "faiss_version": faiss.__version__, "faiss_compile_options": faiss.get_compile_options()}


def faiss_simd_levels() -> list[str]:
    """The SIMD levels this CPU runs faiss at (``NONE`` first), by ``SIMDConfig`` name."""
    import faiss

    names = ["NONE", "AVX2", "AVX512", "AVX512_VPOPCNT", "AVX512_SPR"]
    return [n for n in names if hasattr(faiss, f"SIMDLevel_{n}")
            and faiss.SIMDConfig.is_simd_level_available(getattr(faiss, f"SIMDLevel_{n}"))]


class HnswlibIndex(BaseANN):
    """``hnswlib.Index`` (HNSW over float32 vectors): build ``M``, ``ef_construction``; query ``ef``.

    Memory is ``index_file_size()``: the library's own serialised size (vectors, links, labels).
    """

    name = "hnswlib"
    family = "any"
    requires = "hnswlib"

    def __init__(self, M: int = 16, ef_construction: int = 200, metric: str = "l2"):
        super().__init__(M=M, ef_construction=ef_construction, metric=metric)
        self.M, self.ef_construction, self.metric = M, ef_construction, metric

    def fit(self, base):
        import hnswlib

        start = time.perf_counter()
        self.index = hnswlib.Index(space={"l2": "l2", "ip": "ip", "cosine": "cosine"}[self.metric],
                                   dim=base.shape[1])
        self.index.init_index(max_elements=len(base), M=self.M, ef_construction=self.ef_construction,
                              random_seed=0)
        self.index.add_items(base, np.arange(len(base)), num_threads=self.n_threads)
        self.fit_seconds = {"train_seconds": 0.0, "add_seconds": time.perf_counter() - start}

    def set_query_params(self, **params):
        super().set_query_params(**params)
        self.index.set_ef(int(params.get("ef", 10)))

    def query(self, queries, k):
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.n_threads)
        return labels.astype(np.int64)

    def memory_bytes(self):
        return int(self.index.index_file_size())

    def describe(self):
        return {**super().describe(), "config": f"HNSW M={self.M} efC={self.ef_construction}"}


class UsearchIndex(BaseANN):
    """``usearch.index.Index`` (HNSW; vectors stored as ``dtype`` f32, f16, bf16 or i8): build
    ``connectivity``, ``expansion_add``, ``dtype``; query ``expansion_search``.

    Memory is ``serialized_length``: the library's own serialised size (vectors and graph).
    """

    name = "usearch"
    family = "any"
    requires = "usearch"

    def __init__(self, connectivity: int = 16, expansion_add: int = 128, dtype: str = "f32",
                 metric: str = "l2"):
        super().__init__(connectivity=connectivity, expansion_add=expansion_add, dtype=dtype, metric=metric)
        self.connectivity, self.expansion_add, self.dtype, self.metric = connectivity, expansion_add, dtype, metric

    def fit(self, base):
        from usearch.index import Index

        start = time.perf_counter()
        self.index = Index(ndim=base.shape[1], metric={"l2": "l2sq", "ip": "ip", "cosine": "cos"}[self.metric],
                           dtype=self.dtype, connectivity=self.connectivity, expansion_add=self.expansion_add)
        self.index.add(np.arange(len(base), dtype=np.uint64), base, threads=self.n_threads)
        self.fit_seconds = {"train_seconds": 0.0, "add_seconds": time.perf_counter() - start}

    def set_query_params(self, **params):
        super().set_query_params(**params)
        self.index.expansion_search = int(params.get("expansion_search", 64))

    def query(self, queries, k):
        matches = self.index.search(queries, k, threads=self.n_threads)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        if len(queries) == 1:  # a single query comes back as one Matches, not BatchMatches
            found = np.asarray(matches.keys, dtype=np.int64)[:k]
            out[0, :len(found)] = found
            return out
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)[:, :k]
        filled = np.arange(keys.shape[1])[None, :] < np.asarray(matches.counts)[:, None]
        out[:, :keys.shape[1]] = np.where(filled, keys, -1)
        return out

    def memory_bytes(self):
        return int(self.index.serialized_length)

    def describe(self):
        return {**super().describe(),
                "config": f"HNSW conn={self.connectivity} expAdd={self.expansion_add} {self.dtype}"}


class ScannIndex(BaseANN):
    """ScaNN (``scann.scann_ops_pybind``): a k-means tree of ``num_leaves`` leaves (None: no tree), anisotropic
    4-bit asymmetric hashing (``dims_per_block`` dimensions per 16-centroid block, threshold
    ``aq_threshold``; Guo et al., ICML 2020) and, when ``reorder`` is "float32" or "int8", exact or
    int8 re-scoring of ``reorder_k`` candidates. Query: ``leaves_to_search``, ``reorder_k``.

    Memory: ScaNN has no size call, so the searcher is serialised to a temporary folder and the
    files' sizes are summed (codes, tree, codebooks and the re-scoring copy of the vectors).
    One thread: ``search_batched`` is serial; more threads use ``search_batched_parallel``.
    """

    name = "scann"
    family = "any"
    requires = "scann"

    def __init__(self, num_leaves: int | None, dims_per_block: int = 2, aq_threshold: float | None = 0.2,
                 reorder: str | None = "float32", training_sample_size: int = 250_000, metric: str = "l2"):
        super().__init__(num_leaves=num_leaves, dims_per_block=dims_per_block, aq_threshold=aq_threshold,
                         reorder=reorder, training_sample_size=training_sample_size, metric=metric)
        self.params = dict(self.build_params)

    def fit(self, base):
        from scann.scann_ops.py import scann_ops_pybind
        from scann.scann_ops.py.scann_builder import ReorderType

        p = self.params
        measure = {"l2": "squared_l2", "ip": "dot_product"}[p["metric"]]
        sample = min(p["training_sample_size"], len(base))
        threshold = float("nan") if p["aq_threshold"] is None else float(p["aq_threshold"])
        builder = scann_ops_pybind.builder(base, 10, measure)
        if p["num_leaves"] is not None:  # None: no tree, every code is scored (brute-force AH)
            builder = builder.tree(num_leaves=p["num_leaves"], num_leaves_to_search=1,
                                   training_sample_size=sample)
        builder = builder.score_ah(p["dims_per_block"], anisotropic_quantization_threshold=threshold,
                                   training_sample_size=sample)
        if p["reorder"] is not None:
            kind = {"float32": ReorderType.FLOAT32, "int8": ReorderType.INT8}[p["reorder"]]
            builder = builder.reorder(100, quantize=kind)
        builder.set_n_training_threads(self.n_threads)
        start = time.perf_counter()
        self.searcher = builder.build()
        self.fit_seconds = {"train_seconds": time.perf_counter() - start, "add_seconds": 0.0}

    def _knobs(self, k):
        q = self.query_params
        knobs = {"final_num_neighbors": k}
        if self.params["num_leaves"] is not None:
            knobs["leaves_to_search"] = int(q.get("leaves_to_search", 1))
        if self.params["reorder"] is not None:
            knobs["pre_reorder_num_neighbors"] = max(k, int(q.get("reorder_k", k)))
        return knobs

    def query(self, queries, k):
        knobs = self._knobs(k)
        if len(queries) == 1:
            ids, _ = self.searcher.search(queries[0], **knobs)
            return np.asarray(ids, dtype=np.int64)[None, :]
        if self.n_threads > 1:
            ids, _ = self.searcher.search_batched_parallel(queries, **knobs)
        else:
            ids, _ = self.searcher.search_batched(queries, **knobs)
        return np.asarray(ids, dtype=np.int64)

    def memory_bytes(self):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pqkit-bench-scann-") as folder:
            self.searcher.serialize(folder)
            return int(sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file()))

    def describe(self):
        p = self.params
        reorder = f",reorder({p['reorder']})" if p["reorder"] else ""
        return {**super().describe(),
                "config": f"{'tree' + str(p['num_leaves']) + ',' if p['num_leaves'] else ''}AH{p['dims_per_block']}d/blk,t={p['aq_threshold']}{reorder}"}


# --------------------------------------------------------------------------------------------


def _family(kind: str, nbits: int) -> str:
    if kind in ("flat", "brute"):
        return "flat"
    if kind == "ivfpq-fastscan":
        return "ivfpq-4bit"
    if kind == "ivfpq":
        return "ivfpq-4bit" if nbits == 4 else "ivfpq"
    if kind == "pq":
        return "pq-4bit" if nbits == 4 else "pq"
    raise ValueError(f"unknown index kind {kind!r}")


def _factory_string(kind: str, nlist, M, nbits) -> str:
    if kind == "flat":
        return "Flat"
    if kind == "pq":
        return f"PQ{M}x{nbits}"
    if kind == "ivfpq":
        return f"IVF{nlist},PQ{M}x{nbits}"
    raise ValueError(f"pqkit has no kind {kind!r}; expected flat, pq or ivfpq")


#: adapter name in the config -> class
ADAPTERS = {
    "pqkit": PqkitIndex,
    "faiss": FaissIndex,
    "sklearn": SklearnBrute,
    "notebook": NotebookIVFPQ,
    "pqkit-factory": PqkitFactory,
    "faiss-factory": FaissFactory,
    "hnswlib": HnswlibIndex,
    "usearch": UsearchIndex,
    "scann": ScannIndex,
}


def availability(name: str) -> tuple[bool, str]:
    """(True, "") when the adapter's library imports here, else (False, the reason)."""
    cls = ADAPTERS[name]
    return _module_available(getattr(cls, "requires", "numpy"))


def make_adapter(name: str, **build_params) -> BaseANN:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[name](**build_params)
