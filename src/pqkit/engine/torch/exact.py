"""Keys in the compiled core's float order, for the few candidates a search keeps.

A matrix product ranks all rows fast but sums in the library's order, which depends on the
shapes of the call. So the searches select a few more candidates than they return by matrix
product, then compute these candidates' keys here in exactly the order the core uses (and the
Numba engine documents): a distance then depends only on the query and the row, never on the
batch, and equals the other engines' bit for bit.

* exact search and coarse probing for ``d > 256``: ``max((||x||^2 + ||y||^2) - 2 <x, y>, 0)``
  with the norms and the inner product in the 16-lane order (:func:`~.pq.lane_sum`);
* coarse probing and nearest centroids for ``33 <= d <= 256``: the same key, the inner product
  summed sequentially over the coordinates (the core keeps those centroids transposed);
* nearest centroids for ``d <= 32``: ``sum_j (x_j - y_j)^2`` sequentially;
* re-ranking and IVF-Flat scans: ``||x - y||^2`` directly in the 16-lane order, or ``-<x, y>``.
"""

from __future__ import annotations

import torch

from .pq import lane_sum, sequential_sum

#: Dimensions up to which the core sums inner products with transposed centroids sequentially.
SEQUENTIAL_MAX_DIM = 256
#: Dimensions below which the core computes nearest-centroid distances directly.
DIRECT_MAX_DIM = 33
#: Extra candidates a search selects by matrix product before the exact keys decide: keys
#: closer than the product's rounding can swap, and a margin of this many keeps every
#: candidate of the exact top-k unless that many rows are within rounding of the k-th key.
MARGIN = 16


def norm_keys(xq: torch.Tensor, rows: torch.Tensor, row_norms, l2: bool, sequential: bool):
    """Keys of candidate ``rows`` ``(a, c, d)`` for queries ``xq`` ``(a, d)``: through norms
    (L2) or ``-<x, y>`` (IP), the inner product in lanes or sequentially."""
    prod = rows * xq[:, None, :]
    ip = sequential_sum(prod) if sequential else lane_sum(prod)
    if not l2:
        return -ip
    xn = lane_sum(xq * xq)[:, None]
    yn = row_norms if row_norms is not None else lane_sum(rows * rows)
    return ((xn + yn) - 2 * ip).clamp_min(0)


def direct_keys(xq: torch.Tensor, rows: torch.Tensor, l2: bool) -> torch.Tensor:
    """``||x - y||^2`` in the 16-lane order (L2) or ``-<x, y>`` (IP), ``rows`` ``(a, c, d)``."""
    if l2:
        diff = rows - xq[:, None, :]
        return lane_sum(diff * diff)
    return -lane_sum(rows * xq[:, None, :])


def nearest_keys(xq: torch.Tensor, rows: torch.Tensor, row_norms) -> torch.Tensor:
    """The L2 keys the core's nearest-centroid assignment compares (by dimension)."""
    d = xq.shape[1]
    if d < DIRECT_MAX_DIM:
        diff = xq[:, None, :] - rows
        return sequential_sum(diff * diff)
    return norm_keys(xq, rows, row_norms, True, d <= SEQUENTIAL_MAX_DIM)


def sort_by_key_then_index(keys: torch.Tensor, index: torch.Tensor):
    """Each row sorted by ``(key, index)``."""
    by_index = torch.argsort(index, dim=1, stable=True)
    keys, index = keys.gather(1, by_index), index.gather(1, by_index)
    by_key = torch.argsort(keys, dim=1, stable=True)
    return keys.gather(1, by_key), index.gather(1, by_key)
