"""The pipeline's steps, one function per item, each returning plain JSON-able data.

Each step calls the library piece that does the work (CDVAE sampling, CHGNet relaxation, matminer
features, registered-model prediction, Monte Carlo SRO, evidence-fusion screening) and raises a
clear error naming the item for a bad one; ``matflow.pipeline.run`` turns that error into a recorded
failure so the rest of the run goes on. Each step also has a ``*_key`` function: the content hash of
everything its result depends on (input, settings, code and model versions), used as the item's file
name in the run directory and as the Prefect task's cache key.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

import matflow
from matflow.pipeline.config import CDVAESource, HEASource, RelaxSettings, SROSettings
from matflow.pipeline.rundir import ItemFailed, content_key
from matflow.provenance import file_sha256

__all__ = ["STEP_VERSION", "sample_cdvae", "screen_elements", "alloy_structure", "relax_structure",
           "featurize_structure", "predict_structure", "simulate_alloy", "model_info",
           "potential_info", "structure_key", "load_model"]

STEP_VERSION = 1
"""Bumped when a step's output changes for the same inputs (invalidates stored items)."""
ALLOY_LATTICES = {"FCC": "fcc", "BCC": "bcc"}


def _code() -> dict:
    return {"matflow": matflow.__version__, "steps": STEP_VERSION}


def structure_key(structure: Structure) -> str:
    """Content hash of a structure (``matflow.structures.structure_hash``)."""
    from matflow.structures import structure_hash

    return structure_hash(structure)


# ------------------------------------------------------------------ models and potentials
@lru_cache(maxsize=16)
def load_model(name: str):
    """The newest loadable version of a registered model (loaded once per process)."""
    from matflow.ml.registry import load

    return load(name)


@lru_cache(maxsize=16)
def model_info(name: str) -> dict:
    """Name, version, preset and manifest sha256 of a registered model: its identity in keys."""
    model = load_model(name)
    return {"name": model.name, "version": model.version, "preset": model.preset,
            "manifest_sha256": file_sha256(Path(model.path) / "manifest.json")}


@lru_cache(maxsize=8)
def potential_info(name: str) -> dict:
    """Provenance of a universal potential (package and model versions, weights sha256)."""
    from matflow.atomistic.potentials import load_potential

    return dict(load_potential(name).provenance())


def cdvae_info(source: CDVAESource) -> dict:
    """Name, concrete version ("latest" resolved) and manifest hash: part of the cache key, so a
    newly shipped version is never served from an older one's samples."""
    from matflow.generate.train import MODELS_DIR, CDVAETrainingError, resolve_version

    try:
        version = resolve_version(source.model, source.version)
    except CDVAETrainingError as exc:
        raise ItemFailed("cdvae", f"{source.model}/{source.version}", str(exc)) from None
    manifest = Path(MODELS_DIR) / source.model / version / "manifest.json"
    if not manifest.is_file():
        raise ItemFailed("cdvae", f"{source.model}/{version}", "no such shipped CDVAE model")
    return {"name": source.model, "version": version, "manifest_sha256": file_sha256(manifest)}


# ------------------------------------------------------------------ candidates
def cdvae_key(source: CDVAESource) -> str:
    return content_key("cdvae", source.model_dump(mode="json"), cdvae_info(source), _code())


def sample_cdvae(source: CDVAESource) -> list[dict]:
    """``num_samples`` crystals from the CDVAE model, as pymatgen dicts (CPU, seeded)."""
    from matflow.generate.sample import generate_from_model

    structures = generate_from_model(source.model, source.version, source.num_samples,
                                     n_step_each=source.n_step_each, seed=source.seed,
                                     device="cpu", show_progress=False)
    return [s.as_dict() for s in structures]


def screening_key(hea: HEASource) -> str:
    return content_key("screening", hea.model_dump(mode="json", exclude={"top_k", "supercell", "seed"}),
                       _code())


def screen_elements(hea: HEASource) -> dict:
    """Rank the HEA candidates from ``hea.elements``: ``{"table": records, "settings",
    "provenance", "validation", "skipped_sources"}`` (a ``ScreeningResult`` as plain data)."""
    from matflow.screening.screen import available_sources, default_fusion, screen

    _, skipped = available_sources(tuple(hea.sources))
    result = screen(hea.elements, components=[hea.n_components], step=hea.step,
                    bounds=tuple(hea.bounds), fusion=default_fusion(tuple(hea.sources)))
    result.skipped_sources.update(skipped)
    table = result.table
    return {"table": [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")],
            "columns": list(table.columns), "settings": result.settings,
            "provenance": result.provenance, "validation": result.validation,
            "skipped_sources": result.skipped_sources}


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def alloy_choices(screening: dict, hea: HEASource) -> list[dict]:
    """The ``top_k`` best-ranked compositions predicted single-phase FCC or BCC, with the lattice."""
    picks = []
    for row in sorted(screening["table"], key=lambda r: r["rank"]):
        if row["predicted"] in ALLOY_LATTICES and len(picks) < hea.top_k:
            comp = {el: float(x) for el, x in _parse(row["composition"]).items()}
            picks.append({"composition": comp, "label": row["composition"],
                          "lattice": ALLOY_LATTICES[row["predicted"]], "rank": int(row["rank"]),
                          "bel_SS": row["bel_SS"], "pl_SS": row["pl_SS"]})
    return picks


def _parse(text: str) -> dict[str, float]:
    from matflow.screening.composition import parse_composition

    return parse_composition(text)


def alloy_structure(composition: dict[str, float], lattice: str, supercell: int,
                    seed: int = 0) -> Structure:
    """A random solid solution of ``composition`` on ``lattice`` (fcc/bcc), ``supercell`` cubic
    repeats of the conventional cell, lattice parameter from Vegard's (Zen's) law: the starting
    point the relaxation refines. Raises ``ItemFailed`` when the atom counts cannot be integers."""
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    from matflow.sro.energy_model import random_supercell, vegard_lattice_parameter

    label = "-".join(f"{el}{x:g}" for el, x in composition.items())
    try:
        a = vegard_lattice_parameter(composition, lattice)
        atoms = random_supercell(composition, lattice, a, supercell, np.random.default_rng(seed))
    except ValueError as exc:
        raise ItemFailed("alloy", label, f"no {supercell}x{supercell}x{supercell} {lattice} "
                                         f"supercell: {exc}") from None
    structure = AseAtomsAdaptor.get_structure(atoms)
    return structure.get_sorted_structure()


# ------------------------------------------------------------------ per-structure steps
def relax_key(structure: Structure, relax: RelaxSettings, potential: str) -> str:
    return content_key("relax", structure_key(structure), relax.model_dump(mode="json"),
                       potential_info(potential), _code())


@lru_cache(maxsize=4)
def _relaxer(relax_json: str, potential: str):
    import json

    from matflow.atomistic.relax import RelaxCalc

    return RelaxCalc(potential=potential, **json.loads(relax_json))


def relax_structure(structure: Structure, relax: RelaxSettings, potential: str, *,
                    source: str = "structure") -> dict:
    """Relax one candidate; returns the relaxed structure (pymatgen dict) and unit-labelled
    energies, volume and residual force. Wall time is left out so reruns give identical rows."""
    result = _relaxer(relax.model_dump_json(), potential).relax(structure, source=source)
    relaxed = Structure.from_dict(result.structure)
    if not all(math.isfinite(x) for x in (result.final_energy_eV, result.max_force_eV_per_A)):
        raise ItemFailed("relax", source, "the potential returned a non-finite energy or force")
    return {"structure": result.structure, "structure_hash": structure_key(relaxed),
            "formula": result.formula, "n_atoms": result.n_atoms, "converged": result.converged,
            "n_steps": result.n_steps, "initial_energy_eV": result.initial_energy_eV,
            "final_energy_eV_per_atom": result.final_energy_eV_per_atom,
            "max_force_eV_per_A": result.max_force_eV_per_A, "pressure_GPa": result.pressure_GPa,
            "initial_volume_A3": result.initial_volume_A3, "final_volume_A3": result.final_volume_A3,
            "model": result.model}


@lru_cache(maxsize=8)
def preset_key(preset: str) -> str:
    from matflow.featurize.presets import get_preset

    return get_preset(preset).key()


def features_key(structure: Structure, preset: str) -> str:
    return content_key("features", structure_key(structure), preset, preset_key(preset), _code())


def featurize_structure(structure: Structure, preset: str, *, source: str = "structure") -> dict:
    """Features of one structure with a matminer preset (through the feature cache):
    ``{"features": {column: value}, "errors": text}``; all featurizers failing raises."""
    from matflow.featurize import featurize_structures

    table = featurize_structures([structure], preset, sources=[source])
    if table.failures:
        raise ItemFailed("features", source, table.failures[0].reason)
    row = table.table.iloc[0]
    if row["status"] != "ok":
        raise ItemFailed("features", source, f"featurization {row['status']}: {row['errors']}")
    columns = [c for c in table.table.columns if c not in ("source", "formula", "status", "errors")]
    return {"features": {c: float(row[c]) for c in columns}, "errors": str(row["errors"] or "")}


def predict_key(structure: Structure, model: str) -> str:
    return content_key("predict", structure_key(structure), model_info(model), _code())


def predict_structure(structure: Structure, model: str, *, source: str = "structure") -> list[dict]:
    """Predictions of one registered model for one structure: per target a value with unit,
    interval, applicability flags and training-data membership."""
    from matflow.ml.predict import predict_structures

    registered = load_model(model)
    if registered.manifest.get("format") == "matflow-dos":
        return _predict_dos(registered, structure, source)
    rows, failures = predict_structures(registered, [structure], sources=[source])
    if failures:
        raise ItemFailed("predict", source, failures[0].reason)
    if rows.empty:
        raise ItemFailed("predict", source, f"{model}: no prediction (featurization failed)")
    keep = ["target", "value", "unit", "lower", "upper", "coverage", "std", "in_domain",
            "distance", "interval_ok", "in_training_data", "training_label", "unseen_elements"]
    out = []
    for row in rows.to_dict("records"):
        item = {k: _plain(row.get(k)) for k in keep}
        item.update(model=registered.name, model_version=registered.version)
        out.append(item)
    return out


def _predict_dos(registered, structure: Structure, source: str) -> list[dict]:
    """S_vib and Cv at 305 K from a phonon-DOS model (``svib``), in the rows of the other models."""
    from matflow.ml.svib import SVIB_T_K, predict_svib_structures

    rows, _dos, failures = predict_svib_structures(registered, [structure], sources=[source])
    if failures:
        raise ItemFailed("predict", source, failures[0].reason)
    if rows.empty:
        raise ItemFailed("predict", source, f"{registered.name}: no prediction (featurization failed)")
    row = rows.iloc[0]
    common = {"coverage": _plain(row["coverage"]), "std": None, "in_domain": _plain(row.get("in_domain")),
              "distance": _plain(row.get("ad_distance")),
              "interval_ok": None, "in_training_data": None, "training_label": None,
              "unseen_elements": _plain(row.get("unseen_elements", "")),
              "model": registered.name, "model_version": registered.version}
    return [{"target": f"S_vib_{SVIB_T_K:g}K", "value": _plain(row["S_J_per_K_mol_atom"]),
             "unit": "J/K/mol-atom", "lower": _plain(row["S_lower"]), "upper": _plain(row["S_upper"]), **common},
            {"target": f"Cv_{SVIB_T_K:g}K", "value": _plain(row["Cv_J_per_K_mol_atom"]),
             "unit": "J/K/mol-atom", "lower": _plain(row["Cv_lower"]), "upper": _plain(row["Cv_upper"]), **common}]


def sro_key(composition: dict[str, float], lattice: str, sro: SROSettings, potential: str) -> str:
    return content_key("sro", sorted(composition.items()), lattice,
                       sro.model_dump(mode="json", exclude={"potential"}), potential_info(potential),
                       _code())


def simulate_alloy(composition: dict[str, float], lattice: str, sro: SROSettings,
                   potential: str) -> dict:
    """Monte Carlo SRO of an alloy candidate (``simulate_sro`` with the pipeline's small settings);
    the simulation's ``to_dict()``."""
    from matflow.sro.simulate import simulate_sro

    result = simulate_sro(composition, lattice=lattice, temperatures=sro.temperatures_K,
                          size=sro.size, train_size=sro.train_size, potential=potential,
                          n_train=sro.n_train, sweeps=sro.sweeps, seed=sro.seed)
    out = result.to_dict()
    out.pop("timings_s", None)  # wall times live in the manifest, not in the compared outputs
    for record in out["temperatures"]:
        record.pop("wall_time_s", None)
        record.pop("trials_per_s", None)
    return out


def sro_rows(label: str, simulation: dict) -> list[dict]:
    """Long table of Warren–Cowley α per temperature, shell and pair, with the random band."""
    species = simulation["species"]
    rows = []
    for rec in simulation["temperatures"]:
        for shell, radius in enumerate(simulation["shell_radii_A"]):
            for i, a in enumerate(species):
                for j in range(i, len(species)):
                    rows.append({
                        "alloy": label, "lattice": simulation["lattice"],
                        "temperature_K": float(rec["temperature_K"]), "shell": shell + 1,
                        "shell_radius_A": float(radius), "pair": f"{a}-{species[j]}",
                        "alpha": rec["alpha"][shell][i][j], "alpha_err": rec["alpha_err"][shell][i][j],
                        "random_mean": simulation["random_alpha_mean"][shell][i][j],
                        "random_std": simulation["random_alpha_std"][shell][i][j],
                        "energy_eV_per_atom": rec["energy_eV_per_atom"],
                        "acceptance_rate": rec["acceptance_rate"]})
    return rows
