"""Composition parsing and keys: the join between candidates, labels and reports."""

from __future__ import annotations

import math

import pytest

from matflow.screening.composition import (
    CompositionError,
    composition_key,
    element_set_key,
    parse_composition,
)


def test_equimolar_shorthand() -> None:
    comp = parse_composition("CoCrFeMnNi")
    assert list(comp) == ["Co", "Cr", "Fe", "Mn", "Ni"]
    assert all(math.isclose(v, 0.2) for v in comp.values())


def test_explicit_and_relative_amounts_agree() -> None:
    a = parse_composition("Co0.2Cr0.2Fe0.2Mn0.2Ni0.2")
    b = parse_composition("Co20Cr20Fe20Mn20Ni20")
    assert composition_key(a) == composition_key(b) == "Co0.2000Cr0.2000Fe0.2000Mn0.2000Ni0.2000"


def test_fractional_prefix() -> None:
    comp = parse_composition("Al0.5CoCrFeNi")
    assert math.isclose(comp["Al"], 0.5 / 4.5)
    assert math.isclose(sum(comp.values()), 1.0)


def test_dict_input_and_keys() -> None:
    comp = parse_composition({"Ni": 0.25, "Co": 0.25, "Fe": 0.25, "Cr": 0.25})
    assert composition_key(comp) == "Co0.2500Cr0.2500Fe0.2500Ni0.2500"
    assert element_set_key(comp) == "Co-Cr-Fe-Ni"
    # the data's 4-decimal keys sum to 0.9999; they must still read
    assert math.isclose(sum(parse_composition("Co0.3333Cr0.3333Ni0.3333").values()), 1.0)


def test_zero_amount_is_dropped() -> None:
    assert list(parse_composition({"Co": 0.5, "Ni": 0.5, "Fe": 0.0})) == ["Co", "Ni"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("CoCrXxNi", "unknown element 'Xx'"),
        ({"Co": 0.5, "Qq": 0.5}, "unknown element 'Qq'"),
        ({"Co": 0.5, "Ni": 0.6}, "sum to 1.1"),
        ("Fe", "at least two elements"),
        ({"Fe": 1.0}, "at least two elements"),
        ({"Co": -0.2, "Ni": 1.2}, "negative"),
        ({"Co": float("nan"), "Ni": 0.5}, "not finite"),
        ({"Co": float("inf"), "Ni": 0.5}, "not finite"),
        ({"Co": "abc", "Ni": 0.5}, "not a number"),
        ("Co-Cr-Fe", "cannot read"),
        ("CoCo", "appears twice"),
        ("", "empty"),
        (42, "expected a formula string"),
    ],
)
def test_bad_input_names_input_and_reason(value: object, fragment: str) -> None:
    with pytest.raises(CompositionError, match="composition") as info:
        parse_composition(value)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
