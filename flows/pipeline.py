"""Prefect flow ``pipeline``: the end-to-end run of ``matflow.pipeline``, mapped per item as tasks.

Candidates (CDVAE samples, HEA screening picks) come from one task; then every candidate is relaxed,
featurized and predicted by its own tasks (``.map``), and every alloy candidate gets an SRO task.
Each task calls the library's per-item function, which stores its record in the run directory
under the content hash of its inputs; the task's Prefect cache key is that same hash and its result
is persisted under ``<run_dir>/prefect-results``, so a restarted flow re-uses finished tasks (and,
with the item files, never recomputes a finished item). Assembly, manifest and report are the
library's ``finish``; the flow ends with ``finish_batch`` (Completed "n ok, m failed", or Failed when
nothing finished) and a markdown artifact listing failures.

Runs on Prefect's embedded (ephemeral) server unless PREFECT_API_URL is set; the task runner comes
from settings with ``flows.runners.with_settings_runner(pipeline)`` (local by default, or Dask).
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import hashlib
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.filesystems import LocalFileSystem
from prefect.futures import PrefectFuture

from flows.runners import local_task_runner
from flows.states import finish_batch, result_or_failure

RESULTS_DIR = "prefect-results"


def _context(cfg: dict, run_dir: str, attempt: str):
    from matflow.pipeline.config import load_config
    from matflow.pipeline.rundir import RunDir

    return load_config(cfg), RunDir(run_dir, attempt)


def _structure_key(structure: dict) -> str:
    from pymatgen.core import Structure

    from matflow.pipeline.steps import structure_key

    return structure_key(Structure.from_dict(structure))


# Cache keys: the library's content hashes of each item (None = do not cache, e.g. a skipped item).
def _relax_key(_ctx, p: dict) -> str | None:
    from pymatgen.core import Structure

    from matflow.pipeline import steps
    from matflow.pipeline.config import load_config

    cfg = load_config(p["cfg"])
    try:
        return "relax-" + steps.relax_key(Structure.from_dict(p["cand"]["structure"]), cfg.relax,
                                          cfg.potential)
    except Exception:
        return None


def _features_key(_ctx, p: dict) -> str | None:
    from pymatgen.core import Structure

    from matflow.pipeline import steps
    from matflow.pipeline.config import load_config

    if not p["relaxed"].get("ok"):
        return None
    cfg = load_config(p["cfg"])
    return "features-" + steps.features_key(Structure.from_dict(p["relaxed"]["result"]["structure"]),
                                            cfg.feature_preset)


def _predict_key(_ctx, p: dict) -> str | None:
    from pymatgen.core import Structure

    from matflow.pipeline import steps

    if not p["relaxed"].get("ok"):
        return None
    return "predict-" + steps.predict_key(Structure.from_dict(p["relaxed"]["result"]["structure"]),
                                          p["model"])


def _sro_key(_ctx, p: dict) -> str | None:
    from matflow.pipeline import steps
    from matflow.pipeline.config import load_config

    cfg = load_config(p["cfg"])
    alloy = p["alloy"]
    return "sro-" + steps.sro_key(alloy["composition"], alloy["lattice"], cfg.sro, cfg.sro_potential)


@task(name="pipeline-candidates", retries=1, retry_delay_seconds=5)
def candidates_task(cfg: dict, run_dir: str, attempt: str) -> tuple[list, list, list]:
    from matflow.pipeline.run import plan

    config, rd = _context(cfg, run_dir, attempt)
    return plan(config, rd)


@task(name="pipeline-relax", retries=1, retry_delay_seconds=5, cache_key_fn=_relax_key,
      persist_result=True, task_run_name="relax-{cand[id]}")
def relax_task(cand: dict, cfg: dict, run_dir: str, attempt: str) -> dict:
    from matflow.pipeline.run import relax_item

    config, rd = _context(cfg, run_dir, attempt)
    return relax_item(config, rd, cand)


@task(name="pipeline-features", retries=1, retry_delay_seconds=5, cache_key_fn=_features_key,
      persist_result=True, task_run_name="features-{cand[id]}")
def features_task(cand: dict, relaxed: dict, cfg: dict, run_dir: str, attempt: str) -> dict:
    from matflow.pipeline.run import features_item

    config, rd = _context(cfg, run_dir, attempt)
    return features_item(config, rd, cand, relaxed)


@task(name="pipeline-predict", retries=1, retry_delay_seconds=5, cache_key_fn=_predict_key,
      persist_result=True, task_run_name="predict-{model}-{cand[id]}")
def predict_task(cand: dict, relaxed: dict, model: str, cfg: dict, run_dir: str,
                 attempt: str) -> dict:
    from matflow.pipeline.run import predict_item

    config, rd = _context(cfg, run_dir, attempt)
    return predict_item(config, rd, cand, relaxed, model)


@task(name="pipeline-sro", retries=1, retry_delay_seconds=5, cache_key_fn=_sro_key,
      persist_result=True, task_run_name="sro-{alloy[id]}")
def sro_task(alloy: dict, cfg: dict, run_dir: str, attempt: str) -> dict:
    from matflow.pipeline.run import sro_item

    config, rd = _context(cfg, run_dir, attempt)
    return sro_item(config, rd, alloy)


def _record(future: PrefectFuture, step: str, label: str) -> dict:
    return result_or_failure(future, step=step, item=label)


def _result_storage(run_dir: Path) -> LocalFileSystem:
    """Task results persisted under the run dir (Prefect needs the block saved to its server; the
    block's name is derived from the folder, so a rerun on the same folder finds the same results)."""
    folder = (run_dir / RESULTS_DIR).resolve()
    storage = LocalFileSystem(basepath=str(folder))
    storage.save(name="matflow-run-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16],
                 overwrite=True)
    return storage


@flow(name="pipeline", log_prints=True, task_runner=local_task_runner())
def pipeline(config: str | dict[str, Any] = "demo", run_dir: str | None = None):
    """Run (or resume) the end-to-end pipeline; the result is the run summary with ``run_dir`` and
    ``report``. ``config``: a preset name (demo, test), a config file or a dict."""
    import time

    from matflow.pipeline.run import finish, start, used_models

    t0 = time.perf_counter()
    config_obj, rd, manifest = start(config, run_dir)
    cfg = config_obj.model_dump(mode="json")
    models, skipped_models = used_models(config_obj)
    where = dict(run_dir=str(rd.path), attempt=rd.attempt)
    storage = _result_storage(rd.path)
    candidates, alloys, plan_failures = candidates_task(cfg, **where)
    print(f"{len(candidates)} candidates, {len(alloys)} alloys -> {rd.path}")
    timings = {"candidates_s": round(time.perf_counter() - t0, 3)}

    t1 = time.perf_counter()
    shared = dict(cfg=unmapped(cfg), run_dir=unmapped(where["run_dir"]),
                  attempt=unmapped(where["attempt"]))
    relax_f = relax_task.with_options(result_storage=storage).map(candidates, **shared)
    features_f = features_task.with_options(result_storage=storage).map(candidates, relax_f, **shared)
    predict_f = {m: predict_task.with_options(result_storage=storage).map(
        candidates, relax_f, unmapped(m), **shared) for m in models}
    sro_f = sro_task.with_options(result_storage=storage).map(alloys, **shared)

    ids = [c["id"] for c in candidates]
    relaxed = [_record(f, "relax", i) for f, i in zip(relax_f, ids, strict=True)]
    features = [_record(f, "features", i) for f, i in zip(features_f, ids, strict=True)]
    predictions = {m: [_record(f, "predict", i) for f, i in zip(fs, ids, strict=True)]
                   for m, fs in predict_f.items()}
    sro = [_record(f, "sro", a["id"]) for f, a in zip(sro_f, alloys, strict=True)]
    timings["items_s"] = round(time.perf_counter() - t1, 3)
    summary = finish(config_obj, rd, manifest, candidates, alloys, plan_failures, relaxed, features,
                     predictions, sro, models, skipped_models, timings)
    lines = [f"- report: `{summary['report']}`",
             f"- items computed {summary['n_computed']}, loaded {summary['n_loaded']}"]
    print(f"report: {summary['report']}")
    return finish_batch("pipeline", summary, lines, title=f"pipeline {config_obj.name}")

