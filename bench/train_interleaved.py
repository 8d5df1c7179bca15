"""pqkit vs faiss training (k-means and PQ codebooks), timed in alternation in one process.

    python bench/train_interleaved.py --dataset glove-50-angular --k 1024 --M 10

Both libraries train on the same sample of the base vectors with the same number of centroids,
iterations and sample cap (no subsampling below ``--n-train``), ``--rounds`` times in turn,
``--threads`` each. Two jobs: coarse k-means (``pqkit.KMeans`` / ``faiss.Kmeans``) and PQ
codebooks (``pqkit.ProductQuantizer`` / ``faiss.ProductQuantizer``, 8-bit). Prints, per job, the
minimum and median seconds, the ratio of the minima and the median of the per-round ratios
(> 1: pqkit is faster), and the quality each reached: the k-means objective (sum of squared
distances to the nearest centroid at the last assignment) and the PQ reconstruction error
(mean squared error of decode(encode(x)) on the sample). faiss's k-means runs on its BLAS, so
``FAISS_SIMD_LEVEL`` barely matters here; the level is printed all the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="glove-50-angular", help="a bench/datasets.py name")
    parser.add_argument("--n-train", type=int, default=200_000, help="training sample (first rows of the base)")
    parser.add_argument("--k", type=int, default=1024, help="k-means centroids (an IVF's nlist)")
    parser.add_argument("--M", type=int, default=10, help="PQ subquantizers (8-bit); 0 skips the PQ job")
    parser.add_argument("--niter", type=int, default=10, help="Lloyd iterations, both jobs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.n_train, args.k, args.niter, args.threads, args.rounds) < 1 or args.M < 0:
        parser.error("--n-train, --k, --niter, --threads, --rounds must be >= 1 and --M >= 0")

    import datasets
    import faiss

    import pqkit

    faiss.omp_set_num_threads(args.threads)
    pqkit.set_num_threads(args.threads)
    ds = datasets.load(args.dataset)
    x = np.ascontiguousarray(ds.base[:args.n_train], dtype=np.float32)
    n, d = x.shape
    if args.M and d % args.M:
        parser.error(f"--M must divide the dimension {d}, got {args.M}")
    cap = 10**9  # train on the whole sample in both libraries

    def pqkit_kmeans():
        km = pqkit.KMeans(d, args.k, niter=args.niter, seed=1234, max_points_per_centroid=cap)
        km.train(x)
        return float(km.objective)

    def faiss_kmeans():
        km = faiss.Kmeans(d, args.k, niter=args.niter, seed=1234, max_points_per_centroid=cap)
        km.train(x)
        return float(km.obj[-1])

    def pqkit_pq():
        pq = pqkit.ProductQuantizer(d, args.M, nbits=8, niter=args.niter, seed=1234)
        pq.train(x)
        return pq

    def faiss_pq():
        pq = faiss.ProductQuantizer(d, args.M, 8)
        pq.cp.niter = args.niter
        pq.cp.max_points_per_centroid = cap
        pq.train(x)
        return pq

    def mse(recon):
        return float(((recon.astype(np.float64) - x) ** 2).sum(1).mean())

    jobs = [("k-means", pqkit_kmeans, faiss_kmeans)]
    if args.M:
        jobs.append((f"PQ{args.M}x8", pqkit_pq, faiss_pq))
    level = faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else "unknown"
    print(f"{args.dataset}: {n} x {d} training vectors, k={args.k}, niter={args.niter}, "
          f"{args.threads} thread(s), {args.rounds} rounds; pqkit {pqkit.__version__} ({pqkit.simd_level()}), "
          f"faiss {faiss.__version__} ({level})")
    print("| job | pqkit s (min / median) | faiss s (min / median) | ratio of minima | median round ratio "
          "| pqkit quality | faiss quality |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, ours, theirs in jobs:
        times = {"pqkit": [], "faiss": []}
        quality = {}
        for r in range(args.rounds):
            order = [("pqkit", ours), ("faiss", theirs)]
            for lib, fn in (order if r % 2 == 0 else order[::-1]):
                seconds, out = _timed(fn)
                times[lib].append(seconds)
                if lib not in quality:
                    if name == "k-means":
                        quality[lib] = out
                    elif lib == "pqkit":
                        quality[lib] = mse(out.decode(out.encode(x)))
                    else:
                        quality[lib] = mse(out.decode(out.compute_codes(x)))
        ours_t, theirs_t = np.array(times["pqkit"]), np.array(times["faiss"])
        label = "objective" if name == "k-means" else "recon. MSE"
        print(f"| {name} | {ours_t.min():.2f} / {np.median(ours_t):.2f} | {theirs_t.min():.2f} / "
              f"{np.median(theirs_t):.2f} | **{theirs_t.min() / ours_t.min():.2f}** | "
              f"{np.median(theirs_t / ours_t):.2f} | {label} {quality['pqkit']:.5g} | {quality['faiss']:.5g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
