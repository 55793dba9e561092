"""Classical Hume-Rothery-type descriptors of multi-component alloys, vectorised over compositions.

These are the quantities the empirical solid-solution criteria are written in (see
``matflow.screening.sources.rules``):

- δ (%), atomic-size mismatch, 100·sqrt(Σ c_i (1 − r_i/r̄)²) with r̄ = Σ c_i r_i
  (Zhang, Zhou, Lin, Chen, Liaw, Adv. Eng. Mater. 10, 534 (2008)).
- ΔH_mix (kJ/mol) = Σ_{i<j} 4 ΔH_ij c_i c_j, with ΔH_ij the Miedema-model enthalpy of mixing of
  the equiatomic binary liquid tabulated by Takeuchi & Inoue, Mater. Trans. 46, 2817 (2005).
  The table is read from matminer (``matminer.utils.data.MixingEnthalpy``, file
  ``MiedemaLiquidDeltaHf.tsv``): values are in kJ/mol with the usual sign (negative = attraction,
  e.g. Al–Ni −22, Co–Cr −4, Cu–Fe +13), 2,628 pairs over 75 elements. matminer's default
  ``impute_nan=True`` silently replaces a missing pair by the table mean; we load it with
  ``impute_nan=False`` instead, so a missing pair gives NaN for ΔH_mix and Ω and is named in the
  ``missing_pairs`` column (or raises ``MissingDescriptorError`` with ``strict=True``).
- ΔS_mix (J/mol/K) = −R Σ c_i ln c_i (ideal configurational entropy).
- T_m (K) = Σ c_i T_m,i, elemental melting points from pymatgen.
- Ω = T_m ΔS_mix / |ΔH_mix| (Yang & Zhang, Mater. Chem. Phys. 132, 233 (2012)); +inf when
  ΔH_mix = 0.
- VEC = Σ c_i VEC_i, VEC_i counting d electrons (the group number for groups 1–12, group − 10
  for groups 13–18; lanthanides and actinides 3), as in Guo, Ng, Lu, Liu, J. Appl. Phys. 109,
  103505 (2011).

Atomic radii: two consistent sets, chosen by ``radii``:

- ``"miracle2010"`` (default): the radii of Miracle et al., Int. Mater. Rev. 55, 218 (2010), as
  shipped in matminer's Magpie tables ("MiracleRadius"); they cover every element of the bundled
  phase data. CoCrFeMnNi gives δ = 2.25 %, CoCrFeNi 1.63 %.
- ``"metallic12"``: the 12-coordinate metallic (Goldschmidt) radii used in most HEA
  phase-formation tables, e.g. Guo & Liu, Prog. Nat. Sci. Mater. Int. 21, 433 (2011), with
  Mn = 1.350 Å; only the common HEA metals. They reproduce the δ = 3.27 % usually quoted for
  CoCrFeMnNi (and 0.30 % for CoCrFeNi). For these alloys the sets differ mostly in Mn (1.350 vs
  1.32 Å) and Cr (1.249 vs 1.30 Å).

The δ ≤ 6.6 % threshold of Yang & Zhang (2012) was set with radii of the second kind. On the 6,596
labelled compositions of ``data/hea_phase_consolidated`` that both sets cover, δ ranks alloys
alike (Spearman 0.97), but the Miracle radii give smaller values: 97.9 % of those alloys pass
δ ≤ 6.6 % with them against 90.9 % with the 12-coordinate radii.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
import pandas as pd

GAS_CONSTANT = 8.314462618
"""R in J/(mol K) (CODATA 2018)."""

RADIUS_SETS: tuple[str, ...] = ("miracle2010", "metallic12")

DESCRIPTOR_COLUMNS: tuple[str, ...] = (
    "delta_pct",
    "dHmix_kJmol",
    "dSmix_JmolK",
    "Tm_K",
    "omega",
    "vec",
)

METALLIC12_RADII_ANGSTROM: dict[str, float] = {
    "Ag": 1.445, "Al": 1.432, "Au": 1.442, "Co": 1.251, "Cr": 1.249, "Cu": 1.278, "Fe": 1.241,
    "Hf": 1.578, "Ir": 1.357, "Mn": 1.350, "Mo": 1.363, "Nb": 1.429, "Ni": 1.246, "Pd": 1.376,
    "Pt": 1.387, "Re": 1.375, "Rh": 1.345, "Ru": 1.339, "Ta": 1.430, "Ti": 1.462, "V": 1.316,
    "W": 1.367, "Zr": 1.603,
}  # fmt: skip
"""12-coordinate metallic radii (Å) of the common HEA metals, as tabulated by Guo & Liu (2011)."""


class DescriptorError(ValueError):
    """A composition the descriptors cannot be computed for (unknown element, bad fractions)."""


class MissingDescriptorError(DescriptorError):
    """A descriptor needs data that the cited tables lack (e.g. a binary mixing enthalpy)."""


@cache
def _mixing_table() -> dict[tuple[str, str], float]:
    from matminer.utils.data import MixingEnthalpy

    return dict(MixingEnthalpy(impute_nan=False).mixing_data)


@cache
def _miracle_radii() -> dict[str, float]:
    from matminer.utils.data import MagpieData

    table = MagpieData(impute_nan=False).all_elemental_props["MiracleRadius"]
    return {el: float(r) / 100.0 for el, r in table.items() if np.isfinite(r)}  # pm -> Å


@cache
def _element_data(symbol: str, radii: str) -> tuple[float, float, float]:
    """(radius Å, melting point K, VEC) of one element; DescriptorError if any is unknown."""
    from pymatgen.core import Element

    try:
        el = Element(symbol)
    except ValueError:
        raise DescriptorError(f"composition: {symbol!r} is not a chemical element") from None
    table = _miracle_radii() if radii == "miracle2010" else METALLIC12_RADII_ANGSTROM
    if symbol not in table:
        raise DescriptorError(
            f"composition: no {radii!r} atomic radius for {symbol}; the set covers "
            f"{len(table)} elements (use radii='miracle2010' for the widest coverage)"
        )
    t_melt = el.melting_point
    if t_melt is None:
        raise DescriptorError(f"composition: pymatgen has no melting point for {symbol}")
    group = el.group
    if el.is_lanthanoid or el.is_actinoid:
        vec = 3.0
    elif group <= 12:
        vec = float(group)
    else:
        vec = float(group - 10)
    return table[symbol], float(t_melt), vec


def _check_radii(radii: str) -> None:
    if radii not in RADIUS_SETS:
        raise ValueError(f"radii {radii!r} is unknown; expected one of {', '.join(RADIUS_SETS)}")


def _fraction_matrix(
    compositions: Sequence[Mapping[str, float]],
) -> tuple[list[str], np.ndarray]:
    """Elements (sorted) and the (n, n_elements) matrix of mole fractions, checked."""
    elements = sorted({el for comp in compositions for el in comp})
    col = {el: i for i, el in enumerate(elements)}
    frac = np.zeros((len(compositions), len(elements)))
    for row, comp in enumerate(compositions):
        if not isinstance(comp, Mapping) or not comp:
            raise DescriptorError(
                f"composition {row}: {comp!r} is not a non-empty dict element -> mole fraction"
            )
        for el, c in comp.items():
            value = float(c)
            if not np.isfinite(value) or value < 0:
                raise DescriptorError(f"composition {row}: fraction of {el} is {c!r}")
            frac[row, col[el]] = value
        total = frac[row].sum()
        if abs(total - 1.0) > 1e-6:
            raise DescriptorError(
                f"composition {row}: mole fractions sum to {total:.6g}, not 1 ({comp!r})"
            )
    return elements, frac


def describe_many(
    compositions: Sequence[Mapping[str, float]],
    *,
    radii: str = "miracle2010",
    strict: bool = False,
) -> pd.DataFrame:
    """Descriptors of many compositions in one vectorised pass.

    Returns a DataFrame (one row per composition, same order) with the columns of
    ``DESCRIPTOR_COLUMNS`` plus ``missing_pairs`` ("" or e.g. "Li-Os"): pairs without a
    tabulated ΔH_ij leave ``dHmix_kJmol`` and ``omega`` NaN, or raise ``MissingDescriptorError``
    when ``strict``.
    """
    _check_radii(radii)
    compositions = list(compositions)
    if not compositions:
        return pd.DataFrame(columns=[*DESCRIPTOR_COLUMNS, "missing_pairs"])
    elements, frac = _fraction_matrix(compositions)
    data = np.array([_element_data(el, radii) for el in elements]).reshape(-1, 3)
    radius, t_melt, vec_el = data[:, 0], data[:, 1], data[:, 2]

    table = _mixing_table()
    n_el = len(elements)
    h = np.zeros((n_el, n_el))
    for i in range(n_el):
        for j in range(i + 1, n_el):
            h[i, j] = h[j, i] = table.get(tuple(sorted((elements[i], elements[j]))), np.nan)
    missing = np.isnan(h)
    present = frac > 0

    r_bar = frac @ radius
    delta = 100.0 * np.sqrt(np.sum(frac * (1.0 - radius[None, :] / r_bar[:, None]) ** 2, axis=1))
    # Σ_{i<j} 4 H_ij c_i c_j = 2 cᵀHc with a zero diagonal
    d_h = 2.0 * np.einsum("ni,ij,nj->n", frac, np.nan_to_num(h), frac)
    with np.errstate(divide="ignore"):
        d_s = -GAS_CONSTANT * np.sum(np.where(present, frac * np.log(np.where(present, frac, 1)),
                                              0.0), axis=1)
    tm = frac @ t_melt
    vec = frac @ vec_el

    missing_text = []
    any_missing = np.einsum("ni,ij,nj->n", present.astype(float), missing.astype(float),
                            present.astype(float)) > 0
    for row in np.flatnonzero(any_missing):
        idx = np.flatnonzero(present[row])
        pairs = [f"{elements[a]}-{elements[b]}" for k, a in enumerate(idx) for b in idx[k + 1:]
                 if missing[a, b]]
        if strict:
            raise MissingDescriptorError(
                f"composition {row}: no Takeuchi–Inoue mixing enthalpy for {', '.join(pairs)}"
            )
        missing_text.append((row, ";".join(pairs)))
    d_h[any_missing] = np.nan

    with np.errstate(divide="ignore", invalid="ignore"):
        omega = np.where(d_h == 0.0, np.inf, tm * d_s / (1000.0 * np.abs(d_h)))
    out = pd.DataFrame(
        {
            "delta_pct": delta,
            "dHmix_kJmol": d_h,
            "dSmix_JmolK": d_s,
            "Tm_K": tm,
            "omega": omega,
            "vec": vec,
            "missing_pairs": "",
        }
    )
    for row, text in missing_text:
        out.at[row, "missing_pairs"] = text
    return out


def describe(
    composition: Mapping[str, float], *, radii: str = "miracle2010", strict: bool = False
) -> dict[str, float | str]:
    """Descriptors of one composition (see ``describe_many``) as a plain dict."""
    return describe_many([composition], radii=radii, strict=strict).iloc[0].to_dict()
