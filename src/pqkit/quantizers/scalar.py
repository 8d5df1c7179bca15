"""Scalar quantization: each dimension of a vector coded on its own in one byte (FAISS
``ScalarQuantizer`` with ``QT_8bit``).

Training takes each dimension's range over the training vectors, ``[vmin, vmax]``, and splits
it into 255 equal steps, ``step = (vmax - vmin) / 255`` (float32). A value is coded as the
nearest of the 256 levels, ``round((x - vmin) / step)`` clipped to 0..255 (a dimension whose
training values are all equal has ``step = 0`` and codes 0), and decodes to
``vmin + code * step``: a float32 product, then a sum, never fused, which is exactly what the
engines' re-ranking computes (``rerank_sq``), so distances to decoded vectors agree bit for bit
everywhere. Integer data within 0..255 whose range covers 0 and 255 in every dimension (8-bit
pixels) is coded without loss.

Examples
--------
>>> import numpy as np, pqkit
>>> x = np.random.default_rng(0).integers(0, 256, (1000, 8)).astype(np.float32)
>>> sq = pqkit.ScalarQuantizer(8).train(x)
>>> bool((sq.decode(sq.encode(x)) == x).all())
True
"""

from __future__ import annotations

import numpy as np

from .._validation import (as_float_matrix, check_codes, check_finite, check_float_array,
                           check_positive_int)

__all__ = ["ScalarQuantizer"]

#: The largest code: 8 bits per dimension.
LEVELS = 255


class ScalarQuantizer:
    """An 8-bit scalar quantizer over ``d`` dimensions (``code_size = d`` bytes per vector).

    Parameters
    ----------
    d : int
        Vector dimension.

    Attributes
    ----------
    vmin, step : numpy.ndarray of float32, shape (d,), or None
        Per dimension: the lowest level and the distance between levels (None until trained).
        Read-only; set both with :meth:`set_ranges`.
    """

    def __init__(self, d):
        self._d = check_positive_int(d, "d")
        self._vmin = None
        self._step = None
        self._index = None  # the index whose codes these levels define (IndexScalarQuantizer)

    def _attach(self, index) -> None:
        self._index = index

    @property
    def d(self) -> int:
        return self._d

    @property
    def code_size(self) -> int:
        """Bytes per code: one per dimension."""
        return self._d

    @property
    def is_trained(self) -> bool:
        return self._vmin is not None

    @property
    def vmin(self):
        return self._vmin

    @property
    def step(self):
        return self._step

    def __repr__(self) -> str:
        return f"ScalarQuantizer(d={self._d}, is_trained={self.is_trained})"

    def train(self, x) -> "ScalarQuantizer":
        """Take each dimension's range ``[min, max]`` over ``x`` (any float array (n, d),
        n >= 1) as its 256 levels. Returns self."""
        self._replace(*self._levels_of(as_float_matrix(x, self._d)))
        return self

    def _train_validated(self, x: np.ndarray) -> None:
        """Training from validated vectors, by the attached index (under its write lock)."""
        self._set(*self._levels_of(x))

    @staticmethod
    def _levels_of(x: np.ndarray):
        if x.shape[0] == 0:
            raise ValueError("ScalarQuantizer.train needs at least 1 training vector, got 0")
        vmin = x.min(axis=0)
        vmax = x.max(axis=0)
        return vmin, (vmax - vmin) / np.float32(LEVELS)

    def set_ranges(self, vmin, step) -> "ScalarQuantizer":
        """Set the levels directly: dimension ``t`` has levels ``vmin[t] + c * step[t]`` for
        ``c`` in 0..255. Both float arrays of shape (d,), finite, ``step >= 0``, and the highest
        level within the magnitude bound of d-dimensional vectors. Returns self."""
        vmin = check_float_array(vmin, (self._d,), "vmin", self._d)
        step = check_float_array(step, (self._d,), "step", self._d)
        check_levels(vmin, step, self._d)
        self._replace(vmin, step)
        return self

    def _replace(self, vmin: np.ndarray, step: np.ndarray) -> None:
        """New levels from the user (train, set_ranges): refused while the attached index holds
        vectors coded with the current ones."""
        index = self._index
        if index is None:
            self._set(vmin, step)
            return
        index._check_writable("sq levels")
        with index._lock.write():
            if index.ntotal:
                raise ValueError(
                    f"the index holds {index.ntotal} vectors coded with the current levels; "
                    "call reset() first, then set the levels and add again")
            self._set(vmin, step)

    def _set(self, vmin: np.ndarray, step: np.ndarray) -> None:
        for a in (vmin, step):
            a.flags.writeable = False
        self._vmin, self._step = vmin, step

    def _check_trained(self) -> None:
        if not self.is_trained:
            raise ValueError("ScalarQuantizer is not trained; call train(x) or set_ranges(vmin, "
                             "step) first")

    def encode(self, x) -> np.ndarray:
        """Codes of ``x`` (any float array (n, d)): uint8 (n, d), each value's nearest level."""
        self._check_trained()
        return self._encode_validated(as_float_matrix(x, self._d))

    def _encode_validated(self, x: np.ndarray) -> np.ndarray:
        step = self._step
        scaled = np.zeros(x.shape, dtype=np.float32)
        np.divide(x - self._vmin, step, out=scaled, where=step > 0)
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, LEVELS, out=scaled)
        return scaled.astype(np.uint8)

    def decode(self, codes) -> np.ndarray:
        """The vectors the codes stand for: float32 (n, d), ``vmin + codes * step``."""
        self._check_trained()
        return self._decode_validated(check_codes(codes, self._d))

    def _decode_validated(self, codes: np.ndarray) -> np.ndarray:
        out = codes.astype(np.float32)
        out *= self._step
        return np.add(self._vmin, out, out=out)


def check_levels(vmin: np.ndarray, step: np.ndarray, d: int) -> None:
    """Levels a search can use (user input or a loaded file): ``step >= 0`` and every level
    within the magnitude bound of d-dimensional vectors (the lowest and the highest one are
    checked; levels between them lie between them)."""
    negative = np.flatnonzero(~(step >= 0))
    if negative.size:
        t = int(negative[0])
        raise ValueError(f"step must be >= 0 in every dimension, got {float(step[t])!r} in "
                         f"dimension {t}; levels rise from vmin")
    with np.errstate(over="ignore"):
        top = vmin + np.float32(LEVELS) * step
    check_finite(top.reshape(1, -1), "the highest level (vmin + 255 * step)", d)
