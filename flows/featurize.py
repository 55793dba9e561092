"""Prefect flow ``featurize``: featurize structure files or a bundled dataset into a parquet table.

All work happens in ``matflow.featurize``; this module splits the inputs (files, or rows of a
dataset) into chunks, runs one task per chunk (in parallel on Dask with
``flows.runners.with_settings_runner``), joins the chunk tables into one, and ends Completed only
when some input was featurized (``flows.states.finish_batch``). Runs on Prefect's ephemeral local
server by default, or on a real server when PREFECT_API_URL is set.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import pandas as pd
from prefect import flow, task, unmapped

from flows.runners import chunk, local_task_runner, runs_distributed
from flows.states import finish_batch
from matflow.featurize import FeatureTable, featurize_files, featurize_structures
from matflow.io import FailedInput, expand_inputs
from matflow.settings import get_settings


@task(name="featurize-files", retries=1, retry_delay_seconds=5)
def featurize_files_task(inputs: list[str], preset: str, n_jobs: int) -> FeatureTable:
    return featurize_files(inputs, preset, n_jobs=n_jobs, progress=True)


@task(name="featurize-dataset-rows", retries=1, retry_delay_seconds=5)
def featurize_rows_task(rows: list[int], dataset: str, preset: str, n_jobs: int) -> FeatureTable:
    """Rows ``rows`` (positions) of a bundled dataset, named by material id as in
    ``featurize_dataset``."""
    from matflow.datasets import DATASETS

    frame = DATASETS[dataset]().iloc[rows]
    sources = [str(x) for x in frame["mp_id"]] if "mp_id" in frame else [str(i) for i in frame.index]
    return featurize_structures(list(frame["structure"]), preset, sources=sources, n_jobs=n_jobs,
                                progress=True)


def _join(parts: list[FeatureTable], preset: str) -> FeatureTable:
    """The chunk tables as one, in input order (``FeatureTable`` of the whole batch)."""
    tables = [p.table for p in parts if len(p.table)]
    table = pd.concat(tables) if tables else parts[0].table
    return FeatureTable(table, preset, failures=[f for p in parts for f in p.failures],
                        n_computed=sum(p.n_computed for p in parts),
                        n_cached=sum(p.n_cached for p in parts))


@flow(name="featurize", log_prints=True, task_runner=local_task_runner())
def featurize(
    inputs: list[str] | None = None,
    dataset: str | None = None,
    output: str = "features.parquet",
    preset: str = "structure",
    n_jobs: int | None = None,
    limit: int | None = None,
    chunk_size: int | None = None,
):
    """Featurize ``inputs`` (files, directories, globs) or a bundled ``dataset`` into ``output``.

    One task per chunk of ``chunk_size`` files or dataset rows (None = about 4 chunks per worker).
    ``n_jobs`` (default: the ``n_jobs`` setting) is each task's own process pool; on Dask it is 1:
    the workers are the parallelism there.
    """
    from matflow.datasets import DATASETS
    from matflow.featurize import get_preset

    if not inputs and not dataset:
        raise ValueError("featurize needs inputs (files, directories, globs) or a bundled dataset name")
    get_preset(preset)  # an unknown preset fails the flow once, with the library's message
    n_jobs = 1 if runs_distributed() else (n_jobs or get_settings().n_jobs)
    if dataset:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        n_rows = len(DATASETS[dataset]())
        chunks = chunk(range(min(n_rows, limit) if limit is not None else n_rows), chunk_size)
        futures = featurize_rows_task.map(chunks, unmapped(dataset), unmapped(preset),
                                          unmapped(n_jobs))
    else:
        paths, unmatched = expand_inputs(inputs or [])
        chunks = chunk([str(p) for p in paths] + [f.source for f in unmatched], chunk_size)
        futures = featurize_files_task.map(chunks, unmapped(preset), unmapped(n_jobs))
    parts = []
    for future, items in zip(futures, chunks, strict=True):
        future.wait()
        if future.state.is_completed():
            parts.append(future.result())
        else:  # a chunk lost even after its retry: its inputs are failures, the rest still counts
            reason = f"task {future.state.name.lower()}: {future.state.message or 'no message'}"
            failed = [FailedInput(str(item), reason) for item in items]
            empty = featurize_files([], preset)  # the preset's empty table, to hold failure rows
            parts.append(FeatureTable(empty.table, preset, failures=failed))
    if not parts:
        parts = [featurize_files([], preset)]
    result = _join(parts, preset)
    path = result.write(output)
    summary = {
        "output": str(path.resolve()),
        "n_ok": result.n_ok,
        "n_failed": len(result.failures),
        "n_features": result.n_features,
        "n_computed": result.n_computed,
        "n_cached": result.n_cached,
        "failures": [{"source": f.source, "reason": f.reason} for f in result.failures],
    }
    return finish_batch("featurize", summary, [
        f"- table: `{summary['output']}`",
        f"- {summary['n_features']} features; computed {summary['n_computed']}, "
        f"from cache {summary['n_cached']}"], title=f"Featurization ({preset})")


if __name__ == "__main__":  # pragma: no cover
    from flows.runners import with_settings_runner

    with_settings_runner(featurize)(dataset="matbench_phonons",
                                    output="out/matbench_phonons_features.parquet")
