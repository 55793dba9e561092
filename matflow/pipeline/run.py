"""The one definition of the end-to-end pipeline: ``run_pipeline(config, run_dir)``.

Order of work: candidates (CDVAE samples, structure files, and the alloys picked by HEA screening)
-> relax each (universal potential) -> featurize each -> predict each with every registered model ->
Monte Carlo SRO for each alloy -> assemble tables, CIFs, manifest and report. Every per-item result
goes through ``RunDir.item``: stored atomically under its content hash, loaded instead of
recomputed on a rerun, and a failure there is recorded for that item while the others go on.

The Prefect flow ``flows/pipeline.py`` maps the per-item functions below (``relax_item``,
``features_item``, ``predict_item``, ``sro_item``) as tasks and ends with ``finish``; the CLI and
the tests call ``run_pipeline``, which runs the same functions in a plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from matflow.pipeline import steps
from matflow.pipeline.config import PipelineConfig, PipelineConfigError, load_config
from matflow.pipeline.rundir import RunDir
from matflow.provenance import file_sha256

__all__ = ["run_pipeline", "resolve_run_dir", "plan", "relax_item", "features_item", "predict_item",
           "sro_item", "finish", "start", "Candidate", "used_models"]

TABLES = ("candidates", "relaxed", "features", "predictions", "sro", "screening")
Candidate = dict
"""``{"id", "origin", "structure" (pymatgen dict), "composition"?, "lattice"?}``: plain data, so it
travels to task workers as is."""


def resolve_run_dir(config: PipelineConfig, run_dir: str | os.PathLike | None = None) -> Path:
    """``run_dir``, else the config's, else ``<settings.run_dir>/runs/<name>-<inputs hash>``."""
    if run_dir is not None:
        return Path(run_dir)
    if config.run_dir:
        return Path(config.run_dir)
    from matflow.settings import get_settings

    return get_settings().run_dir / "runs" / f"{config.name}-{config.inputs_hash()}"


def used_models(config: PipelineConfig) -> tuple[list[str], dict[str, str]]:
    """(models to predict with, {optional model: why it is skipped}). A required model that does
    not load raises ``PipelineConfigError``: a run without it would not be the run asked for."""
    names, skipped = [], {}
    for name in config.models:
        try:
            steps.model_info(name)
        except Exception as exc:
            raise PipelineConfigError(f"models: {name!r} does not load ({exc})") from None
        names.append(name)
    for name in config.optional_models:
        if name in names:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steps.model_info(name)
        except Exception as exc:
            skipped[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            continue
        names.append(name)
    return names, skipped


def start(config: Any, run_dir: str | os.PathLike | None = None,
          attempt: str | None = None) -> tuple[PipelineConfig, RunDir, dict]:
    """Validate the config, open the run dir and record a new attempt in its manifest."""
    config = load_config(config)
    rd = RunDir(resolve_run_dir(config, run_dir), attempt)
    manifest = rd.begin_attempt(config.inputs_hash(), config.content())
    return config, rd, manifest


# ------------------------------------------------------------------ candidates
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


def _alloy_id(choice: dict) -> str:
    parts = "".join(f"{el}{round(100 * x):d}" for el, x in sorted(choice["composition"].items()))
    return f"alloy-{parts}-{choice['lattice']}"


def plan(config: PipelineConfig, rd: RunDir,
         structures: Mapping[str, Structure] | None = None) -> tuple[list[Candidate], list[dict],
                                                                      list[dict]]:
    """Candidates, alloy choices and the failures of making them (CDVAE sampling and screening
    are items too: stored, and loaded on a rerun). Returns (candidates, alloys, failures)."""
    candidates: list[Candidate] = []
    alloys: list[dict] = []
    failures: list[dict] = []
    if config.cdvae is not None:
        src = config.cdvae
        try:
            key = steps.cdvae_key(src)
        except Exception as exc:
            failures.append({"source": f"cdvae {src.model}/{src.version}", "step": "cdvae",
                             "reason": str(exc)})
        else:
            record = rd.item("cdvae", key, f"{src.model}/{src.version}",
                             lambda: steps.sample_cdvae(src))
            if record["ok"]:
                candidates += [{"id": f"cdvae-{i:03d}", "origin": f"CDVAE {src.model}/{src.version}",
                                "structure": s, "item": f"cdvae/{key}"}
                               for i, s in enumerate(record["result"])]
            else:
                failures.append({"source": f"cdvae {src.model}/{src.version}", "step": "cdvae",
                                 "reason": record["reason"]})
    if config.structure_files:
        from matflow.io import read_structures

        batch = read_structures(config.structure_files)
        for loaded in batch.structures:
            candidates.append({"id": f"file-{_slug(Path(loaded.source).stem)}", "origin": loaded.source,
                               "structure": loaded.structure.as_dict()})
        failures += [{"source": f.source, "step": "read", "reason": f.reason} for f in batch.failures]
    for name, structure in (structures or {}).items():
        candidates.append({"id": _slug(name), "origin": "given", "structure": structure.as_dict()})
    if config.hea is not None:
        hea = config.hea
        key = steps.screening_key(hea)
        record = rd.item("screening", key, "-".join(hea.elements), lambda: steps.screen_elements(hea))
        if not record["ok"]:
            failures.append({"source": "screening " + "-".join(hea.elements), "step": "screening",
                             "reason": record["reason"]})
        else:
            for choice in steps.alloy_choices(record["result"], hea):
                choice["id"] = _alloy_id(choice)
                alloys.append(choice)
                try:
                    structure = steps.alloy_structure(choice["composition"], choice["lattice"],
                                                      hea.supercell, hea.seed)
                except Exception as exc:
                    failures.append({"source": choice["id"], "step": "alloy",
                                     "reason": getattr(exc, "reason", str(exc))})
                    continue
                candidates.append({"id": choice["id"], "origin": f"HEA screening rank {choice['rank']}",
                                   "structure": structure.as_dict(), "composition": choice["label"],
                                   "lattice": choice["lattice"]})
    seen: dict[str, int] = {}
    for cand in candidates:  # ids are file names: make them unique
        n = seen.get(cand["id"], 0)
        seen[cand["id"]] = n + 1
        if n:
            cand["id"] = f"{cand['id']}-{n}"
    return candidates, alloys, failures


# ------------------------------------------------------------------ per-item steps
def _skipped(step: str, label: str, upstream: dict) -> dict:
    return {"ok": False, "skipped": True, "step": step, "item": label,
            "reason": f"skipped: {upstream.get('step')} failed"}


def relax_item(config: PipelineConfig, rd: RunDir, cand: Candidate) -> dict:
    """The candidate's relaxation record (stored under the relax key)."""
    try:
        structure = Structure.from_dict(cand["structure"])
        key = steps.relax_key(structure, config.relax, config.potential)
    except Exception as exc:
        return {"ok": False, "step": "relax", "item": cand["id"],
                "reason": f"unusable structure: {type(exc).__name__}: {exc}"}
    return rd.item("relax", key, cand["id"], lambda: steps.relax_structure(
        structure, config.relax, config.potential, source=cand["id"]))


def features_item(config: PipelineConfig, rd: RunDir, cand: Candidate, relaxed: dict) -> dict:
    if not relaxed["ok"]:
        return _skipped("features", cand["id"], relaxed)
    structure = Structure.from_dict(relaxed["result"]["structure"])
    key = steps.features_key(structure, config.feature_preset)
    return rd.item("features", key, cand["id"], lambda: steps.featurize_structure(
        structure, config.feature_preset, source=cand["id"]))


def predict_item(config: PipelineConfig, rd: RunDir, cand: Candidate, relaxed: dict,
                 model: str) -> dict:
    if not relaxed["ok"]:
        return _skipped("predict", cand["id"], relaxed)
    structure = Structure.from_dict(relaxed["result"]["structure"])
    key = steps.predict_key(structure, model)
    return rd.item("predict", key, f"{cand['id']} {model}", lambda: steps.predict_structure(
        structure, model, source=cand["id"]))


def sro_item(config: PipelineConfig, rd: RunDir, alloy: dict) -> dict:
    potential = config.sro_potential
    key = steps.sro_key(alloy["composition"], alloy["lattice"], config.sro, potential)
    return rd.item("sro", key, alloy["id"], lambda: steps.simulate_alloy(
        alloy["composition"], alloy["lattice"], config.sro, potential))


# ------------------------------------------------------------------ assembly
def _write_table(rd: RunDir, name: str, rows: list[dict] | Any) -> dict:
    import pandas as pd

    from matflow.outputs import atomic_write

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    path = rd.path / f"{name}.parquet"
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return {"path": path.name, "rows": len(frame),
            "sha256": file_sha256(path)}


def _write_cif(path: Path, structure: Structure) -> str:
    from pymatgen.io.cif import CifWriter

    from matflow.outputs import atomic_write_text

    atomic_write_text(path, str(CifWriter(structure)))
    return str(path.relative_to(path.parents[2]))


def _versions() -> dict:
    from matflow.ml.registry import package_versions
    from matflow.provenance import installed_versions

    return {**package_versions(),
            **installed_versions(("chgnet", "ase", "icet", "phonopy", "torch-geometric"), missing=None)}


def finish(config: PipelineConfig, rd: RunDir, manifest: dict, candidates: list[Candidate],
           alloys: list[dict], plan_failures: list[dict], relaxed: list[dict], features: list[dict],
           predictions: dict[str, list[dict]], sro: list[dict], models: list[str],
           skipped_models: dict[str, str], timings: dict[str, float] | None = None) -> dict:
    """Write tables, CIFs, manifest and report from the item records; returns the run summary
    (``{"n_ok", "n_failed", "failures", "run_dir", "report", ...}``, the shape ``finish_batch`` takes).

    Everything written comes from the stored records, so a run that loaded items writes the same
    bytes as one that computed them.
    """
    t0 = time.perf_counter()
    failures = list(plan_failures)
    used = {c["item"] for c in candidates if c.get("item")}
    cand_rows, relaxed_rows, feature_rows, prediction_rows, sro_table = [], [], [], [], []
    failed_ids: set[str] = set()

    def note(record: dict, source: str) -> bool:
        if record.get("key"):
            used.add(f"{record['step']}/{record['key']}")
        if not record["ok"] and not record.get("skipped"):
            failures.append({"source": source, "step": record["step"], "reason": record["reason"]})
            failed_ids.add(source)
        return bool(record["ok"])

    for i, cand in enumerate(candidates):
        structure = Structure.from_dict(cand["structure"])
        cif = _write_cif(rd.path / "structures" / "candidates" / f"{cand['id']}.cif", structure)
        cand_rows.append({"id": cand["id"], "origin": cand["origin"],
                          "formula": structure.composition.reduced_formula,
                          "n_atoms": len(structure), "structure_hash": steps.structure_key(structure),
                          "composition": cand.get("composition", ""),
                          "lattice": cand.get("lattice", ""), "cif": cif})
        rec = relaxed[i]
        if note(rec, cand["id"]):
            res = dict(rec["result"])
            final = Structure.from_dict(res.pop("structure"))
            res["cif"] = _write_cif(rd.path / "structures" / "relaxed" / f"{cand['id']}.cif", final)
            relaxed_rows.append({"id": cand["id"], **res})
        rec = features[i]
        if note(rec, cand["id"]):
            feature_rows.append({"id": cand["id"], **rec["result"]["features"]})
        for model in models:
            rec = predictions[model][i]
            if note(rec, cand["id"]):
                prediction_rows += [{"id": cand["id"], **row} for row in rec["result"]]
    sro_docs = {}
    for alloy, rec in zip(alloys, sro, strict=True):
        if note(rec, alloy["id"]):
            sro_table += steps.sro_rows(alloy["id"], rec["result"])
            doc = rec["result"]
            model = doc.get("energy_model", {})
            potential = model.get("potential", "")
            sro_docs[alloy["id"]] = {
                "energy_model": model.get("metrics", {}), "a_A": doc["a_A"],
                "a_source": doc["a_source"], "n_atoms": doc["n_atoms"], "settings": doc["settings"],
                "potential": potential.get("model", potential.get("name", "")) if isinstance(
                    potential, dict) else str(potential)}
    screening_rows: list[dict] = []
    screening_meta: dict = {}
    if config.hea is not None:
        key = steps.screening_key(config.hea)
        record = rd.load_item("screening", key)
        if record and record["ok"]:
            used.add(f"screening/{key}")
            screening_rows = record["result"]["table"]
            screening_meta = {k: record["result"][k] for k in ("settings", "provenance",
                                                               "validation", "skipped_sources")}

    outputs = {
        "candidates": _write_table(rd, "candidates", cand_rows),
        "relaxed": _write_table(rd, "relaxed", relaxed_rows),
        "features": _write_table(rd, "features", feature_rows),
        "predictions": _write_table(rd, "predictions", prediction_rows),
        "sro": _write_table(rd, "sro", sro_table),
        "screening": _write_table(rd, "screening", screening_rows),
    }
    n_candidates = len(candidates) + len({f["source"] for f in plan_failures})
    n_failed = len(failed_ids | {f["source"] for f in plan_failures})
    n_ok = max(0, n_candidates - n_failed)
    step_seconds: dict[str, float] = {}
    for path in sorted((rd.path / "items").glob("*/*.json")):
        if f"{path.parent.name}/{path.stem}" in used:
            seconds = json.loads(path.read_text()).get("seconds", 0.0)
            step_seconds[path.parent.name] = round(step_seconds.get(path.parent.name, 0.0) + seconds, 3)
    timings = dict(timings or {})
    timings["assemble_s"] = round(time.perf_counter() - t0, 3)
    models_info = [steps.model_info(m) for m in models]
    manifest.update(
        name=config.name, run_dir=str(rd.path.resolve()), versions=_versions(),
        models=models_info, skipped_models=skipped_models,
        potential=steps.potential_info(config.potential),
        sro_potential=steps.potential_info(config.sro_potential) if alloys else None,
        cdvae_model=steps.cdvae_info(config.cdvae) if config.cdvae else None,
        timings={"wall_s": timings, "item_compute_s": step_seconds},
        counts={"candidates": len(candidates), "alloys": len(alloys), "ok": n_ok, "failed": n_failed},
        failures=failures, outputs=outputs, sro_models=sro_docs, screening=screening_meta)
    status = "completed" if n_ok else "failed"
    if n_ok and n_failed:
        status = "completed_with_failures"
    manifest = rd.end_attempt(manifest, sorted(used), status)
    from matflow.reports.pipeline import render_pipeline_report

    report = render_pipeline_report(rd.path)
    return {"n_ok": n_ok, "n_failed": n_failed, "failures": failures, "run_dir": str(rd.path),
            "outdir": str(rd.path), "report": str(report), "status": status,
            "attempt": rd.attempt, "n_computed": len(manifest["attempts"][-1]["computed"]),
            "n_loaded": len(manifest["attempts"][-1]["loaded"])}


def run_pipeline(config: Any, run_dir: str | os.PathLike | None = None, *,
                 structures: Mapping[str, Structure] | None = None,
                 progress: bool = False) -> dict:
    """Run (or resume) the pipeline in this process; returns ``finish``'s summary.

    ``config``: a ``PipelineConfig``, a preset name, a config file or a dict. ``structures``: extra
    candidates by name. A rerun with the same run dir loads every finished item.
    """
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    config, rd, manifest = start(config, run_dir)
    models, skipped_models = used_models(config)
    candidates, alloys, plan_failures = plan(config, rd, structures)
    timings["candidates_s"] = round(time.perf_counter() - t, 3)
    say(f"{len(candidates)} candidates, {len(alloys)} alloys -> {rd.path}")

    def phase(name: str, fn):
        nonlocal t
        t = time.perf_counter()
        out = fn()
        timings[f"{name}_s"] = round(time.perf_counter() - t, 3)
        say(f"{name}: {timings[f'{name}_s']:.1f} s")
        return out

    relaxed = phase("relax", lambda: [relax_item(config, rd, c) for c in candidates])
    features = phase("features", lambda: [features_item(config, rd, c, r)
                                          for c, r in zip(candidates, relaxed, strict=True)])
    predictions = phase("predict", lambda: {
        m: [predict_item(config, rd, c, r, m) for c, r in zip(candidates, relaxed, strict=True)]
        for m in models})
    sro = phase("sro", lambda: [sro_item(config, rd, a) for a in alloys])
    return finish(config, rd, manifest, candidates, alloys, plan_failures, relaxed, features,
                  predictions, sro, models, skipped_models, timings)


def main(argv: list[str] | None = None) -> int:
    """``python -m matflow.pipeline [--preset NAME | --config FILE] [--run-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m matflow.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None, help="demo or test")
    parser.add_argument("--config", default=None, help="JSON, YAML or TOML pipeline config")
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args(argv)
    from matflow.atomistic.model import set_torch_threads

    set_torch_threads()
    try:
        summary = run_pipeline(args.config or args.preset or "demo", args.run_dir, progress=True)
    except (PipelineConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['status']}: {summary['n_ok']} ok, {summary['n_failed']} failed; "
          f"computed {summary['n_computed']}, loaded {summary['n_loaded']} items")
    print(f"report: {summary['report']}")
    return 0 if summary["n_ok"] else 1
