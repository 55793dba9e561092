"""Fast canonical Monte Carlo: local swap energies, exact running energy, ordering physics."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from matflow.sro.energy_model import random_supercell
from matflow.sro.lattice import shell_neighbours
from matflow.sro.montecarlo import (
    CanonicalMonteCarlo,
    MonteCarloInputError,
    anneal,
    block_average,
    integrated_autocorrelation_time,
    pair_hamiltonian_from_ce,
    pair_hamiltonian_from_neighbour_shells,
    types_from_symbols,
)
from matflow.sro.warren_cowley import warren_cowley_from_types

A = 3.56
TERNARY = {"Cr": 1 / 3, "Co": 1 / 3, "Ni": 1 / 3}


@pytest.fixture(scope="module")
def ternary_ce():
    """A pair cluster expansion (cutoff 4 Å: two fcc shells) with random parameters."""
    from icet import ClusterExpansion, ClusterSpace

    cs = ClusterSpace(bulk("Ni", "fcc", a=A), [4.0], [["Cr", "Co", "Ni"]])
    params = np.random.default_rng(0).normal(0.0, 0.02, len(cs))
    return ClusterExpansion(cs, params)


@pytest.fixture
def cell108():
    return random_supercell(TERNARY, "fcc", A, 3, np.random.default_rng(1))


def _symbols(ham, types):
    return [ham.species[t] for t in types]


def test_local_swap_energy_equals_full_difference(ternary_ce, cell108):
    ham = pair_hamiltonian_from_ce(ternary_ce, cell108)
    types = types_from_symbols(cell108.get_chemical_symbols(), ham.species)
    rng = np.random.default_rng(2)
    for _ in range(20):
        i, j = rng.choice(len(types), 2, replace=False)
        if types[i] == types[j]:
            continue
        swapped = types.copy()
        swapped[[i, j]] = swapped[[j, i]]
        local = ham.swap_energy(types, i, j)
        full = ham.pair_energy(swapped) - ham.pair_energy(types)
        assert local == pytest.approx(full, abs=1e-12)
        # and against the cluster expansion itself
        before, after = cell108.copy(), cell108.copy()
        before.set_chemical_symbols(_symbols(ham, types))
        after.set_chemical_symbols(_symbols(ham, swapped))
        n = len(types)
        ce_diff = n * (ternary_ce.predict(after) - ternary_ce.predict(before))
        assert local == pytest.approx(ce_diff, rel=1e-9, abs=1e-12)
        types = swapped


def test_running_energy_matches_predict_after_many_swaps(ternary_ce, cell108):
    ham = pair_hamiltonian_from_ce(ternary_ce, cell108)
    types0 = types_from_symbols(cell108.get_chemical_symbols(), ham.species)
    mc = CanonicalMonteCarlo(ham, types0, seed=3)
    for temperature in (3000.0, 800.0, 300.0):
        mc.run(temperature, 20_000)
    assert mc.n_accepted > 1000  # the configuration really moved
    final = cell108.copy()
    final.set_chemical_symbols(_symbols(ham, mc.types))
    reference = len(final) * ternary_ce.predict(final)
    assert mc.energy == pytest.approx(reference, rel=1e-8)
    # composition conserved
    assert np.array_equal(np.bincount(mc.types, minlength=3), np.bincount(types0, minlength=3))


@pytest.mark.parametrize(("lattice", "a", "cutoff"), [("bcc", 2.9, 4.2), ("hcp", 2.5, 4.5)])
def test_running_energy_exact_on_bcc_and_hcp(lattice, a, cutoff):
    """hcp has pair orbits whose two ends no symmetry swaps: directed tables must stay exact."""
    from icet import ClusterExpansion, ClusterSpace

    from matflow.sro.energy_model import primitive_cell

    prim = primitive_cell(lattice, a, "Co")
    cs = ClusterSpace(prim, [cutoff], [["Co", "Cr", "Ni"]] * len(prim))
    ce = ClusterExpansion(cs, np.random.default_rng(0).normal(0.0, 0.02, len(cs)))
    cell = random_supercell({"Co": 0.5, "Cr": 0.25, "Ni": 0.25}, lattice, a, 4,
                            np.random.default_rng(1))
    ham = pair_hamiltonian_from_ce(ce, cell)
    mc = CanonicalMonteCarlo(ham, types_from_symbols(cell.get_chemical_symbols(), ham.species))
    mc.run(800.0, 30_000)
    final = cell.copy()
    final.set_chemical_symbols(_symbols(ham, mc.types))
    assert mc.n_accepted > 1000
    assert mc.energy == pytest.approx(len(final) * ce.predict(final), rel=1e-8)


def test_higher_order_expansion_is_refused(cell108):
    from icet import ClusterExpansion, ClusterSpace

    cs = ClusterSpace(bulk("Ni", "fcc", a=A), [4.0, 3.0, 3.0], [["Cr", "Co", "Ni"]])
    ce = ClusterExpansion(cs, np.zeros(len(cs)))
    with pytest.raises(MonteCarloInputError, match="order 4"):
        pair_hamiltonian_from_ce(ce, cell108)


def _binary_nn_model(n_rep: int, w_ab: float):
    atoms = random_supercell({"Cu": 0.5, "Au": 0.5}, "fcc", 3.8, n_rep, np.random.default_rng(5))
    nb = shell_neighbours(atoms, n_shells=1, lattice="fcc", a=3.8)
    species = ["Au", "Cu"]
    table = np.array([[[0.0, w_ab], [w_ab, 0.0]]])
    ham = pair_hamiltonian_from_neighbour_shells(species, [(nb.i[0], nb.j[0])], table, len(atoms))
    return atoms, nb, ham, types_from_symbols(atoms.get_chemical_symbols(), species)


def test_unlike_pair_preference_orders_and_high_t_is_random():
    _, nb, ham, types = _binary_nn_model(4, w_ab=-0.05)  # 256 atoms, unlike bonds favoured

    def observe(t):
        return warren_cowley_from_types(t.astype(np.intp), nb, 2)

    mc = CanonicalMonteCarlo(ham, types, seed=7)
    hot, cold = anneal(mc, [1e6, 300.0], n_equil_sweeps=20, n_prod_sweeps=60, observe=observe)
    a_hot, err_hot = np.array(hot.alpha)[0, 0, 1], np.array(hot.alpha_err)[0, 0, 1]
    a_cold = np.array(cold.alpha)[0, 0, 1]
    assert abs(a_hot) < max(4 * err_hot, 0.03)
    assert a_cold < -0.2
    assert cold.energy_eV_per_atom < hot.energy_eV_per_atom
    assert hot.acceptance_rate > 0.9 > cold.acceptance_rate
    assert np.array_equal(np.bincount(mc.types), np.bincount(types))


def test_statistics_helpers():
    rng = np.random.default_rng(0)
    white = rng.normal(size=4000)
    assert integrated_autocorrelation_time(white) < 1.0
    ar = np.zeros(4000)
    for k in range(1, 4000):
        ar[k] = 0.9 * ar[k - 1] + rng.normal()
    # AR(1) with phi = 0.9: tau_int = (1 + phi) / (2 (1 - phi)) = 9.5
    assert 6 < integrated_autocorrelation_time(ar) < 14
    mean, err = block_average(white)
    assert abs(mean) < 4 * err and 0.005 < err < 0.03


def test_bad_inputs():
    _, _, ham, types = _binary_nn_model(2, w_ab=-0.05)
    with pytest.raises(MonteCarloInputError, match="length"):
        CanonicalMonteCarlo(ham, types[:-1])
    with pytest.raises(MonteCarloInputError, match="single species"):
        CanonicalMonteCarlo(ham, np.zeros_like(types))
    mc = CanonicalMonteCarlo(ham, types)
    with pytest.raises(MonteCarloInputError, match="temperature"):
        mc.run(-5.0, 10)
    with pytest.raises(MonteCarloInputError, match="symmetric"):
        pair_hamiltonian_from_neighbour_shells(["A", "B"], [(np.array([0]), np.array([1]))],
                                               np.array([[[0, 1.0], [0.0, 0]]]), 2)


def test_simulate_pipeline_with_a_given_model(tmp_path):
    import json

    from matflow.sro.energy_model import fit_energy_model
    from matflow.sro.simulate import simulate_sro

    def unlike_bonds_favoured(cells):
        out = []
        for atoms in cells:
            nb = shell_neighbours(atoms, n_shells=1, lattice="fcc", a=A)
            sym = np.array(atoms.get_chemical_symbols())
            out.append(-0.02 * np.sum(sym[nb.i[0]] != sym[nb.j[0]]) / 2)
        return np.array(out)

    fit = fit_energy_model({"Cu": 0.5, "Ni": 0.5}, "fcc", A, n_structures=8, size=(2, 2, 1),
                           cv=2, n_swaps=2, fit_method="ols",
                           potential_energies=unlike_bonds_favoured)
    sim = simulate_sro({"Cu": 0.5, "Ni": 0.5}, temperatures=(300, 3000), size=3,
                       model=fit.save(tmp_path / "m"), sweeps=30)
    data = json.loads(json.dumps(sim.to_dict()))
    assert data["a_source"] == "from the energy model" and data["n_atoms"] == 108
    assert [r["temperature_K"] for r in data["temperatures"]] == [3000.0, 300.0]  # annealed down
    t, alpha, err = sim.alpha(0, "Cu", "Ni")
    assert alpha[1] < alpha[0] - 0.1 and alpha[1] < -0.1 and np.all(err >= 0)
    with pytest.raises(ValueError, match="fitted on fcc"):
        simulate_sro({"Cu": 0.5, "Ni": 0.5}, lattice="bcc", model=fit, size=3, sweeps=30)
