"""Compressed galleries keep their accuracy: every named IVF-PQ choice re-ranks its candidates, and
label precision@1 and mAP@10 stay within one point of exact search on real labelled images
(Fashion-MNIST and magnetic_tile, EfficientNet-Lite0 features embedded here at 32 px); the
recall measured at build time and the memory are kept with the gallery and printed by
``pqkit retrieve info``."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from pqkit.__main__ import main
from pqkit.datasets import DatasetNotFoundError, load_fashion_mnist, make_clustered
from pqkit.retrieval.evaluate import mean_average_precision
from pqkit.retrieval.gallery import Gallery
from pqkit.retrieval.indexing import DEFAULT_K_FACTOR, default_refine_m, resolve_description

from tests.conftest import skip_or_fail

MAGNETIC_TILE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "magnetic_tile")
ONE_POINT = 0.01


def _embedder():
    try:
        import torch  # noqa: F401
    except ImportError:
        skip_or_fail("torch is not installed (pqkit[torch] extra)")
    from pqkit.retrieval.images import CNNEmbedder

    return CNNEmbedder(size=32, batch_size=256)


def _label_scores(gallery, queries, query_labels, leave_out_self=False):
    """Precision@1 and mAP@10 of a gallery's answers; with ``leave_out_self`` the queries are the
    gallery's own vectors (ids 0..n-1) and each query's own id is dropped from its results."""
    k = 10
    _, ids = gallery.search(queries, k + 1 if leave_out_self else k)
    if leave_out_self:
        ids = np.array([[i for i in row if i != own][:k] for own, row in enumerate(ids)])
    labels = gallery.labels[ids]
    values, counts = np.unique(gallery.labels, return_counts=True)
    n_relevant = counts[np.searchsorted(values, query_labels)] - (1 if leave_out_self else 0)
    return float(np.mean(labels[:, 0] == query_labels)), mean_average_precision(labels, query_labels, n_relevant)


# ------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def fashion_cnn():
    """10,000 Fashion-MNIST training images (gallery) and 1,000 test images (queries), embedded."""
    try:
        base, queries, (base_labels, query_labels) = load_fashion_mnist()
    except DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    embedder = _embedder()
    images = np.concatenate([base[:10000], queries[:1000]]).reshape(-1, 28, 28).astype(np.uint8)
    vectors = embedder(images)
    return vectors[:10000], base_labels[:10000], vectors[10000:], query_labels[:1000]


@pytest.fixture(scope="module")
def magnetic_tile_cnn():
    """All 1,344 magnetic_tile images (labels: good or the defect), resized to 32 px and embedded."""
    from PIL import Image

    from pqkit.retrieval.images import list_images

    if not os.path.isdir(MAGNETIC_TILE):
        skip_or_fail(f"magnetic_tile not found at {MAGNETIC_TILE}")
    files = [f for part in ("train", "test") for f in list_images(os.path.join(MAGNETIC_TILE, part))]
    # resizing the varied sizes once here keeps the network's batches uniform (and the test short)
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32), Image.BILINEAR)) for f in files])
    return _embedder()(images), np.array([f.parent.name for f in files])


def test_fashion_compressed_galleries_keep_label_precision(fashion_cnn):
    base, base_labels, queries, query_labels = fashion_cnn
    flat = Gallery.from_vectors(base, labels=base_labels, index="Flat")
    flat_p1, flat_map = _label_scores(flat, queries, query_labels)
    assert flat.build["recall"] == 1.0
    seen = {}
    for refine in ("auto", "flat"):
        gallery = Gallery.from_vectors(base, labels=base_labels, index="IVF,PQ", refine=refine)
        p1, map10 = _label_scores(gallery, queries, query_labels)
        seen[refine] = (gallery.description, p1, map10, gallery.build)
        assert abs(p1 - flat_p1) <= ONE_POINT and abs(map10 - flat_map) <= ONE_POINT, seen[refine]
        assert gallery.index.k_factor == DEFAULT_K_FACTOR and gallery.build["recall"] >= 0.9, seen[refine]
    # 10,000 vectors train 8-bit refine codes: "auto" keeps them, a sixteenth of the exact vectors
    assert seen["auto"][0] == f"IVF100,PQ64x8,Refine(PQ{default_refine_m(1280)}x8)", seen["auto"]
    assert seen["flat"][0] == "IVF100,PQ64x8,RFlat"
    assert seen["auto"][3]["memory_bytes"] < flat.build["memory_bytes"] / 5


def test_magnetic_tile_compressed_gallery_keeps_label_precision(magnetic_tile_cnn):
    vectors, labels = magnetic_tile_cnn
    scores = {}
    for name, refine in (("Flat", "auto"), ("IVF,PQ", "auto"), ("IVF,PQ", "none")):
        gallery = Gallery.from_vectors(vectors, labels=labels, index=name, refine=refine)
        scores[gallery.description] = _label_scores(gallery, vectors, labels, leave_out_self=True)
    (flat_p1, flat_map), (p1, map10), (codes_p1, _) = scores.values()
    assert list(scores) == ["Flat", "IVF34,PQ64x4,RFlat", "IVF34,PQ64x4"]  # 1,344 vectors: exact re-ranking
    assert abs(p1 - flat_p1) <= ONE_POINT and abs(map10 - flat_map) <= ONE_POINT, scores
    # what the re-ranking is for: the 4-bit codes alone lose more than a point
    assert flat_p1 - codes_p1 > ONE_POINT, scores


# ------------------------------------------------------------------------------------ choices
@pytest.mark.parametrize("name, n, d, kwargs, expected", [
    ("IVF,PQ", 3000, 64, {}, "IVF55,PQ16x4,RFlat"),                          # too few for 8-bit refine codes
    ("IVF,PQ", 20000, 64, {}, "IVF141,PQ16x8,Refine(PQ16x8)"),
    ("IVF,PQ", 20000, 64, {"memory_budget_mb": 100}, "IVF141,PQ16x8,RFlat"),  # exact vectors fit
    ("IVF,PQ", 20000, 64, {"memory_budget_mb": 2}, "IVF141,PQ16x8,Refine(PQ16x8)"),
    ("IVF,PQ", 3000, 64, {"refine": "pq"}, "IVF55,PQ16x4,Refine(PQ16x8)"),
    ("IVF,PQ", 3000, 64, {"refine": "none"}, "IVF55,PQ16x4"),
    ("IVF,PQ8,RFlat", 20000, 64, {}, "IVF141,PQ8x8,RFlat"),
    ("IVF,PQ,Refine(PQ32)", 20000, 64, {}, "IVF141,PQ16x8,Refine(PQ32x8)"),
    ("IVF64,PQ8x4", 20000, 64, {}, "IVF64,PQ8x4"),                             # a full string: as is
    ("IVF64,PQ8x4", 20000, 64, {"refine": "flat"}, "IVF64,PQ8x4,RFlat"),
    ("IVF,Flat", 20000, 64, {}, "IVF141,Flat"),
])
def test_named_choices_re_rank(name, n, d, kwargs, expected):
    assert resolve_description(name, n, d, **kwargs) == expected


def test_bad_refine_and_budget_are_refused():
    with pytest.raises(ValueError, match="refine must be one of"):
        resolve_description("IVF,PQ", 3000, 64, refine="exact")
    with pytest.raises(ValueError, match=r"memory_budget_mb=0.1 is too small .* raise the budget"):
        resolve_description("IVF,PQ", 20000, 64, memory_budget_mb=0.1)
    with pytest.raises(ValueError, match="memory_budget_mb must be a finite number"):
        resolve_description("IVF,PQ", 20000, 64, memory_budget_mb=float("nan"))
    with pytest.raises(ValueError, match="holds exact vectors already"):
        resolve_description("IVF,Flat,RFlat", 20000, 64)


@pytest.fixture(scope="module")
def clustered():
    x = make_clustered(3000, 16, n_clusters=20, seed=5)
    return x, np.arange(x.shape[0]) % 4


def test_recall_and_memory_kept_and_shown_by_info(tmp_path, clustered, capsys):
    x, labels = clustered
    gallery = Gallery.from_vectors(x, labels=labels, index="IVF,PQ")
    assert gallery.description == "IVF55,PQ4x4,RFlat" and gallery.build["recall"] >= 0.8
    gallery.save(tmp_path / "g")
    info = Gallery.load(tmp_path / "g").info()
    assert info["recall"] == gallery.build["recall"] and info["recall_k"] == 10 and info["recall_queries"] == 200
    assert info["memory_bytes"] == gallery.index.memory_usage_bytes() > x.nbytes  # exact vectors kept
    assert (info["nprobe"], info["k_factor"], info["refine"]) == (gallery.index.nprobe, 8.0, "exact vectors")
    assert main(["retrieve", "info", str(tmp_path / "g")]) == 0
    text = capsys.readouterr().out
    assert "3000 vectors of dimension 16" in text and "4 labels" in text, text
    assert f"expected 10-recall@10 {gallery.build['recall']:.3f}" in text and "re-ranked with exact vectors" in text
    assert f"memory {info['memory_bytes'] / 2**20:.1f} MiB" in text
    assert main(["retrieve", "info", str(tmp_path / "g"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recall"] == gallery.build["recall"]


def test_gallery_saved_without_build_block_loads_and_says_not_measured(tmp_path, clustered, capsys):
    x, labels = clustered
    Gallery.from_vectors(x[:200], labels=labels[:200]).save(tmp_path / "saved")
    # the members without the manifest (the older layout), edited as an older pqkit wrote them
    shutil.copytree(next((tmp_path / "saved").glob("pqkit-data-*")), tmp_path / "old")
    meta_path = tmp_path / "old" / "gallery.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("build")
    meta_path.write_text(json.dumps(meta))
    assert Gallery.load(tmp_path / "old").info()["recall"] is None
    assert main(["retrieve", "info", str(tmp_path / "old")]) == 0
    assert "recall not measured" in capsys.readouterr().out
    for build, message in [([1], "'build' must be null or an object"), ({"recall": 1.5}, "build.recall"),
                           ({"memory_bytes": -1}, "build.memory_bytes"), ({"refine": 3}, "build.refine")]:
        meta_path.write_text(json.dumps({**meta, "build": build}))
        with pytest.raises(ValueError, match=message):
            Gallery.load(tmp_path / "old")


def test_cli_prints_choice_and_checks_budget_before_embedding(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in range(4):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        centre = rng.integers(0, 255, size=3)
        for i in range(200):
            pixels = np.clip(centre + rng.integers(-60, 60, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    common = [str(tmp_path / "imgs"), "--embedder", "pixels", "--size", "4", "--quiet", "--index", "IVF,PQ"]
    assert main(["retrieve", "index", *common, "--out", str(tmp_path / "g")]) == 0
    text = capsys.readouterr().out
    assert "index: IVF20,PQ12x4,RFlat nprobe=" in text and "k_factor=8, re-ranked" in text, text
    assert "re-ranked with exact vectors; expected 10-recall@10 " in text, text
    assert main(["retrieve", "index", *common, "--out", str(tmp_path / "g2"), "--refine", "none"]) == 0
    assert "index: IVF20,PQ12x4 nprobe=" in capsys.readouterr().out
    assert main(["retrieve", "index", *common, "--out", str(tmp_path / "g3"), "--memory-budget-mb", "0.001"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pqkit retrieve index: error: memory_budget_mb=0.001 is too small") and err.count("\n") == 1
    assert not (tmp_path / "g3").exists()


# ------------------------------------------------------------------------------------ benchmark
def _bench_module(name: str):
    import importlib.util
    import sys

    folder = os.path.join(os.path.dirname(__file__), "..", "bench", "retrieval")
    sys.path.insert(0, folder)  # report.py and million.py import their siblings
    try:
        spec = importlib.util.spec_from_file_location(f"retrieval_bench_{name}", os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def test_million_benchmark_quick_run_and_report(tmp_path, capsys):
    """``million.py --quick`` runs every step on tiny sizes; report.py draws both tables and the plot
    from its raw JSON into a docs page and a README part."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        skip_or_fail("faiss-cpu is not installed (test extra)")
    _embedder()
    try:
        load_fashion_mnist()
    except DatasetNotFoundError as exc:
        skip_or_fail(str(exc))
    million, report = _bench_module("million"), _bench_module("report")
    out = tmp_path / "results"
    written = million.main(["--quick", "--out", str(out)])
    assert [p.name for p in written] == ["million_1k.json", "million_2k.json"]
    raw = json.loads(written[1].read_text())
    assert raw["meta"]["dataset"] == "fashion-cnn-300-real+1700-perturbed" and raw["meta"]["n"] == 2000
    methods = {row["method"] for row in raw["rows"]}
    assert methods == {"numpy-brute", "pqkit-Flat", "faiss-Flat", "pqkit-IVF-Flat", "faiss-IVF-Flat",
                       "pqkit-IVF-PQ", "faiss-IVF-PQ", "pqkit-IVF-PQ-R", "faiss-IVF-PQ-R"}
    assert all(0 <= row["precision_at_1"] <= 1 and row["latency_median_ms"] > 0 for row in raw["rows"])
    assert [(c["name"], c["refine"]) for c in raw["choices"]] == million.CHOICES
    assert raw["choices"][2]["description"].endswith(",RFlat") and raw["choices"][3]["k_factor"] is None
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\n## after\n")
    report.main(["--results", str(out), "--docs", str(tmp_path / "retrieval.md"), "--readme", str(readme)])
    capsys.readouterr()
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{report.README_END}\n\n## after\n")
    assert "| gallery choice | 1k: index (nprobe)" in text and "2k: ms/query | recall@10 | P@1" in text
    assert "| pqkit IVF-PQ + re-ranking |" in text and "fashion-cnn-300-real+1700-perturbed" in text
    assert "QUICK RUN" in text and "From 1k to 2k entries (2x)" in text
    assert "![Recall vs speed at every gallery size](results/million_recall_vs_speed.png)" in text
    assert (out / "million_recall_vs_speed.png").stat().st_size > 10_000
    assert "## At 100k and 1M gallery entries" in (tmp_path / "retrieval.md").read_text()


def test_million_benchmark_maps_the_gallery_and_keeps_rows_before_choices(tmp_path):
    """The enlarged gallery written to a file and mapped equals the in-memory one (read only);
    the timing rows are saved apart (a name report.py skips) until the whole result replaces them."""
    million = _bench_module("million")
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 16)).astype(np.float32)
    labels = np.arange(300) % 5
    in_memory, l1, meta1 = million.enlarge(real, labels, 1000, 0.5)
    mapped, l2, meta2 = million.enlarge(real, labels, 1000, 0.5, path=tmp_path / "g.npy")
    np.testing.assert_array_equal(in_memory, mapped)
    np.testing.assert_array_equal(l1, l2)
    assert meta1 == meta2 and isinstance(mapped, np.memmap) and not mapped.flags.writeable
    partial = million.save_rows(tmp_path, "1k", [{"method": "x"}], None)
    assert partial.name == "million_1k.json.partial" and not list(tmp_path.glob("million_*.json"))
    final = million.save_rows(tmp_path, "1k", [{"method": "x"}], [], {"n": 1000})
    assert final.name == "million_1k.json" and not partial.exists()
    assert json.loads(final.read_text())["meta"] == {"n": 1000}
