"""Score-aware (anisotropic) product quantization.

Guo, Sun, Lindgren, Geng, Simcha, Chern, Kumar, "Accelerating large-scale inference with
anisotropic vector quantization", ICML 2020 (the quantizer of ScaNN).

For inner-product search the error that matters is the score error ``<q, x> - <q, x_hat>`` of
the queries ``q`` whose score with ``x`` is high. Split the quantization error ``r = x - x_hat``
into ``r_par``, its projection on ``x``, and ``r_perp = r - r_par``. The loss minimised here is

    L(x, x_hat) = eta * ||r_par||^2 + ||r_perp||^2 = ||r||^2 + (eta - 1) * <u, r>^2

with ``u = x / ||x||`` (``u = 0`` for a zero vector: plain squared error). ``eta = 1`` is the
plain PQ loss; ``eta > 1`` penalises the error along ``x``, the one that shifts the scores of
the best-matching queries most.

Where eta comes from (the paper's Theorem 3.4, derived here for unit vectors). Let ``q`` be
uniform on the unit sphere of R^d and ``t = <q, u>``, whose density is proportional to
``(1 - t^2)^((d-3)/2)``. Given ``t``, the component of ``q`` orthogonal to ``u`` is uniform on
a sphere of squared radius ``1 - t^2`` in the ``d - 1`` orthogonal directions, so

    E[<q, r>^2 | t] = t^2 ||r_par||^2 + (1 - t^2) / (d - 1) * ||r_perp||^2.

Weighting the queries by ``w(t) = 1 if t >= T`` (only scores above the threshold ``T`` matter)
gives ``E[w <q, r>^2] = h_par ||r_par||^2 + h_perp ||r_perp||^2`` with ``h_par = E[w t^2]``,
``h_perp = E[w (1 - t^2)] / (d - 1)``, and ``eta = h_par / h_perp``:

    eta(T, d) = (d - 1) * int_T^1 t^2 (1-t^2)^((d-3)/2) dt / int_T^1 (1-t^2)^((d-1)/2) dt.

With ``t = cos(theta)`` both integrands are smooth (:func:`anisotropic_eta` integrates them by
Gauss-Legendre quadrature). For large ``d`` the density of ``t`` beyond ``T`` concentrates at
``T``, hence the paper's approximation ``eta ~ (d - 1) T^2 / (1 - T^2)``; ``T = 0`` gives
``eta = 1`` (isotropic). A vector of norm ``||x||`` with a threshold ``T`` on the raw score has
``t >= T / ||x||``: pass ``T / ||x||`` for data of typical norm ``||x||``.

Training (:func:`train_codebooks`) starts from the k-means codebooks and alternates (a) the
anisotropic encoding of the training vectors and (b) the codebook update that minimises the
summed loss for fixed codes. Both steps never increase the loss.

(a) Encoding (:func:`encode_indices`), by coordinate descent over the sub-quantizers: start from
the nearest centroid of every sub-vector (the plain PQ code), then, ``ENCODE_PASSES`` times or
until no index changes, replace each sub-quantizer's index by the one minimising the loss with
the other indices fixed. With ``r_m(j) = x_m - C_m[j]`` and ``s_other`` the sum of
``<u_m', r_m'>`` over the other sub-quantizers, the loss as a function of ``j`` is, up to a
constant, ``||r_m(j)||^2 + (eta - 1) (s_other + <u_m, x_m> - <u_m, C_m[j]>)^2``: both terms come
from the engine's distance tables (``"l2"`` of ``x``, ``"ip"`` of ``u``), which both engines
compute bit for bit alike, and the rest is element-wise NumPy in a fixed order (no BLAS, no
threads), so the codes are the same for every engine, SIMD level and thread count. Ties go to
the lowest index.

(b) Codebook update (:func:`update_codebooks`), one sub-quantizer at a time with the others
fixed (each step an exact minimisation). For sub-quantizer ``m``, codeword ``j`` and the
points ``S_j`` coded ``j``, with ``b_i = s_other_i + <u_im, x_im>``, the loss
``sum_{i in S_j} ||x_im - c||^2 + (eta - 1) (b_i - <u_im, c>)^2`` is minimised by the solution of

    (|S_j| I + (eta - 1) sum_i u_im u_im^T) c = sum_i x_im + (eta - 1) sum_i b_i u_im,

a ``dsub x dsub`` positive definite system (``eta >= 1``). A codeword no point uses keeps its
value.

For an inverted file the encoded vector is the residual ``x - c_l``, but the reconstruction of
``x`` is ``c_l + x_hat_residual`` and the score error is ``<q, r>`` with the same ``r``: the
parallel direction is that of the full vector ``x``, not of the residual. The functions here
take the encoded targets and the directions ``u`` separately for that reason.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["anisotropic_eta"]

#: Coordinate-descent passes over the sub-quantizers per encoding (fewer when no index changes).
ENCODE_PASSES = 4
#: Alternations of encoding and codebook update after the k-means initialisation.
TRAIN_ITERATIONS = 8
#: Floats per block of the distance tables (two tables of this many float32 values).
_TABLE_FLOATS = 1 << 21
#: Floats per block of outer products in the codebook update.
_OUTER_FLOATS = 1 << 21


def anisotropic_eta(d, threshold) -> float:
    """The weight ``eta = h_par / h_perp`` of the anisotropic loss for a score threshold.

    The ratio of the paper's Theorem 3.4 for unit vectors, with queries uniform on the sphere
    and only scores ``<q, x> >= threshold`` counted; see :mod:`pqkit.quantizers.anisotropic` for
    the derivation. For large ``d`` it approaches ``(d - 1) T^2 / (1 - T^2)``.

    Parameters
    ----------
    d : int
        Vector dimension, >= 2.
    threshold : float
        Score threshold ``T`` on the cosine, in ``(0, 1)``; ScaNN's usual choice is 0.2.

    Returns
    -------
    eta : float
        Greater than 1; pass it as ``anisotropic_eta`` to :class:`pqkit.ProductQuantizer`,
        :class:`pqkit.IndexPQ` or :class:`pqkit.IndexIVFPQ`.

    Examples
    --------
    >>> import pqkit
    >>> round(pqkit.anisotropic_eta(50, 0.2), 2)
    3.76
    """
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
        raise TypeError(f"d must be an int, got {type(d).__name__}")
    if d < 2:
        raise ValueError(f"d must be >= 2 (the loss splits the error along and across x), got {d}")
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a float in (0, 1), got {type(threshold).__name__}")
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1) (a cosine score), got {threshold!r}; "
                         "0 would give eta = 1, plain PQ")
    d = int(d)
    # theta = arccos(t) runs over [0, arccos(T)]; dt = -sin(theta) dtheta.
    nodes, weights = np.polynomial.legendre.leggauss(256)
    top = np.arccos(threshold)
    theta = (nodes + 1.0) * (top / 2.0)
    weights = weights * (top / 2.0)
    sin, cos = np.sin(theta), np.cos(theta)
    parallel = np.sum(weights * cos ** 2 * sin ** (d - 2))
    perpendicular = np.sum(weights * sin ** d)
    return float((d - 1) * parallel / perpendicular)


def unit_directions(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit norm (zero rows stay zero), float32 (n, d)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (x * scale[:, None]).astype(np.float32)


def _block_rows(M: int, ksub: int) -> int:
    return max(1, _TABLE_FLOATS // (M * ksub))


def encode_indices(core_engine, codebooks_core, targets: np.ndarray, directions: np.ndarray,
                   eta: float, M: int, ksub: int, n_threads: int) -> np.ndarray:
    """Anisotropic codes of ``targets`` (module docstring, step (a)).

    Parameters
    ----------
    core_engine : module
        The engine (``pqkit.engine.core(name)``).
    codebooks_core : engine PQCodebooks
        The engine's prepared codebooks.
    targets : numpy.ndarray of float32, shape (n, d)
        The vectors encoded (``x``, or the residuals ``x - c_l`` of an inverted file).
    directions : numpy.ndarray of float32, shape (n, d)
        Unit directions ``u`` of the full vectors (zero rows: plain squared error).
    eta : float
        Weight of the parallel error, >= 1.
    M, ksub : int
    n_threads : int
        Threads of the engine's table computation (the codes do not depend on it).

    Returns
    -------
    indices : numpy.ndarray of int32, shape (n, M)
    """
    n, d = targets.shape
    dsub = d // M
    out = np.empty((n, M), dtype=np.int32)
    weight = eta - 1.0
    step = _block_rows(M, ksub)
    for start in range(0, n, step):
        stop = min(n, start + step)
        target, unit = targets[start:stop], directions[start:stop]
        rows = np.arange(stop - start)
        squared = core_engine.pq_distance_tables(target, codebooks_core, "l2", n_threads)
        # parallel[i, m, j] = <u_im, x_im - C_m[j]>
        along = np.einsum("imk,imk->im", unit.reshape(-1, M, dsub), target.reshape(-1, M, dsub))
        parallel = core_engine.pq_distance_tables(unit, codebooks_core, "ip", n_threads)
        np.subtract(along[:, :, None], parallel, out=parallel)
        codes = np.argmin(squared, axis=2)
        # float64 from here: (eta - 1) * <u, r>^2 may pass float32's range for large vectors
        current = np.take_along_axis(parallel, codes[:, :, None], axis=2)[:, :, 0].astype(np.float64)
        for _ in range(ENCODE_PASSES):
            total = current.sum(axis=1)
            changed = False
            for m in range(M):
                others = total - current[:, m]
                loss = others[:, None] + parallel[:, m, :]
                np.multiply(loss, loss, out=loss)
                loss *= weight
                loss += squared[:, m, :]
                best = np.argmin(loss, axis=1)
                if not changed and np.any(best != codes[:, m]):
                    changed = True
                codes[:, m] = best
                current[:, m] = parallel[rows, m, best]
                total = others + current[:, m]
            if not changed:
                break
        out[start:stop] = codes
    return out


def update_codebooks(codebooks: np.ndarray, indices: np.ndarray, targets: np.ndarray,
                     directions: np.ndarray, eta: float) -> np.ndarray:
    """Codebooks minimising the anisotropic loss for fixed codes (module docstring, step (b)).

    Parameters
    ----------
    codebooks : numpy.ndarray of float32, shape (M, ksub, dsub)
        The current codebooks (kept for codewords no point uses).
    indices : numpy.ndarray of int32, shape (n, M)
    targets, directions : numpy.ndarray of float32, shape (n, d)
    eta : float

    Returns
    -------
    codebooks : numpy.ndarray of float32, shape (M, ksub, dsub)
    """
    M, ksub, dsub = codebooks.shape
    n = targets.shape[0]
    weight = eta - 1.0
    new = codebooks.astype(np.float64)
    x = targets.astype(np.float64).reshape(n, M, dsub)
    u = directions.astype(np.float64).reshape(n, M, dsub)
    along = np.einsum("imk,imk->im", u, x)
    # parallel error per sub-quantizer, <u_im, x_im - C_m[c_im]>
    current = along - np.einsum("imk,imk->im", u, new[np.arange(M), indices])
    total = current.sum(axis=1)
    eye = np.eye(dsub)
    step = max(1, _OUTER_FLOATS // (dsub * dsub))
    pair = np.arange(dsub * dsub)
    for m in range(M):
        codes = indices[:, m].astype(np.int64)
        b = total - current[:, m] + along[:, m]
        counts = np.bincount(codes, minlength=ksub).astype(np.float64)
        rhs = np.empty((ksub, dsub))
        for k in range(dsub):
            rhs[:, k] = np.bincount(codes, weights=x[:, m, k] + weight * b * u[:, m, k],
                                    minlength=ksub)
        gram = np.zeros(ksub * dsub * dsub)
        for start in range(0, n, step):
            stop = min(n, start + step)
            um = u[start:stop, m]
            outer = (um[:, :, None] * um[:, None, :]).reshape(-1)
            slots = (codes[start:stop, None] * (dsub * dsub) + pair).reshape(-1)
            gram += np.bincount(slots, weights=outer, minlength=ksub * dsub * dsub)
        system = counts[:, None, None] * eye + weight * gram.reshape(ksub, dsub, dsub)
        used = counts > 0
        if np.any(used):
            new[m, used] = np.linalg.solve(system[used], rhs[used][:, :, None])[:, :, 0]
        current[:, m] = along[:, m] - np.einsum("ik,ik->i", u[:, m], new[m, codes])
        total = b - along[:, m] + current[:, m]
    return new.astype(np.float32)


def loss(codebooks: np.ndarray, indices: np.ndarray, targets: np.ndarray,
         directions: np.ndarray, eta: float) -> float:
    """Summed anisotropic loss of ``targets`` coded as ``indices`` (a diagnostic for tests).

    Parameters
    ----------
    codebooks : numpy.ndarray of float32, shape (M, ksub, dsub)
    indices : numpy.ndarray of int, shape (n, M)
    targets, directions : numpy.ndarray of float32, shape (n, d)
    eta : float

    Returns
    -------
    float
    """
    M = codebooks.shape[0]
    recon = codebooks.astype(np.float64)[np.arange(M), indices].reshape(targets.shape)
    r = targets.astype(np.float64) - recon
    par = np.einsum("ij,ij->i", r, directions.astype(np.float64))
    return float(np.sum(r * r) + (eta - 1.0) * np.sum(par * par))
