"""Alloy compositions: one parser and one key, so candidates, data labels and reports join exactly.

A composition is ``dict[str, float]``: element symbol -> mole fraction, fractions summing to 1. The
key format (sorted symbols, 4-decimal fractions) is the join key of the consolidated phase data
(``data/hea_phase_consolidated``), so a screened candidate finds its measured label by string match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from pymatgen.core.periodic_table import Element

Composition = dict[str, float]

SUM_TOLERANCE = 1e-3
"""How far explicit fractions may sum from 1 (the data's 4-decimal keys sum to 0.9999 or 1.0001)."""

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


class CompositionError(ValueError):
    """A composition that cannot be read or is not an alloy; the message names the input."""


def _check_symbol(symbol: str, source: object) -> str:
    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise CompositionError(f"composition {source!r}: unknown element {symbol!r}")
    return symbol


def _check_amount(symbol: str, amount: object, source: object) -> float:
    try:
        value = float(amount)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CompositionError(
            f"composition {source!r}: amount of {symbol} is {amount!r}, not a number"
        ) from None
    if not math.isfinite(value):
        raise CompositionError(f"composition {source!r}: amount of {symbol} is {value}, not finite")
    if value < 0:
        raise CompositionError(f"composition {source!r}: amount of {symbol} is negative ({value})")
    return value


def _parse_formula(text: str) -> dict[str, float]:
    """'Al0.5CoCrFeNi' -> raw amounts; a symbol without a number counts 1 (equimolar shorthand)."""
    compact = re.sub(r"\s+", "", text)
    if not compact:
        raise CompositionError(f"composition {text!r}: empty formula")
    amounts: dict[str, float] = {}
    position = 0
    for match in _TOKEN.finditer(compact):
        if match.start() != position:
            break
        symbol, number = match.group(1), match.group(2)
        _check_symbol(symbol, text)
        if symbol in amounts:
            raise CompositionError(f"composition {text!r}: element {symbol} appears twice")
        amounts[symbol] = _check_amount(symbol, number if number else 1.0, text)
        position = match.end()
    if position != len(compact):
        raise CompositionError(
            f"composition {text!r}: cannot read {compact[position:]!r} "
            "(expected element symbols with optional amounts, e.g. 'Al0.5CoCrFeNi')"
        )
    return amounts


def parse_composition(value: str | Mapping[str, float]) -> Composition:
    """Read a formula string or an element -> fraction mapping into normalised mole fractions.

    Strings give relative amounts ('CoCrFeMnNi', 'Al0.5CoCrFeNi', 'Co20Cr20Fe20Mn20Ni20') and are
    normalised. A mapping is taken as mole fractions already, so it must sum to 1 within
    ``SUM_TOLERANCE``: a dict that sums to 2 is more likely a mistake than an intent. Zero amounts
    are dropped; an alloy needs at least two elements.
    """
    if isinstance(value, str):
        amounts = _parse_formula(value)
        explicit = False
    elif isinstance(value, Mapping):
        amounts = {
            _check_symbol(symbol, dict(value)): _check_amount(symbol, amount, dict(value))
            for symbol, amount in value.items()
        }
        explicit = True
    else:
        raise CompositionError(
            f"composition {value!r}: expected a formula string or a dict element -> fraction, "
            f"got {type(value).__name__}"
        )
    present = {symbol: amount for symbol, amount in amounts.items() if amount > 0}
    if len(present) < 2:
        raise CompositionError(
            f"composition {value!r}: an alloy needs at least two elements with non-zero amount, "
            f"got {len(present)}"
        )
    total = math.fsum(present.values())
    if explicit and abs(total - 1.0) > SUM_TOLERANCE:
        raise CompositionError(
            f"composition {value!r}: mole fractions sum to {total:.6g}, not 1 "
            f"(tolerance {SUM_TOLERANCE})"
        )
    return {symbol: present[symbol] / total for symbol in sorted(present)}


def composition_key(composition: str | Mapping[str, float]) -> str:
    """Sorted symbols with 4-decimal fractions: 'Co0.2500Cr0.2500Fe0.2500Ni0.2500' (the data's key)."""
    comp = parse_composition(composition)
    return "".join(f"{symbol}{fraction:.4f}" for symbol, fraction in comp.items())


def element_set_key(composition: str | Mapping[str, float]) -> str:
    """Sorted symbols joined by '-': the group of a composition in leakage-free splits."""
    return "-".join(parse_composition(composition))


def parse_key(key: str) -> Composition:
    """Inverse of ``composition_key`` (renormalised, since 4 decimals need not sum to exactly 1)."""
    return parse_composition(key)
