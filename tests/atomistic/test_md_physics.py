"""Physics of the MD ensembles: each thermostat holds the target temperature, and each barostat moves
the volume in the right direction and by the amount the equation of state says.

The runs use a Morse pair potential for Cu written below (108 atoms, all pairs in one numpy pass,
about 1.5 ms per evaluation, no neighbour list to rebuild when the barostat changes the cell), so a
run of 700-1500 steps takes a few seconds. What is tested is matflow's wiring of the ASE integrators
(units of the time constants, friction, temperature and pressure), which does not depend on the
potential; a potential with an analytic equation of state lets the barostat be checked against
numbers rather than only signs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from scipy.optimize import brentq

from matflow.atomistic.md import MDSettings, run_md

A_CU = 3.61  # Å: fcc Cu, the 0 K minimum of the potential below
TIMESTEP_FS = 4.0  # the highest phonon frequency of the potential is about 7 THz: 35 steps per period


class MorseCu(Calculator):
    """E = ½ Σ_i Σ_j≠i φ_sf(r_ij) with the Morse φ(r) = D (e^{-2α(r - r0)} - 2 e^{-α(r - r0)}) of
    Girifalco and Weizer for Cu (D = 0.3429 eV, α = 1.3588 Å⁻¹), shifted so that energy and force
    vanish at r_cut = 5 Å (three fcc shells). r0 is refitted so that the 0 K pressure vanishes at
    a = 3.61 Å with this cutoff; bulk modulus about 80 GPa. Pairs are minimum images, so the cell
    must be cubic and wider than 2 r_cut (the 3x3x3 supercell is 10.8 Å)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, D: float = 0.3429, alpha: float = 1.3588, r0: float = 2.680854193957424,
                 r_cut: float = 5.0):
        super().__init__()
        self.D, self.alpha, self.r0, self.r_cut = D, alpha, r0, r_cut
        self.phi_cut, self.dphi_cut = self._phi(np.array(r_cut))

    def _phi(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = np.exp(-self.alpha * (r - self.r0))
        return self.D * (e * e - 2 * e), 2 * self.D * self.alpha * (e - e * e)

    def check_state(self, atoms, tol=1e-15):
        """Only positions and cell change in MD; ASE's generic comparison of every array costs more
        than this potential does."""
        if self.atoms is None or len(atoms) != len(self.atoms):
            return ["positions", "cell"]
        same = (np.array_equal(atoms.positions, self.atoms.positions)
                and np.array_equal(atoms.cell.array, self.atoms.cell.array))
        return [] if same else ["positions", "cell"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = len(self.atoms)
        cell = self.atoms.cell.array
        frac = np.linalg.solve(cell.T, self.atoms.positions.T).T
        i, j = np.triu_indices(n, 1)
        ds = frac[j] - frac[i]
        ds -= np.round(ds)
        vec = ds @ cell  # r_j - r_i, minimum image
        r = np.sqrt((vec * vec).sum(axis=1))
        near = r < self.r_cut
        vec, r, i, j = vec[near], r[near], i[near], j[near]
        phi, dphi = self._phi(r)
        energy = (phi - self.phi_cut - (r - self.r_cut) * self.dphi_cut).sum()
        pull = ((dphi - self.dphi_cut) / r)[:, None] * vec  # force on i (and minus it on j)
        forces = np.stack([np.bincount(i, pull[:, k], minlength=n) - np.bincount(j, pull[:, k], minlength=n)
                           for k in range(3)], axis=1)
        stress = (pull.T @ vec) / self.atoms.get_volume()
        self.results = {"energy": float(energy), "forces": forces, "stress": stress.flat[[0, 4, 8, 5, 2, 1]]}


def _cu108(scale: float = 1.0):
    atoms = bulk("Cu", "fcc", a=A_CU * scale, cubic=True).repeat(3)
    atoms.calc = MorseCu()
    return atoms


def _static_pressure_GPa(scale: float) -> float:
    """Pressure of the perfect lattice at a = 3.61 Å x scale, 0 K."""
    return float(-_cu108(scale).get_stress()[:3].mean() / units.GPa)


def test_the_test_potential_is_consistent():
    """Forces and stress are the derivatives of the energy (central differences), the 0 K pressure
    vanishes at a = 3.61 Å and falls monotonically with volume: the barostat test relies on all three."""
    atoms = _cu108()
    atoms.rattle(0.05, seed=1)
    forces, stress = atoms.get_forces(), atoms.get_stress()
    h = 1e-5

    def energy(positions=None, strain=None):
        other = atoms.copy()
        other.calc = MorseCu()
        if positions is not None:
            other.positions = positions
        if strain is not None:
            other.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        return other.get_potential_energy()

    for i, k in ((3, 1), (70, 2)):
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[i, k] += h
        minus[i, k] -= h
        assert forces[i, k] == pytest.approx(-(energy(plus) - energy(minus)) / (2 * h), abs=1e-6)
    for voigt, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h if a == b else h / 2
        numeric = (energy(strain=eps) - energy(strain=-eps)) / (2 * h) / atoms.get_volume()
        assert stress[voigt] == pytest.approx(numeric, abs=1e-7)
    assert _static_pressure_GPa(1.0) == pytest.approx(0.0, abs=1e-6)
    pressures = [_static_pressure_GPa(s) for s in np.linspace(0.94, 1.06, 13)]
    assert np.all(np.diff(pressures) < 0)


def _frames(trajectory: str, after_fs: float) -> list:
    return [f for f in read(trajectory, ":") if f.info["time_fs"] >= after_fs]


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin", "berendsen"])
def test_thermostat_holds_the_target_temperature(tmp_path, thermostat):
    """Mean kinetic temperature after equilibration within 4 standard errors of the target.

    Per frame the kinetic temperature of N atoms scatters by σ_T = T sqrt(2 / N_f), N_f = 3N - 3
    (31.6 K for 108 atoms at 400 K). Its correlation time is at most the thermostat's time constant
    (100 fs: Nosé-Hoover and Berendsen taut; Langevin 1/γ at 10 ps⁻¹; the phonon part decorrelates
    faster), so 5 ps after a 1 ps equilibration hold at least 5000 / (2 x 100) = 25 independent
    samples: standard error 6.3 K, tolerance 25 K. A thermostat that did nothing would sit near
    T/2 = 200 K (the starting kinetic energy shares itself with the potential energy); the 1 %
    difference between 3N and 3N - 3 degrees of freedom is well inside the tolerance. Langevin runs
    at 10 ps⁻¹ here: at the default 2 ps⁻¹ the energy relaxes over 0.5 ps, too slowly for a test
    this short. Berendsen's mean is right but its fluctuations are too small (not canonical).
    """
    target, n_steps, equilibration_fs, tau_fs = 400.0, 1500, 1000.0, 100.0
    settings = MDSettings(ensemble="nvt", thermostat=thermostat, temperature_K=target, n_steps=n_steps,
                          timestep_fs=TIMESTEP_FS, taut_fs=tau_fs, friction_per_ps=1000.0 / tau_fs,
                          traj_every=10, checkpoint_every=n_steps, seed=1)
    atoms = _cu108()
    res = run_md(atoms, tmp_path, settings, calculator=atoms.calc)
    temperatures = np.array([f.info["temperature_K"] for f in _frames(res.trajectory, equilibration_fs)])
    assert len(temperatures) == 126
    n_dof = 3 * len(atoms) - 3
    production_fs = n_steps * TIMESTEP_FS - equilibration_fs
    standard_error = target * math.sqrt(2 / n_dof) / math.sqrt(production_fs / (2 * tau_fs))
    assert abs(temperatures.mean() - target) < 4 * standard_error, (temperatures.mean(), standard_error)


@pytest.mark.parametrize("barostat", ["mtk", "berendsen"])
def test_barostat_volume_follows_the_equation_of_state(tmp_path, barostat):
    """At +10 GPa the cell shrinks and at -5 GPa it grows, by what the potential's equation of state
    predicts: V(P) solves P_static(V) + P_th = P, where P_static is the 0 K pressure of the perfect
    lattice and the thermal pressure P_th = -P_static(V(0)) comes from the 0 GPa run (taken as
    volume-independent). Tolerance: the volume of 108 atoms fluctuates by sqrt(kT / (B V)) = 0.63 %
    per frame (B = 80 GPa, V = 1296 Å³); 1.6 ps after a 1.2 ps equilibration hold at least
    1600 / (2 x 200 fs) = 4 barostat periods, so each mean is good to 0.32 %, and a prediction that
    uses two such means to sqrt(2) x 0.32 %; 4 of those make 1.8 %. The volume changes tested are
    9 % and 10 %. The mean pressure written in the frames matches the target to 1 GPa (the
    instantaneous pressure of 108 atoms scatters by about 1 GPa, the means over the frames by less).
    """
    n_steps, equilibration_fs, taup_fs, temperature = 700, 1200.0, 200.0, 300.0
    volume, pressure = {}, {}
    for p_ext in (0.0, -5.0, 10.0):
        settings = MDSettings(ensemble="npt", barostat=barostat, temperature_K=temperature,
                              pressure_GPa=p_ext, n_steps=n_steps, timestep_fs=TIMESTEP_FS, taup_fs=taup_fs,
                              compressibility_per_GPa=0.02, traj_every=5, checkpoint_every=n_steps, seed=2)
        atoms = _cu108()
        res = run_md(atoms, tmp_path / f"p{p_ext:g}", settings, calculator=atoms.calc)
        frames = _frames(res.trajectory, equilibration_fs)
        assert len(frames) == 81
        volume[p_ext] = float(np.mean([f.get_volume() for f in frames]))
        pressure[p_ext] = float(np.mean([f.info["pressure_GPa"] for f in frames]))

    assert volume[10.0] < 0.93 * volume[0.0] and volume[-5.0] > 1.05 * volume[0.0]
    for p_ext, p_mean in pressure.items():
        assert p_mean == pytest.approx(p_ext, abs=1.0), (p_ext, p_mean)

    v_ref = _cu108().get_volume()

    def scale_at(p_static: float) -> float:
        return brentq(lambda s: _static_pressure_GPa(s) - p_static, 0.85, 1.15, xtol=1e-10)

    p_thermal = -_static_pressure_GPa((volume[0.0] / v_ref) ** (1 / 3))
    assert 0.5 < p_thermal < 3.0  # 300 K expands the lattice; thermal pressure of order γ 3kT / V
    volume_per_frame = math.sqrt(units.kB * temperature / (80 * units.GPa * volume[0.0]))
    n_independent = (n_steps * TIMESTEP_FS - equilibration_fs) / (2 * taup_fs)
    tolerance = 4 * math.sqrt(2) * volume_per_frame / math.sqrt(n_independent)
    for p_ext in (-5.0, 10.0):
        predicted = v_ref * scale_at(p_ext - p_thermal) ** 3
        assert volume[p_ext] / predicted == pytest.approx(1.0, abs=tolerance), (p_ext, volume[p_ext], predicted)


def test_nose_hoover_small_cell_is_not_hot(tmp_path):
    """The chain thermostat must give each of the 3N - 3 free degrees of freedom kT/2.

    ASE's chain aims at 3N kT/2 while total momentum is conserved, which runs a 4-atom cell at
    12/9 of the target. Per frame the kinetic temperature of 9 degrees of freedom scatters by
    T sqrt(2/9) = 0.47 T; 22 ps after a 2 ps equilibration hold about 22000 / (2 x 100 fs) = 110
    independent samples, so the mean is good to 4.5 %: tolerance 15 %, against the 33 % error.
    EMT keeps 6000 steps at a few seconds.
    """
    from ase.calculators.emt import EMT

    target = 600.0
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True)
    atoms.calc = EMT()
    settings = MDSettings(ensemble="nvt", thermostat="nose-hoover", temperature_K=target,
                          n_steps=6000, timestep_fs=4.0, taut_fs=100.0, traj_every=10,
                          checkpoint_every=6000, seed=1)
    res = run_md(atoms, tmp_path, settings, calculator=atoms.calc)
    frames = _frames(res.trajectory, 2000.0)
    kinetic = np.array([f.info["kinetic_energy_eV"] for f in frames])
    free_dof = 3 * len(atoms) - 3
    kinetic_temperature = 2 * kinetic.mean() / (free_dof * units.kB)
    assert abs(kinetic_temperature / target - 1) < 0.15, kinetic_temperature
    reported = np.mean([f.info["temperature_K"] for f in frames])
    assert reported == pytest.approx(kinetic_temperature, rel=1e-6)


def test_mtk_small_cell_is_not_hot(tmp_path):
    """MTK NPT conserves total momentum too, so its particle chain must aim at 3N - 3 free degrees
    of freedom; ASE's aims at 3N, which ran a 4-atom cell at 797 K for a 600 K target. Same
    statistics as the Nose-Hoover test: the mean of about 110 independent samples is good to 4.5 %,
    tolerance 15 %, against the 33 % error.
    """
    from ase.calculators.emt import EMT

    target = 600.0
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True)
    atoms.calc = EMT()
    settings = MDSettings(ensemble="npt", barostat="mtk", temperature_K=target, pressure_GPa=0.0,
                          n_steps=6000, timestep_fs=4.0, taut_fs=100.0, taup_fs=1000.0, traj_every=10,
                          checkpoint_every=6000, seed=1)
    res = run_md(atoms, tmp_path, settings, calculator=atoms.calc)
    frames = _frames(res.trajectory, 2000.0)
    kinetic = np.array([f.info["kinetic_energy_eV"] for f in frames])
    kinetic_temperature = 2 * kinetic.mean() / ((3 * len(atoms) - 3) * units.kB)
    assert abs(kinetic_temperature / target - 1) < 0.15, kinetic_temperature
    reported = np.mean([f.info["temperature_K"] for f in frames])
    assert reported == pytest.approx(kinetic_temperature, rel=1e-6)
