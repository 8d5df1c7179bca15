"""Per-call cost of a single-query search on a tiny index: pqkit against faiss, where the kernel's
work is negligible and what is left is the Python call, its checks and the result arrays.

    python bench/call_overhead.py [--quick] [--calls 20000] [--repeats 7]
                                  [--out bench/results/raw/call_overhead.json]

Each case builds the same index in both libraries on ``--n`` (default 100) seeded Gaussian
vectors of d = 128 (``IndexFlat``; ``IVF16,PQ32x4`` nprobe 1, and the same re-ranked exactly,
``,RFlat`` with k_factor 4, on 5,000 vectors: the lists need training), one thread each. A repeat
times ``--calls`` back-to-back ``search(q, 10)`` calls of one query per library, the libraries
alternating within each repeat after an untimed warm-up; the raw seconds of every repeat are
stored, the medians and ratios printed. ``--quick`` is a correctness run (few calls), not a timing.
``bench/report.py --docs`` draws the table of docs/performance.md from the raw file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "raw" / "call_overhead.json"
D, K = 128, 10
#: (label, factory string, vectors, nprobe, k_factor)
CASES = [("IndexFlat", "Flat", None, None, None),
         ("IVF-PQ", "IVF16,PQ32x4", 5000, 1, None),
         ("IVF-PQ re-ranked", "IVF16,PQ32x4,RFlat", 5000, 1, 4)]


def build(lib: str, description: str, data: np.ndarray, nprobe, k_factor):
    if lib == "pqkit":
        import pqkit

        index = pqkit.index_factory(D, description)
        index.n_threads = 1
    else:
        import faiss

        index = faiss.index_factory(D, description)
    index.train(data)
    index.add(data)
    if nprobe is not None:
        if lib == "pqkit":
            (index.base_index if k_factor else index).nprobe = nprobe
        else:
            import faiss

            faiss.extract_index_ivf(index).nprobe = nprobe
    if k_factor is not None:
        index.k_factor = k_factor
    return index


def time_calls(index, query: np.ndarray, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        index.search(query, K)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a correctness run, not a timing")
    parser.add_argument("--n", type=int, default=100, help="vectors of the IndexFlat case")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import faiss
    import pqkit

    calls, repeats = (200, 1) if args.quick else (args.calls, args.repeats)
    out = args.out or (OUT.with_name("call_overhead_quick.json") if args.quick else OUT)
    faiss.omp_set_num_threads(1)
    pqkit.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for label, description, n, nprobe, k_factor in CASES:
        data = rng.standard_normal((n or args.n, D)).astype(np.float32)
        query = np.ascontiguousarray(data[:1] + np.float32(0.01))
        indexes = {lib: build(lib, description, data, nprobe, k_factor) for lib in ("pqkit", "faiss")}
        ids = {lib: index.search(query, K)[1] for lib, index in indexes.items()}
        seconds = {lib: [] for lib in indexes}
        for lib, index in indexes.items():
            time_calls(index, query, max(1, calls // 10))  # warm-up
        for _ in range(repeats):
            for lib, index in indexes.items():
                seconds[lib].append(time_calls(index, query, calls))
        row = {"case": label, "factory": description, "n": int(data.shape[0]), "d": D, "k": K, "nprobe": nprobe,
               "k_factor": k_factor, "calls": calls, "seconds": seconds,
               "same_ids": bool(np.array_equal(ids["pqkit"], ids["faiss"]))}
        rows.append(row)
        med = {lib: 1e6 * statistics.median(s) / calls for lib, s in seconds.items()}
        print(f"{label:<18} pqkit {med['pqkit']:6.2f} us  faiss {med['faiss']:6.2f} us  "
              f"pqkit/faiss speed {med['faiss'] / med['pqkit']:.2f}x  same ids: {row['same_ids']}")
    raw = {"meta": {"quick": args.quick, "repeats": repeats, "pqkit": pqkit.__version__,
                    "pqkit_simd_level": pqkit.simd_level(), "faiss": faiss.__version__,
                    "faiss_simd_level": faiss.SIMDConfig.get_level_name(), "python": platform.python_version(),
                    "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
           "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {out}")
    return raw


if __name__ == "__main__":
    main()
