"""Language-model expert substitutability: table parsing, fitted persona reliability, analogy."""

from __future__ import annotations

import numpy as np
import pytest

from matflow.screening.phases import BCC, FCC, OMEGA
from matflow.screening.sources.experts import (
    ExpertKnowledgeSource,
    ExpertTableError,
    fit_reliability,
    read_expert_table,
)
from matflow.screening.sources.substitutability import SUBST


def equi(*elements: str) -> dict[str, float]:
    return {e: 1 / len(elements) for e in elements}


def test_bundled_table_is_read_completely():
    table = read_expert_table()
    assert len(table) == 1755
    assert sorted(set(table["persona"])) == ["Corrosion", "Materials", "Mechanical",
                                             "Metallurgist", "Solidstate"]
    pairs = set(zip(table["element_a"], table["element_b"], strict=True))
    assert len(pairs) == 351 and all(a < b for a, b in pairs)
    assert len({e for p in pairs for e in p}) == 27
    assert table["level"].value_counts().to_dict() == {"Low": 1073, "Medium": 548, "High": 82,
                                                       "No": 52}
    assert (table["level"].eq("No") == ~table["substitutable"]).all()


def write_table(path, rows):
    lines = ["element_a,element_b,expert_persona,q1_substitutable,q2_substitutability_level"]
    lines += [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_table_names_file_and_line(tmp_path):
    bad = write_table(tmp_path / "bad.csv", [("Fe", "Co", "Solidstate", "Q1Yes", "Q2High"),
                                             ("Fe", "Ni", "Solidstate", "Q1Maybe", "Q2High")])
    with pytest.raises(ExpertTableError, match=r"bad\.csv, line 3: answers 'Maybe'"):
        read_expert_table(bad)
    with pytest.raises(ExpertTableError, match="file not found"):
        read_expert_table(tmp_path / "missing.csv")


def test_fit_reliability_rewards_informative_personas():
    outcome = np.array([1, 1, 0, 0, 1, 0], dtype=float)
    right = np.where(outcome == 1, 0.9, 0.1)
    r_right, err = fit_reliability(right, outcome)
    assert r_right == 1.0 and err == pytest.approx(0.01)
    r_wrong, _ = fit_reliability(1 - right, outcome)
    assert r_wrong == 0.0
    assert fit_reliability(np.zeros(0), np.zeros(0))[0] == 0.0


def synthetic_table(tmp_path):
    """'Good' says Mn~Ni substitutable and Al~Ni not; 'Bad' says the opposite."""
    return write_table(tmp_path / "experts.csv", [
        ("Mn", "Ni", "Good", "Q1Yes", "Q2High"), ("Al", "Ni", "Good", "Q1No", "Q2No"),
        ("Mn", "Ni", "Bad", "Q1No", "Q2No"), ("Al", "Ni", "Bad", "Q1Yes", "Q2High"),
    ])


def synthetic_training():
    comps, phases = [], []
    for base in [("Co", "Cr", "Fe"), ("Cu", "Cr", "Fe"), ("Co", "V", "Fe")]:
        comps += [equi(*base, "Ni"), equi(*base, "Mn"), equi(*base, "Al")]
        phases += ["FCC", "FCC", "BCC"]
    return comps, phases


def test_persona_reliability_is_fitted_on_training_swap_pairs(tmp_path):
    source = ExpertKnowledgeSource(path=synthetic_table(tmp_path)).fit(*synthetic_training())
    assert source.reliabilities_["Good"] > 0.5
    assert source.reliabilities_["Bad"] == 0.0
    assert source.belief("Ni", "Mn") > 0 and source.disbelief("Al", "Ni") > 0
    m = source.masses([equi("Cu", "V", "Fe", "Mn")])[0]
    assert m[OMEGA] == 1.0  # Cu-V-Fe + one element was never made: no analogue
    m = source.masses([{"Co": 0.3, "Cr": 0.2, "Fe": 0.2, "Mn": 0.3}])[0]
    assert m[OMEGA] == 1.0  # fractions 5 at.% away from every analogue
    fixed = ExpertKnowledgeSource(path=synthetic_table(tmp_path),
                                  reliabilities={"Good": 1.0, "Bad": 0.0})
    fixed.fit(*synthetic_training())
    assert fixed.pair_masses_[("Mn", "Ni")][SUBST] == pytest.approx(0.8 / 2)  # averaged personas


def test_query_gets_phase_of_expert_substitutable_analogue(tmp_path):
    comps = [equi("Co", "Cr", "Fe", "Ni"), equi("Co", "Cr", "Fe", "Mn"), equi("Nb", "Ta", "Ni")]
    source = ExpertKnowledgeSource(path=synthetic_table(tmp_path), persona_rule="dempster",
                                   reliabilities={"Good": 0.9, "Bad": 0.1})
    source.fit(comps, ["FCC", "FCC", "BCC"])
    m = source.masses([equi("Nb", "Ta", "Mn")])[0]
    assert m[BCC] == pytest.approx(source.strength * source.belief("Mn", "Ni"))
    assert m[FCC] == 0
    explained = source.explain(equi("Nb", "Ta", "Mn"))
    assert explained["analogues"][0]["substitution"] == "Ni->Mn"


def test_elements_outside_the_table_are_vacuous_and_said(tmp_path):
    source = ExpertKnowledgeSource().fit([equi("La", "Ni"), equi("La", "Co")], ["MP", "MP"])
    assert source.masses([equi("La", "Ce")])[0, OMEGA] == 1.0
    explained = source.explain(equi("La", "Ce"))
    assert explained["elements_outside_table"] == ["Ce", "La"]
    assert "not in the expert table" in explained["note"]


def test_bad_settings_are_named(tmp_path):
    comps, phases = synthetic_training()
    with pytest.raises(ValueError, match="unknown persona"):
        ExpertKnowledgeSource(path=synthetic_table(tmp_path),
                              reliabilities={"Nobody": 1.0}).fit(comps, phases)
    with pytest.raises(ValueError, match="persona_rule 'max'"):
        ExpertKnowledgeSource(persona_rule="max").fit(comps, phases)
