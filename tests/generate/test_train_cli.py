"""`matflow train-generator`: a tiny CDVAE trained from a CSV, resumed and extended by rerunning,
and a model folder that `matflow generate`'s loader reads; bad input is a one-line error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from matflow.cli import app
from matflow.generate.train import load_trained

runner = CliRunner()


@pytest.fixture
def tiny_config_file(tmp_path, tiny_config):
    path = tmp_path / "tiny.json"
    path.write_text(tiny_config.to_json())
    return path


def _train(args):
    return runner.invoke(app, ["train-generator", *args])


def test_train_then_extend_resumes_from_the_checkpoint(tmp_path, perov_csv, tiny_config_file):
    out = tmp_path / "cdvae-tiny" / "v1"
    common = [str(perov_csv), "-o", str(out), "--config", str(tiny_config_file), "--limit", "8",
              "--device", "cpu", "--seed", "1"]
    first = _train([*common, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    assert "1 epoch(s)" in first.stdout
    log = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]
    second = _train([*common, "--epochs", "2"])
    assert second.exit_code == 0, second.output
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # the first epoch was resumed, not retrained
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["latent_dim"] == 16
    assert (out / "README.md").is_file() and (out / "weights.safetensors").is_file()
    model, scaler, _ = load_trained(out)
    assert sum(p.numel() for p in model.parameters()) > 0 and scaler is not None


@pytest.mark.parametrize(("args", "needle"), [
    (["missing.csv", "-o", "OUT"], "no such file"),
    (["PEROV", "-o", "OUT", "--epochs", "0"], "--epochs"),
    (["PEROV", "-o", "OUT", "--preset", "huge"], "--preset"),
    (["PEROV", "-o", "OUT", "--device", "tpu"], "--device"),
    (["PEROV", "-o", "OUT", "--max-minutes", "nan"], "--max-minutes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, perov_csv, args, needle):
    args = [str(perov_csv) if a == "PEROV" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = _train(args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
