"""Carbon-24: `matflow train-generator` trains on a handful of rows (24-atom cells kept with
--max-atoms 24), and the generation metrics are the structural set CDVAE reports for one element."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matflow.cli import app
from matflow.generate.data import read_cdvae_csv
from matflow.generate.metrics import generation_metrics
from matflow.generate.train import load_trained

CARBON = Path(__file__).resolve().parents[2] / "data" / "cdvae_benchmarks" / "carbon_24"


@pytest.fixture(scope="module")
def carbon_set():
    return read_cdvae_csv(CARBON / "val.csv.gz", max_atoms=24, limit=40)


def test_one_epoch_on_carbon24_with_24_atom_cells(tmp_path, tiny_config, carbon_set):
    assert max(len(s) for s in carbon_set.structures) > 20  # the default max_atoms would drop these
    config_file = tmp_path / "tiny.json"
    config_file.write_text(tiny_config.to_json())
    out = tmp_path / "cdvae-carbon-tiny" / "v1"
    result = CliRunner().invoke(app, ["train-generator", str(CARBON / "val.csv.gz"), "-o", str(out),
                                      "--config", str(config_file), "--max-atoms", "24",
                                      "--limit", "40", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_atoms"] == 24 and manifest["epochs"] == 1
    assert manifest["data"]["train_rows_used"] == 40 and manifest["data"]["train_rows_rejected"] == 0
    assert "Carbon-24 *validation* split" in (out / "README.md").read_text()
    model, _, _ = load_trained(out)
    assert model.num_atoms_head[-1].out_features == 25


def test_carbon24_metrics_are_the_structural_set(carbon_set):
    small = sorted(carbon_set.structures, key=len)[:3]
    metrics = generation_metrics(small[:2], small[:2], dataset="carbon_24", training=small)
    assert metrics["metric_set"].startswith("structural")
    for absent in ("compositional_validity", "num_elements_emd"):
        assert absent not in metrics
    assert metrics["validity"] == metrics["structural_validity"] == 1.0
    assert metrics["coverage_cutoffs"] == {"structure": 0.2}
    # generated == reference: every crystal covers itself, and all are in the training list
    assert metrics["cov_recall"] == metrics["cov_precision"] == 1.0
    assert metrics["novelty"] == 0.0 and metrics["density_emd"] == 0.0
