"""Kept so that indexes pickled by pqkit 0.1.0 (which name ``pqkit._io.index_from_bytes``) still
unpickle; the file format lives in :mod:`pqkit.io`."""

from .io import index_from_bytes

__all__ = ["index_from_bytes"]
