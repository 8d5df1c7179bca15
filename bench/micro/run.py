"""Scan-kernel micro-benchmark: nanoseconds per PQ code at every SIMD level, next to the memory floor.

    python bench/micro/run.py                    # 512 KiB (L2) and 512 MiB (DRAM) of codes
    python bench/micro/run.py --quick            # fewer repeats, 64 MiB instead of 512 MiB
    python bench/micro/run.py --dram-mib 128     # a machine with little memory
    python bench/micro/run.py --no-faiss         # pqkit only

For M in 8, 16, 32 and nbits in 8, 4, and for two sizes of the code array, one that sits in L2
(``--l2-kib``, 512 KiB) and one that should exceed the last-level cache (``--dram-mib``), it
measures, on one thread:

* ``pqkit.engine._core.micro_scan(M, nbits, n, repeats, level)`` at every level of
  ``pqkit.available_simd_levels()``: seconds per full scan of n random codes in the blocked code
  layout against a random distance table (the scan alone: no table, no top-k);
* ``pqkit.engine._core.micro_memory_read(n * code_bytes, repeats)``: seconds per full read of a buffer
  of as many bytes as the codes, the floor no scan of those codes can beat;
* faiss, unless ``--no-faiss`` or faiss is not installed: one query against n random codes, with
  random codebooks and no training, ``IndexPQ`` for 8-bit and ``IndexPQFastScan`` for 4-bit
  codes, k=10, at the SIMD level faiss picked at import (``FAISS_SIMD_LEVEL`` chooses it). Its
  time includes the distance table and the top-k selection, which are small next to the scan
  for the n used here.

Each cell is ns per code = median seconds over the repeats / n, with the ratio to the floor
(1.00: the scan runs at memory speed). The raw timings go to ``bench/results/micro.json`` first;
the Markdown table ``bench/results/micro.md`` is drawn from them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent.parent
M_VALUES = (8, 16, 32)
NBITS_VALUES = (8, 4)
FAISS_K = 10
REQUIRED_KERNELS = ("micro_scan", "micro_memory_read")


def machine_info() -> dict:
    """``machine_info()`` of ``bench/run.py``, loaded by path (this file is also named run.py)."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH_DIR / "run.py")
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    return bench_run.machine_info()


def cache_sizes() -> dict[str, int]:
    """Data and unified cache sizes of CPU 0 in bytes, e.g. ``{'L1d': 49152, 'L2': ..., 'L3': ...}``."""
    sizes = {}
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = units.get(size[-1], 1)
        sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = int(size.rstrip("KMG")) * scale
    return sizes


def load_core():
    """``pqkit`` and ``pqkit.engine._core``, or exit with what to do when the micro kernels are missing."""
    try:
        import pqkit
        import pqkit.engine._core as core
    except ImportError as error:
        sys.exit(f"cannot import pqkit ({error}): build and install it first (pip install .)")
    missing = [name for name in REQUIRED_KERNELS if not hasattr(core, name)]
    if missing:
        sys.exit(f"pqkit.engine._core ({core.__file__}) has no {' or '.join(missing)}: this build predates the "
                 "micro-benchmark kernels. Rebuild pqkit from a tree whose cpp/python/bindings.cpp exports "
                 f"{' and '.join(REQUIRED_KERNELS)}, then run this again.")
    return pqkit, core


def timing(seconds: list[float], n: int, floor_ns: float | None = None) -> dict:
    """Raw seconds per run, the median in ns per code and, given the floor, the ratio to it."""
    ns_per_code = 1e9 * statistics.median(seconds) / n
    out = {"seconds": list(seconds), "ns_per_code": ns_per_code}
    if floor_ns is not None:
        out["ratio_to_floor"] = ns_per_code / floor_ns
    return out


def random_bytes(rng: np.random.Generator, nbytes: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(nbytes), dtype=np.uint8)


def faiss_index(faiss, M: int, nbits: int, n: int, rng: np.random.Generator):
    """A faiss PQ index of n random codes with random codebooks; nothing is trained or encoded.

    8-bit: ``IndexPQ`` filled through ``add_sa_codes``. 4-bit: ``IndexPQFastScan``, which has no
    ``add_sa_codes``; its code table (blocks of ``bbs`` codes, two 4-bit codes per byte) is filled
    with random bytes directly, since any byte pattern is a valid set of codes.
    """
    d = 2 * M  # two dimensions per sub-quantizer keep the distance table cheap next to the scan
    centroids = rng.standard_normal(d * 2 ** nbits, dtype=np.float32)
    if nbits == 8:
        index = faiss.IndexPQ(d, M, nbits)
        faiss.copy_array_to_vector(centroids, index.pq.centroids)
        index.is_trained = True
        index.add_sa_codes(random_bytes(rng, n * index.code_size).reshape(n, index.code_size))
        return index
    index = faiss.IndexPQFastScan(d, M, nbits)
    faiss.copy_array_to_vector(centroids, index.pq.centroids)
    index.is_trained = True
    n_padded = -(-n // index.bbs) * index.bbs
    nbytes = n_padded * index.M2 // 2
    codes = random_bytes(rng, nbytes)
    index.codes.resize(nbytes)
    faiss.memcpy(index.codes.get(), faiss.swig_ptr(codes), nbytes)
    index.ntotal, index.ntotal2 = n, n_padded
    return index


def faiss_seconds(faiss, M: int, nbits: int, n: int, repeats: int, rng: np.random.Generator) -> list[float]:
    """Wall seconds of one k=10 search of one query against n codes, one per repeat (after a warm-up)."""
    index = faiss_index(faiss, M, nbits, n, rng)
    query = rng.standard_normal((1, index.d), dtype=np.float32)
    index.search(query, FAISS_K)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(query, FAISS_K)
        seconds.append(time.perf_counter() - start)
    return seconds


def load_faiss(enabled: bool):
    """faiss on one thread, or None (not wanted or not installed)."""
    if not enabled:
        return None
    try:
        import faiss
    except ImportError:
        print("faiss is not installed: the faiss column is skipped", flush=True)
        return None
    faiss.omp_set_num_threads(1)
    return faiss


def measure(args) -> dict:
    """Run every (size, M, nbits) cell and return the raw record (written after every cell)."""
    pqkit, core = load_core()
    faiss = load_faiss(not args.no_faiss)
    rng = np.random.default_rng(0)
    levels = list(pqkit.available_simd_levels())
    sizes = {"L2": args.l2_kib << 10, "DRAM": args.dram_mib << 20}
    repeats = {"L2": args.repeats or (20 if args.quick else 200), "DRAM": args.repeats or (3 if args.quick else 10)}
    raw = {
        "machine": machine_info(), "caches": cache_sizes(), "levels": levels,
        "settings": {"quick": args.quick, "sizes": sizes, "repeats": repeats, "faiss_k": FAISS_K},
        "faiss": None if faiss is None else {
            "version": faiss.__version__, "simd_level": faiss.SIMDConfig.get_level_name(),
            "index": {"8": "IndexPQ", "4": "IndexPQFastScan"}},
        "rows": [],
    }
    for size_name, size_bytes in sizes.items():
        for M in M_VALUES:
            for nbits in NBITS_VALUES:
                code_bytes = M * nbits // 8
                n = size_bytes // code_bytes
                runs = repeats[size_name]
                floor = timing(core.micro_memory_read(n * code_bytes, runs), n)
                row = {"size": size_name, "size_bytes": size_bytes, "M": M, "nbits": nbits,
                       "code_bytes": code_bytes, "n": n, "repeats": runs, "floor": floor, "levels": {}}
                for level in levels:
                    try:
                        seconds = core.micro_scan(M, nbits, n, runs, level)
                    except ValueError as error:  # a level the CPU lacks: recorded, not fatal
                        row["levels"][level] = {"error": str(error)}
                        continue
                    row["levels"][level] = timing(seconds, n, floor["ns_per_code"])
                if faiss is not None:
                    row["faiss"] = timing(faiss_seconds(faiss, M, nbits, n, runs, rng), n, floor["ns_per_code"])
                raw["rows"].append(row)
                print(f"{size_name:4s} M={M:2d} nbits={nbits} n={n:>10,d} floor={floor['ns_per_code']:.3f} ns/code "
                      + " ".join(f"{lvl}={cell.get('ns_per_code', float('nan')):.3f}"
                                 for lvl, cell in row["levels"].items())
                      + (f" faiss={row['faiss']['ns_per_code']:.3f}" if "faiss" in row else ""), flush=True)
                args.out_dir.mkdir(parents=True, exist_ok=True)
                (args.out_dir / "micro.json").write_text(json.dumps(raw, indent=1))
    return raw


def size_text(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if "error" in entry:
        return "unavailable"
    return f"{entry['ns_per_code']:.3f} ({entry['ratio_to_floor']:.2f}x)"


def markdown(raw: dict) -> str:
    """The Markdown report drawn from the raw record of ``measure``."""
    machine, settings, faiss_info = raw["machine"], raw["settings"], raw["faiss"]
    caches = ", ".join(f"{name} {size_text(size)}" for name, size in raw["caches"].items())
    faiss_text = ("faiss: not run" if faiss_info is None else
                  f"faiss {faiss_info['version']} at level {faiss_info['simd_level']} (`IndexPQ` for 8-bit, "
                  f"`IndexPQFastScan` for 4-bit; one query, k={settings['faiss_k']}, distance table and top-k "
                  "included)")
    lines = [
        "# Scan-kernel micro-benchmark",
        "",
        f"Machine: {machine['cpu']} ({machine['n_cpus']} CPUs; caches of CPU 0: {caches or 'unknown'}), "
        f"{machine['platform']}; pqkit {machine['pqkit_version']}; {faiss_text}. One thread; "
        f"{'quick run, ' if settings['quick'] else ''}median over the repeats.",
        "",
        "Each cell: ns per code = median seconds per full scan / n; in parentheses that time over the "
        "memory-read floor, a plain read of as many bytes as the codes (1.00x: the scan runs at memory speed; "
        "below 1.00x from memory: the SIMD scans prefetch ahead, the plain read does not).",
    ]
    last_level = max(raw["caches"].items(), key=lambda item: item[1], default=None)
    for size_name, size_bytes in settings["sizes"].items():
        rows = [row for row in raw["rows"] if row["size"] == size_name]
        if not rows:
            continue
        title = "L2-resident" if size_name == "L2" else "DRAM-resident"
        lines += ["", f"## {title}: {size_text(size_bytes)} of codes, {rows[0]['repeats']} repeats", ""]
        if size_name == "DRAM" and last_level and size_bytes <= last_level[1]:
            lines += [f"Note: {size_text(size_bytes)} is not larger than the {last_level[0]} "
                      f"({size_text(last_level[1])}), so these codes may be partly cache-resident; "
                      "raise `--dram-mib`.", ""]
        levels = raw["levels"]
        faiss_column = ["faiss ns/code"] if faiss_info is not None else []
        header = ["M", "nbits", "bytes/code", "codes", "floor ns/code", "floor GB/s",
                  *(f"{level} ns/code" for level in levels), *faiss_column]
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for row in rows:
            floor_ns = row["floor"]["ns_per_code"]
            cells = [str(row["M"]), str(row["nbits"]), str(row["code_bytes"]), f"{row['n']:,}", f"{floor_ns:.3f}",
                     f"{row['code_bytes'] / floor_ns:.1f}", *(cell(row["levels"].get(level)) for level in levels)]
            if faiss_info is not None:
                cells.append(cell(row.get("faiss")))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and a 64 MiB large size (unless --dram-mib is given)")
    parser.add_argument("--l2-kib", type=int, default=512, help="bytes of codes of the cache-resident size, KiB")
    parser.add_argument("--dram-mib", type=int, help="bytes of codes of the memory-resident size, MiB "
                        "(default 512, 64 with --quick); should exceed the last-level cache")
    parser.add_argument("--repeats", type=int, help="runs per cell (default 200 for L2 and 10 for DRAM; "
                        "20 and 3 with --quick)")
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss column")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    if args.dram_mib is None:
        args.dram_mib = 64 if args.quick else 512
    if min(args.l2_kib, args.dram_mib) < 1 or (args.repeats is not None and args.repeats < 1):
        parser.error("--l2-kib, --dram-mib and --repeats must be positive")
    raw = measure(args)
    text = markdown(raw)
    (args.out_dir / "micro.md").write_text(text)
    print(text)
    print(f"wrote {args.out_dir / 'micro.json'} and {args.out_dir / 'micro.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
