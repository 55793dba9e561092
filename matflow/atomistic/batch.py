"""Run relax, MD and phonons over structure files (files, directories, globs) for the CLI and flows.

Each function reads and validates inputs with ``matflow.io.read_structures``, runs every good
structure, writes one output folder per structure under ``outdir`` and returns a summary with the
per-input failures (file and reason). One bad input never stops the batch.

A structure's folder is ``<readable name>-<8 hex digits of its structure hash>`` (``run_folder``),
so it does not depend on the order or the subset of the inputs: rerunning some of them finds their
own earlier runs (MD resumes or extends its checkpoint there). ``<kind>_summary.json`` in ``outdir``
accumulates: a call replaces the entries of the structures and inputs it touched and keeps the
others, while the summary a call returns describes that call only.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from matflow.io import LoadedStructure, read_structures
from matflow.outputs import atomic_write_text
from matflow.structures import structure_hash


def _slug(source: str) -> str:
    """The readable part of a folder name: the file stem (POSCAR/CONTCAR prefixed with their folder's
    name, e.g. ``NaCl_POSCAR``), plus ``_<i>`` for frame i of a multi-structure file."""
    base, sep, frame = source.rpartition("@")
    if not sep or not frame.isdigit():
        base, frame = source, ""
    path = Path(base)
    name = path.stem
    if name.upper().startswith(("POSCAR", "CONTCAR")) and path.parent.name:
        name = f"{path.parent.name}_{name}"
    if frame:
        name += f"_{frame}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "structure"


def run_folder(item: LoadedStructure, outdir: str | os.PathLike) -> Path:
    """``outdir/<slug>-<hash8>``: the same structure from the same file name always gets the same
    folder; different structures never share one (the hash is ``matflow.structures.structure_hash``,
    independent of site order)."""
    return Path(outdir) / f"{_slug(item.source)}-{structure_hash(item.structure)[:8]}"


def merge_summary(kind: str, outdir: Path, ok: list[dict], failures: list[dict],
             touched_folders: set[str], sources: set[str]) -> dict:
    """This call's summary, merged into ``<kind>_summary.json``: earlier rows are kept unless their
    folder was run again or their input was read again now (results and failures alike). Failure
    rows in the file also name their folder; the returned ones are ``FailedInput`` fields only."""
    summary = {"kind": kind, "outdir": str(outdir), "n_ok": len(ok), "n_failed": len(failures),
               "results": ok, "failures": [{"source": f["source"], "reason": f["reason"]}
                                           for f in failures]}
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{kind}_summary.json"
    old: dict = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:  # keep an unreadable summary aside rather than overwrite it
            os.replace(path, path.with_suffix(".json.unreadable"))

    def keep(row: dict) -> bool:
        return row.get("folder") not in touched_folders and row.get("source") not in sources

    results = [r for r in old.get("results", []) if keep(r)] + ok
    failed = [f for f in old.get("failures", []) if keep(f)] + failures
    atomic_write_text(path, json.dumps({**summary, "n_ok": len(results), "n_failed": len(failed),
                                        "results": results, "failures": failed}, indent=1, default=str))
    return summary


def _run_batch(kind: str, inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike,
               run_one: Callable[[object, Path], dict],
               on_start: Callable[[str], None] | None = None,
               prepare: Callable[[], object] | None = None) -> dict:
    """Read inputs, call ``run_one(item, folder)`` per good structure and collect results and failures.

    One folder per structure (``run_folder``); inputs that are the same structure under the same
    name share it and are run once. An exception on one structure becomes a failure row (file and
    reason) and the batch goes on. ``prepare`` (e.g. building the calculator, which validates its
    options) runs once, outside the per-structure guard, when there is work to do. An interruption
    (KeyboardInterrupt, SystemExit) still writes the summary of what finished, then propagates.
    """
    outdir = Path(outdir)
    batch = read_structures(list(inputs))
    failures = [asdict(f) for f in batch.failures]
    sources = {s.source for s in batch.structures} | {f.source for f in batch.failures}
    ok: list[dict] = []
    reasons: dict[str, str | None] = {}  # folder name -> None (ok) or the failure reason
    if batch.structures and prepare is not None:
        prepare()
    try:
        for item in batch.structures:
            folder = run_folder(item, outdir)
            if folder.name in reasons:
                if reasons[folder.name] is not None:
                    failures.append({"source": item.source, "reason": reasons[folder.name],
                                     "folder": folder.name})
                continue
            if on_start:
                on_start(item.source)
            reasons[folder.name] = None
            try:
                folder.mkdir(parents=True, exist_ok=True)
                ok.append({**run_one(item, folder), "folder": folder.name})
            except Exception as exc:  # one bad structure must not stop the batch (MD keeps its frames)
                reasons[folder.name] = f"{type(exc).__name__}: {exc}"
                failures.append({"source": item.source, "reason": reasons[folder.name],
                                 "folder": folder.name})
    except BaseException:
        merge_summary(kind, outdir, ok, failures, set(reasons), sources)
        raise
    return merge_summary(kind, outdir, ok, failures, set(reasons), sources)


def relax_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                on_start: Callable[[str], None] | None = None, **options) -> dict:
    """Relax every structure; writes ``<name>/relaxed.cif`` and ``<name>/relax.json``.

    ``options`` are RelaxCalc's, ``potential`` among them (a ``load_potential`` name)."""
    from pymatgen.core import Structure

    from matflow.atomistic.relax import RelaxCalc

    calc = functools.cache(lambda: RelaxCalc(**options))  # built only when a structure is good

    def run_one(item, folder: Path) -> dict:
        res = calc().relax(item.structure, source=item.source, trajectory=folder / "relax.traj")
        Structure.from_dict(res.structure).to(filename=str(folder / "relaxed.cif"))
        (folder / "relax.json").write_text(json.dumps(res.to_dict(), indent=1))
        return ({k: v for k, v in res.to_dict().items()
                 if k not in ("structure", "versions", "potential")}
                | {"output": str(folder), "potential": res.potential.get("name")})

    return _run_batch("relax", inputs, outdir, run_one, on_start, prepare=calc)


def md_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, settings=None, *,
             analyze: bool = True, restart: bool = False,
             progress: Callable[[str, int, int], None] | None = None,
             on_start: Callable[[str], None] | None = None, potential: str = "chgnet") -> dict:
    """MD for every structure in its ``run_folder`` plus analysis plots, with ``potential``.

    A run found there is resumed, returned as is when finished, or extended when ``settings`` asks
    for more steps (see ``run_md``); ``restart=True`` discards it (and its analysis) first.
    """
    from matflow.atomistic.analysis import analyze_trajectory
    from matflow.atomistic.md import MDSettings, run_md
    from matflow.atomistic.potentials import canonical_name

    settings = settings or MDSettings()
    settings.validate()
    potential = canonical_name(potential)  # an unknown name fails the call, not every structure

    def run_one(item, folder: Path) -> dict:
        cb = (lambda step, n, src=item.source: progress(src, step, n)) if progress else None
        report_path = folder / "analysis.json"

        def drop_analysis() -> None:
            report_path.unlink(missing_ok=True)
            shutil.rmtree(folder / "analysis", ignore_errors=True)

        if restart:
            drop_analysis()
        res = run_md(item.structure, folder, settings, progress=cb, restart=restart,
                     potential=potential)
        if report_path.exists() and report_path.stat().st_mtime < Path(res.trajectory).stat().st_mtime:
            drop_analysis()  # analysis of a shorter trajectory than the one now there
        row = {k: v for k, v in res.to_dict().items() if k not in ("versions", "settings")}
        row["source"] = item.source
        row["potential"] = (res.potential or {}).get("name") or potential
        if analyze:
            report = analyze_trajectory(res.trajectory, folder / "analysis")
            report_path.write_text(json.dumps(report, indent=1, default=float))
            row["analysis"] = {k: report[k] for k in ("equilibration_cut_time_fs", "series",
                                                      "rdf_first_peak_A", "diffusion")}
        return row

    return _run_batch("md", inputs, outdir, run_one, on_start)


def phonons_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                  on_start: Callable[[str], None] | None = None, **options) -> dict:
    """Phonons for every structure; writes ``<name>/phonons.json`` (DOS, S, Cv, F on the T grid).

    ``options`` are PhononCalc's, ``potential`` among them (a ``load_potential`` name)."""
    from matflow.atomistic.phonons import PhononCalc

    calc = functools.cache(lambda: PhononCalc(**options))  # built only when a structure is good

    def run_one(item, folder: Path) -> dict:
        res = calc().run(item.structure)
        (folder / "phonons.json").write_text(json.dumps(res.to_dict(), indent=1))
        at300 = res.at(300.0)
        return {"source": item.source, "formula": res.formula, "output": str(folder),
                "S_300K_J_per_K_mol_atom": at300["S_J_per_K_mol_atom"],
                "Cv_300K_J_per_K_mol_atom": at300["Cv_J_per_K_mol_atom"],
                "F_300K_kJ_per_mol_atom": at300["F_kJ_per_mol_atom"],
                "has_imaginary_modes": res.has_imaginary_modes,
                "min_frequency_THz": res.min_frequency_THz, "wall_time_s": res.wall_time_s,
                "potential": res.potential.get("name")}

    return _run_batch("phonons", inputs, outdir, run_one, on_start, prepare=calc)
