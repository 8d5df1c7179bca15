"""Recall per bit: anisotropic PQ against plain PQ, OPQ and ScaNN at equal code size.

    python bench/anisotropic.py [--quick] [--threshold 0.2] [--out bench/results/raw/anisotropic.json]

On GloVe-50 (``bench/datasets.py``: unit rows, searched by inner product, which ranks as cosine
and as L2) every method encodes the whole base at the same code size and scores every code
(no inverted file, no re-ranking), so recall measures the quantizer alone:

* ``pq``: ``pqkit.IndexPQ`` (k-means codebooks, nearest-centroid codes);
* ``pq-aniso``: the same with ``anisotropic_eta = pqkit.anisotropic_eta(50, threshold)``;
* ``opq`` / ``opq-aniso``: both behind a ``pqkit.OPQ`` rotation (``IndexPreTransform``);
* ``scann`` / ``scann-plain``: ScaNN's asymmetric hashing without a tree or re-ordering (4-bit
  blocks of ``50 / M`` dimensions: the bytes of ``PQ{M}x4``), with the same threshold and
  without the anisotropic loss.

Recall: ``10-recall@10`` (true top-10 among the 10 returned) and ``10-recall@100`` (among 100, what
a re-ranking stage would start from), against the exact top-10. Nothing is timed. The raw rows
are written first (JSON); ``bench/report.py --docs`` draws the table of ``docs/performance.md``
from them. ``--quick``: the 10,000-row GloVe sample and 500 queries, one code size (a test runs
it). The full run trains on at most 65,536 vectors per quantizer (the default cap) and encodes
390,000; it takes a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import datasets  # noqa: E402  (bench/datasets.py)
from adapters import ScannIndex, availability  # noqa: E402

DATASET = "glove-50-angular"
METHODS = ("pq", "pq-aniso", "opq", "opq-aniso", "scann", "scann-plain")
SHAPES = {"full": ((25, 4), (50, 4)), "quick": ((25, 4),)}  # (M, nbits): 13 and 25 bytes


def build_pqkit(method: str, d: int, M: int, nbits: int, eta: float, opq_niter: int):
    import pqkit

    index = pqkit.IndexPQ(d, M, nbits, "cosine",
                          anisotropic_eta=eta if method.endswith("-aniso") else None)
    if method.startswith("opq"):
        index = pqkit.IndexPreTransform(pqkit.OPQ(d, M, nbits=nbits, niter=opq_niter), index)
    return index


def recalls(found: np.ndarray, truth: np.ndarray) -> dict:
    """10-recall@10 and 10-recall@100 of ``found`` (nq, >= 100 ids) against ``truth`` (nq, >= 10)."""
    top = truth[:, :10]
    at = {}
    for k in (10, 100):
        hits = [np.intersect1d(row[:k], true).size for row, true in zip(found, top)]
        at[f"recall_10_at_{k}"] = float(np.mean(hits) / 10)
    return at


def run_one(method: str, data, M: int, nbits: int, threshold: float, eta: float, quick: bool) -> dict:
    d = data.base.shape[1]
    row = {"method": method, "M": M, "nbits": nbits, "code_bytes": (M * nbits + 7) // 8}
    if method.startswith("scann"):
        ok, why = availability("scann")
        if not ok:
            return {**row, "error": why}
        adapter = ScannIndex(None, dims_per_block=d // M,
                             aq_threshold=threshold if method == "scann" else None, reorder=None,
                             metric="ip")
        adapter.fit(data.base)
        found = adapter.query(data.queries, 100)
        row["config"] = adapter.describe()["config"]
    else:
        index = build_pqkit(method, d, M, nbits, eta, opq_niter=5 if quick else 25)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the quick sample is small for k-means
            index.train(data.base)
        index.add(data.base)
        found = index.search(data.queries, 100)[1]
        row["config"] = (f"{'OPQ' + str(M) + ',' if method.startswith('opq') else ''}PQ{M}x{nbits}"
                         + (f",eta={eta:.3g}" if method.endswith("-aniso") else ""))
    return {**row, **recalls(found, data.ground_truth)}


def table(rows: list[dict]) -> str:
    lines = [f"{'method':<12} {'bytes':>5} {'config':<34} {'10@10':>6} {'10@100':>6}"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['method']:<12} {row['code_bytes']:>5} {'unavailable: ' + row['error']}")
        else:
            lines.append(f"{row['method']:<12} {row['code_bytes']:>5} {row['config']:<34} "
                         f"{row['recall_10_at_10']:>6.3f} {row['recall_10_at_100']:>6.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 10,000-row sample, one code size")
    parser.add_argument("--threshold", type=float, default=0.2,
                        help="score threshold T of the anisotropic loss (pqkit and ScaNN; default 0.2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--shapes", nargs="+", default=None, metavar="MxNBITS",
                        help="PQ shapes, e.g. 25x4 (13 bytes) 50x4 (25 bytes); default both (25x4 with --quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/raw/anisotropic.json (anisotropic_quick.json with --quick)")
    args = parser.parse_args(argv)

    import pqkit

    quick = args.quick
    out = args.out or ROOT / "bench" / "results" / "raw" / (
        "anisotropic_quick.json" if quick else "anisotropic.json")
    data = datasets.load(DATASET, small=quick)
    d = data.base.shape[1]
    eta = pqkit.anisotropic_eta(d, args.threshold)
    shapes = SHAPES["quick" if quick else "full"]
    if args.shapes:
        try:
            shapes = [tuple(int(part) for part in shape.split("x")) for shape in args.shapes]
        except ValueError:
            parser.error(f"--shapes takes MxNBITS values such as 25x4, got {args.shapes}")
        if any(len(shape) != 2 or d % shape[0] for shape in shapes):
            parser.error(f"--shapes: M must divide d={d} and each value be MxNBITS, got {args.shapes}")
    raw = {"meta": {"dataset": data.name, "n_base": int(len(data.base)), "n_queries": int(len(data.queries)),
                    "threshold": args.threshold, "eta": eta, "pqkit": pqkit.__version__,
                    "python": platform.python_version(), "quick": quick},
           "rows": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    for M, nbits in shapes:
        for method in args.methods:
            raw["rows"].append(run_one(method, data, M, nbits, args.threshold, eta, quick))
            print(table(raw["rows"][-1:]).splitlines()[-1], flush=True)
            # every row stored as it completes: an interrupted run keeps what it measured
            partial = out.with_name(out.name + ".partial")
            partial.write_text(json.dumps(raw, indent=1) + "\n")
            partial.replace(out)
    print(table(raw["rows"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
