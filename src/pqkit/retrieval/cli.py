"""``pqkit retrieve``: build a gallery from an image folder, query it, serve the web demo.

::

    pqkit retrieve index <folder> --out <gallery> [--index Flat|IVF,Flat|IVF,PQ|auto] [--target-recall 0.95]
                         [--refine auto|flat|pq|none] [--memory-budget-mb MB]
                         [--embedder cnn|pixels] [--size 224] [--batch-size 32] [--overwrite]
    pqkit retrieve info <gallery> [--json]
    pqkit retrieve query <gallery> <image> [-k 5] [--json]
    pqkit retrieve query <gallery> --id 17 [-k 5] [--json]
    pqkit retrieve serve <gallery> [--port 8765] [-k 10]

Heavy modules (torch, flask) are imported only when a command runs. Arguments are checked before
any image is embedded (the output folder, the embedder and its device, the index against the
number of images); a user error ends the command with one line ``pqkit retrieve <command>: error:
...`` and status 2 (:mod:`pqkit._cli`). A saved gallery is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json

from .. import _cli

__all__ = ["register"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535] (0 = any free port), got {text!r}")
    return value


def _check_index(name: str, n: int, d: int, metric: str, nprobe, refine: str = "auto", memory_budget_mb=None) -> None:
    """Refuse, before embedding, an index name or nprobe that a gallery of n d-dimensional vectors
    cannot have (unknown name, more lists than images, nprobe above nlist, over the memory budget)."""
    import pqkit

    from .indexing import resolve_description

    index = pqkit.index_factory(d, resolve_description(name, n, d, metric, refine, memory_budget_mb), metric=metric)
    if nprobe is not None:
        if not hasattr(index, "nprobe"):
            raise ValueError(f"--nprobe applies to IVF indexes; --index {name!r} has no lists")
        index.nprobe = nprobe


def run_index(args) -> int:
    import time

    import numpy as np

    from .gallery import Gallery
    from .images import CNNEmbedder, PixelEmbedder, list_images

    _cli.check_creatable_dir(args.out, "--out")
    Gallery.check_save_target(args.out, overwrite=args.overwrite)  # before the images are embedded
    try:
        if args.embedder == "pixels":
            embedder = PixelEmbedder(size=args.size or 16)
        else:
            embedder = CNNEmbedder(backbone=args.backbone, size=args.size or 224, batch_size=args.batch_size,
                                   device=args.device)
    except ValueError as exc:
        raise ValueError(f"--embedder {args.embedder} --size {args.size}: {exc}") from None
    files = list_images(args.folder)  # a missing or empty folder is refused here
    target = args.target_recall
    if args.index == "auto" and target is None:
        target = 0.95
    if target is None:
        # the CNN's dimension is known once it ran: this also loads the backbone (and fails on a bad one) now
        d = embedder.dim if args.embedder == "pixels" else embedder([np.zeros((32, 32, 3), np.uint8)]).shape[1]
        _check_index(args.index, len(files), d, args.metric, args.nprobe, args.refine, args.memory_budget_mb)
    start = time.perf_counter()
    gallery = Gallery.from_folder(
        args.folder, embedder=embedder, index="Flat" if args.index == "auto" else args.index,
        metric=args.metric, target_recall=target, k=args.k, nprobe=args.nprobe,
        skip_unreadable=args.skip_unreadable, labels_from_subfolders=not args.no_labels,
        progress=not args.quiet, refine=args.refine, memory_budget_mb=args.memory_budget_mb,
    )
    gallery.save(args.out, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    print(f"{gallery!r}")
    print(f"embedding: {1e3 * gallery.seconds_per_image:.2f} ms per image; total {seconds:.1f} s")
    if gallery.choice is not None:
        c = gallery.choice
        print(f"chosen for {c['k']}-recall@{c['k']} >= {c['target_recall']}: {c['description']} nprobe={c['nprobe']} "
              f"(recall {c['recall']:.3f}, {c['ms_per_query']:.3f} ms/query)")
    print(_index_line(gallery.info()))
    print(f"saved to {args.out}")
    return 0


def _index_line(info: dict) -> str:
    """One line: the index built, its re-ranking, its expected recall and its memory."""
    settings = "".join(f" {key}={info[key]:g}" for key in ("nprobe", "k_factor") if info[key] is not None)
    refine = f", re-ranked with {info['refine']}" if info["refine"] else ""
    if info["recall"] is None:
        recall = "recall not measured"
    else:
        recall = (f"expected {info['recall_k']}-recall@{info['recall_k']} {info['recall']:.3f} (measured on "
                  f"{info['recall_queries']} gallery vectors)")
    return (f"index: {info['description']}{settings}{refine}; {recall}; "
            f"memory {info['memory_bytes'] / 2**20:.1f} MiB")


def run_info(args) -> int:
    from .gallery import Gallery

    info = Gallery.load(args.gallery).info()
    if args.json:
        print(json.dumps(info))
        return 0
    labels = "no labels" if info["labels"] is None else f"{info['labels']} labels"
    embedder = "vectors only" if info["embedder"] is None else json.dumps(info["embedder"])
    print(f"gallery: {info['n']} vectors of dimension {info['d']}, metric {info['metric']}, {labels}, "
          f"embedder {embedder}")
    print(_index_line(info))
    return 0


def run_query(args) -> int:
    from .gallery import Gallery

    if args.id is not None and args.image is not None:
        raise ValueError("give an image path or --id <gallery id>, not both")
    if args.id is None and args.image is None:
        raise ValueError("give an image path or --id <gallery id>")
    gallery = Gallery.load(args.gallery)
    if args.id is not None:
        result = gallery.query_id(args.id, k=args.k)
    else:
        result = gallery.query_image(args.image, k=args.k)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    score = "distance" if gallery.metric == "l2" else "similarity"
    print(f"{'rank':>4}  {'id':>8}  {score:>10}  {'label':<16}  path")
    for rank, (i, s, label, path) in enumerate(zip(result.ids, result.scores, result.labels, result.paths), 1):
        print(f"{rank:>4}  {int(i):>8}  {float(s):>10.4f}  {str(label if label is not None else ''):<16}  {path or ''}")
    print(f"search {result.search_ms:.3f} ms" + (f", embedding {result.embed_ms:.1f} ms" if result.embed_ms else ""))
    return 0


def _check_can_listen(host: str, port: int) -> None:
    """Refuse an address the server could not listen on (unknown host, port in use) before the
    gallery is loaded; the server itself would end the process with its own message."""
    import socket

    where = f"cannot serve on {host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"{where}: {exc.strerror}; give --host an address of this machine "
                         "(default 127.0.0.1)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"{where}: {exc.strerror}; choose another --port (0 = any free port)") from None


def run_serve(args) -> int:
    from .web import serve

    max_upload_bytes = int(args.max_upload_mb * 2**20)
    if max_upload_bytes < 1:
        raise ValueError(f"--max-upload-mb must allow at least one byte, got {args.max_upload_mb:g}")
    _check_can_listen(args.host, args.port)
    serve(args.gallery, host=args.host, port=args.port, k=args.k, max_upload_bytes=max_upload_bytes)
    return 0


def register(subparsers) -> None:
    """Add ``retrieve`` with its ``index``, ``query`` and ``serve`` subcommands."""
    retrieve = subparsers.add_parser(
        "retrieve", help="image retrieval: index a folder, query a gallery, serve the web demo",
        description="Image and embedding retrieval on pqkit indexes.",
    )
    commands = retrieve.add_subparsers(dest="retrieve_command", metavar="subcommand")
    retrieve.set_defaults(run=lambda args: retrieve.print_help() or 2)
    positive = _cli.positive_int

    index = _cli.add_command(commands, "index", run_index,
                             help="embed every image under a folder and save a gallery",
                             description="Embed the images under FOLDER (recursively; subfolder names "
                             "become labels) and save a gallery directory.")
    index.add_argument("folder")
    index.add_argument("--out", required=True, help="gallery directory to write")
    index.add_argument("--overwrite", action="store_true", help="replace a gallery saved in --out")
    index.add_argument("--index", default="Flat",
                       help="'Flat' (exact, default), 'IVF,Flat', 'IVF,PQ', a factory string such as "
                            "'IVF64,PQ16x8', or 'auto' (fastest reaching --target-recall)")
    index.add_argument("--target-recall", type=_cli.float_in(0, 1), default=None,
                       help="choose the fastest index whose k-recall@k reaches this (implies --index auto)")
    index.add_argument("--refine", choices=("auto", "flat", "pq", "none"), default="auto",
                       help="re-ranking of an IVF,PQ index: 'auto' (default: exact vectors or 8-bit PQ codes, by "
                            "gallery size and --memory-budget-mb), 'flat' (exact vectors), 'pq' (8-bit PQ codes), "
                            "'none' (rank by the IVF-PQ codes alone, less accurate)")
    index.add_argument("--memory-budget-mb", type=_cli.positive_float, default=None,
                       help="largest index memory in MiB: picks the re-ranking of IVF,PQ and limits --target-recall")
    index.add_argument("-k", type=positive, default=10, help="k of the target recall (default 10)")
    index.add_argument("--nprobe", type=positive, default=None, help="IVF lists probed per query")
    index.add_argument("--metric", choices=("cosine", "ip", "l2"), default="cosine")
    index.add_argument("--embedder", choices=("cnn", "pixels"), default="cnn",
                       help="'cnn': EfficientNet-Lite0 global features (default); 'pixels': resized raw pixels")
    index.add_argument("--backbone", default="efficientnet_lite0")
    index.add_argument("--size", type=positive, default=None,
                       help="input resolution (default 224 for cnn, at most 4096; 16 for pixels, at most 1024)")
    index.add_argument("--batch-size", type=positive, default=32)
    index.add_argument("--device", type=_cli.device, default="cpu",
                       help="'cpu' (default), 'cuda' or 'cuda:N' (a device torch sees)")
    index.add_argument("--skip-unreadable", action="store_true", help="leave out files that cannot be decoded")
    index.add_argument("--no-labels", action="store_true", help="do not use subfolder names as labels")
    index.add_argument("--quiet", action="store_true", help="no progress bar")

    info = _cli.add_command(commands, "info", run_info,
                            help="print a gallery's size, index, memory and the recall measured when it was built")
    info.add_argument("gallery")
    info.add_argument("--json", action="store_true", help="print the information as JSON")

    query = _cli.add_command(commands, "query", run_query,
                             help="print the nearest gallery entries of an image or gallery id")
    query.add_argument("gallery")
    query.add_argument("image", nargs="?", default=None, help="query image file")
    query.add_argument("--id", type=_cli.non_negative_int, default=None,
                       help="query by gallery id instead of an image")
    query.add_argument("-k", type=positive, default=5)
    query.add_argument("--json", action="store_true", help="print the result as JSON")

    serve = _cli.add_command(commands, "serve", run_serve, help="serve the web demo of a gallery on 127.0.0.1")
    serve.add_argument("gallery")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; the demo has no login)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default 8765, 0 = any free port)")
    serve.add_argument("-k", type=positive, default=10)
    serve.add_argument("--max-upload-mb", type=_cli.positive_float, default=10.0,
                       help="largest upload in MiB, a finite number > 0 (default 10)")
