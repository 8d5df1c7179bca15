"""Make the built-in PatchCore sample set (``src/pqkit/patchcore/sample``), deterministically.

    python bench/patchcore/make_sample.py            # rewrites src/pqkit/patchcore/sample
    python bench/patchcore/make_sample.py --check    # exit 1 if the shipped files differ

A tiny category in the MVTec AD layout, drawn to look like a ground surface (a smooth
brightness field, grinding streaks along the rows, grain): 10 normal training images, 4 normal
test images, 3 with a blowhole (a dark pit with a lighter rim) and 3 with a crack (a dark
polyline), each defect with its binary mask; 128x128 grayscale PNG, about 150 KB in all.

Every number comes from an integer hash of (image, purpose, position), and the shapes are drawn
with Pillow's integer rasteriser, so the pixels are the same on every platform and every NumPy
version (no floating-point or random-stream dependence).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "pqkit", "patchcore", "sample")
COUNTS = {"train/good": 10, "test/good": 4, "test/blowhole": 3, "test/crack": 3}


def hash32(*keys) -> np.ndarray:
    """An integer hash of NumPy integer arrays (or ints), uint32, the same everywhere."""
    h = np.uint32(2166136261)
    with np.errstate(over="ignore"):
        for key in keys:
            h = (h ^ np.asarray(key).astype(np.uint32)) * np.uint32(16777619)
            h ^= h >> np.uint32(15)
            h *= np.uint32(2246822519)
            h ^= h >> np.uint32(13)
    return np.asarray(h, dtype=np.uint32)


def pick(image_id: int, purpose: int, low: int, high: int) -> int:
    """A hashed integer in [low, high]."""
    return low + int(hash32(image_id, purpose)) % (high - low + 1)


def surface(image_id: int) -> np.ndarray:
    """A normal surface: smooth field (bilinear over a 9x9 grid), row streaks, grain; uint8 (128, 128)."""
    step = SIZE // 8
    gy, gx = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    coarse = 105 + (hash32(image_id, 1, gy, gx) % 31).astype(np.int64)  # (9, 9) in [105, 135]
    y = np.arange(SIZE)
    i, f = y // step, y % step
    # separable bilinear interpolation in integers: rows, then columns, each weighted in 16ths
    rows = coarse[i] * (step - f)[:, None] + coarse[i + 1] * f[:, None]  # (128, 9), scaled by 16
    field = rows[:, i] * (step - f)[None, :] + rows[:, i + 1] * f[None, :]  # (128, 128), scaled by 256
    field //= step * step
    streaks = (hash32(image_id, 2, y) % 9).astype(np.int64) - 4  # one offset per row
    yy, xx = np.meshgrid(y, y, indexing="ij")
    grain = (hash32(image_id, 3, yy, xx) % 11).astype(np.int64) - 5
    return np.clip(field + streaks[:, None] + grain, 0, 255).astype(np.uint8)


def blowhole(image: Image.Image, mask: Image.Image, image_id: int) -> None:
    radius = pick(image_id, 10, 4, 7)
    cy, cx = pick(image_id, 11, 20, SIZE - 20), pick(image_id, 12, 20, SIZE - 20)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    ImageDraw.Draw(image).ellipse(box, fill=45, outline=170, width=1)
    ImageDraw.Draw(mask).ellipse(box, fill=255)


def crack(image: Image.Image, mask: Image.Image, image_id: int) -> None:
    x, y = pick(image_id, 20, 16, 40), pick(image_id, 21, 16, SIZE - 16)
    points = [(x, y)]
    for segment in range(4):
        x += pick(image_id, 22 + 2 * segment, 10, 20)
        y = min(SIZE - 8, max(8, y + pick(image_id, 23 + 2 * segment, -12, 12)))
        points.append((x, y))
    ImageDraw.Draw(image).line(points, fill=50, width=2)
    ImageDraw.Draw(mask).line(points, fill=255, width=4)


def make_sample(out: str) -> list:
    """Write the sample set into ``out``; return the written paths (relative to ``out``)."""
    written = []

    def save(relative: str, pixels: Image.Image) -> None:
        path = os.path.join(out, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels.save(path, optimize=True)
        written.append(relative)

    image_id = 0
    for folder, count in COUNTS.items():
        defect = folder.split("/")[1]
        for index in range(count):
            image_id += 1
            image = Image.fromarray(surface(image_id))
            if defect != "good":
                mask = Image.new("L", (SIZE, SIZE), 0)
                (blowhole if defect == "blowhole" else crack)(image, mask, image_id)
                save(f"ground_truth/{defect}/{index:03d}_mask.png", mask)
            save(f"{folder}/{index:03d}.png", image)
    return written


def differences(shipped: str, fresh: str, names: list) -> list:
    """Names whose pixels differ between two sample folders (or that are missing)."""
    out = []
    for name in names:
        a, b = os.path.join(shipped, name), os.path.join(fresh, name)
        if not os.path.isfile(a) or not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))):
            out.append(name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=SAMPLE, help="folder to write (default: the package's sample folder)")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as fresh:
            bad = differences(args.out, fresh, make_sample(fresh))
        print("sample set up to date" if not bad else f"differs: {', '.join(bad)}")
        return 1 if bad else 0
    names = make_sample(args.out)
    total = sum(os.path.getsize(os.path.join(args.out, name)) for name in names)
    print(f"wrote {len(names)} files, {total / 1024:.0f} KB, into {os.path.normpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
