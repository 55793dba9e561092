"""CDVAE benchmark CSVs -> validated pymatgen Structures -> PyG `Data` with normalised lattices.

The CSVs (Xie et al., ICLR 2022; see `data/cdvae_benchmarks/PROVENANCE.md`) hold one P1 CIF per row.
Each structure is Niggli-reduced, as in the CDVAE preprocessing, so that equal crystals get
comparable lattices. Rows that fail to parse or validate are collected with their reason, so one
bad row does not lose the whole split.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Data

MAX_ATOMIC_NUMBER = 100
"""Atom types are atomic numbers 1-100, as in CDVAE."""


class CDVAEDataError(ValueError):
    """A CSV, row or structure cannot be used for CDVAE."""


@dataclass
class CrystalSet:
    """Structures of one split with their ids, optional property and the rows left out."""

    structures: list[Structure]
    material_ids: list[str]
    properties: np.ndarray | None
    property_name: str | None
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.structures)


def validate_structure(structure: Structure, *, max_atoms: int | None = None,
                       min_distance: float = 0.5) -> None:
    """Raise `CDVAEDataError` if the cell is degenerate, too large or has overlapping atoms."""
    n = len(structure)
    if n == 0:
        raise CDVAEDataError("structure has no atoms")
    if max_atoms is not None and n > max_atoms:
        raise CDVAEDataError(f"structure has {n} atoms, more than max_atoms={max_atoms}")
    if not structure.is_ordered:
        raise CDVAEDataError("structure is disordered (partial occupancies)")
    if max(structure.atomic_numbers) > MAX_ATOMIC_NUMBER:
        raise CDVAEDataError(f"element with Z={max(structure.atomic_numbers)} is beyond the "
                             f"model's {MAX_ATOMIC_NUMBER} element types")
    volume = structure.volume
    if not math.isfinite(volume) or volume < 0.1 * n:
        raise CDVAEDataError(f"cell volume {volume:.3g} Å^3 is degenerate for {n} atoms")
    if not np.all(np.isfinite(structure.frac_coords)):
        raise CDVAEDataError("fractional coordinates are not finite")
    if n > 1:
        distances = structure.distance_matrix + np.eye(n) * 1e6
        if distances.min() < min_distance:
            raise CDVAEDataError(
                f"two atoms are {distances.min():.3f} Å apart (< {min_distance} Å)")


def read_cdvae_csv(path: str | Path, *, property_column: str | None = None,
                   max_atoms: int | None = None, limit: int | None = None,
                   niggli: bool = True) -> CrystalSet:
    """Read a CDVAE benchmark CSV (plain or .gz) into a `CrystalSet`.

    `property_column` (e.g. Perov-5 `heat_ref`, eV) is returned alongside; rows with a non-finite
    value are rejected. `limit` keeps the first rows only (for quick runs and tests).
    """
    path = Path(path)
    if not path.exists():
        raise CDVAEDataError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, nrows=limit)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CDVAEDataError(f"{path}: not a readable CSV ({exc})") from exc
    if "cif" not in table.columns:
        raise CDVAEDataError(f"{path}: no 'cif' column (columns: {list(table.columns)})")
    if property_column is not None and property_column not in table.columns:
        raise CDVAEDataError(f"{path}: no property column {property_column!r} "
                             f"(columns: {list(table.columns)})")
    ids = table["material_id"].astype(str).tolist() if "material_id" in table else [
        str(i) for i in range(len(table))]
    structures, kept_ids, props, rejected = [], [], [], []
    for row, cif in enumerate(table["cif"].tolist()):
        try:
            if not isinstance(cif, str) or not cif.strip():
                raise CDVAEDataError("empty CIF")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = Structure.from_str(cif, fmt="cif")
            if niggli:
                structure = structure.get_reduced_structure()
            validate_structure(structure, max_atoms=max_atoms)
            value = float("nan")
            if property_column is not None:
                value = float(table[property_column].iloc[row])
                if not math.isfinite(value):
                    raise CDVAEDataError(f"{property_column} is not finite")
        except Exception as exc:  # noqa: BLE001 - every failure of one row is reported, not fatal
            rejected.append((row, f"{type(exc).__name__}: {exc}"))
            continue
        structures.append(structure)
        kept_ids.append(ids[row])
        props.append(value)
    if not structures:
        raise CDVAEDataError(f"{path}: no usable rows ({len(rejected)} rejected; first: "
                             f"{rejected[0][1] if rejected else 'empty file'})")
    return CrystalSet(structures, kept_ids,
                      np.asarray(props) if property_column is not None else None,
                      property_column, rejected)


def lattice_features(structure: Structure) -> np.ndarray:
    """(a, b, c) / N^(1/3) in Å and (alpha, beta, gamma) in degrees.

    Dividing lengths by the cube root of the atom count makes them comparable across cell sizes,
    as in CDVAE's length scaling.
    """
    n = len(structure)
    a, b, c = structure.lattice.abc
    return np.array([a, b, c, *structure.lattice.angles]) / np.array([n ** (1 / 3)] * 3 + [1] * 3)


@dataclass
class LatticeScaler:
    """Standardises the six lattice features with training-set statistics."""

    mean_: np.ndarray | None = None
    std_: np.ndarray | None = None
    property_mean_: float = 0.0
    property_std_: float = 1.0

    def fit(self, structures: list[Structure], properties: np.ndarray | None = None) -> LatticeScaler:
        if not structures:
            raise CDVAEDataError("cannot fit LatticeScaler on an empty structure list")
        features = np.stack([lattice_features(s) for s in structures])
        self.mean_ = features.mean(axis=0)
        self.std_ = np.maximum(features.std(axis=0), 1e-3)
        if properties is not None and len(properties):
            self.property_mean_ = float(np.mean(properties))
            self.property_std_ = float(max(np.std(properties), 1e-6))
        return self

    def _check(self) -> None:
        if self.mean_ is None or self.std_ is None:
            raise CDVAEDataError("LatticeScaler is not fitted")

    def transform(self, structure: Structure) -> np.ndarray:
        self._check()
        return (lattice_features(structure) - self.mean_) / self.std_

    def inverse_transform(self, normalised: np.ndarray, num_atoms: int) -> Lattice:
        """Normalised 6-vector -> pymatgen Lattice; angles clipped to 30-150° to stay valid."""
        self._check()
        values = np.asarray(normalised, dtype=float) * self.std_ + self.mean_
        lengths = np.clip(values[:3] * num_atoms ** (1 / 3), 0.5, None)
        angles = np.clip(values[3:], 30.0, 150.0)
        lattice = Lattice.from_parameters(*lengths, *angles)
        if not math.isfinite(lattice.volume) or lattice.volume < 1e-2:
            lattice = Lattice.from_parameters(*lengths, 90.0, 90.0, 90.0)
        return lattice

    def to_dict(self) -> dict[str, Any]:
        self._check()
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "property_mean": self.property_mean_, "property_std": self.property_std_,
                "features": ["a/N^(1/3) (Å)", "b/N^(1/3) (Å)", "c/N^(1/3) (Å)",
                             "alpha (deg)", "beta (deg)", "gamma (deg)"]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LatticeScaler:
        return cls(np.asarray(values["mean"], dtype=float), np.asarray(values["std"], dtype=float),
                   float(values.get("property_mean", 0.0)), float(values.get("property_std", 1.0)))


def structure_to_data(structure: Structure, scaler: LatticeScaler,
                      property_value: float | None = None) -> Data:
    """One crystal as a PyG `Data`: fractional coords, atomic numbers, lattice, normalised lattice.

    `lattice` is stored as (1, 3, 3) so that a `Batch` stacks it to (B, 3, 3).
    """
    n = len(structure)
    y = float("nan") if property_value is None else (
        (property_value - scaler.property_mean_) / scaler.property_std_)
    return Data(
        frac_coords=torch.tensor(structure.frac_coords % 1.0, dtype=torch.float32),
        atom_types=torch.tensor(structure.atomic_numbers, dtype=torch.long),
        lattice=torch.tensor(structure.lattice.matrix, dtype=torch.float32).unsqueeze(0),
        lattice_norm=torch.tensor(scaler.transform(structure), dtype=torch.float32).unsqueeze(0),
        num_atoms=torch.tensor([n], dtype=torch.long),
        y=torch.tensor([y], dtype=torch.float32),
        num_nodes=n,
    )


def crystal_set_to_data(crystals: CrystalSet, scaler: LatticeScaler) -> list[Data]:
    props = crystals.properties
    return [structure_to_data(s, scaler, None if props is None else float(props[i]))
            for i, s in enumerate(crystals.structures)]
