"""The sweep config schema (pqkit.patchcore.config) and the sweep's output checks and writes."""

from __future__ import annotations

import glob
import os

import pytest

from pqkit.patchcore.sweep import _write_csv, load_config, run_sweep

BENCH_CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "bench", "patchcore", "*.yaml")))

MINIMAL = "data: {kind: elpv}\nexperiment: {}\noutput: {dir: out}\n"


def _config(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bench_configs_exist():
    assert len(BENCH_CONFIGS) >= 9


@pytest.mark.parametrize("path", BENCH_CONFIGS, ids=os.path.basename)
def test_every_bench_config_validates(path):
    cfg = load_config(path)
    experiment = cfg["experiment"]
    assert experiment["name"] in ("exp1", "exp2", "exp3", "fullbank")
    assert cfg["data"]["category"] in ("magnetic_tile", "elpv_mono")
    assert cfg["output"]["dir"].startswith("bench/patchcore/results/")
    if experiment["name"] == "exp1":  # backbones x sizes 160-320 x layer choices, Lite0/1/2 at least
        assert cfg["features"]["layers"] is None and min(experiment["image_sizes"]) == 160
        assert max(experiment["image_sizes"]) == 320 and len(experiment["image_sizes"]) >= 3
        assert {b["name"] for b in experiment["backbones"]} >= {f"efficientnet_lite{i}" for i in range(3)}
        assert max(len(b["layers"] or [0]) for b in experiment["backbones"]) >= 2
        assert os.path.basename(cfg["output"]["dir"]).endswith("_exp1")
        return
    assert cfg["features"]["layers"] == ["_blocks.4", "_blocks.10"] and cfg["features"]["image_size"] == 160
    if experiment["name"] == "fullbank":  # the full bank with IVF-PQ against the 1 % and 10 % exact coresets
        banks = experiment["banks"]
        exact = {b["coreset_ratio"] for b in banks if b["search_method"] == "pqkit_flat" and b["coreset_method"] == "v1"}
        assert exact == {0.01, 0.1}
        assert any(b["coreset_method"] == "all" and b["search_method"] == "pqkit_ivfpq_refine" for b in banks)


def test_exp1_and_fullbank_configs_exist_for_both_sets():
    names = {os.path.basename(p) for p in BENCH_CONFIGS}
    assert {"exp1_magnetic_tile.yaml", "exp1_elpv_mono.yaml", "fullbank_magnetic_tile.yaml",
            "fullbank_elpv_mono.yaml"} <= names


def test_defaults_are_the_ones_the_experiments_used(tmp_path):
    cfg = load_config(_config(tmp_path, MINIMAL))
    assert cfg["data"] == {"kind": "elpv", "root": None, "cell_type": "mono", "train_fraction": 0.5, "seed": 0,
                           "category": "elpv_mono"}
    assert cfg["features"] == {"backbone": "efficientnet_lite0", "layers": None, "image_size": 160,
                               "target_dim": 128, "batch_size": 16, "cache_dir": "/tmp/pqkit_patchcore_cache"}
    assert cfg["coreset"] == {"method": "v1", "ratio": 0.1, "projection_dim": 128, "seed": 0}
    assert cfg["scoring"] == {"num_neighbors": 9, "reweight": True, "pixel_auroc": True, "pixel_stride": 1}
    experiment = cfg["experiment"]
    assert (experiment["name"], experiment["timing_repeats"], experiment["timing_budget_s"]) == ("exp3", 5, 3.0)
    assert experiment["search_methods"] is None and experiment["faiss_config"] is None
    cfg = load_config(_config(tmp_path, "data: {kind: mvtec, root: some/where/cat/}\n"
                                        "experiment: {faiss_config: {m: 32, nprobe: [2, 4]}}\noutput: {dir: o}\n"))
    assert cfg["data"]["category"] == "cat"
    grid = cfg["experiment"]["faiss_config"]
    assert grid == {"pq_bits": [8], "nprobe": [2, 4], "n_clusters": 100, "m": [32], "k_factor": 4.0,
                    "refine_m": [0]}


@pytest.mark.parametrize("text, message", [
    ("data: {kind: elpv}\nexperiment: {serach_methods: [exact_knn]}\noutput: {dir: o}\n",
     r"experiment: unknown key 'serach_methods'; did you mean 'search_methods'\?"),
    ("data: {kind: elpv}\nexperiment: {}\noutput: {dir: o}\nscorring: {reweight: true}\n",
     r"top level: unknown key 'scorring'; did you mean 'scoring'\?"),
    ("data: {kind: elpv}\nexperiment: {faiss_config: {nprobes: [1]}}\noutput: {dir: o}\n",
     r"experiment.faiss_config: unknown key 'nprobes'; did you mean 'nprobe'\?"),
    ("data: {kind: elpv}\nexperiment: {}\noutput: {dir: o}\nwhatever: 1\n",
     r"unknown key 'whatever' \(valid keys: data, features"),
    ("data: {kind: elpv, seed: '3'}\nexperiment: {}\noutput: {dir: o}\n",
     r"data.seed: expected an integer, got str '3'"),
    ("data: {kind: elpv}\ncoreset: {ratio: 10%}\nexperiment: {}\noutput: {dir: o}\n",
     r"coreset.ratio: expected a number, got str '10%'"),
    ("data: {kind: elpv}\nscoring: {reweight: 'yes'}\nexperiment: {}\noutput: {dir: o}\n",
     r"scoring.reweight: expected true or false"),
    ("data: {kind: elpv}\ncoreset: {ratio: 1.5}\nexperiment: {}\noutput: {dir: o}\n",
     r"coreset.ratio: expected <= 1, got float 1.5"),
    ("data: {kind: elpv}\nexperiment: {faiss_config: {pq_bits: [8, x]}}\noutput: {dir: o}\n",
     r"experiment.faiss_config.pq_bits\[1\]: expected an integer"),
    ("data: {kind: elpv}\nexperiment: {name: exp2, search_methods: [exact_knn]}\noutput: {dir: o}\n",
     r"experiment.search_methods applies to experiment exp3 only"),
    ("data: {kind: mvtec, root: x, cell_type: mono}\nexperiment: {}\noutput: {dir: o}\n",
     r"data.cell_type applies to kind elpv only"),
    ("data: {kind: elpv}\nexperiment: {}\noutput: {dir: o}\ndata: {kind: mvtec}\n",
     r"config.yaml:4:1: invalid YAML: found the key 'data' twice"),
    ("data:\n  kind: elpv\n   cell_type: mono\n",
     r"config.yaml:3:13: invalid YAML: mapping values are not allowed here"),
    ("data: [kind: elpv\n", r"config.yaml:2:1: invalid YAML: expected ',' or '\]'"),
])
def test_schema_errors_name_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as error:
        load_config(_config(tmp_path, text))
    assert "\n" not in str(error.value)


def test_many_errors_stay_one_line(tmp_path):
    text = "data: {kind: elpv}\nfeatures: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6}\nexperiment: {}\noutput: {dir: o}\n"
    with pytest.raises(ValueError, match=r"unknown key 'a'.*; and 2 more$") as error:
        load_config(_config(tmp_path, text))
    assert "\n" not in str(error.value)


def test_results_are_kept_without_overwrite(tmp_path):
    """The output check runs before the data are read; with overwrite the sweep goes on (and here
    stops at the missing data folder)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("earlier\n")
    path = _config(tmp_path, f"data: {{kind: mvtec, root: {tmp_path}/nowhere}}\nexperiment: {{}}\n"
                             f"output: {{dir: {out}}}\n")
    with pytest.raises(ValueError, match="results.csv' exists.*--overwrite"):
        run_sweep(path, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="data folder not found"):
        run_sweep(path, progress=False, log=lambda *a: None, overwrite=True)
    assert (out / "results.csv").read_text() == "earlier\n"
    # experiment 2 writes other files: the exp3 results do not block it
    path.write_text(path.read_text().replace("experiment: {}", "experiment: {name: exp2}"))
    with pytest.raises(ValueError, match="data folder not found"):
        run_sweep(path, progress=False, log=lambda *a: None)


def test_csv_write_is_all_or_nothing(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old\n")

    class Broken(dict):
        def items(self):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write_csv(str(path), ["a"], [{"a": 1.0}, Broken()])
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["results.csv"]  # the temporary sibling is gone
    _write_csv(str(path), ["a", "b"], [{"a": 1 / 3, "b": "x"}])
    assert path.read_text() == "a,b\n0.333333,x\n"
