"""CHGNet relaxation of positions and cell; batch relaxation survives bad items."""

from __future__ import annotations

import pytest
from ase import Atoms
from ase.build import bulk


def test_relax_positions_and_cell_of_expanded_silicon(fast_calc, tmp_path):
    from matflow.atomistic.relax import RelaxCalc

    atoms = bulk("Si", "diamond", a=5.70)
    atoms.rattle(0.05, seed=1)
    res = RelaxCalc(fast_calc, fmax_eV_per_A=0.02, optimizer="BFGS").relax(
        atoms, trajectory=tmp_path / "si.traj")
    assert res.converged
    assert res.final_energy_eV < res.initial_energy_eV
    assert res.final_volume_A3 < res.initial_volume_A3 * 0.95  # a = 5.70 Å was 5 % too large
    assert abs(res.pressure_GPa) < 1.0
    assert res.max_force_eV_per_A < 0.05
    from importlib.metadata import version

    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    from matflow.structures import structure_hash

    steps = read(tmp_path / "si.traj", ":")
    assert len(steps) == res.n_steps + 1  # the start and one frame per optimiser step
    assert steps[0].get_potential_energy() == pytest.approx(res.initial_energy_eV, abs=1e-6)
    assert steps[-1].get_potential_energy() == pytest.approx(res.final_energy_eV, abs=1e-6)
    assert res.versions["chgnet"] == version("chgnet") and res.versions["ase"] == version("ase")
    assert res.input_hash == structure_hash(AseAtomsAdaptor.get_structure(atoms))


def test_fixed_cell_relaxation_keeps_volume(fast_calc):
    from matflow.atomistic.relax import RelaxCalc

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.08, seed=4)
    out = RelaxCalc(fast_calc, relax_cell=False, fmax_eV_per_A=0.02).calc(atoms)
    assert out["converged"]
    assert out["volume_A3"] == pytest.approx(atoms.get_volume(), rel=1e-9)
    assert out["max_force_eV_per_A"] < 0.03


def test_calc_many_reports_bad_items_and_keeps_going(fast_calc):
    from matflow.atomistic.relax import RelaxCalc

    good = bulk("Cu", "fcc", a=3.6)
    bad = Atoms("Fm", positions=[[0, 0, 0]], cell=[3.0] * 3, pbc=True)
    results, failures = RelaxCalc(fast_calc, max_steps=50).calc_many(
        [bad, good], sources=["bad.cif", "good.cif"])
    assert [r.source for r in results] == ["good.cif"]
    assert failures[0].source == "bad.cif" and "Fm" in failures[0].reason
    assert "not covered by CHGNet" in failures[0].reason
    # CHGNet is fitted to Materials Project energies: fcc Cu is about -4.1 eV/atom there
    assert results[0].final_energy_eV_per_atom == pytest.approx(-4.1, abs=0.1)


def test_unknown_optimizer_is_refused(fast_calc):
    from matflow.atomistic.relax import RelaxCalc

    with pytest.raises(ValueError, match="unknown optimizer"):
        RelaxCalc(fast_calc, optimizer="SD")
