"""Screening of generated crystals: relax → de-duplicate → stability proxy → predict → table.

One definition used by ``matflow generate --relax``, the Prefect flow ``generate`` and the tests:

- ``relax_sample``: relax one sample with a universal potential (CHGNet by default, through
  ``matflow.atomistic.relax.RelaxCalc``); a sample that cannot be treated (non-finite coordinates,
  overlapping atoms, a relaxation that blows up) becomes a failure record with its reason.
- ``deduplicate``: duplicates among the samples and matches against a reference set (the bundled
  Perov-5 val/test crystals = "not novel") with pymatgen's ``StructureMatcher``, compared only
  within a reduced formula so it stays fast.
- ``hull_proxy``: energy above the convex hull from the *potential's* energies — a potential-based
  stability proxy, not a DFT hull. The hull is built from the elements in their ASE reference
  structures relaxed with the same potential (cached per potential and element under the settings'
  ``cache_dir``), optionally the relaxed reference crystals of the same chemical systems, and the
  candidates themselves.
- ``predict_sample``: predictions of registered models through
  ``matflow.pipeline.steps.predict_structure`` (MODNet-style models and the phonon-DOS model).
- ``assemble`` / ``screen_generated``: one row per sample, CIFs of the relaxed unique candidates
  and the table (CSV and parquet) in an output folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

__all__ = ["DEFAULT_MODELS", "DEDUP_MATCHER_KWARGS", "deduplicate", "relax_sample", "predict_sample",
           "elemental_reference", "relaxed_dataset_references", "hull_proxy", "dataset_references", "training_dataset", "available_models",
           "assemble", "screen_generated"]

DEFAULT_MODELS = ("matbench_phonons", "alexandria_cv300", "svib")
"""Registered models asked for predictions; one that does not load is skipped with its reason."""
DEDUP_MATCHER_KWARGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "scale": False}
"""pymatgen's default tolerances without volume scaling: relaxed candidates are compared at their
own volume, so the same prototype with a lattice constant more than ~20 % off is a different crystal."""
MAX_VOLUME_RATIO = 4.0
"""A relaxation that changes the volume by more than this factor (either way) has blown up."""
REFERENCE_RELAX = {"fmax_eV_per_A": 0.05, "max_steps": 300}
"""Relaxation of the elemental and dataset references (independent of the candidates' settings)."""
MOLECULE_BOX_A = 12.0


# ------------------------------------------------------------------ de-duplication
def _matcher() -> StructureMatcher:
    return StructureMatcher(**DEDUP_MATCHER_KWARGS)


def _fits(matcher: StructureMatcher, a: Structure, b: Structure) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(matcher.fit(a, b))
        except Exception:  # noqa: BLE001 - a degenerate cell matches nothing
            return False


def deduplicate(structures: Sequence[Structure | None], references: Sequence[Structure] | None = None,
                reference_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per structure: ``duplicate_of`` (index of the first earlier sample it matches, else None),
    ``reference_match`` (id of a matching reference crystal, else None) and ``novel`` (no reference
    match). ``None`` entries (failed samples) get all three as None. Structures are compared only
    within the same reduced formula (``DEDUP_MATCHER_KWARGS``)."""
    matcher = _matcher()
    references = list(references or [])
    ids = list(reference_ids) if reference_ids is not None else [str(i) for i in range(len(references))]
    if len(ids) != len(references):
        raise ValueError(f"reference_ids: {len(ids)} ids for {len(references)} references")
    ref_groups: dict[str, list[int]] = defaultdict(list)
    for i, ref in enumerate(references):
        ref_groups[ref.composition.reduced_formula].append(i)
    kept: dict[str, list[int]] = defaultdict(list)
    out = []
    for index, s in enumerate(structures):
        if s is None:
            out.append({"duplicate_of": None, "reference_match": None, "novel": None})
            continue
        formula = s.composition.reduced_formula
        dup = next((j for j in kept[formula] if _fits(matcher, s, structures[j])), None)
        if dup is None:
            kept[formula].append(index)
        ref = next((ids[j] for j in ref_groups.get(formula, []) if _fits(matcher, s, references[j])),
                   None)
        out.append({"duplicate_of": dup, "reference_match": ref, "novel": ref is None})
    return out


@lru_cache(maxsize=4)
def _dataset_table(dataset: str, splits: tuple[str, ...]) -> pd.DataFrame:
    """The bundled CDVAE benchmark rows (``data/cdvae_benchmarks``) with id, reduced formula and
    element set; CIFs stay text until a row is needed."""
    from pymatgen.core import Composition

    from matflow.datasets import data_dir

    parts = []
    for split in splits:
        path = data_dir() / "cdvae_benchmarks" / dataset / f"{split}.csv.gz"
        if not path.is_file():
            raise FileNotFoundError(f"reference dataset {dataset}/{split}: no file {path}")
        table = pd.read_csv(path, usecols=["material_id", "cif", "formula"])
        table["id"] = [f"{split}:{i}" for i in table["material_id"]]
        parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    comps = [Composition(f) for f in table["formula"]]
    table["reduced_formula"] = [c.reduced_formula for c in comps]
    table["elements"] = [frozenset(el.symbol for el in c.elements) for c in comps]
    return table


@lru_cache(maxsize=4096)
def _parse_cif(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif").get_reduced_structure()


def dataset_references(dataset: str = "perov_5", *, formulas: Sequence[str] | None = None,
                       chemical_systems: Sequence[set[str]] | None = None,
                       splits: tuple[str, ...] = ("val", "test")) -> tuple[list[str], list[Structure]]:
    """(ids, structures) of the bundled CDVAE benchmark crystals (ids ``<split>:<material_id>``),
    the reference set for novelty. Only rows with a reduced formula in ``formulas``, or whose
    elements lie within one of ``chemical_systems``, are parsed (None = that filter is off)."""
    table = _dataset_table(dataset, tuple(splits))
    keep = np.ones(len(table), dtype=bool)
    if formulas is not None:
        keep &= table["reduced_formula"].isin(set(formulas)).to_numpy()
    if chemical_systems is not None:
        systems = [frozenset(s) for s in chemical_systems]
        keep &= np.array([any(e <= s for s in systems) for e in table["elements"]], dtype=bool)
    rows = table[keep]
    return rows["id"].tolist(), [_parse_cif(c) for c in rows["cif"]]


def training_dataset(model: str = "cdvae-perov5", version: str | None = "latest") -> str | None:
    """The bundled benchmark (``perov_5``, ``carbon_24``, ``mp_20``) a shipped CDVAE model was
    trained on, read from its manifest; None when it is not one of them."""
    from matflow.generate.train import MODELS_DIR, CDVAETrainingError, resolve_version

    try:
        version = resolve_version(model, version)
    except CDVAETrainingError:
        return None
    manifest = Path(MODELS_DIR) / model / version / "manifest.json"
    if not manifest.is_file():
        return None
    record = json.loads(manifest.read_text()).get("data", {})
    for key in ("train_csv", "val_csv"):
        parent = Path(str(record.get(key) or "")).parent.name
        if parent in ("perov_5", "carbon_24", "mp_20"):
            return parent
    return None


# ------------------------------------------------------------------ relaxation
def _relaxer(potential: str, fmax_eV_per_A: float, max_steps: int, relax_cell: bool = True):
    """A relaxer per thread: an ASE calculator keeps per-call state, so concurrent tasks must not
    share one (the potential's weights are loaded once and shared)."""
    return _thread_relaxer(potential, fmax_eV_per_A, max_steps, relax_cell, threading.get_ident())


@lru_cache(maxsize=32)
def _thread_relaxer(potential: str, fmax_eV_per_A: float, max_steps: int, relax_cell: bool,
                    _thread: int):
    from matflow.atomistic.relax import RelaxCalc

    return RelaxCalc(potential=potential, fmax_eV_per_A=fmax_eV_per_A, max_steps=max_steps,
                     relax_cell=relax_cell)


def _failure(source: str, step: str, reason: str) -> dict:
    return {"ok": False, "source": source, "step": step, "reason": " ".join(str(reason).split())[:500]}


def relax_sample(structure: Structure | dict, *, potential: str = "chgnet", max_steps: int = 300,
                 fmax_eV_per_A: float = 0.05, source: str = "sample") -> dict:
    """Relax one sample (positions and cell). Returns ``{"ok": True, "structure": relaxed dict,
    "energy_eV", "energy_eV_per_atom", "converged", "n_steps", ...}`` or ``{"ok": False, "reason"}``;
    never raises for a bad sample."""
    try:
        s = Structure.from_dict(structure) if isinstance(structure, dict) else structure
        if not np.all(np.isfinite(s.lattice.matrix)) or not np.all(np.isfinite(s.frac_coords)):
            return _failure(source, "relax", "non-finite lattice or coordinates")
        result = _relaxer(potential, float(fmax_eV_per_A), int(max_steps)).relax(s, source=source)
    except Exception as exc:  # noqa: BLE001 - one bad sample is a recorded failure
        return _failure(source, "relax", f"{type(exc).__name__}: {exc}")
    energy, force = result.final_energy_eV, result.max_force_eV_per_A
    if not (math.isfinite(energy) and math.isfinite(force)):
        return _failure(source, "relax", "the potential returned a non-finite energy or force")
    ratio = result.final_volume_A3 / result.initial_volume_A3
    if not (1 / MAX_VOLUME_RATIO <= ratio <= MAX_VOLUME_RATIO):
        return _failure(source, "relax", f"relaxation blew up: volume changed by a factor {ratio:.3g}")
    from matflow.generate.metrics import structural_validity

    relaxed = Structure.from_dict(result.structure)
    if not structural_validity(relaxed):
        return _failure(source, "relax", "relaxed structure has atoms closer than 0.5 Å")
    return {"ok": True, "source": source, "structure": result.structure,
            "formula": result.formula, "n_atoms": result.n_atoms, "energy_eV": energy,
            "energy_eV_per_atom": result.final_energy_eV_per_atom, "converged": result.converged,
            "n_steps": result.n_steps, "max_force_eV_per_A": force,
            "initial_volume_A3": result.initial_volume_A3, "final_volume_A3": result.final_volume_A3,
            "model": result.model}


# ------------------------------------------------------------------ stability proxy
def _reference_atoms(symbol: str):
    """ASE reference state of an element: its bulk crystal, a dimer or an atom in a box for
    molecular/atomic ones, else None (no full crystal data in ASE)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    state = reference_states[atomic_numbers[symbol]] or {}
    kind = state.get("symmetry")
    if kind == "diatom":
        atoms = Atoms(symbol * 2, positions=[[0, 0, 0], [0, 0, state["d"]]],
                      cell=[MOLECULE_BOX_A] * 3, pbc=True)
        atoms.center()
        return atoms, "dimer in box", False
    if kind == "atom":
        return Atoms(symbol, cell=[MOLECULE_BOX_A] * 3, pbc=True), "atom in box", False
    try:
        return bulk(symbol), f"bulk {kind}", True
    except Exception:  # noqa: BLE001 - ASE lacks the basis of some complex elemental crystals
        return None


def _prototype_candidates(symbol: str):
    """Simple bcc / fcc / sc cells at a covalent-radius volume, for elements without ASE bulk data."""
    from ase.build import bulk
    from ase.data import atomic_numbers, covalent_radii

    r = float(covalent_radii[atomic_numbers[symbol]])
    return [(bulk(symbol, "fcc", a=2 * math.sqrt(2) * r), "fcc prototype"),
            (bulk(symbol, "bcc", a=4 * r / math.sqrt(3)), "bcc prototype"),
            (bulk(symbol, "sc", a=2 * r), "sc prototype")]


def elemental_reference(symbol: str, *, potential: str = "chgnet", cache_dir: str | Path | None = None,
                        max_steps: int = REFERENCE_RELAX["max_steps"]) -> dict:
    """Energy per atom (eV) of ``symbol`` in its ASE reference structure relaxed with ``potential``
    (cached as JSON under ``<cache_dir>/hull_references/<potential>/``). Elements without an ASE
    crystal get the lowest of relaxed fcc/bcc/sc prototypes, and the record says so."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from matflow.atomistic.potentials import canonical_name

    potential = canonical_name(potential)
    if cache_dir is None:
        from matflow.settings import get_settings

        cache_dir = get_settings().cache_dir
    tag = hashlib.sha256(json.dumps({**REFERENCE_RELAX, "max_steps": max_steps},
                                    sort_keys=True).encode()).hexdigest()[:8]
    path = Path(cache_dir) / "hull_references" / potential / f"{symbol}-{tag}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ref = _reference_atoms(symbol)
    trials = [ref] if ref is not None else [(a, n, True) for a, n in _prototype_candidates(symbol)]
    best = None
    for atoms, label, cell in trials:
        relaxer = _relaxer(potential, REFERENCE_RELAX["fmax_eV_per_A"], int(max_steps), cell)
        result = relaxer.relax(AseAtomsAdaptor.get_structure(atoms), source=f"{symbol} {label}")
        if math.isfinite(result.final_energy_eV_per_atom) and (
                best is None or result.final_energy_eV_per_atom < best["energy_eV_per_atom"]):
            best = {"element": symbol, "reference": label, "potential": potential,
                    "energy_eV_per_atom": result.final_energy_eV_per_atom,
                    "converged": result.converged, "structure": result.structure}
    if best is None:
        raise ValueError(f"element {symbol}: no finite reference energy from {potential}")
    from matflow.outputs import atomic_write_text

    atomic_write_text(path, json.dumps(best))
    return json.loads(path.read_text())  # the same values a cached call returns


def relaxed_dataset_references(candidates: Sequence[Structure], *, potential: str = "chgnet",
                               dataset: str = "perov_5", cache_dir: str | Path | None = None,
                               max_steps: int = REFERENCE_RELAX["max_steps"]
                               ) -> list[tuple[Structure, float]]:
    """``(relaxed structure, total energy eV)`` of the bundled ``dataset`` crystals whose chemical
    system lies within some candidate's, relaxed with ``potential`` (cached per crystal under
    ``<cache_dir>/hull_references/<potential>/dataset/``); a crystal that fails is left out."""
    from matflow.atomistic.potentials import canonical_name
    from matflow.structures import structure_hash

    potential = canonical_name(potential)
    if cache_dir is None:
        from matflow.settings import get_settings

        cache_dir = get_settings().cache_dir
    systems = {frozenset(el.symbol for el in s.composition.elements) for s in candidates}
    _, refs = dataset_references(dataset, chemical_systems=list(systems))
    out = []
    for ref in refs:
        path = (Path(cache_dir) / "hull_references" / potential / "dataset"
                / f"{structure_hash(ref)}-{max_steps}.json")
        if not path.is_file():
            result = relax_sample(ref, potential=potential, max_steps=max_steps,
                                  fmax_eV_per_A=REFERENCE_RELAX["fmax_eV_per_A"], source="reference")
            if not result["ok"]:
                continue
            from matflow.outputs import atomic_write_text

            atomic_write_text(path, json.dumps({"structure": result["structure"],
                                                "energy_eV": result["energy_eV"]}))
        record = json.loads(path.read_text())
        out.append((Structure.from_dict(record["structure"]), float(record["energy_eV"])))
    return out


def hull_proxy(candidates: Sequence[tuple[Any, Structure, float]], *, potential: str = "chgnet",
               references: Sequence[tuple[Structure, float]] = (), cache_dir: str | Path | None = None,
               reference_max_steps: int = REFERENCE_RELAX["max_steps"]) -> dict[Any, dict]:
    """Energy above the convex hull (eV/atom) of each candidate ``(key, structure, total energy eV)``.

    A potential-based stability proxy, not a DFT hull: every energy (elements, ``references`` given
    as ``(structure, total energy eV)`` relaxed with the same potential, and the candidates) comes
    from ``potential``. Returns ``{key: {"e_above_hull_eV_per_atom", "hull_reason"}}``; a candidate
    whose elements have no reference gets NaN with the reason.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

    out: dict[Any, dict] = {}
    elements = sorted({el.symbol for _, s, _ in candidates for el in s.composition.elements})
    element_entries, missing = [], {}
    for symbol in elements:
        try:
            ref = elemental_reference(symbol, potential=potential, cache_dir=cache_dir,
                                      max_steps=reference_max_steps)
            element_entries.append(PDEntry(symbol, ref["energy_eV_per_atom"], name=f"{symbol} ref"))
        except Exception as exc:  # noqa: BLE001 - that element's candidates get a reason instead
            missing[symbol] = f"{type(exc).__name__}: {exc}"
    covered = set(elements) - set(missing)
    ref_entries = [PDEntry(s.composition, e, name="reference") for s, e in references
                   if math.isfinite(e) and {el.symbol for el in s.composition.elements} <= covered]
    cand_entries = {}
    for key, s, energy in candidates:
        lacking = [el.symbol for el in s.composition.elements if el.symbol in missing]
        if lacking or not math.isfinite(energy):
            reason = (f"no elemental reference for {', '.join(lacking)} ({missing[lacking[0]]})"
                      if lacking else "non-finite energy")
            out[key] = {"e_above_hull_eV_per_atom": float("nan"), "hull_reason": reason}
            continue
        cand_entries[key] = PDEntry(s.composition, energy, name=str(key))
    # one phase diagram per chemical system: a hull over all elements at once is high-dimensional
    # and slow, and entries outside a candidate's system never lie on its hull facet anyway
    pool = element_entries + ref_entries + list(cand_entries.values())
    systems: dict[frozenset, list] = defaultdict(list)
    for key, entry in cand_entries.items():
        systems[frozenset(el.symbol for el in entry.composition.elements)].append(key)
    for system, keys in systems.items():
        try:
            diagram = PhaseDiagram([e for e in pool if {el.symbol for el in e.composition.elements}
                                    <= system])
            hull = {k: (float(diagram.get_e_above_hull(cand_entries[k])), None) for k in keys}
        except Exception as exc:  # noqa: BLE001 - the table keeps its rows, with the reason
            hull = {k: (float("nan"), f"phase diagram failed: {type(exc).__name__}: {exc}")
                    for k in keys}
        for key, (value, reason) in hull.items():
            out[key] = {"e_above_hull_eV_per_atom": value, "hull_reason": reason}
    return out


# ------------------------------------------------------------------ predictions
def available_models(models: Sequence[str] = DEFAULT_MODELS) -> tuple[list[str], dict[str, str]]:
    """(models that load, {model: why it does not}); a missing model is a message, not a crash."""
    from matflow.pipeline.steps import model_info

    names, skipped = [], {}
    for name in models:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model_info(name)
        except Exception as exc:  # noqa: BLE001 - reported per model
            skipped[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            continue
        names.append(name)
    return names, skipped


def predict_sample(structure: Structure | dict, models: Sequence[str], *, source: str = "sample") -> dict:
    """``{"values": {column: value}, "errors": {model: reason}}`` for one relaxed structure; the
    columns are ``<model>:<target>`` (value) and ``<model>:<target>_lower/_upper`` (interval)."""
    from matflow.pipeline.steps import predict_structure

    s = Structure.from_dict(structure) if isinstance(structure, dict) else structure
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for model in models:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = predict_structure(s, model, source=source)
        except Exception as exc:  # noqa: BLE001 - one model failing leaves the others
            errors[model] = " ".join(str(getattr(exc, "reason", exc)).split())[:300]
            continue
        for row in rows:
            col = f"{model}:{row['target']}"
            values[col] = row["value"]
            values[f"{col}_lower"] = row["lower"]
            values[f"{col}_upper"] = row["upper"]
    return {"values": values, "errors": errors}


# ------------------------------------------------------------------ table
def assemble(samples: Sequence[Structure], relaxed: Sequence[dict], predictions: Sequence[dict | None],
             *, outdir: str | Path | None = None, references: Sequence[Structure] | None = None,
             reference_ids: Sequence[str] | None = None, potential: str = "chgnet",
             hull_references: Sequence[tuple[Structure, float]] = (),
             cache_dir: str | Path | None = None,
             reference_max_steps: int = REFERENCE_RELAX["max_steps"], hull: bool = True,
             novelty_dataset: str | None = None,
             sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The screening table from per-sample relax and predict records (``relax_sample``,
    ``predict_sample``): de-duplication and novelty, hull proxy, ``rank`` of the relaxed unique
    candidates by the hull proxy (then energy per atom), and, with ``outdir``, the CIFs
    of relaxed unique candidates and ``screen.csv`` / ``screen.parquet``. Novelty is judged
    against ``references`` or, when None, the bundled ``novelty_dataset`` (e.g. ``"perov_5"``)."""
    from matflow.generate.metrics import compositional_validity, structural_validity

    sources = list(sources) if sources is not None else [f"cdvae_{i:04d}" for i in range(len(samples))]
    final = [Structure.from_dict(r["structure"]) if r.get("ok") else None for r in relaxed]
    if references is None and novelty_dataset is not None:
        reference_ids, references = dataset_references(
            novelty_dataset, formulas=sorted({s.composition.reduced_formula for s in final if s}))
    dedup = deduplicate(final, references, reference_ids)
    hull_rows: dict[int, dict] = {}
    if hull:
        cands = [(i, s, relaxed[i]["energy_eV"]) for i, s in enumerate(final)
                 if s is not None and dedup[i]["duplicate_of"] is None]
        hull_rows = hull_proxy(cands, potential=potential, references=hull_references,
                               cache_dir=cache_dir, reference_max_steps=reference_max_steps)
    rows = []
    for i, (sample, rec) in enumerate(zip(samples, relaxed, strict=True)):
        row: dict[str, Any] = {"id": sources[i], "formula": sample.composition.reduced_formula,
                               "n_atoms": len(sample)}
        try:
            row["structurally_valid"] = bool(structural_validity(sample))
            row["compositionally_valid"] = bool(compositional_validity(sample.composition))
        except Exception:  # noqa: BLE001 - a degenerate sample is simply not valid
            row["structurally_valid"] = row["compositionally_valid"] = False
        row.update(dedup[i])
        row["status"] = "ok" if rec.get("ok") else "failed"
        row["reason"] = None if rec.get("ok") else f"{rec.get('step', 'relax')}: {rec.get('reason')}"
        row["relaxed_formula"] = rec.get("formula")
        row["energy_eV_per_atom"] = rec.get("energy_eV_per_atom", float("nan"))
        row["converged"] = rec.get("converged")
        dup = dedup[i]["duplicate_of"]
        h = hull_rows.get(i if dup is None else dup, {})
        row["e_above_hull_eV_per_atom"] = h.get("e_above_hull_eV_per_atom", float("nan"))
        row["hull_reason"] = h.get("hull_reason")
        pred = predictions[i] if i < len(predictions) else None
        if pred:
            row.update(pred["values"])
            row["predict_errors"] = "; ".join(f"{m}: {r}" for m, r in pred["errors"].items()) or None
        row["cif"] = None
        rows.append(row)
    table = pd.DataFrame(rows)
    # rank 1 = lowest hull proxy among the relaxed unique candidates (ties: lower energy per atom)
    unique = table[(table["status"] == "ok") & table["duplicate_of"].isna()]
    order = unique.sort_values(["e_above_hull_eV_per_atom", "energy_eV_per_atom"],
                               na_position="last").index
    table["rank"] = pd.Series(range(1, len(order) + 1), index=order, dtype="Int64")
    if outdir is not None:
        table = _write(table, final, Path(outdir))
    return table


def _write(table: pd.DataFrame, final: Sequence[Structure | None], outdir: Path) -> pd.DataFrame:
    from matflow.outputs import atomic_write, atomic_write_text

    cif_dir = outdir / "relaxed"
    cif_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(final):
        if s is not None and pd.isna(table.at[i, "duplicate_of"]):
            path = cif_dir / f"{table.at[i, 'id']}.cif"
            atomic_write_text(path, s.to(fmt="cif"))
            table.at[i, "cif"] = str(path.relative_to(outdir))
    table["duplicate_of"] = table["duplicate_of"].astype("Int64")
    atomic_write_text(outdir / "screen.csv", table.to_csv(index=False))
    atomic_write(outdir / "screen.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    return table


def screen_generated(samples: Sequence[Structure], *, outdir: str | Path | None = None,
                     potential: str = "chgnet", max_steps: int = 300, fmax_eV_per_A: float = 0.05,
                     models: Sequence[str] = DEFAULT_MODELS,
                     references: Sequence[Structure] | None = None,
                     reference_ids: Sequence[str] | None = None,
                     hull_references: Sequence[tuple[Structure, float]] = (),
                     cache_dir: str | Path | None = None,
                     reference_max_steps: int = REFERENCE_RELAX["max_steps"],
                     hull_dataset: str | None = None, novelty_dataset: str | None = None,
                     sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Relax every sample, predict the relaxed ones with the ``models`` that load, then
    ``assemble`` the table (one row per sample; failures keep their row with ``status="failed"``
    and the reason). ``e_above_hull_eV_per_atom`` is a potential-based proxy, not a DFT hull;
    ``hull_dataset`` (e.g. ``"perov_5"``) adds that dataset's crystals of the candidates' chemical
    systems, relaxed with the same potential, to the hull."""
    sources = list(sources) if sources is not None else [f"cdvae_{i:04d}" for i in range(len(samples))]
    names, skipped = available_models(models)
    relaxed = [relax_sample(s, potential=potential, max_steps=max_steps, fmax_eV_per_A=fmax_eV_per_A,
                            source=src) for s, src in zip(samples, sources, strict=True)]
    predictions = [predict_sample(r["structure"], names, source=r["source"]) if r["ok"] else None
                   for r in relaxed]
    for p in predictions:
        if p is not None:
            p["errors"].update({m: f"not loaded ({why})" for m, why in skipped.items()})
    if hull_dataset is not None:
        hull_references = list(hull_references) + relaxed_dataset_references(
            [Structure.from_dict(r["structure"]) for r in relaxed if r["ok"]], potential=potential,
            dataset=hull_dataset, cache_dir=cache_dir, max_steps=reference_max_steps)
    return assemble(samples, relaxed, predictions, outdir=outdir, references=references,
                    reference_ids=reference_ids, potential=potential,
                    hull_references=hull_references, cache_dir=cache_dir,
                    reference_max_steps=reference_max_steps, novelty_dataset=novelty_dataset,
                    sources=sources)
