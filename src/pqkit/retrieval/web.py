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
``GET /image/<id>``             the image file of a gallery entry (only image files inside the
                                gallery's image folder are ever served, see below)
``GET /api/query/<id>?k=``      the same neighbours as JSON
``GET /health``                 ``{"status": "ok", "n": ...}``
==============================  ===============================================================

Bad uploads (no file, an empty file, a file that is not an image, a body over the size limit or
an image over the pixel limit) get the page back with a message saying what was wrong, status
400 or 413, and the server keeps serving.

Limits that hold for any request (each refused with status 413 and the page, never parsed twice):

* the body: the upload limit (``max_upload_bytes``) plus 64 KiB for the form around the file
  (Flask's ``MAX_CONTENT_LENGTH``); the file itself: the upload limit;
* each text field and each part's headers (file name included): 256 KiB
  (``MAX_FORM_MEMORY_SIZE``); the file name: 1,024 characters;
* form parts: 16 (``MAX_FORM_PARTS``; the upload form sends two);
* the image: at most ``max_pixels`` pixels announced by its header (refused before decoding).

Memory: uploads are read as BMP, GIF, JPEG, PNG, TIFF or WebP only. An accepted upload is
decoded and at once reduced to at most :data:`UPLOAD_MAX_SIDE` pixels on its longest side
(uploads within that size are embedded exactly as they are), and a fixed number of uploads at
most are read, decoded and embedded at the same time, so that their worst case fits
``decode_memory_bytes`` (see :func:`upload_memory_bytes`). Request lines and headers are limited
by the HTTP server itself (64 KiB a line, 100 headers; status 431).

``GET /image/<id>`` serves an entry's file only if its real path (symlinks resolved, as
:func:`os.path.realpath`) lies inside the real path of the gallery's image folder
(``Gallery.root``) and ends with an image extension; anything else (an absolute path, a ``..``
escape, a symlink out) gets a 404 with a one-line message, whatever the gallery object holds.
"""

from __future__ import annotations

import base64
import ctypes
import io
import os
import threading
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_DECODE_MEMORY_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_PORT",
    "UPLOAD_MAX_SIDE",
    "create_app",
    "serve",
    "upload_memory_bytes",
]

DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
#: memory that the uploads being decoded and embedded at one time may hold together, at worst
DEFAULT_DECODE_MEMORY_BYTES = 2**30
#: uploads are decoded to at most this many pixels on their longest side (an integer box
#: reduction; far above the embedders' input sizes, e.g. 224)
UPLOAD_MAX_SIDE = 2048
#: the most memory that decoding an upload holds at its peak, per pixel of its declared size,
#: over the accepted formats (pqkit.retrieval.images.IMAGE_FORMATS), measured with Pillow 13 on
#: 6000 x 6000 images decoded with max_side=2048 (bytes a pixel): WebP 16.0 (libwebp's RGBA
#: buffer, Pillow's copy of it, the RGB conversion); progressive CMYK JPEG 9.0 (the coefficient
#: buffers, whatever the scale); float TIFF 9.0; RGBA, LA and CMYK 8.0 (the decoded image and
#: its RGB conversion, 4 bytes a pixel each); 16-bit PNG 6.0; palette 5.0; RGB PNG or TIFF 4.4;
#: baseline JPEG 1.2 (decoded at 1/4 scale); grayscale PNG 1.1
_DECODE_BYTES_PER_PIXEL = 16
#: room for the multipart framing, part headers and the ``k`` field around the uploaded file
_FORM_OVERHEAD_BYTES = 64 * 2**10
#: Werkzeug's limit for one text field and for the buffered headers of one part; it must stay well
#: above the 64 KiB that Werkzeug's multipart parser reads at a time, which it counts against it
_MAX_FORM_FIELD_BYTES = 256 * 2**10
_MAX_FORM_PARTS = 16
_MAX_FILENAME_CHARS = 1024
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


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def _return_memory_promptly(threshold: int = 128 * 2**10, arenas: int = 2) -> bool:
    """Tune glibc's allocator so this process gives freed memory back at once (for the rest of
    the process; a no-op returning False without glibc).

    Pillow allocates a decoded image in blocks of 16 MiB. By default glibc raises its mapping
    threshold after freeing the first such block and serves the next ones from its arenas, one
    per thread up to 8 per core, whose freed memory stays resident (``malloc_trim`` does not
    reach the tops of thread arenas): after a burst of large uploads the server's resident
    memory stayed hundreds of MiB above what it holds. Here allocations of ``threshold`` bytes or
    more are always mapped on their own (unmapped when freed), arena tops over ``threshold`` are
    trimmed, and at most ``arenas`` arenas exist (the threads take turns under the GIL anyway).
    These are the settings of the environment variables ``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_ARENA_MAX``; they act on arenas created later, so
    call this before the server starts its threads.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(_M_MMAP_THRESHOLD, threshold), mallopt(_M_TRIM_THRESHOLD, threshold),
                mallopt(_M_ARENA_MAX, arenas)])


def _thumbnail_data_url(image: np.ndarray, size: int = 160) -> str:
    from PIL import Image

    img = Image.fromarray(image)
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def upload_memory_bytes(max_pixels: int, max_upload_bytes: int) -> int:
    """Worst-case memory one upload holds while it is read, decoded, embedded and answered.

    The sum of:

    * ``max_upload_bytes``: the encoded file, read into memory;
    * Pillow's ``PngImagePlugin.MAX_TEXT_MEMORY`` (64 MiB): PNG text chunks Pillow decompresses
      (other formats' metadata is bounded by the file size);
    * ``16 * max_pixels``: decoding at full size, the decoder's buffers, the decoded image and
      its RGB conversion; 16 bytes a pixel is the most measured over the accepted formats (WebP;
      most formats need 4 to 9, a baseline JPEG about 1 as it is decoded at reduced scale);
    * ``12 * UPLOAD_MAX_SIDE**2``: after the reduction, at most 12 bytes a pixel of the reduced
      size at a time: the reduced image and its RGB conversion (4 bytes a pixel each, as Pillow
      holds them) and the array (3), or later the array and the embedder's or the thumbnail's
      copy of it.

    With the defaults (40,000,000 pixels, 10 MiB): 10,485,760 + 67,108,864 + 640,000,000 +
    50,331,648 = 767,926,272 bytes (about 732 MiB), so :data:`DEFAULT_DECODE_MEMORY_BYTES`
    (1 GiB) lets one upload at a time be decoded and embedded (embeddings run one at a time
    anyway). The embedding model itself (loaded once) is not counted.

    Parameters
    ----------
    max_pixels : int
    max_upload_bytes : int

    Returns
    -------
    int
        Bytes.
    """
    from PIL import PngImagePlugin

    return (int(max_upload_bytes) + int(PngImagePlugin.MAX_TEXT_MEMORY)
            + _DECODE_BYTES_PER_PIXEL * int(max_pixels) + 12 * UPLOAD_MAX_SIDE**2)


def create_app(gallery, *, k: int = 10, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int | None = None, decode_memory_bytes: int = DEFAULT_DECODE_MEMORY_BYTES,
               title: str | None = None):
    """Build the Flask app for a gallery.

    Parameters
    ----------
    gallery : pqkit.retrieval.Gallery
        Queried by id always; by uploaded image when it has an embedder.
    k : int, default 10
        Neighbours shown when the request does not say (``?k=``, at most 100).
    max_upload_bytes : int, default 10 MiB
        Larger uploaded files are refused with status 413 (and bodies larger than this plus
        64 KiB for the rest of the form).
    max_pixels : int, optional
        Images whose header announces more pixels are refused with status 413, before decoding
        (default :data:`pqkit.retrieval.images.MAX_PIXELS`).
    decode_memory_bytes : int, default 1 GiB
        Memory the uploads being decoded and embedded at one time may hold together at worst:
        ``decode_memory_bytes // upload_memory_bytes(max_pixels, max_upload_bytes)`` uploads
        are handled at a time, the others wait (see :func:`upload_memory_bytes`).
    title : str, optional

    Returns
    -------
    flask.Flask

    Raises
    ------
    ValueError
        ``decode_memory_bytes`` is smaller than what one upload may need.
    """
    from flask import Flask, Request, Response, jsonify, render_template, request, send_file
    from werkzeug.exceptions import RequestEntityTooLarge

    from .._validation import check_k, check_positive_int
    from .images import IMAGE_EXTENSIONS, IMAGE_FORMATS, MAX_PIXELS, ImageTooLargeError, decode_image

    default_k = check_k(k)
    max_upload_bytes = check_positive_int(max_upload_bytes, "max_upload_bytes")
    max_pixels = MAX_PIXELS if max_pixels is None else check_positive_int(max_pixels, "max_pixels")
    decode_memory_bytes = check_positive_int(decode_memory_bytes, "decode_memory_bytes")
    per_upload = upload_memory_bytes(max_pixels, max_upload_bytes)
    n_slots = decode_memory_bytes // per_upload
    if n_slots < 1:
        raise ValueError(
            f"decode_memory_bytes={decode_memory_bytes} is less than one upload may need at worst "
            f"({per_upload} bytes for max_pixels={max_pixels} and max_upload_bytes={max_upload_bytes}); "
            "raise decode_memory_bytes or lower max_pixels or max_upload_bytes"
        )
    class UploadRequest(Request):
        """Closes the temporary files of the form's file parts at the end of the request, also
        when parsing failed part way (Werkzeug's parser then drops the files it had made, which
        would stay open until the garbage collector found them)."""

        def _get_file_stream(self, *args, **kwargs):
            stream = super()._get_file_stream(*args, **kwargs)
            self.__dict__.setdefault("_upload_streams", []).append(stream)
            return stream

        def close(self) -> None:
            try:
                super().close()
            finally:
                for stream in self.__dict__.pop("_upload_streams", ()):
                    stream.close()

    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.request_class = UploadRequest
    app.config["GALLERY"] = gallery
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes + _FORM_OVERHEAD_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = _MAX_FORM_FIELD_BYTES
    app.config["MAX_FORM_PARTS"] = _MAX_FORM_PARTS
    lock = threading.Lock()  # one query at a time: the torch model is not shared across threads
    # uploads read, decoded and embedded at one time; n_slots * per_upload <= decode_memory_bytes
    upload_slots = threading.BoundedSemaphore(n_slots)
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

    def requested_k(values) -> int:
        """``k`` from the query string or a parsed form (at most 100), else the default."""
        try:
            value = int(values.get("k", default_k))
        except ValueError:  # also for a number too long for int()
            value = default_k
        return min(max(value, 1), 100)

    def page_ids(page: int) -> list[int]:
        start = page * _THUMBS_PER_PAGE
        return [int(i) for i in gallery.ids[start:start + _THUMBS_PER_PAGE]]

    def render(status=200, k=None, **context):
        """The page; reads only the query string, never the body (error paths call it too)."""
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
                               k=requested_k(request.args) if k is None else k, **context), status

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
                result = gallery.query_id(gallery_id, k=requested_k(request.args))
        except ValueError as exc:
            return render(404, error=str(exc))
        return render(result=result_view(result), query_label=gallery.label_of(gallery_id))

    @app.get("/api/query/<int:gallery_id>")
    def api_query(gallery_id: int):
        try:
            with lock:
                result = gallery.query_id(gallery_id, k=requested_k(request.args))
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 404
        return jsonify(result.to_dict() | {"paths": None})

    def not_served(message: str):
        return Response(message + "\n", status=404, mimetype="text/plain")

    @app.get("/image/<int:gallery_id>")
    def image(gallery_id: int):
        if gallery.paths is None or gallery.root is None:
            return not_served("this gallery has no image folder; no images are served")
        try:
            path = gallery.path_of(gallery_id)
            root = os.path.realpath(gallery.root)
            # resolved now, at the request: what is opened below is this symlink-free path
            real = os.path.realpath(path)
            inside = os.path.commonpath([root, real]) == root and real != root
        except ValueError:  # an unknown id, a NUL in a path, paths on different drives
            return not_served(f"no image for gallery id {gallery_id}")
        if not inside:
            return not_served(f"the image of gallery id {gallery_id} is not inside the gallery's "
                              "image folder; it is not served")
        if os.path.splitext(real)[1].lower() not in IMAGE_EXTENSIONS or not os.path.isfile(real):
            return not_served(f"the image of gallery id {gallery_id} is not an image file")
        return send_file(real, max_age=3600)

    def discard_unread_body() -> None:
        """Read and drop what is left of a refused body (at most _DRAIN_LIMIT bytes), so the
        browser receives the page rather than a reset connection. Never parses anything."""
        length = request.content_length
        if length is None:
            return  # chunked: Werkzeug's server discards what the client still sends
        if length > app.config["MAX_CONTENT_LENGTH"]:
            # refused on the header, before a byte was read: the raw stream holds all of it
            stream, remaining = request.input_stream, min(length, _DRAIN_LIMIT)
        else:
            # the parser stopped part way: the rest of the stream it read from, up to its length
            stream, remaining = request.stream, length
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def refuse_oversize_request():
        discard_unread_body()
        length = request.content_length
        if length is not None and length > app.config["MAX_CONTENT_LENGTH"]:
            message = (f"the upload is too large: {_format_bytes(length)}, the limit is "
                       f"{_format_bytes(max_upload_bytes)}; choose a smaller image")
        else:
            message = (f"the upload request is too large: the limits are {_format_bytes(max_upload_bytes)} "
                       f"for the image, {_format_bytes(_MAX_FORM_FIELD_BYTES)} for any form field or part "
                       f"header, and {_MAX_FORM_PARTS} form parts; send the upload form as it is")
        return render(413, k=default_k, error=message)

    @app.post("/upload")
    def upload():
        if not info["can_upload"]:
            return render(400, k=default_k,
                          error="this gallery was built from vectors without an image embedder, so it "
                                "can only be queried by picking a gallery entry")
        try:
            # parsed once, within MAX_CONTENT_LENGTH, MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS
            form, files = request.form, request.files
        except RequestEntityTooLarge:
            return refuse_oversize_request()
        k = requested_k(form)
        file = files.get("image")
        if file is None or not file.filename:
            return render(400, k=k, error="no file was chosen; choose an image file (PNG, JPEG, ...) to upload")
        if len(file.filename) > _MAX_FILENAME_CHARS:
            return render(413, k=k, error=f"the upload's file name is {len(file.filename)} characters long, "
                                          f"the limit is {_MAX_FILENAME_CHARS}; rename the file")
        name = Path(file.filename).name
        with upload_slots:  # bounds the memory of the uploads in progress (see upload_memory_bytes)
            data = file.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                return render(413, k=k, error=f"the upload {name!r} is larger than the limit of "
                                              f"{_format_bytes(max_upload_bytes)}; choose a smaller image")
            try:
                image_array = decode_image(data, name=f"the upload {name!r}", max_pixels=max_pixels,
                                           max_side=UPLOAD_MAX_SIDE, formats=IMAGE_FORMATS)
            except ImageTooLargeError as exc:
                return render(413, k=k, error=str(exc))
            except ValueError as exc:
                return render(400, k=k, error=str(exc))
            finally:
                del data
            try:
                with lock:
                    result = gallery.query_image(image_array, k=k)
            except ValueError as exc:  # e.g. an all-black image has no direction under cosine
                return render(400, k=k, error=f"the upload {name!r} cannot be queried: {exc}")
            thumb = _thumbnail_data_url(image_array)
        return render(k=k, result=result_view(result), upload_name=name, upload_thumb=thumb)

    @app.errorhandler(413)
    def too_large(_error):
        return refuse_oversize_request()

    return app


def serve(gallery_path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, k: int = 10,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, ready=None, *, max_pixels: int | None = None,
          decode_memory_bytes: int = DEFAULT_DECODE_MEMORY_BYTES) -> None:
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
    max_pixels : int, optional
    decode_memory_bytes : int, default 1 GiB
        See :func:`create_app`.
    """
    from werkzeug.serving import make_server

    from .gallery import Gallery

    gallery = Gallery.load(gallery_path)
    _return_memory_promptly()  # this process is the server's: decoded uploads' memory goes back
    if gallery.embedder_spec is not None:
        # load the backbone (and run it once) now, so the first upload is not the slow one
        gallery.embedder([np.zeros((32, 32, 3), dtype=np.uint8)])
    app = create_app(gallery, k=k, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels,
                     decode_memory_bytes=decode_memory_bytes)
    server = make_server(host, port, app, threaded=True)
    url = f"http://{host}:{server.server_port}/"
    (ready or (lambda u: print(f"serving {gallery!r} at {u} (Ctrl-C stops)", flush=True)))(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
