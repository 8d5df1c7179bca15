"""Range search speed: pqkit's ``range_search`` against faiss's on the very same index.

    python bench/range.py [--quick] [--index IVF1024,PQ25x8] [--nprobe 16] [--queries 1000]
                          [--repeats 7] [--threads 1] [--out bench/results/raw/range.json]

On GloVe-50 (``bench/datasets.py``'s base and queries) faiss trains and fills the index and
``pqkit.from_faiss`` loads the same one (centroids, codebooks, codes, lists), so only the search
differs. The radii are the median over queries of the 1st, 10th and 100th nearest distances
(from a top-100 search of the same index); the result counts per radius are stored and printed
(queries in dense regions find many more). Each library searches
the same batch at each radius, alternating, every repeat's seconds stored raw first (JSON), with
both result counts and the number of (query, id) pairs they disagree on (float near the radius
only). ``--quick`` runs a 10,000-row base once: a correctness run, not a timing. Needs faiss-cpu
and the GloVe package.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from filtered import build, load_glove  # noqa: E402  (bench/filtered.py: the same index)

RANKS = (1, 10, 100)


def pairs(lims, I) -> set:
    return {(q, int(i)) for q in range(len(lims) - 1) for i in I[lims[q]:lims[q + 1]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small correctness run, not a timing")
    parser.add_argument("--index", default=None, help="faiss factory string (default IVF1024,PQ25x8)")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--queries", type=int, default=None, help="default 1000 (50 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 7 (1 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/raw/range.json (range_quick.json with --quick)")
    args = parser.parse_args(argv)

    import faiss

    import pqkit

    quick = args.quick
    description = args.index or ("IVF64,PQ25x8" if quick else "IVF1024,PQ25x8")
    n_queries = args.queries or (50 if quick else 1000)
    repeats = args.repeats or (1 if quick else 7)
    out = args.out or ROOT / "bench" / "results" / "raw" / ("range_quick.json" if quick else "range.json")
    faiss.omp_set_num_threads(args.threads)
    pqkit.set_num_threads(args.threads)
    base, queries = load_glove(quick)
    queries = queries[:n_queries]
    theirs, ours = build(faiss, pqkit, base, description, min(len(base), 100_000))
    theirs.nprobe = args.nprobe
    ours.nprobe = args.nprobe
    D, _ = ours.search(queries, 100)
    radii = [float(np.median(D[:, rank - 1])) for rank in RANKS]
    rows = []
    for rank, radius in zip(RANKS, radii):
        seconds = {"pqkit": [], "faiss": []}
        results = {}
        for _ in range(repeats + 1):  # the first round warms up, untimed
            for name in ("pqkit", "faiss"):
                start = time.perf_counter()
                if name == "pqkit":
                    lims, _, I = ours.range_search(queries, radius)
                else:
                    lims, _, I = theirs.range_search(queries, radius)
                seconds[name].append(time.perf_counter() - start)
                results[name] = (np.asarray(lims), np.asarray(I))
        for name in seconds:
            seconds[name] = seconds[name][1:]
        ours_pairs, their_pairs = pairs(*results["pqkit"]), pairs(*results["faiss"])
        rows.append({"rank": rank, "radius": radius, "seconds": seconds, "queries": len(queries),
                     "results": {"pqkit": len(ours_pairs), "faiss": len(their_pairs)},
                     "disagreements": len(ours_pairs ^ their_pairs)})
    meta = {"dataset": "glove-50-angular", "index": description, "ntotal": int(ours.ntotal),
            "nprobe": args.nprobe, "queries": len(queries), "repeats": repeats, "threads": args.threads,
            "quick": quick, "pqkit": pqkit.__version__, "pqkit_simd_level": pqkit.simd_level(),
            "faiss": faiss.__version__, "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"raw results: {out}")
    for row in rows:
        med = {name: float(np.median(s)) / row["queries"] * 1e6 for name, s in row["seconds"].items()}
        print(f"radius of rank {row['rank']:>3} ({row['radius']:.4f}): pqkit {med['pqkit']:.1f} us/query, "
              f"faiss {med['faiss']:.1f} ({med['faiss'] / med['pqkit']:.2f}x); results "
              f"{row['results']['pqkit']} / {row['results']['faiss']}, disagreements {row['disagreements']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
