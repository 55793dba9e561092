"""Prefect flow ``generate``: sample crystals from a CDVAE model, then relax, predict and screen them.

One task samples; then one relax task and one predict task per sample (``.map``); a final task
de-duplicates, flags novelty against the bundled dataset, computes the potential-based hull proxy
and writes the table and CIFs. Every step is a function of ``matflow.generate.screen`` (the same
ones ``matflow generate --relax`` calls). The flow ends with ``finish_batch``: Completed with
"n ok, m failed" and a failure artifact, or Failed when no sample finished.

Persistence, as in ``flows.pipeline``: the output folder is a ``matflow.pipeline.rundir.RunDir``.
The samples and every per-sample relax / predict record are stored atomically under
``<outdir>/items/<step>/<key>.json``, keyed by the content hash of their inputs (model manifest,
structure, potential, settings, code version); the same hash is the task's Prefect cache key and
task results are persisted under ``<outdir>/prefect-results``. A rerun on the same folder, after a
crash or not, loads finished samples and candidates instead of recomputing them; the summary counts
``n_computed`` and ``n_loaded`` per-candidate records.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from prefect import flow, task, unmapped
from prefect.futures import PrefectFuture

from flows.pipeline import _result_storage
from flows.runners import local_task_runner
from flows.states import finish_batch, result_or_failure
from matflow.generate.screen import DEFAULT_MODELS
from matflow.settings import get_settings


# Content keys: the same hash names the item file and the Prefect cache entry (None: no caching).
def sample_key(model: str, version: str, num_samples: int, n_step_each: int | None,
               seed: int) -> str:
    from matflow.pipeline.config import CDVAESource
    from matflow.pipeline.steps import cdvae_key

    return cdvae_key(CDVAESource(model=model, version=version, num_samples=num_samples,
                                 n_step_each=n_step_each, seed=seed))


def relax_key(sample: dict, potential: str, max_steps: int, fmax_eV_per_A: float) -> str:
    from pymatgen.core import Structure

    from matflow.pipeline.rundir import content_key
    from matflow.pipeline.steps import _code, potential_info, structure_key

    return content_key("generate-relax", structure_key(Structure.from_dict(sample)),
                       potential_info(potential), {"max_steps": max_steps, "fmax": fmax_eV_per_A},
                       _code())


def predict_key(relaxed: dict, models: list[str]) -> str | None:
    from pymatgen.core import Structure

    from matflow.pipeline.rundir import content_key
    from matflow.pipeline.steps import _code, model_info, structure_key

    if not relaxed.get("ok"):
        return None
    return content_key("generate-predict", structure_key(Structure.from_dict(relaxed["structure"])),
                       [model_info(m) for m in models], _code())


def _cache_key(make_key):
    def key(_ctx, p: dict) -> str | None:
        try:
            return make_key(**{k: v for k, v in p.items() if k not in ("outdir", "attempt", "source")})
        except Exception:  # noqa: BLE001 - an unkeyable input is computed, not cached
            return None
    return key


def _stored(outdir: str, attempt: str, step: str, key: str | None, label: str, compute) -> dict:
    """The item's record from ``<outdir>/items`` (computed and stored atomically when absent):
    ``{"ok", "result" | "reason", "attempt", ...}``."""
    from matflow.pipeline.rundir import RunDir

    if key is None:
        return {"ok": True, "result": compute(), "attempt": attempt}
    return RunDir(outdir, attempt).item(step, key, label, compute)


@task(name="cdvae-sample", retries=1, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=_cache_key(sample_key))
def sample_task(model: str, version: str, num_samples: int, n_step_each: int | None,
                seed: int, outdir: str, attempt: str) -> dict:
    from matflow.pipeline.config import CDVAESource
    from matflow.pipeline.steps import sample_cdvae

    source = CDVAESource(model=model, version=version, num_samples=num_samples,
                         n_step_each=n_step_each, seed=seed)
    record = _stored(outdir, attempt, "sample", sample_key(model, version, num_samples, n_step_each,
                                                           seed), f"{model}@{version}",
                     lambda: sample_cdvae(source))
    if not record["ok"]:
        raise RuntimeError(f"sampling {model}@{version} failed: {record['reason']}")
    _write_samples(record["result"], outdir)
    return record


def _write_samples(samples: list[dict], outdir: str) -> None:
    """CIFs of the raw samples, ``<outdir>/samples/cdvae_NNNN.cif``, each written atomically."""
    from pathlib import Path

    from pymatgen.core import Structure

    from matflow.outputs import atomic_write_text

    for i, sample in enumerate(samples):
        atomic_write_text(Path(outdir) / "samples" / f"cdvae_{i:04d}.cif",
                          Structure.from_dict(sample).to(fmt="cif"))


@task(name="cdvae-relax", retries=1, retry_delay_seconds=5, task_run_name="relax-{source}",
      persist_result=True, cache_key_fn=_cache_key(relax_key))
def relax_task(sample: dict, source: str, potential: str, max_steps: int,
               fmax_eV_per_A: float, outdir: str, attempt: str) -> dict:
    from matflow.generate import screen

    record = _stored(outdir, attempt, "relax", relax_key(sample, potential, max_steps, fmax_eV_per_A),
                     source, lambda: screen.relax_sample(sample, potential=potential,
                                                         max_steps=max_steps,
                                                         fmax_eV_per_A=fmax_eV_per_A,
                                                         source=source))
    if not record["ok"]:  # the library function never raises; kept for a damaged item file
        return {"ok": False, "source": source, "step": "relax", "reason": record["reason"]}
    return {**record["result"], "source": source, "attempt": record["attempt"]}


@task(name="cdvae-predict", retries=1, retry_delay_seconds=5, task_run_name="predict-{source}",
      persist_result=True, cache_key_fn=_cache_key(predict_key))
def predict_task(relaxed: dict, source: str, models: list[str], outdir: str,
                 attempt: str) -> dict | None:
    from matflow.generate import screen

    if not relaxed.get("ok"):
        return None
    record = _stored(outdir, attempt, "predict", predict_key(relaxed, models), source,
                     lambda: screen.predict_sample(relaxed["structure"], models, source=source))
    if not record["ok"]:
        return {"values": {}, "errors": {"all": record["reason"]}}
    return record["result"]


@task(name="cdvae-screen", persist_result=True)
def screen_task(samples: list[dict], relaxed: list[dict], predictions: list[dict | None],
                outdir: str, options: dict) -> list[dict]:
    from pymatgen.core import Structure

    from matflow.generate.screen import assemble, relaxed_dataset_references

    options = dict(options)
    hull_dataset = options.pop("hull_dataset")
    relaxed = [{k: v for k, v in r.items() if k != "attempt"} for r in relaxed]
    if hull_dataset is not None:
        options["hull_references"] = relaxed_dataset_references(
            [Structure.from_dict(r["structure"]) for r in relaxed if r.get("ok")],
            potential=options["potential"], dataset=hull_dataset, cache_dir=options["cache_dir"],
            max_steps=options["reference_max_steps"])
    table = assemble([Structure.from_dict(s) for s in samples], relaxed, predictions,
                     outdir=outdir, **options)
    return table.astype(object).where(table.notna(), None).to_dict("records")


def _record(future: PrefectFuture, source: str, step: str) -> dict | None:
    return result_or_failure(future, source=source, step=step)


@flow(name="generate", log_prints=True, task_runner=local_task_runner(), persist_result=True)
def generate(model: str = "cdvae-perov5", version: str = "latest", num_samples: int = 10,
             n_step_each: int | None = None, seed: int = 0, outdir: str | None = None,
             potential: str = "chgnet", max_steps: int = 300, fmax_eV_per_A: float = 0.05,
             models: list[str] | None = None, novelty_dataset: str | None = "auto",
             hull_dataset: str | None = None, reference_max_steps: int = 300,
             cache_dir: str | None = None, hull: bool = True):
    """Sample ``num_samples`` crystals from ``model``/``version`` ("latest": the highest shipped vN,
    resolved once at the start so that the cache keys name a concrete version), relax them with ``potential``,
    predict with the registered ``models`` that load (default: matflow.generate.screen.DEFAULT_MODELS),
    and write ``screen.csv``/``screen.parquet`` and relaxed CIFs to ``outdir`` (default
    ``<run_dir>/generate_out``). Novelty is judged against ``novelty_dataset`` ("auto": the bundled
    dataset the model was trained on, val and test splits). ``e_above_hull_eV_per_atom`` is a potential-based proxy, not DFT;
    elemental (and ``hull_dataset``) references are cached under ``cache_dir`` (default: settings);
    ``hull=False`` skips the hull proxy. Rerunning on the same ``outdir`` loads finished samples and
    candidates (see the module docstring)."""
    from pathlib import Path

    from matflow.atomistic.potentials import canonical_name
    from matflow.generate.screen import available_models, training_dataset
    from matflow.generate.train import resolve_version
    from matflow.pipeline.rundir import RunDir

    potential = canonical_name(potential)  # an unknown name fails the flow once
    version = resolve_version(model, version)  # likewise an unknown model
    outdir = str(outdir) if outdir is not None else str(get_settings().run_dir / "generate_out")
    rd = RunDir(outdir)  # checks the folder before any work; a fresh attempt id
    outdir, attempt = str(rd.path), rd.attempt
    storage = _result_storage(rd.path)
    where = dict(outdir=unmapped(outdir), attempt=unmapped(attempt))
    if novelty_dataset == "auto":
        novelty_dataset = training_dataset(model, version)
    names, skipped = available_models(tuple(models) if models is not None else DEFAULT_MODELS)
    for name, why in skipped.items():
        print(f"model {name} skipped: {why}")
    sampled = sample_task.with_options(result_storage=storage)(
        model, version, num_samples, n_step_each, seed, outdir, attempt)
    samples = sampled["result"]
    sources = [f"cdvae_{i:04d}" for i in range(len(samples))]
    relax_f = relax_task.with_options(result_storage=storage).map(
        samples, sources, unmapped(potential), unmapped(max_steps), unmapped(fmax_eV_per_A), **where)
    predict_f = predict_task.with_options(result_storage=storage).map(
        relax_f, sources, unmapped(names), **where)
    relaxed = [_record(f, s, "relax") for f, s in zip(relax_f, sources, strict=True)]
    computed = sum(r.get("attempt") == attempt for r in relaxed)
    predictions = []
    for f, s in zip(predict_f, sources, strict=True):
        rec = _record(f, s, "predict")
        if rec is not None and "values" not in rec:  # the predict task itself failed
            rec = {"values": {}, "errors": {"all": rec["reason"]}}
        if rec is not None:
            rec["errors"].update({m: f"not loaded ({why})" for m, why in skipped.items()})
        predictions.append(rec)
    options = dict(potential=potential, novelty_dataset=novelty_dataset, hull_dataset=hull_dataset,
                   reference_max_steps=reference_max_steps, sources=sources, cache_dir=cache_dir,
                   hull=hull)
    rows = screen_task.with_options(result_storage=storage)(samples, relaxed, predictions, outdir,
                                                            options)
    failures = [{"source": r["id"], "reason": r["reason"]} for r in rows if r["status"] != "ok"]
    summary = {"n_ok": len(rows) - len(failures), "n_failed": len(failures), "failures": failures,
               "outdir": outdir, "table": str(Path(outdir) / "screen.csv"), "rows": rows,
               "skipped_models": skipped, "samples_loaded": sampled["attempt"] != attempt,
               "n_computed": computed, "n_loaded": len(relaxed) - computed}
    print(f"{computed} candidate(s) computed, {len(relaxed) - computed} loaded from {outdir}")
    unique = [r for r in rows if r["status"] == "ok" and r["duplicate_of"] is None]
    lines = [f"- table: `{summary['table']}`", f"- unique relaxed candidates: {len(unique)}"]
    lines += [f"- `{r['id']}` {r['formula']}: {r['energy_eV_per_atom']:.4f} eV/atom, E_hull proxy "
              f"{r['e_above_hull_eV_per_atom']} eV/atom, novel={r['novel']}" for r in unique[:50]]
    return finish_batch("cdvae-generate", summary, lines, title=f"generate {model}@{version}")
