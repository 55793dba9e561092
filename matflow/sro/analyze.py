"""One SRO analysis pipeline for files: Warren–Cowley, motif KL with its baseline, length scale.

The CLI (``matflow sro analyze``), the Prefect flow and the benchmarks all call ``analyze_files``,
so the checks (readers, lattice and shell counts, significance) exist once. A file that cannot be
analysed gives a failure record with the reason and the batch continues, because a lab team
running fifty snapshots wants the forty-nine answers and a list of what to fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from matflow.sro.lattice import KNOWN_LATTICES, LatticeError, SROInputError, shell_neighbours
from matflow.sro.motifs import motif_kl, sro_length_scale
from matflow.sro.readers import read_configurations
from matflow.sro.warren_cowley import (
    SIGNIFICANCE_METHODS,
    WarrenCowley,
    types_and_species,
    warren_cowley,
)

__all__ = ["analyze_configuration", "analyze_files", "format_table"]


def analyze_configuration(
    atoms: Atoms,
    *,
    lattice: str | None = None,
    a: float | None = None,
    counts: Sequence[int] | None = None,
    n_shells: int = 2,
    significance: str = "analytic",
    n_random: int = 200,
    n_motif_random: int = 50,
    seed: int = 0,
    species: Sequence[str] | None = None,
    c_over_a: float | None = None,
) -> dict:
    """SRO of one configuration as a JSON-able record (raises on bad input)."""
    nb = shell_neighbours(
        atoms, n_shells=n_shells, lattice=lattice, a=a, counts=counts, c_over_a=c_over_a
    )
    wc = warren_cowley(
        atoms, nb, species=species, significance=significance, n_random=n_random, seed=seed
    )
    types, names = types_and_species(atoms, species)
    motifs = motif_kl(types, nb, len(names), n_random=n_motif_random, seed=seed, species=names)
    return {
        "ok": True,
        "n_atoms": len(atoms),
        "species": list(names),
        "concentrations": wc.concentrations.tolist(),
        "shells": {
            "method": nb.method,
            "lattice": nb.lattice,
            "a_A": nb.a,
            "counts": nb.counts,
            "radii_A": np.asarray(nb.radii).tolist(),
        },
        "warren_cowley": wc.to_dict(),
        "motifs": motifs.to_dict(),
        "length_scale": sro_length_scale(wc),
    }


def _check_options(lattice, a, counts, n_shells, significance, frames) -> None:
    """Refuse bad options once, before any file is read: they are not a fault of one file."""
    if lattice is not None and str(lattice).strip().lower() not in KNOWN_LATTICES:
        raise LatticeError(
            f"unknown lattice {lattice!r}; known lattices: {', '.join(KNOWN_LATTICES)}"
        )
    if a is not None and not (isinstance(a, int | float) and math.isfinite(a) and a > 0):
        raise SROInputError(f"a must be a positive lattice parameter in Å, got {a!r}")
    if a is not None and lattice is None:
        raise SROInputError("a was given without lattice; give lattice= too (fcc, bcc or hcp)")
    if counts is not None and (len(counts) == 0 or any(int(c) != c or c < 1 for c in counts)):
        raise SROInputError(f"counts must be positive neighbour numbers, got {list(counts)!r}")
    if isinstance(n_shells, bool) or int(n_shells) != n_shells or n_shells < 1:
        raise SROInputError(f"n_shells must be a positive integer, got {n_shells!r}")
    if significance not in SIGNIFICANCE_METHODS:
        raise SROInputError(
            f"unknown significance {significance!r}; choose one of {', '.join(SIGNIFICANCE_METHODS)}"
        )
    if frames is None:
        raise SROInputError("frames must be 'last', 'first', ':', an index or a slice")


def _frame_average(records: list[dict]) -> dict:
    """One record from several frames: mean α, its spread over frames, single-frame band.

    The band and z stay those of one frame's random arrangement: frames of one run are correlated,
    so the averaged α is judged conservatively.
    """
    first = dict(records[0])
    wcs = [WarrenCowley.from_dict(r["warren_cowley"]) for r in records]
    alpha = np.mean([w.alpha for w in wcs], axis=0)
    spread = (
        np.std([w.alpha for w in wcs], axis=0, ddof=1) if len(wcs) > 1 else np.zeros_like(alpha)
    )
    wc = wcs[0]
    mean = wc.random_mean if wc.random_mean is not None else wc.band.mean(axis=-1)
    std = wc.random_std
    if std is None:
        std = (wc.band[..., 1] - wc.band[..., 0]) / (2 * 1.959963984540054)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (alpha - mean) / std, np.nan)
    averaged = WarrenCowley(
        wc.species,
        wc.concentrations,
        alpha,
        wc.radii,
        wc.counts,
        z,
        wc.band,
        wc.n_atoms,
        wc.significance,
        wc.random_mean,
        wc.random_std,
    )
    first["warren_cowley"] = averaged.to_dict()
    first["alpha_frame_std"] = spread.tolist()
    first["frames_averaged"] = len(records)
    first["length_scale"] = sro_length_scale(averaged)
    kls = [r["motifs"]["kl_bits"] for r in records]
    first["motifs"] = {**first["motifs"], "kl_bits": float(np.mean(kls)), "kl_bits_frames": kls}
    first["frame"] = "average"
    return first


def analyze_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    lattice: str | None = None,
    a: float | None = None,
    counts: Sequence[int] | None = None,
    n_shells: int = 2,
    significance: str = "analytic",
    frames: str | int = "last",
    type_map: dict[int, str] | None = None,
    average_frames: bool = False,
    n_random: int = 200,
    n_motif_random: int = 50,
    seed: int = 0,
    c_over_a: float | None = None,
) -> list[dict]:
    """Analyse each file (each selected frame, or their average) and return one record each.

    ``frames``: "last" (default), "first", ":" (all), an index or a slice string. With
    ``average_frames`` the selected frames of a file give one record with mean α. Records of good
    frames have ``ok: True`` and the results of ``analyze_configuration``; a bad file or frame gives
    ``{"file", "frame", "ok": False, "reason"}`` and the batch goes on. Bad options (unknown
    lattice or significance, non-positive ``a`` or counts) raise SROInputError before any file is
    read.
    """
    _check_options(lattice, a, counts, n_shells, significance, frames)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    options = dict(
        lattice=lattice,
        a=a,
        counts=counts,
        n_shells=n_shells,
        significance=significance,
        n_random=n_random,
        n_motif_random=n_motif_random,
        seed=seed,
        c_over_a=c_over_a,
    )
    results: list[dict] = []
    for path in paths:
        name = str(path)
        try:
            configurations = read_configurations(Path(path), index=frames, type_map=type_map)
        except (ValueError, OSError) as exc:
            results.append({"file": name, "frame": None, "ok": False, "reason": str(exc)})
            continue
        good: list[dict] = []
        for k, atoms in enumerate(configurations):
            # frames are numbered within the selection; a lone "last"/"first" frame says so
            label = frames if isinstance(frames, str) and frames in ("last", "first") else k
            base = {"file": name, "frame": label, "timestep": atoms.info.get("timestep")}
            try:
                record = {**base, **analyze_configuration(atoms, **options)}
            except ValueError as exc:
                results.append({**base, "ok": False, "reason": f"{name} frame {k}: {exc}"})
                continue
            good.append(record)
        if average_frames and good:
            results.append(_frame_average(good))
        else:
            results.extend(good)
    return results


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i, n)]


def format_table(results: list[dict]) -> str:
    """Plain-text summary: α per shell and unordered pair (α_ij = α_ji), motif KL, length scale."""
    lines = []
    header = (
        f"{'file':<32} {'frame':>7} {'shell':>5} {'r/Å':>6} {'pair':<16} {'alpha':>8} {'z':>7} "
        f"{'random 95% band':>19}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for rec in results:
        file = Path(str(rec.get("file", ""))).name[:32]
        frame = str(rec.get("frame", ""))
        if not rec.get("ok"):
            lines.append(f"{file:<32} {frame:>7} FAILED: {rec.get('reason', 'unknown reason')}")
            continue
        wc = rec["warren_cowley"]
        species = wc["species"]
        for m, radius in enumerate(wc["radii_A"]):
            for i, j in _pairs(len(species)):
                alpha = wc["alpha"][m][i][j]
                z = wc["z"][m][i][j]
                lo, hi = wc["band"][m][i][j]
                flag = "*" if wc["significant"][m][i][j] else ""
                pair = f"{species[i]}-{species[j]}"[:16]
                z_text = f"{z:+7.1f}" if z is not None else f"{'n/a':>7}"
                alpha_text = f"{alpha:+8.4f}" if alpha is not None else f"{'n/a':>8}"
                band = f"[{lo:+.4f}, {hi:+.4f}]" if lo is not None else "n/a"
                lines.append(
                    f"{file:<32} {frame:>7} {m + 1:>5} {radius:6.3f} {pair:<16} {alpha_text} "
                    f"{z_text} {band:>19} {flag}"
                )
        mot = rec["motifs"]
        std = mot.get("baseline_std_bits")
        lines.append(
            f"    motif KL (shell 1): {mot['kl_bits']:.4f} bits; random cell of this size: "
            f"{_number(mot['baseline_mean_bits'])} ± {_number(std)} bits"
        )
        ls = rec["length_scale"]
        if ls.get("decay_length_A") is not None:
            length = f"{ls['decay_length_A']:.2f} Å"
        elif ls.get("decay_length_upper_bound_A") is not None:
            length = f"< {ls['decay_length_upper_bound_A']:.2f} Å"
        else:
            length = "none"
        lines.append(f"    SRO decay length: {length} ({ls['status']}: {ls['reason']})")
    lines.append("* α outside the central 95 % band of a random arrangement of the same cell")
    return "\n".join(lines)
