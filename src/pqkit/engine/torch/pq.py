"""k-means and product quantization on the torch engine's device: Lloyd iterations, codebooks,
packed codes, encoding, decoding and distance tables.

Distances of a sub-vector to a codebook's centroids, and the distance tables, are summed over
the sub-vector's coordinates one coordinate at a time (sequentially, as the compiled core
sums them), each step a whole-batch tensor operation; the codes and tables then agree with the
other engines' up to float near-ties. Nearest-centroid search over whole vectors (k-means
assignment, coarse probing) uses ``||x||^2 + ||y||^2 - 2 <x, y>`` through a matrix product,
which is what makes it fast on a GPU, and differs from the other engines by rounding only.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import budget, checked, parse_metric, positive, to_device, to_host


# ------------------------------------------------------------------------------ codes
def unpack_codes(codes: torch.Tensor, M: int, nbits: int) -> torch.Tensor:
    """Sub-quantizer indices (int32, ``(n, M)``) of packed codes (uint8, ``(n, code_size)``):
    index ``m`` is bits ``[m * nbits, (m + 1) * nbits)``, least significant first."""
    n = codes.shape[0]
    if nbits == 8:
        return codes[:, :M].to(torch.int32)
    shifts = torch.arange(8, device=codes.device, dtype=torch.uint8)
    bits = ((codes.unsqueeze(-1) >> shifts) & 1).reshape(n, codes.shape[1] * 8)[:, :M * nbits]
    weights = (1 << torch.arange(nbits, device=codes.device, dtype=torch.int32))
    return (bits.reshape(n, M, nbits).to(torch.int32) * weights).sum(-1, dtype=torch.int32)


def pack_codes(idx: torch.Tensor, nbits: int) -> torch.Tensor:
    """Packed codes (uint8, ``(n, ceil(M * nbits / 8))``) of sub-quantizer indices ``(n, M)``."""
    n, M = idx.shape
    code_size = (M * nbits + 7) // 8
    if nbits == 8:
        return idx.to(torch.uint8)
    shifts = torch.arange(nbits, device=idx.device, dtype=torch.int32)
    bits = ((idx.to(torch.int32).unsqueeze(-1) >> shifts) & 1).reshape(n, M * nbits)
    padded = torch.zeros((n, code_size * 8), dtype=torch.int32, device=idx.device)
    padded[:, :M * nbits] = bits
    weights = 1 << torch.arange(8, device=idx.device, dtype=torch.int32)
    return (padded.reshape(n, code_size, 8) * weights).sum(-1).to(torch.uint8)


def _check_nbits(nbits) -> int:
    nbits = int(nbits)
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must be in 1..16, got {nbits}")
    return nbits


def pq_unpack_codes(device, codes, M, nbits):
    M, nbits = positive(M, "M"), _check_nbits(nbits)
    codes = checked(codes, np.uint8, "codes", (-1, (M * nbits + 7) // 8))
    return to_host(unpack_codes(to_device(codes, device), M, nbits))


def pq_pack_codes(device, idx, nbits):
    nbits = _check_nbits(nbits)
    idx = checked(idx, np.int32, "idx", (-1, -1))
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= 1 << nbits):
        raise ValueError(f"sub-quantizer indices must be in 0..{(1 << nbits) - 1}, got values in "
                         f"{int(idx.min())}..{int(idx.max())}")
    return to_host(pack_codes(to_device(idx, device), nbits))


# ------------------------------------------------------------------------------ codebooks
class PQCodebooks:
    """Codebooks ``(M, ksub, dsub)`` float32 on the device (a copy)."""

    device = torch.device("cpu")  # the engine's subclass sets its device

    def __init__(self, codebooks, nbits):
        nbits = _check_nbits(nbits)
        codebooks = checked(codebooks, np.float32, "codebooks", (-1, 1 << nbits, -1))
        positive(codebooks.shape[0], "M")
        positive(codebooks.shape[2], "dsub")
        self.codebooks = to_device(codebooks.copy(), self.device)
        self._nbits = nbits
        M, ksub, dsub = codebooks.shape
        self.sqnorms = lane_dot(self.codebooks.reshape(-1, dsub),
                                self.codebooks.reshape(-1, dsub)).reshape(M, ksub)

    @property
    def d(self) -> int:
        return int(self.codebooks.shape[0] * self.codebooks.shape[2])

    @property
    def M(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def code_size(self) -> int:
        return (self.M * self._nbits + 7) // 8

    @property
    def ksub(self) -> int:
        return 1 << self._nbits

    @property
    def dsub(self) -> int:
        return int(self.codebooks.shape[2])


def check_pq(pq, cls) -> None:
    if not isinstance(pq, cls):
        raise TypeError(f"pq must be PQCodebooks of this engine, got {type(pq).__name__}")


def sub_tables(q: torch.Tensor, pq: PQCodebooks, l2: bool) -> torch.Tensor:
    """``(n, M, ksub)``: ``||q_m - c_mj||^2`` (L2) or ``<q_m, c_mj>`` (IP), each summed over the
    sub-vector's coordinates in order."""
    n = q.shape[0]
    qs = q.reshape(n, pq.M, pq.dsub)
    cb = pq.codebooks  # (M, ksub, dsub)
    out = torch.zeros((n, pq.M, pq.ksub), dtype=torch.float32, device=q.device)
    for j in range(pq.dsub):
        a = qs[:, :, j].unsqueeze(-1)          # (n, M, 1)
        b = cb[:, :, j].unsqueeze(0)           # (1, M, ksub)
        if l2:
            diff = a - b
            out += diff * diff
        else:
            out += a * b
    return out


def _rows_per_batch(device, per_row: int) -> int:
    return max(budget(device) // max(per_row, 1), 1)


def encode(x: torch.Tensor, pq: PQCodebooks) -> torch.Tensor:
    """Sub-quantizer indices ``(n, M)`` int32: each sub-vector's nearest centroid (the first on
    ties)."""
    n = x.shape[0]
    out = torch.empty((n, pq.M), dtype=torch.int32, device=x.device)
    step = _rows_per_batch(x.device, pq.M * pq.ksub)
    for b in range(0, n, step):
        out[b:b + step] = torch.argmin(sub_tables(x[b:b + step], pq, True), dim=2).to(torch.int32)
    return out


def decode(idx: torch.Tensor, pq: PQCodebooks) -> torch.Tensor:
    """Reconstructions ``(n, d)`` of sub-quantizer indices ``(n, M)``."""
    m = torch.arange(pq.M, device=idx.device)
    return pq.codebooks[m, idx.long()].reshape(idx.shape[0], pq.d)


def pq_encode(device, x, pq, n_threads):
    x = checked(x, np.float32, "x", (-1, pq.d))
    return to_host(pack_codes(encode(to_device(x, device), pq), pq.nbits))


def pq_decode(device, codes, pq, n_threads):
    codes = checked(codes, np.uint8, "codes", (-1, pq.code_size))
    idx = unpack_codes(to_device(codes, device), pq.M, pq.nbits)
    return to_host(decode(idx, pq))


def pq_distance_tables(device, x, pq, metric, n_threads):
    l2 = parse_metric(metric)
    x = checked(x, np.float32, "x", (-1, pq.d))
    return to_host(sub_tables(to_device(x, device), pq, l2))


def lane_sum(prod: torch.Tensor) -> torch.Tensor:
    """The sum over the last axis in the compiled core's 16-lane order (see :func:`lane_dot`),
    for any leading shape."""
    L = prod.shape[-1]
    width = max(-(-L // 16) * 16, 16)
    if width != L:  # zero padding: adding +0.0 to a lane leaves it unchanged
        prod = torch.cat((prod, prod.new_zeros((*prod.shape[:-1], width - L))), -1)
    chunks = prod.reshape(*prod.shape[:-1], width // 16, 16)
    lanes = chunks[..., 0, :]
    for c in range(1, chunks.shape[-2]):
        lanes = lanes + chunks[..., c, :]
    for half in (8, 4, 2, 1):
        lanes = lanes[..., :half] + lanes[..., half:2 * half]
    return lanes[..., 0]


def sequential_sum(prod: torch.Tensor) -> torch.Tensor:
    """The sum over the last axis, one element after the other (the core's sums over the
    coordinates of a transposed vector set)."""
    acc = prod[..., 0]
    for j in range(1, prod.shape[-1]):
        acc = acc + prod[..., j]
    return acc


def lane_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``<a_i, b_i>`` in the compiled core's 16-lane order: element ``j`` into lane
    ``j % 16`` (each lane summed in order), the lanes reduced by the tree ``(l, l + 8)``,
    ``(l, l + 4)``, ``(l, l + 2)``, ``(l, l + 1)``. Products and sums are separate operations
    (no fused multiply-add), so the result is the core's, bit for bit. ``a``, ``b``: ``(n, L)``."""
    return lane_sum(a * b)


# ------------------------------------------------------------------------------ k-means
def sqnorms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def nearest(x: torch.Tensor, centroids: torch.Tensor, cnorms: torch.Tensor, l2: bool):
    """Nearest centroid of each row (the first on ties) and its distance (squared L2, or the
    inner product for IP), in batches of rows."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    step = _rows_per_batch(x.device, centroids.shape[0])
    for b in range(0, n, step):
        part = x[b:b + step]
        dots = part @ centroids.T
        if l2:
            keys = (sqnorms(part)[:, None] + cnorms[None, :] - 2 * dots).clamp_min_(0)
            best, arg = torch.min(keys, dim=1)
        else:
            best, arg = torch.max(dots, dim=1)
        labels[b:b + step], dist[b:b + step] = arg, best
    return labels, dist


def _sample_and_seeds(n: int, k: int, seed: int, max_points_per_centroid: int, device):
    """The seeded subsample of ``n`` training rows (sorted row numbers, or None to keep all) and
    the ``k`` distinct rows of the subsample that start the centroids."""
    if n < k:
        raise ValueError("k-means needs at least as many training points as centroids: expected "
                         f"n >= {k}, got n = {n}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    cap = n if max_points_per_centroid == 0 else min(n, k * max_points_per_centroid)
    rows = None
    if cap < n:
        rows = torch.randperm(n, generator=gen, device=device)[:cap].sort().values
        n = cap
    return rows, torch.randperm(n, generator=gen, device=device)[:k]


def kmeans_train(x: torch.Tensor, k: int, niter: int, seed: int, max_points_per_centroid: int):
    """Lloyd's k-means under L2 on the device: a seeded subsample, ``k`` distinct rows as the
    first centroids, ``niter`` iterations (assignment, then an update summed in float64), an
    empty cluster repaired by splitting a large one. Returns (centroids ``(k, d)``, objective)."""
    n, d = x.shape
    rows, init = _sample_and_seeds(n, k, seed, max_points_per_centroid, x.device)
    if rows is not None:
        x = x[rows].contiguous()
        n = rows.shape[0]
    centroids = x[init].clone()
    rng = np.random.default_rng(int(seed) + 2)
    objective = 0.0
    for _ in range(max(int(niter), 1)):
        labels, dist = nearest(x, centroids, sqnorms(centroids), True)
        objective = float(dist.double().sum())
        sums = torch.zeros((k, d), dtype=torch.float64, device=x.device)
        sums.index_add_(0, labels, x.double())
        counts = torch.bincount(labels, minlength=k)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None].double()).float()
        if not bool(filled.all()):
            _repair_empty_clusters(centroids, to_host(counts), rng)
    return centroids, objective


def _repair_empty_clusters(centroids: torch.Tensor, counts: np.ndarray, rng) -> None:
    """An empty cluster takes over half of a cluster drawn with probability ~ (size - 1); the two
    centroids are pushed apart by a tiny symmetric perturbation."""
    eps = 1.0 / 1024.0
    even = (torch.arange(centroids.shape[1], device=centroids.device) % 2 == 0)
    up = torch.where(even, 1 + eps, 1 - eps).to(torch.float32)
    for ci in np.flatnonzero(counts == 0):
        weights = np.maximum(counts - 1, 0)
        total = int(weights.sum())
        if total == 0:
            return
        cj = int(np.searchsorted(np.cumsum(weights), int(rng.integers(0, total)), side="right"))
        centroids[ci] = centroids[cj] * up
        centroids[cj] = centroids[cj] * (2 - up)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def kmeans(device, x, k, niter, seed, max_points_per_centroid, n_threads):
    x = checked(x, np.float32, "x", (-1, -1))
    k = positive(k, "k")
    centroids, objective = kmeans_train(to_device(x, device), k, niter, int(seed),
                                        max(int(max_points_per_centroid), 0))
    return to_host(centroids), objective


def pq_train(device, x, M, nbits, niter, seed, max_points_per_centroid, n_threads):
    x = checked(x, np.float32, "x", (-1, -1))
    M, nbits = positive(M, "M"), _check_nbits(nbits)
    d = x.shape[1]
    if d % M:
        raise ValueError(f"d must be a multiple of M: d = {d}, M = {M}")
    ksub, dsub = 1 << nbits, d // M
    if x.shape[0] < ksub:
        raise ValueError(f"PQ training needs at least ksub = 2^nbits = {ksub} points, got "
                         f"{x.shape[0]}")
    xt = to_device(x, device)
    subs = xt.reshape(xt.shape[0], M, dsub).permute(1, 0, 2).contiguous()  # (M, n, dsub)
    return to_host(kmeans_batched(subs, ksub, niter, int(seed),
                                  max(int(max_points_per_centroid), 0)))


def kmeans_batched(x: torch.Tensor, k: int, niter: int, seed: int, max_points_per_centroid: int):
    """:func:`kmeans_train` on ``B`` independent problems at once (the ``M`` sub-spaces of a
    product quantizer): ``x`` ``(B, n, d)``, the same subsample and initial rows for each (as
    one seed gives them), batched matrix products for the assignment and one scatter-add for
    the update. Returns the centroids ``(B, k, d)``."""
    B, n, d = x.shape
    rows, init = _sample_and_seeds(n, k, seed, max_points_per_centroid, x.device)
    if rows is not None:
        x = x[:, rows].contiguous()
        n = rows.shape[0]
    centroids = x[:, init].clone()
    rng = np.random.default_rng(int(seed) + 2)
    offsets = (torch.arange(B, device=x.device) * k)[:, None]
    flat_x = x.reshape(B * n, d).double()
    xn = (x * x).sum(2)  # (B, n)
    step = max(budget(x.device) // max(B * k, 1), 1)
    for _ in range(max(int(niter), 1)):
        cn = (centroids * centroids).sum(2)  # (B, k)
        labels = torch.empty((B, n), dtype=torch.int64, device=x.device)
        for b in range(0, n, step):
            keys = torch.baddbmm(cn[:, None, :], x[:, b:b + step], centroids.transpose(1, 2),
                                 alpha=-2) + xn[:, b:b + step, None]
            labels[:, b:b + step] = torch.argmin(keys, dim=2)
        slots = (labels + offsets).reshape(-1)
        sums = torch.zeros((B * k, d), dtype=torch.float64, device=x.device)
        sums.index_add_(0, slots, flat_x)
        counts = torch.bincount(slots, minlength=B * k).reshape(B, k)
        filled = counts > 0
        means = (sums.reshape(B, k, d) / counts.clamp_min(1)[:, :, None].double()).float()
        centroids = torch.where(filled[:, :, None], means, centroids)
        if not bool(filled.all()):
            host_counts = to_host(counts)
            for b in np.flatnonzero((host_counts == 0).any(1)):
                _repair_empty_clusters(centroids[b], host_counts[b], rng)
    return centroids
