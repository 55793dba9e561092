"""Chemical short-range order expected at the processing temperature, for screened candidates.

A single-phase prediction says nothing about how random the solid solution is: CrCoNi is fcc yet
its Cr atoms avoid each other, which changes strength and stacking-fault energy. For the best
candidates of a screening this module runs the SRO pipeline (``matflow.sro.simulate_sro``: a cluster
expansion fitted to a universal potential, then annealed Monte Carlo) down to the processing
temperature and condenses the first-shell Warren–Cowley matrix into numbers a lab can rank by.

It is per-candidate work (tens of seconds each with SevenNet-0), so it runs on the top few rows
only; a candidate that cannot be simulated keeps its row with the reason instead of a number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from matflow.screening.composition import parse_composition

SRO_COLUMNS = ("sro_strength", "sro_pair", "sro_alpha", "sro_z", "sro_lattice", "sro_T_K", "sro_note")
ANNEAL_START_K = 1500.0
"""Monte Carlo starts above any processing temperature a lab would use and anneals down to it."""


class SROStrengthError(ValueError):
    """A processing temperature or setting that cannot give a meaningful SRO estimate."""


def lattice_for(row: Mapping[str, Any]) -> str:
    """The solid-solution lattice the fused evidence finds most probable (fcc, bcc or hcp)."""
    p = {lat: float(row.get(f"p_{lat.upper()}", 0.0)) for lat in ("fcc", "bcc", "hcp")}
    return max(p, key=p.get)


def first_shell_summary(simulation: dict, temperature_K: float) -> dict[str, Any]:
    """Strength of SRO in the first shell at ``temperature_K`` from a ``SROSimulation.to_dict()``.

    ``sro_strength`` is the concentration-weighted root mean square of the unlike-pair α,
    sqrt(Σ_{i≠j} c_i c_j α_ij² / Σ_{i≠j} c_i c_j): 0 for a random solution, of order 0.1 when one
    pair clearly orders or avoids. ``sro_pair``/``sro_alpha``/``sro_z`` name the strongest pair,
    its α (negative: the pair is preferred) and its distance from random in standard deviations.
    """
    records = simulation["temperatures"]
    record = min(records, key=lambda r: abs(r["temperature_K"] - temperature_K))
    species = simulation["species"]
    comp = simulation["composition"]
    c = np.array([float(comp[s]) for s in species])
    alpha = np.asarray(record["alpha"][0], dtype=float)
    random_std = np.asarray(simulation["random_alpha_std"][0], dtype=float)
    err = np.asarray(record["alpha_err"][0], dtype=float)
    unlike = ~np.eye(len(species), dtype=bool)
    weights = np.outer(c, c) * unlike
    strength = float(np.sqrt(np.sum(weights * alpha**2) / np.sum(weights)))
    masked = np.where(unlike, np.abs(alpha), -np.inf)
    i, j = np.unravel_index(int(np.argmax(masked)), alpha.shape)
    scale = np.hypot(random_std[i, j], err[i, j])
    z = float(alpha[i, j] / scale) if scale > 0 else float("inf") * np.sign(alpha[i, j])
    return {"sro_strength": strength, "sro_pair": f"{species[i]}-{species[j]}",
            "sro_alpha": float(alpha[i, j]), "sro_z": z, "sro_T_K": float(record["temperature_K"])}


def add_sro_strength(table: pd.DataFrame, *, top: int, temperature_K: float,
                     potential: str = "sevenn-0", n_train: int = 40, sweeps: int = 100,
                     size: int | None = None, seed: int = 0,
                     simulate: Callable[..., Any] | None = None,
                     progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """A copy of a ranked screening table with SRO columns filled for its first ``top`` rows.

    Rows below ``top`` get empty values; a row whose simulation fails gets the reason in
    ``sro_note`` and the others go on. ``simulate`` defaults to ``matflow.sro.simulate_sro``.
    """
    if not np.isfinite(temperature_K) or not 0 < temperature_K < ANNEAL_START_K:
        raise SROStrengthError(f"processing temperature {temperature_K!r} K: must be between 0 and "
                               f"{ANNEAL_START_K:g} K (the Monte Carlo anneals down from there)")
    if top < 0:
        raise SROStrengthError(f"top {top}: must be >= 0")
    if simulate is None:
        from matflow.sro.simulate import simulate_sro as simulate
    out = table.copy()
    for column in SRO_COLUMNS:
        out[column] = np.nan if column in ("sro_strength", "sro_alpha", "sro_z", "sro_T_K") else ""
    n = min(top, len(out))
    temperatures = _anneal_temperatures(temperature_K)
    for k in range(n):
        row = out.iloc[k]
        lattice = lattice_for(row)
        out.iat[k, out.columns.get_loc("sro_lattice")] = lattice
        if progress is not None:
            progress(k, n, str(row["composition"]))
        try:
            comp = dict(parse_composition(str(row["composition"])))
            result = simulate(comp, lattice=lattice, temperatures=temperatures, size=size,
                              potential=potential, n_train=n_train, sweeps=sweeps, seed=seed)
            summary = first_shell_summary(result.to_dict() if hasattr(result, "to_dict") else result,
                                          temperature_K)
        except Exception as exc:  # one candidate's failure (odd counts, potential error) is a note
            out.iat[k, out.columns.get_loc("sro_note")] = f"{type(exc).__name__}: {exc}"
            continue
        for key, value in summary.items():
            out.iat[k, out.columns.get_loc(key)] = value
        out.iat[k, out.columns.get_loc("sro_note")] = (
            f"{potential}, {lattice}, annealed {temperatures[0]:g}→{temperatures[-1]:g} K")
    return out


def _anneal_temperatures(temperature_K: float, steps: int = 3) -> Sequence[float]:
    """From ANNEAL_START_K down to the processing temperature in ``steps`` equal steps."""
    return [float(t) for t in np.linspace(ANNEAL_START_K, temperature_K, steps)]
