"""Resumable phonon-DOS labelling of whole datasets with a universal potential.

Every structure gets, from phonopy finite displacements on the chosen potential's forces: its
phonon DOS on one fixed frequency grid (``thermo.FrequencyGrid``: states per THz per atom, 3 modes
per atom), S_vib, Cv and F_vib on 5–800 K computed from that DOS (``thermo.thermo_from_dos``, so
labels and a DOS model's loss use the same formulas), the DOS's last peak, imaginary-mode flags and
the lowest frequency, and the wall time.

Why resumable: a dataset costs hours on a laptop core. Each finished structure is one small JSON
file ``<out_dir>/rows/<dataset>/<structure hash>.json`` written atomically, so a kill loses at most
the structure in progress and a rerun skips everything already there (failures are kept too, in
``failed/``, and skipped unless ``retry_failed``). ``run.json`` pins the potential, grid and
phonon settings: resuming with other settings is refused rather than mixing labels.
``consolidate_labels`` joins the rows into one parquet table and writes PROVENANCE.md.

Imaginary modes (below −``imaginary_tol_THz``; a geometry that is not a minimum of the potential)
are left out of the DOS, which is renormalised to 3 modes per atom; the row keeps
``has_imaginary_modes``, ``imaginary_fraction`` and ``min_frequency_THz`` so a model can see the
flag or the rows can be filtered.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from matflow.atomistic.thermo import (
    THZ_TO_CM1,
    FrequencyGrid,
    dos_grid,
    last_peak_THz,
    thermo_from_dos,
)
from matflow.outputs import atomic_write_text

LABEL_TEMPERATURES_K = tuple(float(t) for t in range(5, 801, 5))  # the DFPT fixture's 5–800 K grid
# DFT geometry as given, supercells >= 7 Å, 0.01 Å displacements: the settings validated against
# Alexandria DFT Cv(300 K) in benchmarks/potentials_phonons.py
LABEL_SETTINGS = dict(supercell_min_length_A=7.0, displacement_A=0.01, relax=False,
                      mesh_length_A=40.0, imaginary_tol_THz=0.1)
DATASETS = ("matbench_phonons", "alexandria_cv300", "vib_thermo_fixture")
LABEL_ORDERS = ("dataset", "size")
RUN_FILE, TABLE_FILE, PROVENANCE_FILE = "run.json", "phonon_labels.parquet", "PROVENANCE.md"


class LabelRunError(ValueError):
    """A labelling request that cannot run (unknown dataset, an out_dir holding another run's labels)."""


def _dataset_items(dataset: str | Mapping) -> tuple[str, Iterator[tuple[str, object, dict]]]:
    """(name, iterator of (id, structure, reference targets)) for a bundled dataset or a mapping."""
    if isinstance(dataset, Mapping):
        from ase import Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        return "custom", ((str(k), AseAtomsAdaptor.get_structure(s) if isinstance(s, Atoms) else s, {})
                          for k, s in dataset.items())
    from matflow import datasets

    if dataset == "matbench_phonons":
        df = datasets.load_matbench_phonons()
        return dataset, ((f"{r.matbench_index}:{r.mp_id}", r.structure,
                          {"ref_last_phdos_peak_cm1": float(r["last_phdos_peak_cm-1"])})
                         for _, r in df.iterrows())
    if dataset == "alexandria_cv300":
        df = datasets.load_alexandria_cv300()
        return dataset, ((f"{i}:{r.mp_id}", r.structure,
                          {"ref_cv_300K_J_per_K_mol_atom": float(r.cv_300K_J_per_K_mol_atom)})
                         for i, r in df.iterrows())
    if dataset == "vib_thermo_fixture":
        df = datasets.load_vib_thermo_fixture()
        return dataset, ((str(r.mp_id), r.structure,
                          {"ref_S_300K_J_per_K_mol_atom": float(np.interp(
                              300.0, r.temperatures_K, r.S_J_per_K_mol_atom))})
                         for _, r in df.iterrows())
    raise LabelRunError(f"dataset {dataset!r}: unknown; choose one of {', '.join(DATASETS)} "
                        "or pass a mapping id -> structure")


def _run_record(potential: str, grid: FrequencyGrid, settings: dict) -> dict:
    from matflow.atomistic.potentials import canonical_name

    return {"potential": canonical_name(potential), "grid": asdict(grid),
            "grid_description": grid.describe(), "temperatures_K": list(LABEL_TEMPERATURES_K),
            "phonon_settings": settings}


def _pin_run(out_dir: Path, record: dict) -> None:
    """Write run.json, or check that an existing one describes the same labelling."""
    path = out_dir / RUN_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diffs = [k for k in record if old.get(k) != record[k]]
        if diffs:
            raise LabelRunError(f"{out_dir}: holds labels made with other {', '.join(diffs)} "
                                f"({ {k: old.get(k) for k in diffs} }); use another out_dir")
        return
    atomic_write_text(path, json.dumps(record, indent=1))


def _compact(values, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=float)]


def label_structure(structure, calc, grid: FrequencyGrid | None = None) -> dict:
    """One label row: DOS on ``grid``, S/Cv/F on ``LABEL_TEMPERATURES_K``, last peak, flags, time."""
    from matflow.structures import structure_hash

    grid = grid or FrequencyGrid()
    t0 = time.perf_counter()
    res, ph = calc.run_with_phonopy(structure)
    freqs, qweights = ph.mesh.frequencies, ph.mesh.weights
    dos = dos_grid(freqs, qweights, grid, cutoff_THz=0.0)
    thermo = thermo_from_dos(dos, LABEL_TEMPERATURES_K, grid)
    peak = last_peak_THz(dos, grid)
    return {
        "structure_hash": structure_hash(structure), "formula": res.formula, "n_atoms": res.n_atoms,
        "dos_states_per_THz_per_atom": _compact(dos),
        "S_J_per_K_mol_atom": _compact(thermo["S_J_per_K_mol_atom"]),
        "Cv_J_per_K_mol_atom": _compact(thermo["Cv_J_per_K_mol_atom"]),
        "F_kJ_per_mol_atom": _compact(thermo["F_kJ_per_mol_atom"]),
        "last_peak_THz": peak, "last_peak_cm1": peak * THZ_TO_CM1,
        "has_imaginary_modes": res.has_imaginary_modes,
        "imaginary_fraction": res.imaginary_fraction,
        "min_frequency_THz": res.min_frequency_THz, "max_frequency_THz": res.max_frequency_THz,
        "supercell_matrix": res.supercell_matrix, "n_displacements": res.n_displacements,
        "wall_time_s": time.perf_counter() - t0,
    }


_WORKER: dict = {}


def _worker_init(potential: str, settings: dict, threads: int) -> None:
    from matflow.atomistic.model import set_torch_threads
    from matflow.atomistic.phonons import PhononCalc

    set_torch_threads(threads)
    _WORKER["calc"] = PhononCalc(potential=potential, **settings)


def _worker_label(job: tuple) -> tuple[str, dict | None, str | None]:
    key, structure, grid = job
    try:
        return key, label_structure(structure, _WORKER["calc"], grid), None
    except Exception as exc:  # a bad structure becomes a failure row, the run goes on
        return key, None, f"{type(exc).__name__}: {exc}"


def label_dataset(dataset: str | Mapping, potential: str, out_dir: str | os.PathLike, *,
                  limit: int | None = None, n_workers: int = 1, retry_failed: bool = False,
                  order: str = "dataset",
                  grid: FrequencyGrid | None = None, settings: dict | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Label the first ``limit`` structures (all when None) of ``dataset`` with ``potential``.

    ``dataset``: a bundled name (``DATASETS``) or a mapping id -> structure. Finished structures
    (a row or, unless ``retry_failed``, a failure in ``out_dir``) are skipped, so calling again
    resumes. ``order``: "dataset" labels in dataset order, "size" the pending structures with the
    fewest atoms first (the cost grows steeply with cell size, so a sitting labels more of them; the
    set labelled in the end is the same). ``n_workers`` > 1 runs structures in that many processes of
    one torch thread each, and each finished structure is written at once.
    ``settings`` overrides ``LABEL_SETTINGS`` (supercell, displacement, mesh). ``progress(id, done,
    total)`` is called after each structure. Returns counts for this call.
    """
    from matflow.atomistic.phonons import PhononCalc
    from matflow.structures import structure_hash

    if n_workers < 1:
        raise LabelRunError(f"n_workers={n_workers}: need at least 1")
    if order not in LABEL_ORDERS:
        raise LabelRunError(f"order={order!r}: choose one of {', '.join(LABEL_ORDERS)}")
    if limit is not None and limit < 0:
        raise LabelRunError(f"limit={limit}: need >= 0 or None")
    grid = grid or FrequencyGrid()
    settings = {**LABEL_SETTINGS, **(settings or {})}
    name, items = _dataset_items(dataset)
    out_dir = Path(out_dir)
    record = _run_record(potential, grid, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    _pin_run(out_dir, record)
    rows_dir, failed_dir = out_dir / "rows" / name, out_dir / "failed" / name
    rows_dir.mkdir(parents=True, exist_ok=True)
    failed_dir.mkdir(parents=True, exist_ok=True)

    pending, n_seen, n_skipped = [], 0, 0
    for ident, structure, refs in items:
        if limit is not None and n_seen >= limit:
            break
        n_seen += 1
        key = structure_hash(structure)
        if (rows_dir / f"{key}.json").exists() or (
                not retry_failed and (failed_dir / f"{key}.json").exists()):
            n_skipped += 1
            continue
        pending.append((key, ident, structure, refs))
    if order == "size":
        pending.sort(key=lambda job: len(job[2]))  # stable: dataset order among equal sizes

    stats = {"dataset": name, "out_dir": str(out_dir), "potential": record["potential"],
             "n_considered": n_seen, "n_skipped_done": n_skipped, "n_labelled": 0, "n_failed": 0,
             "wall_time_s": 0.0}
    t_start = time.perf_counter()
    meta = {key: (ident, refs) for key, ident, _, refs in pending}

    def save(key: str, row: dict | None, reason: str | None) -> None:
        ident, refs = meta[key]
        head = {"dataset": name, "id": ident, "potential": record["potential"], **refs}
        if row is not None:
            atomic_write_text(rows_dir / f"{key}.json", json.dumps({**head, **row}))
            (failed_dir / f"{key}.json").unlink(missing_ok=True)
            stats["n_labelled"] += 1
        else:
            atomic_write_text(failed_dir / f"{key}.json",
                              json.dumps({**head, "structure_hash": key, "reason": reason}))
            stats["n_failed"] += 1
        if progress is not None:
            progress(ident, stats["n_labelled"] + stats["n_failed"], len(pending))

    try:
        if n_workers == 1 or len(pending) <= 1:
            calc = PhononCalc(potential=potential, **settings) if pending else None
            for key, _, structure, _ in pending:
                try:
                    row, reason = label_structure(structure, calc, grid), None
                except Exception as exc:  # one bad structure must not stop the run
                    row, reason = None, f"{type(exc).__name__}: {exc}"
                save(key, row, reason)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")  # no forked torch state
            with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(potential, settings, 1)) as pool:
                futures = [pool.submit(_worker_label, (key, structure, grid))
                           for key, _, structure, _ in pending]
                for future in as_completed(futures):  # saved as each finishes, not in submission order
                    save(*future.result())
    finally:
        stats["wall_time_s"] = time.perf_counter() - t_start
    return stats


def _read_rows(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*/*.json")):
        try:
            rows.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:  # cannot happen with atomic writes; a hand-edited file is reported
            rows.append({"structure_hash": path.stem, "dataset": path.parent.name,
                         "reason": f"unreadable row file {path}"})
    return rows


def consolidate_labels(out_dir: str | os.PathLike) -> Path:
    """Join every row in ``out_dir`` into ``phonon_labels.parquet`` and write PROVENANCE.md.

    Safe to run while labelling goes on (it reads finished rows only); returns the table's path.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    if not (out_dir / RUN_FILE).exists():
        raise LabelRunError(f"{out_dir}: no {RUN_FILE}; not a labelling folder")
    record = json.loads((out_dir / RUN_FILE).read_text(encoding="utf-8"))
    rows = _read_rows(out_dir / "rows")
    failed = _read_rows(out_dir / "failed")
    table = pd.DataFrame(rows)
    path = out_dir / TABLE_FILE
    tmp = out_dir / f".{TABLE_FILE}.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    atomic_write_text(out_dir / PROVENANCE_FILE, _provenance_text(record, table, failed))
    return path


def _provenance_text(record: dict, table, failed: list[dict]) -> str:
    from matflow.atomistic.model import package_versions
    from matflow.atomistic.potentials import load_potential

    prov = load_potential(record["potential"]).provenance()
    lines = ["# phonon_labels — phonon DOS and harmonic S_vib, Cv, F_vib from a universal potential",
             "", "Written by `matflow.atomistic.labels.consolidate_labels`; rows in `rows/<dataset>/"
             "<structure hash>.json`, failures in `failed/`.", "",
             f"- Potential: `{record['potential']}` — {prov.get('model')}, {prov.get('package')} "
             f"{prov.get('package_version')}, weights `{prov.get('weights_file')}` sha256 "
             f"`{prov.get('weights_sha256')}`",
             f"- Phonons: phonopy finite displacements, settings {json.dumps(record['phonon_settings'])}"
             " (diagonal supercell whose perpendicular widths are all >= the minimum length; forces "
             "of the undisplaced supercell subtracted)",
             f"- DOS grid: {record['grid_description']}; mesh frequencies binned with q-point weights",
             f"- Temperatures: {record['temperatures_K'][0]:g}–{record['temperatures_K'][-1]:g} K "
             f"in {len(record['temperatures_K'])} points; S, Cv in J/K/mol-atom, F in kJ/mol-atom "
             "(zero-point energy included), computed from the binned DOS",
             f"- Package versions: {json.dumps(package_versions())}", ""]
    lines.append("## Counts")
    if len(table):
        for name, part in table.groupby("dataset"):
            n_imag = int(part["has_imaginary_modes"].sum())
            lines.append(f"- {name}: {len(part)} structures labelled, {n_imag} with imaginary modes "
                         f"({100 * n_imag / len(part):.0f} %), wall time {part['wall_time_s'].sum():.0f}"
                         f" s (median {part['wall_time_s'].median():.2f} s per structure)")
    else:
        lines.append("- no structure labelled yet")
    n_failed = {}
    for row in failed:
        n_failed[row.get("dataset")] = n_failed.get(row.get("dataset"), 0) + 1
    for name, n in sorted(n_failed.items()):
        lines.append(f"- {name}: {n} structures failed (reasons in `failed/{name}/`)")
    lines += ["", "## Imaginary modes",
              "Modes below -imaginary_tol_THz mean the geometry (DFT, not relaxed with the potential) "
              "is not a minimum of the potential. They are left out of the DOS, which is then "
              "renormalised to 3 modes per atom, and S, Cv, F follow from that DOS. Each row keeps "
              "`has_imaginary_modes`, `imaginary_fraction` and `min_frequency_THz`: a model gets the "
              "flag as an input, or training drops flagged rows; the counts are above.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m matflow.atomistic.labels``: label datasets in turn, then consolidate; rerun the
    same command to resume."""
    import argparse

    from matflow.atomistic.model import set_torch_threads

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--datasets", nargs="+", default=["matbench_phonons", "alexandria_cv300"],
                    choices=DATASETS)
    ap.add_argument("--potential", default="sevenn-0")
    ap.add_argument("--out-dir", type=Path, default=Path("data/phonon_labels"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--order", choices=LABEL_ORDERS, default="dataset",
                    help="'size': pending structures with the fewest atoms first")
    args = ap.parse_args(argv)
    set_torch_threads(args.threads)
    t0 = time.perf_counter()

    def report(ident: str, done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9) * 3600
        print(f"{time.strftime('%H:%M:%S')} {ident}: {done}/{total} ({rate:.0f} structures/h)",
              flush=True)

    try:
        for name in args.datasets:
            stats = label_dataset(name, args.potential, args.out_dir, limit=args.limit,
                                  n_workers=args.workers, order=args.order, progress=report)
            print(json.dumps(stats), flush=True)
            t0 = time.perf_counter()
    finally:
        print(f"consolidated: {consolidate_labels(args.out_dir)}", flush=True)


if __name__ == "__main__":
    main()
