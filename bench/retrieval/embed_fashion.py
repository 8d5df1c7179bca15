"""Embed all 70,000 Fashion-MNIST images with EfficientNet-Lite0 and cache them (step 1 of the table).

    python bench/retrieval/embed_fashion.py [--size 32] [--cache /tmp/pqkit_retrieval]

Writes ``<cache>/fashion_efficientnet_lite0_<size>.npz`` (no pickle) holding ``base`` (60000, 1280)
and ``queries`` (10000, 1280) float32 embeddings (not normalised), their ``base_labels`` /
``query_labels`` and ``seconds_per_image`` (wall time of the whole run / 70,000: decoding,
resizing and the network, batch 256, CPU). An existing cache file is reused unless ``--force``.

The 28x28 grayscale images are replicated to RGB and resized to ``size`` (32 by default, so the
70k images take minutes, not an hour, on two CPU cores; the final feature map is then 1x1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pqkit.datasets import load_fashion_mnist
from pqkit.retrieval.images import CNNEmbedder

DEFAULT_CACHE = Path("/tmp/pqkit_retrieval")


def cache_path(cache: Path, size: int) -> Path:
    return Path(cache) / f"fashion_efficientnet_lite0_{size}.npz"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    out = cache_path(args.cache, args.size)
    if out.exists() and not args.force:
        print(f"cached: {out}")
        return out
    args.cache.mkdir(parents=True, exist_ok=True)
    base, queries, (base_labels, query_labels) = load_fashion_mnist()
    images = np.concatenate([base, queries]).reshape(-1, 28, 28).astype(np.uint8)
    embedder = CNNEmbedder(size=args.size, batch_size=args.batch_size, progress=True)
    embedder.model  # load the weights before the clock starts
    start = time.perf_counter()
    vectors = embedder(images)
    seconds = time.perf_counter() - start
    np.savez(out, base=vectors[:60000], queries=vectors[60000:], base_labels=base_labels,
             query_labels=query_labels, seconds_per_image=np.float64(seconds / len(images)),
             size=np.int64(args.size))
    print(json.dumps({"file": str(out), "images": len(images), "seconds": seconds,
                      "ms_per_image": 1e3 * seconds / len(images)}))
    return out


if __name__ == "__main__":
    main()
