"""The index types: one entry each, read by :mod:`pqkit.io`, :mod:`pqkit.factory`,
:mod:`pqkit.interop` and :mod:`pqkit.tune`.

An entry names the type (its class name, which is also the ``index_type`` written in files) and
the module that defines it. Everything else about a type lives on its class, so those readers need
no per-type code:

- loading: ``_from_state`` / ``_get_state`` / ``_state_params`` (the file format);
- ``index_factory``: ``_factory_pattern``, ``_factory_role`` and ``_from_factory``;
- FAISS conversion: ``_faiss_names``, ``_from_faiss`` and ``_to_faiss``;
- ``estimate_memory``: ``_estimate_bytes``.

Modules are imported when a type is first looked up, so this module imports no index module and
the package has no import cycle (an index's ``save`` reaches :mod:`pqkit.io`, which reads this
table). Adding an index type means: its own module, one line in ``ENTRIES``, its tests.

Examples
--------
>>> from pqkit.indexes import registry
>>> registry.index_class("IndexIVFPQ").__name__
'IndexIVFPQ'
>>> "IndexFlat" in registry.NAMES
True
"""

from __future__ import annotations

import importlib

__all__ = ["ENTRIES", "NAMES", "index_class", "index_classes", "is_index"]

#: (type name, defining module), in the order the factory tries core patterns.
ENTRIES = (
    ("IndexFlat", "pqkit.indexes.flat"),
    ("IndexPQ", "pqkit.indexes.pq"),
    ("IndexScalarQuantizer", "pqkit.indexes.sq"),
    ("IndexIVFFlat", "pqkit.indexes.ivfflat"),
    ("IndexIVFPQ", "pqkit.indexes.ivfpq"),
    ("IndexPreTransform", "pqkit.indexes.pretransform"),
    ("IndexRefine", "pqkit.indexes.refine"),
)

NAMES = tuple(name for name, _ in ENTRIES)
_MODULES = dict(ENTRIES)


def index_class(name: str) -> type:
    """The class of the index type ``name`` (one of :data:`NAMES`); KeyError otherwise."""
    return getattr(importlib.import_module(_MODULES[name]), name)


def index_classes() -> dict:
    """Every index type: name -> class, in :data:`ENTRIES` order."""
    return {name: index_class(name) for name in NAMES}


def is_index(obj) -> bool:
    """Whether ``obj`` is a pqkit index (an instance of :class:`pqkit.indexes.base.Index`)."""
    base = importlib.import_module("pqkit.indexes.base")
    return isinstance(obj, base.Index)
