"""The web demo under hostile requests: which files ``/image/<id>`` serves, 413 for every oversize
part of an upload request, bounded image decoding, and the server's memory under a burst of
large-dimension uploads (measured on a ``pqkit retrieve serve`` subprocess).

Every server listens on 127.0.0.1 only, and every test sends a fixed, small number of requests.
"""

from __future__ import annotations

import http.client
import io
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pqkit.retrieval.gallery import Gallery
from pqkit.retrieval.images import (
    MAX_PIXELS,
    ImageTooLargeError,
    PixelEmbedder,
    decode_image,
)
from pqkit.retrieval.web import (
    DEFAULT_DECODE_MEMORY_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    UPLOAD_MAX_SIDE,
    create_app,
    upload_memory_bytes,
)

from tests.conftest import skip_or_fail

MiB = 2**20
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png(rgb) -> bytes:
    return _encode(Image.fromarray(np.asarray(rgb, dtype=np.uint8)))


def _large_png(side: int) -> bytes:
    """A side x side RGB PNG of one colour with a red corner: ~130 KB for 6300 x 6300."""
    image = Image.new("RGB", (side, side), COLOURS["green"])
    image.paste(COLOURS["red"], (0, 0, 64, 64))
    return _encode(image, compress_level=9)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three colour classes of small PNGs, and a gallery of them (pixel embedder)."""
    root = tmp_path_factory.mktemp("web_limits")
    rng = np.random.default_rng(3)
    for name, colour in COLOURS.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(5):
            noise = rng.integers(-40, 40, size=(24, 24, 3))
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(
                root / "images" / name / f"{i}.png")
    Gallery.from_folder(root / "images", embedder=PixelEmbedder(size=8)).save(root / "gallery")
    return root


@pytest.fixture(scope="module")
def gallery(image_folder):
    return Gallery.load(image_folder / "gallery")


# ---------------------------------------------------------------------------------------------
# GET /image/<id>: only image files inside the gallery's image folder


def _get(client, url: str) -> tuple[int, bytes]:
    response = client.get(url)
    try:
        return response.status_code, response.get_data()
    finally:
        response.close()  # a served file stays open until the response is closed


def test_image_route_serves_only_files_inside_the_image_folder(tmp_path):
    images, outside = tmp_path / "images", tmp_path / "outside"
    (images / "sub").mkdir(parents=True)
    outside.mkdir()
    inside_bytes = _png(np.full((8, 8, 3), 10))
    secret_bytes = _png(np.full((9, 9, 3), 250))
    (images / "a.png").write_bytes(inside_bytes)
    (images / "sub" / "b.png").write_bytes(inside_bytes)
    (images / "notes.txt").write_text("not an image")
    (outside / "secret.png").write_bytes(secret_bytes)
    (images / "link.png").symlink_to(outside / "secret.png")
    (images / "dirlink").symlink_to(outside, target_is_directory=True)
    (images / "inner.png").symlink_to(images / "a.png")
    cases = [  # (path stored in the gallery, served?)
        ("a.png", True),
        ("sub/b.png", True),
        ("inner.png", True),  # a symlink that stays inside
        ("sub/../a.png", True),
        (str(outside / "secret.png"), False),  # absolute
        ("../outside/secret.png", False),
        ("sub/../../outside/secret.png", False),
        ("link.png", False),  # a symlink pointing out
        ("dirlink/secret.png", False),  # a directory symlink pointing out
        ("notes.txt", False),  # inside, not an image
        ("missing.png", False),
        (".", False),  # the folder itself
    ]
    vectors = np.random.default_rng(0).standard_normal((len(cases), 4)).astype(np.float32)
    # built in memory: whatever Gallery.load would refuse, the route must check on its own
    built = Gallery.from_vectors(vectors, paths=[p for p, _ in cases], root=str(images))
    client = create_app(built).test_client()
    for i, (path, served) in enumerate(cases):
        status, body = _get(client, f"/image/{i}")
        if served:
            assert status == 200 and body == inside_bytes, path
        else:
            assert status == 404, (path, status)
            assert secret_bytes not in body and len(body) < 200 and body.endswith(b"\n"), (path, body)
    assert b"not inside the gallery's image folder" in _get(client, "/image/4")[1]

    # the same through a root that is itself a symlink to the folder
    linked_root = tmp_path / "root-link"
    linked_root.symlink_to(images, target_is_directory=True)
    via_link = Gallery.from_vectors(vectors[:2], paths=["a.png", "../outside/secret.png"], root=str(linked_root))
    client = create_app(via_link).test_client()
    assert _get(client, "/image/0") == (200, inside_bytes)
    assert _get(client, "/image/1")[0] == 404

    # no image folder at all: nothing is served, even an absolute path
    rootless = Gallery.from_vectors(vectors[:1], paths=[str(images / "a.png")])
    status, body = _get(create_app(rootless).test_client(), "/image/0")
    assert status == 404 and b"no image folder" in body


# ---------------------------------------------------------------------------------------------
# 413 for every oversize part of an upload request


def _part(name: str, value: bytes, filename: str | None = None, content_type: str | None = None):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"Content-Disposition: {disposition}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
    return headers.encode(), value


def _multipart(parts) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n" + value + b"\r\n" for head, value in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _send(port: int, body: bytes, content_type: str, headers=None, chunked=False, path="/upload"):
    """POST raw bytes to 127.0.0.1:port; (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if chunked:
            pieces = iter([body[i:i + 65536] for i in range(0, len(body), 65536)])
            connection.request("POST", path, pieces, all_headers, encode_chunked=True)
        else:
            connection.request("POST", path, body, all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def served_app(gallery):
    """``create_app`` with its default limits (those of ``pqkit retrieve serve``), served by
    Werkzeug's threaded server in a thread on a free port of 127.0.0.1."""
    from werkzeug.serving import make_server

    app = create_app(gallery, k=4)

    @app.post("/form-echo")
    def form_echo():  # parses the form outside the upload route: only the 413 handler answers
        from flask import request

        return str(len(request.form))

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


def test_every_oversize_request_part_gets_413(served_app):
    port = served_app
    query = _png(np.full((20, 30, 3), COLOURS["blue"]))
    image = _part("image", query, "query.png", "image/png")
    limit = DEFAULT_MAX_UPLOAD_BYTES
    cases = {  # name: (parts, chunked, words of the message)
        "body over the limit": ([_part("image", b"\0" * (limit + MiB), "q.png", "image/png")], False, "too large"),
        "chunked body over the limit": ([_part("image", b"\0" * (limit + MiB), "q.png")], True, "too large"),
        "file just over the limit": ([_part("image", b"\0" * (limit + 10), "q.png", "image/png")], False,
                                     "larger than the limit"),
        "3 MB form field": ([image, _part("k", b"1" * (3 * MiB))], False, "too large"),
        "300 kB form field": ([image, _part("k", b"1" * 300_000)], False, "form field"),
        "chunked 300 kB form field": ([image, _part("k", b"1" * 300_000)], True, "form field"),
        "3 MB file name": ([_part("image", query, "a" * (3 * MiB) + ".png", "image/png")], False, "too large"),
        "300 kB file name": ([_part("image", query, "a" * 300_000 + ".png", "image/png")], False, "part header"),
        "2,000-character file name": ([_part("image", query, "a" * 2000 + ".png", "image/png")], False,
                                      "2004 characters long, the limit is 1024"),
        "3 MB part header": ([_part("image", query, "q.png", "image/" + "x" * (3 * MiB))], False, "too large"),
        "300 kB part header": ([_part("image", query, "q.png", "image/" + "x" * 300_000)], False, "part header"),
        "17 form parts": ([image] + [_part(f"f{i}", b"x") for i in range(16)], False, "16 form parts"),
        "2,000 form parts": ([image] + [_part(f"f{i}", b"x") for i in range(1999)], False, "16 form parts"),
        "image over the pixel limit": ([_part("image", _large_png(6400), "big.png", "image/png")], False,
                                       f"6400x6400 = 40960000 pixels, at most {MAX_PIXELS}"),
    }
    seen = {}
    for name, (parts, chunked, words) in cases.items():
        status, page = _send(port, *_multipart(parts), chunked=chunked)
        seen[name] = status
        error = re.search(rb'id="error"[^>]*>(.*?)<', page, re.S)
        assert status == 413 and error and words.encode() in error.group(1), (name, status, page[:300])
    assert set(seen.values()) == {413}, seen

    # a 413 raised where no route catches it: the handler answers without parsing again
    status, page = _send(port, *_multipart([_part("k", b"1" * 300_000)]), path="/form-echo")
    assert status == 413 and b"form field" in page
    # request lines and headers are the HTTP server's (http.server): it answers 431 and closes
    # the connection at once, so the client may see the reset instead; never a 500
    body, content_type = _multipart([image])
    for headers in ({"X-Filler": "x" * 100_000}, {f"X-Filler-{i}": "x" for i in range(150)}):
        try:
            status = _send(port, body, content_type, headers=headers)[0]
        except ConnectionError:
            status = "connection closed"
        assert status in (431, "connection closed")
    # and the server still answers uploads
    status, page = _send(port, body, content_type)
    assert status == 200 and page.count(b'class="result"') == 4


# ---------------------------------------------------------------------------------------------
# bounded decoding


def test_decode_image_bounds_its_output():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    for mode in ("RGB", "L", "P", "RGBA", "1"):
        data = _encode(Image.fromarray(pixels).convert(mode))
        full = decode_image(data)
        assert full.shape == (300, 500, 3)
        assert np.array_equal(decode_image(data, max_side=500), full), mode  # within the bound: as before
        reduced = decode_image(data, max_side=100)
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").reduce(5))
        assert reduced.shape == (60, 100, 3) and np.array_equal(reduced, expected), mode
    jpeg = _encode(Image.fromarray(rng.integers(0, 256, size=(1200, 1600, 3), dtype=np.uint8)), "JPEG")
    assert decode_image(jpeg, max_side=400).shape == (300, 400, 3)  # DCT-scaled to 1/4
    assert decode_image(jpeg, max_side=700).shape == (300, 400, 3)  # 1/2 is 800 wide: then halved
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(_encode(Image.new("L", (5000, 3000))), name="x.png", max_pixels=10_000_000)
    assert (info.value.width, info.value.height, info.value.max_pixels) == (5000, 3000, 10_000_000)
    assert "5000x3000 = 15000000 pixels, at most 10000000" in str(info.value)
    tga = _encode(Image.fromarray(pixels), "TGA")
    assert decode_image(tga).shape == (300, 500, 3)
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(tga, formats=("PNG", "JPEG"))
    with pytest.raises(ValueError, match="max_side must be >= 1"):
        decode_image(jpeg, max_side=0)


def test_upload_memory_arithmetic():
    # the documented default: 10 MiB + 64 MiB (PNG text) + 16 B x 40e6 + 12 B x 2048^2
    assert upload_memory_bytes(MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES) == 767_926_272
    assert DEFAULT_DECODE_MEMORY_BYTES // 767_926_272 == 1
    with pytest.raises(ValueError, match="decode_memory_bytes=100000000 is less than one upload may need"):
        create_app(Gallery.from_vectors(np.eye(3, dtype=np.float32)), decode_memory_bytes=10**8)


def test_uploads_give_the_results_of_the_full_decode(gallery):
    """Normal uploads answer exactly as a full, unbounded decode does (the decode before bounds
    existed); a large one is reduced before embedding and still finds the same neighbours."""
    client = create_app(gallery, k=5).test_client()
    rng = np.random.default_rng(5)
    green = np.clip(np.array(COLOURS["green"]) + rng.integers(-30, 30, size=(120, 90, 3)), 0, 255).astype(np.uint8)
    y, x = np.mgrid[0:2600, 0:3100]
    large = np.stack([150 + x * 100 // 3100, 40 + y * 50 // 2600, 60 + (x + y) % 40], axis=-1).astype(np.uint8)
    uploads = {
        "green.png": _png(green),
        "green.jpg": _encode(Image.fromarray(green), "JPEG", quality=90),
        "green-rgba.png": _encode(Image.fromarray(green).convert("RGBA")),
        "green.gif": _encode(Image.fromarray(green), "GIF"),
        "large.png": _encode(Image.fromarray(large), compress_level=1),
    }
    for name, data in uploads.items():
        response = client.post("/upload", data={"image": (io.BytesIO(data), name), "k": "5"},
                               content_type="multipart/form-data")
        assert response.status_code == 200, (name, response.data[:300])
        page = response.get_data(as_text=True)
        ids = [int(i) for i in re.findall(r'class="result" data-id="(\d+)"', page)]
        scores = [float(s) for s in re.findall(r'class="score">([-0-9.]+)<', page)]
        reference = gallery.query_image(decode_image(data), k=5)
        assert ids == [int(i) for i in reference.ids], name
        tolerance = 5e-5 if name != "large.png" else 2e-3  # rendered with 4 decimals
        assert np.allclose(scores, reference.scores, atol=tolerance, rtol=0), (name, scores, reference.scores)
    # the large one really went through the reduction
    assert max(decode_image(uploads["large.png"], max_side=UPLOAD_MAX_SIDE).shape) <= UPLOAD_MAX_SIDE


def test_bad_uploads_are_400_not_500(gallery):
    client = create_app(gallery).test_client()
    cases = {  # a black image has no direction under the cosine metric; TGA is not an upload format
        "black.png": (_png(np.zeros((16, 16, 3))), b"cannot be queried"),
        "image.tga": (_encode(Image.new("RGB", (16, 16), (9, 99, 9)), "TGA"), b"not a readable image"),
    }
    for name, (data, message) in cases.items():
        response = client.post("/upload", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data")
        assert response.status_code == 400 and message in response.data, (name, response.data[:300])


# ---------------------------------------------------------------------------------------------
# memory of a `pqkit retrieve serve` process under a burst of large-dimension uploads

#: growth of the server's peak resident memory allowed during the burst: the decode budget
#: (what the upload slots are sized to) plus 64 MiB for everything else of 16 requests in flight
PEAK_GROWTH_BUDGET = DEFAULT_DECODE_MEMORY_BYTES + 64 * MiB
#: how far above its resident memory before the burst the server may stay after it
AFTER_MARGIN = 48 * MiB


def _memory(pid: int) -> dict:
    """VmRSS and VmHWM (bytes) of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def test_burst_of_large_uploads_keeps_server_memory_bounded(image_folder):
    if not Path("/proc/self/status").is_file():
        skip_or_fail("needs Linux /proc to read the server's resident memory")
    just_under, just_over = _large_png(6300), _large_png(6400)  # 39.7e6 and 41e6 pixels
    assert len(just_under) < 200_000 and 6300**2 <= MAX_PIXELS < 6400**2
    # WebP needs the most memory to decode of the accepted formats (16 bytes a pixel)
    webp = _encode(Image.open(io.BytesIO(just_under)), "WEBP", lossless=True, quality=0, method=0)
    server = subprocess.Popen(
        [sys.executable, "-m", "pqkit", "retrieve", "serve", str(image_folder / "gallery"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))
        small = (image_folder / "images" / "red" / "0.png").read_bytes()
        for _ in range(3):  # warm up: imports, Pillow's plugins, the first query
            assert _send(port, *_multipart([_part("image", small, "red.png", "image/png")]))[0] == 200
        before = _memory(server.pid)["VmRSS"]
        try:
            with open(f"/proc/{server.pid}/clear_refs", "w") as clear:
                clear.write("5")  # restart VmHWM from the current resident memory
        except OSError:
            pass  # then VmHWM counts from the start; the peak below can only read higher

        statuses, pages = [], []

        def upload(data, name):
            status, page = _send(port, *_multipart([_part("image", data, name, "image/png")]))
            statuses.append(status)
            pages.append(page)

        burst = [(just_under, "under.png"), (just_over, "over.png")] * 8 + [(webp, "under.webp")] * 2
        threads = [threading.Thread(target=upload, args=item) for item in burst]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        seconds = time.perf_counter() - start
        time.sleep(0.5)
        memory = _memory(server.pid)
        growth, after = memory["VmHWM"] - before, memory["VmRSS"]
        report = (f"RSS before {before / MiB:.0f} MiB, peak {memory['VmHWM'] / MiB:.0f} MiB, "
                  f"after {after / MiB:.0f} MiB; burst {seconds:.1f} s")
        assert sorted(statuses) == [200] * 10 + [413] * 8, (statuses, report)
        assert sum(page.count(b'class="result"') == 10 for page in pages) == 10  # k=10 of 15
        assert sum(b"6400x6400 = 40960000 pixels, at most 40000000" in page for page in pages) == 8
        assert growth <= PEAK_GROWTH_BUDGET, report
        assert after - before <= AFTER_MARGIN, report
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=20)
        server.stdout.close()
