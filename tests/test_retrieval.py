"""pqkit.retrieval: galleries (build, save/load, query routes), index choice, evaluation, CLI, timing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from pqkit.__main__ import main
from pqkit.datasets import DatasetNotFoundError, load_fashion_mnist, make_clustered
from pqkit.retrieval.evaluate import exact_neighbors, mean_average_precision, precision_at_k, recall_at_k
from pqkit.retrieval.gallery import Gallery
from pqkit.retrieval.images import PixelEmbedder, decode_image, list_images
from pqkit.retrieval.timing import brute_force_search, timing_table

from tests.conftest import skip_or_fail

from PIL import Image  # noqa: E402  (pillow: retrieval extra, part of the test extra)

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def _write_folder(root, per_class=5, size=24, seed=0):
    """Three classes of noisy single-colour images in ImageFolder layout."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return _write_folder(tmp_path / "images")


@pytest.fixture(scope="module")
def vectors():
    x = make_clustered(3000, 16, n_clusters=20, seed=5)
    return x[:2800], x[2800:]


# --------------------------------------------------------------------------------- gallery
@pytest.mark.parametrize("index", ["Flat", "IVF,Flat", "IVF,PQ4x4"])
def test_save_load_round_trip(tmp_path, vectors, index):
    base, queries = vectors
    ids = np.arange(base.shape[0], dtype=np.int64) * 3 + 7
    labels = np.arange(base.shape[0]) % 4
    paths = [f"img/{i}.png" for i in range(base.shape[0])]
    gallery = Gallery.from_vectors(base, ids, labels=labels, paths=paths, root=str(tmp_path), index=index,
                                   nprobe=2)
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert (loaded.description, loaded.metric, len(loaded), loaded.d) == (
        gallery.description, "cosine", base.shape[0], 16)
    assert getattr(loaded.index, "nprobe", None) == getattr(gallery.index, "nprobe", None)
    np.testing.assert_array_equal(loaded.ids, ids)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.paths == paths
    s0, i0 = gallery.search(queries, 5)
    s1, i1 = loaded.search(queries, 5)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)
    r = loaded.query_id(int(ids[10]), k=3)
    assert int(ids[10]) not in r.ids.tolist()
    assert r.labels == [int(labels[(i - 7) // 3]) for i in r.ids]
    assert r.paths == [str(tmp_path / "img" / f"{(i - 7) // 3}.png") for i in r.ids]


def test_query_routes_agree(image_folder):
    gallery = Gallery.from_folder(image_folder, embedder=PixelEmbedder(size=6))
    assert len(gallery) == 15 and gallery.labels.tolist() == ["blue"] * 5 + ["green"] * 5 + ["red"] * 5
    path = image_folder / "green" / "2.png"
    by_path = gallery.query_image(path, k=4)
    by_array = gallery.query_image(np.asarray(Image.open(path).convert("RGB")), k=4)
    by_vector = gallery.query_vector(PixelEmbedder(size=6)([path])[0], k=4)
    gid = gallery.paths.index("green/2.png")
    by_id = gallery.query_id(gid, k=3, include_self=True)
    for result in (by_path, by_array, by_vector):
        assert result.ids[0] == gid and result.scores[0] == pytest.approx(1.0, abs=1e-5)
        assert result.labels == ["green"] * 4
    assert by_path.embed_ms > 0 and by_vector.embed_ms == 0
    assert by_id.ids[0] == gid and by_id.ids.tolist() == by_path.ids[:3].tolist()
    without_self = gallery.query_id(gid, k=3)
    assert without_self.ids.tolist() == by_path.ids[1:4].tolist()
    assert by_path.paths[0] == str(path.resolve())


def test_flat_recall_is_one(vectors):
    base, queries = vectors
    gallery = Gallery.from_vectors(base, index="Flat")
    _, ids = gallery.search(queries, 10)
    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    _, truth = brute_force_search(normed, queries / np.linalg.norm(queries, axis=1, keepdims=True), 10)
    assert recall_at_k(ids, truth) == 1.0
    _, truth_flat = exact_neighbors(base, queries, 10)
    assert recall_at_k(ids, truth_flat) == 1.0


def test_ivf_pq_recall_below_one_and_reported(vectors):
    base, queries = vectors
    gallery = Gallery.from_vectors(base, index="IVF,PQ4x4", nprobe=1)
    _, ids = gallery.search(queries, 10)
    _, truth = exact_neighbors(base, queries, 10)
    recall = recall_at_k(ids, truth)
    assert 0.05 < recall < 1.0  # approximate, yet far from random (10/2800)


def test_index_chosen_by_target_recall(vectors):
    base, queries = vectors
    gallery = Gallery.from_vectors(base, target_recall=0.9, k=10)
    choice = gallery.choice
    assert choice["recall"] >= 0.9 and choice["description"] == gallery.description
    assert any(c["description"] != "Flat" for c in choice["candidates"])
    _, ids = gallery.search(queries, 10)
    _, truth = exact_neighbors(base, queries, 10)
    assert recall_at_k(ids, truth) >= 0.8  # fresh queries: close to the calibrated target


# --------------------------------------------------------------------------------- evaluation
def test_recall_and_precision_small_cases():
    assert recall_at_k(np.array([[3, 2, 9], [-1, -1, -1]]), np.array([[1, 2, 3], [4, 5, 6]])) == pytest.approx(2 / 6)
    assert precision_at_k(np.array([[1, 1, 0], [2, 2, 2]]), np.array([1, 2])) == pytest.approx(5 / 6)
    with pytest.raises(TypeError, match="integer"):
        recall_at_k(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.int64))


def test_map_matches_sklearn_on_full_ranking():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=40)
    scores = rng.random(40)
    order = np.argsort(-scores)
    for query_label in (0, 1, 2):
        relevant = labels == query_label
        ours = mean_average_precision(labels[order][None, :], np.array([query_label]), [relevant.sum()])
        assert ours == pytest.approx(average_precision_score(relevant, scores))


@pytest.fixture(scope="module")
def fashion_small():
    try:
        base, queries, (base_labels, query_labels) = load_fashion_mnist()
    except DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    return base[:3000], base_labels[:3000], queries[:300], query_labels[:300]


def test_map_above_chance_on_fashion_mnist(fashion_small):
    base, base_labels, queries, query_labels = fashion_small
    gallery = Gallery.from_vectors(base, labels=base_labels, index="Flat")
    k = 20
    _, ids = gallery.search(queries, k)
    result_labels = gallery.labels[ids]
    n_relevant = np.bincount(base_labels, minlength=10)[query_labels]
    chance = float(np.mean(np.bincount(base_labels) / base_labels.size))  # ~0.1 for 10 balanced classes
    map_k = mean_average_precision(result_labels, query_labels, n_relevant)
    assert map_k > 4 * chance, (map_k, chance)
    assert precision_at_k(result_labels, query_labels) > 4 * chance


def test_cnn_gallery_from_folder_separates_classes(tmp_path, fashion_small):
    """The default embedder (EfficientNet-Lite0 from the installed weights) on real images."""
    try:
        import torch  # noqa: F401
    except ImportError:
        skip_or_fail("torch is not installed (pqkit[torch] extra)")
    from pqkit.retrieval.images import CNNEmbedder

    base, base_labels, _, _ = fashion_small
    names = {1: "trouser", 8: "bag", 7: "sneaker"}
    for label, name in names.items():
        (tmp_path / name).mkdir()
        for j, row in enumerate(np.flatnonzero(base_labels == label)[:6]):
            Image.fromarray(base[row].reshape(28, 28).astype(np.uint8)).save(tmp_path / name / f"{j}.png")
    gallery = Gallery.from_folder(tmp_path, embedder=CNNEmbedder(size=32, batch_size=32))
    assert gallery.d == 1280 and gallery.embedder_spec == {"kind": "cnn", "backbone": "efficientnet_lite0", "size": 32}
    hits = [gallery.query_id(i, k=3).labels.count(gallery.label_of(i)) for i in gallery.ids]
    precision = sum(hits) / (3 * len(gallery))
    assert precision > 0.7, precision  # chance is 5/17


# --------------------------------------------------------------------------------- bad input
def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        Gallery.from_folder(tmp_path / "empty", embedder=PixelEmbedder())
    with pytest.raises(ValueError, match="not a directory"):
        Gallery.from_folder(tmp_path / "missing", embedder=PixelEmbedder())


def test_unreadable_image(image_folder):
    bad = image_folder / "red" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken\.png.*not a readable image"):
        Gallery.from_folder(image_folder, embedder=PixelEmbedder())
    gallery = Gallery.from_folder(image_folder, embedder=PixelEmbedder(), skip_unreadable=True)
    assert len(gallery) == 15 and "red/broken.png" not in gallery.paths
    (image_folder / "green" / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        Gallery.from_folder(image_folder, embedder=PixelEmbedder())


def test_decode_refuses_huge_images():
    import io

    buffer = io.BytesIO()
    Image.new("L", (300, 300)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="too large: 300x300"):
        decode_image(buffer.getvalue(), max_pixels=10_000)


def test_dimension_mismatch_and_unknown_id_with_loaded_gallery(tmp_path, vectors):
    base, queries = vectors
    Gallery.from_vectors(base).save(tmp_path / "g")
    gallery = Gallery.load(tmp_path / "g")
    with pytest.raises(ValueError, match=r"dimension 8, this gallery has d=16"):
        gallery.query_vector(np.ones(8, dtype=np.float32))
    with pytest.raises(ValueError, match=r"unknown gallery id\(s\) \[5000\]"):
        gallery.query_id(5000)
    with pytest.raises(ValueError, match="cannot be queried by image"):
        gallery.query_image(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="floating-point"):
        gallery.query_vector(np.ones(16, dtype=np.int64))
    with pytest.raises(ValueError, match="all-zero"):
        Gallery.from_vectors(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="unique"):
        Gallery.from_vectors(base[:3], ids=[1, 1, 2])
    with pytest.raises(ValueError, match="too small|at least"):
        Gallery.from_vectors(base[:20], index="IVF,PQ")


def test_gallery_and_images_can_move_together(tmp_path, image_folder):
    import shutil

    Gallery.from_folder(image_folder, embedder=PixelEmbedder(size=4)).save(tmp_path / "images.gallery")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(image_folder), moved / "images")
    shutil.move(str(tmp_path / "images.gallery"), moved / "images.gallery")
    gallery = Gallery.load(moved / "images.gallery")
    path = gallery.path_of(0)
    assert path.startswith(str(moved)) and Path(path).is_file()


def test_image_gallery_dimension_mismatch_after_load(tmp_path, image_folder):
    Gallery.from_folder(image_folder, embedder=PixelEmbedder(size=4)).save(tmp_path / "g")
    gallery = Gallery.load(tmp_path / "g")
    assert gallery.query_image(image_folder / "red" / "0.png", k=2).labels == ["red", "red"]
    gallery.embedder = PixelEmbedder(size=5)  # a different embedder than the one it was built with
    with pytest.raises(ValueError, match=r"dimension 75, this gallery has d=48"):
        gallery.query_image(image_folder / "red" / "0.png")


class _Payload:
    def __reduce__(self):
        import os

        return (os.mkdir, ("/tmp/pqkit-retrieval-pwned",))


def test_hostile_metadata_is_refused_not_executed(tmp_path, vectors):
    import os

    import shutil

    base, _ = vectors
    Gallery.from_vectors(base[:100]).save(tmp_path / "saved")
    # the members without the manifest (the layout before manifests), so that edits reach the checks
    # of gallery.json and index.pqkit instead of the manifest's SHA-256
    shutil.copytree(next((tmp_path / "saved").glob("pqkit-data-*")), tmp_path / "g")
    meta_path = tmp_path / "g" / "gallery.json"
    good = json.loads(meta_path.read_text())
    meta_path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="not valid JSON"):
        Gallery.load(tmp_path / "g")
    assert not os.path.exists("/tmp/pqkit-retrieval-pwned")
    cases = [
        ({**good, "format": "something-else"}, "format"),
        ({**good, "format_version": 99}, "format_version"),
        ({**good, "n": "100"}, "'n' must be an int"),
        ({**good, "embedder": {"kind": "exec", "size": 3}}, "unknown embedder kind"),
        ({**good, "entries": {**good["entries"], "id": list(range(1, 101))}}, "not the ids stored"),
        ({**good, "entries": {**good["entries"], "label": [[1]] * 100}}, "only ints"),
        ({**good, "entries": {"id": good["entries"]["id"], "code": ["x"] * 100}}, "unknown entry fields"),
        ({**good, "d": 7}, "does not match"),
        ({**good, "entries": {**good["entries"], "path": ["../../etc/passwd"] * 100}}, "leaves the gallery's image root"),
        ({**good, "entries": {**good["entries"], "label": [2**70] * 100}}, "only ints"),
        ([1, 2, 3], "JSON object"),
    ]
    for meta, message in cases:
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=message):
            Gallery.load(tmp_path / "g")
    meta_path.write_text(json.dumps(good))
    (tmp_path / "g" / "index.pqkit").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="pqkit file"):
        Gallery.load(tmp_path / "g")
    with pytest.raises(ValueError, match="not a gallery"):
        Gallery.load(tmp_path / "nothing")


def test_list_images_skips_other_files(image_folder):
    (image_folder / "readme.md").write_text("x")
    (image_folder / ".hidden.png").write_bytes(b"")
    files = list_images(image_folder)
    assert len(files) == 15 and all(f.suffix == ".png" for f in files)


# --------------------------------------------------------------------------------- CLI
def test_cli_index_and_query(tmp_path, image_folder, capsys):
    out = tmp_path / "gallery"
    assert main(["retrieve", "index", str(image_folder), "--out", str(out), "--embedder", "pixels", "--size", "6",
                 "--quiet"]) == 0
    assert "saved to" in capsys.readouterr().out
    assert main(["retrieve", "query", str(out), str(image_folder / "blue" / "3.png"), "-k", "3"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.strip().startswith(("1 ", "2 ", "3 "))]
    assert len(lines) == 3 and all("blue" in line for line in lines), text
    assert "embedding" in text and "search" in text
    assert main(["retrieve", "query", str(out), "--id", "0", "-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["ids"]) == 2 and 0 not in result["ids"] and result["labels"] == ["blue", "blue"]


def test_cli_index_by_target_recall(tmp_path, capsys):
    """--target-recall on a folder big enough for IVF candidates (pixel embedder, 400 images)."""
    rng = np.random.default_rng(3)
    for c in range(4):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        centre = rng.integers(0, 255, size=3)
        for i in range(100):
            pixels = np.clip(centre + rng.integers(-60, 60, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    out = tmp_path / "g"
    assert main(["retrieve", "index", str(tmp_path / "imgs"), "--out", str(out), "--embedder", "pixels", "--size", "4",
                 "--target-recall", "0.9", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "chosen for 10-recall@10 >= 0.9" in text, text
    gallery = Gallery.load(out)
    assert gallery.choice["recall"] >= 0.9 and len(gallery.choice["candidates"]) > 1


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["retrieve", "index", str(tmp_path / "empty"), "--out", str(tmp_path / "g"), "--embedder",
                 "pixels"]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main(["retrieve", "query", str(tmp_path / "nowhere"), "--id", "1"]) == 2
    assert "not a gallery" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["retrieve", "serve", str(tmp_path), "--port", "70000"])


# --------------------------------------------------------------------------------- timing table
def test_timing_table_rows(vectors):
    try:
        import faiss  # noqa: F401
    except ImportError:
        skip_or_fail("faiss-cpu is not installed (test extra)")
    base, queries = vectors
    labels = np.arange(base.shape[0]) % 5
    rows = timing_table(base, queries, 5, base_labels=labels, query_labels=np.arange(queries.shape[0]) % 5,
                        nprobes=(1, 8), n_latency=10, M=4, nbits=4, progress=None)
    methods = {row["method"] for row in rows}
    assert methods == {"numpy-brute", "pqkit-Flat", "pqkit-IVF-Flat", "pqkit-IVF-PQ", "faiss-Flat",
                       "faiss-IVF-Flat", "faiss-IVF-PQ"}
    by = {(row["method"], row["nprobe"]): row for row in rows}
    assert by[("numpy-brute", None)]["recall"] == 1.0
    assert by[("pqkit-Flat", None)]["recall"] == 1.0 and by[("faiss-Flat", None)]["recall"] == 1.0
    assert by[("pqkit-IVF-Flat", 8)]["recall"] >= by[("pqkit-IVF-Flat", 1)]["recall"]
    assert by[("pqkit-IVF-PQ", 8)]["memory_mb"] < by[("pqkit-Flat", None)]["memory_mb"]
    assert all(row["latency_median_ms"] > 0 and 0 <= row["map_at_k"] <= 1 for row in rows)
