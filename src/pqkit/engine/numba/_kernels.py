"""Float kernels of the Numba engine, in the operation order of the compiled core's kernels
(``cpp/kernels/kernels.h``): 16-lane dot products and squared norms with the lane-tree reduction, direct
squared L2, squared L2 through norms, and sequential sums over transposed centroids.
"""

from __future__ import annotations

import numpy as np

from ._common import _jit


@_jit
def _reduce_lanes(acc):
    a0 = acc[0] + acc[8]
    a1 = acc[1] + acc[9]
    a2 = acc[2] + acc[10]
    a3 = acc[3] + acc[11]
    a4 = acc[4] + acc[12]
    a5 = acc[5] + acc[13]
    a6 = acc[6] + acc[14]
    a7 = acc[7] + acc[15]
    b0 = a0 + a4
    b1 = a1 + a5
    b2 = a2 + a6
    b3 = a3 + a7
    c0 = b0 + b2
    c1 = b1 + b3
    return c0 + c1


@_jit
def _dot(x, y, acc):
    """<x, y> in the 16-lane order; ``acc`` is a float32[16] scratch buffer."""
    d = x.shape[0]
    for lane in range(16):
        acc[lane] = np.float32(0.0)
    j = 0
    while j + 16 <= d:
        for lane in range(16):
            p = x[j + lane] * y[j + lane]
            acc[lane] = acc[lane] + p
        j += 16
    lane = 0
    while j + lane < d:
        p = x[j + lane] * y[j + lane]
        acc[lane] = acc[lane] + p
        lane += 1
    return _reduce_lanes(acc)


@_jit
def _l2sqr(x, y, acc):
    """||x - y||^2 computed directly, in the 16-lane order."""
    d = x.shape[0]
    for lane in range(16):
        acc[lane] = np.float32(0.0)
    j = 0
    while j + 16 <= d:
        for lane in range(16):
            diff = x[j + lane] - y[j + lane]
            p = diff * diff
            acc[lane] = acc[lane] + p
        j += 16
    lane = 0
    while j + lane < d:
        diff = x[j + lane] - y[j + lane]
        p = diff * diff
        acc[lane] = acc[lane] + p
        lane += 1
    return _reduce_lanes(acc)


@_jit
def _sqnorms(x, out):
    acc = np.empty(16, dtype=np.float32)
    for i in range(x.shape[0]):
        out[i] = _dot(x[i], x[i], acc)


@_jit
def _l2_key(x_norm, y_norm, ip):
    v = x_norm + y_norm - np.float32(2.0) * ip
    return np.float32(0.0) if v < np.float32(0.0) else v


@_jit
def _to_centroids_t(q, ct, l2, out):
    """out[c] = sum_j (q_j - ct[j, c])^2 (l2) or sum_j q_j ct[j, c], sequential over j."""
    dsub, ksub = ct.shape
    for c in range(ksub):
        out[c] = np.float32(0.0)
    for j in range(dsub):
        qj = q[j]
        for c in range(ksub):
            if l2:
                diff = qj - ct[j, c]
                p = diff * diff
            else:
                p = qj * ct[j, c]
            out[c] = out[c] + p
