"""pqkit: product quantization and IVF-PQ nearest-neighbour search with a compiled C++ core."""

from . import datasets
from . import _backends
from ._backends import (
    BackendWarning,
    available_backends,
    available_simd_levels,
    get_backend,
    set_backend,
    set_simd_level,
    simd_level,
)
from ._atomic import ArtifactExistsError
from ._io import load
from ._threads import get_num_threads, set_num_threads
from ._validation import TrainingWarning
from ._version import __version__
from .factory import index_factory
from .index import Index, IndexFlat, IndexIVFFlat, IndexIVFPQ, IndexPQ
from .kmeans import KMeans
from .pq import ProductQuantizer
from . import compat
from .interop import from_faiss, read_faiss_index, to_faiss
from .refine import IndexRefine, IndexRefineFlat
from .transforms import OPQ, PCA, IndexPreTransform, OPQMatrix, PCAMatrix
from .tune import estimate_memory, suggest, tune

# Pick the engine now: the compiled core, or the Numba engine with a BackendWarning when the
# core cannot be imported on this machine.
_backends.get_backend()

__all__ = [
    "ArtifactExistsError",
    "BackendWarning",
    "Index",
    "IndexFlat",
    "IndexIVFFlat",
    "IndexIVFPQ",
    "IndexPQ",
    "IndexPreTransform",
    "IndexRefine",
    "IndexRefineFlat",
    "KMeans",
    "OPQ",
    "OPQMatrix",
    "PCA",
    "PCAMatrix",
    "ProductQuantizer",
    "TrainingWarning",
    "__version__",
    "available_backends",
    "available_simd_levels",
    "compat",
    "datasets",
    "estimate_memory",
    "from_faiss",
    "get_backend",
    "get_num_threads",
    "index_factory",
    "load",
    "read_faiss_index",
    "set_backend",
    "set_num_threads",
    "set_simd_level",
    "simd_level",
    "suggest",
    "to_faiss",
    "tune",
]
