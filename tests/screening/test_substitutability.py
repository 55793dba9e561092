"""Substitutability from swap pairs of known alloys, and phase evidence by analogy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from matflow.screening.phases import BCC, FCC, MP, OMEGA
from matflow.screening.sources.substitutability import (
    NOT_SUBST,
    SUBST,
    SourceInputError,
    SubstitutabilitySource,
    SwapIndex,
    combine_rows,
    simple_pair_mass,
)


def equi(*elements: str) -> dict[str, float]:
    return {e: 1 / len(elements) for e in elements}


def tiny_training() -> tuple[list[dict[str, float]], list[str]]:
    """CoCrFeNi and CoCrFeMn share FCC (Ni<->Mn substitutable); CoCrFeNiAl is BCC."""
    comps = [equi("Co", "Cr", "Fe", "Ni"), equi("Co", "Cr", "Fe", "Mn"),
             equi("Co", "Cr", "Fe", "Ni", "Al"), equi("Co", "Cr", "Fe", "Ni", "Mn")]
    return comps, ["FCC", "FCC", "BCC", "FCC"]


def test_query_one_substitutable_swap_away_gets_the_analogue_phase():
    source = SubstitutabilitySource().fit(*tiny_training())
    assert source.belief("Mn", "Ni") > 0
    m = source.masses([equi("Co", "Cr", "Fe", "Mn", "Al")])[0]
    # the analogue CoCrFeNiAl (BCC) with Ni -> Mn; the belief in Mn~Ni discounts it
    assert m[BCC] == pytest.approx(source.strength * source.belief("Mn", "Ni"))
    assert m[OMEGA] == pytest.approx(1 - m[BCC])
    assert m.sum() == pytest.approx(1.0)
    explained = source.explain(equi("Co", "Cr", "Fe", "Mn", "Al"))
    assert explained["analogues"][0]["composition"] == "Al0.2000Co0.2000Cr0.2000Fe0.2000Ni0.2000"
    assert explained["analogues"][0]["measured_phase"] == "BCC"
    assert explained["analogues"][0]["substitution"] == "Ni->Mn"
    assert explained["n_analogues"] == 1 and explained["conflict"] == 0


def test_query_without_analogue_is_vacuous():
    source = SubstitutabilitySource().fit(*tiny_training())
    m = source.masses([equi("Nb", "Ta", "Ti", "Zr")])
    expected = np.zeros((1, 16))
    expected[0, OMEGA] = 1.0
    np.testing.assert_allclose(m, expected)
    assert "vacuous" in source.explain(equi("Nb", "Ta", "Ti", "Zr"))["note"]


def test_disagreeing_swap_supports_not_substitutable_and_transfers_nothing():
    source = SubstitutabilitySource().fit(*tiny_training())
    # CoCrFeNiAl (BCC) vs CoCrFeNiMn (FCC): Al<->Mn disagree
    mass = source.pair_mass_of("Al", "Mn")
    assert mass[NOT_SUBST] > 0 and mass[SUBST] == 0
    m = source.masses([equi("Co", "Cr", "Fe", "Mn", "Al")])[0]
    # CoCrFeMnNi (FCC) reaches the query only by Ni -> Al, a pair without evidence: no FCC mass
    assert m[FCC] == 0


def families(n_families: int, phase_b: str = "FCC") -> tuple[list[dict[str, float]], list[str]]:
    """Ni<->Mn swap pairs in n different families of shared elements."""
    bases = [("Co", "Cr", "Fe"), ("Cu", "Cr", "Fe"), ("Co", "V", "Fe"), ("Co", "Cr", "Ti")]
    comps, phases = [], []
    for base in bases[:n_families]:
        comps += [equi(*base, "Ni"), equi(*base, "Mn")]
        phases += ["FCC", phase_b]
    return comps, phases


def test_more_agreeing_families_give_more_belief():
    beliefs = [SubstitutabilitySource().fit(*families(n)).belief("Mn", "Ni") for n in (1, 2, 4)]
    assert 0 < beliefs[0] < beliefs[1] < beliefs[2] < 1
    # one family of weight pair_mass * 1/2 each, combined by Dempster's rule
    w = 0.3 * 0.5
    assert beliefs[2] == pytest.approx(1 - (1 - w) ** 4)


def test_more_agreeing_pairs_in_one_family_give_more_belief_and_conflict_is_recorded():
    base = ("Co", "Cr", "Fe")
    one = [equi(*base, "Ni"), equi(*base, "Mn")]
    three = one + [{"Co": 0.2, "Cr": 0.2, "Fe": 0.2, "Ni": 0.4},
                   {"Co": 0.2, "Cr": 0.2, "Fe": 0.2, "Mn": 0.4}]
    b_one = SubstitutabilitySource().fit(one, ["FCC"] * 2).belief("Mn", "Ni")
    b_more = SubstitutabilitySource().fit(three, ["FCC"] * 4).belief("Mn", "Ni")
    assert b_more > b_one
    comps, phases = families(2)
    comps += [equi("Co", "V", "Ti", "Ni"), equi("Co", "V", "Ti", "Mn")]
    phases += ["BCC", "MP"]
    mixed = SubstitutabilitySource().fit(comps, phases)
    assert mixed.pair_conflict_[("Mn", "Ni")] > 0
    assert mixed.pair_mass_of("Mn", "Ni")[NOT_SUBST] > 0


def test_fraction_tolerance_defines_a_swap_pair():
    comps = [{"Co": 0.3, "Cr": 0.2, "Fe": 0.2, "Ni": 0.3}, {"Co": 0.3, "Cr": 0.2, "Fe": 0.2, "Mn": 0.3},
             {"Co": 0.2, "Cr": 0.2, "Fe": 0.2, "Mn": 0.4}]
    index = SwapIndex(comps, np.array([FCC, FCC, MP]), tolerance=0.02)
    fams = index.swap_families()
    assert [(f.pair, f.n_same, f.n_different) for f in fams] == [(("Mn", "Ni"), 1, 0)]
    wide = SwapIndex(comps, np.array([FCC, FCC, MP]), tolerance=0.15).swap_families()
    assert sum(f.n_different for f in wide) == 1


def test_fit_uses_only_given_rows_and_clones():
    source = SubstitutabilitySource(tolerance=0.01)
    assert clone(source).get_params()["tolerance"] == 0.01
    comps, phases = tiny_training()
    fitted = source.fit(comps[:2], phases[:2])
    assert fitted is source
    assert set(source.pair_masses_) == {("Mn", "Ni")}


def test_bad_input_is_named():
    comps, phases = tiny_training()
    with pytest.raises(SourceInputError, match="4 compositions but 3 phase labels"):
        SubstitutabilitySource().fit(comps, phases[:3])
    with pytest.raises(SourceInputError, match="row 1.*'liquid'"):
        SubstitutabilitySource().fit(comps[:2], ["FCC", "liquid"])
    with pytest.raises(SourceInputError, match="pair_mass 1.0"):
        SubstitutabilitySource(pair_mass=1.0).fit(comps, phases)
    with pytest.raises(ValueError, match="unknown element"):
        SubstitutabilitySource().fit([{"Co": 0.5, "Xx": 0.5}], ["FCC"])


def test_many_conflicting_families_do_not_break_the_combination():
    stacks = [[simple_pair_mass(0.3, 0.0)] * 300 + [simple_pair_mass(0.0, 0.3)] * 300,
              [simple_pair_mass(0.3, 0.0)] * 2, []]
    fused, conflict = combine_rows(stacks, 4)
    np.testing.assert_allclose(fused[0, [SUBST, NOT_SUBST]], [0.5, 0.5])
    np.testing.assert_allclose(fused[1], [0, 0.51, 0, 0.49])
    np.testing.assert_allclose(fused[2], [0, 0, 0, 1])
    assert conflict[0] == pytest.approx(1.0) and conflict[1] == 0 and conflict[2] == 0


def test_masses_before_fit_is_refused():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SubstitutabilitySource().masses([equi("Co", "Ni")])
    assert SubstitutabilitySource().fit(*tiny_training()).masses([]).shape == (0, 16)
