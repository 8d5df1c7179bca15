"""``pqkit retrieve``: build a gallery from an image folder, query it, serve the web demo.

::

    pqkit retrieve index <folder> --out <gallery> [--index Flat|IVF,Flat|IVF,PQ|auto] [--target-recall 0.95]
                         [--embedder cnn|pixels] [--size 224] [--batch-size 32]
    pqkit retrieve query <gallery> <image> [-k 5] [--json]
    pqkit retrieve query <gallery> --id 17 [-k 5] [--json]
    pqkit retrieve serve <gallery> [--port 8765] [-k 10]

Heavy modules (torch, flask) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535] (0 = any free port), got {value}")
    return value


def _recall(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a recall in (0, 1], got {value}")
    return value


def _fail(message: str) -> int:
    print(f"pqkit retrieve: error: {message}", file=sys.stderr)
    return 1


def run_index(args) -> int:
    import time

    from .gallery import Gallery
    from .images import CNNEmbedder, PixelEmbedder

    if args.embedder == "pixels":
        embedder = PixelEmbedder(size=args.size or 16)
    else:
        embedder = CNNEmbedder(backbone=args.backbone, size=args.size or 224, batch_size=args.batch_size,
                               device=args.device)
    target = args.target_recall
    if args.index == "auto" and target is None:
        target = 0.95
    start = time.perf_counter()
    try:
        Gallery.check_save_target(args.out, overwrite=args.overwrite)  # before the images are embedded
        gallery = Gallery.from_folder(
            args.folder, embedder=embedder, index="Flat" if args.index == "auto" else args.index,
            metric=args.metric, target_recall=target, k=args.k, nprobe=args.nprobe,
            skip_unreadable=args.skip_unreadable, labels_from_subfolders=not args.no_labels,
            progress=not args.quiet,
        )
        gallery.save(args.out, overwrite=args.overwrite)
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    seconds = time.perf_counter() - start
    print(f"{gallery!r}")
    print(f"embedding: {1e3 * gallery.seconds_per_image:.2f} ms per image; total {seconds:.1f} s")
    if gallery.choice is not None:
        c = gallery.choice
        print(f"chosen for {c['k']}-recall@{c['k']} >= {c['target_recall']}: {c['description']} nprobe={c['nprobe']} "
              f"(recall {c['recall']:.3f}, {c['ms_per_query']:.3f} ms/query)")
    print(f"saved to {args.out}")
    return 0


def run_query(args) -> int:
    from .gallery import Gallery

    try:
        gallery = Gallery.load(args.gallery)
        if args.id is not None:
            result = gallery.query_id(args.id, k=args.k)
        elif args.image is not None:
            result = gallery.query_image(args.image, k=args.k)
        else:
            return _fail("give an image path or --id <gallery id>")
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    score = "distance" if gallery.metric == "l2" else "similarity"
    print(f"{'rank':>4}  {'id':>8}  {score:>10}  {'label':<16}  path")
    for rank, (i, s, label, path) in enumerate(zip(result.ids, result.scores, result.labels, result.paths), 1):
        print(f"{rank:>4}  {int(i):>8}  {float(s):>10.4f}  {str(label if label is not None else ''):<16}  {path or ''}")
    print(f"search {result.search_ms:.3f} ms" + (f", embedding {result.embed_ms:.1f} ms" if result.embed_ms else ""))
    return 0


def run_serve(args) -> int:
    from .web import serve

    try:
        serve(args.gallery, host=args.host, port=args.port, k=args.k,
              max_upload_bytes=int(args.max_upload_mb * 2**20))
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    return 0


def register(subparsers) -> None:
    """Add ``retrieve`` with its ``index``, ``query`` and ``serve`` subcommands."""
    retrieve = subparsers.add_parser(
        "retrieve", help="image retrieval: index a folder, query a gallery, serve the web demo",
        description="Image and embedding retrieval on pqkit indexes.",
    )
    commands = retrieve.add_subparsers(dest="retrieve_command", metavar="subcommand")
    retrieve.set_defaults(run=lambda args: retrieve.print_help() or 2)

    index = commands.add_parser("index", help="embed every image under a folder and save a gallery",
                                description="Embed the images under FOLDER (recursively; subfolder names "
                                "become labels) and save a gallery directory.")
    index.add_argument("folder")
    index.add_argument("--out", required=True, help="gallery directory to write")
    index.add_argument("--overwrite", action="store_true", help="replace the gallery already saved in --out")
    index.add_argument("--index", default="Flat",
                       help="'Flat' (exact, default), 'IVF,Flat', 'IVF,PQ', a factory string such as "
                            "'IVF64,PQ16x8', or 'auto' (fastest reaching --target-recall)")
    index.add_argument("--target-recall", type=_recall, default=None,
                       help="choose the fastest index whose k-recall@k reaches this (implies --index auto)")
    index.add_argument("-k", type=_positive_int, default=10, help="k of the target recall (default 10)")
    index.add_argument("--nprobe", type=_positive_int, default=None, help="IVF lists probed per query")
    index.add_argument("--metric", choices=("cosine", "ip", "l2"), default="cosine")
    index.add_argument("--embedder", choices=("cnn", "pixels"), default="cnn",
                       help="'cnn': EfficientNet-Lite0 global features (default); 'pixels': resized raw pixels")
    index.add_argument("--backbone", default="efficientnet_lite0")
    index.add_argument("--size", type=_positive_int, default=None,
                       help="input resolution (default 224 for cnn, 16 for pixels)")
    index.add_argument("--batch-size", type=_positive_int, default=32)
    index.add_argument("--device", default="cpu")
    index.add_argument("--skip-unreadable", action="store_true", help="leave out files that cannot be decoded")
    index.add_argument("--no-labels", action="store_true", help="do not use subfolder names as labels")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(run=run_index)

    query = commands.add_parser("query", help="print the nearest gallery entries of an image or gallery id")
    query.add_argument("gallery")
    query.add_argument("image", nargs="?", default=None, help="query image file")
    query.add_argument("--id", type=int, default=None, help="query by gallery id instead of an image")
    query.add_argument("-k", type=_positive_int, default=5)
    query.add_argument("--json", action="store_true", help="print the result as JSON")
    query.set_defaults(run=run_query)

    serve = commands.add_parser("serve", help="serve the web demo of a gallery on 127.0.0.1")
    serve.add_argument("gallery")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; the demo has no login)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default 8765, 0 = any free port)")
    serve.add_argument("-k", type=_positive_int, default=10)
    serve.add_argument("--max-upload-mb", type=float, default=10.0)
    serve.set_defaults(run=run_serve)
