"""Cluster-expansion energy model: input checks, recovery of a known pair model, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matflow.sro.energy_model import (
    ClusterExpansionModel,
    CompositionError,
    check_composition,
    fit_energy_model,
    load_energy_model,
    random_supercell,
    species_counts,
    vegard_lattice_parameter,
)
from matflow.sro.lattice import LatticeError, SROInputError, shell_neighbours

TERNARY = {"Cr": 1 / 3, "Co": 1 / 3, "Ni": 1 / 3}
SPECIES = ["Co", "Cr", "Ni"]
# nearest- and next-nearest-neighbour pair energies (eV) of a synthetic alloy
W1 = np.array([[0.00, -0.02, 0.01], [-0.02, 0.03, 0.00], [0.01, 0.00, -0.01]])
W2 = np.array([[0.00, 0.005, 0.0], [0.005, -0.01, 0.0], [0.0, 0.0, 0.004]])


def synthetic_energies(cells):
    """Total energies (eV) of a known two-shell pair model plus a per-atom constant."""
    out = []
    for atoms in cells:
        nb = shell_neighbours(atoms, n_shells=2, lattice="fcc", a=3.56)
        t = np.array([SPECIES.index(s) for s in atoms.get_chemical_symbols()])
        e = sum(0.5 * w[t[nb.i[m]], t[nb.j[m]]].sum() for m, w in enumerate((W1, W2)))
        out.append(e - 5.0 * len(atoms))
    return np.array(out)


def gauge_free(w):
    """W(s,t) - W(s,Co) - W(Co,t) + W(Co,Co): what a swap energy can see."""
    return w - w[:, :1] - w[:1, :] + w[0, 0]


@pytest.fixture(scope="module")
def synthetic_fit():
    return fit_energy_model(TERNARY, "fcc", 3.56, n_structures=24, size=(3, 3, 2),
                            potential_energies=synthetic_energies, fit_method="ridge",
                            n_swaps=6, seed=0)


def test_fit_recovers_known_pair_model(synthetic_fit):
    from matflow.sro.montecarlo import pair_hamiltonian_from_ce

    m = synthetic_fit.metrics
    assert m["energy_std_meV_per_atom"] > 1.0
    assert m["cv_rmse_meV_per_atom"] < 0.01 * m["energy_std_meV_per_atom"]
    assert m["cv_r2"] > 0.999
    assert m["swap_rmse_meV"] < 0.01 * m["swap_std_reference_meV"]
    cell = random_supercell(TERNARY, "fcc", 3.56, 3, np.random.default_rng(4))
    ham = pair_hamiltonian_from_ce(synthetic_fit.cluster_expansion, cell)
    assert ham.species == tuple(SPECIES)
    np.testing.assert_allclose(ham.tables[0], gauge_free(W1), atol=1e-5)
    np.testing.assert_allclose(ham.tables[1], gauge_free(W2), atol=1e-5)
    np.testing.assert_allclose(ham.radii, [3.56 / 2**0.5, 3.56], rtol=1e-6)


def test_save_load_round_trip(synthetic_fit, tmp_path):
    path = synthetic_fit.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["composition"] == pytest.approx(check_composition(TERNARY))
    assert manifest["cutoffs_A"] == [4.0] and manifest["lattice"] == "fcc"
    assert manifest["metrics"]["cv_r2"] == pytest.approx(synthetic_fit.metrics["cv_r2"])
    loaded = load_energy_model(path)
    cells = [random_supercell(TERNARY, "fcc", 3.56, 3, np.random.default_rng(k)) for k in range(3)]
    np.testing.assert_allclose(loaded.model.predict(cells), synthetic_fit.model.predict(cells),
                               rtol=1e-12)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_energy_model(tmp_path / "nowhere")


def test_estimator_follows_sklearn_rules():
    from sklearn.base import clone

    model = ClusterExpansionModel(cutoffs=(4.0,), fit_method="ols", cv=3)
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "ce_")
    cells = [random_supercell(TERNARY, "fcc", 3.56, (3, 3, 2), np.random.default_rng(k))
             for k in range(9)]
    assert model.fit(cells, synthetic_energies(cells)) is model
    assert hasattr(model, "ce_") and model.metrics_["n_structures"] == 9
    with pytest.raises(ValueError, match="fit_method"):
        ClusterExpansionModel(fit_method="magic").fit(cells, synthetic_energies(cells))


def test_fit_with_chgnet_labels_runs():
    fit = fit_energy_model(TERNARY, "fcc", 3.56, potential="chgnet", n_structures=6,
                           size=(3, 2, 1), cv=3, n_swaps=2, seed=1)
    assert fit.potential["name"] == "chgnet" and len(fit.potential["weights_sha256"]) == 64
    assert np.isfinite(fit.metrics["cv_rmse_meV_per_atom"])
    assert fit.metrics["energy_std_meV_per_atom"] > 0


def test_relaxed_labels_are_not_above_unrelaxed():
    from matflow.atomistic.potentials import load_potential
    from matflow.sro.energy_model import _relax_positions

    pot = load_potential("chgnet")
    cells = [random_supercell(TERNARY, "fcc", 3.56, (3, 1, 1), np.random.default_rng(k))
             for k in range(2)]
    relaxed = _relax_positions(cells, pot, steps=30)
    assert np.all(relaxed <= pot.energies(cells) + 1e-4)


@pytest.mark.parametrize(("composition", "message"), [
    ({"Cr": 0.5, "Xx": 0.5}, "unknown element 'Xx'"),
    ({"Cr": 0.5, "Ni": 0.4}, "sum to 0.9"),
    ({"Cr": 1.2, "Ni": -0.2}, "must be > 0"),
    ({"Cr": 1.0}, "at least two"),
])
def test_bad_compositions(composition, message):
    with pytest.raises(CompositionError, match=message):
        check_composition(composition)


def test_composition_that_does_not_fit_the_cell_names_sizes():
    with pytest.raises(CompositionError, match=r"100 sites.*multiple of 3.*3 \(108 atoms\)"):
        species_counts(TERNARY, 100)
    with pytest.raises(CompositionError, match="non-integer"):
        fit_energy_model(TERNARY, "fcc", 3.56, size=2, potential_energies=synthetic_energies)
    assert species_counts(TERNARY, 108) == {"Co": 36, "Cr": 36, "Ni": 36}


def test_unknown_lattice_and_bad_size():
    with pytest.raises(LatticeError, match="'diamond'.*fcc, bcc, hcp"):
        fit_energy_model(TERNARY, "diamond", 3.56, potential_energies=synthetic_energies)
    with pytest.raises(SROInputError, match="size"):
        random_supercell(TERNARY, "fcc", 3.56, 0, np.random.default_rng(0))


def test_vegard_estimate_is_between_the_elements():
    a = vegard_lattice_parameter(TERNARY, "fcc")
    assert 3.50 < a < 3.62  # Ni 3.52 Å fcc; Cr and Co volumes converted to fcc
    assert vegard_lattice_parameter({"Cu": 0.5, "Ni": 0.5}, "fcc") == pytest.approx(
        ((3.61**3 + 3.52**3) / 2) ** (1 / 3), rel=2e-3)


def test_vegard_covers_manganese_and_tin_from_their_reference_cells():
    """α-Mn (58 atoms per cubic cell) and β-Sn (4 per body-centred tetragonal cell): equiatomic
    CoCrFeMnNi comes out near the about 3.60 Å that X-ray diffraction gives for the Cantor alloy."""
    from matflow.sro.energy_model import CompositionError, elemental_atomic_volume

    assert elemental_atomic_volume("Mn") == pytest.approx(8.89**3 / 58)
    assert elemental_atomic_volume("Sn") == pytest.approx(5.82**3 * 0.546 / 4)
    assert elemental_atomic_volume("Si") == pytest.approx(5.43**3 / 8)
    cantor = dict.fromkeys(("Co", "Cr", "Fe", "Mn", "Ni"), 0.2)
    assert abs(vegard_lattice_parameter(cantor, "fcc") - 3.60) < 0.02
    with pytest.raises(CompositionError, match="Pu"):
        vegard_lattice_parameter({"Pu": 0.5, "Ni": 0.5}, "fcc")
