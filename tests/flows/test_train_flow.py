"""The train flow runs the library pipeline (featurize -> cross-NMI -> fit -> register) as tasks on Prefect's
ephemeral server (tiny config), with the library's guards."""

from __future__ import annotations

import json

import pytest

TINY = {"n_features": 6, "widths": [[16], [8], [4]], "epochs": 20, "patience": 5, "batch_size": 16,
        "n_estimators": 2, "calib_fraction": 0.25, "min_calibration": 5}


def test_train_flow_registers_a_model(tmp_path):
    from flows.train import train

    summary = train(dataset="alexandria_cv300", preset="composition", config=TINY, name="flow_tiny",
                    limit=30, models_dir=str(tmp_path))
    assert summary["n_train"] == 30 and len(summary["selected_features"]) == 6
    assert summary["version"] == "v1" and summary["n_failed"] == 0 and summary["failures"] == []
    manifest = json.loads((tmp_path / "flow_tiny" / "v1" / "manifest.json").read_text())
    assert manifest["featurizer"]["preset"] == "composition"
    assert [f["name"] for f in manifest["selected_features"]] == summary["selected_features"]


def test_train_flow_refuses_an_existing_version_before_featurizing(tmp_path, monkeypatch):
    from flows.train import train
    from matflow.ml import train as pipeline

    (tmp_path / "taken" / "v2").mkdir(parents=True)
    (tmp_path / "taken" / "v2" / "manifest.json").write_text("{}")
    calls = []
    monkeypatch.setattr(pipeline, "featurize_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match="version v2 already exists"):
        train(dataset="alexandria_cv300", preset="composition", config=TINY, name="taken", version="v2",
              limit=30, models_dir=str(tmp_path))
    assert calls == []
