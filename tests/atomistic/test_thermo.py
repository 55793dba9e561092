"""Harmonic thermodynamics from a DOS: against phonopy, Einstein solid, harmonic identities, torch."""

from __future__ import annotations

import numpy as np
import pytest

from matflow.atomistic.thermo import (
    H_OVER_KB_K_PER_THZ,
    R_GAS,
    DOSInputError,
    FrequencyGrid,
    dos_grid,
    harmonic_thermo,
    last_peak_THz,
    thermo_from_dos,
    thermo_from_dos_torch,
)

TEMPS = np.arange(0.0, 1001.0, 100.0)


@pytest.fixture(scope="module")
def cu_phonopy():
    """fcc Cu (EMT forces, 3x3x3 supercell) with a 12³ mesh and phonopy's own thermal properties."""
    from ase import Atoms
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cu = bulk("Cu", "fcc", a=3.61)
    unit = PhonopyAtoms(symbols=cu.get_chemical_symbols(), cell=cu.cell.array,
                        scaled_positions=cu.get_scaled_positions())
    ph = Phonopy(unit, supercell_matrix=np.eye(3, dtype=int) * 3, primitive_matrix="P")
    ph.generate_displacements(distance=0.01)
    forces = []
    for cell in ph.supercells_with_displacements:
        atoms = Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                      pbc=True)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ph.run_mesh([12, 12, 12], is_gamma_center=True)
    ph.run_thermal_properties(temperatures=TEMPS)
    return ph


def test_modes_reproduce_phonopy_thermal_properties(cu_phonopy):
    freqs, qw = cu_phonopy.mesh.frequencies, cu_phonopy.mesh.weights
    weights = np.broadcast_to(qw[:, None] / qw.sum(), freqs.shape)  # 1 atom: 3 modes per atom
    ours = harmonic_thermo(freqs.ravel(), weights.ravel(), TEMPS, cutoff_THz=1e-3)
    ref = cu_phonopy.thermal_properties
    # per mole of cells = per mole of atoms here; constants differ in the 6th digit
    np.testing.assert_allclose(ours["S_J_per_K_mol_atom"], ref.entropy, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours["Cv_J_per_K_mol_atom"], ref.heat_capacity, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours["F_kJ_per_mol_atom"], ref.free_energy, rtol=1e-5, atol=1e-6)


def test_grid_dos_stays_close_to_phonopy(cu_phonopy):
    freqs, qw = cu_phonopy.mesh.frequencies, cu_phonopy.mesh.weights
    dos = dos_grid(freqs, qw, cutoff_THz=1e-3)
    grid = FrequencyGrid()
    assert dos.shape == (grid.n_bins,) and dos.sum() * grid.bin_THz == pytest.approx(3.0)
    ours = thermo_from_dos(dos, TEMPS[1:])
    # phonopy drops the three acoustic modes at Γ; the grid DOS gives their weight to the others
    dropped = (np.broadcast_to(qw[:, None], freqs.shape) * (freqs <= 1e-3)).sum() / (3 * qw.sum())
    assert 0 < dropped < 1e-3
    ref = cu_phonopy.thermal_properties
    ref_S, ref_Cv = ref.entropy[1:] / (1 - dropped), ref.heat_capacity[1:] / (1 - dropped)
    # binning to 0.1 THz moves S by < 0.02 J/K/mol and Cv by < 0.02 % from 100 K up
    np.testing.assert_allclose(ours["S_J_per_K_mol_atom"], ref_S, rtol=0, atol=0.02)
    np.testing.assert_allclose(ours["Cv_J_per_K_mol_atom"], ref_Cv, rtol=2e-4)
    # Cu's last DOS peak (longitudinal zone-boundary modes): about 7 THz in EMT and experiment
    assert 6.5 < last_peak_THz(dos) < 7.8


def test_einstein_solid_is_exact():
    grid = FrequencyGrid(max_THz=20.0, bin_THz=0.5)
    dos = np.zeros(grid.n_bins)
    dos[14] = 3.0 / grid.bin_THz  # all 3 modes per atom at 7.25 THz
    nu = grid.centres_THz[14]
    t = np.array([50.0, 300.0, 800.0])
    x = H_OVER_KB_K_PER_THZ * nu / t
    cv = 3 * R_GAS * x**2 * np.exp(x) / np.expm1(x) ** 2
    s = 3 * R_GAS * (x / np.expm1(x) - np.log1p(-np.exp(-x)))
    res = thermo_from_dos(dos, t, grid)
    np.testing.assert_allclose(res["Cv_J_per_K_mol_atom"], cv, rtol=1e-12)
    np.testing.assert_allclose(res["S_J_per_K_mol_atom"], s, rtol=1e-12)


def _two_band_dos(grid: FrequencyGrid) -> np.ndarray:
    nu = grid.centres_THz
    g = np.exp(-((nu - 4.0) / 1.5) ** 2) + 0.6 * np.exp(-((nu - 15.0) / 0.8) ** 2)
    g += 0.01 * np.exp(-((nu - 25.0) / 0.3) ** 2)  # a tail bump below 5 % of the maximum
    return 3.0 * g / (g.sum() * grid.bin_THz)


def test_harmonic_identities_and_high_t_limit():
    grid = FrequencyGrid()
    dos = _two_band_dos(grid)
    t = np.array([150.0, 300.0, 600.0])
    res = thermo_from_dos(dos, t)
    # F = U - TS (kJ vs J)
    np.testing.assert_allclose(res["F_kJ_per_mol_atom"],
                               res["U_kJ_per_mol_atom"] - t * res["S_J_per_K_mol_atom"] / 1000,
                               rtol=1e-8, atol=1e-8)
    # Cv = dU/dT and S = -dF/dT by central differences
    h = 1e-3
    up, down = thermo_from_dos(dos, t + h), thermo_from_dos(dos, t - h)
    dudt = (up["U_kJ_per_mol_atom"] - down["U_kJ_per_mol_atom"]) * 1000 / (2 * h)
    dfdt = (up["F_kJ_per_mol_atom"] - down["F_kJ_per_mol_atom"]) * 1000 / (2 * h)
    np.testing.assert_allclose(dudt, res["Cv_J_per_K_mol_atom"], rtol=1e-6)
    np.testing.assert_allclose(-dfdt, res["S_J_per_K_mol_atom"], rtol=1e-6)
    # Dulong–Petit: Cv -> 3R when kT >> h nu_max; zero at 0 K
    hot = thermo_from_dos(dos, [0.0, 1e5])
    assert hot["Cv_J_per_K_mol_atom"][0] == 0.0 and hot["S_J_per_K_mol_atom"][0] == 0.0
    assert hot["Cv_J_per_K_mol_atom"][1] == pytest.approx(3 * R_GAS, rel=1e-4)
    assert last_peak_THz(dos) == pytest.approx(15.0, abs=0.1)


def test_torch_matches_numpy_with_finite_gradients():
    import torch

    grid = FrequencyGrid()
    dos = np.stack([_two_band_dos(grid), dos_grid([[2.0, 3.0, 9.0]], [1.0])])
    t = [0.0, 5.0, 300.0, 800.0]
    ref = thermo_from_dos(dos, t)
    x = torch.tensor(dos, requires_grad=True)
    out = thermo_from_dos_torch(x, t)
    for key in ("S_J_per_K_mol_atom", "Cv_J_per_K_mol_atom", "F_kJ_per_mol_atom",
                "U_kJ_per_mol_atom"):
        assert out[key].shape == (2, 4)
        np.testing.assert_allclose(out[key].detach().numpy(), ref[key], rtol=1e-10, atol=1e-12)
    loss = sum(out[k].sum() for k in ("S_J_per_K_mol_atom", "Cv_J_per_K_mol_atom",
                                       "F_kJ_per_mol_atom"))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # dS/dg at 300 K is largest for the softest modes (they hold the most entropy)
    y = torch.tensor(dos[:1], requires_grad=True)
    thermo_from_dos_torch(y, [300.0])["S_J_per_K_mol_atom"].sum().backward()
    assert y.grad[0, 0] > y.grad[0, 100] > y.grad[0, 500] > 0


def test_dos_grid_drops_imaginary_modes_and_renormalises():
    dos = dos_grid([[-1.0, 2.0, 5.0]], [1.0])  # one imaginary mode of three
    grid = FrequencyGrid()
    assert dos.sum() * grid.bin_THz == pytest.approx(3.0)
    assert dos[int(2.0 / grid.bin_THz)] == pytest.approx(1.5 / grid.bin_THz)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: dos_grid([[1.0, 130.0]], [1.0]), "above the grid's top 120 THz"),
    (lambda: dos_grid([[-1.0, -2.0]], [1.0]), "no mode above the cutoff"),
    (lambda: dos_grid([[1.0, np.nan]], [1.0]), "finite"),
    (lambda: thermo_from_dos(np.ones(10), [300.0]), "DOS has 10 bins; the grid has 1200"),
    (lambda: harmonic_thermo([1.0], [3.0], [-5.0]), "temperatures_K"),
    (lambda: last_peak_THz(np.zeros(1200)), "non-zero DOS"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(DOSInputError, match=message):
        call()
