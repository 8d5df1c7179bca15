"""What the torch engine's modules share: devices, argument checks, host/device moves, top-k and
range-result collection, and the work budget that sizes batches."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

#: Largest number of elements one batch of a scan materialises at a time (per intermediate
#: tensor); batches of queries are sized to stay below it. Bigger on a GPU, where memory is
#: plentiful and large launches are what make it fast.
CPU_BUDGET = 1 << 22
CUDA_BUDGET = 1 << 27

CUDA_HINT = ("install a CUDA build of torch on a machine with an NVIDIA GPU "
             "(pip install 'pqkit[gpu]'), or use device='cpu'")


def resolve_device(device) -> torch.device:
    """The torch device for ``device`` (None: the first CUDA device when there is one, else the
    CPU). ValueError for a device this machine lacks, with the fix."""
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    else:
        raise TypeError(f"device must be a str such as 'cuda' or 'cpu', or a torch.device, got "
                        f"{type(device).__name__}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(dev)!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {str(dev)!r} was asked for, but torch {torch.__version__} sees no CUDA device "
            f"here (CUDA build: {torch.version.cuda}); {CUDA_HINT}")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def budget(device: torch.device) -> int:
    return CUDA_BUDGET if device.type == "cuda" else CPU_BUDGET


def checked(a, dtype, name: str, shape: tuple) -> np.ndarray:
    """The engine's last line of defence: dtype, C order, shape (-1: any), as the other engines
    check. A torch tensor held by this engine (:func:`resident`) passes as it is."""
    if isinstance(a, torch.Tensor):
        if a.dtype != _TORCH_DTYPES[np.dtype(dtype)] or a.dim() != len(shape):
            raise TypeError(f"{name} must be a {np.dtype(dtype)} tensor of {len(shape)} dimensions, "
                            f"got {a.dtype} of shape {tuple(a.shape)}")
        got = tuple(a.shape)
    else:
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"{name} must be a {np.dtype(dtype)} array, got {got}; convert with "
                            f"numpy.asarray(..., dtype=numpy.{np.dtype(dtype)})")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous; try numpy.ascontiguousarray")
        if a.ndim != len(shape):
            raise ValueError(f"{name} must have {len(shape)} dimensions, got shape {a.shape}")
        got = a.shape
    for axis, want in enumerate(shape):
        if want >= 0 and got[axis] != want:
            raise ValueError(f"{name} has shape {tuple(got)}, expected size {want} in dimension "
                             f"{axis}")
    return a


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64,
                 np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32}


def to_device(a, device: torch.device) -> torch.Tensor:
    """A NumPy array (or a tensor) on ``device``; no copy when it is already there."""
    if isinstance(a, torch.Tensor):
        return a.to(device)
    if not a.flags.writeable:  # torch warns on read-only memory; a copy is what it would read
        a = a.copy()
    return torch.from_numpy(a).to(device)


def to_host(t: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array of its own (copied from a device, or detached on the CPU)."""
    return t.detach().cpu().numpy().copy() if t.device.type == "cpu" else t.detach().cpu().numpy()


def positive(value, name: str) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def parse_metric(metric) -> bool:
    """True for ``"l2"``, False for ``"ip"``."""
    if metric == "l2":
        return True
    if metric == "ip":
        return False
    raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")


def hardware_concurrency() -> int:
    return max(os.cpu_count() or 1, 1)


# ------------------------------------------------------------------------------ top-k
INF = float("inf")


def order_ties(keys: torch.Tensor, ids: torch.Tensor):
    """Rows sorted by ``(key, id)``: the result order every engine uses."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    keys, ids = keys.gather(1, by_id), ids.gather(1, by_id)
    by_key = torch.argsort(keys, dim=1, stable=True)
    return keys.gather(1, by_key), ids.gather(1, by_key)


def topk(keys: torch.Tensor, ids: torch.Tensor, k: int):
    """The ``k`` smallest keys of each row and their ids; ``+inf`` keys (no candidate, or one the
    selector refused) come out as padding with id -1."""
    nq, c = keys.shape
    if c < k:
        keys = torch.cat((keys, keys.new_full((nq, k - c), INF)), 1)
        ids = torch.cat((ids, ids.new_full((nq, k - c), -1)), 1)
    vals, pos = torch.topk(keys, k, dim=1, largest=False, sorted=True)
    out = ids.gather(1, pos)
    # torch.topk keeps any of the candidates whose key equals the k-th; the engines keep the
    # smallest ids among them. Rows where more candidates share that key than were kept get
    # their last ranks refilled with the smallest tied ids (cheap: a compare and a count per
    # row, and a second top-k over the few rows that need it).
    last = vals[:, -1:]
    tied_all = (keys == last).sum(1)
    tied_kept = (vals == last).sum(1)
    redo = torch.nonzero((tied_all > tied_kept) & ~torch.isinf(last[:, 0])).squeeze(1)
    if redo.numel():
        sub_keys, sub_ids = keys[redo], ids[redo]
        tied = torch.where(sub_keys == last[redo], sub_ids,
                           torch.full_like(sub_ids, torch.iinfo(torch.int64).max))
        smallest = torch.topk(tied, k, dim=1, largest=False, sorted=True).values
        first_tied = (k - tied_kept[redo])[:, None]
        rank = torch.arange(k, device=keys.device)[None, :]
        refill = smallest.gather(1, (rank - first_tied).clamp_min(0))
        out[redo] = torch.where(rank >= first_tied, refill, out[redo])
    out = torch.where(torch.isinf(vals), torch.full_like(out, -1), out)
    return vals, out


def merge_topk(best, keys, ids, k):
    """Merge a batch's candidates into a running top-k (``best``: None or (keys, ids))."""
    if best is not None:
        keys, ids = torch.cat((best[0], keys), 1), torch.cat((best[1], ids), 1)
    return topk(keys, ids, k)


def finish(keys: torch.Tensor, ids: torch.Tensor, l2: bool):
    """``(D, I)`` on the host from search keys: ties ordered by id, IP keys negated back."""
    keys, ids = order_ties(keys, ids)
    D = keys if l2 else -keys
    return to_host(D.to(torch.float32)), to_host(ids.to(torch.int64))


def empty_result(nq: int, k: int, l2: bool):
    return (np.full((nq, k), np.inf if l2 else -np.inf, dtype=np.float32),
            np.full((nq, k), -1, dtype=np.int64))


class RangeCollector:
    """Range results of one call, query by query batch; more than ``max_results`` results in all
    raise ValueError (as the other engines do)."""

    def __init__(self, nq: int, radius: float, l2: bool, max_results: int, device):
        self.nq, self.radius, self.l2, self.cap = nq, float(radius), l2, int(max_results)
        self.device = device
        self.parts, self.count = [], 0

    def keep(self, keys: torch.Tensor, ids: torch.Tensor, first_query: int, queries=None) -> None:
        """Candidates of queries ``first_query ..`` (one row each), or of the queries ``queries``
        (one per row): those within the radius stay. The radius is compared as a double."""
        dist = keys if self.l2 else -keys
        inside = ~torch.isinf(keys) & ((dist.double() < self.radius) if self.l2
                                       else (dist.double() > self.radius))
        row, col = torch.nonzero(inside, as_tuple=True)
        owner = row + first_query if queries is None else queries[row]
        self.count += int(row.numel())
        if self.count > self.cap:
            raise ValueError(f"range search found more than max_results = {self.cap} results; "
                             "lower the radius, search fewer queries at a time, or allow more "
                             "with max_results")
        if row.numel():
            self.parts.append((owner, keys[row, col], ids[row, col]))

    def keep_pairs(self, queries: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Candidates given as (query, key, id) triples: those within the radius stay."""
        self.keep(keys[:, None], ids[:, None], 0, queries)

    def result(self):
        if not self.parts:
            return (np.zeros(self.nq + 1, dtype=np.int64), np.empty(0, dtype=np.float32),
                    np.empty(0, dtype=np.int64))
        q = torch.cat([p[0] for p in self.parts])
        keys = torch.cat([p[1] for p in self.parts])
        ids = torch.cat([p[2] for p in self.parts])
        # Stable sorts, least significant first, give the order (query, key, id).
        order = torch.argsort(ids, stable=True)
        q, keys, ids = q[order], keys[order], ids[order]
        order = torch.argsort(keys, stable=True)
        q, keys, ids = q[order], keys[order], ids[order]
        order = torch.argsort(q, stable=True)
        q, keys, ids = q[order], keys[order], ids[order]
        lims = torch.zeros(self.nq + 1, dtype=torch.int64, device=q.device)
        lims[1:] = torch.cumsum(torch.bincount(q, minlength=self.nq), 0)
        D = keys if self.l2 else -keys
        return to_host(lims), to_host(D.to(torch.float32)), to_host(ids)


def query_batches(costs: torch.Tensor, limit: int):
    """Consecutive query ranges ``(begin, end)`` whose rows times their largest cost stay
    within ``limit`` (at least one query each). ``costs``: int64, one per query."""
    costs = costs.cpu().numpy()
    n, begin = costs.shape[0], 0
    while begin < n:
        end, widest = begin + 1, max(int(costs[begin]), 1)
        while end < n:
            wider = max(widest, int(costs[end]))
            if (end + 1 - begin) * wider > limit:
                break
            end, widest = end + 1, wider
        yield begin, end
        begin = end


def finite_bound(max_abs) -> float:
    max_abs = float(max_abs)
    if math.isnan(max_abs) or max_abs < 0:
        raise ValueError(f"max_abs must be >= 0, got {max_abs}")
    return max_abs
