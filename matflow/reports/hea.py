"""The HEA screening report: a ranked list of candidate alloys with its evidence laid open.

Lab teams choose which alloys to melt from this page, so besides the ranking it shows what each
evidence source said, where the sources contradict each other (Dempster–Shafer conflict K), how
wide the belief–plausibility interval is, the classical descriptors with units, which candidates
are already known experimentally, how well the method did in validation, and every version and
setting needed to reproduce it. The evidence-fusion approach follows Ha et al., "Synergistic
fusion of multi-source knowledge via evidence theory for high-entropy alloy discovery",
arXiv:2502.14631 (2025).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

import matflow
from matflow.outputs import check_output_file
from matflow.provenance import installed_versions
from matflow.reports.html import (
    ReportInputError,
    dataframe_to_html,
    external_resources,
    figure_to_svg,
    flatten_mapping,
    render_template,
    to_pdf,
    utc_now,
    write_html,
)
from matflow.screening.phases import PHASES, phase_mask

__all__ = ["REQUIRED_COLUMNS", "render_screening_report", "source_names", "source_stances"]

PHASE_NAMES = PHASES
REQUIRED_COLUMNS: tuple[str, ...] = (
    "rank", "composition", "elements", "n_components",
    "bel_SS", "pl_SS", "gap_SS",
    "bel_FCC", "pl_FCC", "bel_BCC", "pl_BCC", "bel_HCP", "pl_HCP", "bel_MP", "pl_MP",
    "p_FCC", "p_BCC", "p_HCP", "p_MP", "predicted", "conflict",
    "delta_pct", "dHmix_kJmol", "dSmix_JmolK", "omega", "vec",
    "known_phase", "reference", "reasons",
)  # fmt: skip
"""Columns ``result.table`` must have (per-source ``src_<name>_*`` columns are optional)."""

SOURCE_SUFFIXES = ("bel_SS", "pl_SS", "p_FCC", "p_BCC", "p_HCP", "p_MP")
MASS = "0–1"
"""Unit text for masses, beliefs, plausibilities and probabilities: dimensionless, in [0, 1]."""

METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("accuracy", "accuracy", MASS, True),
    ("macro_f1", "macro-F1", MASS, True),
    ("roc_auc", "ROC AUC", MASS, True),
    ("brier", "Brier score", f"{MASS}, lower is better", False),
    ("n", "n", "alloys", True),
)
"""(key, label, unit, higher-is-better) of each validation metric."""

TASK_LABELS = {
    "single_phase": "single-phase solid solution vs multi-phase",
    "fcc_vs_bcc": "FCC vs BCC among single-phase alloys",
}
SPLIT_LABELS = {"grouped": "grouped cross-validation", "loeo": "leave one element out"}
PHASE_MARKERS = {"FCC": ("s", "#d62728"), "BCC": ("^", "#1f77b4"), "HCP": ("D", "#2ca02c"),
                 "MP": ("X", "#7f7f7f")}  # fmt: skip
SUPPORT_THRESHOLD = 0.5
"""A source is counted 'for' SS when Bel(SS) > 0.5 and 'against' when Pl(SS) < 0.5: then even
the end of its interval least favourable to that side still leans that way."""


# --------------------------------------------------------------------------- input checks


def _check_result(result: Any) -> tuple[pd.DataFrame, dict, dict, dict | None]:
    for attribute in ("table", "settings", "provenance", "validation"):
        if not hasattr(result, attribute):
            raise ReportInputError("result", f"has no attribute {attribute!r}")
    table = result.table
    if not isinstance(table, pd.DataFrame):
        raise ReportInputError("result.table", f"expected a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ReportInputError("result.table", f"missing columns {', '.join(missing)}")
    if table.empty:
        raise ReportInputError("result.table", "has no candidates to report")
    numeric = [c for c in REQUIRED_COLUMNS if c.startswith(("bel_", "pl_", "p_"))] + ["conflict"]
    for column in numeric:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < -1e-9) | (values > 1 + 1e-9)
        if bad.any():
            raise ReportInputError(
                f"result.table[{column!r}]",
                f"{int(bad.sum())} value(s) not a number in [0, 1] (first at row {int(np.argmax(bad))})",
            )
    order_bad = table["bel_SS"].to_numpy(float) > table["pl_SS"].to_numpy(float) + 1e-9
    if order_bad.any():
        raise ReportInputError(
            "result.table", f"bel_SS > pl_SS in {int(order_bad.sum())} row(s); belief cannot exceed plausibility"
        )
    settings = dict(result.settings or {})
    provenance = dict(result.provenance or {})
    validation = result.validation
    if validation is not None and not isinstance(validation, Mapping):
        raise ReportInputError("result.validation", f"expected a dict or None, got {type(validation).__name__}")
    return table, settings, provenance, (dict(validation) if validation is not None else None)


def source_names(table: pd.DataFrame) -> list[str]:
    """Evidence sources present in the table, from their ``src_<name>_bel_SS`` columns."""
    names = []
    for column in table.columns:
        column = str(column)
        if column.startswith("src_") and column.endswith("_bel_SS"):
            name = column[len("src_"):-len("_bel_SS")]
            if f"src_{name}_pl_SS" in table.columns:
                names.append(name)
    return names


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def source_stances(row: Mapping[str, Any], sources: Sequence[str]) -> dict[str, list[str]]:
    """Which sources speak for, against, or undecided on a single-phase solid solution.

    'for' means Bel(SS) > 0.5 (even the lower bound of its support leans to SS); 'against'
    means Pl(SS) < 0.5 (even the upper bound leans away); everything else is undecided.
    """
    stances: dict[str, list[str]] = {"for": [], "against": [], "undecided": []}
    for name in sources:
        bel = float(row[f"src_{name}_bel_SS"])
        pl = float(row[f"src_{name}_pl_SS"])
        if bel > SUPPORT_THRESHOLD:
            stances["for"].append(f"{name} (Bel {bel:.2f})")
        elif pl < SUPPORT_THRESHOLD:
            stances["against"].append(f"{name} (Pl {pl:.2f})")
        else:
            stances["undecided"].append(f"{name} ({bel:.2f}–{pl:.2f})")
    return stances


def _known_phase(value: Any) -> str:
    """The measured phase in the frame's spelling ('multi-phase' -> 'MP'); '' when unknown."""
    text = _text(value)
    if not text:
        return ""
    try:
        mask = phase_mask(text)
    except ValueError:
        return text  # shown as given rather than dropped: the reader can judge it
    return PHASES[mask.bit_length() - 1]


def _most_likely(row: Mapping[str, Any], prefix: str) -> str:
    keys = [f"{prefix}p_{phase}" for phase in PHASE_NAMES]
    if not all(key in row for key in keys):
        return ""
    values = [float(row[key]) for key in keys]
    return PHASE_NAMES[int(np.argmax(values))]


# --------------------------------------------------------------------------- figures


def _scatter_figure(table: pd.DataFrame, top: pd.DataFrame) -> Markup:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    dense = len(table) > 3000
    conflict = table["conflict"].to_numpy(float)
    points = ax.scatter(
        table["bel_SS"], table["pl_SS"], c=conflict, cmap="viridis", vmin=0.0,
        vmax=max(float(conflict.max()), 1e-6), s=14 if len(table) < 500 else 5, alpha=0.75,
        linewidths=0, rasterized=dense, zorder=2,
    )  # fmt: skip
    fig.colorbar(points, ax=ax, label="conflict K between sources (0–1)")
    known = table["known_phase"].map(_known_phase)
    for phase, (marker, colour) in PHASE_MARKERS.items():
        rows = table[known == phase]
        if len(rows):
            ax.scatter(rows["bel_SS"], rows["pl_SS"], marker=marker, s=60, facecolors="none",
                       edgecolors=colour, linewidths=1.4, zorder=3,
                       label=f"known, measured {phase} (n = {len(rows)})")  # fmt: skip
    ax.plot([0, 1], [0, 1], ls="--", color="#888888", lw=1, zorder=1, label="Bel = Pl (no ignorance)")
    for _, row in top.head(15).iterrows():
        ax.annotate(
            str(int(row["rank"])), (float(row["bel_SS"]), float(row["pl_SS"])),
            xytext=(4, -10), textcoords="offset points", fontsize=8, color="#222222", zorder=4,
        )  # fmt: skip
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Bel(SS): lower bound of support for a single-phase solid solution (0–1)")
    ax.set_ylabel("Pl(SS): upper bound of support (0–1)")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    return figure_to_svg(fig, title="Belief versus plausibility of a single-phase solid solution")


def _evidence_figure(top: pd.DataFrame, sources: Sequence[str]) -> Markup:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(name, f"src_{name}_bel_SS", f"src_{name}_pl_SS") for name in sources]
    series.append(("fused", "bel_SS", "pl_SS"))
    colours = plt.get_cmap("tab10").colors
    n_rows, n_series = len(top), len(series)
    height = 1.0 / (n_series + 1)
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.13 * n_rows * (n_series + 1)))
    for j, (name, bel_col, pl_col) in enumerate(series):
        colour = "#111111" if name == "fused" else colours[j % len(colours)]
        y = np.arange(n_rows) - 0.5 + (j + 1) * height
        bel = top[bel_col].to_numpy(float)
        pl = top[pl_col].to_numpy(float)
        ax.barh(y, pl, height=height * 0.9, color=colour, alpha=0.25, edgecolor=colour, lw=0.5)
        ax.barh(y, bel, height=height * 0.9, color=colour, alpha=0.95, label=name)
    ax.axvline(SUPPORT_THRESHOLD, color="#888888", ls=":", lw=1)
    labels = [f"#{int(r['rank'])} {r['composition']}" for _, r in top.iterrows()]
    ax.set_yticks(np.arange(n_rows), labels=labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mass on single-phase solid solution (0–1): dark bar = Bel(SS), pale bar = Pl(SS)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(n_series, 6), fontsize=8,
              frameon=False)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    return figure_to_svg(fig, title="Evidence for a single-phase solid solution per source")


# --------------------------------------------------------------------------- tables


def _doi_link(text: str) -> str | None:
    if text.lower().startswith(("http://", "https://")):
        return text
    if text.lower().startswith("doi:"):
        text = text[4:].strip()
    if text.startswith("10.") and "/" in text:
        return f"https://doi.org/{text}"
    return None


def _ranking_table(top: pd.DataFrame) -> Markup:
    frame = pd.DataFrame({
        "rank": top["rank"].astype(int),
        "composition": top["composition"].map(_text),
        "predicted": top["predicted"].map(_text),
        "Bel(SS)": top["bel_SS"].astype(float),
        "Pl(SS)": top["pl_SS"].astype(float),
        "gap Pl−Bel": top["gap_SS"].astype(float),
        "conflict K": top["conflict"].astype(float),
        **{f"p({phase})": top[f"p_{phase}"].astype(float) for phase in PHASE_NAMES},
    })  # fmt: skip
    units = {c: MASS for c in frame.columns if c.startswith(("Bel", "Pl", "gap", "conflict", "p("))}
    digits = dict.fromkeys(units, 3)
    return dataframe_to_html(frame, units=units, digits=digits,
                             caption="Ranking, interval and pignistic phase probabilities")


def _sro_table(top: pd.DataFrame) -> Markup | None:
    """First-shell SRO at the processing temperature of the candidates that have it, else None."""
    if "sro_strength" not in top or not top["sro_note"].astype(str).str.len().gt(0).any():
        return None
    rows = top[top["sro_note"].astype(str).str.len() > 0]
    frame = pd.DataFrame({
        "rank": rows["rank"].astype(int),
        "composition": rows["composition"].map(_text),
        "lattice": rows["sro_lattice"].map(_text),
        "T (K)": rows["sro_T_K"].astype(float),
        "SRO strength": rows["sro_strength"].astype(float),
        "strongest pair": rows["sro_pair"].map(_text),
        "α of that pair": rows["sro_alpha"].astype(float),
        "z vs random": rows["sro_z"].astype(float),
        "how / why not": rows["sro_note"].map(_text),
    })  # fmt: skip
    digits = {"T (K)": 0, "SRO strength": 3, "α of that pair": 3, "z vs random": 1}
    return dataframe_to_html(frame, digits=digits,
                             caption="Chemical short-range order at the processing temperature (first shell)")


def _descriptor_table(top: pd.DataFrame) -> Markup:
    frame = pd.DataFrame({
        "rank": top["rank"].astype(int),
        "composition": top["composition"].map(_text),
        "δ": top["delta_pct"].astype(float),
        "ΔH_mix": top["dHmix_kJmol"].astype(float),
        "ΔS_mix": top["dSmix_JmolK"].astype(float),
        "Ω": top["omega"].astype(float),
        "VEC": top["vec"].astype(float),
        "known phase": top["known_phase"].map(_known_phase),
        "reference": top["reference"].map(_text),
        "reasons": top["reasons"].map(_text),
    })  # fmt: skip
    units = {"δ": "%", "ΔH_mix": "kJ/mol", "ΔS_mix": "J/(mol·K)", "Ω": "–", "VEC": "electrons/atom"}
    digits = {"δ": 2, "ΔH_mix": 2, "ΔS_mix": 2, "Ω": 2, "VEC": 2}
    return dataframe_to_html(
        frame, units=units, digits=digits, links={"reference": _doi_link},
        caption="Classical descriptors, measured phase where known, and the reasons for each candidate",
    )  # fmt: skip


def _conflict_rows(table: pd.DataFrame, sources: Sequence[str], n: int) -> list[dict[str, Any]]:
    worst = table.sort_values("conflict", ascending=False, kind="stable").head(n)
    rows = []
    for _, row in worst.iterrows():
        stances = source_stances(row, sources)
        phases = {name: _most_likely(row, f"src_{name}_") for name in sources}
        fused = _text(row["predicted"]) or _most_likely(row, "")
        dissent = [f"{name}: {phase}" for name, phase in phases.items() if phase and phase != fused]
        rows.append({
            "rank": int(row["rank"]),
            "composition": _text(row["composition"]),
            "conflict": float(row["conflict"]),
            "bel": float(row["bel_SS"]),
            "pl": float(row["pl_SS"]),
            "predicted": fused,
            "for": "; ".join(stances["for"]) or "none",
            "against": "; ".join(stances["against"]) or "none",
            "undecided": "; ".join(stances["undecided"]) or "none",
            "dissent": "; ".join(dissent) or "none",
        })  # fmt: skip
    return rows


def _known_table(table: pd.DataFrame, limit: int = 30) -> tuple[Markup | None, int, int]:
    """Candidates already made: measured phase beside the fused prediction, mismatches first.

    A mismatch is a measured single-phase alloy with Bel(SS) <= 0.5 or a measured multi-phase
    alloy with Bel(SS) > 0.5: the ranking would have sent the lab the wrong way on it.
    Returns (table or None, number of known candidates, number of mismatches).
    """
    measured = table["known_phase"].map(_known_phase)
    known = table[measured != ""].assign(measured=measured[measured != ""])
    if known.empty:
        return None, 0, 0
    single = known["measured"].isin(["FCC", "BCC", "HCP"])
    bel = known["bel_SS"].astype(float)
    mismatch = (single & (bel <= SUPPORT_THRESHOLD)) | (~single & (bel > SUPPORT_THRESHOLD))
    known = known.assign(mismatch=mismatch).sort_values(["mismatch", "rank"], ascending=[False, True])
    shown = known.head(limit)
    frame = pd.DataFrame({
        "rank": shown["rank"].astype(int),
        "composition": shown["composition"].map(_text),
        "measured phase": shown["measured"],
        "predicted": shown["predicted"].map(_text),
        "Bel(SS)": shown["bel_SS"].astype(float),
        "Pl(SS)": shown["pl_SS"].astype(float),
        "conflict K": shown["conflict"].astype(float),
        "agrees": ["no" if m else "yes" for m in shown["mismatch"]],
        "reference": shown["reference"].map(_text),
    })  # fmt: skip
    html = dataframe_to_html(
        frame,
        units={"Bel(SS)": MASS, "Pl(SS)": MASS, "conflict K": MASS},
        row_classes=["highlight" if m else "" for m in shown["mismatch"]],
        links={"reference": _doi_link},
        caption=f"Candidates already made ({len(known)}; {len(shown)} shown, disagreements first)",
    )
    return html, len(known), int(mismatch.sum())


def _validation_tables(validation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not validation:
        return []
    tasks = validation.get("tasks")
    if not isinstance(tasks, Mapping):
        raise ReportInputError("result.validation", "has no 'tasks' dict")
    out = []
    for task, splits in tasks.items():
        if not isinstance(splits, Mapping):
            raise ReportInputError(f"result.validation['tasks'][{task!r}]", "expected a dict of splits")
        for split, methods in splits.items():
            if not isinstance(methods, Mapping) or not methods:
                continue
            names = list(methods)
            if "fusion" in names:  # fusion first: it is the method the ranking uses
                names.remove("fusion")
                names.insert(0, "fusion")
            metrics = [m for m in METRICS if any(m[0] in (methods[k] or {}) for k in names)]
            frame = pd.DataFrame(
                {"method": names}
                | {label: [_metric(methods[k], key) for k in names] for key, label, _, _ in metrics}
            )
            cells = {}
            for key, label, _, higher in metrics:
                if key == "n":
                    continue
                values = frame[label].to_numpy(dtype=float)
                if np.isfinite(values).any():
                    best = np.nanmax(values) if higher else np.nanmin(values)
                    for i in np.flatnonzero(np.isclose(values, best)):
                        cells[(int(i), label)] = "best"
            if "n" in frame:
                frame["n"] = [int(v) if np.isfinite(v) else None for v in frame["n"]]
            html = dataframe_to_html(
                frame,
                units={label: unit for _, label, unit, _ in metrics},
                row_classes=["highlight" if k == "fusion" else "" for k in names],
                cell_classes=cells,
            )
            out.append({"task": TASK_LABELS.get(task, task), "task_key": task,
                        "split": SPLIT_LABELS.get(split, split), "split_key": split, "html": html})  # fmt: skip
    return out


def _metric(record: Any, key: str) -> float:
    if not isinstance(record, Mapping) or record.get(key) is None:
        return float("nan")
    try:
        return float(record[key])
    except (TypeError, ValueError) as error:
        raise ReportInputError("result.validation", f"metric {key!r} is not a number: {record[key]!r}") from error


def _runtime_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "matflow": matflow.__version__,
            **installed_versions(("numpy", "pandas", "scikit-learn", "matplotlib", "jinja2", "pymatgen"))}


def _data_rows(provenance: Mapping[str, Any]) -> list[tuple[str, str]]:
    for key in ("data", "datasets", "data_sets", "data_files"):
        if key in provenance:
            return flatten_mapping(provenance[key])
    return []


# --------------------------------------------------------------------------- entry point


def render_screening_report(
    result: Any,
    html_path: str | os.PathLike,
    *,
    pdf_path: str | os.PathLike | None = None,
    top: int = 20,
) -> Path:
    """Write the screening report as one self-contained HTML file (and a PDF if asked).

    ``result`` needs ``.table`` (the screening table, columns in ``REQUIRED_COLUMNS`` plus
    ``src_<source>_*`` per evidence source), ``.settings`` and ``.provenance`` (dicts) and
    ``.validation`` (the benchmark's validation dict, or None). ``top`` candidates by rank are
    shown in the evidence figure and tables. Returns the HTML path.
    """
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise ReportInputError("top", f"must be a positive integer, got {top!r}")
    table, settings, provenance, validation = _check_result(result)
    html_path = check_output_file(html_path)
    if pdf_path is not None:
        check_output_file(pdf_path)

    ranked = table.sort_values("rank", kind="stable").reset_index(drop=True)
    sources = source_names(ranked)
    top_rows = ranked.head(int(top))
    known = ranked["known_phase"].map(_known_phase)
    elements = settings.get("elements") or sorted(
        {e.strip() for text in ranked["elements"].map(_text) for e in text.split(",") if e.strip()}
    )
    known_table, _, n_mismatch = _known_table(ranked)
    grid = {k: settings[k] for k in ("components", "step", "bounds", "equimolar") if k in settings}

    context = {
        "title": "High-entropy alloy screening: single-phase solid-solution candidates",
        "subtitle": f"{len(ranked):,} candidates from {', '.join(map(str, elements))}; "
        f"evidence sources: {', '.join(sources) or 'none listed'}",
        "matflow_version": matflow.__version__,
        "generated": utc_now(),
        "elements": [str(e) for e in elements],
        "grid": flatten_mapping(grid),
        "n_candidates": len(ranked),
        "by_components": [(int(k), int(v)) for k, v in
                          ranked["n_components"].value_counts().sort_index().items()],  # fmt: skip
        "n_known": int((known != "").sum()),
        "known_by_phase": [(p, int((known == p).sum())) for p in PHASE_NAMES if (known == p).any()],
        "data_rows": _data_rows(provenance),
        "sources": sources,
        "top": len(top_rows),
        "top_fig": min(len(top_rows), 12),
        "scatter_svg": _scatter_figure(ranked, top_rows),
        "evidence_svg": _evidence_figure(top_rows.head(12), sources),
        "conflict_rows": _conflict_rows(ranked, sources, min(10, len(ranked))),
        "conflict_median": float(ranked["conflict"].median()),
        "conflict_max": float(ranked["conflict"].max()),
        "ranking_table": _ranking_table(top_rows),
        "known_table": known_table,
        "n_known_mismatch": n_mismatch,
        "descriptor_table": _descriptor_table(top_rows),
        "sro_table": _sro_table(ranked),
        "validation_tables": _validation_tables(validation),
        "validation_notes": [str(n) for n in (validation or {}).get("notes", [])],
        "settings_rows": flatten_mapping(settings),
        "provenance_rows": flatten_mapping(provenance),
        "validation_rows": flatten_mapping({k: validation[k] for k in ("settings", "versions")
                                     if validation and k in validation}),  # fmt: skip
        "runtime_rows": flatten_mapping(_runtime_versions()),
        "support_threshold": SUPPORT_THRESHOLD,
        "skipped_sources": flatten_mapping(dict(getattr(result, "skipped_sources", None) or {})),
    }
    html = render_template("hea_screening.html", **context)
    leaks = external_resources(html)
    if leaks:  # a template or figure change broke self-containment: never ship such a page
        raise RuntimeError(f"report would load external resources: {leaks[:3]}")
    write_html(html, html_path)
    if pdf_path is not None:
        to_pdf(html_path, pdf_path)
    return html_path
