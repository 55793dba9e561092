"""Prefect flows for atomistics with a universal potential (CHGNet by default): ``relax``, ``md``, ``phonons`` and ``label_vib_thermo``.

All work happens in ``matflow.atomistic.batch``; these flows split the inputs into chunks of files,
run one task per chunk (in parallel on Dask with ``flows.runners.with_settings_runner``), gather the
chunks into the batch function's summary, and end Completed only when some structure succeeded
(``flows.states.finish_batch``: failure table artifact, "n ok, m failed" message). Runs on Prefect's
ephemeral local server unless PREFECT_API_URL (or MATFLOW_PREFECT_API_URL) is set.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.futures import PrefectFuture

from flows.runners import chunk, local_task_runner
from flows.states import finish_batch
from matflow.settings import get_settings


def _work_items(inputs: list[str]) -> list[str]:
    """Inputs expanded to single files (directories and globs opened up), in order; an input that
    matches nothing is kept as it is so the batch function reports it with its reason."""
    from matflow.io import expand_inputs

    paths, unmatched = expand_inputs(inputs)
    return [str(p) for p in paths] + [f.source for f in unmatched]


def _outdir(outdir: str | None, name: str) -> str:
    return str(outdir) if outdir is not None else str(get_settings().run_dir / name)


def _gather(kind: str, outdir: str, futures: list[PrefectFuture], chunks: list[list[str]]) -> dict:
    """One summary, shaped like the batch function's, from the per-chunk task results.

    A chunk whose task failed even after its retries (e.g. a killed worker) becomes one failure row
    per input of that chunk, so the rest of the batch still counts. The chunks ran in parallel and
    each merged its rows into ``<kind>_summary.json``; concurrent writers can drop each other's
    rows, so the merged summary of the whole run is written once more at the end.
    """
    from matflow.atomistic.batch import merge_summary

    results: list[dict] = []
    failures: list[dict] = []
    for future, items in zip(futures, chunks, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            part = future.result()
            results += part["results"]
            failures += part["failures"]
        else:
            reason = f"task {state.name.lower()}: {state.message or 'no message'}"
            failures += [{"source": item, "reason": reason} for item in items]
    sources = {row["source"] for row in results} | {row["source"] for row in failures}
    folders = {row["folder"] for row in results if "folder" in row}
    return merge_summary(kind, Path(outdir), results, failures, folders, sources)


@task(name="chgnet-relax", retries=1, retry_delay_seconds=5)
def relax_task(inputs: list[str], outdir: str, options: dict) -> dict:
    from matflow.atomistic.batch import relax_files

    return relax_files(inputs, outdir, **options)


@flow(name="relax", log_prints=True, task_runner=local_task_runner())
def relax(inputs: list[str], outdir: str | None = None, fmax_eV_per_A: float = 0.05,
          relax_cell: bool = True, optimizer: str = "FIRE", max_steps: int = 500,
          pressure_GPa: float = 0.0, chunk_size: int | None = None, potential: str = "chgnet"):
    """Relax positions (and the cell) of every input structure with a universal potential (CHGNet
    by default), one task per chunk of input files (``chunk_size`` files; None = about 4 chunks per
    worker). ``outdir`` defaults to ``<run_dir>/relax_out``."""
    from matflow.atomistic.potentials import canonical_name

    outdir = _outdir(outdir, "relax_out")
    chunks = chunk(_work_items(list(inputs)), chunk_size)
    options = dict(fmax_eV_per_A=fmax_eV_per_A, relax_cell=relax_cell, optimizer=optimizer,
                   max_steps=max_steps, pressure_GPa=pressure_GPa,
                   potential=canonical_name(potential))  # an unknown name fails the flow once
    futures = relax_task.map(chunks, unmapped(outdir), unmapped(options)) if chunks else []
    summary = _gather("relax", outdir, list(futures), chunks)
    return finish_batch("chgnet-relax", summary, [
        f"- `{r['source']}`: {r['final_energy_eV_per_atom']:.4f} eV/atom, V {r['initial_volume_A3']:.2f}"
        f" → {r['final_volume_A3']:.2f} Å³, converged={r['converged']}" for r in summary["results"]],
        title=f"{potential} relax")


@task(name="chgnet-md", retries=1, retry_delay_seconds=5)
def md_task(inputs: list[str], outdir: str, settings: dict, analyze: bool,
            restart: bool = False, potential: str = "chgnet") -> dict:
    from prefect.runtime import task_run

    from matflow.atomistic.batch import md_files
    from matflow.atomistic.md import MDSettings

    # a retry resumes from the checkpoints in outdir: only the first attempt may start over
    first_attempt = (task_run.run_count or 1) <= 1
    return md_files(inputs, outdir, MDSettings(**settings), analyze=analyze,
                    restart=restart and first_attempt, potential=potential)


@flow(name="md", log_prints=True, task_runner=local_task_runner())
def md(inputs: list[str], outdir: str | None = None, ensemble: str = "nvt",
       temperature_K: float = 300.0, n_steps: int = 1000, timestep_fs: float | None = None,
       thermostat: str = "nose-hoover", barostat: str = "mtk", pressure_GPa: float = 0.0,
       traj_every: int = 1, checkpoint_every: int = 10, seed: int = 0, analyze: bool = True,
       restart: bool = False, chunk_size: int | None = None, potential: str = "chgnet"):
    """MD (universal potential, CHGNet by default) of every input structure (kill-safe: rerunning resumes from checkpoints, a larger
    n_steps extends finished runs; ``restart=True`` discards the runs of these inputs first).
    One task per chunk of input files; ``outdir`` defaults to ``<run_dir>/md_out``."""
    from matflow.atomistic.md import MDSettings
    from matflow.atomistic.potentials import canonical_name

    potential = canonical_name(potential)
    outdir = _outdir(outdir, "md_out")
    settings = dict(ensemble=ensemble, temperature_K=temperature_K, n_steps=n_steps,
                    timestep_fs=timestep_fs, thermostat=thermostat, barostat=barostat,
                    pressure_GPa=pressure_GPa, traj_every=traj_every,
                    checkpoint_every=checkpoint_every, seed=seed)
    MDSettings(**settings).validate()  # bad settings fail the flow once, not once per chunk
    chunks = chunk(_work_items(list(inputs)), chunk_size)
    futures = (md_task.map(chunks, unmapped(outdir), unmapped(settings), unmapped(analyze),
                           unmapped(restart), unmapped(potential)) if chunks else [])
    summary = _gather("md", outdir, list(futures), chunks)
    return finish_batch("chgnet-md", summary, [
        f"- `{r['source']}`: {r['n_steps']} steps, {r['n_frames']} frames, mean T "
        f"{r['mean_temperature_K']:.0f} K, trajectory `{r['trajectory']}`" for r in summary["results"]],
        title=f"{potential} md")


@task(name="chgnet-phonons", retries=1, retry_delay_seconds=5)
def phonons_task(inputs: list[str], outdir: str, options: dict) -> dict:
    from matflow.atomistic.batch import phonons_files

    return phonons_files(inputs, outdir, **options)


@flow(name="phonons", log_prints=True, task_runner=local_task_runner())
def phonons(inputs: list[str], outdir: str | None = None, supercell_min_length_A: float = 10.0,
            displacement_A: float = 0.01, relax: bool = True, t_max_K: float = 1000.0,
            t_step_K: float = 10.0, chunk_size: int | None = None, potential: str = "chgnet"):
    """Phonon DOS and S_vib, Cv, F_vib(T) per atom of every input structure (forces from
    ``potential``), one task per chunk of input files; ``outdir`` defaults to
    ``<run_dir>/phonons_out``."""
    from matflow.atomistic.potentials import canonical_name

    outdir = _outdir(outdir, "phonons_out")
    chunks = chunk(_work_items(list(inputs)), chunk_size)
    options = dict(supercell_min_length_A=supercell_min_length_A, displacement_A=displacement_A,
                   relax=relax, t_max_K=t_max_K, t_step_K=t_step_K,
                   potential=canonical_name(potential))
    futures = phonons_task.map(chunks, unmapped(outdir), unmapped(options)) if chunks else []
    summary = _gather("phonons", outdir, list(futures), chunks)
    return finish_batch("chgnet-phonons", summary, [
        f"- `{r['source']}`: S(300 K) {r['S_300K_J_per_K_mol_atom']:.2f}, Cv(300 K) "
        f"{r['Cv_300K_J_per_K_mol_atom']:.2f} J/K/mol-atom, imaginary modes: {r['has_imaginary_modes']}"
        for r in summary["results"]], title=f"{potential} phonons")


@task(name="chgnet-vib-labels", retries=1, retry_delay_seconds=5)
def label_task(inputs: list[str] | None, dataset: str | None, limit: int | None, output: str,
               temperatures_K: list[float], options: dict) -> dict:
    from matflow.atomistic.phonons import PhononCalc, label_vib_thermo
    from matflow.io import read_structures

    failures = []
    if dataset:
        from matflow import datasets

        loaders = {"vib_thermo_fixture": datasets.load_vib_thermo_fixture,
                   "alexandria_cv300": datasets.load_alexandria_cv300}
        if dataset not in loaders:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(loaders)}")
        df = loaders[dataset]()
        df = df.head(limit) if limit else df
        structures = list(df["structure"])
        sources = [f"{dataset}:{mid}" for mid in df["mp_id"]]
    else:
        batch = read_structures(list(inputs or []))
        failures += batch.failures
        structures = [s.structure for s in batch.structures]
        sources = [s.source for s in batch.structures]
    table, more = label_vib_thermo(structures, sources, temperatures_K=temperatures_K,
                                   calc=PhononCalc(**options))  # options carry the potential
    failures += more
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(output)
    return {"output": str(Path(output).resolve()), "n_ok": int(table["source"].nunique()) if len(table) else 0,
            "n_failed": len(failures), "n_rows": len(table), "outdir": str(Path(output).parent),
            "failures": [{"source": f.source, "reason": f.reason} for f in failures]}


@flow(name="label_vib_thermo", log_prints=True)
def label_vib_thermo(inputs: list[str] | None = None, dataset: str | None = None,
                     limit: int | None = None, output: str = "vib_thermo_labels.parquet",
                     temperatures_K: list[float] | None = None,
                     supercell_min_length_A: float = 10.0, relax: bool = True,
                     potential: str = "chgnet") -> dict:
    """Label structures with a universal potential's (CHGNet by default) S_vib(T), Cv(T), F_vib(T)
    (long format, per mole of atoms) so the MODNet-style model can learn temperature functions."""
    from matflow.atomistic.potentials import canonical_name

    if not inputs and not dataset:
        raise ValueError("label_vib_thermo needs inputs (files, directories, globs) or a dataset name")
    temps = [float(t) for t in (temperatures_K or range(0, 1001, 25))]
    summary = label_task(inputs, dataset, limit, output, temps,
                         dict(supercell_min_length_A=supercell_min_length_A, relax=relax,
                              potential=canonical_name(potential)))
    return finish_batch("chgnet-vib-thermo-labels", summary,
                        [f"- table: `{summary['output']}` ({summary['n_rows']} rows)"],
                        title=f"{potential} vib-thermo labels")


if __name__ == "__main__":  # pragma: no cover
    from flows.runners import with_settings_runner

    with_settings_runner(label_vib_thermo)(dataset="vib_thermo_fixture",
                                           output="out/vib_thermo_labels.parquet")
