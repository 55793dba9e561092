"""Hyper-parameters of the CDVAE generator as one JSON-serialisable dataclass.

The `paper()` preset follows Xie, Fu, Ganea, Barzilay, Jaakkola, "Crystal Diffusion Variational
Autoencoder for Periodic Material Generation", ICLR 2022 (arXiv:2110.06197), main text and
appendix and released configuration: hidden and latent size 256, one hidden layer in the property
heads, 50 geometric noise levels from sigma=10 to 0.01 Å for the coordinates, 50 levels from 5 to
0.01 for the atom types, loss weights 1 (atom count), 10 (lattice), 1 (composition), 10
(coordinates), 1 (types), KL weight 0.01, a 7 Å graph cutoff with at most 20 neighbours, Adam at
1e-3, batch 256, 3000 epochs for Perov-5, and annealed Langevin dynamics with step 1e-4 and 100
steps per level. The message-passing depths (4 encoder, 4 decoder layers) are ours: the paper's
DimeNet++/GemNet blocks are not comparable one-to-one. Not modelled: the paper's learning-rate
schedule (reduce on plateau).
`small_cpu()` keeps the same losses and ladders at a size that trains on one CPU core in minutes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class CDVAEConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind."""


@dataclass(frozen=True)
class CDVAEConfig:
    """Everything that defines a CDVAE model, its training and its sampler.

    Lengths in Å. The noise ladders are geometric, from `sigma_begin` down to `sigma_end`.
    """

    latent_dim: int = 256
    hidden_dim: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 4
    head_hidden_dim: int = 256
    head_layers: int = 1
    num_gaussians: int = 50
    cutoff: float = 7.0
    max_neighbors: int = 20
    max_atoms: int = 20
    num_elements: int = 100
    sigma_begin: float = 10.0
    sigma_end: float = 0.01
    num_noise_levels: int = 50
    type_sigma_begin: float = 5.0
    type_sigma_end: float = 0.01
    num_type_noise_levels: int = 50
    beta_kl: float = 0.01
    cost_num_atoms: float = 1.0
    cost_lattice: float = 10.0
    cost_composition: float = 1.0
    cost_coord: float = 10.0
    cost_type: float = 1.0
    cost_property: float = 1.0
    predict_property: bool = False
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 3000
    langevin_step_lr: float = 1e-4
    langevin_steps_per_level: int = 100

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_dim", "encoder_layers", "decoder_layers",
                     "head_hidden_dim", "head_layers", "num_gaussians", "max_neighbors",
                     "max_atoms", "num_elements", "num_noise_levels", "num_type_noise_levels",
                     "batch_size", "epochs", "langevin_steps_per_level"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CDVAEConfigError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("cutoff", "sigma_begin", "sigma_end", "type_sigma_begin", "type_sigma_end",
                     "learning_rate", "langevin_step_lr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise CDVAEConfigError(f"{name}={value!r}: must be a finite number > 0")
        for name in ("beta_kl", "cost_num_atoms", "cost_lattice", "cost_composition",
                     "cost_coord", "cost_type", "cost_property"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise CDVAEConfigError(f"{name}={value!r}: must be a finite number >= 0")
        if self.sigma_end >= self.sigma_begin:
            raise CDVAEConfigError(
                f"sigma_end={self.sigma_end} >= sigma_begin={self.sigma_begin}: the ladder must descend")
        if self.type_sigma_end >= self.type_sigma_begin:
            raise CDVAEConfigError(f"type_sigma_end={self.type_sigma_end} >= type_sigma_begin="
                                   f"{self.type_sigma_begin}: the ladder must descend")

    @property
    def sigmas(self) -> np.ndarray:
        """Coordinate noise levels in Å, descending geometrically."""
        return np.geomspace(self.sigma_begin, self.sigma_end, self.num_noise_levels)

    @property
    def type_sigmas(self) -> np.ndarray:
        """Atom-type noise levels (weight of the composition prior), descending geometrically."""
        return np.geomspace(self.type_sigma_begin, self.type_sigma_end, self.num_type_noise_levels)

    @classmethod
    def paper(cls) -> CDVAEConfig:
        """Settings of Xie et al., ICLR 2022, for Perov-5 (max 20 atoms per cell)."""
        return cls()

    @classmethod
    def small_cpu(cls) -> CDVAEConfig:
        """A small model with the paper's losses and ladders, trainable on one CPU core."""
        return cls(latent_dim=64, hidden_dim=64, encoder_layers=3, decoder_layers=3,
                   head_hidden_dim=64, head_layers=2, num_gaussians=32, max_neighbors=16,
                   batch_size=64, epochs=200, langevin_steps_per_level=10)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CDVAEConfig:
        """Build from a dict; unknown keys are an error so that typos do not pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CDVAEConfigError(f"unknown CDVAE config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> CDVAEConfig:
        """Read from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            try:
                text = path.read_text()
            except OSError as exc:
                raise CDVAEConfigError(f"{path}: cannot read config ({exc})") from exc
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CDVAEConfigError(f"CDVAE config is not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise CDVAEConfigError("CDVAE config JSON must be an object")
        return cls.from_dict(values)
