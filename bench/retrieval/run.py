"""Step 2 of the retrieval timing table: measure every method on one data set, store raw rows.

    python bench/retrieval/run.py fashion   # EfficientNet-Lite0 embeddings of Fashion-MNIST (step 1 first)
    python bench/retrieval/run.py glove     # GloVe-50 word vectors
    python bench/retrieval/report.py        # step 3: tables and plot from the raw JSON

fashion: gallery = the 60,000 training images, queries = the first 2,000 test images (their labels
give precision@k and mAP@k), embeddings from ``embed_fashion.py``'s cache (its per-image extraction
time is copied into the result). glove: the 400,000 normalised vectors minus 2,000 random rows
(seed 0), which are the queries. k = 10; 200 queries are timed one call each; one thread per
library. Output: ``bench/retrieval/results/<name>.json`` (rows plus a ``meta`` block).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from pqkit.retrieval.timing import timing_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def extraction_cpu_ms(size: int, n: int = 1024) -> dict:
    """Embed n Fashion-MNIST test images again, timing wall clock and process CPU time per image."""
    from pqkit.datasets import load_fashion_mnist
    from pqkit.retrieval.images import CNNEmbedder

    _, queries, _ = load_fashion_mnist()
    images = queries[:n].reshape(-1, 28, 28).astype(np.uint8)
    embedder = CNNEmbedder(size=size, batch_size=256)
    embedder(images[:256])  # warm-up
    start, start_cpu = time.perf_counter(), time.process_time()
    embedder(images)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    import torch

    return {"n": n, "wall_ms": 1e3 * wall / n, "cpu_ms": 1e3 * cpu / n, "torch_threads": torch.get_num_threads()}


def fashion(args):
    import embed_fashion

    cache = embed_fashion.main(["--size", str(args.size), "--cache", str(args.cache)])
    data = np.load(cache, allow_pickle=False)
    cpu_ms = extraction_cpu_ms(int(data["size"]))
    meta = {"dataset": "fashion-mnist-efficientnet-lite0", "image_size": int(data["size"]),
            "extraction_ms_per_image": 1e3 * float(data["seconds_per_image"]),
            "extraction_cpu_ms_per_image": cpu_ms,
            "gallery": "60,000 training images", "queries": f"first {args.n_queries} test images"}
    nq = args.n_queries
    return (data["base"], data["queries"][:nq]), (data["base_labels"], data["query_labels"][:nq]), meta


def glove(args):
    from pqkit.datasets import load_glove50

    vectors = load_glove50(normalize=True)
    rng = np.random.default_rng(0)
    query_rows = rng.choice(vectors.shape[0], args.n_queries, replace=False)
    mask = np.ones(vectors.shape[0], dtype=bool)
    mask[query_rows] = False
    meta = {"dataset": "glove-50", "gallery": f"{int(mask.sum())} word vectors",
            "queries": f"{args.n_queries} random words (seed 0) left out of the gallery",
            "extraction_ms_per_image": None}
    return (vectors[mask], vectors[query_rows]), (None, None), meta


def main(argv=None):
    parser = argparse.ArgumentParser(description="retrieval timing table: one data set")
    parser.add_argument("dataset", choices=("fashion", "glove"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--n-latency", type=int, default=200)
    parser.add_argument("--size", type=int, default=32, help="fashion: CNN input size of the cached embeddings")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pqkit_retrieval"))
    parser.add_argument("--no-faiss", action="store_true")
    args = parser.parse_args(argv)
    (base, queries), (base_labels, query_labels), meta = (fashion if args.dataset == "fashion" else glove)(args)
    start = time.time()
    rows = timing_table(base, queries, args.k, base_labels=base_labels, query_labels=query_labels,
                        n_latency=args.n_latency, include_faiss=not args.no_faiss)
    import pqkit

    try:
        import faiss
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    meta.update({
        "k": args.k, "n": int(base.shape[0]), "d": int(base.shape[1]), "n_queries": int(queries.shape[0]),
        "n_latency": args.n_latency, "threads": 1, "pqkit": pqkit.__version__, "simd": pqkit.simd_level(),
        "faiss": faiss_version, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0], "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(start)),
        "seconds": time.time() - start,
        "note": "taken under load from other work on a shared 2-core VM; compare rows, not machines",
    })
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.dataset}.json"
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
