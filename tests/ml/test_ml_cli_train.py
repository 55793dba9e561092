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
    cif = str(DATA / "good" / "NaCl.cif")
    res = runner.invoke(app, ["predict", "cv_tiny", cif])
    assert res.exit_code == EXIT_OK, res.output
    assert "NaCl" in res.stdout and "J K^-1 mol^-1" in res.stdout and "(90%)" in res.stdout
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["predict", "cv_tiny@v1", cif, str(DATA / "good" / "POSCAR_Si"), "--format", "json",
                              "-o", str(out)])
    assert res.exit_code == EXIT_OK, res.output
    records = json.loads(out.read_text())
    assert len(records) == 2
    for r in records:
        assert r["lower"] <= r["value"] <= r["upper"] and r["model"] == "cv_tiny@v1"
        assert isinstance(r["in_domain"], bool) and r["unit"].startswith("J")
    res = runner.invoke(app, ["predict", "cv_tiny", cif, "--format", "csv"])
    frame = pd.read_csv(pd.io.common.StringIO(res.stdout))
    assert list(frame.columns[:4]) == ["model", "source", "formula", "target"]


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
                              "--config", "quick", "--name", "cli_model"])
    assert res.exit_code == EXIT_USAGE and "already exists" in res.stderr
