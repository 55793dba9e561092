"""Property-guided latent optimisation: the head's prediction moves the asked way, models without
a head are refused (library and CLI), and decoded crystals are well-formed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Structure
from typer.testing import CliRunner

from matflow.generate.model import CDVAE
from matflow.generate.optimize import CDVAEOptimizationError, optimize_latent


@pytest.fixture
def head_model(tiny_config):
    torch.manual_seed(0)
    return CDVAE(dataclasses.replace(tiny_config, predict_property=True)).eval()


@pytest.mark.parametrize("direction", ["min", "max"])
def test_prediction_moves_in_the_asked_direction(head_model, scaler, perov_set, direction):
    starts = perov_set.structures[:3]
    result = optimize_latent(head_model, scaler, direction=direction, structures=starts,
                             opt_steps=20, decode_every=10, n_step_each=1, seed=1,
                             property_name="heat_ref")
    assert result.decoded_steps == [0, 10, 20]
    assert result.trajectory.shape == (21, 3) and result.predicted.shape == (3, 3)
    first, last = result.predicted[0], result.predicted[-1]
    if direction == "min":
        assert np.all(last < first)
    else:
        assert np.all(last > first)
    # the reported start prediction is the head's value at the encoder means
    from matflow.generate.optimize import encode_means, predict_property

    with torch.no_grad():
        expected = predict_property(head_model, scaler, encode_means(head_model, scaler, starts))
    np.testing.assert_allclose(first, expected.numpy(), rtol=1e-5, atol=1e-5)
    for step_structures in result.structures:
        assert len(step_structures) == 3
        for s in step_structures:
            assert isinstance(s, Structure) and 1 <= len(s) <= head_model.config.max_atoms
            assert np.isfinite(s.frac_coords).all() and s.volume > 0
    rows = result.records()
    assert len(rows) == 9 and {"start", "opt_step", "predicted_heat_ref", "structure"} <= set(rows[0])


def test_weights_are_untouched_and_prior_starts_work(head_model, scaler):
    before = {k: v.clone() for k, v in head_model.state_dict().items()}
    result = optimize_latent(head_model, scaler, num_samples=2, opt_steps=3, decode_every=5,
                             n_step_each=1)
    assert result.decoded_steps == [0, 3] and result.start_ids == ["prior_0000", "prior_0001"]
    assert all(torch.equal(v, head_model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in head_model.parameters())


def test_model_without_head_and_bad_arguments_are_refused(tiny_config, scaler, head_model):
    plain = CDVAE(tiny_config)
    with pytest.raises(CDVAEOptimizationError, match="no property head"):
        optimize_latent(plain, scaler, num_samples=1)
    with pytest.raises(CDVAEOptimizationError, match="direction"):
        optimize_latent(head_model, scaler, num_samples=1, direction="down")
    with pytest.raises(CDVAEOptimizationError, match="opt_steps"):
        optimize_latent(head_model, scaler, num_samples=1, opt_steps=0)
    with pytest.raises(CDVAEOptimizationError, match="num_samples"):
        optimize_latent(head_model, scaler)


runner = CliRunner()


def test_cli_refuses_model_without_head(tmp_path):
    from matflow.cli import app

    result = runner.invoke(app, ["generate", "--model", "cdvae-carbon24@v2", "--optimize", "min",
                                 "-n", "1", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cdvae-carbon24@v2" in lines[0] and "property head" in lines[0]


def test_cli_optimizes_from_csv(tmp_path, monkeypatch, tiny_config, perov_csv):
    import importlib

    from matflow.cli import app

    train_module = importlib.import_module("matflow.generate.train")

    models = tmp_path / "models"
    config_file = tmp_path / "tiny.json"
    config_file.write_text(tiny_config.to_json())
    trained = runner.invoke(app, ["train-generator", str(perov_csv), "-o",
                                  str(models / "tiny-head" / "v1"), "--config", str(config_file),
                                  "--property", "heat_ref", "--limit", "8", "--epochs", "1",
                                  "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((models / "tiny-head" / "v1" / "manifest.json").read_text())
    assert manifest["config"]["predict_property"] and manifest["property_column"] == "heat_ref"
    monkeypatch.setattr(train_module, "MODELS_DIR", models)
    train_module.load_model.cache_clear()
    out = tmp_path / "opt"
    result = runner.invoke(app, ["generate", "--model", "tiny-head@v1", "--optimize", "max",
                                 "--from", str(perov_csv), "-n", "2", "--opt-steps", "4",
                                 "--steps-per-level", "1", "-o", str(out)])
    train_module.load_model.cache_clear()
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "optimized.csv")
    assert len(table) == 2 * 2  # two starts, decoded at step 0 and at the last step
    assert sorted(set(table["opt_step"])) == [0, 4]
    column = "predicted_heat_ref"
    for _, group in table.groupby("start"):
        ordered = group.sort_values("opt_step")[column].to_numpy()
        assert ordered[-1] > ordered[0]
    for name in table["file"]:
        assert len(Structure.from_file(out / name)) >= 1
    settings = json.loads((out / "optimized.json").read_text())
    assert settings["direction"] == "max" and settings["opt_steps"] == 4
    assert "not a validated energy" in result.output


def test_starts_from_structure_files_skip_a_bad_file(tmp_path, perov_set):
    from matflow.generate.optimize import read_starts

    folder = tmp_path / "starts"
    folder.mkdir()
    perov_set.structures[0].to(filename=str(folder / "good.cif"))
    (folder / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    structures, ids, rejected = read_starts(folder)
    assert ids == ["good"] and len(structures) == 1
    assert len(rejected) == 1 and "broken.cif" in rejected[0][0] and rejected[0][1]
    (folder / "good.cif").unlink()
    with pytest.raises(CDVAEOptimizationError, match="no usable starting structure"):
        read_starts(folder)
