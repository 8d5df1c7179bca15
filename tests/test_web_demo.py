"""The retrieval web demo: Flask routes, and end to end in headless Debian chromium via selenium.

The browser test needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian packages
``chromium`` and ``chromium-driver``, installed by ``.ci/run``); both paths are passed explicitly,
so selenium never looks for or downloads a driver. In CI (``CI`` set) a missing browser fails.

``test_browser_search_time`` serves a compressed gallery (``index="IVF,PQ"``, re-ranked) of
``PQKIT_WEB_N`` synthetic clustered vectors of dimension ``PQKIT_WEB_D`` (default 20,000 x 128,
what CI affords), or the saved gallery ``PQKIT_WEB_GALLERY``, queries it from the browser and
logs the search time the page shows; the median must stay under ``PQKIT_WEB_MAX_SEARCH_MS``
(default 50). At a million EfficientNet-sized entries (building the gallery takes minutes)::

    PQKIT_WEB_N=1000000 PQKIT_WEB_D=1280 python -m pytest tests/test_web_demo.py -k search_time -s
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pqkit.retrieval.gallery import Gallery
from pqkit.retrieval.images import PixelEmbedder

from tests.conftest import skip_or_fail

CHROMIUM = Path(os.environ.get("PQKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PQKIT_CHROMEDRIVER", "/usr/bin/chromedriver"))
MAX_UPLOAD = 64 * 1024  # small limit, so the "huge upload" case stays cheap
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """A small image folder (three colour classes), its gallery, and files to upload."""
    root = tmp_path_factory.mktemp("web")
    rng = np.random.default_rng(1)
    for name, colour in COLOURS.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    gallery = Gallery.from_folder(root / "images", embedder=PixelEmbedder(size=8))
    gallery.save(root / "gallery")
    uploads = root / "uploads"
    uploads.mkdir()
    Image.fromarray(np.full((40, 50, 3), COLOURS["green"], dtype=np.uint8)).save(uploads / "query.png")
    (uploads / "notes.txt").write_text("this is not an image")
    (uploads / "empty.png").write_bytes(b"")
    (uploads / "huge.png").write_bytes(os.urandom(4 * MAX_UPLOAD))
    return root


@pytest.fixture(scope="module")
def app(demo_files):
    from pqkit.retrieval.web import create_app

    return create_app(Gallery.load(demo_files / "gallery"), k=4, max_upload_bytes=MAX_UPLOAD)


def _post(client, data: bytes, name: str):
    return client.post("/upload", data={"image": (io.BytesIO(data), name), "k": "3"},
                       content_type="multipart/form-data")


def test_routes_with_flask_client(app, demo_files):
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.data.count(b'class="thumb"') == 18
    result = client.get("/query/7?k=5")
    assert result.status_code == 200 and result.data.count(b'class="result"') == 5
    assert client.get("/query/999").status_code == 404
    api = client.get("/api/query/7?k=2").get_json()
    assert len(api["ids"]) == 2 and 7 not in api["ids"] and api["paths"] is None
    image = client.get("/image/0")
    assert image.status_code == 200 and image.mimetype == "image/png"
    image.close()
    assert client.get("/image/999").status_code == 404
    ok = _post(client, (demo_files / "uploads" / "query.png").read_bytes(), "query.png")
    assert ok.status_code == 200 and ok.data.count(b'class="result"') == 3 and b"embedding" in ok.data
    results_html = ok.data[ok.data.index(b'id="results"'):ok.data.index(b'id="gallery"')]
    assert results_html.count(b", green</span>") == 3
    for data, name, status, message in [
        (b"", "empty.png", 400, b"is empty"),
        (b"plain text", "notes.txt", 400, b"not a readable image"),
        (os.urandom(2 * MAX_UPLOAD), "huge.png", 413, b"too large"),
    ]:
        response = _post(client, data, name)
        assert response.status_code == status and message in response.data, (name, response.data[:300])
    missing = client.post("/upload", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and b"no file was chosen" in missing.data


def test_vector_gallery_cannot_upload(demo_files):
    from pqkit.retrieval.web import create_app

    gallery = Gallery.from_vectors(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32),
                                   labels=np.arange(50) % 2)
    client = create_app(gallery).test_client()
    page = client.get("/")
    assert b'id="no-upload"' in page.data and b"upload-form" not in page.data
    assert client.get("/query/3?k=4").data.count(b'class="result"') == 4
    response = _post(client, (demo_files / "uploads" / "query.png").read_bytes(), "query.png")
    assert response.status_code == 400 and b"only be queried by picking" in response.data


@pytest.fixture(scope="module")
def server(demo_files):
    """The demo served by ``pqkit.retrieval.web.serve`` in a thread, on a free port of 127.0.0.1."""
    from werkzeug.serving import make_server

    from pqkit.retrieval.web import create_app

    app = create_app(Gallery.load(demo_files / "gallery"), k=4, max_upload_bytes=MAX_UPLOAD)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        skip_or_fail(f"chromium not found at {CHROMIUM} / {CHROMEDRIVER}: "
                     "sudo apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-extensions", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _detached(exc) -> bool:
    """Chrome now and then reports a node of a page being replaced as "Node with given id does not
    belong to the document" (an unknown error) instead of a stale element."""
    from selenium.common.exceptions import StaleElementReferenceException

    return isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc)


def _click_and_wait(browser, find):
    """Click what ``find(browser)`` returns, which loads a new page, and wait until that page shows
    results or an error (``click`` returns before the navigation it starts has finished). A node
    detached while the current page settles is found again, up to 3 times."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for attempt in range(3):
        try:
            old_page = browser.find_element(By.TAG_NAME, "html")
            find(browser).click()
            break
        except WebDriverException as exc:
            if attempt == 2 or not _detached(exc):
                raise
            time.sleep(0.2)

    def replaced(_):
        try:
            old_page.is_enabled()
            return False
        except WebDriverException as exc:
            if _detached(exc):
                return True
            raise

    WebDriverWait(browser, 60).until(replaced)
    WebDriverWait(browser, 60).until(
        lambda b: b.find_elements(By.ID, "error") or b.find_elements(By.CSS_SELECTOR, "#results li.result"))


def _upload(browser, path: Path):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    # Chrome now and then detaches the file input while the freshly loaded page settles
    # ("Node with given id does not belong to the document"); find it again, up to 3 times.
    for attempt in range(3):
        try:
            browser.find_element(By.ID, "image-file").send_keys(str(path))
            break
        except (StaleElementReferenceException, WebDriverException) as exc:
            if attempt == 2 or not _detached(exc):
                raise
            time.sleep(0.2)
    _click_and_wait(browser, lambda b: b.find_element(By.ID, "upload-submit"))


def test_browser_end_to_end(server, browser, demo_files):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    assert "pqkit image retrieval" in browser.title
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#gallery a.thumb")
    assert len(thumbs) == 18
    # every gallery thumbnail is a real, decoded image
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth > 0)")

    # pick a gallery image: its neighbours share its colour class
    picked = next(t for t in thumbs if t.text.endswith("red"))
    picked_id = picked.get_attribute("data-id")
    _click_and_wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, f'#gallery a.thumb[data-id="{picked_id}"]'))
    results = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    assert len(results) == 4
    assert browser.find_element(By.ID, "query-id").text == picked_id
    assert all(r.get_attribute("data-id") != picked_id for r in results)
    assert all(r.text.split("\n")[0].endswith("red") for r in results), [r.text for r in results]
    scores = [float(r.find_element(By.CLASS_NAME, "score").text) for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9
    assert "search" in browser.find_element(By.ID, "latency").text and " ms" in browser.find_element(By.ID, "latency").text

    # upload a valid image
    browser.get(server + "/")
    _upload(browser, demo_files / "uploads" / "query.png")
    results = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    assert len(results) == 4 and all("green" in r.text for r in results)
    assert "embedding" in browser.find_element(By.ID, "latency").text
    assert browser.find_element(By.ID, "upload-name").text == "query.png"
    assert not browser.find_elements(By.ID, "error")

    # bad uploads: a clear message each time, and the page (and server) keep working
    for name, message in [("notes.txt", "not a readable image"), ("empty.png", "is empty"),
                          ("huge.png", "too large")]:
        browser.get(server + "/")
        _upload(browser, demo_files / "uploads" / name)
        error = browser.find_element(By.ID, "error").text
        assert message in error, (name, error)
        assert not browser.find_elements(By.CSS_SELECTOR, "#results li.result")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery a.thumb")) == 18

    # submitting without choosing a file
    browser.get(server + "/")
    _click_and_wait(browser, lambda b: b.find_element(By.ID, "upload-submit"))
    assert "no file was chosen" in browser.find_element(By.ID, "error").text

    # the server still answers, in the browser and to a plain HTTP client
    browser.get(server + "/query/0")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results li.result")) == 4
    with urllib.request.urlopen(server + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok", "n": 18}


def test_serve_command_starts_the_demo(demo_files):
    """``pqkit retrieve serve <gallery> --port 0`` prints its URL and answers until stopped."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "pqkit", "retrieve", "serve", str(demo_files / "gallery"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "health", timeout=20) as response:
            assert json.loads(response.read())["n"] == 18
        with urllib.request.urlopen(url + "query/3?k=2", timeout=20) as response:
            assert response.read().count(b'class="result"') == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        pytest.fail(f"{name} must be an integer, got {value!r}", pytrace=False)


def test_browser_search_time(browser, tmp_path_factory, capsys):
    """The search time of a compressed gallery, as the page reports it, at the configured size."""
    from selenium.webdriver.common.by import By
    from werkzeug.serving import make_server

    from pqkit.datasets import make_clustered
    from pqkit.retrieval.web import create_app

    saved = os.environ.get("PQKIT_WEB_GALLERY")
    budget_ms = float(os.environ.get("PQKIT_WEB_MAX_SEARCH_MS") or 50)
    start = time.perf_counter()
    if saved:
        gallery, source = Gallery.load(saved), f"gallery {saved}"
    else:
        n, d = _env_int("PQKIT_WEB_N", 20_000), _env_int("PQKIT_WEB_D", 128)
        # chunks of 100,000 (each its own seeded mixture) bound the float64 temporaries at a million
        vectors = np.concatenate([make_clustered(min(100_000, n - start), d, n_clusters=100, seed=3 + start)
                                  for start in range(0, n, 100_000)])
        gallery = Gallery.from_vectors(vectors, labels=np.arange(n) % 10, index="IVF,PQ")
        del vectors
        source = f"{n} synthetic clustered vectors, d={d}"
    build_s = time.perf_counter() - start
    if not saved:
        assert gallery.build["refine"] is not None, gallery.description  # re-ranked compressed codes
    httpd = make_server("127.0.0.1", 0, create_app(gallery, k=10), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    times = []
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        for gallery_id in np.random.default_rng(0).choice(gallery.ids, 21, replace=False):
            browser.get(f"{url}/query/{int(gallery_id)}?k=10")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#results li.result")) == 10
            latency = browser.find_element(By.ID, "latency").text  # "search 0.123 ms"
            times.append(float(latency.split("search ", 1)[1].split(" ms", 1)[0]))
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
    times = times[1:]  # the first search warms caches
    median = float(np.median(times))
    with capsys.disabled():  # the log line CI keeps: the search time at the size it affords
        print(f"\nweb demo search time: {source}, index {gallery.description} nprobe={gallery.index.nprobe}: "
              f"median {median:.2f} ms, max {max(times):.2f} ms over {len(times)} browser queries "
              f"(gallery built in {build_s:.0f} s)")
    assert median < budget_ms, (median, times)
