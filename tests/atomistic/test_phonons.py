"""Phonons: phonopy on an analytic harmonic crystal (exact frequencies) and on CHGNet silicon."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list

K_SPRING = 2.0  # eV/Å²
A_SC = 2.5  # Å


class NearestNeighbourSprings(Calculator):
    """E = Σ_bonds k/2 (r - a)² over nearest neighbours of a simple cubic crystal (exact harmonic)."""

    implemented_properties = ("energy", "forces")

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, d, vec = neighbor_list("ijdD", self.atoms, 1.2 * A_SC)
        stretch = d - A_SC
        self.results["energy"] = 0.25 * K_SPRING * float((stretch ** 2).sum())  # each bond twice
        fij = (K_SPRING * stretch / d)[:, None] * vec  # force on i from bond i->j
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, fij)
        self.results["forces"] = forces


def _thz(omega_ase: float) -> float:
    return omega_ase * units.second / (2 * np.pi) / 1e12


def test_phonopy_reproduces_analytic_simple_cubic_spring_crystal():
    from matflow.atomistic.phonons import PhononCalc

    atoms = Atoms("Al", positions=[[0, 0, 0]], cell=[A_SC] * 3, pbc=True)
    calc = PhononCalc(NearestNeighbourSprings(), relax=False, supercell_min_length_A=7.0)
    ph = calc.phonopy(atoms)
    mass = atoms.get_masses()[0]
    # ω_α(q)² = (2k/m)(1 - cos q_α a) for each Cartesian polarisation α
    for q, expected in (([0.5, 0, 0], [0, 0, 2]), ([0.5, 0.5, 0.5], [2, 2, 2]),
                        ([0.25, 0, 0], [0, 0, np.sqrt(2)])):
        nu = np.sort(ph.get_frequencies(q))
        ref = np.sort([_thz(e * np.sqrt(K_SPRING / mass)) for e in expected])
        stiff = ref > 0
        np.testing.assert_allclose(nu[stiff], ref[stiff], atol=1e-3)
        # modes with no restoring force: only the finite displacement's second-order stretch remains
        assert np.abs(nu[~stiff]).max(initial=0.0) < 0.05
    assert _thz(2 * np.sqrt(K_SPRING / mass)) > 1.0  # a non-trivial frequency was checked


class SpringsUnderStaggeredLoad(NearestNeighbourSprings):
    """The spring crystal plus a force that does not depend on the displacements: +F on atoms of even
    x-plane, -F on odd ones (zero net force, so the acoustic sum rule cannot absorb it). The geometry
    is not a minimum, but the force constants are exactly the springs'."""

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        parity = np.rint(self.atoms.positions[:, 0] / A_SC).astype(int) % 2
        load = np.where(parity[:, None] == 0, 1.0, -1.0) * np.array([0.3, -0.2, 0.1])
        self.results["forces"] = self.results["forces"] + load


def test_residual_forces_do_not_read_as_stiffness():
    from matflow.atomistic.phonons import PhononCalc

    atoms = Atoms("Al2", positions=[[0, 0, 0], [A_SC, 0, 0]], cell=[2 * A_SC, A_SC, A_SC], pbc=True)
    calc = PhononCalc(SpringsUnderStaggeredLoad(), relax=False, supercell_min_length_A=7.0)
    ph = calc.phonopy(atoms)
    mass = atoms.get_masses()[0]
    # q = (1, 1/2, 1/2) of the doubled cell holds the simple cubic R point (three modes at
    # 2 sqrt(k/m)) and, folded back, the M point (one mode with no restoring force, two at 2 sqrt(k/m))
    nu = np.sort(ph.get_frequencies([1.0, 0.5, 0.5]))
    assert abs(nu[0]) < 0.05
    np.testing.assert_allclose(nu[1:], [_thz(2 * np.sqrt(K_SPRING / mass))] * 5, atol=1e-3)


def test_chgnet_silicon_phonons_and_thermodynamics(fast_calc):
    from ase.build import bulk

    from matflow.atomistic.phonons import R_GAS, PhononCalc

    res = PhononCalc(fast_calc, supercell_min_length_A=7.0, fmax_eV_per_A=0.02,
                     t_step_K=50.0).run(bulk("Si", "diamond", a=5.43))
    gamma = np.sort(res.gamma_frequencies_THz)
    assert np.abs(gamma[:3]).max() < 0.05  # acoustic sum rule: zero at Γ
    assert 13.0 < gamma[-1] < 17.0  # Si Raman mode: 15.5 THz measured, 15.3 THz in PBE
    assert np.allclose(gamma[3:], gamma[-1], atol=0.05)  # triply degenerate optical mode
    assert not res.has_imaginary_modes
    t = np.asarray(res.temperatures_K)
    cv, s, f = (np.asarray(x) for x in (res.Cv_J_per_K_mol_atom, res.S_J_per_K_mol_atom,
                                        res.F_kJ_per_mol_atom))
    assert cv[t == 1000][0] == pytest.approx(3 * R_GAS, rel=0.03)  # Dulong–Petit
    assert np.all(np.diff(s[1:]) > 0) and np.all(np.diff(f[2:]) < 0)
    assert 0.5 * 3 * R_GAS < res.at(300)["Cv_J_per_K_mol_atom"] < 3 * R_GAS


def test_label_vib_thermo_long_table_and_failures():
    from matflow.atomistic.phonons import PhononCalc, label_vib_thermo

    good = Atoms("Al", positions=[[0, 0, 0]], cell=[A_SC] * 3, pbc=True)
    bad = Atoms("Al", positions=[[0, 0, 0]], cell=[A_SC] * 3, pbc=False)  # phonopy needs a lattice
    calc = PhononCalc(NearestNeighbourSprings(), relax=False, supercell_min_length_A=7.0)
    table, failures = label_vib_thermo([good, bad], ["good", "bad"], temperatures_K=[100, 300],
                                       calc=calc)
    assert list(table["temperature_K"]) == [100.0, 300.0]
    assert set(table["source"]) == {"good"}
    assert [f.source for f in failures] == ["bad"]
    assert failures[0].reason
    # the spring crystal's exact dispersion, ω_α(q) = 2 sqrt(k/m) |sin(π q_α)| per polarisation α,
    # makes Cv(T) per atom 3R <c(ħω/kT)> over q (c = x² eˣ / (eˣ - 1)², smooth, so 4096 q are exact)
    mass = good.get_masses()[0]
    q = (np.arange(4096) + 0.5) / 4096
    hbar_omega_eV = units._hbar / units._e * units.second * 2 * np.sqrt(K_SPRING / mass) * np.sin(np.pi * q)
    r_gas = units._k * units._Nav

    def per_mode(temperature: float) -> tuple[np.ndarray, np.ndarray]:
        x = hbar_omega_eV / (units.kB * temperature)
        return x**2 * np.exp(x) / np.expm1(x) ** 2, x / np.expm1(x) - np.log(-np.expm1(-x))

    (cv_100, s_100), (cv_300, s_300) = per_mode(100.0), per_mode(300.0)
    cv = table["Cv_J_per_K_mol_atom"].to_numpy()
    s = table["S_J_per_K_mol_atom"].to_numpy()
    # phonopy's 16^3 mesh and its dropping of the three Γ acoustic modes: 0.1 % here
    np.testing.assert_allclose(cv, [3 * r_gas * cv_100.mean(), 3 * r_gas * cv_300.mean()], rtol=2e-3)
    # S itself depends on the modes with no restoring force, which phonopy sees at the small nonzero
    # frequencies of the finite-displacement noise; classical at both temperatures, each such mode
    # adds k_B ln 3 to S(300 K) - S(100 K) whatever its frequency, as the analytic modes near zero
    # frequency do, so the difference is exact
    assert s[1] - s[0] == pytest.approx(3 * r_gas * (s_300.mean() - s_100.mean()), rel=2e-3)
