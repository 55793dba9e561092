"""Train CDVAE with per-epoch checkpoints that resume after a kill, and load trained versions.

An output directory holds:
- `checkpoint.pt`: state dicts only (model, Adam, RNG) plus counters, loaded with
  `torch.load(weights_only=True)`, so no pickled Python objects are ever executed;
- `weights.safetensors`: the latest model weights;
- `manifest.json`: config, lattice/property normalisation statistics, epochs, wall time, data
  files with sha256, package versions;
- `log.jsonl`: one JSON line of mean losses per epoch (train, and validation when given);
- `README.md`: the model card.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch_geometric.loader import DataLoader

from matflow.generate.config import CDVAEConfig
from matflow.generate.data import LatticeScaler, crystal_set_to_data, read_cdvae_csv
from matflow.generate.model import CDVAE, LOSS_NAMES
from matflow.outputs import atomic_write_text
from matflow.provenance import file_sha256, installed_versions

MANIFEST_FORMAT = "matflow-cdvae"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class CDVAETrainingError(ValueError):
    """Bad training arguments, or a checkpoint that does not belong to this run."""


@dataclass
class TrainResult:
    out_dir: Path
    epochs_completed: int
    wall_seconds: float
    stopped_because: str
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(device: str | None = "auto") -> torch.device:
    """The argument, then MATFLOW_DEVICE, then CUDA when present, else CPU."""
    name = device if device not in (None, "auto") else os.environ.get("MATFLOW_DEVICE", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise CDVAETrainingError(f"device={name!r}: not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CDVAETrainingError(f"device={name!r}: CUDA is not available on this machine")
    return resolved


def _versions() -> dict[str, str]:
    return installed_versions(("matflow", "torch", "torch_geometric", "pymatgen", "vesin", "numpy"),
                              python=True, missing="unknown")


def _mean_losses(model: CDVAE, loader: DataLoader, device: torch.device,
                 optimizer: torch.optim.Optimizer | None, seed: int | None = None
                 ) -> dict[str, float]:
    """One pass over `loader`; trains when an optimizer is given. Means are weighted by crystals."""
    totals = dict.fromkeys((*LOSS_NAMES, "total"), 0.0)
    count = 0
    generator = None
    if seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(seed)
    model.train(optimizer is not None)
    for batch in loader:
        batch = batch.to(device)
        with torch.set_grad_enabled(optimizer is not None):
            if generator is not None and device.type == "cpu":
                losses = model.losses(batch, generator=generator)
            else:
                losses = model.losses(batch)
            if optimizer is not None:
                optimizer.zero_grad()
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                optimizer.step()
        size = int(batch.num_atoms.shape[0])
        count += size
        for name in totals:
            totals[name] += float(losses[name].detach()) * size
    return {name: value / max(count, 1) for name, value in totals.items()}


def train(config: CDVAEConfig, train_csv: str | Path, val_csv: str | Path | None,
          out_dir: str | Path, *, max_epochs: int | None = None, max_minutes: float | None = None,
          seed: int = 0, device: str | None = "auto", resume: bool = True,
          property_column: str | None = None, train_limit: int | None = None,
          val_limit: int | None = None, show_progress: bool = False) -> TrainResult:
    """Train CDVAE on `train_csv`, checkpointing every epoch into `out_dir`.

    `max_epochs` (default `config.epochs`) counts all epochs including resumed ones, so a killed
    run rerun with the same arguments finishes the same schedule. `max_minutes` bounds this call's
    wall time; training stops after the epoch that crosses it. Validation losses use fixed noise
    (seeded) so that epochs are comparable; they are logged only, not used to pick weights.
    """
    max_epochs = config.epochs if max_epochs is None else max_epochs
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise CDVAETrainingError(f"max_epochs={max_epochs!r}: must be an integer >= 1")
    if max_minutes is not None and (not math.isfinite(max_minutes) or max_minutes <= 0):
        raise CDVAETrainingError(f"max_minutes={max_minutes!r}: must be a finite number > 0")
    if config.predict_property and property_column is None:
        raise CDVAETrainingError("config.predict_property is set but property_column is None")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    checkpoint_path = out / "checkpoint.pt"
    manifest_path = out / "manifest.json"

    train_set = read_cdvae_csv(train_csv, property_column=property_column,
                               max_atoms=config.max_atoms, limit=train_limit)
    previous: dict[str, Any] | None = None
    if resume and checkpoint_path.exists() and manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous.get("config") != config.to_dict():
            raise CDVAETrainingError(f"{out}: holds a checkpoint trained with another config; "
                                     "use a new out_dir or resume=False")
        scaler = LatticeScaler.from_dict(previous["normalisation"])
    else:
        scaler = LatticeScaler().fit(train_set.structures, train_set.properties)
    train_data = crystal_set_to_data(train_set, scaler)
    val_data = None
    val_set = None
    if val_csv is not None:
        val_set = read_cdvae_csv(val_csv, property_column=property_column,
                                 max_atoms=config.max_atoms, limit=val_limit)
        val_data = crystal_set_to_data(val_set, scaler)

    torch.manual_seed(seed)
    model = CDVAE(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    epoch = 0
    wall_before = 0.0
    if previous is not None:
        state = torch.load(checkpoint_path, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        epoch = int(state["epoch"])
        wall_before = float(state["wall_seconds"])
        _truncate_log(out / "log.jsonl", epoch)

    loader_generator = torch.Generator().manual_seed(seed + epoch)
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True,
                        generator=loader_generator)
    val_loader = (DataLoader(val_data, batch_size=config.batch_size) if val_data else None)
    started = time.monotonic()
    wall = wall_before  # training time up to the end of the last finished epoch, as the checkpoint keeps it
    history: list[dict[str, Any]] = []
    stopped = "max_epochs"
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=max_epochs, initial=epoch, desc="CDVAE epochs")
    while epoch < max_epochs:
        train_losses = _mean_losses(model, loader, dev, optimizer)
        record: dict[str, Any] = {"epoch": epoch + 1, "train": train_losses}
        if val_loader is not None:
            record["val"] = _mean_losses(model, val_loader, dev, None, seed=seed + 12345)
        epoch += 1
        wall = wall_before + time.monotonic() - started
        record["wall_seconds"] = round(wall, 2)
        history.append(record)
        tmp = checkpoint_path.with_suffix(".pt.tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "epoch": epoch, "wall_seconds": wall},
                   tmp)
        os.replace(tmp, checkpoint_path)
        # logged after the checkpoint; a resume drops lines past the checkpoint's epoch
        with (out / "log.jsonl").open("a") as log:
            log.write(json.dumps(record) + "\n")
        _write_weights_and_manifest(out, model, scaler, config, epoch, wall, seed, train_csv,
                                    train_set, val_csv, val_set, property_column, history,
                                    previous)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{train_losses['total']:.3f}")
        if max_minutes is not None and time.monotonic() - started > max_minutes * 60:
            stopped = "max_minutes"
            break
    if progress is not None:
        progress.close()
    return TrainResult(out, epoch, wall, stopped, history)


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after `last_epoch` (written by a run killed mid-epoch)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] <= last_epoch:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the kill
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _write_weights_and_manifest(out: Path, model: CDVAE, scaler: LatticeScaler,
                                config: CDVAEConfig, epoch: int, wall: float, seed: int,
                                train_csv: str | Path, train_set: Any, val_csv: str | Path | None,
                                val_set: Any, property_column: str | None,
                                history: list[dict[str, Any]],
                                previous: dict[str, Any] | None) -> None:
    weights_path = out / "weights.safetensors"
    tmp = out / "weights.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights_path)
    weights_path.chmod(0o644)  # safetensors creates the file owner-only
    last = history[-1] if history else {}
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": 1,
        "name": out.parent.name, "version": out.name,
        "created": (previous or {}).get("created",
                                        dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "description": "CDVAE crystal generator (Xie et al., ICLR 2022) re-implemented in matflow",
        "config": config.to_dict(),
        "normalisation": scaler.to_dict(),
        "epochs": epoch, "wall_seconds": round(wall, 1), "seed": seed,
        "device": str(next(model.parameters()).device),
        "property_column": property_column,
        "data": {
            "train_csv": str(train_csv), "train_sha256": file_sha256(Path(train_csv)),
            "train_rows_used": len(train_set), "train_rows_rejected": len(train_set.rejected),
            "val_csv": None if val_csv is None else str(val_csv),
            "val_rows_used": None if val_set is None else len(val_set),
        },
        "last_epoch_losses": {k: last.get(k) for k in ("train", "val") if k in last},
        "weights": {"file": "weights.safetensors", "sha256": file_sha256(weights_path)},
        "versions": _versions(),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(out / "README.md", model_card(manifest))


def model_card(manifest: dict[str, Any]) -> str:
    """A short README for a trained version: data, schedule, losses, limits."""
    data = manifest["data"]
    cfg = manifest["config"]
    losses = manifest.get("last_epoch_losses", {})
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        "CDVAE (Xie, Fu, Ganea, Barzilay, Jaakkola, ICLR 2022) as implemented in "
        "`matflow.generate`: SchNet-style periodic encoder, equivariant edge-sum score decoder.",
        "",
        "## Training",
        f"- Data: `{data['train_csv']}` ({data['train_rows_used']} structures used, "
        f"{data['train_rows_rejected']} rejected), sha256 `{data['train_sha256'][:16]}…`.",
        f"- Validation loss logged on: `{data['val_csv']}` ({data['val_rows_used']} structures); "
        "not used to select weights (the final epoch's weights are saved).",
        f"- Epochs: {manifest['epochs']}; wall time {manifest['wall_seconds']} s on "
        f"{manifest['device']}; seed {manifest['seed']}.",
        f"- Size: hidden {cfg['hidden_dim']}, latent {cfg['latent_dim']}, "
        f"{cfg['encoder_layers']}+{cfg['decoder_layers']} message-passing layers, cutoff "
        f"{cfg['cutoff']} Å, {cfg['num_noise_levels']} noise levels "
        f"{cfg['sigma_begin']}→{cfg['sigma_end']} Å.",
        "",
        "## Last-epoch losses",
        "```",
        json.dumps(losses, indent=1),
        "```",
        "",
        "## Limits",
        f"- Trained for {manifest['epochs']} epochs at the size above; the paper trains a larger "
        "model (DimeNet++ encoder, GemNet decoder) for far longer, so expect much lower match "
        "rates and coverage than reported there.",
        *([f"- Trained on the {label} *validation* split: the train split is not bundled "
           "(data/cdvae_benchmarks/PROVENANCE.md). Evaluate on the test split only."
           for key, label in (("perov_5/val", "Perov-5"), ("carbon_24/val", "Carbon-24"))
           if key in data["train_csv"]]),
        *([f"- Property head trained on `{manifest['property_column']}`: its predictions from z "
           "are a learned surrogate, not a validated energy of a decoded crystal."]
          if manifest.get("property_column") else []),
        "- Generation quality numbers live in `benchmarks/results/` when computed.",
        "",
        f"Versions: {json.dumps(manifest['versions'])}",
        "",
    ]
    return "\n".join(lines)


def load_trained(directory: str | Path, *, device: str | None = "cpu"
                 ) -> tuple[CDVAE, LatticeScaler, dict[str, Any]]:
    """Load a version directory written by `train`: (model in eval mode, scaler, manifest)."""
    path = Path(directory)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise CDVAETrainingError(f"{path}: no manifest.json (not a trained CDVAE directory)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CDVAETrainingError(f"{manifest_path}: format {manifest.get('format')!r}, "
                                 f"expected {MANIFEST_FORMAT!r}")
    dev = resolve_device(device)
    model = CDVAE(CDVAEConfig.from_dict(manifest["config"]))
    model.load_state_dict(load_file(str(path / manifest["weights"]["file"])))
    model.to(dev).eval()
    return model, LatticeScaler.from_dict(manifest["normalisation"]), manifest


def _shipped() -> list[str]:
    """`name/version` of every CDVAE model under MODELS_DIR."""
    return sorted(str(p.parent.relative_to(MODELS_DIR))
                  for p in MODELS_DIR.glob("*/*/manifest.json")
                  if json.loads(p.read_text()).get("format") == MANIFEST_FORMAT)


def resolve_version(name: str, version: str | None = "latest") -> str:
    """`version` itself, or for None/"latest" the highest `vN` of `name` with a CDVAE manifest, so
    that a plain model name follows the newest shipped weights (as the property registry does)."""
    if version not in (None, "latest"):
        return version
    numbered = [p.parent.name for p in (MODELS_DIR / name).glob("v*/manifest.json")
                if p.parent.name[1:].isdigit()
                and json.loads(p.read_text()).get("format") == MANIFEST_FORMAT]
    if not numbered:
        raise CDVAETrainingError(f"unknown CDVAE model {name}; known: {_shipped()}")
    return max(numbered, key=lambda v: int(v[1:]))


def load_model(name: str = "cdvae-perov5", version: str | None = "latest",
               device: str = "cpu") -> tuple[CDVAE, LatticeScaler, dict[str, Any]]:
    """A shipped model under `models/<name>/<version>/` ("latest": the highest vN);
    ValueError on an unknown name/version."""
    return _load_model(name, resolve_version(name, version), device)


@lru_cache(maxsize=4)
def _load_model(name: str, version: str, device: str) -> tuple[CDVAE, LatticeScaler, dict[str, Any]]:
    directory = MODELS_DIR / name / version
    if not (directory / "manifest.json").exists():
        raise CDVAETrainingError(f"unknown CDVAE model {name}/{version}; known: {_shipped()}")
    return load_trained(directory, device=device)


load_model.cache_clear = _load_model.cache_clear  # type: ignore[attr-defined]


def history_array(history: list[dict[str, Any]], key: str = "total") -> np.ndarray:
    """Train loss `key` per epoch, for plots and tests."""
    return np.array([record["train"][key] for record in history])
