"""Figures of short-range order: α against temperature and shell distance, motif probabilities.

Each plot shades what a random arrangement of the same cell would give, so that a reader sees at a
glance which α values are order and which are finite-size noise. Figures are built with
``matplotlib.figure.Figure`` (Agg rendering, no pyplot state, safe in worker threads) and written
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from matflow.outputs import atomic_write
from matflow.sro.lattice import SROInputError
from matflow.sro.motifs import MotifStats
from matflow.sro.warren_cowley import WarrenCowley

__all__ = ["plot_alpha_vs_temperature", "plot_alpha_vs_shell", "plot_motifs"]


def _as_wc(value) -> WarrenCowley:
    if isinstance(value, WarrenCowley):
        return value
    if isinstance(value, dict):
        return WarrenCowley.from_dict(value)
    raise SROInputError(f"expected a WarrenCowley or its dict, got {type(value).__name__}")


def _unique_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i, n)]


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
    return path


def plot_alpha_vs_temperature(
    records: Sequence[dict], path: str | os.PathLike, *, shell: int = 0
) -> Path:
    """α_ij of one shell against temperature (K), random 95 % band shaded per pair.

    Each record needs ``temperature`` (K) and ``warren_cowley`` (WarrenCowley or its dict);
    species must agree between records.
    """
    if not records:
        raise SROInputError("plot_alpha_vs_temperature: no records")
    items = []
    for k, rec in enumerate(records):
        if "temperature" not in rec or "warren_cowley" not in rec:
            raise SROInputError(f"record {k} lacks 'temperature' or 'warren_cowley'")
        items.append((float(rec["temperature"]), _as_wc(rec["warren_cowley"])))
    items.sort(key=lambda item: item[0])
    species = items[0][1].species
    if any(wc.species != species for _, wc in items):
        raise SROInputError("records have different species; plot them separately")
    temps = np.array([t for t, _ in items])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for n, (i, j) in enumerate(_unique_pairs(len(species))):
        color = f"C{n % 10}"
        alpha = np.array([wc.alpha[shell, i, j] for _, wc in items])
        lo = np.array([wc.band[shell, i, j, 0] for _, wc in items])
        hi = np.array([wc.band[shell, i, j, 1] for _, wc in items])
        ax.fill_between(temps, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.plot(temps, alpha, "o-", color=color, label=f"{species[i]}–{species[j]}")
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    radius = items[0][1].radii[shell]
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel(f"Warren–Cowley α, shell {shell + 1} ({radius:.2f} Å)")
    ax.set_title("shaded: 95 % band of a random arrangement")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_alpha_vs_shell(wc: WarrenCowley | dict, path: str | os.PathLike) -> Path:
    """α_ij against shell radius (Å) for each unordered pair, random 95 % band as error bars."""
    wc = _as_wc(wc)
    radii = np.asarray(wc.radii)
    pairs = _unique_pairs(len(wc.species))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    width = 0.04 * (radii[-1] - radii[0] if len(radii) > 1 else radii[0])
    for n, (i, j) in enumerate(pairs):
        color = f"C{n % 10}"
        x = radii + (n - (len(pairs) - 1) / 2) * width / max(len(pairs), 1)
        lo, hi = wc.band[:, i, j, 0], wc.band[:, i, j, 1]
        for m in range(len(radii)):
            ax.fill_between(
                [x[m] - width / 4, x[m] + width / 4],
                lo[m],
                hi[m],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
        ax.plot(x, wc.alpha[:, i, j], "o-", color=color, label=f"{wc.species[i]}–{wc.species[j]}")
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("shell radius (Å)")
    ax.set_ylabel("Warren–Cowley α")
    ax.set_title(f"{wc.n_atoms} atoms; shaded: 95 % band of a random arrangement")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_motifs(stats: MotifStats, path: str | os.PathLike, *, n_top: int = 15) -> Path:
    """Observed and random-solution probabilities of the most frequent first-shell motifs."""
    if not isinstance(stats, MotifStats):
        raise SROInputError(f"expected MotifStats, got {type(stats).__name__}")
    top = stats.top(n_top)
    if not top:
        raise SROInputError("no motifs to plot")
    labels = [t["motif"] for t in top]
    y = np.arange(len(top))
    fig = Figure(figsize=(6, 0.3 * len(top) + 1.5))
    ax = fig.subplots()
    ax.barh(y - 0.2, [t["observed"] for t in top], height=0.4, label="observed")
    ax.barh(y + 0.2, [t["random"] for t in top], height=0.4, label="ideal random solution")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    ax.set_title(
        f"KL = {stats.kl_bits:.3f} bits (random cell: {stats.baseline_mean_bits:.3f} ± "
        f"{stats.baseline_std_bits:.3f})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)
