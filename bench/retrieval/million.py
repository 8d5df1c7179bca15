"""Retrieval at 100k and 1M gallery entries: accuracy and latency of every method, and of every
gallery choice, as the gallery grows (step 2b of the retrieval tables; it measures).

    python bench/retrieval/embed_fashion.py        # step 1 (cached): the 70,000 Fashion-MNIST embeddings
    python bench/retrieval/million.py              # 100k and 1M: results/million_100k.json, million_1m.json
    python bench/retrieval/million.py --sizes 100000          # one size only
    python bench/retrieval/report.py --docs        # step 3: tables, plot, docs/retrieval.md, README part
    python bench/retrieval/million.py --quick --out /tmp/m    # seconds: every step on tiny sizes

Data. The gallery starts from the 60,000 real EfficientNet-Lite0 embeddings (32 px) of the
Fashion-MNIST training images and is enlarged to N entries with *perturbed copies* of them (no
set of a million real images is available offline, and embedding 940,000 augmented images is
hours of CPU): copy = normalise(x_i + noise), with Gaussian noise scaled so that a copy lies at
``--noise`` (default 0.5) times the median distance between a real embedding and its nearest
real neighbour from its source, and the source's label. The output names the data set so
(``fashion-cnn-60k-real+<N-60k>-perturbed``). Queries are the first ``--n-queries`` real test
images; labels give precision@1 and mAP@10.

Two parts per size, raw rows first (report.py draws the tables):

- ``rows``: :func:`pqkit.retrieval.timing.timing_table` with one thread per library: NumPy brute
  force, pqkit and faiss Flat, IVF-Flat, IVF-PQ (codes alone) and IVF-PQ re-ranked with 8-bit PQ
  codes (what ``index="IVF,PQ"`` builds at these sizes), nprobe swept: 10-recall@10 against exact
  search, precision@1, mAP@10, per-query latency (median of single-query calls, wall and CPU),
  memory and build time.
- ``choices``: the gallery as a user builds it (:meth:`pqkit.retrieval.Gallery.from_vectors` with
  ``"Flat"``, ``"IVF,Flat"``, ``"IVF,PQ"`` and ``"IVF,PQ"`` without re-ranking; all threads):
  the index chosen, its calibrated nprobe, the recall measured at build time, precision@1 and
  mAP@10 of the queries, memory, build time.

Memory: the 1M gallery is 4.9 GB of float32, written to ``--cache`` and memory-mapped (the
system can drop its pages); with the normalised copy and one index alive at a time the 1M run
peaked at 20.7 GB used (``free``, page cache excluded) on a 24 GiB machine. Time at 1M on an idle 2-core machine: about 40
minutes (``meta.seconds`` in the JSON). The timing rows are saved (``million_<size>.json.partial``)
before the gallery choices run; ``--save-gallery`` keeps the largest ``IVF,PQ`` gallery for the
web demo's check (``PQKIT_WEB_GALLERY``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CHOICES = [("Flat", "auto"), ("IVF,Flat", "auto"), ("IVF,PQ", "auto"), ("IVF,PQ", "none")]


def size_label(n: int) -> str:
    """``100k``, ``1m``, ``4k``: the file-name label of a gallery size."""
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def median_neighbour_distance(real: np.ndarray, n_sample: int = 2000, seed: int = 0) -> float:
    """Median distance from a real (unit) embedding to its nearest other real embedding."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(real.shape[0], min(n_sample, real.shape[0]), replace=False)
    sims = real[rows] @ real.T
    sims[np.arange(rows.size), rows] = -np.inf  # not itself
    return float(np.median(np.sqrt(np.maximum(2 - 2 * sims.max(axis=1), 0))))


def enlarge(real: np.ndarray, labels: np.ndarray, n: int, noise: float, seed: int = 0, path: Path | None = None):
    """``n`` unit vectors: the real ones first, then perturbed copies of them (see the module
    docstring), with their sources' labels; float32 (n, d), labels (n,), and the noise record.
    With ``path`` the vectors are written to that file and returned memory-mapped (read only):
    their pages belong to the page cache, which the system can drop while the indexes fill
    memory (a million 1280-d vectors are 4.9 GB)."""
    real = _unit(real)
    if n <= real.shape[0]:
        return real[:n], labels[:n], {"n_real": n, "n_perturbed": 0}
    d = real.shape[1]
    radius = noise * median_neighbour_distance(real)
    rng = np.random.default_rng(seed)
    out = (np.empty((n, d), dtype=np.float32) if path is None
           else np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d)))
    out[:real.shape[0]] = real
    out_labels = np.empty(n, dtype=labels.dtype)
    out_labels[:real.shape[0]] = labels
    for start in range(real.shape[0], n, 65536):
        stop = min(start + 65536, n)
        sources = rng.integers(0, real.shape[0], stop - start)
        # a d-dimensional Gaussian of standard deviation radius / sqrt(d) has norm ~ radius
        copies = real[sources] + rng.standard_normal((stop - start, d), dtype=np.float32) * (radius / np.sqrt(d))
        out[start:stop] = _unit(copies)
        out_labels[start:stop] = labels[sources]
    if path is not None:
        out.flush()
        del out
        out = np.load(path, mmap_mode="r")
    return out, out_labels, {"n_real": int(real.shape[0]), "n_perturbed": int(n - real.shape[0]),
                             "noise_factor": noise, "noise_radius": radius}


def gallery_choices(base, base_labels, queries, query_labels, progress=print, save=None) -> list[dict]:
    """Build each named gallery choice as a user does and score its answers to the queries."""
    from pqkit.retrieval import Gallery
    from pqkit.retrieval.evaluate import mean_average_precision, precision_at_k

    values, counts = np.unique(base_labels, return_counts=True)
    n_relevant = counts[np.searchsorted(values, query_labels)] * np.isin(query_labels, values)
    rows = []
    for name, refine in CHOICES:
        start = time.perf_counter()
        gallery = Gallery.from_vectors(base, labels=base_labels, index=name, refine=refine)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, ids = gallery.search(queries, 10)
        search_s = time.perf_counter() - start
        found = gallery.labels[np.maximum(ids, 0)]
        info = gallery.info()
        if save is not None and name == "IVF,PQ" and refine == "auto":
            gallery.save(save, overwrite=True)  # the web demo's million-entry check loads it
        rows.append({
            "name": name, "refine": refine, "description": gallery.description, "nprobe": info["nprobe"],
            "k_factor": info["k_factor"], "build_recall": info["recall"], "memory_mb": info["memory_bytes"] / 2**20,
            "precision_at_1": precision_at_k(found[:, :1], query_labels),
            "map_at_k": mean_average_precision(found, query_labels, n_relevant),
            "build_s": build_s, "batch_ms_per_query": 1e3 * search_s / queries.shape[0],
        })
        del gallery
        if progress:
            r = rows[-1]
            progress(f"choice {name:<9} refine={refine:<5} -> {r['description']:<32} nprobe={r['nprobe']} "
                     f"recall={r['build_recall']:.3f} P@1={r['precision_at_1']:.4f} mAP@10={r['map_at_k']:.4f}")
    return rows


def real_embeddings(args):
    """(base, base_labels, queries, query_labels, extraction meta) from the cache, or embedded now
    for ``--quick``."""
    if args.quick:
        from pqkit.datasets import load_fashion_mnist
        from pqkit.retrieval.images import CNNEmbedder

        base, queries, (base_labels, query_labels) = load_fashion_mnist()
        images = np.concatenate([base[:args.quick_real], queries[:args.n_queries]]).reshape(-1, 28, 28)
        embedder = CNNEmbedder(size=32, batch_size=256)
        start, start_cpu = time.perf_counter(), time.process_time()
        vectors = embedder(images.astype(np.uint8))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        n_images = images.shape[0]
        meta = {"image_size": 32, "extraction_ms_per_image": 1e3 * wall / n_images,
                "extraction_cpu_ms_per_image": {"n": n_images, "wall_ms": 1e3 * wall / n_images,
                                                "cpu_ms": 1e3 * cpu / n_images}}
        return (vectors[:args.quick_real], base_labels[:args.quick_real], vectors[args.quick_real:],
                query_labels[:args.n_queries], meta)
    sys.path.insert(0, str(HERE))
    import embed_fashion
    import run

    cache = embed_fashion.main(["--size", str(args.size), "--cache", str(args.cache)])
    data = np.load(cache, allow_pickle=False)
    meta = {"image_size": int(data["size"]), "extraction_ms_per_image": 1e3 * float(data["seconds_per_image"]),
            "extraction_cpu_ms_per_image": run.extraction_cpu_ms(int(data["size"]))}
    return (data["base"], data["base_labels"], data["queries"][:args.n_queries],
            data["query_labels"][:args.n_queries], meta)


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description="retrieval at 100k and 1M gallery entries")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--n-latency", type=int, default=200, help="queries timed one call each (100 at 1M)")
    parser.add_argument("--noise", type=float, default=0.5, help="copy distance / median real neighbour distance")
    parser.add_argument("--size", type=int, default=32, help="CNN input size of the cached embeddings")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pqkit_retrieval"))
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"folder of the raw JSON (default {RESULTS})")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--no-choices", action="store_true", help="skip the gallery choices")
    parser.add_argument("--save-gallery", type=Path, default=None,
                        help="save the largest size's IVF,PQ gallery here (for PQKIT_WEB_GALLERY)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: 300 real images embedded now, sizes 1000 and 2000, 50 queries, "
                             "re-ranking with exact vectors (8-bit refine codes need more vectors to train)")
    parser.add_argument("--quick-real", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    nprobes, refine = (1, 2, 4, 8, 16, 32, 64), "pq"
    if args.quick:
        args.sizes, args.n_queries, args.n_latency, nprobes, refine = [1000, 2000], 50, 5, (1, 4), "flat"
    import pqkit
    from pqkit.retrieval.timing import timing_table

    base_real, labels_real, queries, query_labels, extraction = real_embeddings(args)
    queries = _unit(queries)
    written = []
    for n in args.sizes:
        label = size_label(n)
        print(f"== {label}: {n} gallery entries", flush=True)
        started = time.time()
        mapped = None if args.quick else args.cache / f"gallery_{label}.npy"
        base, base_labels, enlarged = enlarge(base_real, labels_real, n, args.noise, path=mapped)
        dataset = f"fashion-cnn-{size_label(enlarged['n_real'])}-real" + (
            f"+{enlarged['n_perturbed']}-perturbed" if enlarged["n_perturbed"] else "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pqkit.TrainingWarning)  # --quick trains 8-bit codes on few vectors
            rows = timing_table(base, queries, 10, base_labels=base_labels, query_labels=query_labels,
                                nprobes=nprobes, n_latency=args.n_latency if n < 1_000_000 else min(args.n_latency, 100),
                                include_faiss=not args.no_faiss, refine=refine)
            save_rows(args.out, label, rows, None)  # kept if the choices fail
            save = args.save_gallery if n == max(args.sizes) else None
            choices = [] if args.no_choices else gallery_choices(base, base_labels, queries, query_labels, save=save)
        try:
            import faiss
            faiss_version = faiss.__version__
        except ImportError:
            faiss_version = None
        meta = {
            "dataset": dataset, "size_label": label, "n": n, "d": int(base.shape[1]), **enlarged,
            "gallery": (f"{enlarged['n_real']:,} real embeddings" + (
                f" + {enlarged['n_perturbed']:,} perturbed copies" if enlarged["n_perturbed"] else "")),
            "queries": f"first {queries.shape[0]} real test images", "n_queries": int(queries.shape[0]),
            "k": 10, "n_latency": rows[0]["n_latency"], "threads": 1, "quick": bool(args.quick), "refine": refine,
            **extraction,
            "pqkit": pqkit.__version__, "simd": pqkit.simd_level(), "faiss": faiss_version,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)), "seconds": time.time() - started,
        }
        path = save_rows(args.out, label, rows, choices, meta)
        written.append(path)
        print(f"wrote {path} ({meta['seconds']:.0f} s)", flush=True)
        del base, base_labels
        if mapped is not None and mapped.exists():
            mapped.unlink()
    return written


def save_rows(folder: Path, label: str, rows, choices, meta=None) -> Path:
    """Write ``million_<label>.json`` whole or not at all; without ``meta`` (the timing rows
    before the gallery choices ran) to ``million_<label>.json.partial`` (which report.py skips)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"million_{label}.json" if meta is not None else f"million_{label}.json.partial")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows, "choices": choices}, indent=1))
    os.replace(tmp, path)  # a run stopped midway leaves the previous file whole
    if meta is not None:
        path.with_name(f"million_{label}.json.partial").unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    main()
