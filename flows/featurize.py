"""Prefect flow ``featurize``: featurize structure files or a bundled dataset into a parquet table.

All work happens in ``matflow.featurize``; this module adds retries, a summary artifact and logging.
Runs on Prefect's ephemeral local server by default, or on a real server when PREFECT_API_URL is set.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

import flows._prefect_env  # noqa: F401  (must precede the prefect import)
from matflow.featurize import featurize_dataset, featurize_files


@task(name="featurize-inputs", retries=1, retry_delay_seconds=5)
def featurize_task(inputs: list[str] | None, dataset: str | None, preset: str, n_jobs: int,
                   output: str, limit: int | None) -> dict:
    if dataset:
        result = featurize_dataset(dataset, preset, n_jobs=n_jobs, progress=True, limit=limit)
    else:
        result = featurize_files(inputs or [], preset, n_jobs=n_jobs, progress=True)
    path = result.write(output)
    return {
        "output": str(path.resolve()),
        "n_ok": result.n_ok,
        "n_failed": len(result.failures),
        "n_features": result.n_features,
        "n_computed": result.n_computed,
        "n_cached": result.n_cached,
        "failures": [{"source": f.source, "reason": f.reason} for f in result.failures],
    }


@flow(name="featurize", log_prints=True)
def featurize(
    inputs: list[str] | None = None,
    dataset: str | None = None,
    output: str = "features.parquet",
    preset: str = "structure",
    n_jobs: int = 1,
    limit: int | None = None,
) -> dict:
    """Featurize ``inputs`` (files, directories, globs) or a bundled ``dataset`` into ``output``."""
    if not inputs and not dataset:
        raise ValueError("featurize needs inputs (files, directories, globs) or a bundled dataset name")
    summary = featurize_task(inputs, dataset, preset, n_jobs, output, limit)
    logger = get_run_logger()
    for failure in summary["failures"]:
        logger.warning("failed %s: %s", failure["source"], failure["reason"])
    lines = [
        f"# Featurization ({preset})",
        f"- table: `{summary['output']}`",
        f"- structures: {summary['n_ok']} ok, {summary['n_failed']} failed; {summary['n_features']} features",
        f"- computed {summary['n_computed']}, from cache {summary['n_cached']}",
    ]
    lines += [f"- failed `{f['source']}`: {f['reason']}" for f in summary["failures"][:50]]
    create_markdown_artifact("\n".join(lines), key="featurize-summary", description="featurization summary")
    return summary


if __name__ == "__main__":  # pragma: no cover
    featurize(dataset="matbench_phonons", output="out/matbench_phonons_features.parquet", n_jobs=2)
