"""The report of one end-to-end pipeline run, rendered from its run directory alone.

One self-contained HTML page: the candidates with each model's prediction (value, unit, interval,
whether the structure lies in the model's domain and whether it was in the training data), the
first-shell Warren–Cowley α per pair of every alloy candidate, the HEA screening evidence (the
ranking table and per-source evidence figure of the screening report), the failures with their
reasons, and the manifest's facts (inputs hash, versions, models, timings, computed/loaded items).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

import matflow
from matflow.reports.html import (
    ReportInputError,
    dataframe_to_html,
    external_resources,
    flatten_mapping,
    render_template,
    utc_now,
    write_html,
)

__all__ = ["render_pipeline_report"]

BAND_Z = 1.959964  # half-width of the central 95 % band of a normal distribution


def _applicability(in_domain, unseen_elements) -> str:
    """One cell: in domain, out of domain (with the elements the model never saw), or unknown."""
    if isinstance(unseen_elements, str) and unseen_elements:
        return f"OUT OF DOMAIN (element never in training data: {unseen_elements})"
    if in_domain is None or (isinstance(in_domain, float) and np.isnan(in_domain)):
        return "unknown"
    return "in domain" if in_domain else "OUT OF DOMAIN"


def _read(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def _candidate_table(candidates: pd.DataFrame, relaxed: pd.DataFrame) -> Markup | None:
    if candidates.empty:
        return None
    frame = candidates[["id", "origin", "formula", "n_atoms"]].copy()
    if not relaxed.empty:
        cols = ["id", "final_energy_eV_per_atom", "converged", "n_steps", "max_force_eV_per_A",
                "initial_volume_A3", "final_volume_A3"]
        frame = frame.merge(relaxed[cols], on="id", how="left")
    frame = frame.rename(columns={"final_energy_eV_per_atom": "E", "max_force_eV_per_A": "max |F|",
                                  "initial_volume_A3": "V start", "final_volume_A3": "V relaxed",
                                  "n_atoms": "atoms", "n_steps": "steps"})
    frame = frame.astype(object).where(frame.notna(), "–")
    return dataframe_to_html(frame, units={"E": "eV/atom", "max |F|": "eV/Å", "V start": "Å³",
                                           "V relaxed": "Å³"},
                             digits={"E": 4, "max |F|": 3, "V start": 2, "V relaxed": 2},
                             caption="Candidates and their relaxation (– = relaxation failed)")


def _prediction_table(predictions: pd.DataFrame, candidates: pd.DataFrame) -> Markup | None:
    if predictions.empty:
        return None
    formulas = dict(zip(candidates["id"], candidates["formula"], strict=True))
    frame = pd.DataFrame({
        "id": predictions["id"],
        "formula": predictions["id"].map(formulas),
        "model": predictions["model"] + "@" + predictions["model_version"],
        "property": predictions["target"] + " (" + predictions["unit"] + ")",
        "value": predictions["value"].astype(float),
        "interval": [f"[{lo:.4g}, {hi:.4g}]" if np.isfinite([lo, hi]).all() else "none: input beyond the "
                     "calibrated distances" for lo, hi in zip(predictions["lower"].astype(float),
                                                            predictions["upper"].astype(float), strict=True)],
        "coverage": predictions["coverage"].astype(float),
        "applicability": [_applicability(d, u) for d, u in zip(
            predictions["in_domain"],
            predictions["unseen_elements"] if "unseen_elements" in predictions else [None] * len(predictions),
            strict=True)],
        "distance": predictions["distance"].astype(float),
        "in training data": ["yes" if t is True else ("no" if t is False else "unknown")
                             for t in predictions["in_training_data"]],
    })
    rows = ["highlight" if d is False or d == 0 else "" for d in predictions["in_domain"]]
    return dataframe_to_html(frame, units={"coverage": "–", "distance": "–"},
                             digits={"value": 4, "coverage": 2, "distance": 2}, row_classes=rows,
                             caption="Predictions: value in the property's unit, prediction interval at "
                                     "the stated coverage, and the applicability-domain check "
                                     "(highlighted rows lie outside the model's training domain)")


def _sro_table(sro: pd.DataFrame) -> Markup | None:
    if sro.empty:
        return None
    first = sro[sro["shell"] == 1].copy()
    outside = (first["alpha"] - first["random_mean"]).abs() > BAND_Z * first["random_std"]
    first["α"] = [f"{a:+.3f} ± {e:.3f}{' *' if o else ''}"
                  for a, e, o in zip(first["alpha"], first["alpha_err"], outside, strict=True)]
    wide = first.pivot_table(index=["alloy", "lattice", "temperature_K"], columns="pair", values="α",
                             aggfunc="first", sort=False).reset_index()
    wide.columns.name = None
    wide = wide.rename(columns={"temperature_K": "T"}).fillna("–")
    return dataframe_to_html(wide, units={"T": "K"}, digits={"T": 0},
                             caption="First-shell Warren–Cowley α per pair (dimensionless, ± standard "
                                     "error); * = outside the 95 % band of a random arrangement of "
                                     "the same cell")


def _sro_model_table(docs: dict) -> Markup | None:
    if not docs:
        return None
    rows = []
    for alloy, doc in docs.items():
        metrics, settings = doc.get("energy_model", {}), doc.get("settings", {})
        rows.append({"alloy": alloy, "labelled by": doc.get("potential", ""),
                     "training cells": metrics.get("n_structures"),
                     "CV RMSE": metrics.get("cv_rmse_meV_per_atom"),
                     "energy spread": metrics.get("energy_std_meV_per_atom"),
                     "a": doc.get("a_A"), "MC atoms": doc.get("n_atoms"),
                     "sweeps per T": settings.get("sweeps")})
    frame = pd.DataFrame(rows).astype(object)
    frame = frame.where(frame.notna(), "–")
    return dataframe_to_html(frame, units={"CV RMSE": "meV/atom", "energy spread": "meV/atom",
                                           "a": "Å"}, digits={"CV RMSE": 2, "energy spread": 2, "a": 4},
                             caption="Energy model (cluster expansion fitted to the potential) and "
                                     "Monte Carlo of each alloy: a CV RMSE near the energy spread "
                                     "means the model resolves little of the ordering energy")


def _screening_parts(screening: pd.DataFrame, top: int = 12) -> dict:
    if screening.empty:
        return {"screening_table": None, "screening_figure": None, "screening_sources": [],
                "screening_n": 0}
    from matflow.reports import hea

    ranked = screening.sort_values("rank", kind="stable").reset_index(drop=True)
    head = ranked.head(top)
    sources = hea.source_names(ranked)
    return {"screening_table": hea._ranking_table(head),
            "screening_figure": hea._evidence_figure(head, sources),
            "screening_sources": sources, "screening_n": len(ranked)}


def _failure_table(failures: list[dict]) -> Markup | None:
    if not failures:
        return None
    frame = pd.DataFrame([{"item": f.get("source", ""), "step": f.get("step", ""),
                           "reason": f.get("reason", "")} for f in failures])
    return dataframe_to_html(frame, caption="Failed items (the rest of the run went on)")


def _attempt_table(attempts: list[dict]) -> Markup | None:
    if not attempts:
        return None
    frame = pd.DataFrame([{"attempt": a.get("id"), "started": a.get("started"),
                           "status": a.get("status"),
                           "items computed": len(a.get("computed", [])),
                           "items loaded": len(a.get("loaded", []))} for a in attempts])
    return dataframe_to_html(frame, caption="Attempts on this run directory")


def render_pipeline_report(run_dir: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (or ``html_path``) from the run's manifest and tables."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportInputError("run_dir", f"{manifest_path}: no readable manifest ({exc})") from None
    candidates, relaxed = _read(run_dir, "candidates"), _read(run_dir, "relaxed")
    predictions, sro = _read(run_dir, "predictions"), _read(run_dir, "sro")
    screening = _read(run_dir, "screening")
    counts = manifest.get("counts", {})
    timings = manifest.get("timings", {})
    context = {
        "title": f"matflow pipeline run: {manifest.get('name', run_dir.name)}",
        "subtitle": f"{counts.get('candidates', 0)} candidates, {counts.get('alloys', 0)} alloys; "
                    f"{counts.get('ok', 0)} finished, {counts.get('failed', 0)} failed; "
                    f"status {manifest.get('status', '?')}",
        "matflow_version": matflow.__version__,
        "generated": utc_now(),
        "run_rows": [("run directory", manifest.get("run_dir", str(run_dir))),
                     ("inputs hash", manifest.get("inputs_hash", "")),
                     ("status", manifest.get("status", "")),
                     ("potential", (manifest.get("potential") or {}).get("model", ""))],
        "candidate_table": _candidate_table(candidates, relaxed),
        "prediction_table": _prediction_table(predictions, candidates),
        "sro_table": _sro_table(sro),
        "sro_models": _sro_model_table(manifest.get("sro_models") or {}),
        "failure_table": _failure_table(manifest.get("failures", [])),
        "attempt_table": _attempt_table(manifest.get("attempts", [])),
        "model_rows": [(m["name"], f"{m['version']} (preset {m['preset']}, manifest sha256 "
                                   f"{m['manifest_sha256'][:12]}…)") for m in manifest.get("models", [])],
        "skipped_models": sorted((manifest.get("skipped_models") or {}).items()),
        "timing_rows": flatten_mapping(timings),
        "version_rows": flatten_mapping(manifest.get("versions") or {}),
        "config_rows": flatten_mapping(manifest.get("config") or {}),
        "output_rows": [(k, f"{v['path']}: {v['rows']} rows, sha256 {v['sha256'][:12]}…")
                        for k, v in (manifest.get("outputs") or {}).items()],
        **_screening_parts(screening),
    }
    html = render_template("pipeline.html", **context)
    leaks = external_resources(html)
    if leaks:
        raise RuntimeError(f"report would load external resources: {leaks[:3]}")
    return write_html(html, html_path or run_dir / "report.html")
