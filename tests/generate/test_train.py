from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from matflow.generate.train import CDVAETrainingError, load_model, load_trained, train


def test_checkpoint_round_trip_and_resume(tmp_path, tiny_config, perov_csv):
    out = tmp_path / "cdvae-test" / "v0"
    kwargs = {"seed": 0, "device": "cpu", "train_limit": 8, "val_limit": 4}
    first = train(tiny_config, perov_csv, perov_csv, out, max_epochs=1, **kwargs)
    assert first.epochs_completed == 1
    for name in ("checkpoint.pt", "weights.safetensors", "manifest.json", "README.md",
                 "log.jsonl"):
        assert (out / name).exists(), name
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and "state" in state["optimizer"]

    model, scaler, manifest = load_trained(out)
    assert manifest["epochs"] == 1 and manifest["config"] == tiny_config.to_dict()
    for key, value in state["model"].items():
        assert torch.equal(model.state_dict()[key], value), key

    # a rerun after a "kill" continues the epoch count from the checkpoint
    second = train(tiny_config, perov_csv, perov_csv, out, max_epochs=3, **kwargs)
    assert second.epochs_completed == 3
    assert [r["epoch"] for r in second.history] == [2, 3]
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert set(lines[0]["train"]) >= {"coord", "type", "kl", "lattice", "num_atoms", "composition"}
    assert "Epochs: 3" in (out / "README.md").read_text()
    # the clock continues from the checkpoint: the total counts the first run's epoch too
    assert second.wall_seconds > first.wall_seconds
    assert torch.load(out / "checkpoint.pt", weights_only=True)["wall_seconds"] == second.wall_seconds
    assert json.loads((out / "manifest.json").read_text())["wall_seconds"] == round(second.wall_seconds, 1)
    assert scaler.to_dict() == load_trained(out)[1].to_dict()  # statistics kept on resume


def test_resume_refuses_another_config(tmp_path, tiny_config, perov_csv):
    out = tmp_path / "v0"
    train(tiny_config, perov_csv, None, out, max_epochs=1, train_limit=4, device="cpu")
    other = dataclasses.replace(tiny_config, hidden_dim=8)
    with pytest.raises(CDVAETrainingError, match="another config"):
        train(other, perov_csv, None, out, max_epochs=2, train_limit=4, device="cpu")


def test_bad_arguments_are_named(tmp_path, tiny_config, perov_csv):
    with pytest.raises(CDVAETrainingError, match="max_epochs=0"):
        train(tiny_config, perov_csv, None, tmp_path, max_epochs=0)
    with pytest.raises(CDVAETrainingError, match="max_minutes=-1"):
        train(tiny_config, perov_csv, None, tmp_path, max_epochs=1, max_minutes=-1)
    with pytest.raises(CDVAETrainingError, match="unknown CDVAE model"):
        load_model("no-such-model", "v9")


def test_resume_drops_log_lines_past_the_checkpoint(tmp_path, tiny_config, perov_csv):
    out = tmp_path / "v0"
    train(tiny_config, perov_csv, None, out, max_epochs=1, train_limit=4, device="cpu")
    log = out / "log.jsonl"
    first_line = log.read_text()
    # a kill after logging epoch 2 but before its checkpoint, plus a half-written line
    log.write_text(first_line + json.dumps({"epoch": 2, "train": {}}) + "\n{\"epo")
    result = train(tiny_config, perov_csv, None, out, max_epochs=2, train_limit=4, device="cpu")
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert result.epochs_completed == 2 and epochs == [1, 2]


def test_latest_version_is_the_highest_numbered_cdvae_manifest(tmp_path, monkeypatch, tiny_config, perov_csv):
    import importlib

    train_module = importlib.import_module("matflow.generate.train")  # the package exports train()
    for version in ("v2", "v10"):
        train(tiny_config, perov_csv, None, tmp_path / "toy" / version, max_epochs=1, train_limit=4,
              device="cpu")
    (tmp_path / "toy" / "v11").mkdir()  # no manifest: not a model
    (tmp_path / "toy" / "v12").mkdir()
    (tmp_path / "toy" / "v12" / "manifest.json").write_text('{"format": "something-else"}')
    monkeypatch.setattr(train_module, "MODELS_DIR", tmp_path)
    assert train_module.resolve_version("toy") == "v10"
    assert train_module.resolve_version("toy", "latest") == "v10"
    assert train_module.resolve_version("toy", "v2") == "v2"
    train_module.load_model.cache_clear()
    *_, manifest = train_module.load_model("toy")
    assert manifest["version"] == "v10"
    with pytest.raises(CDVAETrainingError, match="unknown CDVAE model nothing; known: .*toy/v10"):
        train_module.resolve_version("nothing")
    train_module.load_model.cache_clear()
