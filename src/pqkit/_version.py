"""The installed pqkit version (single source: pyproject.toml, read through package metadata)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pqkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
