"""``pqkit patchcore fit|score|sweep``: the PatchCore command line.

Only argument declarations live at import time; torch and the model are imported when a command
runs, so ``pqkit demo`` and ``pqkit --help`` stay fast. Arguments are checked before any image is
embedded (numbers in range, backend parameters against the patch-feature length, output paths
writable); a user error ends the command with one line ``pqkit patchcore <command>: error: ...``
and status 2 (:mod:`pqkit._cli`). A saved model, a score CSV, anomaly maps or sweep results that
exist are replaced only with ``--overwrite``.

Data: ``--root DIR`` (alias ``--data``) is an MVTec-layout category folder, ``--elpv mono`` the
ELPV set, ``--sample`` the tiny sample category shipped with the package; ``--max-images N``
keeps N images (evenly spread, normal and anomalous in proportion) for a quick try.

Examples (from the repository root)::

    pqkit patchcore fit --sample --out /tmp/sample_model
    pqkit patchcore score --model /tmp/sample_model --sample --maps /tmp/sample_maps
    pqkit patchcore fit --root ../shared/data/magnetic_tile --out /tmp/mt_model --backend pqkit_ivfpq
    pqkit patchcore sweep --config bench/patchcore/exp3.yaml --root ../shared/data/magnetic_tile --overwrite
"""

from __future__ import annotations

import argparse
import sys

from .. import _cli

__all__ = ["register"]

#: Largest --image-size (pixels per side): the backbone's activations grow with its square.
MAX_IMAGE_SIZE = 4096
#: Backends whose index sizes are set by --nlist, --m, --nbits, --nprobe (and which re-rank).
_IVF_BACKENDS = ("pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine", "faiss_ivfpq_refine")


def _size_or_auto(text: str):
    """argparse type: an integer >= 1, or ``auto`` (chosen from the memory bank)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}")
    return value


def _add_data_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", "--data", dest="data", metavar="DIR",
                        help="an MVTec-layout category folder (train/good, test/<defect>, ground_truth/<defect>); "
                             "on this project's machines magnetic_tile is ../shared/data/magnetic_tile")
    source.add_argument("--elpv", choices=["mono", "poly", "all"],
                        help="the ELPV solar-cell set (pip install elpv-dataset) with this cell type")
    source.add_argument("--sample", action="store_true",
                        help="the tiny sample category shipped with pqkit (runs anywhere in seconds)")
    parser.add_argument("--elpv-train-fraction", type=_cli.float_in(0, 1, high_open=True), default=0.5,
                        help="ELPV: fraction of the normal cells used for training, in (0, 1) (default 0.5)")
    parser.add_argument("--seed", type=_cli.non_negative_int, default=0,
                        help="seed of the ELPV split and the coreset (default 0)")
    parser.add_argument("--max-images", type=_cli.positive_int, default=None, metavar="N",
                        help="use at most N images, evenly spread (normal and anomalous in proportion): "
                             "a quick try")


def _samples(args, split: str):
    from .data import elpv_samples, limit_samples, mvtec_samples, sample_root

    if args.sample:
        samples = mvtec_samples(sample_root(), split)
    elif args.data is not None:
        samples = mvtec_samples(args.data, split)
    else:
        train, test = elpv_samples(args.elpv, args.elpv_train_fraction, args.seed)
        samples = train if split == "train" else test
    return limit_samples(samples, args.max_images)


def _backend_params(args) -> dict:
    if args.backend in _IVF_BACKENDS:
        params = {"nlist": args.nlist, "m": args.m, "nbits": args.nbits, "nprobe": args.nprobe}
        if args.backend.endswith("_refine"):
            params.update(k_factor=args.k_factor, refine_m=args.refine_m)
        return params
    if args.backend == "pqkit_pq":
        return {"m": args.m, "nbits": args.nbits}
    return {}


def _check_backend_params(backend: str, params: dict, d: int) -> None:
    """Refuse, before any embedding, parameters no index of d-dimensional patches accepts.

    The quantised backends (pqkit's and faiss's alike) need ``d % m == 0``, ``1 <= nbits <= 16``
    and ``nprobe <= nlist``; an empty pqkit index of the same shape checks them, with pqkit's
    messages. Sizes left ``auto`` are chosen at fit time and always fit (an ``auto`` stand-in
    is used here).
    """
    import pqkit

    from ..indexes.refine import check_k_factor
    from .neighbors import AUTO, auto_m

    def given(name, stand_in):
        value = params.get(name)
        return stand_in if value == AUTO else value

    try:
        if "nlist" in params:
            nprobe = given("nprobe", 1)
            pqkit.IndexIVFPQ(d, given("nlist", nprobe), given("m", auto_m(d)), given("nbits", 8), nprobe=nprobe)
        elif "m" in params:
            pqkit.IndexPQ(d, given("m", auto_m(d)), given("nbits", 8))
        if params.get("refine_m"):
            pqkit.IndexPQ(d, params["refine_m"], 8)
        if "k_factor" in params:
            check_k_factor(params["k_factor"])
    except ValueError as exc:
        raise ValueError(f"--backend {backend} with --target-dim {d}: {exc}") from None


def _check_image_size(size: int) -> None:
    if size > MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size must be at most {MAX_IMAGE_SIZE} pixels, got {size}")


def _print_warnings(prog: str, caught) -> None:
    """One line per distinct warning: ``<prog>: warning: <Category>: <message>``."""
    for text in dict.fromkeys(f"{w.category.__name__}: {_cli.one_line(w.message)}" for w in caught):
        print(f"{prog}: warning: {text}", file=sys.stderr, flush=True)


def _layer_list(text, backbone: str):
    """The ``--layers`` list (None: the backbone's own); a name the backbone lacks is a user error."""
    if text is None:
        return None
    layers = [name.strip() for name in text.split(",")]
    if not all(layers):
        raise ValueError(f"--layers must be comma-separated layer names such as _blocks.4,_blocks.10, got {text!r}")
    from ..vision.features import load_backbone

    known = dict(load_backbone(backbone).named_modules())
    missing = [name for name in layers if name not in known]
    if missing:
        blocks = sorted((n for n in known if n.count(".") == 1 and n.startswith("_blocks.")),
                        key=lambda n: int(n.split(".")[1]))
        raise ValueError(f"--layers: {backbone} has no layer {missing[0]!r}; its blocks are "
                         f"{blocks[0]} .. {blocks[-1]} (e.g. --layers _blocks.4,_blocks.10)")
    return layers


def run_fit(args) -> int:
    import warnings

    import pqkit

    from .model import PatchCore

    _cli.check_creatable_dir(args.out, "--out")
    PatchCore.check_save_target(args.out, overwrite=args.overwrite)  # before the model is fitted
    _check_image_size(args.image_size)
    params = _backend_params(args)
    _check_backend_params(args.backend, params, args.target_dim)
    if args.threads:
        pqkit.set_num_threads(args.threads)
    layers = _layer_list(args.layers, args.backbone)
    model = PatchCore(backbone=args.backbone, layers=layers, image_size=args.image_size, target_dim=args.target_dim,
                      coreset_method=args.coreset_method,
                      coreset_ratio=args.coreset_ratio, backend=args.backend, backend_params=params,
                      seed=args.seed, batch_size=args.batch_size)
    train = _samples(args, "train")
    features = model.embed([s.path for s in train], progress=not args.quiet)
    with warnings.catch_warnings(record=True) as caught:
        # warnings about the user's explicit sizes, one line each (sizes left auto never warn)
        warnings.simplefilter("always", UserWarning)
        try:
            model.fit_features(features, progress=not args.quiet)
        except RuntimeError as exc:
            if not args.backend.startswith("faiss"):
                raise
            # faiss reports a failed precondition (e.g. fewer bank vectors than lists) as RuntimeError
            raise ValueError(f"the {args.backend} backend cannot be built on this memory bank: "
                             f"{_cli.one_line(exc)}") from None
    _print_warnings(args.command_prog, caught)
    model.save(args.out, overwrite=args.overwrite)
    sizes = ", ".join(f"{k} {v}" for k, v in model.backend_params_.items() if k != "seed")
    print(f"fitted on {len(train)} images: memory bank {model.bank_size_:,} of {model.n_train_patches_:,} patches, "
          f"{model.backend}{f' ({sizes})' if sizes else ''}, {model.backend_.memory_bytes() / 2**20:.2f} MB; "
          f"saved to {args.out}")
    return 0


def _load_model(path):
    from .model import PatchCore

    try:
        return PatchCore.load(path)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"{path!r} is not a readable PatchCore model: its config.json lacks {exc}; "
                         "fit it again with 'pqkit patchcore fit'") from None


def _check_map_targets(folder: str, samples, overwrite: bool) -> None:
    """Refuse, before scoring, a --maps folder that cannot be written or whose files exist."""
    import os

    from .visualize import map_files

    _cli.check_creatable_dir(folder, "--maps")
    for name in map_files(samples):
        _cli.check_output_file(os.path.join(folder, name), "--maps file", overwrite)


def run_score(args) -> int:
    import numpy as np

    import pqkit

    from .scoring import image_auroc, pixel_auroc
    from ._common import _mask_at, _write_csv

    if args.csv is not None:
        _cli.check_output_file(args.csv, "--csv", args.overwrite)
    if args.maps is not None:
        _cli.check_creatable_dir(args.maps, "--maps")
    if args.threads:
        pqkit.set_num_threads(args.threads)
    model = _load_model(args.model)
    if args.nprobe is not None:
        if not hasattr(model.backend_, "set_nprobe"):
            raise ValueError(f"--nprobe applies to IVF backends; this model's backend is {model.backend}")
        nlist = model.backend_params_.get("nlist")
        if nlist is not None and args.nprobe > nlist:
            raise ValueError(f"--nprobe must be at most the model's nlist={nlist}, got {args.nprobe}")
        model.backend_.set_nprobe(args.nprobe)
    test = _samples(args, "test")
    if args.maps is not None:
        _check_map_targets(args.maps, test, args.overwrite)
    scores, maps = model.predict([s.path for s in test], progress=not args.quiet)
    labels = np.array([s.label for s in test])
    if len(set(labels.tolist())) == 2:
        line = f"scored {len(test)} images: image AUROC {image_auroc(labels, scores):.4f}"
        if any(s.mask_path for s in test):
            masks = np.stack([_mask_at(s, model.image_size) for s in test])
            line += f", pixel AUROC {pixel_auroc(masks, maps):.4f}"
    else:
        line = f"scored {len(test)} images (AUROC needs normal and anomalous images)"
    print(line)
    if args.csv:
        rows = [{"path": s.path, "label": s.label, "defect": s.defect, "score": float(score)}
                for s, score in zip(test, scores)]
        _write_csv(args.csv, ["path", "label", "defect", "score"], rows)
        print(f"per-image scores written to {args.csv}")
    if args.maps is not None:
        import os

        from .visualize import CONTACT_SHEET, INDEX_PAGE, write_maps

        write_maps(args.maps, test, scores, maps, worst=args.worst, progress=not args.quiet)
        print(f"anomaly maps of {len(test)} images written to {args.maps} (contact sheet "
              f"{os.path.join(args.maps, CONTACT_SHEET)}, page {os.path.join(args.maps, INDEX_PAGE)})")
    return 0


def run_sweep(args) -> int:
    from .sweep import run_sweep as sweep

    rows = sweep(args.config, progress=not args.quiet, overwrite=args.overwrite, root=args.root,
                 sample=args.sample)
    print(f"{len(rows)} rows written")
    return 0


def register(subparsers) -> None:
    """Add ``patchcore`` with ``fit``, ``score`` and ``sweep`` to the ``pqkit`` command line."""
    from ..vision.features import BACKBONES
    from .coreset import COMPRESSION_METHODS
    from .neighbors import BACKENDS

    patchcore = subparsers.add_parser(
        "patchcore", help="PatchCore anomaly detection with pqkit search (fit, score, sweep)",
        description="PatchCore (Roth et al. 2022) with a pqkit memory-bank index. Try it on the built-in "
                    "sample: 'pqkit patchcore fit --sample --out m' then 'pqkit patchcore score --model m --sample'.")
    commands = patchcore.add_subparsers(dest="patchcore_command", metavar="subcommand")
    patchcore.set_defaults(run=lambda args: (patchcore.print_help(), 2)[1])
    positive = _cli.positive_int

    fit = _cli.add_command(commands, "fit", run_fit,
                           help="build a memory bank from normal images and save the model")
    _add_data_arguments(fit)
    fit.add_argument("--out", required=True, help="folder to save the model in (config.json + memory bank index)")
    fit.add_argument("--overwrite", action="store_true", help="replace a model saved in --out")
    fit.add_argument("--backbone", choices=sorted(BACKBONES), default="efficientnet_lite0",
                     help="feature network (default efficientnet_lite0; lite1 and lite2: the patchcore extra)")
    fit.add_argument("--layers", metavar="A,B[,C]", default=None,
                     help="hooked layers, shallowest first, comma-separated (default: the backbone's, "
                          "_blocks.4,_blocks.10,_blocks.14 for lite0)")
    fit.add_argument("--image-size", type=positive, default=224,
                     help=f"input resolution, at most {MAX_IMAGE_SIZE} (default 224)")
    fit.add_argument("--target-dim", type=positive, default=128, help="patch feature length (default 128)")
    fit.add_argument("--coreset-method", choices=list(COMPRESSION_METHODS), default="v1",
                     help="v1 greedy k-center (default), v2 variance-weighted, random, all (no coreset: full bank)")
    fit.add_argument("--coreset-ratio", type=_cli.float_in(0, 1), default=0.1,
                     help="fraction of patches kept, in (0, 1] (default 0.1)")
    fit.add_argument("--backend", choices=sorted(BACKENDS), default="pqkit_flat",
                     help="memory-bank search (default pqkit_flat, exact)")
    size_help = " (IVF-PQ backends; default auto: chosen from the memory-bank size, see docs/patchcore.md)"
    fit.add_argument("--nlist", type=_size_or_auto, default="auto", help="IVF lists" + size_help)
    fit.add_argument("--m", type=_size_or_auto, default="auto",
                     help="PQ sub-quantizers, a divisor of --target-dim" + size_help)
    fit.add_argument("--nbits", type=_size_or_auto, default="auto", help="bits per sub-quantizer, 1 to 16" + size_help)
    fit.add_argument("--nprobe", type=_size_or_auto, default="auto", help="lists probed per query" + size_help)
    fit.add_argument("--k-factor", type=_cli.positive_float, default=4.0,
                     help="*_ivfpq_refine: candidates per result re-ranked (default 4)")
    fit.add_argument("--refine-m", type=_cli.non_negative_int, default=0,
                     help="*_ivfpq_refine: re-rank with 8-bit PQ codes of this many bytes per vector; "
                          "0 (default) with the exact vectors")
    fit.add_argument("--batch-size", type=positive, default=16)
    fit.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars or lines")

    score = _cli.add_command(commands, "score", run_score,
                             help="score test images with a saved model; print AUROC; write anomaly maps")
    score.add_argument("--model", required=True, help="folder written by 'pqkit patchcore fit'")
    _add_data_arguments(score)
    score.add_argument("--csv", help="write per-image scores to this CSV file")
    score.add_argument("--maps", metavar="DIR",
                       help="write anomaly-map overlays (DIR/<defect>/<name>.png), a contact sheet of the "
                            "highest-scored images (DIR/worst.png) and DIR/index.html")
    score.add_argument("--worst", type=positive, default=16, help="images on the contact sheet (default 16)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --csv file or --maps files")
    score.add_argument("--nprobe", type=positive, default=None, help="override the saved nprobe (ivfpq backends)")
    score.add_argument("--threads", type=positive, default=None, help="threads (default: all cores)")
    score.add_argument("--quiet", action="store_true", help="no progress bars or lines")

    sweep = _cli.add_command(commands, "sweep", run_sweep,
                             help="run experiment 1 (backbones), 2 (coreset), 3 (search) or fullbank from a YAML config")
    sweep.add_argument("--config", required=True, help="YAML file (see bench/patchcore/*.yaml)")
    data = sweep.add_mutually_exclusive_group()
    data.add_argument("--root", metavar="DIR",
                      help="the MVTec-layout category folder, replacing the config's data.root")
    data.add_argument("--sample", action="store_true",
                      help="run on the built-in sample category instead of the config's data")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace the results of an earlier run in the config's output.dir")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
