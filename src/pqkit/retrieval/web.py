"""A small local web demo of a gallery (Flask): pick or upload an image, see its nearest neighbours.

Start it with ``pqkit retrieve serve <gallery>`` (served on 127.0.0.1 only) or::

    from pqkit.retrieval.web import create_app
    create_app(Gallery.load("my-gallery")).run(host="127.0.0.1", port=8765)

Pages and endpoints:

==============================  ===============================================================
``GET /``                       a page of gallery thumbnails (``?page=``) and the upload form
``GET /query/<id>?k=``          the k nearest neighbours of a gallery entry, with scores and
                                the search time
``POST /upload``                the k nearest neighbours of an uploaded image (form field
                                ``image``; ``k`` optional), with embedding and search times
``GET /image/<id>``             the image file of a gallery entry (only files of the gallery
                                are ever served)
``GET /api/query/<id>?k=``      the same neighbours as JSON
``GET /health``                 ``{"status": "ok", "n": ...}``
==============================  ===============================================================

Bad uploads (no file, an empty file, a file that is not an image, a body over the size limit or
an image over the pixel limit) get the page back with a message saying what was wrong, status
400 or 413, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_PORT", "create_app", "serve"]

DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
#: an over-limit upload body is read and discarded up to this many bytes (so the browser gets the
#: error page instead of a reset connection); beyond it the connection is simply closed
_DRAIN_LIMIT = 256 * 2**20
_THUMBS_PER_PAGE = 48


def _format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _thumbnail_data_url(image: np.ndarray, size: int = 160) -> str:
    from PIL import Image

    img = Image.fromarray(image)
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(gallery, *, k: int = 10, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int | None = None, title: str | None = None):
    """Build the Flask app for a gallery.

    Parameters
    ----------
    gallery : pqkit.retrieval.Gallery
        Queried by id always; by uploaded image when it has an embedder.
    k : int, default 10
        Neighbours shown when the request does not say (``?k=``, at most 100).
    max_upload_bytes : int, default 10 MiB
        Larger request bodies are refused with status 413.
    max_pixels : int, optional
        Larger images are refused (default :data:`pqkit.retrieval.images.MAX_PIXELS`).
    title : str, optional

    Returns
    -------
    flask.Flask
    """
    from flask import Flask, abort, jsonify, render_template, request, send_file

    from .._validation import check_k, check_positive_int
    from .images import IMAGE_EXTENSIONS, MAX_PIXELS, decode_image

    default_k = check_k(k)
    max_upload_bytes = check_positive_int(max_upload_bytes, "max_upload_bytes")
    max_pixels = MAX_PIXELS if max_pixels is None else check_positive_int(max_pixels, "max_pixels")
    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config["GALLERY"] = gallery
    lock = threading.Lock()  # one query at a time: the torch model is not shared across threads
    info = {
        "title": title or "pqkit image retrieval",
        "n": len(gallery),
        "d": gallery.d,
        "index": gallery.description,
        "metric": gallery.metric,
        "nprobe": getattr(gallery.index, "nprobe", None),
        "embedder": gallery.embedder_spec,
        "has_images": gallery.paths is not None,
        "can_upload": gallery.embedder_spec is not None,
        "max_upload": _format_bytes(max_upload_bytes),
    }

    def requested_k() -> int:
        try:
            value = int(request.values.get("k", default_k))
        except ValueError:
            value = default_k
        return min(max(value, 1), 100)

    def page_ids(page: int) -> list[int]:
        start = page * _THUMBS_PER_PAGE
        return [int(i) for i in gallery.ids[start:start + _THUMBS_PER_PAGE]]

    def render(status=200, **context):
        try:
            page = max(int(request.args.get("page", 0)), 0)
        except ValueError:
            page = 0
        n_pages = max(1, -(-len(gallery) // _THUMBS_PER_PAGE))
        page = min(page, n_pages - 1)
        thumbs = [{"id": i, "label": gallery.label_of(i)} for i in page_ids(page)]
        context.setdefault("error", None)
        context.setdefault("result", None)
        return render_template("retrieval.html", info=info, thumbs=thumbs, page=page, n_pages=n_pages,
                               k=requested_k(), **context), status

    def result_view(result):
        rows = []
        for rank, (i, score, label) in enumerate(zip(result.ids, result.scores, result.labels), start=1):
            rows.append({"rank": rank, "id": int(i), "score": float(score), "label": label})
        return {"rows": rows, "search_ms": result.search_ms, "embed_ms": result.embed_ms,
                "query_id": result.query_id,
                "score_name": "distance (squared L2, smaller is closer)" if gallery.metric == "l2"
                else f"{gallery.metric} similarity (larger is closer)"}

    @app.get("/")
    def home():
        return render()

    @app.get("/health")
    def health():
        return jsonify({"status": "ok", "n": len(gallery)})

    @app.get("/query/<int:gallery_id>")
    def query(gallery_id: int):
        try:
            with lock:
                result = gallery.query_id(gallery_id, k=requested_k())
        except ValueError as exc:
            return render(404, error=str(exc))
        return render(result=result_view(result), query_label=gallery.label_of(gallery_id))

    @app.get("/api/query/<int:gallery_id>")
    def api_query(gallery_id: int):
        try:
            with lock:
                result = gallery.query_id(gallery_id, k=requested_k())
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 404
        return jsonify(result.to_dict() | {"paths": None})

    @app.get("/image/<int:gallery_id>")
    def image(gallery_id: int):
        if gallery.paths is None:
            abort(404)
        try:
            path = Path(gallery.path_of(gallery_id))
        except ValueError:
            abort(404)
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            abort(404)  # only image files, even if a gallery's metadata names something else
        return send_file(path, max_age=3600)

    @app.post("/upload")
    def upload():
        if not info["can_upload"]:
            return render(400, error="this gallery was built from vectors without an image embedder, so it "
                                     "can only be queried by picking a gallery entry")
        length = request.content_length
        if length is not None and length > max_upload_bytes:
            # read and discard the body so the browser receives this page rather than a reset
            # connection (bounded: a body over _DRAIN_LIMIT is cut off)
            stream, remaining = request.stream, min(length, _DRAIN_LIMIT)
            while remaining > 0:
                chunk = stream.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            return render(413, error=f"the upload is too large: {_format_bytes(length)}, the limit is "
                                     f"{_format_bytes(max_upload_bytes)}; choose a smaller image")
        file = request.files.get("image")
        if file is None or not file.filename:
            return render(400, error="no file was chosen; choose an image file (PNG, JPEG, ...) to upload")
        data = file.read(max_upload_bytes + 1)
        name = Path(file.filename).name
        if len(data) > max_upload_bytes:
            return render(413, error=f"the upload {name!r} is larger than the limit of "
                                     f"{_format_bytes(max_upload_bytes)}; choose a smaller image")
        try:
            image_array = decode_image(data, name=f"the upload {name!r}", max_pixels=max_pixels)
        except ValueError as exc:
            return render(400, error=str(exc))
        with lock:
            result = gallery.query_image(image_array, k=requested_k())
        return render(result=result_view(result), upload_name=name,
                      upload_thumb=_thumbnail_data_url(image_array))

    @app.errorhandler(413)
    def too_large(_error):
        return render(413, error=f"the upload is too large; the limit is {_format_bytes(max_upload_bytes)}")

    return app


def serve(gallery_path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, k: int = 10,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, ready=None) -> None:
    """Load a gallery and serve the demo until Ctrl-C.

    Parameters
    ----------
    gallery_path : str or os.PathLike
        A directory written by :meth:`pqkit.retrieval.Gallery.save`.
    host : str, default "127.0.0.1"
        The demo has no authentication: keep it on the loopback interface.
    port : int, default 8765
        0 picks a free port.
    k : int, default 10
    max_upload_bytes : int
    ready : callable(url), optional
        Called with the server's URL once it listens (default: print it).
    """
    from werkzeug.serving import make_server

    from .gallery import Gallery

    gallery = Gallery.load(gallery_path)
    if gallery.embedder_spec is not None:
        # load the backbone (and run it once) now, so the first upload is not the slow one
        gallery.embedder([np.zeros((32, 32, 3), dtype=np.uint8)])
    app = create_app(gallery, k=k, max_upload_bytes=max_upload_bytes)
    server = make_server(host, port, app, threaded=True)
    url = f"http://{host}:{server.server_port}/"
    (ready or (lambda u: print(f"serving {gallery!r} at {u} (Ctrl-C stops)", flush=True)))(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
