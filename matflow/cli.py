"""matflow command-line interface: parses arguments, calls the library, writes output. No logic of its own.

Exit codes: 0 all inputs succeeded; 1 some inputs failed (good results are still written);
2 usage error or nothing usable; 3 the output could not be written; 130 interrupted by SIGINT (Ctrl-C)
and 143 by SIGTERM, after finished work was kept.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console

from matflow import __version__

app = typer.Typer(help="matflow: materials-informatics pipeline.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2, 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a scheduler's pre-emption, a Prefect cancellation) raised like Ctrl-C.

    Being a KeyboardInterrupt, it runs the same clean-up paths: caches, checkpoints and partial tables
    are flushed before the process exits.
    """

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _install_signal_handlers() -> None:
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def interruptible(what_was_kept: Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C / SIGTERM into one line saying what was kept and how to resume, and exit 130 / 143."""
    try:
        yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        try:
            kept = what_was_kept()
        except Exception as inner:  # the report of what was kept must not hide the interruption
            kept = f"could not list what was kept ({inner})"
        console.print(f"[yellow]interrupted by {signal.Signals(signum).name}[/yellow]: {kept}", highlight=False)
        raise typer.Exit(EXIT_SIGNAL[signum]) from None


def usage_error(message: str) -> typer.Exit:
    """Print a one-line usage error; the caller raises the returned Exit (code 2)."""
    console.print(f"[red]error[/red]: {message}", highlight=False)
    return typer.Exit(EXIT_USAGE)


def require(ok: bool, option: str, value, rule: str) -> None:
    """Validate one numeric option before any work: a one-line message and exit code 2."""
    if not ok:
        raise usage_error(f"{option} {value!r}: {rule}")


def require_finite(option: str, value: float | None, *, low: float | None = None, high: float | None = None,
                   low_open: bool = False) -> None:
    """A finite number within [low, high] (or (low, high] with ``low_open``)."""
    if value is None:
        return
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    require(ok, option, value, "must be a finite number" + (f" {' and '.join(parts)}" if parts else ""))


MAX_SITES_OPTION = typer.Option(
    None, "--max-sites", help="Largest cell accepted, in sites (default 1000, or MATFLOW_MAX_SITES).")


def apply_max_sites(max_sites: int | None) -> None:
    """Raise (or lower) the size limit of every structure reader for this process, and refuse a
    malformed MATFLOW_MAX_SITES before any work (the readers' own rule, ``ValidationLimits.from_env``)."""
    import os

    from matflow.io import MAX_SITES_ENV, ValidationLimits

    if max_sites is not None:
        require(max_sites >= 1, "--max-sites", max_sites, "must be at least 1")
        os.environ[MAX_SITES_ENV] = str(max_sites)
    try:
        ValidationLimits.from_env()
    except ValueError as exc:
        raise usage_error(str(exc)) from None


def check_output(path: Path | None, kind: str = "file") -> None:
    """Check an output path before any work (exit 2 with the reason)."""
    from matflow.outputs import OutputPathError, check_output_dir, check_output_file

    if path is None:
        return
    try:
        (check_output_file if kind == "file" else check_output_dir)(path)
    except OutputPathError as exc:
        raise usage_error(str(exc)) from None


def write_output(path: Path, write: Callable[[Path], object]) -> None:
    """Write an output; a failure at the end (disk full, path removed) is exit 3 with the reason."""
    try:
        write(path)
    except OSError as exc:
        console.print(f"[red]could not write output[/red] {path}: {exc.strerror or exc}", highlight=False)
        raise typer.Exit(EXIT_OUTPUT) from None


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"matflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """matflow: featurize structures, train and serve property models, run CHGNet atomistics."""
    _install_signal_handlers()


def report_failures(failures, what: str = "input") -> None:
    """Print one line per failed input (file and reason) on stderr."""
    for failure in failures:
        console.print(f"[red]failed[/red] {failure.source}: {failure.reason}", highlight=False)
    if failures:
        console.print(f"[yellow]{len(failures)} {what}(s) failed[/yellow]")


@app.command()
def featurize(
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    max_sites: int = MAX_SITES_OPTION,
    output: Path = typer.Option(..., "-o", "--output", help="Parquet feature table to write."),
    preset: str = typer.Option(
        "structure", "--preset",
        # the names of matflow.featurize.PRESETS, written out: importing it (matminer) costs seconds
        # on every command; tests/test_cli.py checks that the two agree
        help="Featurizer preset: composition, structure, structure-full, chgnet-gamma, chgnet-embedding, "
             "chgnet-supercell, structure-chgnet, structure-chgnet-emb or structure-chgnet-full "
             "(README: Feature presets)."),
    n_jobs: int = typer.Option(1, "--n-jobs", "-j", help="Worker processes (0 = one per core)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
) -> None:
    """Featurize structures into a parquet table keyed by structure hash.

    On Ctrl-C or SIGTERM the finished rows stay in the feature cache and a partial table is written
    (unfinished rows have status 'not computed'); rerun the same command to resume.
    """
    from matflow.featurize import PRESETS, featurize_files

    if preset not in PRESETS:
        raise usage_error(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    require(0 <= n_jobs <= 256, "--n-jobs", n_jobs, "must be between 0 (one per core) and 256")
    apply_max_sites(max_sites)
    check_output(output)

    def keep_partial() -> str:
        if no_cache:
            return "nothing kept (--no-cache); rerun the same command"
        partial = featurize_files(inputs, preset=preset, compute=False)
        write_output(output, partial.write)
        return (f"{partial.n_ok} finished row(s) kept in the feature cache and written to {output} "
                "(the rest have status 'not computed'); rerun the same command to resume")

    with interruptible(keep_partial):
        result = featurize_files(inputs, preset=preset, n_jobs=n_jobs, use_cache=not no_cache,
                                 progress=True)
    report_failures(result.failures)
    if result.n_ok == 0:
        console.print("[red]no structure could be featurized[/red]")
        if len(result.table):
            write_output(output, result.write)
        raise typer.Exit(EXIT_USAGE)
    write_output(output, result.write)
    typer.echo(f"wrote {result.n_ok} featurized structure(s) x {result.n_features} features "
               f"({len(result.failures)} failed) to {output}")
    raise typer.Exit(EXIT_PARTIAL if result.failures else EXIT_OK)


@app.command()
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Bundled dataset: matbench_phonons, "
                                "alexandria_cv300 or vib_thermo_5."),
    targets: list[str] = typer.Option(None, "--targets", "-t", help="Target name(s) of the dataset "
                                      "(repeat or comma-separate; default: all)."),
    name: str = typer.Option(None, "--name", help="Registry name (default: the dataset name)."),
    model_version: str = typer.Option(None, "--model-version", help="Registry version folder (default: the "
                                      "next vN after the highest existing version of the name)."),
    config: str = typer.Option("default", "--config", help="Training configuration: default, ens10, ens10wide, "
                                "quick, joint (see matflow.ml.train.CONFIGS); with --search, where it starts."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Run the dataset's 5-fold CV first and put "
                                  "the metrics in the model card (nested CV with --search)."),
    search: bool = typer.Option(False, "--search", help="Choose the hyper-parameters and calibration by an "
                                "evolutionary search scored by inner CV on the training rows, then refit."),
    budget: int = typer.Option(None, "--budget", help="Candidate evaluations of --search (default 6)."),
    preset: str = typer.Option("structure", "--preset", help="Featurizer preset: composition, structure, "
                               "structure-full, chgnet-gamma, chgnet-embedding, chgnet-supercell, "
                               "structure-chgnet, structure-chgnet-emb, structure-chgnet-full (the preset "
                               "for vibrational properties)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fits, ensemble members and search."),
    n_jobs: int = typer.Option(1, "--n-jobs", "-j", help="Featurization / cross-NMI worker processes."),
    n_threads: int = typer.Option(None, "--n-threads", help="Torch threads while training (default: torch's)."),
    limit: int = typer.Option(None, "--limit", help="Use only the first N rows (quick trials)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing name/version."),
) -> None:
    """Featurize -> select features -> fit (or --search) -> (evaluate) -> register a MODNet-style model.

    Exit 1 when some dataset rows failed featurization (the model is still registered from the rest).
    """
    from matflow.featurize import PRESETS
    from matflow.ml.train import CONFIGS, DATASET_SPECS, run_training

    if dataset not in DATASET_SPECS:
        raise usage_error(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SPECS)}")
    if config not in CONFIGS:
        raise usage_error(f"unknown config {config!r}; choose one of {', '.join(CONFIGS)}")
    if preset not in PRESETS:
        raise usage_error(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    require(0 <= n_jobs <= 256, "--n-jobs", n_jobs, "must be between 0 (one per core) and 256")
    require(n_threads is None or 1 <= n_threads <= 256, "--n-threads", n_threads, "must be between 1 and 256")
    require(limit is None or limit >= 1, "--limit", limit, "must be a positive number of rows")
    require(budget is None or search, "--budget", budget, "needs --search")
    require(budget is None or 1 <= budget <= 10_000, "--budget", budget, "must be between 1 and 10000")
    apply_max_sites(None)
    chosen = [t.strip() for item in (targets or []) for t in item.split(",") if t.strip()] or None
    kept = ("featurized rows are kept in the feature cache" + (", finished search candidates in the search cache"
            if search else "") + "; nothing was registered; rerun the same command to resume")
    with interruptible(lambda: kept):
        try:
            result = run_training(dataset, targets=chosen, preset=preset, config=config, name=name,
                                  version=model_version, evaluate=evaluate, search=search, budget=budget,
                                  seed=seed, n_jobs=n_jobs, n_threads=n_threads, limit=limit,
                                  overwrite=overwrite, progress=True,
                                  log=lambda msg: console.print(msg, highlight=False))
        except ValueError as exc:
            raise usage_error(str(exc)) from None
    cv = result["metrics"].get("cv")
    if cv:
        typer.echo(f"CV MAE {cv['mae_mean']:.4g} ± {cv['mae_std']:.2g}, R2 {cv['r2_mean']:.3f}, "
                   f"90% interval coverage {cv['coverage_pooled']:.3f}")
    if result["search"]:
        chosen_params = ", ".join(f"{k}={v}" for k, v in result["search"]["best_params"].items())
        typer.echo(f"search chose {chosen_params} (inner MAE {result['search']['inner_mae']:.4g})")
    typer.echo(f"registered {result['path']} ({result['n_train']} training rows, "
               f"{result['n_failed']} failed featurization)")
    report_failures(result["failures"], "dataset row")
    raise typer.Exit(EXIT_PARTIAL if result["n_failed"] else EXIT_OK)


def _model_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition("@")
    return name, version or "latest"


def _emit_predictions(loaded, compute: Callable[[], tuple], fmt: str, output: Path | None, no_cache: bool,
                      table_text: Callable, after: Callable[[object], None] | None = None) -> None:
    """Run ``compute() -> (rows, failures, extra)`` interruptibly, then print or write the rows as a
    table, JSON or CSV; ``after(extra)`` writes side outputs. Exits 0, 1 (some inputs failed) or 2."""
    kept = ("nothing kept (--no-cache)" if no_cache else
            "featurized rows are kept in the feature cache; rerun the same command to resume")
    with interruptible(lambda: kept):
        rows, failures, extra = compute()
    report_failures(failures)
    if rows.empty:
        console.print("[red]no structure could be predicted[/red]")
        raise typer.Exit(EXIT_USAGE)
    rows.insert(0, "model", f"{loaded.name}@{loaded.version}")
    if fmt == "json":
        import json

        # NaN (no interval) or inf becomes null: strict JSON readers (jq, browsers) reject them
        records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                   for r in rows.to_dict(orient="records")]
        text = json.dumps(records, indent=1, allow_nan=False, default=str)
    elif fmt == "csv":
        text = rows.to_csv(index=False)
    else:
        text = table_text(rows)
    if after is not None:
        after(extra)
    if output is not None:
        from matflow.outputs import atomic_write_text

        write_output(output, lambda path: atomic_write_text(path, text if text.endswith("\n") else text + "\n"))
        console.print(f"wrote {len(rows)} prediction(s) to {output}", highlight=False)
    else:
        typer.echo(text)
    raise typer.Exit(EXIT_PARTIAL if failures else EXIT_OK)


def _predict_dos_model(loaded, inputs: list[str], temps: list[float] | None, curve: bool, dos_dir: Path | None,
                       fmt: str, output: Path | None, no_cache: bool, n_jobs: int) -> None:
    """``predict`` for a phonon-DOS model (``svib``): S_vib(305 K) per atom with its interval, or S, Cv,
    F at ``--T`` temperatures / the whole 5-800 K curve; ``--dos`` writes each predicted DOS."""
    from matflow.ml.dos import CALIBRATION_TEMPERATURES_K
    from matflow.ml.svib import SVIB_T_K, predict_svib_files, svib_table_text, write_dos_files

    chosen = sorted(set(temps or ([] if curve else [SVIB_T_K])) | (set(CALIBRATION_TEMPERATURES_K) if curve else set()))

    def write_dos(dos) -> None:
        if dos_dir is not None:
            write_output(dos_dir, lambda folder: write_dos_files(dos, folder))
            console.print(f"wrote the predicted DOS of {len(dos)} structure(s) (CSV + PNG) to {dos_dir}",
                          highlight=False)

    def compute() -> tuple:
        rows, dos, failures = predict_svib_files(loaded, inputs, temperatures_K=chosen, use_cache=not no_cache,
                                                 n_jobs=n_jobs, progress=True)
        return rows, failures, dos

    _emit_predictions(loaded, compute, fmt, output, no_cache, lambda rows: svib_table_text(rows, loaded),
                      after=write_dos)


@app.command()
def predict(
    model: str = typer.Argument(..., help="Registered model name, optionally NAME@VERSION."),
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    max_sites: int = MAX_SITES_OPTION,
    fmt: str = typer.Option("table", "--format", "-f", help="Output format: table, json or csv."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    n_jobs: int = typer.Option(1, "--n-jobs", "-j", help="Featurization worker processes (0 = one per core)."),
    temperatures: str = typer.Option(None, "--T", help="DOS models (svib): temperatures in K, e.g. 300,600,900."),
    curve: bool = typer.Option(False, "--curve", help="DOS models (svib): S, Cv, F on 5-800 K every 5 K."),
    dos_dir: Path = typer.Option(None, "--dos", help="DOS models (svib): write each predicted DOS (CSV + PNG) here."),
) -> None:
    """Predict a property with its unit, conformal interval and applicability flag per structure, and
    say which structures are in the model's training data (with their training label). For the
    phonon-DOS model ``svib``: S_vib(305 K) per atom with its interval (``--T``, ``--curve``, ``--dos``)."""
    if fmt not in ("table", "json", "csv"):
        raise usage_error(f"unknown format {fmt!r}; choose table, json or csv")
    require(0 <= n_jobs <= 256, "--n-jobs", n_jobs, "must be between 0 (one per core) and 256")
    temps = _parse_floats("--T", temperatures) if temperatures is not None else None
    apply_max_sites(max_sites)
    check_output(output)
    if dos_dir is not None:
        check_output(dos_dir, "folder")
    from matflow.ml.predict import predict_files, prediction_table_text
    from matflow.ml.registry import load

    name, version = _model_ref(model)
    try:
        loaded = load(name, version)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if loaded.manifest.get("format") == "matflow-dos":
        _predict_dos_model(loaded, inputs, temps, curve, dos_dir, fmt, output, no_cache, n_jobs)
    if temps is not None or curve or dos_dir is not None:
        raise usage_error(f"--T, --curve and --dos need a phonon-DOS model (e.g. svib); {name} predicts "
                          "its targets directly")
    _emit_predictions(loaded, lambda: (*predict_files(loaded, inputs, n_jobs=n_jobs, use_cache=not no_cache,
                                                       progress=True), None),
                      fmt, output, no_cache, prediction_table_text)


def _atomistic_progress(total_label: str):
    """A rich progress bar for per-structure atomistic runs (stderr, so stdout stays clean)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{total_label}[/bold] {{task.description}}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=True)


def _kept_folders(outdir: Path, result_file: str) -> str:
    done = sorted(outdir.glob(f"*/{result_file}")) if outdir.is_dir() else []
    return (f"{len(done)} finished result folder(s) kept in {outdir}; rerun the same command for the rest"
            if done else f"no structure had finished; nothing written to {outdir}")


def _atomistic_exit(summary: dict) -> None:
    from matflow.io import FailedInput

    report_failures([FailedInput(**f) for f in summary["failures"]])
    if summary["n_ok"] == 0:
        console.print("[red]no structure could be processed[/red]")
        raise typer.Exit(EXIT_USAGE)
    typer.echo(f"wrote {summary['n_ok']} result(s) ({summary['n_failed']} failed) to {summary['outdir']}")
    raise typer.Exit(EXIT_PARTIAL if summary["n_failed"] else EXIT_OK)


def _potential_option(what: str):
    return typer.Option("chgnet", "--potential", help=f"Universal potential for the {what}: chgnet "
                        "(default), sevenn-0, sevenn-l3i5, ... (see `matflow potentials`).")


def _check_potential(potential: str) -> str:
    """The canonical potential name, or a one-line usage error (exit 2) listing the valid ones."""
    from matflow.atomistic.potentials import UnknownPotentialError, canonical_name

    try:
        return canonical_name(potential)
    except UnknownPotentialError as exc:
        raise usage_error(f"--potential: {exc}") from None


@app.command()
def potentials(
    as_json: bool = typer.Option(False, "--json", help="Print the cards as JSON."),
) -> None:
    """List the universal potentials usable offline, one card each: name, model, package version,
    training data, licence."""
    from matflow.atomistic.cards import card_line, potential_cards

    cards = potential_cards()
    if as_json:
        import json

        typer.echo(json.dumps(cards, indent=1))
    else:
        for card in cards:
            typer.echo(card_line(card))


@app.command()
def relax(
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    max_sites: int = MAX_SITES_OPTION,
    outdir: Path = typer.Option(Path("relax_out"), "-o", "--outdir", help="Output folder."),
    fmax: float = typer.Option(0.05, "--fmax", help="Force convergence (eV/Å)."),
    fixed_cell: bool = typer.Option(False, "--fixed-cell", help="Relax positions only."),
    optimizer: str = typer.Option("FIRE", "--optimizer", help="FIRE, BFGS or LBFGS."),
    max_steps: int = typer.Option(500, "--max-steps", help="Optimiser steps."),
    pressure: float = typer.Option(0.0, "--pressure", help="External pressure (GPa)."),
    potential: str = _potential_option("forces and stress"),
) -> None:
    """Relax positions and cell with a universal potential (CHGNet by default); writes relaxed.cif
    and relax.json (with the potential's provenance) per structure."""
    from matflow.atomistic.batch import relax_files

    potential = _check_potential(potential)
    if optimizer not in ("FIRE", "BFGS", "LBFGS"):
        raise usage_error(f"unknown optimizer {optimizer!r}; choose FIRE, BFGS or LBFGS")
    require_finite("--fmax", fmax, low=0.0, high=10.0, low_open=True)
    require(1 <= max_steps <= 1_000_000, "--max-steps", max_steps, "must be between 1 and 1000000")
    require_finite("--pressure", pressure, low=-100.0, high=1000.0)
    apply_max_sites(max_sites)
    check_output(outdir, "dir")
    with interruptible(lambda: _kept_folders(outdir, "relax.json")), _atomistic_progress("relax") as bar:
        task = bar.add_task("", total=None)
        summary = relax_files(inputs, outdir, fmax_eV_per_A=fmax, relax_cell=not fixed_cell,
                              optimizer=optimizer, max_steps=max_steps, pressure_GPa=pressure,
                              potential=potential,
                              on_start=lambda src: bar.update(task, description=src, advance=1))
    for r in summary["results"]:
        typer.echo(f"{r['source']}: E = {r['final_energy_eV_per_atom']:.4f} eV/atom, "
                   f"V = {r['initial_volume_A3']:.2f} -> {r['final_volume_A3']:.2f} Å³, "
                   f"P = {r['pressure_GPa']:.2f} GPa, max |F| = {r['max_force_eV_per_A']:.3f} eV/Å, "
                   f"{r['n_steps']} steps{'' if r['converged'] else ' (NOT converged)'}")
    _atomistic_exit(summary)


@app.command()
def md(
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    max_sites: int = MAX_SITES_OPTION,
    outdir: Path = typer.Option(Path("md_out"), "-o", "--outdir",
                                help="Output folder (resumes or extends runs found there)."),
    ensemble: str = typer.Option("nvt", "--ensemble", help="nve, nvt or npt."),
    temperature: float = typer.Option(300.0, "-T", "--temperature", help="Target temperature (K)."),
    steps: int = typer.Option(1000, "-n", "--steps", help="Number of MD steps."),
    timestep: float = typer.Option(None, "--timestep", help="Time step (fs); default 2 fs, 0.5 fs with H."),
    thermostat: str = typer.Option("nose-hoover", "--thermostat", help="nose-hoover, langevin or berendsen (NVT)."),
    barostat: str = typer.Option("mtk", "--barostat", help="mtk or berendsen (NPT)."),
    pressure: float = typer.Option(0.0, "--pressure", help="External pressure (GPa, NPT)."),
    traj_every: int = typer.Option(1, "--traj-every", help="Write a frame every N steps."),
    checkpoint_every: int = typer.Option(10, "--checkpoint-every", help="Checkpoint every N steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of initial velocities and Langevin noise."),
    no_analysis: bool = typer.Option(False, "--no-analysis", help="Skip RDF/MSD analysis and plots."),
    restart: bool = typer.Option(False, "--restart",
                                 help="discard existing runs in OUTDIR for these inputs and start over"),
    potential: str = _potential_option("forces"),
) -> None:
    """Molecular dynamics with a universal potential (CHGNet by default); kill-safe (rerun the same
    command to resume, with more --steps to extend a finished run)."""
    from matflow.atomistic.batch import md_files
    from matflow.atomistic.md import MDSettings

    settings = MDSettings(ensemble=ensemble, temperature_K=temperature, n_steps=steps,
                          timestep_fs=timestep, thermostat=thermostat, barostat=barostat,
                          pressure_GPa=pressure, traj_every=traj_every,
                          checkpoint_every=checkpoint_every, seed=seed)
    try:
        settings.validate()
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    potential = _check_potential(potential)
    apply_max_sites(max_sites)
    check_output(outdir, "dir")
    kept = (f"trajectories and checkpoints up to the last completed step are kept in {outdir}; "
            "rerun the same command to resume")
    with interruptible(lambda: kept), _atomistic_progress("md") as bar:
        task = bar.add_task("", total=steps)

        def on_start(src: str) -> None:
            bar.update(task, description=src, completed=0)

        summary = md_files(inputs, outdir, settings, analyze=not no_analysis, restart=restart,
                           on_start=on_start, potential=potential,
                           progress=lambda src, step, n: bar.update(task, completed=step))
    for r in summary["results"]:
        line = (f"{r['source']}: {r['n_steps']} steps x {r['timestep_fs']} fs, {r['n_frames']} frames, "
                f"mean T = {r['mean_temperature_K']:.0f} K, trajectory {r['trajectory']}")
        diff = (r.get("analysis") or {}).get("diffusion")
        if diff:
            line += f", D = {diff['D_cm2_per_s']:.2e} cm²/s"
        typer.echo(line)
    _atomistic_exit(summary)


@app.command()
def phonons(
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    max_sites: int = MAX_SITES_OPTION,
    outdir: Path = typer.Option(Path("phonons_out"), "-o", "--outdir", help="Output folder."),
    supercell: float = typer.Option(10.0, "--supercell-min-length", help="Minimum supercell width (Å)."),
    displacement: float = typer.Option(0.01, "--displacement", help="Finite displacement (Å)."),
    no_relax: bool = typer.Option(False, "--no-relax", help="Use the input geometry as is."),
    t_max: float = typer.Option(1000.0, "--t-max", help="Highest temperature (K)."),
    t_step: float = typer.Option(10.0, "--t-step", help="Temperature step (K)."),
    potential: str = _potential_option("forces"),
) -> None:
    """Phonons (phonopy on a universal potential's forces, CHGNet by default): S_vib, Cv, F_vib(T)
    per atom; imaginary modes flagged."""
    from matflow.atomistic.batch import phonons_files

    potential = _check_potential(potential)
    require_finite("--supercell-min-length", supercell, low=0.0, high=60.0, low_open=True)
    require_finite("--displacement", displacement, low=0.0, high=0.2, low_open=True)
    require_finite("--t-max", t_max, low=0.0, high=5000.0, low_open=True)
    require_finite("--t-step", t_step, low=0.0, high=t_max if math.isfinite(t_max) else None, low_open=True)
    apply_max_sites(max_sites)
    check_output(outdir, "dir")
    with interruptible(lambda: _kept_folders(outdir, "phonons.json")), _atomistic_progress("phonons") as bar:
        task = bar.add_task("", total=None)
        summary = phonons_files(inputs, outdir, supercell_min_length_A=supercell,
                                displacement_A=displacement, relax=not no_relax, t_max_K=t_max,
                                t_step_K=t_step, potential=potential,
                                on_start=lambda src: bar.update(task, description=src, advance=1))
    for r in summary["results"]:
        flag = " [IMAGINARY MODES: dynamically unstable]" if r["has_imaginary_modes"] else ""
        typer.echo(f"{r['source']}: S(300 K) = {r['S_300K_J_per_K_mol_atom']:.2f} J/K/mol-atom, "
                   f"Cv(300 K) = {r['Cv_300K_J_per_K_mol_atom']:.2f} J/K/mol-atom, "
                   f"F_vib(300 K) = {r['F_300K_kJ_per_mol_atom']:.3f} kJ/mol-atom, "
                   f"min freq = {r['min_frequency_THz']:.2f} THz{flag}")
    _atomistic_exit(summary)


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {models_dir, models: [{name, latest, "
                                 "versions: [...]}]}."),
) -> None:
    """List the registered models (MATFLOW_MODELS_DIR): per version its target and unit, featurizer
    preset, whether it needs CHGNet, CV MAE ± std and pooled interval coverage, cold-predict time when
    recorded, and which version 'latest' loads. Each version is loaded and checked; a broken one is
    listed with the reason and the exit code is 1."""
    from matflow.ml.catalog import catalog, catalog_json, catalog_table
    from matflow.settings import get_settings

    root = get_settings().models_dir
    found = catalog(root)
    if as_json:
        import json

        typer.echo(json.dumps({"models_dir": str(root), "models": catalog_json(found)}, indent=1))
    elif found:
        typer.echo(catalog_table(found))
    else:
        typer.echo(f"no registered models in {root}")
    broken = any(v.status != "ok" for m in found for v in m.versions)
    raise typer.Exit(EXIT_PARTIAL if broken else EXIT_OK)


def _write_or_echo(text: str, output: Path | None, what: str) -> None:
    """Print to stdout, or write atomically to ``output`` (exit 3 when that fails at the end)."""
    if output is None:
        typer.echo(text)
        return
    from matflow.outputs import atomic_write_text

    write_output(output, lambda path: atomic_write_text(path, text if text.endswith("\n") else text + "\n"))
    console.print(f"wrote {what} to {output}", highlight=False)


def _parse_floats(option: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise usage_error(f"{option} {text!r}: expected comma-separated numbers, e.g. 500,800,1200") from None
    require(bool(values), option, text, "needs at least one number")
    for v in values:
        require_finite(option, v, low=0.0, high=1e5, low_open=True)
    return values


def _parse_composition_option(text: str) -> dict[str, float]:
    from matflow.screening.composition import parse_composition

    try:
        return parse_composition(text)
    except ValueError as exc:
        raise usage_error(str(exc)) from None


sro_app = typer.Typer(help="Chemical short-range order: Monte Carlo on a fitted energy model, and "
                      "Warren–Cowley / motif analysis of configurations.", no_args_is_help=True)
app.add_typer(sro_app, name="sro")


@sro_app.command("simulate")
def sro_simulate(
    composition: str = typer.Argument(..., help="Alloy, e.g. CrCoNi or Cr0.2Co0.4Ni0.4."),
    lattice: str = typer.Option("fcc", "--lattice", help="fcc, bcc or hcp."),
    temperatures: str = typer.Option("500,800,1200", "--temperatures", "-T",
                                     help="Comma-separated temperatures (K); annealed from high to low."),
    size: int = typer.Option(None, "--size", help="Cubic repeats of the conventional cell for the Monte "
                             "Carlo (default: about 2,000 atoms)."),
    a: float = typer.Option(None, "--a", help="Lattice parameter (Å); default a Zen's-law estimate."),
    potential: str = typer.Option("sevenn-0", "--potential", help="Universal potential that labels the "
                                  "training cells: sevenn-0 (default, agrees with DFT on CrCoNi), "
                                  "chgnet, sevenn-l3i5, ..."),
    n_train: int = typer.Option(60, "--n-train", help="Training cells for the cluster expansion."),
    cutoffs: str = typer.Option(None, "--cutoffs", help="Cluster cutoffs (Å): 5.0 (pairs), 5.0,4.0 "
                                "(pairs, triplets) or auto (pairs only or with triplets, chosen by "
                                "cross-validation on the training cells). Default: pairs to 4 Å."),
    sweeps: int = typer.Option(200, "--sweeps", help="Production sweeps per temperature."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    model: Path = typer.Option(None, "--model", help="A saved energy model folder (skips the fit)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the result here instead of stdout."),
    plots: Path = typer.Option(None, "--plots", help="Folder for α-vs-T and motif plots."),
) -> None:
    """Fit a cluster expansion to a universal potential, anneal with canonical Monte Carlo and report
    Warren–Cowley α per pair and shell (with the random-solution band), energy and heat capacity."""
    if fmt not in ("table", "json"):
        raise usage_error(f"unknown format {fmt!r}; choose table or json")
    comp = _parse_composition_option(composition)
    temps = _parse_floats("--temperatures", temperatures)
    require_finite("--a", a, low=1.0, high=20.0)
    require(size is None or 1 <= size <= 40, "--size", size, "must be between 1 and 40")
    require(10 <= n_train <= 5000, "--n-train", n_train, "must be between 10 and 5000")
    require(10 <= sweeps <= 10**7, "--sweeps", sweeps, "must be between 10 and 10000000")
    check_output(output)
    check_output(plots, "dir")
    from matflow.sro.lattice import SROInputError
    from matflow.sro.simulate import simulate_sro
    from matflow.sro.summary import simulation_table

    with interruptible(lambda: "nothing kept: a simulation writes its result at the end"):
        try:
            result = simulate_sro(comp, lattice=lattice, a=a, temperatures=temps, size=size,
                                  potential=potential, n_train=n_train, sweeps=sweeps, seed=seed,
                                  cutoffs=cutoffs, model=model,
                                  progress=lambda msg: console.print(msg, highlight=False))
        except (SROInputError, ValueError) as exc:
            raise usage_error(str(exc)) from None
    if plots is not None:
        from matflow.sro.summary import plot_simulation

        for path in plot_simulation(result, plots):
            console.print(f"wrote {path}", highlight=False)
    if fmt == "json":
        import json

        text = json.dumps(result.to_dict(), indent=1)
    else:
        text = simulation_table(result)
    _write_or_echo(text, output, "the simulation")


@sro_app.command("analyze")
def sro_analyze(
    inputs: list[Path] = typer.Argument(..., help="Configurations: LAMMPS dump (.gz), extxyz (also "
                                        "`matflow md` trajectories), CIF, POSCAR."),
    lattice: str = typer.Option(None, "--lattice", help="fcc, bcc or hcp: shells by ideal-lattice "
                                "distance. Without it, shells by neighbour count (--counts)."),
    a: float = typer.Option(None, "--a", help="Lattice parameter (Å); default from the density."),
    counts: str = typer.Option(None, "--counts", help="Neighbours per shell, e.g. 12,6 (thermally "
                               "displaced configurations)."),
    shells: int = typer.Option(2, "--shells", help="Number of neighbour shells."),
    frames: str = typer.Option("last", "--frames", help="last, first, ':' (all), an index or a slice."),
    average: bool = typer.Option(False, "--average", help="Average α over the selected frames."),
    type_map: str = typer.Option(None, "--type-map", help="LAMMPS type -> element, e.g. 1=Cr,2=Co,3=Ni."),
    significance: str = typer.Option("analytic", "--significance", help="analytic or sampled."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
    plots: Path = typer.Option(None, "--plots", help="Folder for α-vs-shell-distance plots (one per "
                               "configuration, random band shaded)."),
) -> None:
    """Warren–Cowley α per pair and shell with z-scores against a random solution of the same size,
    first-shell motif divergence (bits) with its finite-size baseline, and the SRO length scale."""
    if fmt not in ("table", "json"):
        raise usage_error(f"unknown format {fmt!r}; choose table or json")
    if significance not in ("analytic", "sampled"):
        raise usage_error(f"unknown significance {significance!r}; choose analytic or sampled")
    require(1 <= shells <= 10, "--shells", shells, "must be between 1 and 10")
    require_finite("--a", a, low=1.0, high=20.0)
    shell_counts = None
    if counts is not None:
        try:
            shell_counts = [int(x) for x in counts.split(",") if x.strip()]
        except ValueError:
            raise usage_error(f"--counts {counts!r}: expected integers, e.g. 12,6") from None
        require(all(c > 0 for c in shell_counts) and bool(shell_counts), "--counts", counts,
                "must be positive integers")
    types = None
    if type_map is not None:
        from ase.data import atomic_numbers

        try:
            types = {int(k): v.strip() for k, v in (item.split("=") for item in type_map.split(","))}
        except ValueError:
            raise usage_error(f"--type-map {type_map!r}: expected TYPE=ELEMENT pairs, e.g. 1=Cr,2=Co") from None
        unknown = [v for v in types.values() if v not in atomic_numbers or v == "X"]
        require(not unknown, "--type-map", type_map, f"unknown element(s) {', '.join(unknown)}")
    check_output(output)
    check_output(plots, "dir")
    from matflow.sro.analyze import analyze_files, format_table
    from matflow.sro.lattice import SROInputError

    try:
        records = analyze_files([str(p) for p in inputs], lattice=lattice, a=a, counts=shell_counts,
                                n_shells=shells, significance=significance, frames=frames,
                                type_map=types, average_frames=average)
    except SROInputError as exc:
        raise usage_error(str(exc)) from None
    failed = [r for r in records if not r.get("ok")]
    for r in failed:
        console.print(f"[red]failed[/red] {r['file']}"
                      f"{'' if r.get('frame') is None else '@' + str(r['frame'])}: {r['reason']}",
                      highlight=False)
    if len(failed) == len(records):
        console.print("[red]no configuration could be analysed[/red]")
        raise typer.Exit(EXIT_USAGE)
    if plots is not None:
        from matflow.sro.summary import plot_analysis

        for path in plot_analysis(records, plots):
            console.print(f"wrote {path}", highlight=False)
    if fmt == "json":
        import json

        text = json.dumps(records, indent=1, default=float)
    else:
        text = format_table(records)
    _write_or_echo(text, output, f"{len(records) - len(failed)} analysis record(s)")
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


hea_app = typer.Typer(help="High-entropy alloys: descriptors and evidence for one composition.",
                      no_args_is_help=True)
app.add_typer(hea_app, name="hea")


@hea_app.command("describe")
def hea_describe(
    composition: str = typer.Argument(..., help="Alloy, e.g. CoCrFeMnNi or Al0.5CoCrFeNi."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """δ, ΔH_mix, ΔS_mix, Ω, VEC, and each evidence source's masses, belief and plausibility for a
    single-phase solid solution, fused by Dempster's rule; the measured phase when the alloy is known."""
    if fmt not in ("table", "json"):
        raise usage_error(f"unknown format {fmt!r}; choose table or json")
    comp = _parse_composition_option(composition)
    from matflow.screening.describe import describe_composition, description_text

    try:
        info = describe_composition(comp)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    if fmt == "json":
        import json

        typer.echo(json.dumps(info, indent=1, default=float))
    else:
        typer.echo(description_text(info))


def _parse_components(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise usage_error(f"--components {text!r}: expected a range like 4-5 or a list like 4,6") from None
    require(bool(values) and all(2 <= v <= 8 for v in values), "--components", text,
            "numbers of components must be between 2 and 8")
    return values


@app.command()
def screen(
    elements: str = typer.Option(..., "--elements", "-e", help="Comma-separated elements, e.g. "
                                 "Ti,V,Co,Ni,Mn,Cr,Fe."),
    components: str = typer.Option("4-5", "--components", help="Numbers of components, e.g. 4-5."),
    step: float = typer.Option(0.05, "--step", help="Concentration grid step (mole fraction)."),
    bounds: str = typer.Option("0.05,0.35", "--bounds", help="Lowest and highest fraction of any "
                               "element in non-equimolar candidates."),
    top: int = typer.Option(20, "--top", help="Candidates shown in detail in the report."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML report."),
    pdf: Path = typer.Option(None, "--pdf", help="Also write a PDF of the report (headless Chromium)."),
    csv: Path = typer.Option(None, "--csv", help="Also write the full ranking as CSV."),
    sro_top: int = typer.Option(0, "--sro-top", help="Estimate chemical short-range order at the "
                                "processing temperature for this many top candidates (Monte Carlo on "
                                "a cluster expansion of the potential; tens of seconds each)."),
    processing_t: float = typer.Option(1000.0, "--processing-T", help="Processing (annealing) "
                                       "temperature for --sro-top (K)."),
    sro_potential: str = typer.Option("sevenn-0", "--sro-potential",
                                      help="Universal potential for --sro-top."),
) -> None:
    """Rank candidate high-entropy alloys by Dempster–Shafer fusion of rules, experimental data,
    element substitutability and expert knowledge, and write a report for the lab (with the
    short-range order expected at the processing temperature for the best few, --sro-top)."""
    from matflow.screening.screen import ScreeningInputError
    from matflow.screening.screen import screen as run_screen

    element_list = [e.strip() for e in elements.split(",") if e.strip()]
    comps = _parse_components(components)
    require_finite("--step", step, low=0.0, high=0.5, low_open=True)
    try:
        lo, hi = (float(x) for x in bounds.split(","))
    except ValueError:
        raise usage_error(f"--bounds {bounds!r}: expected two fractions, e.g. 0.05,0.35") from None
    require_finite("--bounds", lo, low=0.0, high=1.0)
    require_finite("--bounds", hi, low=0.0, high=1.0)
    require(lo < hi, "--bounds", bounds, "the lower bound must be below the upper bound")
    require(1 <= top <= 1000, "--top", top, "must be between 1 and 1000")
    require(0 <= sro_top <= 50, "--sro-top", sro_top, "must be between 0 and 50")
    require_finite("--processing-T", processing_t, low=0.0, high=1500.0, low_open=True)
    if sro_top:
        sro_potential = _check_potential(sro_potential)
    for path in (output, pdf, csv):
        check_output(path)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with interruptible(lambda: "nothing kept: the report is written at the end"), Progress(
            TextColumn("[bold]screen[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)
        try:
            result = run_screen(element_list, components=comps, step=step, bounds=(lo, hi),
                                equimolar=True,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (ScreeningInputError, ValueError) as exc:
            raise usage_error(str(exc)) from None
        if sro_top:
            from matflow.screening.sro_strength import add_sro_strength

            result.table = add_sro_strength(
                result.table, top=sro_top, temperature_K=processing_t, potential=sro_potential,
                progress=lambda k, n, comp: bar.update(task, completed=k, total=n,
                                                       description=f"SRO {comp}"))
            result.settings.update(sro_top=sro_top, processing_T_K=processing_t,
                                   sro_potential=sro_potential)
    from matflow.reports.hea import render_screening_report

    write_output(output, lambda path: render_screening_report(result, path, pdf_path=pdf, top=top))
    if csv is not None:
        write_output(csv, result.write_csv)
    table = result.table
    console.print(f"ranked {len(table)} candidate(s); report: {output}"
                  + (f", PDF: {pdf}" if pdf else "") + (f", CSV: {csv}" if csv else ""), highlight=False)
    head = table.head(min(top, 10))
    for _, row in head.iterrows():
        known = f"  measured {row['known_phase']}" if row.get("known_phase") else ""
        typer.echo(f"{int(row['rank']):>4}  {row['composition']:<40} Bel(SS) {row['bel_SS']:.2f}  "
                   f"Pl(SS) {row['pl_SS']:.2f}  conflict {row['conflict']:.2f}  {row['predicted']}{known}")


@app.command()
def generate(
    model: str = typer.Option("cdvae-perov5", "--model", help="Generator, NAME or NAME@VERSION."),
    n: int = typer.Option(10, "-n", "--n", help="Number of crystals to sample."),
    outdir: Path = typer.Option(Path("generated"), "-o", "--outdir", help="Folder for the CIFs and "
                                "generated.csv."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    steps_per_level: int = typer.Option(None, "--steps-per-level", help="Langevin steps per noise "
                                        "level (default: the model's)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    relax: bool = typer.Option(False, "--relax", help="Also relax the samples, de-duplicate them, "
                               "flag novelty against the training dataset, compute the energy above "
                               "the hull (a potential-based proxy, not DFT) and predict with the "
                               "registered models: screen.csv/.parquet and relaxed/*.cif."),
    potential: str = typer.Option("chgnet", "--potential", help="Universal potential for --relax."),
    max_steps: int = typer.Option(300, "--max-steps", help="Relaxation steps per sample (--relax)."),
    optimize: str = typer.Option(None, "--optimize", help="min or max: move latent codes by Adam on "
                                 "the model's property head and decode them along the way "
                                 "(optimized.csv/.json); needs a model trained with a property."),
    starts: str = typer.Option(None, "--from", help="--optimize starts from the encoder means of "
                               "these crystals (a CDVAE CSV, or structure files/folders); the first "
                               "-n are used. Default: -n draws from the prior."),
    opt_steps: int = typer.Option(200, "--opt-steps", help="Adam steps of --optimize (lr 0.01, "
                                  "decoded every 50 steps and at the end)."),
) -> None:
    """Sample crystals from a CDVAE by annealed Langevin dynamics: one CIF each, and a table with
    formula, lattice, density and structural / compositional validity; with --relax also the
    screening table of the relaxed samples. With --optimize, property-guided optimisation in the
    latent space instead of plain sampling."""
    require(1 <= n <= 100_000, "-n", n, "must be between 1 and 100000")
    require(1 <= max_steps <= 100_000, "--max-steps", max_steps, "must be between 1 and 100000")
    if relax:
        from matflow.atomistic.potentials import UnknownPotentialError, canonical_name

        try:
            potential = canonical_name(potential)
        except UnknownPotentialError as exc:
            raise usage_error(f"--potential: {exc}") from None
    require(steps_per_level is None or 1 <= steps_per_level <= 1000, "--steps-per-level",
            steps_per_level, "must be between 1 and 1000")
    check_output(outdir, "dir")
    name, version = model.split("@", 1) if "@" in model else (model, "latest")
    from matflow.generate.train import CDVAETrainingError, resolve_version

    try:
        version = resolve_version(name, version)
    except CDVAETrainingError as exc:
        raise usage_error(str(exc)) from None
    if optimize is not None or starts is not None:
        require(optimize in ("min", "max"), "--optimize", optimize, "choose min or max")
        require(1 <= opt_steps <= 1_000_000, "--opt-steps", opt_steps, "must be between 1 and 1000000")
        from matflow.generate.optimize import optimize_from_model, read_starts, write_optimization

        try:
            rejected = []
            structures = ids = None
            if starts is not None:
                structures, ids, rejected = read_starts(starts, limit=n)
            with interruptible(lambda: "nothing kept: files are written after the optimisation"):
                result = optimize_from_model(name, version, device=device, direction=optimize,
                                             structures=structures, start_ids=ids,
                                             num_samples=None if structures else n,
                                             opt_steps=opt_steps, n_step_each=steps_per_level,
                                             seed=seed)
        except ValueError as exc:
            raise usage_error(f"--model {name}@{version}: {exc}" if "property head" in str(exc)
                              else str(exc)) from None
        for source, why in rejected:
            typer.echo(f"skipped start {source}: {why}")
        table = write_optimization(result, outdir)
        column = f"predicted_{result.property_name or 'property'}"
        if relax:
            from matflow.generate.screen import screen_generated, training_dataset

            last = table[table["opt_step"] == table["opt_step"].max()]
            final = [s for s in result.structures[-1]]
            screened = screen_generated(final, outdir=outdir, potential=potential,
                                        max_steps=max_steps, sources=list(last["file"].str[:-4]),
                                        novelty_dataset=training_dataset(name, version))
            energies = dict(zip(screened["id"] + ".cif", screened["energy_eV_per_atom"], strict=True))
            table["energy_eV_per_atom"] = table["file"].map(energies)
            from matflow.outputs import atomic_write_text

            atomic_write_text(outdir / "optimized.csv", table.to_csv(index=False))
        for start, group in table.groupby("start", sort=False):
            ordered = group.sort_values("opt_step")
            energy = (f", {potential} energy {ordered['energy_eV_per_atom'].iloc[-1]:.4f} eV/atom"
                      if "energy_eV_per_atom" in ordered else "")
            typer.echo(f"{start}: {column} {ordered[column].iloc[0]:.4g} -> "
                       f"{ordered[column].iloc[-1]:.4g} ({ordered['formula'].iloc[-1]}{energy})")
        typer.echo(f"wrote {len(table)} CIF(s), optimized.csv and optimized.json to {outdir}; "
                   f"{column} is the head's prediction, not a validated energy")
        return
    from matflow.generate.metrics import compositional_validity, structural_validity
    from matflow.generate.sample import generate_from_model, write_cifs

    if device == "auto":
        from matflow.atomistic.model import resolve_device

        device = resolve_device("auto")
    with interruptible(lambda: "nothing kept: CIFs are written after sampling"):
        try:
            structures = generate_from_model(name, version, n, n_step_each=steps_per_level,
                                             seed=seed, device=device)
        except ValueError as exc:
            raise usage_error(str(exc)) from None
    import pandas as pd

    def write(folder: Path) -> None:
        paths = write_cifs(structures, folder)
        rows = []
        for path, s in zip(paths, structures, strict=True):
            a, b, c = s.lattice.abc
            alpha, beta, gamma = s.lattice.angles
            rows.append({"file": path.name, "formula": s.composition.reduced_formula,
                         "n_atoms": len(s), "a_A": a, "b_A": b, "c_A": c, "alpha_deg": alpha,
                         "beta_deg": beta, "gamma_deg": gamma, "density_g_cm3": float(s.density),
                         "structurally_valid": structural_validity(s),
                         "compositionally_valid": compositional_validity(s.composition)})
        from matflow.outputs import atomic_write_text

        atomic_write_text(folder / "generated.csv", pd.DataFrame(rows).to_csv(index=False))

    write_output(outdir, write)
    table = pd.read_csv(outdir / "generated.csv")
    typer.echo(f"wrote {len(table)} CIF(s) and generated.csv to {outdir}: "
               f"{int(table['structurally_valid'].sum())} structurally valid, "
               f"{int(table['compositionally_valid'].sum())} compositionally valid")
    if relax:
        from matflow.generate.screen import screen_generated, training_dataset

        with interruptible(lambda: f"samples kept in {outdir}; screen.csv is written at the end"):
            screened = screen_generated(structures, outdir=outdir, potential=potential,
                                        max_steps=max_steps,
                                        novelty_dataset=training_dataset(name, version))
        ok = screened[screened["status"] == "ok"]
        typer.echo(f"relaxed {len(ok)} of {len(screened)} ({len(screened) - len(ok)} failed), "
                   f"{int(ok['duplicate_of'].isna().sum())} unique, "
                   f"{int(ok['novel'].eq(True).sum())} novel; "
                   f"wrote screen.csv to {outdir}")


@app.command("train-generator")
def train_generator(
    train_csv: Path = typer.Argument(..., help="Training crystals: a CDVAE-format CSV (columns cif, "
                                     "material_id; .csv or .csv.gz), e.g. data/cdvae_benchmarks/perov_5/val.csv.gz."),
    outdir: Path = typer.Option(..., "-o", "--outdir", help="Model folder (weights, manifest, card, "
                                "checkpoint), e.g. models/cdvae-perov5/v2."),
    val_csv: Path = typer.Option(None, "--val", help="Validation CSV (losses logged per epoch)."),
    preset: str = typer.Option("small-cpu", "--preset", help="small-cpu or paper (Xie et al. 2022)."),
    config_file: Path = typer.Option(None, "--config", help="A CDVAE config JSON instead of --preset."),
    epochs: int = typer.Option(None, "--epochs", help="Total epochs, resumed ones included "
                               "(default: the config's)."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop after the epoch that "
                                      "crosses this wall time; rerun to continue."),
    limit: int = typer.Option(None, "--limit", help="Use only the first N training crystals."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    restart: bool = typer.Option(False, "--restart", help="Ignore a checkpoint in OUTDIR and start over."),
    property_column: str = typer.Option(None, "--property", help="Also train a property head on this "
                                        "CSV column (e.g. heat_ref for Perov-5), for generate --optimize."),
    max_atoms: int = typer.Option(None, "--max-atoms", help="Largest cell the model handles; larger "
                                  "training cells are skipped and counted (default: the preset's, 20 for "
                                  "small-cpu; pass 24 for Carbon-24)."),
) -> None:
    """Train a CDVAE crystal generator; a checkpoint is written every epoch, so rerunning the same
    command after a crash or Ctrl-C resumes, and a larger --epochs extends a finished run."""
    from matflow.generate.config import CDVAEConfig, CDVAEConfigError
    from matflow.generate.data import CDVAEDataError
    from matflow.generate.train import CDVAETrainingError, train

    for option, path in (("TRAIN_CSV", train_csv), ("--val", val_csv), ("--config", config_file)):
        if path is not None and not path.is_file():
            raise usage_error(f"{option} {path}: no such file")
    require(epochs is None or 1 <= epochs <= 100_000, "--epochs", epochs, "must be between 1 and 100000")
    require(limit is None or limit >= 1, "--limit", limit, "must be >= 1")
    if max_minutes is not None:
        require_finite("--max-minutes", max_minutes, low=0.0, low_open=True)
    if device not in ("cpu", "cuda", "auto"):
        raise usage_error(f"--device {device!r}: choose cpu, cuda or auto")
    try:
        if config_file is not None:
            config = CDVAEConfig.from_json(config_file)
        elif preset in ("small-cpu", "paper"):
            config = CDVAEConfig.small_cpu() if preset == "small-cpu" else CDVAEConfig.paper()
        else:
            raise usage_error(f"--preset {preset!r}: choose small-cpu or paper")
    except (CDVAEConfigError, ValueError, TypeError) as exc:
        raise usage_error(f"--config {config_file}: {exc}") from None
    require(max_atoms is None or 1 <= max_atoms <= 1000, "--max-atoms", max_atoms,
            "must be between 1 and 1000")
    import dataclasses

    if max_atoms is not None:
        config = dataclasses.replace(config, max_atoms=max_atoms)
    if property_column is not None:
        config = dataclasses.replace(config, predict_property=True)
    check_output(outdir, "dir")
    kept = (f"the checkpoint of the last finished epoch is in {outdir}; rerun the same command to "
            "resume")
    with interruptible(lambda: kept):
        try:
            result = train(config, train_csv, val_csv, outdir, max_epochs=epochs, max_minutes=max_minutes,
                           seed=seed, device=device, resume=not restart, train_limit=limit,
                           property_column=property_column, show_progress=True)
        except (CDVAETrainingError, CDVAEDataError, CDVAEConfigError) as exc:
            raise usage_error(str(exc)) from None
    last = result.history[-1]["train"]["total"] if result.history else float("nan")
    typer.echo(f"{result.epochs_completed} epoch(s) in {outdir} ({result.stopped_because}); last train "
               f"loss {last:.4g}; "
               f"{result.wall_seconds / 60:.1f} min of training in all")


config_app = typer.Typer(help="matflow's settings: MATFLOW_* variables and an optional config file.",
                         no_args_is_help=True)


@app.command()
def serve(
    config: Path = typer.Argument(..., help="Deployments file (.toml, .yaml or .yml), e.g. deploy/deployments.toml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the file and list the deployments; start nothing."),
    work_pool: str | None = typer.Option(None, "--work-pool", help="Register the deployments in this work pool of "
                                         "the configured Prefect server instead of serving them here."),
) -> None:
    """Serve the Prefect deployments of a config file (schedules, on-demand runs) until Ctrl-C/SIGTERM."""
    from flows.serve import DeploymentConfigError, serve_config  # Prefect is imported only here

    try:
        serve_config(config, dry_run=dry_run, work_pool=work_pool)
    except DeploymentConfigError as exc:
        for line in str(exc).splitlines():
            console.print(f"[red]error[/red]: {line}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def pipeline(
    config: str = typer.Argument("demo", help="Preset (demo, test) or a JSON/YAML/TOML pipeline config."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run directory (default <run_dir>/runs/<name>-<hash>)."),
) -> None:
    """Run or resume the end-to-end pipeline in this process; finished items are loaded, not recomputed."""
    from matflow.pipeline import PipelineConfigError, run_pipeline

    _install_signal_handlers()
    with interruptible(lambda: f"finished items are kept in {run_dir or 'the run directory'}; "
                               "rerun the same command to resume"):
        try:
            summary = run_pipeline(config, run_dir, progress=True)
        except (PipelineConfigError, ValueError) as exc:
            raise usage_error(str(exc)) from None
    typer.echo(f"{summary['status']}: {summary['n_ok']} ok, {summary['n_failed']} failed; computed "
               f"{summary['n_computed']}, loaded {summary['n_loaded']} items\nreport: {summary['report']}")
    raise typer.Exit(EXIT_PARTIAL if summary["n_failed"] else EXIT_OK)


app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show() -> None:
    """Each setting, its value and where it came from (default, environment variable, config file)."""
    from matflow.settings import SettingsError, settings_report

    try:
        typer.echo(settings_report())
    except SettingsError as exc:
        raise usage_error(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    app()
