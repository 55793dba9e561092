"""SRO strength of screened candidates: the summary numbers, the per-row failure handling, and one
real (tiny) simulation through matflow.sro."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from matflow.screening.sro_strength import (
    SROStrengthError,
    add_sro_strength,
    first_shell_summary,
    lattice_for,
)


def _simulation(alpha_first_shell, species=("Co", "Cr", "Ni"), temperature=800.0):
    n = len(species)
    alpha = np.asarray(alpha_first_shell, dtype=float)
    return {
        "species": list(species),
        "composition": {s: 1 / n for s in species},
        "random_alpha_std": [np.full((n, n), 0.01).tolist(), np.full((n, n), 0.01).tolist()],
        "temperatures": [
            {"temperature_K": 1500.0, "alpha": [np.zeros((n, n)).tolist()] * 2,
             "alpha_err": [np.zeros((n, n)).tolist()] * 2},
            {"temperature_K": temperature, "alpha": [alpha.tolist(), np.zeros((n, n)).tolist()],
             "alpha_err": [np.zeros((n, n)).tolist()] * 2},
        ],
    }


def test_random_solution_has_zero_strength_and_one_pair_sets_it():
    assert first_shell_summary(_simulation(np.zeros((3, 3))), 800.0)["sro_strength"] == 0.0
    alpha = np.zeros((3, 3))
    alpha[0, 1] = alpha[1, 0] = -0.3  # Co-Cr preferred; the diagonal must not count
    alpha[2, 2] = 0.9
    out = first_shell_summary(_simulation(alpha), 800.0)
    # two of the six unlike ordered pairs carry 0.3, all with equal c_i c_j
    assert out["sro_strength"] == pytest.approx(math.sqrt(2 * 0.09 / 6))
    assert out["sro_pair"] == "Co-Cr" and out["sro_alpha"] == -0.3
    assert out["sro_z"] == pytest.approx(-30.0) and out["sro_T_K"] == 800.0


def test_lattice_follows_the_most_probable_solid_solution():
    assert lattice_for({"p_FCC": 0.2, "p_BCC": 0.5, "p_HCP": 0.0, "p_MP": 0.3}) == "bcc"
    assert lattice_for({"p_FCC": 0.6, "p_BCC": 0.1, "p_HCP": 0.0}) == "fcc"


def _table():
    return pd.DataFrame({"rank": [1, 2, 3], "composition": ["Co0.3333Cr0.3333Ni0.3333", "Xx0.5Fe0.5",
                                                             "Fe0.5Ni0.5"],
                         "p_FCC": [0.7, 0.5, 0.6], "p_BCC": [0.1, 0.2, 0.1], "p_HCP": [0.0, 0.0, 0.0]})


def test_only_top_rows_run_and_a_bad_row_keeps_its_reason():
    calls = []

    def fake(comp, **kw):
        calls.append((comp, kw["lattice"], kw["temperatures"]))
        return _simulation(np.full((3, 3), -0.1), temperature=kw["temperatures"][-1])

    out = add_sro_strength(_table(), top=2, temperature_K=900.0, simulate=fake)
    assert len(calls) == 1  # row 2's unknown element fails before simulating; row 3 is below top
    assert calls[0][1] == "fcc" and calls[0][2][-1] == 900.0 and calls[0][2][0] == 1500.0
    assert out.loc[0, "sro_strength"] == pytest.approx(0.1) and out.loc[0, "sro_T_K"] == 900.0
    assert np.isnan(out.loc[1, "sro_strength"]) and "Xx" in out.loc[1, "sro_note"]
    assert np.isnan(out.loc[2, "sro_strength"]) and out.loc[2, "sro_note"] == ""
    assert list(out["composition"]) == list(_table()["composition"])  # ranking untouched


@pytest.mark.parametrize("temperature", [0.0, -5.0, float("nan"), 2000.0])
def test_processing_temperature_outside_the_anneal_is_refused(temperature):
    with pytest.raises(SROStrengthError, match="processing temperature"):
        add_sro_strength(_table(), top=1, temperature_K=temperature)


def test_tiny_real_simulation_gives_a_finite_strength():
    """108-atom CrCoNi, 12 CHGNet-labelled cells, 20 sweeps: the wiring into matflow.sro."""
    table = _table().iloc[[0]]
    out = add_sro_strength(table, top=1, temperature_K=800.0, potential="chgnet", n_train=12,
                           sweeps=20, size=3)
    assert np.isfinite(out.loc[0, "sro_strength"]) and 0 <= out.loc[0, "sro_strength"] < 1
    assert out.loc[0, "sro_pair"].count("-") == 1 and out.loc[0, "sro_lattice"] == "fcc"
    assert "chgnet" in out.loc[0, "sro_note"]
