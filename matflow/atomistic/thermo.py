"""Harmonic vibrational thermodynamics from a phonon density of states, in numpy and in torch.

Every vibrational label matflow learns from (S_vib, Cv, F_vib at any T, the last DOS peak) is a
functional of the phonon DOS g(ν). Writing those functionals once, for numpy arrays and for
differentiable torch tensors with the same formulas, lets a model that predicts g(ν) be trained
on any of them (the loss calls the torch version) and lets labels be checked against phonopy.

Conventions:

* A DOS is a set of modes at frequencies ν_i (THz) with weights w_i in modes per atom, summing to
  3 (``normalize_dos``). A DOS on a regular grid (states per THz per atom, ``dos_grid``) becomes
  weights w_i = g(ν_i) Δν at the bin centres: a rectangle rule, exact for a DOS made of modes that
  sit at the centres (an Einstein solid in one bin gives Einstein's S and Cv exactly).
* Modes at ν <= ``cutoff_THz`` (acoustic modes at Γ, imaginary modes stored as negative ν) carry
  no thermodynamics, as in phonopy's ``ThermalProperties``; the caller decides whether to
  renormalise the rest (``normalize_dos``).
* Per mole of atoms: S and Cv in J K⁻¹ mol⁻¹, F and U in kJ mol⁻¹ (zero-point energy included).
  High-T limits: Cv → 3R, U → 3RT (Dulong–Petit).

Formulas (x = hν / k_B T), per mode: Cv = R x² eˣ/(eˣ−1)²; S = R [x/(eˣ−1) − ln(1−e⁻ˣ)];
U = N_A hν [1/2 + 1/(eˣ−1)]; F = N_A hν/2 + RT ln(1−e⁻ˣ) (e.g. Dove, *Introduction to Lattice
Dynamics*, Cambridge University Press (1993), ch. 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

R_GAS = 8.314462618  # J K⁻¹ mol⁻¹
H_OVER_KB_K_PER_THZ = 47.99243073  # h · 10¹² Hz / k_B, in K per THz
NA_H_J_PER_MOL_PER_THZ = 399.0312713  # N_A · h · 10¹² Hz, in J mol⁻¹ per THz
THZ_TO_CM1 = 33.35640952  # 1 THz in cm⁻¹
X_MAX = 700.0  # e⁻⁷⁰⁰ ≈ 1e-304: modes this stiff contribute nothing but their zero-point energy

DEFAULT_MAX_THZ = 120.0  # above the O–H stretch (about 110 THz, 3,650 cm⁻¹), the stiffest mode seen
DEFAULT_BIN_THZ = 0.1


class DOSInputError(ValueError):
    """A DOS or temperature grid that the harmonic formulas cannot use, with the reason."""


@dataclass(frozen=True)
class FrequencyGrid:
    """A fixed, regular frequency grid shared by every label and by a model's DOS output.

    ``n_bins`` bins of width ``bin_THz`` from 0 THz; bin i covers [i Δν, (i+1) Δν) and its centre
    stands for every mode in it.
    """

    max_THz: float = DEFAULT_MAX_THZ
    bin_THz: float = DEFAULT_BIN_THZ

    @property
    def n_bins(self) -> int:
        return int(round(self.max_THz / self.bin_THz))

    @property
    def edges_THz(self) -> np.ndarray:
        return np.arange(self.n_bins + 1) * self.bin_THz

    @property
    def centres_THz(self) -> np.ndarray:
        return (np.arange(self.n_bins) + 0.5) * self.bin_THz

    def describe(self) -> str:
        return (f"{self.n_bins} bins of {self.bin_THz:g} THz from 0 to {self.max_THz:g} THz "
                "(bin centres), states per THz per atom, 3 modes per atom")


def _check_temperatures(temperatures_K) -> np.ndarray:
    t = np.atleast_1d(np.asarray(temperatures_K, dtype=float))
    if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise DOSInputError(f"temperatures_K: need finite values >= 0 K in a 1-D list, got {t!r}")
    return t


def dos_grid(frequencies_THz, weights, grid: FrequencyGrid | None = None, *,
             cutoff_THz: float = 0.0) -> np.ndarray:
    """Bin modes (frequencies in THz with weights, e.g. a phonopy mesh's frequencies and q-point
    weights) onto ``grid``: states per THz per atom, normalised to 3 modes per atom.

    ``frequencies_THz`` is (n_q, n_branches) or flat; ``weights`` is per q-point (n_q,) or per mode.
    Modes at or below ``cutoff_THz`` (imaginary ones are negative) are left out before the
    normalisation, so the result always holds 3 modes per atom; count them separately. Modes above
    the grid's top raise DOSInputError (silently dropping the stiffest modes would bias S and Cv).
    """
    grid = grid or FrequencyGrid()
    freqs = np.asarray(frequencies_THz, dtype=float)
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1 and freqs.ndim == 2 and w.shape[0] == freqs.shape[0]:
        w = np.broadcast_to(w[:, None], freqs.shape)
    freqs, w = freqs.ravel(), np.ravel(w)
    if freqs.shape != w.shape or freqs.size == 0:
        raise DOSInputError(f"frequencies ({freqs.size}) and weights ({w.size}) must match and be "
                            "non-empty")
    if not (np.all(np.isfinite(freqs)) and np.all(np.isfinite(w))) or np.any(w < 0):
        raise DOSInputError("frequencies and weights must be finite, weights >= 0")
    if freqs.max() >= grid.max_THz:
        raise DOSInputError(f"highest frequency {freqs.max():.2f} THz lies above the grid's top "
                            f"{grid.max_THz:g} THz")
    keep = freqs > cutoff_THz
    if not np.any(w[keep] > 0):
        raise DOSInputError("no mode above the cutoff frequency: nothing to normalise")
    hist, _ = np.histogram(freqs[keep], bins=grid.edges_THz, weights=w[keep])
    return normalize_dos(hist / grid.bin_THz, grid.bin_THz)


def normalize_dos(dos, bin_THz: float):
    """Scale a grid DOS (states per THz per atom; numpy or torch, batch dims first) to 3 modes per
    atom, the count a harmonic crystal has."""
    total = dos.sum(-1, keepdims=True) * bin_THz
    return 3.0 * dos / total


def _mode_functions(xp, nu, temperatures):
    """Per-mode (Cv/R, S/R, thermal U/(N_A h·THz), F_T/(R T)) on (n_T, n_modes); modes at nu <= 0
    and temperatures of 0 K give 0. ``xp`` is numpy or torch, so both share one set of formulas."""
    positive_t = temperatures > 0
    t_safe = xp.where(positive_t, temperatures, xp.ones_like(temperatures))
    live = nu > 0
    nu_safe = xp.where(live, nu, xp.ones_like(nu))
    x = H_OVER_KB_K_PER_THZ * nu_safe[None, :] / t_safe[:, None]
    x = xp.clip(x, 1e-8, X_MAX) if xp is np else x.clamp(1e-8, X_MAX)
    e = xp.exp(-x)
    one_minus_e = -xp.expm1(-x)
    bose = e / one_minus_e  # 1 / (eˣ − 1)
    cv = x * x * e / (one_minus_e * one_minus_e)
    s = x * bose - xp.log(one_minus_e)
    u_thermal = nu_safe[None, :] * bose
    f_thermal = xp.log(one_minus_e)
    mask = live[None, :] & positive_t[:, None]
    zero = xp.zeros_like(x)
    return (xp.where(mask, cv, zero), xp.where(mask, s, zero), xp.where(mask, u_thermal, zero),
            xp.where(mask, f_thermal, zero))


def _thermo(xp, nu, weights, temperatures) -> dict:
    cv, s, u_t, f_t = _mode_functions(xp, nu, temperatures)
    zpe = NA_H_J_PER_MOL_PER_THZ * 0.5 * (weights * xp.where(nu > 0, nu, xp.zeros_like(nu))).sum(-1)
    zpe = zpe[..., None]
    return {
        "Cv_J_per_K_mol_atom": R_GAS * weights @ cv.T,
        "S_J_per_K_mol_atom": R_GAS * weights @ s.T,
        "U_kJ_per_mol_atom": (zpe + NA_H_J_PER_MOL_PER_THZ * weights @ u_t.T) / 1000.0,
        "F_kJ_per_mol_atom": (zpe + R_GAS * temperatures * (weights @ f_t.T)) / 1000.0,
    }


def harmonic_thermo(frequencies_THz, weights, temperatures_K, *, cutoff_THz: float = 0.0) -> dict:
    """S, Cv (J K⁻¹ mol⁻¹), U and F (kJ mol⁻¹) per mole of atoms at each temperature, from modes.

    ``frequencies_THz`` (n,) and ``weights`` (..., n) in modes per atom (sum 3 for a whole DOS;
    leading batch dimensions allowed). Modes at or below ``cutoff_THz`` count for nothing.
    Returns arrays of shape (..., n_T), plus ``temperatures_K``.
    """
    nu = np.asarray(frequencies_THz, dtype=float)
    w = np.asarray(weights, dtype=float)
    t = _check_temperatures(temperatures_K)
    if nu.ndim != 1 or w.shape[-1:] != nu.shape:
        raise DOSInputError(f"weights' last axis ({w.shape}) must match the frequencies ({nu.shape})")
    if not (np.all(np.isfinite(nu)) and np.all(np.isfinite(w))):
        raise DOSInputError("frequencies and weights must be finite")
    nu = np.where(nu > cutoff_THz, nu, 0.0)
    return {"temperatures_K": t, **_thermo(np, nu, w, t)}


def thermo_from_dos(dos, temperatures_K, grid: FrequencyGrid | None = None) -> dict:
    """``harmonic_thermo`` of a grid DOS (states per THz per atom on ``grid``'s bin centres)."""
    grid = grid or FrequencyGrid()
    dos = np.asarray(dos, dtype=float)
    if dos.shape[-1] != grid.n_bins:
        raise DOSInputError(f"DOS has {dos.shape[-1]} bins; the grid has {grid.n_bins}")
    return harmonic_thermo(grid.centres_THz, dos * grid.bin_THz, temperatures_K)


def thermo_from_dos_torch(dos, temperatures_K, grid: FrequencyGrid | None = None) -> dict:
    """Differentiable ``thermo_from_dos`` for torch tensors (batch dims first; dtype and device of
    ``dos``), for losses on S, Cv, U, F of a predicted DOS. Gradients are finite everywhere: modes
    are bin centres (ν > 0) and x is clamped to [1e-8, 700]."""
    import torch

    grid = grid or FrequencyGrid()
    if dos.shape[-1] != grid.n_bins:
        raise DOSInputError(f"DOS has {dos.shape[-1]} bins; the grid has {grid.n_bins}")
    nu = torch.as_tensor(grid.centres_THz, dtype=dos.dtype, device=dos.device)
    t = torch.as_tensor(_check_temperatures(temperatures_K), dtype=dos.dtype, device=dos.device)
    return {"temperatures_K": t, **_thermo(torch, nu, dos * grid.bin_THz, t)}


def last_peak_THz(dos, grid: FrequencyGrid | None = None, *, smear_THz: float = 0.2,
                  min_rel_height: float = 0.05) -> float:
    """Frequency (THz) of the highest-frequency peak of a grid DOS: the Matbench ``phonons`` target
    (Petretto et al., Sci. Data 5, 180065 (2018); Dunn et al., npj Comput. Mater. 6, 138 (2020))
    in THz; multiply by ``THZ_TO_CM1`` for cm⁻¹.

    The DOS is smeared with a Gaussian of ``smear_THz`` (a binned mesh DOS is spiky), and a local
    maximum counts as a peak when it rises above ``min_rel_height`` of the highest one, so noise
    in the tail does not pass for the last peak.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    grid = grid or FrequencyGrid()
    g = np.asarray(dos, dtype=float)
    if g.shape != (grid.n_bins,) or not np.all(np.isfinite(g)) or g.max() <= 0:
        raise DOSInputError(f"need one finite, non-zero DOS of {grid.n_bins} bins")
    smooth = gaussian_filter1d(g, smear_THz / grid.bin_THz, mode="constant")
    padded = np.concatenate([[0.0], smooth, [0.0]])
    peaks, _ = find_peaks(padded, height=min_rel_height * smooth.max())
    return float(grid.centres_THz[peaks[-1] - 1])
