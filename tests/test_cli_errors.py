"""Bad command lines: every one ends in one line ``pqkit <command>: error: ...`` and status 2.

A table of bad inputs to every command (``demo``, ``patchcore fit|score|sweep``, ``retrieve
index|info|query|serve``), run in-process through :func:`pqkit.__main__.main`: bad numbers, missing and
malformed files, invalid configs, unavailable devices, outputs under a file, existing results
without ``--overwrite`` (which must stay byte-identical) and requests larger than the data. A few
run as real processes: the exit status of ``python -m pqkit``, a 1e9-neighbour query under an
address-space limit, and a port already in use.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import pqkit
from pqkit.__main__ import main

from tests.test_patchcore import _need_torch, make_tree

VALID_CONFIG = """\
data: {{kind: mvtec, root: {tree}}}
features: {{image_size: 32, cache_dir: {root}/cache}}
coreset: {{ratio: 0.5, projection_dim: 16}}
experiment: {{name: exp3, search_methods: [exact_knn], threads: 1}}
output: {{dir: {root}/sweep_out}}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths the table refers to: a tiny MVTec tree, a fitted model, a pixel gallery, configs."""
    _need_torch()
    root = tmp_path_factory.mktemp("cli_errors")
    paths = {"root": str(root)}
    paths["tree"] = make_tree(str(root / "cat"), n_train=3, n_good=2, n_bad=2, size=32)
    paths["empty"] = str(root / "empty")
    os.mkdir(paths["empty"])
    paths["file"] = str(root / "plain.txt")
    with open(paths["file"], "w") as handle:
        handle.write("not a folder\n")
    paths["notimage"] = paths["file"]

    paths["model"] = str(root / "model")
    assert main(["patchcore", "fit", "--data", paths["tree"], "--out", paths["model"], "--image-size", "32",
                 "--coreset-ratio", "0.5", "--quiet"]) == 0
    paths["ivf_model"] = str(root / "ivf_model")
    with warnings.catch_warnings():  # a bank of 48 patches trains 16 PQ centroids: pqkit warns, rightly
        warnings.simplefilter("ignore", pqkit.TrainingWarning)
        assert main(["patchcore", "fit", "--data", paths["tree"], "--out", paths["ivf_model"], "--image-size", "32",
                     "--coreset-ratio", "1", "--backend", "pqkit_ivfpq", "--nlist", "2", "--m", "8", "--nbits", "4",
                     "--nprobe", "1", "--quiet"]) == 0
    paths["broken_model"] = str(root / "broken_model")
    os.mkdir(paths["broken_model"])
    with open(os.path.join(paths["broken_model"], "config.json"), "w") as handle:
        handle.write('{"format": "pqkit-patchcore", "format_version": 1}')
    paths["scores"] = str(root / "scores.csv")
    with open(paths["scores"], "w") as handle:
        handle.write("path,label,defect,score\nold,0,good,1\n")

    images = root / "images"
    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 40, 200))):
        (images / label).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / label / f"{i}.png")
    paths["images"] = str(images)
    paths["image"] = str(images / "red" / "0.png")
    paths["gallery"] = str(root / "gallery")
    assert main(["retrieve", "index", paths["images"], "--out", paths["gallery"], "--embedder", "pixels",
                 "--size", "4", "--quiet"]) == 0
    paths["foreign"] = str(root / "foreign")  # a non-empty folder that is neither a model nor a gallery
    os.mkdir(paths["foreign"])
    with open(os.path.join(paths["foreign"], "notes.txt"), "w") as handle:
        handle.write("keep me\n")

    configs = {
        "good": VALID_CONFIG,
        "typo": VALID_CONFIG.replace("search_methods", "serach_methods"),
        "section_typo": VALID_CONFIG.replace("features:", "featurs:"),
        "wrong_type": VALID_CONFIG.replace("image_size: 32", "image_size: big"),
        "quoted_number": VALID_CONFIG.replace("ratio: 0.5", "ratio: '0.5'"),
        "float_for_int": VALID_CONFIG.replace("threads: 1", "threads: 1.5"),
        "threads_0": VALID_CONFIG.replace("threads: 1", "threads: 0"),
        "nan_ratio": VALID_CONFIG.replace("ratio: 0.5", "ratio: .nan"),
        "unknown_method": VALID_CONFIG.replace("[exact_knn]", "[exact_knn, fastest_knn]"),
        "bad_kind": VALID_CONFIG.replace("kind: mvtec", "kind: imagenet"),
        "syntax": VALID_CONFIG.replace("experiment:", "experiment: :"),
        "duplicate": VALID_CONFIG + "output: {{dir: elsewhere}}\n",
        "list": "- data\n- output\n",
        "empty": "",
        "no_output": "\n".join(line for line in VALID_CONFIG.splitlines() if not line.startswith("output")),
        "missing_root": VALID_CONFIG.replace("{tree}", "{root}/no_such_category").replace("sweep_out", "other_out"),
        "output_under_file": VALID_CONFIG.replace("{root}/sweep_out", "{file}/sweep_out"),
    }
    for name, text in configs.items():
        path = root / f"{name}.yaml"
        path.write_text(text.format(**paths))
        paths[f"config_{name}"] = str(path)
    (root / "binary.yaml").write_bytes(b"data: \xff\xfe\x00\n")
    paths["config_binary"] = str(root / "binary.yaml")
    os.makedirs(root / "sweep_out")
    paths["results"] = str(root / "sweep_out" / "results.csv")
    with open(paths["results"], "w") as handle:
        handle.write("category,search_method\nearlier,exact_knn\n")
    return paths


# (argv with {placeholders} from ``files``, a fragment the error line must contain, file that must
# stay byte-identical or None)
CASES = [
    # ---------------------------------------------------------------- pqkit demo
    ("demo --n 0", "--n", None),
    ("demo --d abc", "--d", None),
    ("demo --threads 0", "--threads", None),
    ("demo --seed -1", "--seed", None),
    ("demo --n 1000000000000 --d 64", "memory", None),
    # ---------------------------------------------------------------- pqkit patchcore fit
    ("patchcore fit --data {root}/nowhere --out {root}/m1 --quiet", "not found", None),
    ("patchcore fit --data {empty} --out {root}/m2 --quiet", "train", None),
    ("patchcore fit --data {tree} --out {model} --quiet", "--overwrite", "{model}/pqkit-manifest.json"),
    ("patchcore fit --data {tree} --out {file} --quiet", "is a file", "{file}"),
    ("patchcore fit --data {tree} --out {file}/model --quiet", "is a file", "{file}"),
    ("patchcore fit --data {tree} --out {foreign} --quiet", "not empty", "{foreign}/notes.txt"),
    ("patchcore fit --data {tree} --out {root}/m3 --threads 0", "--threads", None),
    ("patchcore fit --data {tree} --out {root}/m3 --threads -2", "--threads", None),
    ("patchcore fit --data {tree} --out {root}/m3 --image-size abc", "--image-size", None),
    ("patchcore fit --data {tree} --out {root}/m3 --image-size 100000", "--image-size", None),
    ("patchcore fit --data {tree} --out {root}/m3 --coreset-ratio 0", "--coreset-ratio", None),
    ("patchcore fit --data {tree} --out {root}/m3 --coreset-ratio 1.5", "--coreset-ratio", None),
    ("patchcore fit --data {tree} --out {root}/m3 --coreset-ratio nan", "--coreset-ratio", None),
    ("patchcore fit --data {tree} --out {root}/m3 --coreset-ratio inf", "--coreset-ratio", None),
    ("patchcore fit --data {tree} --out {root}/m3 --elpv-train-fraction 1", "--elpv-train-fraction", None),
    ("patchcore fit --data {tree} --out {root}/m3 --seed -1", "--seed", None),
    ("patchcore fit --data {tree} --out {root}/m3 --backend pqkit_pq --m 7", "divisible", None),
    ("patchcore fit --data {tree} --out {root}/m3 --backend pqkit_ivfpq --nbits 17", "nbits", None),
    ("patchcore fit --data {tree} --out {root}/m3 --backend faiss_ivfpq --nlist 4 --nprobe 8", "nprobe", None),
    ("patchcore fit --data {tree} --out {root}/m3 --backend pqkit_ivfpq --nlist 1000000000", "nlist", None),
    ("patchcore fit --data {tree} --out {root}/m3 --backend nope", "--backend", None),
    ("patchcore fit --out {root}/m3", "--data", None),
    # ---------------------------------------------------------------- pqkit patchcore score
    ("patchcore score --model {root}/nowhere --data {tree} --quiet", "config.json", None),
    ("patchcore score --model {foreign} --data {tree} --quiet", "config.json", None),
    ("patchcore score --model {broken_model} --data {tree} --quiet", "backbone", None),
    ("patchcore score --model {model} --data {tree} --csv {root} --quiet", "is a folder", None),
    ("patchcore score --model {model} --data {tree} --csv {scores} --quiet", "--overwrite", "{scores}"),
    ("patchcore score --model {model} --data {tree} --csv {file}/scores.csv --quiet", "is a file", "{file}"),
    ("patchcore score --model {model} --data {tree} --nprobe 0", "--nprobe", None),
    ("patchcore score --model {model} --data {tree} --nprobe 2 --quiet", "IVF", None),
    ("patchcore score --model {ivf_model} --data {tree} --nprobe 3 --quiet", "nlist=2", None),
    ("patchcore score --model {model} --data {tree} --threads 0", "--threads", None),
    ("patchcore score --model {model} --data {root}/nowhere --quiet", "not found", None),
    # ---------------------------------------------------------------- pqkit patchcore sweep
    ("patchcore sweep --config {root}/nowhere.yaml", "not found", None),
    ("patchcore sweep --config {root}", "is a folder", None),
    ("patchcore sweep --config {config_typo}", "did you mean 'search_methods'", None),
    ("patchcore sweep --config {config_section_typo}", "did you mean 'features'", None),
    ("patchcore sweep --config {config_wrong_type}", "features.image_size: expected an integer", None),
    ("patchcore sweep --config {config_quoted_number}", "coreset.ratio: expected a number", None),
    ("patchcore sweep --config {config_float_for_int}", "experiment.threads: expected an integer", None),
    ("patchcore sweep --config {config_threads_0}", "experiment.threads", None),
    ("patchcore sweep --config {config_nan_ratio}", "coreset.ratio: expected a finite number", None),
    ("patchcore sweep --config {config_unknown_method}", "fastest_knn", None),
    ("patchcore sweep --config {config_bad_kind}", "data.kind", None),
    ("patchcore sweep --config {config_syntax}", "syntax.yaml:4:", None),
    ("patchcore sweep --config {config_duplicate}", "twice", None),
    ("patchcore sweep --config {config_list}", "mapping", None),
    ("patchcore sweep --config {config_empty}", "empty file", None),
    ("patchcore sweep --config {config_no_output}", "output: required", None),
    ("patchcore sweep --config {config_binary}", "UTF-8", None),
    ("patchcore sweep --config {config_missing_root}", "not found", None),
    ("patchcore sweep --config {config_output_under_file}", "is a file", "{file}"),
    ("patchcore sweep --config {config_good}", "--overwrite", "{results}"),
    # ---------------------------------------------------------------- pqkit retrieve index
    ("retrieve index {root}/nowhere --out {root}/g1 --embedder pixels --quiet", "nowhere", None),
    ("retrieve index {empty} --out {root}/g1 --embedder pixels --quiet", "no image files", None),
    ("retrieve index {images} --out {root}/g1 --embedder pixels --size 100000 --quiet", "100000", None),
    ("retrieve index {images} --out {root}/g1 --embedder cnn --size 100000 --quiet", "100000", None),
    ("retrieve index {images} --out {root}/g1 --device cuda:7 --quiet", "cuda:7", None),
    ("retrieve index {images} --out {root}/g1 --device tpu --quiet", "--device", None),
    ("retrieve index {images} --out {root}/g1 --embedder cnn --backbone resnet9000 --quiet", "resnet9000", None),
    ("retrieve index {images} --out {file}/g --embedder pixels --quiet", "is a file", "{file}"),
    ("retrieve index {images} --out {file} --embedder pixels --quiet", "is a file", "{file}"),
    ("retrieve index {images} --out {gallery} --embedder pixels --quiet", "--overwrite", "{gallery}/pqkit-manifest.json"),
    ("retrieve index {images} --out {foreign} --embedder pixels --quiet", "not empty", "{foreign}/notes.txt"),
    ("retrieve index {images} --out {root}/g1 --embedder pixels --index Nonsense --quiet", "Nonsense", None),
    ("retrieve index {images} --out {root}/g1 --embedder pixels --index IVF1000,Flat --quiet", "nlist=1000", None),
    ("retrieve index {images} --out {root}/g1 --embedder pixels --index IVF2,Flat --nprobe 5 --quiet", "nprobe",
     None),
    ("retrieve index {images} --out {root}/g1 --embedder pixels --nprobe 2 --quiet", "IVF", None),
    ("retrieve index {images} --out {root}/g1 --target-recall 1.5", "--target-recall", None),
    ("retrieve index {images} --out {root}/g1 --target-recall nan", "--target-recall", None),
    ("retrieve index {images} --out {root}/g1 --batch-size 0", "--batch-size", None),
    ("retrieve index {images} --out {root}/g1 --refine exact", "--refine", None),
    ("retrieve index {images} --out {root}/g1 --memory-budget-mb 0", "--memory-budget-mb", None),
    ("retrieve index {images} --out {root}/g1 --memory-budget-mb nan", "--memory-budget-mb", None),
    # ---------------------------------------------------------------- pqkit retrieve info
    ("retrieve info {root}/nowhere", "not a gallery", None),
    ("retrieve info {file}", "not a gallery", None),
    # ---------------------------------------------------------------- pqkit retrieve query
    ("retrieve query {root}/nowhere --id 1", "not a gallery", None),
    ("retrieve query {gallery} --id 99999", "99999", None),
    ("retrieve query {gallery} --id -1", "--id", None),
    ("retrieve query {gallery} --id abc", "--id", None),
    ("retrieve query {gallery}", "give an image path or --id", None),
    ("retrieve query {gallery} {image} --id 1", "not both", None),
    ("retrieve query {gallery} {root}/nowhere.png", "nowhere.png", None),
    ("retrieve query {gallery} {notimage}", "plain.txt", None),
    ("retrieve query {gallery} --id 1 -k 0", "-k", None),
    # ---------------------------------------------------------------- pqkit retrieve serve
    ("retrieve serve {gallery} --max-upload-mb inf", "--max-upload-mb", None),
    ("retrieve serve {gallery} --max-upload-mb nan", "--max-upload-mb", None),
    ("retrieve serve {gallery} --max-upload-mb -1", "--max-upload-mb", None),
    ("retrieve serve {gallery} --max-upload-mb 1e-12", "--max-upload-mb", None),
    ("retrieve serve {gallery} --port 70000", "--port", None),
    ("retrieve serve {gallery} -k 0", "-k", None),
    ("retrieve serve {root}/nowhere --port 0", "not a gallery", None),
    ("retrieve serve {gallery} --host no.such.host.invalid --port 0", "no.such.host.invalid", None),
]


def _command(argv) -> str:
    words = ["pqkit", argv[0]]
    if argv[0] in ("patchcore", "retrieve"):
        words.append(argv[1])
    return " ".join(words)


def _run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def _snapshot(path):
    with open(path, "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("line, fragment, kept", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line(files, capsys, line, fragment, kept):
    argv = [word.format(**files) for word in line.split()]
    kept = kept.format(**files) if kept else None
    before = _snapshot(kept) if kept else None
    status, out, err = _run(argv, capsys)
    assert "Traceback" not in out + err, err
    assert status == 2, (status, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"{_command(argv)}: error: "), err
    assert fragment in lines[0], (fragment, err)
    if kept:
        assert _snapshot(kept) == before, f"{kept} changed"


def test_the_table_covers_every_command():
    assert len(CASES) >= 40
    commands = {_command(case[0].split()) for case in CASES}
    assert commands == {"pqkit demo", "pqkit patchcore fit", "pqkit patchcore score", "pqkit patchcore sweep",
                        "pqkit retrieve index", "pqkit retrieve info", "pqkit retrieve query", "pqkit retrieve serve"}


def test_overwrite_replaces_results(files, capsys, tmp_path):
    """With --overwrite the refused commands of the table go through."""
    scores = tmp_path / "scores.csv"
    scores.write_text("stale\n")
    assert main(["patchcore", "score", "--model", files["model"], "--data", files["tree"], "--csv", str(scores),
                 "--overwrite", "--quiet"]) == 0
    assert scores.read_text().startswith("path,label,defect,score\n")
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temporary file left
    gallery = tmp_path / "gallery"
    argv = ["retrieve", "index", files["images"], "--out", str(gallery), "--embedder", "pixels", "--size", "4",
            "--quiet"]
    assert main(argv) == 0
    assert main(argv + ["--overwrite"]) == 0
    capsys.readouterr()


def _python_m_pqkit(args, timeout=120, limit_bytes=None):
    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "pqkit", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, stdin=subprocess.DEVNULL)


def test_exit_status_of_the_process(files):
    result = _python_m_pqkit(["patchcore", "sweep", "--config", files["config_typo"]])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("pqkit patchcore sweep: error: ")


def test_huge_k_under_an_address_space_limit(files):
    """``ulimit -v 4000000``: the results of k = 1e9 (12 GB) cannot be allocated; one line."""
    result = _python_m_pqkit(["retrieve", "query", files["gallery"], "--id", "1", "-k", "1000000000"],
                             limit_bytes=4_000_000 * 1024)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pqkit retrieve query: error: ")
    # refused before allocating, naming the limit that applies
    assert "more than the process's address-space limit (ulimit -v) allows" in result.stderr


def test_serve_on_a_port_in_use(files):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _python_m_pqkit(["retrieve", "serve", files["gallery"], "--port", str(port)], timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr
