"""A one-page report of a chemical short-range-order (SRO) simulation, from a plain dict.

The Warren–Cowley parameter of shell s for the pair i–j is α_ij(s) = 1 − p_ij(s) / c_j, with
p_ij(s) the probability that a neighbour of an i atom in shell s is a j atom and c_j the mole
fraction of j (Cowley, Phys. Rev. 77, 669 (1950)). α < 0 means i–j pairs are favoured, α > 0 that
they are avoided; a random solution has α = 0. A z-score tells whether an α is larger than the
scatter of a random arrangement of the same cell, which a reader cannot judge from α alone.

The simulation dict (all keys but ``composition`` and ``alpha`` optional)::

    {
      "title": "CoCrNi Monte Carlo",
      "composition": {"Co": 1/3, "Cr": 1/3, "Ni": 1/3},        # or a formula string
      "temperatures_K": [500, 1000],                           # or "temperature_K": 800
      "alpha": [{"temperature_K": 500, "shell": 1, "pair": "Co-Cr", "alpha": -0.12, "z": -6.1},
                ...],                                          # or {shell: {pair: alpha}}
      "z_scores": {shell: {pair: z}},                          # with the nested form of "alpha"
      "energy_model": {"name": "pair model", "rmse_meV_per_atom": 3.1, "r2": 0.98},
      "provenance": {...}, "notes": ["..."],
    }

Metric keys end with their unit (``_meV_per_atom``, ``_eV``, ``_K``, ``_pct``, ``_s``); a key
with no recognised unit is shown as "unit not stated" rather than as a bare number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import matflow
from matflow.outputs import check_output_file
from matflow.reports.html import (
    ReportInputError,
    dataframe_to_html,
    external_resources,
    flatten_mapping,
    format_number,
    image_file_to_html,
    render_template,
    utc_now,
    write_html,
)

__all__ = ["render_sro_report", "unit_of"]

UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_meV_per_atom", "meV/atom"),
    ("_eV_per_atom", "eV/atom"),
    ("_meV", "meV"),
    ("_eV", "eV"),
    ("_K", "K"),
    ("_pct", "%"),
    ("_s", "s"),
    ("_A", "Å"),
)
DIMENSIONLESS = {"r2", "r_squared", "spearman", "pearson", "acceptance", "acceptance_rate"}
Z_NOTABLE = 3.0
"""|z| above 3 happens by chance in about 0.3 % of random arrangements (normal approximation)."""


def unit_of(key: str) -> tuple[str, str]:
    """(label, unit) of a metric key named with its unit suffix, e.g. 'rmse_meV_per_atom'."""
    for suffix, unit in UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], unit
    if key.lower() in DIMENSIONLESS or key.lower().startswith(("n_", "num_")):
        return key, "–"
    return key, "unit not stated"


def _composition_text(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping) and value:
        parts = []
        for element, fraction in value.items():
            try:
                x = float(fraction)
            except (TypeError, ValueError) as error:
                raise ReportInputError("simulation['composition']", f"{element}: {fraction!r} is not a number") from error
            if not math.isfinite(x) or x < 0:
                raise ReportInputError("simulation['composition']", f"{element}: {fraction!r} is not a fraction >= 0")
            parts.append(f"{element} {x:.4f}")
        return ", ".join(parts) + " (mole fraction)"
    raise ReportInputError("simulation['composition']", "must be a formula string or a non-empty dict")


def _alpha_frame(simulation: Mapping[str, Any]) -> pd.DataFrame:
    alpha = simulation["alpha"]
    if isinstance(alpha, Mapping):
        z_scores = simulation.get("z_scores") or {}
        rows = []
        for shell, pairs in alpha.items():
            if not isinstance(pairs, Mapping):
                raise ReportInputError(f"simulation['alpha'][{shell!r}]", "expected a dict pair -> alpha")
            for pair, value in pairs.items():
                z = (z_scores.get(shell) or {}).get(pair) if isinstance(z_scores, Mapping) else None
                rows.append({"shell": shell, "pair": pair, "alpha": value, "z": z})
    elif isinstance(alpha, Sequence) and not isinstance(alpha, str):
        rows = [dict(row) for row in alpha]
    else:
        raise ReportInputError("simulation['alpha']", "expected a list of rows or a dict shell -> pair -> alpha")
    if not rows:
        raise ReportInputError("simulation['alpha']", "is empty")
    frame = pd.DataFrame(rows)
    if "z_score" in frame and "z" not in frame:
        frame = frame.rename(columns={"z_score": "z"})
    for column in ("shell", "pair", "alpha"):
        if column not in frame:
            raise ReportInputError("simulation['alpha']", f"rows need a {column!r} value")
    values = pd.to_numeric(frame["alpha"], errors="coerce")
    bad = values.isna() | ~values.between(-1e6, 1e6)
    if bad.any():
        raise ReportInputError("simulation['alpha']", f"row {int(bad.to_numpy().argmax())} has a non-finite alpha")
    frame["alpha"] = values.astype(float)
    if "z" in frame:
        frame["z"] = pd.to_numeric(frame["z"], errors="coerce")
    columns = [c for c in ("temperature_K", "shell", "pair", "alpha", "z") if c in frame]
    frame = frame[columns]
    sort = [c for c in ("temperature_K", "shell", "pair") if c in frame]
    return frame.sort_values(sort, kind="stable").reset_index(drop=True)


def render_sro_report(
    simulation_dict: Mapping[str, Any],
    html_path: str | os.PathLike,
    *,
    figures: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a self-contained HTML page for one SRO simulation; figures are embedded, not linked."""
    if not isinstance(simulation_dict, Mapping):
        raise ReportInputError("simulation_dict", f"expected a dict, got {type(simulation_dict).__name__}")
    for key in ("composition", "alpha"):
        if key not in simulation_dict:
            raise ReportInputError("simulation_dict", f"missing key {key!r}")
    html_path = check_output_file(html_path)
    figure_html = [(Path(f).name, image_file_to_html(f, alt=Path(f).stem)) for f in figures]

    temperatures = simulation_dict.get("temperatures_K", simulation_dict.get("temperature_K"))
    if temperatures is not None and not isinstance(temperatures, Sequence):
        temperatures = [temperatures]
    alpha = _alpha_frame(simulation_dict)
    labels = {"temperature_K": "T", "alpha": "α", "z": "z"}
    display = alpha.rename(columns=labels)
    if "T" in display:  # temperatures print as plain numbers, like the heading's list
        display["T"] = pd.to_numeric(display["T"], errors="coerce").astype(float)
    if "shell" in display:
        display["shell"] = display["shell"].astype(str)
    notable = set()
    if "z" in alpha:
        for i, z in enumerate(alpha["z"]):
            if pd.notna(z) and abs(float(z)) > Z_NOTABLE:
                notable.add(i)
    alpha_table = dataframe_to_html(
        display,
        units={"T": "K", "α": "–", "z": "–"},
        digits={"T": 0, "α": 4, "z": 2},
        row_classes=["highlight" if i in notable else "" for i in range(len(display))],
        caption="Warren–Cowley parameters per shell and pair",
    )

    metrics = simulation_dict.get("energy_model") or {}
    if not isinstance(metrics, Mapping):
        raise ReportInputError("simulation['energy_model']", "expected a dict of named metrics")
    metric_rows = []
    for key, value in metrics.items():
        label, unit = unit_of(str(key))
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        metric_rows.append((label, format_number(value, 4), unit if is_number else ""))

    temps_text = (
        ", ".join(format_number(float(t), 0) for t in temperatures) + " K" if temperatures else "not stated"
    )
    context = {
        "title": str(simulation_dict.get("title") or "Chemical short-range order"),
        "subtitle": f"Warren–Cowley analysis, {len(alpha)} shell–pair values",
        "matflow_version": matflow.__version__,
        "generated": utc_now(),
        "composition": _composition_text(simulation_dict["composition"]),
        "temperatures": temps_text,
        "alpha_table": alpha_table,
        "n_notable": len(notable),
        "has_z": "z" in alpha,
        "z_notable": Z_NOTABLE,
        "metric_rows": metric_rows,
        "figures": figure_html,
        "notes": [str(n) for n in simulation_dict.get("notes", [])],
        "provenance_rows": flatten_mapping(simulation_dict.get("provenance") or {}),
    }
    html = render_template("sro.html", **context)
    leaks = external_resources(html)
    if leaks:
        raise RuntimeError(f"report would load external resources: {leaks[:3]}")
    return write_html(html, html_path)

