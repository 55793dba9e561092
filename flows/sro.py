"""Prefect flows for chemical short-range order: ``sro`` (simulate) and ``sro_analyze``.

The work happens in ``matflow.sro``; these flows add retries, failure logging and a markdown
artifact with the first-shell Warren–Cowley table an operator can read in the Prefect UI.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.states import finish_batch


@task(name="sro-simulate", retries=1, retry_delay_seconds=5)
def simulate_task(composition: dict, options: dict) -> dict:
    from matflow.sro.simulate import simulate_sro

    return simulate_sro(composition, **options).to_dict()


@flow(name="sro", log_prints=True)
def sro(composition: str, lattice: str = "fcc", temperatures_K: list[float] = (1200.0, 800.0, 500.0),
        size: int | None = None, a: float | None = None, potential: str = "sevenn-0", n_train: int = 60,
        sweeps: int = 200, seed: int = 0, cutoffs: str | None = None, output: str | None = None) -> dict:
    """Fit an energy model to a universal potential, anneal with Monte Carlo, report SRO per T.
    ``cutoffs``: as ``matflow sro simulate --cutoffs`` ("5.0", "5.0,4.0" or "auto"; default pairs to 4 Å)."""
    from matflow.screening.composition import parse_composition
    from matflow.sro.summary import simulation_table

    comp = parse_composition(composition)
    result = simulate_task(comp, dict(lattice=lattice, temperatures=list(temperatures_K), size=size,
                                      a=a, potential=potential, n_train=n_train, sweeps=sweeps,
                                      seed=seed, cutoffs=cutoffs))
    if output:
        from matflow.outputs import atomic_write_text

        Path(output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, json.dumps(result, indent=1))
    create_markdown_artifact("# Short-range order: " + composition + "\n\n```\n"
                             + simulation_table(result) + "\n```", key="sro-simulation",
                             description=f"SRO of {composition} on {lattice}")
    return result


@task(name="sro-analyze-file", retries=0)
def analyze_task(path: str, options: dict) -> list[dict]:
    from matflow.sro.analyze import analyze_files

    return analyze_files([path], **options)


@flow(name="sro_analyze", log_prints=True)
def sro_analyze(inputs: list[str], lattice: str | None = None, a: float | None = None,
                counts: list[int] | None = None, n_shells: int = 2, frames: str = "last",
                type_map: dict[int, str] | None = None) -> dict:
    """Warren–Cowley α, motif divergence and length scale of each file, one task per file."""
    from matflow.sro.analyze import format_table

    options = dict(lattice=lattice, a=a, counts=counts, n_shells=n_shells, frames=frames,
                   type_map=type_map)
    futures = [analyze_task.submit(p, options) for p in inputs]
    records = [r for f in futures for r in f.result()]
    good = [r for r in records if r.get("ok")]
    failures = [{"source": f"{r['file']}" + ("" if r.get("frame") is None else f"@{r['frame']}"),
                 "reason": r["reason"]} for r in records if not r.get("ok")]
    summary = {"n_ok": len(good), "n_failed": len(failures), "failures": failures, "records": records}
    lines = ["", "```", format_table(good), "```"] if good else []
    return finish_batch("sro-analysis", summary, lines, title="Short-range order analysis")
