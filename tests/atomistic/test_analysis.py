"""Trajectory analysis on cases with known answers: crystalline and ideal-gas RDFs, a random walk
with known diffusion coefficient, an equilibration cut, and the PNG report."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from matflow.atomistic import analysis


def test_crystalline_partial_rdf_peaks_at_known_distances():
    a = 4.1
    cscl = Atoms("CsCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[a] * 3, pbc=True)
    frames = [cscl.repeat(3)]
    rdf = analysis.partial_rdf(frames, r_max_A=5.0, dr_A=0.02)
    peaks = {p: analysis.first_peak(rdf["r_A"], g) for p, g in rdf["pairs"].items()}
    assert peaks["Cl-Cs"] == pytest.approx(a * np.sqrt(3) / 2, abs=0.02)
    assert peaks["Cs-Cs"] == pytest.approx(a, abs=0.02)
    cu = analysis.partial_rdf([bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)], r_max_A=4.0)
    assert analysis.first_peak(cu["r_A"], cu["pairs"]["Cu-Cu"]) == pytest.approx(3.61 / np.sqrt(2),
                                                                                  abs=0.05)


def test_ideal_gas_rdf_is_flat_at_one():
    rng = np.random.default_rng(0)
    frames = [Atoms("Ar300", positions=rng.uniform(0, 15, (300, 3)), cell=[15] * 3, pbc=True)
              for _ in range(5)]
    g = analysis.partial_rdf(frames, r_max_A=6.0, dr_A=0.2)["pairs"]["Ar-Ar"]
    assert np.mean(g[10:]) == pytest.approx(1.0, abs=0.03)  # r = 2–6 Å


def test_msd_of_random_walk_recovers_diffusion_coefficient():
    rng = np.random.default_rng(1)
    dt_fs, sigma = 10.0, 0.05  # per-step Gaussian displacement per Cartesian component (Å)
    cell = np.eye(3) * 8.0
    pos = rng.uniform(0, 8, (200, 3))
    frames = []
    for step in range(400):
        a = Atoms("Li200", positions=pos % 8.0, cell=cell, pbc=True)  # wrapped, as in a box
        a.info["time_fs"] = step * dt_fs
        frames.append(a)
        pos = pos + rng.normal(0, sigma, pos.shape)
    res = analysis.msd(frames)
    d_true = sigma ** 2 / (2 * dt_fs / 1000.0)  # Å²/ps
    assert res.D_A2_per_ps == pytest.approx(d_true, rel=0.1)
    assert res.D_cm2_per_s == pytest.approx(res.D_A2_per_ps * 1e-4)
    # the fit window: 20 % to 80 % of the 399 intervals of 10 fs, frames 79 and 319
    assert (res.fit_start_fs, res.fit_end_fs) == (790.0, 3190.0)


def test_equilibration_cut_finds_end_of_transient():
    rng = np.random.default_rng(2)
    t = np.arange(1000)
    x = 5.0 * np.exp(-t / 40.0) + rng.normal(0, 0.1, len(t))
    cut = analysis.equilibration_cut(x)
    assert 100 <= cut <= 400
    assert analysis.equilibration_cut(rng.normal(0, 1, 500)) <= 50


def test_analyze_trajectory_writes_plots(tmp_path):
    rng = np.random.default_rng(3)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    frames = []
    for step in range(30):
        a = base.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=-3.0 * len(a) + rng.normal(0, 0.01),
                                       forces=np.zeros((len(a), 3)))
        a.info.update(time_fs=2.0 * step, temperature_K=300 + rng.normal(0, 10), pressure_GPa=0.1,
                      kinetic_energy_eV=0.1)
        frames.append(a)
    report = analysis.analyze_trajectory(frames, tmp_path)
    assert report["rdf_first_peak_A"]["Cu-Cu"] == pytest.approx(2.55, abs=0.1)
    assert report["series"]["temperature_K"]["mean"] == pytest.approx(300, abs=15)
    for path in report["plots"]:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
