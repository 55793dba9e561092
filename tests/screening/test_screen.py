"""Candidate enumeration, ranking and the screening result."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matflow.screening.data import load_phase_labels
from matflow.screening.fusion import EvidenceFusion
from matflow.screening.screen import (
    ScreeningInputError,
    enumerate_candidates,
    screen,
)
from matflow.screening.sources.classifier import DataSource
from matflow.screening.sources.rules import RulesSource

CANTOR = ["Co", "Cr", "Fe", "Mn", "Ni"]


def _bounded_count(k: int, units: int, low: int, high: int) -> int:
    """Solutions of a_1 + ... + a_k = units with low <= a_i <= high (inclusion-exclusion)."""
    total, width = units - k * low, high - low + 1
    return sum((-1) ** j * comb(k, j) * comb(total - j * width + k - 1, k - 1)
               for j in range(k + 1) if total - j * width >= 0)


def test_enumeration_counts_match_combinatorics() -> None:
    # 5 % steps within 5-35 at.%: 149 quaternary and 1,451 quinary grid points per subset
    assert _bounded_count(4, 20, 1, 7) == 149 and _bounded_count(5, 20, 1, 7) == 1451
    cands = enumerate_candidates(CANTOR, components=(4, 5))
    assert len(cands) == 5 * 149 + 1 * 1451  # equimolar 25 % and 20 % lie on the grid
    # 10 % steps within 10-40 at.%: 44 grid points per quaternary, plus the off-grid equimolar one
    four = enumerate_candidates(["Co", "Cr", "Fe", "Ni"], components=(4,), step=0.1,
                                bounds=(0.1, 0.4))
    assert len(four) == _bounded_count(4, 10, 1, 4) + 1 == 45
    assert len(enumerate_candidates(["Co", "Cr", "Fe", "Ni"], components=(4,), step=0.1,
                                    bounds=(0.1, 0.4), equimolar=False)) == 44


def test_enumeration_respects_bounds_and_sums() -> None:
    cands = enumerate_candidates(CANTOR + ["Al"], components=(4, 6), step=0.05, bounds=(0.1, 0.3))
    assert {len(c) for c in cands} == {4, 6}
    for comp in cands:
        values = np.array(list(comp.values()))
        assert abs(values.sum() - 1) < 1e-9
        assert values.min() >= 0.1 - 1e-9 and values.max() <= 0.3 + 1e-9
    keys = {tuple(sorted(c.items())) for c in cands}
    assert len(keys) == len(cands)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"elements": ["Co", "Cr", "Xx", "Ni"]}, "unknown element 'Xx'"),
        ({"elements": "CoCrFeNi"}, "give a list of symbols"),
        ({"elements": ["Co", "Co", "Fe", "Ni", "Cr"]}, "more than once"),
        ({"elements": ["Co", "Cr", "Fe"]}, "more than the 3 elements"),
        ({"elements": CANTOR, "components": (1,)}, "integer >= 2"),
        ({"elements": CANTOR, "bounds": (0.3, 0.35)}, "no 4-component alloy"),
        ({"elements": CANTOR, "bounds": (0.05, 0.2), "components": (4,)}, "no 4-component"),
        ({"elements": CANTOR, "bounds": (0.4, 0.2)}, "low <= high"),
        ({"elements": CANTOR, "step": 0.03}, "must divide 1"),
        ({"elements": CANTOR, "step": float("nan")}, "step nan"),
        ({"elements": CANTOR, "step": 0}, "(0, 0.5]"),
    ],
)
def test_bad_screening_input_is_named(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ScreeningInputError) as info:
        enumerate_candidates(**kwargs)
    assert fragment in str(info.value)


@pytest.fixture(scope="module")
def small_fusion() -> EvidenceFusion:
    labels = load_phase_labels()
    cantor_like = labels["element_set"].isin(["Co-Cr-Fe-Ni", "Co-Cr-Fe-Mn-Ni", "Al-Co-Cr-Fe-Ni"])
    sample = pd.concat(
        [labels[cantor_like].head(60), labels[~cantor_like].sample(120, random_state=0)]
    )
    return EvidenceFusion(
        [RulesSource(), DataSource(max_iter=20)], reliabilities={"rules": 0.7, "data": 0.9}
    ).fit(list(sample["composition"]), list(sample["phase"]))


def test_screen_ranks_explains_and_marks_known_alloys(small_fusion, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    result = screen(["Co", "Cr", "Fe", "Ni", "Mn"], components=(4,), step=0.1, bounds=(0.1, 0.4),
                    fusion=small_fusion, progress=lambda d, t: calls.append((d, t)),
                    chunk_size=100, explain_top=5)
    table = result.table
    assert len(table) == 5 * 45
    assert calls[-1] == (225, 225) and len(calls) == 3
    assert list(table["rank"]) == list(range(1, 226))
    bel = table["bel_SS"].to_numpy()
    assert (np.diff(bel) <= 1e-12).all()
    ties = np.isclose(np.diff(bel), 0)
    assert (np.diff(table["gap_SS"].to_numpy())[ties] >= -1e-12).all()
    assert np.allclose(table["gap_SS"], table["pl_SS"] - table["bel_SS"])
    assert ((table["bel_SS"] <= table["p_FCC"] + table["p_BCC"] + table["p_HCP"] + 1e-9)
            & (table["p_FCC"] + table["p_BCC"] + table["p_HCP"] <= table["pl_SS"] + 1e-9)).all()
    for column in ("src_rules_bel_SS", "src_data_p_MP", "conflict", "delta_pct", "vec", "reasons"):
        assert column in table.columns
    cantor4 = table[table["composition"] == "Co0.2500Cr0.2500Fe0.2500Ni0.2500"].iloc[0]
    assert cantor4["known_phase"] == "FCC" and cantor4["reference"] != ""
    assert (table["known_phase"] == "").sum() > 200
    assert table["reasons"].iloc[0].startswith("rules:") and "data:" in table["reasons"].iloc[0]
    assert "P(SS)=" in table["reasons"].iloc[-1]
    assert result.settings["n_candidates"] == 225
    assert result.settings["discount_rates"] == pytest.approx({"rules": 0.3, "data": 0.1})
    assert any(f["sha256"] for f in result.provenance["data_files"])
    document = json.loads(result.to_json(tmp_path / "screen.json").read_text())
    assert len(document["candidates"]) == 225
    assert pd.read_csv(result.write_csv(tmp_path / "screen.csv")).shape[0] == 225


def test_screen_refuses_unfitted_fusion() -> None:
    with pytest.raises(ScreeningInputError, match="not fitted"):
        screen(CANTOR, fusion=EvidenceFusion([RulesSource()]))


def test_cached_fusion_rates_are_keyed_by_the_sources_code(monkeypatch):
    """Rates cached for one version of a source's code must not be reused after it changes."""
    import matflow.screening.screen as screen_module
    from matflow.screening.sources.rules import RulesSource

    sources = [RulesSource()]
    before = screen_module._fusion_cache_key(sources, "abc", "dempster")
    assert before == screen_module._fusion_cache_key(sources, "abc", "dempster")
    monkeypatch.setattr(screen_module, "_code_sha", lambda cls: "edited")
    assert screen_module._fusion_cache_key(sources, "abc", "dempster") != before
