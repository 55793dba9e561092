"""Prefect flow ``train``: the library's train pipeline (``matflow.ml.train.run_training``), one task per step.

The flow adds no logic of its own: ``run_training`` orders the steps and runs its guards (an existing
model version is refused before featurization), and calls back into this module for each step
(featurize, cross-NMI, evaluate, fit, register), which runs it as a Prefect task with retries and
logging. A summary artifact is written at the end.
"""

from __future__ import annotations  # noqa: I001  (import order below is deliberate)

import flows._prefect_env  # noqa: F401  (must precede the prefect import)

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from matflow.ml import train as pipeline

RETRIES = {"featurize": 1}


@task(name="train-step", cache_policy=NO_CACHE)
def _step_task(step_name: str, fn):
    return fn()


def run_step(step_name: str, fn):
    """Run one pipeline step as a Prefect task named after it."""
    return _step_task.with_options(name=step_name, task_run_name=step_name,
                                   retries=RETRIES.get(step_name, 0), retry_delay_seconds=5)(step_name, fn)


@flow(name="train")
def train(dataset: str, targets: list[str] | None = None, preset: str = "structure",
          config: str | dict = "default", name: str | None = None, version: str | None = None,
          evaluate: bool = False, search: bool = False, budget: int | None = None, seed: int = 0,
          n_jobs: int = 1, n_threads: int | None = None, limit: int | None = None,
          models_dir: str | None = None, overwrite: bool = False) -> dict:
    """Train and register one model (``version`` None: the next free one); returns its folder, training
    size, failures, the search's choice and any CV metrics."""
    logger = get_run_logger()
    result = pipeline.run_training(dataset, targets=targets, preset=preset, config=config, name=name,
                                   version=version, evaluate=evaluate, search=search, budget=budget, seed=seed,
                                   n_jobs=n_jobs, n_threads=n_threads, limit=limit, root=models_dir,
                                   overwrite=overwrite, log=logger.info, step=run_step)
    summary = {"path": result["path"], "version": result["version"], "n_train": result["n_train"],
               "n_failed": result["n_failed"],
               "failures": [f"{f.source}: {f.reason}" for f in result["failures"]],
               "selected_features": result["selected_features"], "search": result["search"],
               "metrics": result["metrics"]}
    cv = result["cv"]
    create_markdown_artifact(
        key="train-summary",
        markdown=(f"# train {dataset}\n\nmodel: `{result['path']}`\n\ntraining rows: {result['n_train']} "
                  f"({result['n_failed']} failed featurization)\n\n"
                  + (f"search chose: `{result['search']['best_params']}`\n\n" if result["search"] else "")
                  + (f"CV MAE {cv['mae_mean']:.4g} ± {cv['mae_std']:.2g}, R² {cv['r2_mean']:.3f}, "
                     f"coverage {cv['coverage_pooled']:.3f}\n" if cv else "")),
        description="matflow train flow summary",
    )
    return summary


if __name__ == "__main__":  # pragma: no cover
    print(train(dataset="matbench_phonons"))
