"""``pqkit patchcore fit|score|sweep``: the PatchCore command line.

Only argument declarations live at import time; torch and the model are imported when a command
runs, so ``pqkit demo`` and ``pqkit --help`` stay fast. Arguments are checked before any image is
embedded (numbers in range, backend parameters against the patch-feature length, output paths
writable); a user error ends the command with one line ``pqkit patchcore <command>: error: ...``
and status 2 (:mod:`pqkit._cli`). A saved model, a score CSV or sweep results that exist are
replaced only with ``--overwrite``.

Examples (from the repository root)::

    pqkit patchcore fit --data ../shared/data/magnetic_tile --out /tmp/mt_model --backend pqkit_ivfpq \\
        --nlist 100 --m 8 --nbits 8 --nprobe 8
    pqkit patchcore score --model /tmp/mt_model --data ../shared/data/magnetic_tile --csv /tmp/scores.csv
    pqkit patchcore sweep --config bench/patchcore/exp3.yaml --overwrite
"""

from __future__ import annotations

from .. import _cli

__all__ = ["register"]

#: Largest --image-size (pixels per side): the backbone's activations grow with its square.
MAX_IMAGE_SIZE = 4096


def _add_data_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="an MVTec-layout category folder (train/good, test/<defect>, ground_truth)")
    source.add_argument("--elpv", choices=["mono", "poly", "all"],
                        help="the ELPV solar-cell set (pip install elpv-dataset) with this cell type")
    parser.add_argument("--elpv-train-fraction", type=_cli.float_in(0, 1, high_open=True), default=0.5,
                        help="ELPV: fraction of the normal cells used for training, in (0, 1) (default 0.5)")
    parser.add_argument("--seed", type=_cli.non_negative_int, default=0,
                        help="seed of the ELPV split and the coreset (default 0)")


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


def _check_backend_params(backend: str, params: dict, d: int) -> None:
    """Refuse, before any embedding, parameters no index of d-dimensional patches accepts.

    The quantised backends (pqkit's and faiss's alike) need ``d % m == 0``, ``1 <= nbits <= 16``
    and ``nprobe <= nlist``; an empty pqkit index of the same shape checks them, with pqkit's
    messages.
    """
    import pqkit

    try:
        if "nlist" in params:
            pqkit.IndexIVFPQ(d, params["nlist"], params["m"], params["nbits"], nprobe=params["nprobe"])
        elif "m" in params:
            pqkit.IndexPQ(d, params["m"], params["nbits"])
    except ValueError as exc:
        raise ValueError(f"--backend {backend} with --target-dim {d}: {exc}") from None


def _check_image_size(size: int) -> None:
    if size > MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size must be at most {MAX_IMAGE_SIZE} pixels, got {size}")


def run_fit(args) -> int:
    import pqkit

    from .model import PatchCore

    _cli.check_creatable_dir(args.out, "--out")
    PatchCore.check_save_target(args.out, overwrite=args.overwrite)  # before the model is fitted
    _check_image_size(args.image_size)
    params = _backend_params(args)
    _check_backend_params(args.backend, params, args.target_dim)
    if args.threads:
        pqkit.set_num_threads(args.threads)
    model = PatchCore(image_size=args.image_size, target_dim=args.target_dim, coreset_method=args.coreset_method,
                      coreset_ratio=args.coreset_ratio, backend=args.backend, backend_params=params,
                      seed=args.seed, batch_size=args.batch_size)
    train = _samples(args, "train")
    features = model.embed([s.path for s in train], progress=not args.quiet)
    try:
        model.fit_features(features)
    except RuntimeError as exc:
        if not args.backend.startswith("faiss"):
            raise
        # faiss reports a failed precondition (e.g. fewer bank vectors than lists) as RuntimeError
        raise ValueError(f"the {args.backend} backend cannot be built on this memory bank: "
                         f"{_cli.one_line(exc)}") from None
    model.save(args.out, overwrite=args.overwrite)
    print(f"fitted on {len(train)} images: memory bank {model.bank_size_} of {model.n_train_patches_} patches "
          f"({model.backend}, {model.backend_.memory_bytes() / 2**20:.2f} MB); saved to {args.out}")
    return 0


def _load_model(path):
    from .model import PatchCore

    try:
        return PatchCore.load(path)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"{path!r} is not a readable PatchCore model: its config.json lacks {exc}; "
                         "fit it again with 'pqkit patchcore fit'") from None


def run_score(args) -> int:
    import numpy as np

    import pqkit

    from .scoring import image_auroc, pixel_auroc
    from .sweep import _mask_at, _write_csv

    if args.csv is not None:
        _cli.check_output_file(args.csv, "--csv", args.overwrite)
    if args.threads:
        pqkit.set_num_threads(args.threads)
    model = _load_model(args.model)
    if args.nprobe is not None:
        if not hasattr(model.backend_, "set_nprobe"):
            raise ValueError(f"--nprobe applies to IVF backends; this model's backend is {model.backend}")
        nlist = model.backend_params.get("nlist")
        if nlist is not None and args.nprobe > nlist:
            raise ValueError(f"--nprobe must be at most the model's nlist={nlist}, got {args.nprobe}")
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
        rows = [{"path": s.path, "label": s.label, "defect": s.defect, "score": float(score)}
                for s, score in zip(test, scores)]
        _write_csv(args.csv, ["path", "label", "defect", "score"], rows)
        print(f"per-image scores written to {args.csv}")
    return 0


def run_sweep(args) -> int:
    from .sweep import run_sweep as sweep

    rows = sweep(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"{len(rows)} rows written")
    return 0


def register(subparsers) -> None:
    """Add ``patchcore`` with ``fit``, ``score`` and ``sweep`` to the ``pqkit`` command line."""
    from .coreset import COMPRESSION_METHODS
    from .neighbors import BACKENDS

    patchcore = subparsers.add_parser(
        "patchcore", help="PatchCore anomaly detection with pqkit search (fit, score, sweep)",
        description="PatchCore (Roth et al. 2022) with a pqkit memory-bank index.")
    commands = patchcore.add_subparsers(dest="patchcore_command", metavar="subcommand")
    patchcore.set_defaults(run=lambda args: (patchcore.print_help(), 2)[1])
    positive = _cli.positive_int

    fit = _cli.add_command(commands, "fit", run_fit,
                           help="build a memory bank from normal images and save the model")
    _add_data_arguments(fit)
    fit.add_argument("--out", required=True, help="folder to save the model in (config.json + memory bank index)")
    fit.add_argument("--overwrite", action="store_true", help="replace a model saved in --out")
    fit.add_argument("--image-size", type=positive, default=224,
                     help=f"input resolution, at most {MAX_IMAGE_SIZE} (default 224)")
    fit.add_argument("--target-dim", type=positive, default=128, help="patch feature length (default 128)")
    fit.add_argument("--coreset-method", choices=list(COMPRESSION_METHODS), default="v1")
    fit.add_argument("--coreset-ratio", type=_cli.float_in(0, 1), default=0.1,
                     help="fraction of patches kept, in (0, 1] (default 0.1)")
    fit.add_argument("--backend", choices=sorted(BACKENDS), default="pqkit_flat")
    fit.add_argument("--nlist", type=positive, default=100, help="IVF lists (ivfpq backends)")
    fit.add_argument("--m", type=positive, default=8,
                     help="PQ sub-quantizers, a divisor of --target-dim (pq backends)")
    fit.add_argument("--nbits", type=positive, default=8, help="bits per sub-quantizer, 1 to 16 (pq backends)")
    fit.add_argument("--nprobe", type=positive, default=8, help="lists probed per query, <= --nlist (ivfpq backends)")
    fit.add_argument("--batch-size", type=positive, default=16)
    fit.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")

    score = _cli.add_command(commands, "score", run_score,
                             help="score test images with a saved model; print AUROC")
    score.add_argument("--model", required=True, help="folder written by 'pqkit patchcore fit'")
    _add_data_arguments(score)
    score.add_argument("--csv", help="write per-image scores to this CSV file")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    score.add_argument("--nprobe", type=positive, default=None, help="override the saved nprobe (ivfpq backends)")
    score.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    score.add_argument("--quiet", action="store_true", help="no progress bars")

    sweep = _cli.add_command(commands, "sweep", run_sweep,
                             help="run experiment 3 (search sweep) or 2 (coreset) from a YAML config")
    sweep.add_argument("--config", required=True, help="YAML file (see bench/patchcore/*.yaml)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace the results of an earlier run in the config's output.dir")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
