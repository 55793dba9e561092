"""Property-guided optimisation in CDVAE's latent space (Xie et al., ICLR 2022, "optimization" task).

Starting latents are the encoder means of given crystals, or draws from the prior N(0, I). Adam
moves them along the gradient of the property head (down for ``"min"``, up for ``"max"``) with the
model frozen; every ``decode_every`` steps, and at the start and the end, the current latents are
decoded by the annealed Langevin sampler of `matflow.generate.sample`.

The paper used Adam at lr 1e-3 for 5000 steps, decoding every 500. Our CPU defaults are 200 steps
at lr 1e-2, decoding every 50: the same number of decodes per trajectory and a comparable
maximum displacement per latent coordinate (Adam moves each by at most about lr per step), at a
twenty-fifth of the gradient steps.

The property is the head's *prediction* from z (for Perov-5 ``heat_ref``, in eV): a learned
surrogate, not a computed energy of the decoded crystal. Decoded crystals need an independent
check (relaxation with a potential, DFT) before their property is believed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from matflow.generate.data import LatticeScaler, structure_to_data, validate_structure
from matflow.generate.model import CDVAE
from matflow.generate.sample import decode

DEFAULT_OPT_STEPS = 200
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_DECODE_EVERY = 50
PREDICTION_NOTE = ("predicted_* is the property head's prediction from the latent code, not a "
                   "validated energy of the decoded crystal")


class CDVAEOptimizationError(ValueError):
    """The model cannot be optimised (no property head) or the arguments are out of range."""


@dataclass
class LatentOptimization:
    """Decoded crystals and predicted property along latent trajectories.

    ``decoded_steps[k]`` is the optimisation step (0 = start) of ``structures[k]`` and
    ``predicted[k]``; ``trajectory`` holds the prediction at every step, shape (steps + 1, starts).
    Predictions are in the property's units (de-normalised with the training statistics).
    """

    direction: str
    property_name: str | None
    start_ids: list[str]
    decoded_steps: list[int]
    structures: list[list[Structure]]
    predicted: np.ndarray
    trajectory: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """One row per (start, decoded step): ids, step, predicted property, the structure."""
        column = f"predicted_{self.property_name or 'property'}"
        rows = []
        for i, start in enumerate(self.start_ids):
            for k, step in enumerate(self.decoded_steps):
                rows.append({"start": start, "opt_step": step, column: float(self.predicted[k, i]),
                             "structure": self.structures[k][i]})
        return rows


def predict_property(model: CDVAE, scaler: LatticeScaler, z: torch.Tensor) -> torch.Tensor:
    """The property head's prediction for latents z (B, latent_dim), in the property's units."""
    head = require_property_head(model)
    return head(z).squeeze(-1) * scaler.property_std_ + scaler.property_mean_


def require_property_head(model: CDVAE, name: str = "the model") -> torch.nn.Module:
    """The model's property head, or `CDVAEOptimizationError` saying that it has none."""
    if model.property_head is None:
        raise CDVAEOptimizationError(
            f"{name} has no property head (trained with predict_property=False); "
            "property-guided optimisation needs a model trained with a property column")
    return model.property_head


@torch.no_grad()
def encode_means(model: CDVAE, scaler: LatticeScaler, structures: list[Structure]) -> torch.Tensor:
    """Encoder means mu (B, latent_dim) of `structures`; the starting points of the paper."""
    if not structures:
        raise CDVAEOptimizationError("structures: empty list, nothing to start from")
    for index, structure in enumerate(structures):
        try:
            validate_structure(structure)
        except ValueError as exc:
            raise CDVAEOptimizationError(f"structures[{index}]: {exc}") from exc
    device = next(model.parameters()).device
    batch = Batch.from_data_list([structure_to_data(s, scaler) for s in structures]).to(device)
    mu, _ = model.encode(batch)
    return mu


def optimize_latent(model: CDVAE, scaler: LatticeScaler, *,
                    direction: Literal["min", "max"] = "min",
                    structures: list[Structure] | None = None, num_samples: int | None = None,
                    start_ids: list[str] | None = None, opt_steps: int = DEFAULT_OPT_STEPS,
                    learning_rate: float = DEFAULT_LEARNING_RATE,
                    decode_every: int = DEFAULT_DECODE_EVERY, n_step_each: int | None = None,
                    seed: int = 0, property_name: str | None = None) -> LatentOptimization:
    """Move latents by Adam on the predicted property and decode them along the way.

    Start from the encoder means of `structures`, or from `num_samples` prior draws when no
    structures are given. `opt_steps` Adam steps at `learning_rate`; latents are decoded at step 0,
    every `decode_every` steps and at the last step, with `n_step_each` Langevin steps per noise
    level (default: the model's). The model's weights are not changed.
    """
    head = require_property_head(model)
    if direction not in ("min", "max"):
        raise CDVAEOptimizationError(f"direction={direction!r}: choose 'min' or 'max'")
    for name, value in (("opt_steps", opt_steps), ("decode_every", decode_every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CDVAEOptimizationError(f"{name}={value!r}: must be an integer >= 1")
    if not isinstance(learning_rate, int | float) or not math.isfinite(learning_rate) \
            or learning_rate <= 0:
        raise CDVAEOptimizationError(f"learning_rate={learning_rate!r}: must be a finite number > 0")
    model.eval()
    device = next(model.parameters()).device
    if structures is not None:
        z0 = encode_means(model, scaler, structures)
        ids = list(start_ids) if start_ids is not None else [f"start_{i:04d}"
                                                             for i in range(len(structures))]
    else:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise CDVAEOptimizationError(
                f"num_samples={num_samples!r}: must be an integer >= 1 when no structures are given")
        generator = torch.Generator(device=device).manual_seed(seed)
        z0 = torch.randn((num_samples, model.config.latent_dim), generator=generator,
                         device=device)
        ids = list(start_ids) if start_ids is not None else [f"prior_{i:04d}"
                                                             for i in range(num_samples)]
    if len(ids) != z0.shape[0]:
        raise CDVAEOptimizationError(f"start_ids: need {z0.shape[0]}, got {len(ids)}")
    sign = 1.0 if direction == "min" else -1.0
    z = z0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=learning_rate)
    decode_at = sorted({0, opt_steps, *range(decode_every, opt_steps, decode_every)})
    snapshots: dict[int, torch.Tensor] = {0: z.detach().clone()}
    trajectory = []
    # the weights are frozen so that only z receives gradients
    flags = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            for step in range(1, opt_steps + 1):
                optimizer.zero_grad()
                prediction = head(z).squeeze(-1)
                trajectory.append(prediction.detach())
                (sign * prediction.sum()).backward()
                optimizer.step()
                if step in decode_at:
                    snapshots[step] = z.detach().clone()
            with torch.no_grad():
                trajectory.append(head(z).squeeze(-1))
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    to_units = np.float64(scaler.property_std_), np.float64(scaler.property_mean_)
    traj = torch.stack(trajectory).cpu().numpy().astype(float) * to_units[0] + to_units[1]
    decoded, predicted = [], []
    for step in decode_at:
        decoded.append(decode(model, scaler, snapshots[step], n_step_each=n_step_each,
                              seed=seed + step))
        predicted.append(traj[step])
    return LatentOptimization(
        direction=direction, property_name=property_name, start_ids=ids, decoded_steps=decode_at,
        structures=decoded, predicted=np.stack(predicted), trajectory=traj,
        settings={"opt_steps": opt_steps, "learning_rate": learning_rate,
                  "decode_every": decode_every, "optimizer": "Adam",
                  "n_step_each": n_step_each or model.config.langevin_steps_per_level,
                  "seed": seed, "start": "encoder means" if structures is not None else "prior"})


def read_starts(source: str | Path, *, limit: int | None = None
                ) -> tuple[list[Structure], list[str], list[tuple[str, str]]]:
    """Starting crystals from a CDVAE-format CSV (``.csv``/``.csv.gz``, column ``cif``) or from
    structure files / folders / globs: (structures, ids, rejected (id, reason)).

    A bad row or file is rejected with its reason; it does not stop the others. `limit` keeps the
    first usable ones.
    """
    from matflow.generate.data import read_cdvae_csv
    from matflow.io import read_structures

    path = Path(source)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        crystals = read_cdvae_csv(path, limit=limit)
        structures, ids = crystals.structures, crystals.material_ids
        rejected = [(f"{path.name}:row{row}", reason) for row, reason in crystals.rejected]
    else:
        batch = read_structures(str(source))
        structures = [item.structure for item in batch.structures]
        ids = [Path(item.source).stem if "#" not in item.source else item.source
               for item in batch.structures]
        rejected = [(f.source, f.reason) for f in batch.failures]
        kept_structures, kept_ids = [], []
        for structure, sid in zip(structures, ids, strict=True):
            try:
                validate_structure(structure)
            except ValueError as exc:
                rejected.append((sid, str(exc)))
                continue
            kept_structures.append(structure)
            kept_ids.append(sid)
        structures, ids = kept_structures, kept_ids
    if limit is not None:
        structures, ids = structures[:limit], ids[:limit]
    if not structures:
        first = rejected[0][1] if rejected else "no structures found"
        raise CDVAEOptimizationError(f"{source}: no usable starting structure ({first})")
    return structures, ids, rejected


def optimize_from_model(name: str = "cdvae-perov5", version: str | None = "latest", *,
                        device: str = "cpu", **kwargs: Any) -> LatentOptimization:
    """`optimize_latent` with a model under ``models/<name>/<version>/``; the property name comes
    from its manifest. Refuses, naming the model, one that has no property head."""
    from matflow.generate.train import load_model

    model, scaler, manifest = load_model(name, version, device)
    require_property_head(model, f"model {name}@{version}")
    kwargs.setdefault("property_name", manifest.get("property_column"))
    result = optimize_latent(model, scaler, **kwargs)
    result.settings["model"] = f"{name}@{version}"
    return result


def write_optimization(result: LatentOptimization, folder: str | Path) -> pd.DataFrame:
    """CIFs ``<start>_step<k>.cif``, ``optimized.csv`` (one row per start and decoded step, with
    the head's prediction and validity) and ``optimized.json`` (settings and the prediction at
    every step); each file is written atomically. Returns the table."""
    from matflow.generate.metrics import compositional_validity, structural_validity
    from matflow.outputs import atomic_write, atomic_write_text

    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    column = f"predicted_{result.property_name or 'property'}"
    rows = []
    for record in result.records():
        structure: Structure = record.pop("structure")
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(record["start"]))
        filename = f"{stem}_step{record['opt_step']:05d}.cif"
        atomic_write(directory / filename,
                     lambda path, s=structure: s.to(filename=str(path), fmt="cif"))
        rows.append({**record, "file": filename, "formula": structure.composition.reduced_formula,
                     "n_atoms": len(structure), "density_g_cm3": float(structure.density),
                     "structurally_valid": structural_validity(structure),
                     "compositionally_valid": compositional_validity(structure.composition)})
    table = pd.DataFrame(rows, columns=["start", "opt_step", column, *[
        k for k in (rows[0] if rows else {}) if k not in ("start", "opt_step", column)]])
    atomic_write_text(directory / "optimized.csv", table.to_csv(index=False))
    payload = {"direction": result.direction, "property": result.property_name,
               "note": PREDICTION_NOTE, **result.settings, "start_ids": result.start_ids,
               "decoded_steps": result.decoded_steps,
               "predicted_per_step": result.trajectory.round(6).tolist()}
    atomic_write_text(directory / "optimized.json", json.dumps(payload, indent=1) + "\n")
    return table
