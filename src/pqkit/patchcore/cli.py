"""``pqkit patchcore fit|score|sweep``: the PatchCore command line.

Only argument declarations live at import time; torch and the model are imported when a command
runs, so ``pqkit demo`` and ``pqkit --help`` stay fast.

Examples (from the repository root)::

    pqkit patchcore fit --data ../shared/data/magnetic_tile --out /tmp/mt_model --backend pqkit_ivfpq \\
        --nlist 100 --m 8 --nbits 8 --nprobe 8
    pqkit patchcore score --model /tmp/mt_model --data ../shared/data/magnetic_tile --csv /tmp/scores.csv
    pqkit patchcore sweep --config bench/patchcore/exp3.yaml
"""

from __future__ import annotations

__all__ = ["register"]


def _add_data_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="an MVTec-layout category folder (train/good, test/<defect>, ground_truth)")
    source.add_argument("--elpv", choices=["mono", "poly", "all"],
                        help="the ELPV solar-cell set (pip install elpv-dataset) with this cell type")
    parser.add_argument("--elpv-train-fraction", type=float, default=0.5,
                        help="ELPV: fraction of the normal cells used for training (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ELPV split and the coreset (default 0)")


def _samples(args, split: str):
    from .data import elpv_samples, mvtec_samples

    if args.data is not None:
        return mvtec_samples(args.data, split)
    train, test = elpv_samples(args.elpv, args.elpv_train_fraction, args.seed)
    return train if split == "train" else test


def _backend_params(args) -> dict:
    if args.backend in ("pqkit_ivfpq", "faiss_ivfpq"):
        return {"nlist": args.nlist, "m": args.m, "nbits": args.nbits, "nprobe": args.nprobe}
    if args.backend == "pqkit_pq":
        return {"m": args.m, "nbits": args.nbits}
    return {}


def run_fit(args) -> int:
    import pqkit

    from .model import PatchCore

    if args.threads:
        pqkit.set_num_threads(args.threads)
    PatchCore.check_save_target(args.out, overwrite=args.overwrite)  # before the model is fitted
    train = _samples(args, "train")
    model = PatchCore(image_size=args.image_size, target_dim=args.target_dim, coreset_method=args.coreset_method,
                      coreset_ratio=args.coreset_ratio, backend=args.backend, backend_params=_backend_params(args),
                      seed=args.seed, batch_size=args.batch_size)
    model.fit([s.path for s in train], progress=not args.quiet)
    model.save(args.out, overwrite=args.overwrite)
    print(f"fitted on {len(train)} images: memory bank {model.bank_size_} of {model.n_train_patches_} patches "
          f"({model.backend}, {model.backend_.memory_bytes() / 2**20:.2f} MB); saved to {args.out}")
    return 0


def run_score(args) -> int:
    import csv

    import numpy as np

    import pqkit

    from .model import PatchCore
    from .scoring import image_auroc, pixel_auroc
    from .sweep import _mask_at

    if args.threads:
        pqkit.set_num_threads(args.threads)
    model = PatchCore.load(args.model)
    if args.nprobe is not None and hasattr(model.backend_, "set_nprobe"):
        model.backend_.set_nprobe(args.nprobe)
    test = _samples(args, "test")
    scores, maps = model.predict([s.path for s in test], progress=not args.quiet)
    labels = np.array([s.label for s in test])
    line = f"scored {len(test)} images: image AUROC {image_auroc(labels, scores):.4f}"
    if any(s.mask_path for s in test):
        masks = np.stack([_mask_at(s, model.image_size) for s in test])
        line += f", pixel AUROC {pixel_auroc(masks, maps):.4f}"
    print(line)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "defect", "score"])
            for sample, score in zip(test, scores):
                writer.writerow([sample.path, sample.label, sample.defect, f"{score:.6g}"])
        print(f"per-image scores written to {args.csv}")
    return 0


def run_sweep(args) -> int:
    from .sweep import run_sweep as sweep

    rows = sweep(args.config, progress=not args.quiet)
    print(f"{len(rows)} rows written")
    return 0


def register(subparsers) -> None:
    """Add ``patchcore`` with ``fit``, ``score`` and ``sweep`` to the ``pqkit`` command line."""
    from .neighbors import BACKENDS

    patchcore = subparsers.add_parser(
        "patchcore", help="PatchCore anomaly detection with pqkit search (fit, score, sweep)",
        description="PatchCore (Roth et al. 2022) with a pqkit memory-bank index.")
    commands = patchcore.add_subparsers(dest="patchcore_command", metavar="subcommand")
    patchcore.set_defaults(run=lambda args: (patchcore.print_help(), 2)[1])

    fit = commands.add_parser("fit", help="build a memory bank from normal images and save the model")
    _add_data_arguments(fit)
    fit.add_argument("--out", required=True, help="folder to save the model in (config.json + memory bank index)")
    fit.add_argument("--overwrite", action="store_true", help="replace the model already saved in --out")
    fit.add_argument("--image-size", type=int, default=224, help="input resolution (default 224)")
    fit.add_argument("--target-dim", type=int, default=128, help="patch feature length (default 128)")
    fit.add_argument("--coreset-method", choices=["v1", "v2", "random", "all"], default="v1")
    fit.add_argument("--coreset-ratio", type=float, default=0.1, help="fraction of patches kept (default 0.1)")
    fit.add_argument("--backend", choices=sorted(BACKENDS), default="pqkit_flat")
    fit.add_argument("--nlist", type=int, default=100, help="IVF lists (ivfpq backends)")
    fit.add_argument("--m", type=int, default=8, help="PQ sub-quantizers (pq backends)")
    fit.add_argument("--nbits", type=int, default=8, help="bits per sub-quantizer (pq backends)")
    fit.add_argument("--nprobe", type=int, default=8, help="lists probed per query (ivfpq backends)")
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--threads", type=int, default=None)
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(run=run_fit)

    score = commands.add_parser("score", help="score test images with a saved model; print AUROC")
    score.add_argument("--model", required=True, help="folder written by 'pqkit patchcore fit'")
    _add_data_arguments(score)
    score.add_argument("--csv", help="write per-image scores to this CSV file")
    score.add_argument("--nprobe", type=int, default=None, help="override the saved nprobe (ivfpq backends)")
    score.add_argument("--threads", type=int, default=None)
    score.add_argument("--quiet", action="store_true", help="no progress bars")
    score.set_defaults(run=run_score)

    sweep = commands.add_parser("sweep", help="run experiment 3 (search sweep) or 2 (coreset) from a YAML config")
    sweep.add_argument("--config", required=True, help="YAML file (see bench/patchcore/*.yaml)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(run=run_sweep)

