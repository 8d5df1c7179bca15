"""Write GloVe-50 as float16 to ``bench/gpu/data/glove50_f16.npy`` (40 MB, an ignored folder), so
that it travels to a GPU machine without network access (``bench/gpu/README.md``).

    python bench/gpu/prepare.py

float16 keeps about 3 significant digits of each coordinate; ``bench/gpu/run.py`` restores
float32 and normalises the rows, so the data set is GloVe-50 up to that rounding (the ground
truth is computed on the same restored vectors, so recall is exact for them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))


def main() -> int:
    from pqkit.datasets import load_glove50

    vectors = load_glove50(normalize=False).astype(np.float16)
    out = HERE / "data" / "glove50_f16.npy"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, out)
    print(f"{out}: {vectors.shape}, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
