"""The train flow runs featurize -> select -> fit -> register on Prefect's ephemeral server (tiny config)."""

from __future__ import annotations

import json

TINY = {"n_features": 6, "widths": [[16], [8], [4]], "epochs": 20, "patience": 5, "batch_size": 16,
        "n_estimators": 2, "calib_fraction": 0.25, "min_calibration": 5}


def test_train_flow_registers_a_model(tmp_path):
    from flows.train import train

    summary = train(dataset="alexandria_cv300", preset="composition", config=TINY, name="flow_tiny",
                    limit=30, models_dir=str(tmp_path))
    assert summary["n_train"] == 30 and len(summary["selected_features"]) == 6
    manifest = json.loads((tmp_path / "flow_tiny" / "v1" / "manifest.json").read_text())
    assert manifest["featurizer"]["preset"] == "composition"
    assert [f["name"] for f in manifest["selected_features"]] == summary["selected_features"]
