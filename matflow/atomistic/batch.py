"""Run relax, MD and phonons over structure files (files, directories, globs) for the CLI and flows.

Each function reads and validates inputs with ``matflow.io.read_structures``, runs every good
structure, writes one output folder per structure under ``outdir`` and returns a summary with the
per-input failures (file and reason). One bad input never stops the batch.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from matflow.io import FailedInput, read_structures


def _slug(source: str) -> str:
    name = Path(source.split("@")[0]).stem + (f"_{source.split('@')[1]}" if "@" in source else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "structure"


def _unique_dirs(sources: Sequence[str], outdir: Path) -> list[Path]:
    seen: dict[str, int] = {}
    out = []
    for src in sources:
        slug = _slug(src)
        seen[slug] = seen.get(slug, 0) + 1
        out.append(outdir / (slug if seen[slug] == 1 else f"{slug}_{seen[slug]}"))
    return out


def _summary(kind: str, outdir: Path, ok: list[dict], failures: list[FailedInput]) -> dict:
    summary = {"kind": kind, "outdir": str(outdir), "n_ok": len(ok), "n_failed": len(failures),
               "results": ok, "failures": [asdict(f) for f in failures]}
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{kind}_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _run_batch(kind: str, inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike,
               run_one: Callable[[object, Path], dict],
               on_start: Callable[[str], None] | None = None,
               prepare: Callable[[], object] | None = None) -> dict:
    """Read inputs, call ``run_one(item, folder)`` per good structure and collect results and failures.

    One folder per structure under ``outdir``; an exception on one structure becomes a failure row
    (file and reason) and the batch goes on. ``prepare`` (e.g. building the calculator, which
    validates its options) runs once, outside the per-structure guard, when there is work to do.
    """
    outdir = Path(outdir)
    batch = read_structures(list(inputs))
    failures = list(batch.failures)
    ok = []
    dirs = _unique_dirs([s.source for s in batch.structures], outdir)
    if batch.structures and prepare is not None:
        prepare()
    for item, folder in zip(batch.structures, dirs, strict=True):
        if on_start:
            on_start(item.source)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok.append(run_one(item, folder))
        except Exception as exc:  # one bad structure must not stop the batch (MD keeps its last frame)
            failures.append(FailedInput(item.source, f"{type(exc).__name__}: {exc}"))
    return _summary(kind, outdir, ok, failures)


def relax_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                on_start: Callable[[str], None] | None = None, **options) -> dict:
    """Relax every structure; writes ``<name>/relaxed.cif`` and ``<name>/relax.json``."""
    from pymatgen.core import Structure

    from matflow.atomistic.relax import RelaxCalc

    calc = functools.cache(lambda: RelaxCalc(**options))  # built only when a structure is good

    def run_one(item, folder: Path) -> dict:
        res = calc().relax(item.structure, source=item.source, trajectory=folder / "relax.traj")
        Structure.from_dict(res.structure).to(filename=str(folder / "relaxed.cif"))
        (folder / "relax.json").write_text(json.dumps(res.to_dict(), indent=1))
        return ({k: v for k, v in res.to_dict().items() if k not in ("structure", "versions")}
                | {"output": str(folder)})

    return _run_batch("relax", inputs, outdir, run_one, on_start, prepare=calc)


def md_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, settings=None, *,
             analyze: bool = True, progress: Callable[[str, int, int], None] | None = None,
             on_start: Callable[[str], None] | None = None) -> dict:
    """MD for every structure in ``<name>/`` (resumes from a checkpoint there) plus analysis plots."""
    from matflow.atomistic.analysis import analyze_trajectory
    from matflow.atomistic.md import MDSettings, run_md

    settings = settings or MDSettings()
    settings.validate()

    def run_one(item, folder: Path) -> dict:
        cb = (lambda step, n, src=item.source: progress(src, step, n)) if progress else None
        res = run_md(item.structure, folder, settings, progress=cb)
        row = {k: v for k, v in res.to_dict().items() if k not in ("versions", "settings")}
        row["source"] = item.source
        if analyze:
            report = analyze_trajectory(res.trajectory, folder / "analysis")
            (folder / "analysis.json").write_text(json.dumps(report, indent=1, default=float))
            row["analysis"] = {k: report[k] for k in ("equilibration_cut_time_fs", "series",
                                                      "rdf_first_peak_A", "diffusion")}
        return row

    return _run_batch("md", inputs, outdir, run_one, on_start)


def phonons_files(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                  on_start: Callable[[str], None] | None = None, **options) -> dict:
    """Phonons for every structure; writes ``<name>/phonons.json`` (DOS, S, Cv, F on the T grid)."""
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
                "min_frequency_THz": res.min_frequency_THz, "wall_time_s": res.wall_time_s}

    return _run_batch("phonons", inputs, outdir, run_one, on_start, prepare=calc)
