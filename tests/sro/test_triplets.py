"""Triplet clusters in the fast Monte Carlo (exact energies on fcc, bcc, hcp) and the energy
model's choice between pairs only and pairs + triplets by cross-validation on training cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from matflow.sro.energy_model import (
    cutoff_candidates,
    fit_energy_model,
    primitive_cell,
    random_supercell,
)
from matflow.sro.montecarlo import (
    CanonicalMonteCarlo,
    MonteCarloInputError,
    hamiltonian_from_ce,
    types_from_symbols,
)

COMPOSITION = {"Co": 0.5, "Cr": 0.25, "Ni": 0.25}
# lattice, a (Å), (pair, triplet) cutoffs, cubic repeats of the Monte Carlo cell
LATTICES = [("fcc", 3.56, (4.0, 3.6), 3), ("bcc", 2.9, (4.2, 3.0), 4), ("hcp", 2.5, (4.5, 3.6), 4)]


def _expansion(lattice: str, a: float, cutoffs, seed: int = 0, scale: float = 0.02):
    from icet import ClusterExpansion, ClusterSpace

    prim = primitive_cell(lattice, a, "Co")
    cs = ClusterSpace(prim, list(cutoffs), [["Co", "Cr", "Ni"]] * len(prim))
    return ClusterExpansion(cs, np.random.default_rng(seed).normal(0.0, scale, len(cs)))


def _with_types(cell, ham, types):
    out = cell.copy()
    out.set_chemical_symbols([ham.species[t] for t in types])
    return out


@pytest.fixture(scope="module", params=LATTICES, ids=[row[0] for row in LATTICES])
def model(request):
    lattice, a, cutoffs, size = request.param
    ce = _expansion(lattice, a, cutoffs)
    assert max(o.order for o in ce._cluster_space.orbit_list.orbits) == 3
    cell = random_supercell(COMPOSITION, lattice, a, size, np.random.default_rng(1))
    return lattice, ce, cell, hamiltonian_from_ce(ce, cell)


def test_running_energy_equals_predict_after_thousands_of_swaps(model):
    lattice, ce, cell, ham = model
    assert ham.has_triplets and len(ham.triplet_table) > 0
    if lattice == "hcp":  # pair orbits whose two ends no symmetry swaps
        assert any(not np.allclose(t, t.T) for t in ham.tables)
    types0 = types_from_symbols(cell.get_chemical_symbols(), ham.species)
    mc = CanonicalMonteCarlo(ham, types0, seed=3)
    assert mc.energy == pytest.approx(len(cell) * ce.predict(cell), rel=1e-10)
    for temperature in (5000.0, 800.0):
        mc.run(temperature, 3000)
    assert mc.n_accepted > 1500  # the configuration really moved
    final = _with_types(cell, ham, mc.types)
    assert mc.energy == pytest.approx(len(final) * ce.predict(final), rel=1e-8)
    assert np.array_equal(np.bincount(mc.types, minlength=3), np.bincount(types0, minlength=3))


def test_single_swap_energy_equals_full_cell_difference(model):
    _, ce, cell, ham = model
    types = types_from_symbols(cell.get_chemical_symbols(), ham.species)
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 6:
        i, j = (int(x) for x in rng.choice(len(types), 2, replace=False))
        if types[i] == types[j]:
            continue
        swapped = types.copy()
        swapped[[i, j]] = swapped[[j, i]]
        local = ham.swap_energy(types, i, j)
        assert local == pytest.approx(ham.energy(swapped) - ham.energy(types), abs=1e-11)
        n = len(types)
        by_ce = n * (ce.predict(_with_types(cell, ham, swapped)) - ce.predict(_with_types(cell, ham,
                                                                                        types)))
        assert local == pytest.approx(by_ce, rel=1e-9, abs=1e-11)
        assert abs(local) > 1e-6  # a real energy change, not a trivially zero one
        types, checked = swapped, checked + 1


def test_triplets_change_the_swap_energy():
    """Dropping the triplet ECIs changes ΔE: the triplet tables are really used."""
    from icet import ClusterExpansion

    lattice, a, cutoffs, size = LATTICES[0]
    ce = _expansion(lattice, a, cutoffs)
    cs = ce._cluster_space
    params = np.array(ce.parameters)
    col = 1
    for orbit in cs.orbit_list.orbits:
        n_el = len(orbit.cluster_vector_elements)
        if orbit.order == 3:
            params[col:col + n_el] = 0.0
        col += n_el
    pairs_only = ClusterExpansion(cs, params)
    cell = random_supercell(COMPOSITION, lattice, a, size, np.random.default_rng(1))
    full, reduced = hamiltonian_from_ce(ce, cell), hamiltonian_from_ce(pairs_only, cell)
    assert not reduced.has_triplets
    types = types_from_symbols(cell.get_chemical_symbols(), full.species)
    j = int(np.flatnonzero(types != types[0])[0])
    assert abs(full.swap_energy(types, 0, j) - reduced.swap_energy(types, 0, j)) > 1e-4


def test_quadruplets_are_refused_naming_the_order():
    ce = _expansion("fcc", 3.56, (4.0, 3.0, 3.0))
    cell = random_supercell(COMPOSITION, "fcc", 3.56, 3, np.random.default_rng(1))
    with pytest.raises(MonteCarloInputError, match=r"order 4.*pairs and triplets"):
        hamiltonian_from_ce(ce, cell)


def test_too_small_cell_is_refused():
    ce = _expansion("fcc", 3.56, (4.0, 3.6))
    cell = random_supercell({"Co": 0.5, "Ni": 0.5}, "fcc", 3.56, (2, 2, 1),
                            np.random.default_rng(0))
    with pytest.raises(MonteCarloInputError, match="larger cell"):
        hamiltonian_from_ce(ce, cell)


# ---------------------------------------------------------------------------------- energy model
def _labels_from(ce):
    def energies(cells):
        return np.array([len(at) * ce.predict(at) for at in cells])
    return energies


@pytest.mark.parametrize(("truth_cutoffs", "expect_triplets"), [((4.0,), False), ((4.0, 3.0), True)])
def test_auto_cutoffs_choose_by_training_cv(truth_cutoffs, expect_triplets):
    """A synthetic potential that is itself a cluster expansion: auto keeps pairs when the truth
    has none, takes nearest-neighbour triplets when it has them."""
    truth = _expansion("fcc", 3.56, truth_cutoffs, seed=5, scale=0.01)
    fit = fit_energy_model(COMPOSITION, "fcc", 3.56, n_structures=30, size=(3, 3, 2),
                           cutoffs="auto", fit_method="ridge", n_swaps=4, seed=0,
                           potential_energies=_labels_from(truth))
    sel = fit.model.cutoff_selection_
    assert [tuple(c["cutoffs_A"]) for c in sel["candidates"]] == cutoff_candidates("fcc", 3.56)
    assert len(fit.model.cutoffs_) == (2 if expect_triplets else 1)
    assert tuple(sel["chosen_cutoffs_A"]) == fit.model.cutoffs_
    assert fit.metrics["cv_nested"] is True and len(sel["outer_fold_choices"]) == 5
    assert all("swap_rmse_meV_not_used_for_choice" in c for c in sel["candidates"])
    if expect_triplets:  # pairs only cannot describe the triplet truth
        pair_row = sel["candidates"][0]
        assert pair_row["cv_rmse_meV_per_atom"] > 10 * fit.metrics["cv_rmse_meV_per_atom"]
    assert fit.metrics["swap_rmse_meV"] < 0.05 * fit.metrics["swap_std_reference_meV"]
    manifest = json.loads(json.dumps(fit.to_dict()))
    assert manifest["cutoffs_A"] == list(fit.model.cutoffs_)


def test_explicit_triplet_model_runs_through_simulate(tmp_path):
    from matflow.sro.energy_model import load_energy_model
    from matflow.sro.simulate import simulate_sro

    truth = _expansion("fcc", 3.56, (4.0, 3.0), seed=5, scale=0.01)
    fit = fit_energy_model(COMPOSITION, "fcc", 3.56, n_structures=20, size=(3, 3, 2),
                           cutoffs=(4.0, 3.0), fit_method="ridge", cv=3, n_swaps=2,
                           potential_energies=_labels_from(truth))
    assert fit.model.cutoffs_ == (4.0, 3.0) and fit.model.cutoff_selection_ is None
    path = fit.save(tmp_path / "m")
    assert load_energy_model(path).model.cutoffs_ == (4.0, 3.0)
    sim = simulate_sro(COMPOSITION, temperatures=(2000, 600), size=3, model=path, sweeps=20)
    settings = sim.to_dict()["settings"]
    assert settings["cutoffs_A"] == [4.0, 3.0]
    assert settings["triplet_orbit_radii_A"]  # the Monte Carlo ran with triplets
    assert sim.temperatures[-1]["energy_eV_per_atom"] < sim.temperatures[0]["energy_eV_per_atom"]


@pytest.mark.parametrize(("text", "expected"), [(None, [4.0]), ("5.0,4.0", [5.0, 4.0]),
                                                 (" 4.5 ", [4.5])])
def test_parse_cutoffs(text, expected):
    from matflow.sro.simulate import parse_cutoffs

    values, why = parse_cutoffs(text, lattice="fcc", a=3.56, pair_cutoff=4.0)
    assert values == expected and why
    auto, why = parse_cutoffs("auto", lattice="fcc", a=3.56, pair_cutoff=5.0)
    assert auto[0] == (5.0,) and all(len(c) == 2 for c in auto[1:]) and "cross-validation" in why


@pytest.mark.parametrize("bad", ["5,4,3", "five", "0,3", "nan"])
def test_cli_rejects_bad_cutoffs_before_fitting(bad):
    from matflow.cli import app

    result = CliRunner().invoke(app, ["sro", "simulate", "CrCoNi", "--cutoffs", bad])
    assert result.exit_code != 0
    assert "cutoffs" in result.output
