"""Write Fashion-MNIST images as PNG files in class subfolders, to try the web demo on real images.

    python bench/retrieval/make_demo_folder.py /tmp/fashion-demo --per-class 100
    pqkit retrieve index /tmp/fashion-demo --out /tmp/fashion-demo.gallery --size 64
    pqkit retrieve serve /tmp/fashion-demo.gallery

Images come from the Fashion-MNIST training split (Debian package ``dataset-fashion-mnist``),
the first ``--per-class`` of each class, as ``<out>/<class name>/<training row>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pqkit.datasets import load_fashion_mnist

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args(argv)
    base, _, (labels, _) = load_fashion_mnist()
    for label, name in enumerate(CLASS_NAMES):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for row in np.flatnonzero(labels == label)[:args.per_class]:
            Image.fromarray(base[row].reshape(28, 28).astype(np.uint8)).save(folder / f"{row:05d}.png")
    print(f"wrote {10 * args.per_class} images under {args.out}")


if __name__ == "__main__":
    main()
