"""Alloy descriptors against hand-computed and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matflow.screening.descriptors import (
    DESCRIPTOR_COLUMNS,
    GAS_CONSTANT,
    METALLIC12_RADII_ANGSTROM,
    DescriptorError,
    MissingDescriptorError,
    describe,
    describe_many,
)

CANTOR = {el: 0.2 for el in ("Co", "Cr", "Fe", "Mn", "Ni")}
COCRFENI = {el: 0.25 for el in ("Co", "Cr", "Fe", "Ni")}
ALCOCRFENI = {el: 0.2 for el in ("Al", "Co", "Cr", "Fe", "Ni")}


def test_cantor_alloy_matches_published_values():
    """CoCrFeMnNi: ΔH_mix = −4.16 kJ/mol, ΔS_mix = R ln 5, VEC = 8.0 (Guo et al., J. Appl.
    Phys. 109, 103505 (2011)); δ = 3.27 % with the 12-coordinate radii of Guo & Liu (2011)."""
    d = describe(CANTOR, radii="metallic12")
    assert d["delta_pct"] == pytest.approx(3.27, abs=0.01)
    assert d["dHmix_kJmol"] == pytest.approx(-4.16, abs=1e-9)
    assert d["dSmix_JmolK"] == pytest.approx(GAS_CONSTANT * math.log(5))
    assert d["dSmix_JmolK"] == pytest.approx(13.38, abs=0.005)
    assert d["vec"] == pytest.approx(8.0)
    assert d["Tm_K"] == pytest.approx((1768 + 2180 + 1811 + 1519 + 1728) / 5)
    assert d["omega"] == pytest.approx(d["Tm_K"] * d["dSmix_JmolK"] / 4160.0)
    assert d["missing_pairs"] == ""
    # the default radii (Miracle et al. 2010) give a smaller δ for the same alloy
    assert describe(CANTOR)["delta_pct"] == pytest.approx(2.25, abs=0.01)


def test_cocrfeni_and_alcocrfeni():
    d = describe(COCRFENI, radii="metallic12")
    assert d["delta_pct"] == pytest.approx(0.30, abs=0.01)
    # pairs: Co-Cr −4, Co-Fe −1, Co-Ni 0, Cr-Fe −1, Cr-Ni −7, Fe-Ni −2  -> 4·(−15)/16
    assert d["dHmix_kJmol"] == pytest.approx(-3.75)
    assert d["vec"] == pytest.approx(8.25)
    a = describe(ALCOCRFENI, radii="metallic12")
    assert a["dHmix_kJmol"] == pytest.approx(-12.32)
    assert a["delta_pct"] == pytest.approx(5.78, abs=0.01)
    assert a["vec"] == pytest.approx(7.2)


def test_binary_hand_computed():
    # δ of an equimolar binary is 100·|r1 − r2| / (r1 + r2)
    r_al, r_ni = METALLIC12_RADII_ANGSTROM["Al"], METALLIC12_RADII_ANGSTROM["Ni"]
    d = describe({"Al": 0.5, "Ni": 0.5}, radii="metallic12")
    assert d["delta_pct"] == pytest.approx(100 * (r_al - r_ni) / (r_al + r_ni))
    assert d["dHmix_kJmol"] == pytest.approx(4 * -22 * 0.25)  # Al–Ni −22 kJ/mol
    fe_ni = describe({"Fe": 0.5, "Ni": 0.5})
    assert fe_ni["omega"] == pytest.approx(1769.5 * GAS_CONSTANT * math.log(2) / 2000.0)
    # Co–Ni has ΔH_ij = 0: Ω is unbounded
    assert describe({"Co": 0.5, "Ni": 0.5})["omega"] == math.inf
    assert describe({"Cu": 0.5, "Fe": 0.5})["dHmix_kJmol"] == pytest.approx(13.0)  # positive


def test_many_equals_single_and_keeps_order():
    comps = [CANTOR, {"Fe": 0.5, "Ni": 0.5}, COCRFENI, {"Ni": 0.25, "Al": 0.75}]
    table = describe_many(comps)
    assert list(table.columns[: len(DESCRIPTOR_COLUMNS)]) == list(DESCRIPTOR_COLUMNS)
    for i, comp in enumerate(comps):
        single = describe(comp)
        for col in DESCRIPTOR_COLUMNS:
            assert table.loc[i, col] == pytest.approx(single[col])
    shuffled = dict(reversed(list(CANTOR.items())))
    assert describe(shuffled)["delta_pct"] == pytest.approx(describe(CANTOR)["delta_pct"])
    empty = describe_many([])
    assert len(empty) == 0 and "omega" in empty.columns


def test_missing_binary_enthalpy_is_flagged_not_imputed():
    d = describe({"Co": 0.5, "Te": 0.5})
    assert np.isnan(d["dHmix_kJmol"]) and np.isnan(d["omega"])
    assert d["missing_pairs"] == "Co-Te"
    assert np.isfinite(d["delta_pct"])
    with pytest.raises(MissingDescriptorError, match="Co-Te"):
        describe({"Co": 0.5, "Te": 0.5}, strict=True)


@pytest.mark.parametrize(
    ("comp", "kwargs", "message"),
    [
        ({"Xx": 0.5, "Ni": 0.5}, {}, "'Xx' is not a chemical element"),
        ({"Co": 0.5, "Ni": 0.4}, {}, "sum to 0.9"),
        ({"Co": 1.2, "Ni": -0.2}, {}, "fraction of Ni is -0.2"),
        ({"Co": 0.5, "Ni": float("nan")}, {}, "fraction of Ni is nan"),
        ({}, {}, "not a non-empty dict"),
        ({"La": 0.5, "Ni": 0.5}, {"radii": "metallic12"}, "no 'metallic12' atomic radius for La"),
    ],
)
def test_bad_compositions_raise_clear_errors(comp, kwargs, message):
    with pytest.raises(DescriptorError, match=message):
        describe(comp, **kwargs)


def test_unknown_radius_set():
    with pytest.raises(ValueError, match="radii 'kittel' is unknown"):
        describe(CANTOR, radii="kittel")
