"""Plain-text tables and plots of a Monte Carlo SRO simulation, for the CLI, the flow and reports.

Works on ``SROSimulation`` or its ``to_dict()`` form, so a result read back from JSON prints and
plots the same as one just computed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from matflow.sro.warren_cowley import WarrenCowley

BAND_Z = 1.959964
"""Half-width of the central 95 % band of a normal distribution, in standard deviations."""


def _as_dict(result: Any) -> dict:
    return result if isinstance(result, dict) else result.to_dict()


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i, n)]


def simulation_table(result: Any, *, shell: int = 0) -> str:
    """Per temperature: energy, heat capacity, acceptance and α_ij of ``shell`` with its error;
    '*' marks an α outside the 95 % band of a random arrangement of the same cell."""
    d = _as_dict(result)
    species = d["species"]
    pairs = _pairs(len(species))
    rnd_mean = np.asarray(d["random_alpha_mean"])[shell]
    rnd_std = np.asarray(d["random_alpha_std"])[shell]
    model = d["energy_model"]
    metrics = model.get("metrics", {})
    potential = model.get("potential", {})
    pot_name = potential.get("name", potential) if isinstance(potential, dict) else potential
    lines = [
        f"{'-'.join(species)} on {d['lattice']}, a = {d['a_A']:.4f} Å ({d['a_source']}), "
        f"{d['n_atoms']} atoms; energy model: cluster expansion fitted to {pot_name}",
    ]
    if metrics:
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        lines.append("energy model: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    radius = d["shell_radii_A"][shell]
    header = (f"{'T (K)':>7} {'E (eV/atom)':>13} {'Cv (kB/atom)':>13} {'accept':>7} "
              + " ".join(f"{species[i] + '-' + species[j]:>14}" for i, j in pairs))
    lines += [f"Warren–Cowley α, shell {shell + 1} ({radius:.3f} Å); * outside the random 95 % band",
              header]
    for rec in d["temperatures"]:
        alpha = np.asarray(rec["alpha"])[shell]
        err = np.asarray(rec["alpha_err"])[shell]
        cells = []
        for i, j in pairs:
            outside = abs(alpha[i, j] - rnd_mean[i, j]) > BAND_Z * rnd_std[i, j]
            cells.append(f"{alpha[i, j]:+.3f}±{err[i, j]:.3f}{'*' if outside else ' '}")
        lines.append(f"{rec['temperature_K']:>7.0f} {1000 * rec['energy_eV_per_atom']:>13.3f} "
                     f"{rec['heat_capacity_kB_per_atom']:>13.3f} {rec['acceptance_rate']:>7.3f} "
                     + " ".join(f"{c:>14}" for c in cells)
                     + ("" if rec.get("converged", True) else "  (not converged)"))
    return "\n".join(lines)


def warren_cowley_records(result: Any) -> list[dict]:
    """One record per temperature with a ``WarrenCowley`` whose band is the random arrangement's
    95 % band of this cell (the form ``plots.plot_alpha_vs_temperature`` takes)."""
    d = _as_dict(result)
    mean = np.asarray(d["random_alpha_mean"], dtype=float)
    std = np.asarray(d["random_alpha_std"], dtype=float)
    band = np.stack([mean - BAND_Z * std, mean + BAND_Z * std], axis=-1)
    conc = np.array([d["composition"][s] for s in d["species"]], dtype=float)
    out = []
    for rec in d["temperatures"]:
        alpha = np.asarray(rec["alpha"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, (alpha - mean) / std, 0.0)
        wc = WarrenCowley(species=tuple(d["species"]), concentrations=conc, alpha=alpha,
                          radii=np.asarray(d["shell_radii_A"], dtype=float),
                          counts=[0] * alpha.shape[0], z=z, band=band, n_atoms=int(d["n_atoms"]))
        out.append({"temperature": float(rec["temperature_K"]), "warren_cowley": wc})
    return out


def plot_simulation(result: Any, folder: str | os.PathLike) -> list[Path]:
    """α per pair against temperature for each shell and, when the result still holds them, the
    motif distribution of the lowest temperature against the random solution."""
    from matflow.sro.plots import plot_alpha_vs_temperature, plot_motifs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = warren_cowley_records(result)
    n_shells = records[0]["warren_cowley"].alpha.shape[0]
    paths = [plot_alpha_vs_temperature(records, folder / f"alpha_vs_T_shell{m + 1}.png", shell=m)
             for m in range(n_shells)]
    stats = getattr(result, "motif_stats", None)
    if stats:
        temps = [r["temperature_K"] for r in _as_dict(result)["temperatures"]]
        coldest = int(np.argmin(temps))
        paths.append(plot_motifs(stats[coldest], folder / f"motifs_{temps[coldest]:.0f}K.png"))
    return paths


def plot_analysis(records: list[dict], folder: str | os.PathLike) -> list[Path]:
    """α against shell distance with the random band, one plot per analysed configuration."""
    import re

    from matflow.sro.plots import plot_alpha_vs_shell

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for rec in records:
        if not rec.get("ok"):
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(rec["file"])).name)
        paths.append(plot_alpha_vs_shell(rec["warren_cowley"],
                                         folder / f"{stem}_frame{rec['frame']}_alpha_vs_shell.png"))
    return paths
