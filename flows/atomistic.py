"""Prefect flows for CHGNet atomistics: ``relax``, ``md``, ``phonons`` and ``label_vib_thermo``.

All work happens in ``matflow.atomistic``; these flows add retries, logging of failed inputs and a
markdown summary artifact. Runs on Prefect's ephemeral local server unless PREFECT_API_URL is set.
"""

from __future__ import annotations

import re

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact


def _report(kind: str, summary: dict, lines: list[str]) -> None:
    logger = get_run_logger()
    for failure in summary["failures"]:
        logger.warning("failed %s: %s", failure["source"], failure["reason"])
    lines = [f"# CHGNet {kind}", f"- output: `{summary['outdir']}`",
             f"- structures: {summary['n_ok']} ok, {summary['n_failed']} failed", *lines]
    lines += [f"- failed `{f['source']}`: {f['reason']}" for f in summary["failures"][:50]]
    # Prefect artifact keys allow only lowercase letters, digits and dashes
    key = re.sub(r"[^a-z0-9-]+", "-", f"chgnet-{kind}-summary".lower())
    create_markdown_artifact("\n".join(lines), key=key,
                             description=f"CHGNet {kind} summary")


@task(name="chgnet-relax", retries=1, retry_delay_seconds=5)
def relax_task(inputs: list[str], outdir: str, options: dict) -> dict:
    from matflow.atomistic.batch import relax_files

    return relax_files(inputs, outdir, **options)


@flow(name="relax", log_prints=True)
def relax(inputs: list[str], outdir: str = "relax_out", fmax_eV_per_A: float = 0.05,
          relax_cell: bool = True, optimizer: str = "FIRE", max_steps: int = 500,
          pressure_GPa: float = 0.0) -> dict:
    """Relax positions (and the cell) of every input structure with CHGNet."""
    summary = relax_task(list(inputs), outdir, dict(
        fmax_eV_per_A=fmax_eV_per_A, relax_cell=relax_cell, optimizer=optimizer,
        max_steps=max_steps, pressure_GPa=pressure_GPa))
    _report("relax", summary, [
        f"- `{r['source']}`: {r['final_energy_eV_per_atom']:.4f} eV/atom, V {r['initial_volume_A3']:.2f}"
        f" → {r['final_volume_A3']:.2f} Å³, converged={r['converged']}" for r in summary["results"]])
    return summary


@task(name="chgnet-md", retries=1, retry_delay_seconds=5)
def md_task(inputs: list[str], outdir: str, settings: dict, analyze: bool,
            restart: bool = False) -> dict:
    from prefect.runtime import task_run

    from matflow.atomistic.batch import md_files
    from matflow.atomistic.md import MDSettings

    # a retry resumes from the checkpoints in outdir: only the first attempt may start over
    first_attempt = (task_run.run_count or 1) <= 1
    return md_files(inputs, outdir, MDSettings(**settings), analyze=analyze,
                    restart=restart and first_attempt)


@flow(name="md", log_prints=True)
def md(inputs: list[str], outdir: str = "md_out", ensemble: str = "nvt", temperature_K: float = 300.0,
       n_steps: int = 1000, timestep_fs: float | None = None, thermostat: str = "nose-hoover",
       barostat: str = "mtk", pressure_GPa: float = 0.0, traj_every: int = 1,
       checkpoint_every: int = 10, seed: int = 0, analyze: bool = True,
       restart: bool = False) -> dict:
    """CHGNet MD of every input structure (kill-safe: rerunning resumes from checkpoints, a larger
    n_steps extends finished runs; ``restart=True`` discards the runs of these inputs first)."""
    settings = dict(ensemble=ensemble, temperature_K=temperature_K, n_steps=n_steps,
                    timestep_fs=timestep_fs, thermostat=thermostat, barostat=barostat,
                    pressure_GPa=pressure_GPa, traj_every=traj_every,
                    checkpoint_every=checkpoint_every, seed=seed)
    summary = md_task(list(inputs), outdir, settings, analyze, restart)
    _report("md", summary, [
        f"- `{r['source']}`: {r['n_steps']} steps, {r['n_frames']} frames, mean T "
        f"{r['mean_temperature_K']:.0f} K, trajectory `{r['trajectory']}`" for r in summary["results"]])
    return summary


@task(name="chgnet-phonons", retries=1, retry_delay_seconds=5)
def phonons_task(inputs: list[str], outdir: str, options: dict) -> dict:
    from matflow.atomistic.batch import phonons_files

    return phonons_files(inputs, outdir, **options)


@flow(name="phonons", log_prints=True)
def phonons(inputs: list[str], outdir: str = "phonons_out", supercell_min_length_A: float = 10.0,
            displacement_A: float = 0.01, relax: bool = True, t_max_K: float = 1000.0,
            t_step_K: float = 10.0) -> dict:
    """Phonon DOS and S_vib, Cv, F_vib(T) per atom of every input structure."""
    summary = phonons_task(list(inputs), outdir, dict(
        supercell_min_length_A=supercell_min_length_A, displacement_A=displacement_A, relax=relax,
        t_max_K=t_max_K, t_step_K=t_step_K))
    _report("phonons", summary, [
        f"- `{r['source']}`: S(300 K) {r['S_300K_J_per_K_mol_atom']:.2f}, Cv(300 K) "
        f"{r['Cv_300K_J_per_K_mol_atom']:.2f} J/K/mol-atom, imaginary modes: {r['has_imaginary_modes']}"
        for r in summary["results"]])
    return summary


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
                                   calc=PhononCalc(**options))
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
                     supercell_min_length_A: float = 10.0, relax: bool = True) -> dict:
    """Label structures with CHGNet S_vib(T), Cv(T), F_vib(T) (long format, per mole of atoms) so
    the MODNet-style model can learn temperature functions from them."""
    if not inputs and not dataset:
        raise ValueError("label_vib_thermo needs inputs (files, directories, globs) or a dataset name")
    temps = [float(t) for t in (temperatures_K or range(0, 1001, 25))]
    summary = label_task(inputs, dataset, limit, output, temps,
                         dict(supercell_min_length_A=supercell_min_length_A, relax=relax))
    _report("vib-thermo labels", summary, [f"- table: `{summary['output']}` ({summary['n_rows']} rows)"])
    return summary


if __name__ == "__main__":  # pragma: no cover
    label_vib_thermo(dataset="vib_thermo_fixture", output="out/vib_thermo_labels.parquet")
