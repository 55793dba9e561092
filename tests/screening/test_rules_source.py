"""RulesSource: the classical criteria as mass functions that keep borderline doubt."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from matflow.evidence import belief, plausibility, validate_masses
from matflow.screening.phases import BCC, FCC, MP, OMEGA, SOLID_SOLUTION
from matflow.screening.sources.base import EvidenceSource
from matflow.screening.sources.rules import (
    FCC_BCC_OR_MIXTURE,
    RulesSource,
    classical_rules_predict,
)

COCRFENI = {el: 0.25 for el in ("Co", "Cr", "Fe", "Ni")}  # δ 1.6 %, Ω 5.8, ΔH −3.75, VEC 8.25
NBMOTAW = {el: 0.25 for el in ("Nb", "Mo", "Ta", "W")}  # all pass, VEC 5.5
NIZR = {"Ni": 0.5, "Zr": 0.5}  # δ 11 %, ΔH −49 kJ/mol, Ω 0.23: fails everything
AGCU = {"Ag": 0.5, "Cu": 0.5}  # δ 6.67 %, a hair above 6.6 %; Ω and ΔH pass
ALCOCRFENI = {el: 0.2 for el in ("Al", "Co", "Cr", "Fe", "Ni")}  # VEC 7.2: Guo's mixed band


@pytest.fixture(scope="module")
def rules() -> RulesSource:
    return RulesSource().fit([COCRFENI, NIZR], ["FCC", "MP"])


def test_is_an_evidence_source_with_sklearn_params(rules):
    assert isinstance(rules, EvidenceSource) and rules.name == "rules"
    copy = clone(RulesSource(strength=0.7))
    assert copy.get_params()["strength"] == 0.7
    assert rules.fit([COCRFENI], ["FCC"]) is rules
    with pytest.raises(ValueError, match="1 compositions but 2 phases"):
        RulesSource().fit([COCRFENI], ["FCC", "MP"])


def test_masses_are_valid_mass_functions(rules):
    m = rules.masses([COCRFENI, NBMOTAW, NIZR, AGCU, ALCOCRFENI])
    assert m.shape == (5, 16)
    validate_masses(m)
    assert np.all(m[:, OMEGA] >= 0.2 - 1e-12)  # strength 0.8 always leaves 20 % ignorance


def test_alloy_passing_everything_gets_most_mass_on_solid_solution(rules):
    m = rules.masses([COCRFENI, NBMOTAW])
    bel_ss = belief(m, SOLID_SOLUTION)
    assert bel_ss[0] > 0.6 and bel_ss[1] > 0.75
    assert m[0, MP] == 0.0 and m[1, MP] == 0.0
    # VEC decides the lattice: 8.25 -> fcc, 5.5 -> bcc
    assert m[0, FCC] > 0.6 and m[0, BCC] < 0.01
    assert m[1, BCC] > 0.75 and m[1, FCC] < 0.01


def test_alloy_failing_size_mismatch_badly_gets_mass_on_multiphase(rules):
    m = rules.masses([NIZR])[0]
    assert m[MP] == pytest.approx(0.8, abs=1e-3)
    assert plausibility(m, SOLID_SOLUTION) == pytest.approx(m[OMEGA])
    verdicts = {k: v["verdict"] for k, v in rules.explain(NIZR)["criteria"].items()}
    assert verdicts == {"delta": "fail", "omega": "fail", "dHmix": "fail"}


def test_borderline_alloy_keeps_its_mass_on_ignorance(rules):
    m = rules.masses([AGCU])[0]
    assert m[OMEGA] > 0.5
    assert belief(m, SOLID_SOLUTION) < 0.1 and m[MP] < 0.3
    explanation = rules.explain(AGCU)
    assert explanation["criteria"]["delta"]["verdict"] == "borderline"
    assert explanation["criteria"]["omega"]["verdict"] == "pass"
    assert explanation["masses"]["ignorance"] == pytest.approx(m[OMEGA])


def test_mid_vec_alloy_goes_to_fcc_bcc_or_mixture(rules):
    m = rules.masses([ALCOCRFENI])[0]
    assert m[FCC_BCC_OR_MIXTURE] > max(m[FCC], m[BCC])
    assert "FCC+BCC" in rules.explain(ALCOCRFENI)["vec_class"]


def test_unknown_enthalpy_gives_no_solid_solution_support(rules):
    m = rules.masses([{"Co": 0.5, "Te": 0.5}])[0]
    assert belief(m, SOLID_SOLUTION) == 0.0
    criteria = rules.explain({"Co": 0.5, "Te": 0.5})["criteria"]
    assert criteria["dHmix"]["verdict"] == "unknown" and criteria["dHmix"]["score"] is None


def test_strength_and_widths():
    vac = RulesSource(strength=0.0).masses([COCRFENI, NIZR])
    np.testing.assert_allclose(vac[:, OMEGA], 1.0)
    sharp = RulesSource(delta_width_pct=0.01).masses([AGCU])[0]
    assert sharp[MP] > 0.7  # a sharp δ criterion decides 6.67 % > 6.6 %
    with pytest.raises(ValueError, match="strength=1.5 must be in"):
        RulesSource(strength=1.5).masses([COCRFENI])
    with pytest.raises(ValueError, match="vec_width=0.0 must be a finite number > 0"):
        RulesSource(vec_width=0.0).fit([COCRFENI], ["FCC"])


def test_explain_is_json_ready(rules):
    import json

    text = json.dumps(rules.explain(COCRFENI))
    assert "Yang & Zhang 2012" in text and "delta_pct" in text


def test_classical_rules_hard_cutoffs():
    out = classical_rules_predict([COCRFENI, NIZR, NBMOTAW, AGCU])
    assert out["single_phase"].tolist() == [1, 0, 1, 0]
    assert out["fcc"].tolist() == [1, 0, 0, 1]
    assert out["vec_class"].tolist() == ["FCC", "FCC+BCC", "BCC", "FCC"]
    assert out["single_phase_score"][0] > 0.9 > out["single_phase_score"][3]
    assert out["fcc_score"][0] == pytest.approx(8.25)


ELEMENTS = ("Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ta", "Ti", "V", "W", "Zr")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(ELEMENTS), min_size=2, max_size=6, unique=True),
    st.lists(st.floats(0.05, 1.0), min_size=6, max_size=6),
)
def test_random_alloys_give_valid_masses_without_conflict(elements, weights):
    w = np.array(weights[: len(elements)])
    comp = dict(zip(elements, w / w.sum(), strict=True))
    m = RulesSource().masses([comp])[0]
    validate_masses(m)
    # solid-solution and multi-phase support never coexist (a criterion passes or fails)
    assert min(belief(m, SOLID_SOLUTION) + m[FCC_BCC_OR_MIXTURE], m[MP]) == 0.0
