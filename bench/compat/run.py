"""Notebook classes (NumPy loops, scikit-learn / faiss k-means) vs pqkit.compat, same data.

Extracts ``CustomIndexPQ`` (scikit-learn KMeans version) and ``CustomIndexIVFPQ`` (faiss.Kmeans
version, the notebook's last) from the seed notebook text, runs both implementations on the
same Fashion-MNIST subset reduced to 128-d by PCA (the notebook's setting: d=128, m=8, nbits=8,
nlist=100, nprobe=1), and prints train / add / search times and recall@5 as the notebook
measures it (the nearest non-self neighbour found among ranks 1..5; queries are database rows).

    python bench/compat/run.py --seed-file ../shared/seeds/003_aded7d5aa285ab48.txt

Results are written to bench/results/compat.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

import pqkit
from pqkit.compat import CustomIndexIVFPQ, CustomIndexPQ


def notebook_classes(seed_text: str) -> dict:
    """Exec the notebook's class cells and return {name: class}."""
    cells = re.split(r"\n(?=In \[[0-9 ]*\]:\n)", seed_text)
    # calculate_distances reads the global ``m`` (the notebook defined m = 8 at top level).
    namespace: dict = {"m": 8}
    pq_cell = next(c for c in cells if "class CustomIndexPQ:" in c)
    ivf_cells = [c for c in cells if "class CustomIndexIVFPQ:" in c and "faiss.Kmeans(d, nlist" in c]
    for cell in (pq_cell, ivf_cells[-1]):
        code = cell.split("\n", 1)[1]
        code = re.split(r"\n\n+#{1,6} ", code)[0]  # a markdown cell follows the code
        exec(compile(code, "<notebook>", "exec"), namespace)
    return {"CustomIndexPQ": namespace["CustomIndexPQ"],
            "CustomIndexIVFPQ": namespace["CustomIndexIVFPQ"]}


def recall_at_5(I, gt_first):
    return float((np.asarray(I)[:, 1:6] == gt_first[:, None]).sum() / len(I))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(classes, x, queries_rows, gt_first):
    rows = []
    for label, impl in (("notebook", classes), ("pqkit.compat", {
            "CustomIndexPQ": CustomIndexPQ, "CustomIndexIVFPQ": CustomIndexIVFPQ})):
        pq = impl["CustomIndexPQ"](128, 8, 8)
        _, t_train = timed(lambda: pq.train(x))
        _, t_add = timed(lambda: pq.add(x))
        (_, I), t_search = timed(lambda: pq.search(x[queries_rows], 6))
        rows.append({"impl": label, "class": "CustomIndexPQ", "train_s": t_train, "add_s": t_add,
                     "search_s": t_search, "recall_at_5": recall_at_5(I, gt_first)})
        ivf = impl["CustomIndexIVFPQ"](128, 8, 100, 8)
        _, t_train = timed(lambda: ivf.train(x))
        _, t_add = timed(lambda: ivf.add(x))
        (found), t_search = timed(lambda: [ivf.search(q.reshape(1, -1), 6)[1]
                                           for q in x[queries_rows]])
        rows.append({"impl": label, "class": "CustomIndexIVFPQ", "train_s": t_train,
                     "add_s": t_add, "search_s": t_search,
                     "recall_at_5": recall_at_5(np.array(found, dtype=np.int64), gt_first)})
        print(rows[-2], "\n", rows[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-file", required=True, type=Path)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/compat.json"))
    args = parser.parse_args(argv)
    from sklearn.decomposition import PCA

    base, _, _ = pqkit.datasets.load_fashion_mnist()
    rng = np.random.default_rng(0)
    x = PCA(128, svd_solver="covariance_eigh").fit_transform(
        base[rng.choice(base.shape[0], args.n, replace=False)]).astype(np.float32)
    queries_rows = rng.choice(args.n, args.queries, replace=False)
    exact = pqkit.IndexFlat(128)
    exact.add(x)
    gt_first = exact.search(x[queries_rows], 2)[1][:, 1]
    rows = run(notebook_classes(args.seed_file.read_text()), x, queries_rows, gt_first)
    args.out.write_text(json.dumps({"n": args.n, "queries": args.queries, "rows": rows},
                                   indent=1))
    print("| class | impl | train s | add s | search s (%d single queries) | recall@5 |"
          % args.queries)
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['class']} | {r['impl']} | {r['train_s']:.2f} | {r['add_s']:.3f} | "
              f"{r['search_s']:.3f} | {r['recall_at_5']:.3f} |")


if __name__ == "__main__":
    main()
