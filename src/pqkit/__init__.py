"""pqkit: product quantization and IVF-PQ nearest-neighbour search with a compiled C++ core.

This module only re-exports the public API; see ``docs/architecture.md`` for where each part
lives.
"""

from . import compat, datasets, engine, filters
from ._atomic import ArtifactExistsError
from ._threads import get_num_threads, set_num_threads
from ._validation import TrainingWarning
from ._version import __version__
from .engine import (
    BackendWarning,
    available_backends,
    available_simd_levels,
    get_backend,
    set_backend,
    set_simd_level,
    simd_level,
)
from .factory import index_factory
from .filters import IDSelectorBatch, IDSelectorBitmap, IDSelectorNot, IDSelectorPerQuery
from .indexes.base import Index
from .indexes.flat import IndexFlat
from .indexes.ivfflat import IndexIVFFlat
from .indexes.ivfpq import IndexIVFPQ
from .indexes.pq import IndexPQ
from .indexes.pretransform import IndexPreTransform
from .indexes.refine import IndexRefine, IndexRefineFlat
from .indexes.sq import IndexScalarQuantizer
from .interop import from_faiss, read_faiss_index, to_faiss
from .io import load
from .quantizers.kmeans import KMeans
from .quantizers.anisotropic import anisotropic_eta
from .quantizers.pq import ProductQuantizer
from .quantizers.scalar import ScalarQuantizer
from .transforms import OPQ, PCA, OPQMatrix, PCAMatrix
from .tune import estimate_memory, suggest, tune

__all__ = [
    "ArtifactExistsError",
    "BackendWarning",
    "IDSelectorBatch",
    "IDSelectorBitmap",
    "IDSelectorNot",
    "IDSelectorPerQuery",
    "Index",
    "IndexFlat",
    "IndexIVFFlat",
    "IndexIVFPQ",
    "IndexPQ",
    "IndexPreTransform",
    "IndexRefine",
    "IndexRefineFlat",
    "IndexScalarQuantizer",
    "KMeans",
    "OPQ",
    "OPQMatrix",
    "PCA",
    "PCAMatrix",
    "ProductQuantizer",
    "ScalarQuantizer",
    "TrainingWarning",
    "__version__",
    "anisotropic_eta",
    "available_backends",
    "available_simd_levels",
    "compat",
    "datasets",
    "estimate_memory",
    "filters",
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
