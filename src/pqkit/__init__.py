"""pqkit: product quantization and IVF-PQ nearest-neighbour search with a compiled C++ core."""

from . import datasets
from ._core import available_simd_levels, set_simd_level, simd_level
from ._io import load
from ._threads import get_num_threads, set_num_threads
from ._validation import TrainingWarning
from ._version import __version__
from .factory import index_factory
from .index import Index, IndexFlat, IndexIVFFlat, IndexIVFPQ, IndexPQ
from .kmeans import KMeans
from .pq import ProductQuantizer

__all__ = [
    "Index",
    "IndexFlat",
    "IndexIVFFlat",
    "IndexIVFPQ",
    "IndexPQ",
    "KMeans",
    "ProductQuantizer",
    "TrainingWarning",
    "__version__",
    "available_simd_levels",
    "datasets",
    "get_num_threads",
    "index_factory",
    "load",
    "set_num_threads",
    "set_simd_level",
    "simd_level",
]
