"""OPQ parity with faiss on Fashion-MNIST: the same OPQ{M}_{d_out} + PQ{M} pipeline trained in
both libraries on the same vectors; 10-recall@10 against exact search.

    python bench/compat/opq_parity.py [--niter 10] [--seeds 1 2]

Prints one line per seed and the mean; also the PCA-only baseline at the same d_out.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pqkit


def recall(I, truth):
    return float(np.mean([np.intersect1d(a, b).size / truth.shape[1] for a, b in zip(I, truth)]))


def main(argv=None):
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--d-out", type=int, default=64)
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    base, queries, _ = pqkit.datasets.load_fashion_mnist()
    rng = np.random.default_rng(0)
    base = base[rng.choice(base.shape[0], args.n, replace=False)]
    queries = queries[rng.choice(queries.shape[0], args.queries, replace=False)]
    train = base[: args.train]
    exact = pqkit.IndexFlat(784)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        opq = faiss.OPQMatrix(784, args.M, args.d_out)
        opq.niter, opq.max_train_points = args.niter, args.train
        theirs = faiss.IndexPreTransform(opq, faiss.IndexPQ(args.d_out, args.M, 8))
        faiss.downcast_index(theirs.index).pq.cp.seed = seed
        theirs.train(train)
        theirs.add(base)
        t_faiss = time.perf_counter() - start
        start = time.perf_counter()
        ours = pqkit.IndexPreTransform(
            pqkit.OPQ(784, args.M, args.d_out, niter=args.niter, max_train_points=args.train,
                      seed=seed),
            pqkit.IndexPQ(args.d_out, args.M, 8, seed=seed))
        ours.train(train)
        ours.add(base)
        t_ours = time.perf_counter() - start
        pca = pqkit.IndexPreTransform(pqkit.PCA(784, args.d_out),
                                      pqkit.IndexPQ(args.d_out, args.M, 8, seed=seed))
        pca.train(train)
        pca.add(base)
        row = (recall(theirs.search(queries, 10)[1], truth), recall(ours.search(queries, 10)[1],
               truth), recall(pca.search(queries, 10)[1], truth))
        results.append(row)
        print(f"seed {seed}: faiss OPQ {row[0]:.4f} ({t_faiss:.1f} s)  pqkit OPQ {row[1]:.4f} "
              f"({t_ours:.1f} s)  pqkit PCA only {row[2]:.4f}", flush=True)
    mean = np.mean(results, axis=0)
    print(f"mean: faiss OPQ {mean[0]:.4f}  pqkit OPQ {mean[1]:.4f}  gap {mean[1] - mean[0]:+.4f}"
          f"  PCA only {mean[2]:.4f}")


if __name__ == "__main__":
    main()
