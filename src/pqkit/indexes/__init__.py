"""The index types: one module each, listed in :mod:`pqkit.indexes.registry`; :mod:`pqkit.indexes.base` holds what they share."""
