"""Train pipeline and the ``matflow train`` / ``matflow predict`` commands on tiny configurations.

Models here use the fast ``composition`` preset on a few dozen Alexandria rows so the whole file runs in
seconds; the shipped models use the ``structure`` and ``structure-chgnet-full`` presets (see benchmarks/modnet.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, app
from matflow.ml import train as pipeline
from matflow.ml.registry import load

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()
TINY = {"n_features": 8, "widths": ((16,), (8,), (4,)), "epochs": 40, "patience": 10, "batch_size": 16,
        "n_estimators": 2, "calib_fraction": 0.25, "min_calibration": 5}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    pipeline.run_training("alexandria_cv300", preset="composition", config=TINY, name="cv_tiny",
                          limit=40, root=root, log=lambda _: None)
    return root


@pytest.fixture
def use_models(models_dir, monkeypatch):
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(models_dir))
    return models_dir


def test_pipeline_registers_a_loadable_model(models_dir):
    model = load("cv_tiny", root=models_dir)
    m = model.manifest
    assert m["training_data"] == {"dataset": "alexandria_cv300", "n_rows": 40,
                                  "sha256_16": m["training_data"]["sha256_16"]}
    assert m["targets"][0]["column"] == "cv_300K_J_per_K_mol_atom"
    assert len(m["selected_features"]) == 8


def test_cross_validate_reports_per_fold_metrics():
    data = pipeline.featurize_dataset("alexandria_cv300", "composition", limit=60)
    folds = [(np.arange(20, 60), np.arange(0, 20)), (np.arange(0, 40), np.arange(40, 60))]
    res = pipeline.cross_validate(data, {**TINY, "n_features": None}, folds=folds, log=lambda _: None)
    assert [f["n_test"] for f in res["folds"]] == [20, 20]
    assert res["mae_mean"] > 0 and 0.0 <= res["coverage_pooled"] <= 1.0
    assert res["folds"][0]["train_wall_s"] > 0 and res["peak_rss_mb_process"] > 0


def test_unknown_dataset_and_target_are_refused():
    with pytest.raises(ValueError, match="unknown dataset"):
        pipeline.featurize_dataset("nope")
    with pytest.raises(ValueError, match="no target"):
        pipeline.featurize_dataset("alexandria_cv300", "composition", targets=["band_gap"], limit=3)


def test_predict_cli_on_good_input_all_formats(use_models, tmp_path):
    from matflow.datasets import load_alexandria_cv300

    # two of the 40 training rows, so that every element is known to the model and intervals print
    first = load_alexandria_cv300().head(2)
    files = []
    for i, structure in enumerate(first["structure"]):
        files.append(str(tmp_path / f"train{i}.cif"))
        structure.to(filename=files[-1])
    res = runner.invoke(app, ["predict", "cv_tiny", files[0]])
    assert res.exit_code == EXIT_OK, res.output
    formula = first["structure"].iloc[0].composition.reduced_formula
    assert formula in res.stdout and "J K^-1 mol^-1" in res.stdout and "(90%)" in res.stdout
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["predict", "cv_tiny@v1", *files, "--format", "json", "-o", str(out)])
    assert res.exit_code == EXIT_OK, res.output
    records = json.loads(out.read_text())
    assert len(records) == 2
    for r in records:
        assert r["lower"] <= r["value"] <= r["upper"] and r["model"] == "cv_tiny@v1"
        assert isinstance(r["in_domain"], bool) and r["unit"].startswith("J")
    res = runner.invoke(app, ["predict", "cv_tiny", files[0], "--format", "csv"])
    frame = pd.read_csv(pd.io.common.StringIO(res.stdout))
    assert list(frame.columns[:4]) == ["model", "source", "formula", "target"]


def test_predict_cli_gives_no_interval_for_an_element_the_model_never_saw(use_models, tmp_path):
    from matflow.ml.predict import training_elements

    seen = training_elements(load("cv_tiny"))
    assert "Na" not in seen and "Cl" in seen  # the bundled data's first 40 rows
    res = runner.invoke(app, ["predict", "cv_tiny", str(DATA / "good" / "NaCl.cif"), "--format", "json"])
    assert res.exit_code == EXIT_OK, res.output
    (record,) = json.loads(res.stdout)
    assert record["lower"] is None and record["upper"] is None and record["in_domain"] is False
    assert "Na" in record["unseen_elements"].split(",")
    table = runner.invoke(app, ["predict", "cv_tiny", str(DATA / "good" / "NaCl.cif")])
    assert "none: element never in training data" in table.stdout


def test_predict_cli_on_bad_inputs_continues_the_batch(use_models, tmp_path):
    for name in ["NaCl.cif"]:
        shutil.copy(DATA / "good" / name, tmp_path / name)
    for name in ["empty.cif", "malformed.cif", "unknown_element.cif"]:
        shutil.copy(DATA / "bad" / name, tmp_path / name)
    res = runner.invoke(app, ["predict", "cv_tiny", str(tmp_path), "--format", "json"])
    assert res.exit_code == EXIT_PARTIAL
    records = json.loads(res.stdout)
    assert [r["formula"] for r in records] == ["NaCl"]
    assert "empty.cif: empty file" in res.stderr and "malformed.cif" in res.stderr
    res = runner.invoke(app, ["predict", "cv_tiny", str(DATA / "bad" / "empty.cif")])
    assert res.exit_code == EXIT_USAGE


def test_predict_cli_usage_errors(use_models):
    cif = str(DATA / "good" / "NaCl.cif")
    res = runner.invoke(app, ["predict", "no_such_model", cif])
    assert res.exit_code == EXIT_USAGE and "unknown model 'no_such_model'" in res.stderr
    res = runner.invoke(app, ["predict", "cv_tiny@v7", cif])
    assert res.exit_code == EXIT_USAGE and "no version 'v7'" in res.stderr
    res = runner.invoke(app, ["predict", "cv_tiny", cif, "--format", "xml"])
    assert res.exit_code == EXIT_USAGE


def test_train_cli(use_models):
    res = runner.invoke(app, ["train", "--dataset", "nope"])
    assert res.exit_code == EXIT_USAGE and "unknown dataset" in res.stderr
    res = runner.invoke(app, ["train", "--dataset", "alexandria_cv300", "--targets", "band_gap", "--limit", "5",
                              "--preset", "composition", "--config", "quick"])
    assert res.exit_code == EXIT_USAGE and "no target" in res.stderr
    res = runner.invoke(app, ["train", "--dataset", "alexandria_cv300", "--targets", "cv_300K", "--limit", "40",
                              "--preset", "composition", "--config", "quick", "--name", "cli_model"])
    assert res.exit_code == EXIT_OK, res.output
    assert (use_models / "cli_model" / "v1" / "manifest.json").is_file()
    res = runner.invoke(app, ["train", "--dataset", "alexandria_cv300", "--limit", "40", "--preset", "composition",
                              "--config", "quick", "--name", "cli_model", "--model-version", "v1"])
    assert res.exit_code == EXIT_USAGE and "already exists" in res.stderr
    assert "featurized" not in res.stderr  # refused before any featurization


def _train(*extra: str):
    return runner.invoke(app, ["train", "--dataset", "alexandria_cv300", "--limit", "40", "--preset", "composition",
                               "--config", "quick", *extra])


def _weights_sha(root: Path, name: str, version: str) -> str:
    return json.loads((root / name / version / "manifest.json").read_text())["weights"]["sha256"]


def test_train_cli_picks_the_next_free_version_and_seed_decides_the_weights(use_models):
    res = _train("--name", "seeded", "--seed", "3")
    assert res.exit_code == EXIT_OK, res.output
    assert "seeded/v1" in res.stdout
    assert "featurized 40 rows" in res.stderr and "cross-NMI" in res.stderr and "fitted in" in res.stderr
    res = _train("--name", "seeded", "--seed", "3", "--n-threads", "1")
    assert res.exit_code == EXIT_OK and "seeded/v2" in res.stdout
    (use_models / "seeded" / "v7").mkdir()
    (use_models / "seeded" / "v7" / "notes.txt").write_text("kept by hand")
    res = _train("--name", "seeded", "--seed", "4")
    assert res.exit_code == EXIT_OK and "seeded/v8" in res.stdout
    same = _weights_sha(use_models, "seeded", "v1") == _weights_sha(use_models, "seeded", "v2")
    assert same and _weights_sha(use_models, "seeded", "v8") != _weights_sha(use_models, "seeded", "v1")
    assert json.loads((use_models / "seeded" / "v8" / "manifest.json").read_text())["estimator"]["params"][
        "random_state"] == 4


def test_train_cli_exits_1_and_lists_rows_that_failed_featurization(use_models, monkeypatch):
    from dataclasses import replace

    from pymatgen.core import Lattice, Structure

    spec = pipeline.DATASET_SPECS["alexandria_cv300"]

    def loader():
        frame = spec.loader()
        frame.at[5, "structure"] = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
        return frame

    monkeypatch.setitem(pipeline.DATASET_SPECS, "alexandria_cv300", replace(spec, loader=loader))
    res = _train("--name", "partial")
    assert res.exit_code == EXIT_PARTIAL, res.output
    assert "registered" in res.stdout and "(39 training rows, 1 failed featurization)" in res.stdout
    assert "failed alexandria_cv300[5]:" in res.stderr and "1 dataset row(s) failed" in res.stderr
    assert load("partial", root=use_models).manifest["training_data"]["n_rows"] == 39


def test_train_cli_usage_errors_are_one_line():
    from matflow.featurize import PRESETS

    help_text = " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert all(p in help_text for p in PRESETS)
    for args, message in [(["--preset", "nope"], "unknown preset 'nope'"),
                          (["--budget", "2"], "--budget 2: needs --search"),
                          (["--search", "--budget", "0"], "--budget 0: must be between"),
                          (["--n-threads", "0"], "--n-threads 0"),
                          (["--config", "huge"], "unknown config 'huge'")]:
        res = runner.invoke(app, ["train", "--dataset", "alexandria_cv300", *args])
        assert res.exit_code == EXIT_USAGE and message in res.stderr, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1


def test_train_cli_search_end_to_end(use_models):
    res = runner.invoke(app, ["train", "--dataset", "alexandria_cv300", "--limit", "60", "--preset", "composition",
                              "--config", "quick", "--search", "--budget", "2", "--name", "searched"])
    assert res.exit_code == EXIT_OK, res.output
    assert "search chose" in res.stdout and res.stderr.count("search ") >= 2
    manifest = json.loads((use_models / "searched" / "v1" / "manifest.json").read_text())
    search = manifest["search"]
    assert search["budget"] == 2 and search["n_evaluations"] == 2 and search["n_rows"] == 60
    params = manifest["estimator"]["params"]
    for key, value in search["best_params"].items():
        assert params[key] == value
    assert params["epochs"] == pipeline.CONFIGS["quick"]["epochs"]  # the refit uses the full settings
    model = load("searched", root=use_models)
    assert model.manifest["uncertainty"]["calibration"] in ("cross", "split")
