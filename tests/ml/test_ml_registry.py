"""Model registry: save -> load -> predict gives identical numbers; clear errors for bad names/manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from matflow.ml.estimator import MODNetRegressor
from matflow.ml.registry import data_hash, list_versions, load, save_model


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 8)), columns=[f"feat|{i}" for i in range(8)])
    X.iloc[::9, 2] = np.nan
    y = np.column_stack([X["feat|0"] ** 2 + X["feat|1"], np.sin(X["feat|3"])])
    est = MODNetRegressor(n_features=4, widths=((16,), (8,), (4,)), epochs=30, patience=10, n_estimators=3,
                          targets=(("a", 1, 0), ("b", 1, 1)), loss_weights=(1.0, 0.5))
    est.fit(X, y)
    return est, X, y


def _save(est, X, y, root, version="v1", **kw):
    return save_model(est, "toy", version, preset="composition",
                      targets=[{"name": "a", "column": "a_col", "unit": "eV"},
                               {"name": "b", "column": "b_col", "unit": "K"}],
                      dataset="synthetic", training_hash=data_hash(X, y), n_train=len(X),
                      metrics={"cv": {"mae_mean": 0.1}}, root=root, **kw)


def test_round_trip_gives_identical_predictions(fitted, tmp_path):
    est, X, y = fitted
    folder = _save(est, X, y, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "manifest.json", "weights.safetensors"]
    model = load("toy", root=tmp_path)
    before, after = est.predict_dist(X), model.estimator.predict_dist(X)
    for field in ("mean", "std", "lower", "upper", "in_domain", "distance"):
        np.testing.assert_array_equal(getattr(before, field), getattr(after, field))
    rows = model.predict_features(X)
    np.testing.assert_array_equal(rows.mean, before.mean)
    manifest = model.manifest
    assert manifest["featurizer"]["preset"] == "composition"
    assert [t["unit"] for t in manifest["targets"]] == ["eV", "K"]
    assert len(manifest["selected_features"]) == 4
    assert manifest["training_data"]["sha256_16"] == data_hash(X, y)
    assert manifest["package_versions"]["torch"] == torch.__version__
    card = (folder / "README.md").read_text()
    assert "mae_mean = 0.1" in card and manifest["selected_features"][0]["name"] in card


def test_latest_version_and_refusing_overwrite(fitted, tmp_path):
    est, X, y = fitted
    _save(est, X, y, tmp_path, "v2")
    _save(est, X, y, tmp_path, "v10")
    assert list_versions("toy", tmp_path) == ["v2", "v10"]
    assert load("toy", root=tmp_path).version == "v10"
    assert load("toy", "v2", root=tmp_path).version == "v2"
    with pytest.raises(ValueError, match="already exists"):
        _save(est, X, y, tmp_path, "v2")


@pytest.mark.filterwarnings("ignore::matflow.ml.registry.SkippedVersionWarning")
def test_load_errors_name_the_problem(fitted, tmp_path):
    est, X, y = fitted
    folder = _save(est, X, y, tmp_path)
    with pytest.raises(ValueError, match="unknown model 'nope'.*toy"):
        load("nope", root=tmp_path)
    with pytest.raises(ValueError, match="no version 'v9'"):
        load("toy", "v9", root=tmp_path)
    manifest_path = folder / "manifest.json"
    good = json.loads(manifest_path.read_text())
    for change, message in [({"format_version": 99}, "newer than this matflow"),
                            ({"format": "keras"}, "incompatible manifest format"),
                            ({"featurizer": {**good["featurizer"], "preset": "gone"}}, "unknown featurizer preset")]:
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message):
            load("toy", root=tmp_path)
    manifest_path.write_text(json.dumps({k: v for k, v in good.items() if k != "targets"}))
    with pytest.raises(ValueError, match="manifest field 'targets': missing"):
        load("toy", root=tmp_path)
    manifest_path.write_text(json.dumps(good))
    (folder / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        load("toy", root=tmp_path)


def test_predict_features_refuses_a_table_from_another_featurizer(fitted, tmp_path):
    est, X, y = fitted
    _save(est, X, y, tmp_path)
    model = load("toy", root=tmp_path)
    with pytest.raises(ValueError, match="featurizer mismatch"):
        model.predict_features(X.rename(columns={"feat|0": "other"}))
