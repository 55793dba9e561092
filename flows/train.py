"""Prefect flow ``train``: featurize -> select -> fit -> evaluate -> register a MODNet-style model.

All work happens in ``matflow.ml.train``; this module adds tasks, retries, logging and a summary artifact.
Featurization is cached by matflow's feature cache and the cross-NMI matrix by ``cached_cross_nmi``, so
a rerun of the flow only pays for the fits.
"""

from __future__ import annotations  # noqa: I001  (import order below is deliberate)

import flows._prefect_env  # noqa: F401  (must precede the prefect import)

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from matflow.ml import train as pipeline


@task(name="featurize-dataset", retries=1, retry_delay_seconds=5)
def featurize_task(dataset: str, targets: list[str] | None, preset: str, n_jobs: int, limit: int | None):
    return pipeline.featurize_dataset(dataset, preset, targets=targets, n_jobs=n_jobs, limit=limit)


@task(name="cross-nmi")
def select_task(data, n_jobs: int):
    return pipeline.dataset_cross_nmi(data, n_jobs=n_jobs)


@task(name="evaluate-cv")
def evaluate_task(data, config, cross, n_threads: int | None) -> dict:
    logger = get_run_logger()
    return pipeline.cross_validate(data, config, cross=cross, n_threads=n_threads, log=logger.info)


@task(name="fit-full")
def fit_task(data, config, cross, n_threads: int | None):
    return pipeline.fit_full(data, config, cross=cross, n_threads=n_threads)


@task(name="register-model")
def register_task(est, data, name: str, version: str, metrics: dict, root: str | None, overwrite: bool) -> str:
    return pipeline.register(est, data, name, version, metrics=metrics, root=root, overwrite=overwrite)


@flow(name="train")
def train(dataset: str, targets: list[str] | None = None, preset: str = "structure",
          config: str | dict = "default", name: str | None = None, version: str = "v1",
          evaluate: bool = False, n_jobs: int = 1, n_threads: int | None = None, limit: int | None = None,
          models_dir: str | None = None, overwrite: bool = False) -> dict:
    """Train and register one model; returns its folder, training size and any CV metrics."""
    logger = get_run_logger()
    data = featurize_task(dataset, targets, preset, n_jobs, limit)
    logger.info("featurized %s: %d rows x %d features (%d failed)", dataset, len(data.X), data.X.shape[1],
                data.n_failed)
    cfg = pipeline.CONFIGS[config] if isinstance(config, str) else config
    cross = select_task(data, n_jobs) if cfg.get("n_features") else None
    metrics = {"cv": evaluate_task(data, config, cross, n_threads)} if evaluate else {}
    est = fit_task(data, config, cross, n_threads)
    path = register_task(est, data, name or dataset, version, metrics, models_dir, overwrite)
    summary = {"path": path, "n_train": len(data.X), "n_failed": data.n_failed,
               "selected_features": list(est.selected_names_), "metrics": metrics}
    cv = metrics.get("cv")
    create_markdown_artifact(
        key="train-summary",
        markdown=(f"# train {dataset}\n\nmodel: `{path}`\n\ntraining rows: {len(data.X)}\n\n"
                  + (f"CV MAE {cv['mae_mean']:.4g} ± {cv['mae_std']:.2g}, R² {cv['r2_mean']:.3f}, "
                     f"coverage {cv['coverage_pooled']:.3f}\n" if cv else "")),
        description="matflow train flow summary",
    )
    return summary


if __name__ == "__main__":  # pragma: no cover
    print(train(dataset="matbench_phonons"))
