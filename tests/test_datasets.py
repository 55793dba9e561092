"""Bundled datasets load offline, with units in column names and the official Matbench folds."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from matflow import datasets


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("dataset loading tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_matbench_phonons_order_and_folds(no_network):
    df = datasets.load_matbench_phonons()
    assert len(df) == 1265
    assert list(df["matbench_index"]) == list(range(1265))
    assert df["last_phdos_peak_cm-1"].between(59, 3644).all()
    folds = datasets.matbench_folds(len(df))
    assert len(folds) == 5
    test_sets = np.concatenate([test for _, test in folds])
    assert sorted(test_sets) == list(range(1265))
    # KFold(5, shuffle=True, random_state=18012019): the first test fold is fixed by that seed
    from sklearn.model_selection import KFold

    expected = next(KFold(5, shuffle=True, random_state=18012019).split(np.arange(1265)))[1]
    np.testing.assert_array_equal(folds[0][1], expected)


def test_alexandria_per_atom_units(no_network):
    df = datasets.load_alexandria_cv300()
    assert len(df) == 1170
    np.testing.assert_allclose(df["cv_300K_J_per_K_mol_atom"] * df["nsites"], df["cv_300K_J_per_K_mol_cell"])
    # harmonic Cv per atom can never exceed the Dulong-Petit limit 3R
    assert (df["cv_300K_J_per_K_mol_atom"] <= 3 * datasets.R_GAS + 1e-6).all()


def test_vib_thermo_fixture_is_per_atom():
    df = datasets.load_vib_thermo_fixture()
    assert len(df) == 5
    for _, row in df.iterrows():
        assert len(row["temperatures_K"]) == 160
        cv_800 = row["Cv_J_per_K_mol_atom"][-1]
        assert 0.85 * 3 * datasets.R_GAS < cv_800 <= 3 * datasets.R_GAS * 1.001


def test_hea_sources_and_sro_fixture():
    # counts of PROVENANCE.md; Pei's 1,252 rows lose "Ta_Th" (multi-phase), which is no formula
    pei = datasets.load_hea_phases("pei2020")
    assert pei["phase"].value_counts().to_dict() == {"multi-phase": 626, "bcc": 261, "fcc": 218, "hcp": 146}
    consolidated = datasets.load_hea_phases("consolidated")
    assert len(consolidated) == 7784
    assert consolidated["phase"].value_counts().to_dict() == {
        "multi-phase": 3887, "BCC": 2118, "FCC": 1556, "HCP": 123}
    unlabelled = consolidated["phase"].isna()
    assert unlabelled.sum() == 100 and consolidated.loc[unlabelled, "has_conflict"].eq(1).all()
    with pytest.raises(ValueError, match="unknown HEA dataset source 'nope'"):
        datasets.load_hea_phases("nope")
    assert set(datasets.load_hea_dst_experts().columns) >= {"element_a", "element_b", "expert_persona"}
    frame, expected = datasets.load_sro_fixture()
    assert len(frame["types"]) == 4000
    assert np.bincount(frame["types"])[1:].tolist() == expected["type_counts_frame0"]
