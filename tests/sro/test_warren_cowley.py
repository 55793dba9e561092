"""Warren–Cowley parameters: reference data, hand-computed ordered phases, shells, significance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st

from matflow.sro.lattice import (
    LatticeError,
    ShellCountError,
    ideal_supercell,
    shell_counts,
    shell_distances,
    shell_neighbours,
)
from matflow.sro.readers import read_configurations
from matflow.sro.warren_cowley import (
    WarrenCowley,
    types_and_species,
    warren_cowley,
    warren_cowley_from_types,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "sro_warren_cowley"
DUMP = DATA / "fcc_ternary_4000atoms.dump.gz"


def l12_cell(a: float = 3.75, size: int = 2):
    """Cu3Au (L1_2): Au on the cube corners, Cu on the face centres."""
    atoms = ideal_supercell("fcc", a, size)
    corner = np.all(np.isclose(np.mod(atoms.positions / a + 1e-9, 1.0), 0.0, atol=1e-6), axis=1)
    atoms.set_chemical_symbols(np.where(corner, "Au", "Cu"))
    return atoms


def random_cell(size: int = 5, conc=(0.5, 0.3, 0.2), seed: int = 3):
    atoms = ideal_supercell("fcc", 3.6, size)
    n = len(atoms)
    counts = np.round(np.asarray(conc) * n).astype(int)
    counts[0] += n - counts.sum()
    symbols = np.repeat(["Ni", "Co", "Cr"], counts)
    atoms.set_chemical_symbols(np.random.default_rng(seed).permutation(symbols))
    return atoms


@pytest.mark.parametrize("frame", [0, 1])
def test_reference_matrices_both_frames(frame):
    expected = json.loads((DATA / "expected_warren_cowley.json").read_text())
    atoms = read_configurations(DUMP, type_map={1: "Cr", 2: "Co", 3: "Ni"})[frame]
    for kwargs in ({"lattice": "fcc"}, {"counts": [12, 6]}, {}):
        wc = warren_cowley(atoms, **kwargs)
        assert wc.species == ("Cr", "Co", "Ni")  # LAMMPS types 1, 2, 3
        np.testing.assert_allclose(wc.alpha[0], expected["wc_shell1_12nn"], atol=1e-6)
        np.testing.assert_allclose(wc.alpha[1], expected["wc_shell2_6nn"], atol=1e-6)
        assert wc.counts == [12, 6]
        assert wc.significant.all()  # strongly ordered: every α is far outside the random band


def test_l12_cu3au_hand_computed():
    wc = warren_cowley(l12_cell(), lattice="fcc", species=["Cu", "Au"])
    # Shell 1: Cu has 8 Cu + 4 Au, Au has 12 Cu.  α = 1 - p/c.
    np.testing.assert_allclose(
        wc.alpha[0], [[1 - (8 / 12) / 0.75, 1 - (4 / 12) / 0.25], [1 - 1 / 0.75, 1.0]], atol=1e-12
    )
    np.testing.assert_allclose(wc.alpha[0, 0, 1], -1 / 3, atol=1e-12)
    # Shell 2 (a): each sublattice sees only itself.
    np.testing.assert_allclose(wc.alpha[1], [[1 - 1 / 0.75, 1.0], [1.0, 1 - 1 / 0.25]], atol=1e-12)


def test_b2_on_bcc_hand_computed():
    atoms = ideal_supercell("bcc", 3.0, 3)
    corner = np.all(np.isclose(np.mod(atoms.positions / 3.0 + 1e-9, 1.0), 0.0, atol=1e-6), axis=1)
    atoms.set_chemical_symbols(np.where(corner, "Fe", "Al"))
    wc = warren_cowley(atoms, lattice="bcc", species=["Fe", "Al"])
    np.testing.assert_allclose(wc.alpha[0], [[1, -1], [-1, 1]], atol=1e-12)
    np.testing.assert_allclose(wc.alpha[1], [[-1, 1], [1, -1]], atol=1e-12)
    assert wc.counts == [8, 6]


def test_pair_identities_for_unequal_composition():
    """c_i p_ij = c_j p_ji (pair counts are symmetric) makes α symmetric; rows sum to zero.

    Note: c_i α_ij = c_j α_ji is not an identity of α = 1 − p/c (it fails for Cu3Au: −1/4 vs
    −1/12); the symmetric form α_ij = α_ji is.
    """
    wc = warren_cowley(random_cell(), lattice="fcc")
    c = wc.concentrations
    for m in range(2):
        np.testing.assert_allclose(wc.alpha[m], wc.alpha[m].T, atol=1e-12)
        p = (1 - wc.alpha[m]) * c[None, :]
        np.testing.assert_allclose(c[:, None] * p, (c[:, None] * p).T, atol=1e-12)
        np.testing.assert_allclose((c[None, :] * wc.alpha[m]).sum(axis=1), 0.0, atol=1e-12)


def _pair_keys(nb, m):
    return np.sort(nb.i[m] * nb.n_atoms + nb.j[m])


def test_count_shells_equal_distance_shells_and_survive_displacements():
    atoms = random_cell(size=3)
    by_distance = shell_neighbours(atoms, lattice="fcc", a=3.6)
    by_count = shell_neighbours(atoms, counts=[12, 6])
    rattled = atoms.copy()
    rattled.rattle(stdev=0.08, seed=1)
    by_count_rattled = shell_neighbours(rattled, counts=[12, 6])
    for m in range(2):
        np.testing.assert_array_equal(_pair_keys(by_distance, m), _pair_keys(by_count, m))
        np.testing.assert_array_equal(_pair_keys(by_distance, m), _pair_keys(by_count_rattled, m))
    np.testing.assert_allclose(
        warren_cowley(rattled, counts=[12, 6]).alpha, warren_cowley(atoms, by_distance).alpha
    )


def test_non_cubic_cell_gives_same_alpha_as_cubic():
    """The same infinite decoration (period 2a) in a cubic cell and a repeated primitive cell."""
    a = 3.6
    table = np.random.default_rng(7).choice(["Ni", "Co", "Cr"], size=(4, 4, 4))

    def decorate(atoms):
        idx = np.mod(np.rint(2 * atoms.positions / a).astype(int), 4)
        atoms.set_chemical_symbols(table[idx[:, 0], idx[:, 1], idx[:, 2]])
        return atoms

    cubic = decorate(ideal_supercell("fcc", a, 2))
    primitive = decorate(bulk("Cu", "fcc", a=a).repeat((4, 4, 4)))
    assert not np.allclose(primitive.cell.angles(), 90.0)
    species = ["Ni", "Co", "Cr"]
    ref = warren_cowley(cubic, lattice="fcc", a=a, species=species)
    for kwargs in ({"lattice": "fcc", "a": a}, {"counts": [12, 6]}):
        np.testing.assert_allclose(
            warren_cowley(primitive, species=species, **kwargs).alpha, ref.alpha, atol=1e-12
        )


def test_random_configuration_is_within_band():
    wc = warren_cowley(random_cell(size=5), lattice="fcc")
    upper = np.triu_indices(3)
    z = np.concatenate([wc.z[m][upper] for m in range(2)])
    inside = np.concatenate([~wc.significant[m][upper] for m in range(2)])
    assert np.all(np.abs(z) < 4)
    assert inside.mean() >= 0.75
    assert np.mean(np.abs(z) < 3) >= 0.9


def test_analytic_and_sampled_significance_agree():
    atoms = random_cell(size=4)
    analytic = warren_cowley(atoms, lattice="fcc")
    sampled = warren_cowley(atoms, lattice="fcc", significance="sampled", n_random=400, seed=1)
    ratio = sampled.random_std / analytic.random_std
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio
    width_a = analytic.band[..., 1] - analytic.band[..., 0]
    width_s = sampled.band[..., 1] - sampled.band[..., 0]
    assert np.all(np.abs(width_s / width_a - 1) < 0.35)
    np.testing.assert_allclose(
        sampled.random_mean, analytic.random_mean, atol=0.4 * analytic.random_std.max()
    )


def test_from_types_matches_and_dict_round_trip():
    atoms = random_cell(size=3)
    nb = shell_neighbours(atoms, lattice="fcc")
    wc = warren_cowley(atoms, nb)
    types, names = types_and_species(atoms)
    assert names == wc.species
    np.testing.assert_allclose(warren_cowley_from_types(types, nb, 3), wc.alpha)
    np.testing.assert_allclose(warren_cowley(types, nb, species=names).alpha, wc.alpha)
    back = WarrenCowley.from_dict(json.loads(json.dumps(wc.to_dict())))
    np.testing.assert_allclose(back.alpha, wc.alpha)
    np.testing.assert_allclose(back.band, wc.band)
    table = wc.table()
    assert len(table) == 2 * 9
    assert set(table.columns) >= {
        "shell",
        "radius",
        "i",
        "j",
        "alpha",
        "z",
        "band_lo",
        "band_hi",
        "significant",
    }


def test_ideal_shells_and_lattice_detection():
    np.testing.assert_allclose(
        shell_distances("fcc", 4.0, 3), [4 / np.sqrt(2), 4.0, 4 * np.sqrt(1.5)]
    )
    assert shell_counts("bcc", 3) == [8, 6, 12]
    assert shell_counts("hcp", 2) == [12, 6]
    for lattice, size in (("fcc", 2), ("bcc", 3), ("hcp", (3, 2, 2))):
        assert shell_neighbours(ideal_supercell(lattice, 3.0, size)).lattice == lattice


def test_unknown_lattice_is_refused():
    with pytest.raises(LatticeError, match=r"unknown lattice 'diamond'.*fcc, bcc, hcp"):
        warren_cowley(l12_cell(), lattice="diamond")
    with pytest.raises(LatticeError, match="unknown lattice"):
        ideal_supercell("sc", 3.0, 2)


def test_vacancy_is_refused_with_atom_shell_and_count():
    atoms = l12_cell()
    del atoms[3]
    with pytest.raises(ShellCountError, match=r"atom \d+: 11 neighbours in shell 1, expected 12"):
        warren_cowley(atoms, lattice="fcc", a=3.75)
    with pytest.raises(ShellCountError, match=r"atom \d+: 11 neighbours in shell 1, expected 12"):
        shell_neighbours(atoms, counts=[12, 6])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="significance"):
        warren_cowley(l12_cell(), significance="bootstrap")
    with pytest.raises(ValueError, match="needs neighbours"):
        warren_cowley(np.array([0, 1, 0, 1]))


@settings(max_examples=25, deadline=None)
@given(
    decoration=st.lists(st.integers(0, 2), min_size=32, max_size=32),
    lattice=st.sampled_from(["fcc", "bcc"]),
)
def test_identities_hold_for_any_decoration(decoration, lattice):
    """For any decoration: α symmetric, Σ_j c_j α_ij = 0 per present species, α ≤ 1."""
    atoms = ideal_supercell(lattice, 3.0, 2 if lattice == "fcc" else (2, 2, 4))
    types = np.asarray(decoration, dtype=np.intp)
    nb = shell_neighbours(atoms, lattice=lattice, a=3.0)
    alpha = warren_cowley_from_types(types, nb, 3)
    present = np.bincount(types, minlength=3) > 0
    c = np.bincount(types, minlength=3) / len(types)
    sub = alpha[:, present][:, :, present]
    np.testing.assert_allclose(sub, np.swapaxes(sub, 1, 2), atol=1e-12)
    np.testing.assert_allclose((sub * c[present][None, None, :]).sum(axis=2), 0.0, atol=1e-12)
    assert np.all(sub <= 1 + 1e-12)
    assert np.all(np.isnan(alpha[:, ~present, :]))
