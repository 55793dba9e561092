"""Analysis of MD trajectories: thermodynamic series with an equilibration cut, partial radial
distribution functions, mean-square displacement with a diffusion coefficient, and PNG plots.

Units: time fs (ps in the diffusion fit), temperature K, energy eV, pressure GPa, distances Å,
diffusion coefficient cm²/s (also given in Å²/ps; 1 Å²/ps = 1e-4 cm²/s).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np
from ase import Atoms


def load_frames(trajectory: str | os.PathLike | Sequence[Atoms]) -> list[Atoms]:
    """Frames of an extxyz/.traj file (or a list of Atoms, returned as is)."""
    if isinstance(trajectory, str | os.PathLike):
        from ase.io import read

        return read(str(trajectory), ":")
    return list(trajectory)


# ----------------------------------------------------------------- series and equilibration
def statistical_inefficiency(x: np.ndarray) -> float:
    """g = 1 + 2 Σ (1 - t/N) C(t), summed until the autocorrelation C first drops below zero."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 3:
        return 1.0
    dx = x - x.mean()
    var = dx.var()
    if var == 0:
        return 1.0
    g = 1.0
    for t in range(1, n - 1):
        c = float(np.dot(dx[:-t], dx[t:]) / ((n - t) * var))
        if c <= 0:
            break
        g += 2.0 * c * (1 - t / n)
    return max(g, 1.0)


def equilibration_cut(x: Sequence[float], *, n_candidates: int = 20, max_fraction: float = 0.75) -> int:
    """Index where the stationary part of a series starts (Chodera 2016 style).

    Tries cuts on a grid up to ``max_fraction`` of the series and keeps the one maximising the number
    of effectively uncorrelated samples (N - cut) / g of what remains.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 4:
        return 0
    best, best_neff = 0, -1.0
    for cut in np.unique(np.linspace(0, int(max_fraction * n), n_candidates).astype(int)):
        neff = (n - cut) / statistical_inefficiency(x[cut:])
        if neff > best_neff:
            best, best_neff = int(cut), neff
    return best


@dataclass
class SeriesSummary:
    """Mean and error (standard error with statistical inefficiency) after the equilibration cut."""

    name: str
    unit: str
    cut_index: int
    cut_time_fs: float
    mean: float
    std: float
    stderr: float


def thermo_series(frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """time_fs, temperature_K, potential/kinetic/total energy (eV), pressure_GPa, volume (Å³)."""
    out = {k: [] for k in ("time_fs", "temperature_K", "epot_eV", "ekin_eV", "etot_eV",
                           "pressure_GPa", "volume_A3")}
    for i, f in enumerate(frames):
        epot = float(f.get_potential_energy())
        ekin = float(f.info.get("kinetic_energy_eV", f.get_kinetic_energy()))
        out["time_fs"].append(float(f.info.get("time_fs", i)))
        out["temperature_K"].append(float(f.info.get("temperature_K", f.get_temperature())))
        out["epot_eV"].append(epot)
        out["ekin_eV"].append(ekin)
        out["etot_eV"].append(epot + ekin)
        out["pressure_GPa"].append(float(f.info.get("pressure_GPa", np.nan)))
        out["volume_A3"].append(float(f.get_volume()))
    return {k: np.asarray(v) for k, v in out.items()}


def summarize_series(series: dict[str, np.ndarray]) -> list[SeriesSummary]:
    """Equilibration cut (decided on the potential energy) applied to every series."""
    cut = equilibration_cut(series["epot_eV"])
    units = {"temperature_K": "K", "epot_eV": "eV", "etot_eV": "eV", "pressure_GPa": "GPa",
             "volume_A3": "Å³"}
    out = []
    for name, unit in units.items():
        x = series[name][cut:]
        g = statistical_inefficiency(x)
        out.append(SeriesSummary(name, unit, cut, float(series["time_fs"][cut]), float(np.mean(x)),
                                 float(np.std(x)), float(np.std(x) * np.sqrt(g / max(len(x), 1)))))
    return out


# ----------------------------------------------------------------- radial distribution functions
def partial_rdf(frames: Sequence[Atoms], *, r_max_A: float = 6.0, dr_A: float = 0.05,
                pairs: Sequence[tuple[str, str]] | None = None) -> dict:
    """Partial g_ab(r) per element pair averaged over frames (periodic, minimum over all images).

    Normalised so that an uncorrelated (ideal-gas) arrangement gives g = 1 at every r.
    Returns {"r_A": bin centres, "pairs": {"A-B": g(r)}}.
    """
    from ase.neighborlist import neighbor_list

    frames = list(frames)
    edges = np.arange(0.0, r_max_A + dr_A / 2, dr_A)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    symbols = sorted(set(frames[0].get_chemical_symbols()))
    pairs = list(pairs) if pairs else list(combinations_with_replacement(symbols, 2))
    hist = {p: np.zeros(len(centres)) for p in pairs}
    norm = {p: 0.0 for p in pairs}
    for atoms in frames:
        syms = np.array(atoms.get_chemical_symbols())
        i, j, d = neighbor_list("ijd", atoms, r_max_A)
        volume = atoms.get_volume()
        for a, b in pairs:
            na, nb = int((syms == a).sum()), int((syms == b).sum())
            mask = (syms[i] == a) & (syms[j] == b)
            hist[(a, b)] += np.histogram(d[mask], bins=edges)[0]
            # expected count per shell for uncorrelated atoms: na * density_b * shell volume
            nb_eff = nb - 1 if a == b else nb
            norm[(a, b)] += na * nb_eff / volume
    return {"r_A": centres,
            "pairs": {f"{a}-{b}": hist[(a, b)] / (norm[(a, b)] * shell) if norm[(a, b)] else
                      np.zeros(len(centres)) for a, b in pairs}}


def first_peak(r: np.ndarray, g: np.ndarray) -> float:
    """Position (Å) of the highest-g bin of the first coordination shell (first bin where g > 1 onward)."""
    above = np.flatnonzero(g > 1.0)
    if not len(above):
        return float("nan")
    start = above[0]
    stop = start
    while stop + 1 < len(g) and g[stop + 1] > 1.0:
        stop += 1
    return float(r[start + int(np.argmax(g[start:stop + 1]))])


# ----------------------------------------------------------------- diffusion
def unwrapped_positions(frames: Sequence[Atoms]) -> np.ndarray:
    """Positions (n_frames, n_atoms, 3) with periodic jumps between frames removed.

    Frame-to-frame displacements are taken as the minimum image in the fractional cell of each
    frame, so atoms that were wrapped back into the box are followed continuously.
    """
    pos = [frames[0].positions.copy()]
    for prev, cur in zip(frames[:-1], frames[1:], strict=True):
        cell = cur.cell.array
        dfrac = np.linalg.solve(cell.T, (cur.positions - prev.positions).T).T
        dfrac -= np.round(dfrac)
        pos.append(pos[-1] + dfrac @ cell)
    return np.asarray(pos)


@dataclass
class DiffusionResult:
    """MSD curve and the Einstein-relation fit D = slope / 6 over [fit_start_fs, fit_end_fs]."""

    time_fs: np.ndarray
    msd_A2: np.ndarray
    msd_by_element_A2: dict
    fit_start_fs: float
    fit_end_fs: float
    D_A2_per_ps: float
    D_cm2_per_s: float
    D_by_element_cm2_per_s: dict


def msd(frames: Sequence[Atoms], *, fit_start_fraction: float = 0.2,
        fit_end_fraction: float = 0.8, remove_drift: bool = True) -> DiffusionResult:
    """Mean-square displacement from the first kept frame, with D fitted on a middle window.

    The early ballistic part and the noisy tail are left out of the fit (fractions of the run).
    """
    frames = list(frames)
    if len(frames) < 3:
        raise ValueError("need at least 3 frames for an MSD")
    t = np.array([float(f.info.get("time_fs", i)) for i, f in enumerate(frames)])
    t = t - t[0]
    pos = unwrapped_positions(frames)
    disp = pos - pos[0]
    if remove_drift:
        masses = frames[0].get_masses()
        com = (disp * masses[None, :, None]).sum(1) / masses.sum()
        disp = disp - com[:, None, :]
    sq = (disp ** 2).sum(-1)
    symbols = np.array(frames[0].get_chemical_symbols())
    by_el = {el: sq[:, symbols == el].mean(1) for el in sorted(set(symbols))}
    total = sq.mean(1)
    i0 = int(fit_start_fraction * (len(t) - 1))
    i1 = max(int(fit_end_fraction * (len(t) - 1)), i0 + 1)
    window = slice(i0, i1 + 1)

    def fit(y: np.ndarray) -> float:
        slope = np.polyfit(t[window] / 1000.0, y[window], 1)[0]  # Å²/ps
        return float(slope / 6.0)

    d = fit(total)
    return DiffusionResult(time_fs=t, msd_A2=total, msd_by_element_A2=by_el,
                           fit_start_fs=float(t[i0]), fit_end_fs=float(t[i1]), D_A2_per_ps=d,
                           D_cm2_per_s=d * 1e-4,
                           D_by_element_cm2_per_s={el: fit(y) * 1e-4 for el, y in by_el.items()})


# ----------------------------------------------------------------- report
def analyze_trajectory(trajectory, outdir: str | os.PathLike | None = None, *,
                       r_max_A: float = 6.0) -> dict:
    """Series summaries, partial RDFs and MSD/D of a trajectory; PNG plots when outdir is given."""
    frames = load_frames(trajectory)
    series = thermo_series(frames)
    summary = summarize_series(series)
    cut = summary[0].cut_index
    rdf = partial_rdf(frames[cut:], r_max_A=r_max_A)
    diff = msd(frames[cut:]) if len(frames) - cut >= 3 else None
    report = {
        "n_frames": len(frames), "equilibration_cut_index": cut,
        "equilibration_cut_time_fs": float(series["time_fs"][cut]),
        "series": {s.name: {"unit": s.unit, "mean": s.mean, "std": s.std, "stderr": s.stderr}
                   for s in summary},
        "rdf_first_peak_A": {p: first_peak(rdf["r_A"], g) for p, g in rdf["pairs"].items()},
        "diffusion": None if diff is None else {
            "D_cm2_per_s": diff.D_cm2_per_s, "D_A2_per_ps": diff.D_A2_per_ps,
            "fit_window_fs": [diff.fit_start_fs, diff.fit_end_fs],
            "D_by_element_cm2_per_s": diff.D_by_element_cm2_per_s},
    }
    if outdir is not None:
        report["plots"] = plot_report(series, cut, rdf, diff, outdir)
    return report


def _save_figure(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_report(series: dict, cut: int, rdf: dict, diff: DiffusionResult | None,
                outdir: str | os.PathLike) -> list[str]:
    """Write thermo.png, rdf.png and msd.png into outdir; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    t_ps = series["time_fs"] / 1000.0
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    for ax, key, label in zip(axes, ("temperature_K", "epot_eV", "pressure_GPa"),
                              ("T (K)", "E_pot (eV)", "P (GPa)"), strict=True):
        ax.plot(t_ps, series[key], lw=1)
        ax.axvline(t_ps[cut], color="k", ls="--", lw=0.8, label="equilibration cut")
        ax.set_ylabel(label)
    axes[0].legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("time (ps)")
    paths.append(_save_figure(fig, outdir / "thermo.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for pair, g in rdf["pairs"].items():
        ax.plot(rdf["r_A"], g, label=pair, lw=1)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.legend(fontsize=8)
    paths.append(_save_figure(fig, outdir / "rdf.png"))

    if diff is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(diff.time_fs / 1000, diff.msd_A2, label="all", lw=1.5)
        for el, y in diff.msd_by_element_A2.items():
            ax.plot(diff.time_fs / 1000, y, label=el, lw=0.8)
        ax.axvspan(diff.fit_start_fs / 1000, diff.fit_end_fs / 1000, color="grey", alpha=0.2,
                   label=f"fit: D = {diff.D_cm2_per_s:.2e} cm²/s")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("MSD (Å²)")
        ax.legend(fontsize=8)
        paths.append(_save_figure(fig, outdir / "msd.png"))
    return paths
