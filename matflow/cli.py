"""matflow command-line interface: parses arguments, calls the library, writes output. No logic of its own.

Exit codes: 0 all inputs succeeded; 1 some inputs failed (good results are still written);
2 usage error or nothing usable.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from matflow import __version__

app = typer.Typer(help="matflow: materials-informatics pipeline.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


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


def report_failures(failures, what: str = "input") -> None:
    """Print one line per failed input (file and reason) on stderr."""
    for failure in failures:
        console.print(f"[red]failed[/red] {failure.source}: {failure.reason}", highlight=False)
    if failures:
        console.print(f"[yellow]{len(failures)} {what}(s) failed[/yellow]")


@app.command()
def featurize(
    inputs: list[str] = typer.Argument(..., help="Structure files, directories or glob patterns."),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet feature table to write."),
    preset: str = typer.Option("structure", "--preset", help="Featurizer preset name."),
    n_jobs: int = typer.Option(1, "--n-jobs", "-j", help="Worker processes."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
) -> None:
    """Featurize structures into a parquet table keyed by structure hash."""
    from matflow.featurize import PRESETS, featurize_files

    if preset not in PRESETS:
        console.print(f"[red]unknown preset {preset!r}[/red]; choose one of {', '.join(PRESETS)}")
        raise typer.Exit(EXIT_USAGE)
    result = featurize_files(inputs, preset=preset, n_jobs=n_jobs, use_cache=not no_cache,
                             progress=True)
    report_failures(result.failures)
    if result.n_ok == 0:
        console.print("[red]no structure could be featurized[/red]")
        if len(result.table):
            result.write(output)
        raise typer.Exit(EXIT_USAGE)
    path = result.write(output)
    typer.echo(f"wrote {result.n_ok} featurized structure(s) x {result.n_features} features "
               f"({len(result.failures)} failed) to {path}")
    raise typer.Exit(EXIT_PARTIAL if result.failures else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    app()
