"""CHGNet Γ-point phonon descriptors and the composite preset that joins them to the structure one."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matflow.featurize import FeatureCache, featurize_structures
from matflow.featurize import runner as runner_module
from matflow.featurize.chgnet_phonons import CHGNetGammaPhonons
from matflow.featurize.presets import get_preset


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def silicon() -> Structure:
    return Structure(Lattice.cubic(5.43).matrix @ (np.ones((3, 3)) - np.eye(3)) / 2, ["Si", "Si"],
                     [[0, 0, 0], [0.25, 0.25, 0.25]])


def test_silicon_gamma_optical_mode(silicon):
    """Si has one triply degenerate optical mode at Γ (DFT/experiment ~517 cm⁻¹; CHGNet is softer)."""
    feat = CHGNetGammaPhonons()
    values = dict(zip(feat.feature_labels(), feat.featurize(silicon), strict=True))
    assert 350 < values["gamma_max_freq_cm-1"] < 560
    assert values["gamma_std_optical_freq_cm-1"] < 1.0  # degenerate triplet
    assert abs(values["gamma_min_freq_cm-1"]) < 5.0  # acoustic modes at zero
    assert values["gamma_imaginary_fraction"] == 0.0
    assert values["chgnet_max_force_eV_per_A"] < 1e-3  # ideal diamond: forces vanish by symmetry
    assert -6.0 < values["chgnet_energy_eV_per_atom"] < -4.0


def test_gamma_frequency_matches_a_direct_finite_difference(silicon):
    """Units and masses: the optical frequency equals sqrt(k / μ) from moving one Si sublattice
    against the other, with k from a central difference of CHGNet forces (μ = m_Si / 2)."""
    from ase import Atoms

    from matflow.atomistic.fast import FastCHGNetCalculator

    calc = FastCHGNetCalculator(skin=0.0)
    forces = []
    for step in (0.01, -0.01):
        atoms = Atoms("Si2", cell=silicon.lattice.matrix, positions=silicon.cart_coords, pbc=True)
        atoms.positions[0, 0] += step
        atoms.calc = calc
        forces.append(atoms.get_forces()[0, 0])
    k_eV_per_A2 = -(forces[0] - forces[1]) / 0.02
    mu_kg = 28.0855 / 2 * 1.66053907e-27
    omega_cm = np.sqrt(k_eV_per_A2 * 16.0217663 / mu_kg) / (2 * np.pi * 2.99792458e10)
    gamma_max = CHGNetGammaPhonons().featurize(silicon)[0]
    assert gamma_max == pytest.approx(omega_cm, rel=0.03)


def test_unsupported_element_is_reported_not_fatal(cache_path):
    # an element CHGNet has no embedding for (Z > 94): americium
    bad = Structure(Lattice.cubic(3.5), ["Am"], [[0, 0, 0]])
    table = featurize_structures([bad], "chgnet-gamma", cache=FeatureCache(cache_path))
    row = table.table.iloc[0]
    assert row["status"] == "failed"
    assert "chgnet_gamma" in row["errors"] and "Am" in row["errors"]


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "features.sqlite"


def test_composite_preset_joins_parts_and_reuses_their_cache(silicon, nacl, cache_path, monkeypatch):
    cache = FeatureCache(cache_path)
    part = featurize_structures([silicon, nacl], "structure", cache=cache)
    joined = featurize_structures([silicon, nacl], "structure-chgnet", cache=cache)
    preset = get_preset("structure-chgnet")
    assert preset.feature_labels() == (get_preset("structure").feature_labels()
                                       + get_preset("chgnet-gamma").feature_labels())
    assert list(joined.table.columns[4:]) == preset.feature_labels()
    structure_cols = get_preset("structure").feature_labels()
    np.testing.assert_array_equal(joined.table[structure_cols].to_numpy(),
                                  part.table[structure_cols].to_numpy())
    assert joined.table["chgnet_gamma|gamma_max_freq_cm-1"].notna().all()

    def must_not_run(*args, **kwargs):
        raise AssertionError("featurizer ran on a cached structure")

    monkeypatch.setattr(runner_module, "_featurize_one", must_not_run)
    again = featurize_structures([silicon, nacl], "structure-chgnet", cache=cache)
    assert again.n_computed == 0
    np.testing.assert_array_equal(again.table.iloc[:, 4:].to_numpy(), joined.table.iloc[:, 4:].to_numpy())


def test_conventional_cell_gives_the_primitive_cell_descriptors(silicon):
    """The conventional 8-atom cell would fold X-point modes into Γ; the primitive cell is used."""
    conventional = Structure(Lattice.cubic(5.43), ["Si"] * 8,
                             [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
                              [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75],
                              [0.75, 0.75, 0.25]])
    feat = CHGNetGammaPhonons()
    np.testing.assert_allclose(feat.featurize(conventional), feat.featurize(silicon),
                               rtol=1e-3, atol=0.5)


def test_chgnet_embedding_is_stock_crystal_feature(nacl):
    from matflow.atomistic.model import load_chgnet
    from matflow.featurize.chgnet_phonons import CHGNetEmbedding

    ours = np.array(CHGNetEmbedding().featurize(nacl))
    stock = load_chgnet().predict_structure(nacl, return_crystal_feas=True)["crystal_fea"]
    assert ours.shape == (64,)
    np.testing.assert_allclose(ours, stock, atol=1e-5)
    assert np.abs(ours).max() > 0.01


def test_supercell_phonons_sample_the_zone(silicon):
    """Si primitive cell (widths 3.1 Å) -> 2x2x2 supercell, 8 commensurate q-points including Γ; the
    optical band disperses, so its lowest value (zone boundary) lies below its highest (Γ)."""
    from matflow.featurize.chgnet_phonons import CHGNetSupercellPhonons

    feat = CHGNetSupercellPhonons()
    values = dict(zip(feat.feature_labels(), feat.featurize(silicon), strict=True))
    gamma_max = CHGNetGammaPhonons().featurize(silicon)[0]
    assert values["sc_n_qpoints"] == 8
    assert values["sc_max_freq_cm-1"] == pytest.approx(gamma_max, rel=0.03)
    assert values["sc_top_band_min_cm-1"] < values["sc_top_band_mean_cm-1"] <= values["sc_max_freq_cm-1"]
    assert values["sc_imaginary_fraction"] == 0.0
