"""Prefect flow ``generate``: sample crystals from a CDVAE model, then relax, predict and screen them.

One task samples; then one relax task and one predict task per sample (``.map``); a final task
de-duplicates, flags novelty against the bundled dataset, computes the potential-based hull proxy
and writes the table and CIFs. Every step is a function of ``matflow.generate.screen`` (the same
ones ``matflow generate --relax`` calls). The flow ends with ``finish_batch``: Completed with
"n ok, m failed" and a failure artifact, or Failed when no sample finished.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from prefect import flow, task, unmapped
from prefect.futures import PrefectFuture

from flows.runners import local_task_runner
from flows.states import finish_batch, result_or_failure
from matflow.generate.screen import DEFAULT_MODELS
from matflow.settings import get_settings


@task(name="cdvae-sample", retries=1, retry_delay_seconds=5)
def sample_task(model: str, version: str, num_samples: int, n_step_each: int | None,
                seed: int) -> list[dict]:
    from matflow.generate.sample import generate_from_model

    structures = generate_from_model(model, version, num_samples, n_step_each=n_step_each,
                                     seed=seed, device="cpu", show_progress=False)
    return [s.as_dict() for s in structures]


@task(name="cdvae-relax", retries=1, retry_delay_seconds=5, task_run_name="relax-{source}")
def relax_task(sample: dict, source: str, potential: str, max_steps: int,
               fmax_eV_per_A: float) -> dict:
    from matflow.generate.screen import relax_sample

    return relax_sample(sample, potential=potential, max_steps=max_steps,
                        fmax_eV_per_A=fmax_eV_per_A, source=source)


@task(name="cdvae-predict", retries=1, retry_delay_seconds=5, task_run_name="predict-{source}")
def predict_task(relaxed: dict, source: str, models: list[str]) -> dict | None:
    from matflow.generate.screen import predict_sample

    if not relaxed.get("ok"):
        return None
    return predict_sample(relaxed["structure"], models, source=source)


@task(name="cdvae-screen")
def screen_task(samples: list[dict], relaxed: list[dict], predictions: list[dict | None],
                outdir: str, options: dict) -> list[dict]:
    from pymatgen.core import Structure

    from matflow.generate.screen import assemble, relaxed_dataset_references

    options = dict(options)
    hull_dataset = options.pop("hull_dataset")
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


@flow(name="generate", log_prints=True, task_runner=local_task_runner())
def generate(model: str = "cdvae-perov5", version: str = "v1", num_samples: int = 10,
             n_step_each: int | None = None, seed: int = 0, outdir: str | None = None,
             potential: str = "chgnet", max_steps: int = 300, fmax_eV_per_A: float = 0.05,
             models: list[str] | None = None, novelty_dataset: str | None = "auto",
             hull_dataset: str | None = None, reference_max_steps: int = 300,
             cache_dir: str | None = None):
    """Sample ``num_samples`` crystals from ``model``/``version``, relax them with ``potential``,
    predict with the registered ``models`` that load (default: matflow.generate.screen.DEFAULT_MODELS),
    and write ``screen.csv``/``screen.parquet`` and relaxed CIFs to ``outdir`` (default
    ``<run_dir>/generate_out``). Novelty is judged against ``novelty_dataset`` ("auto": the bundled
    dataset the model was trained on, val and test splits). ``e_above_hull_eV_per_atom`` is a potential-based proxy, not DFT;
    elemental (and ``hull_dataset``) references are cached under ``cache_dir`` (default: settings)."""
    from pathlib import Path

    from matflow.atomistic.potentials import canonical_name
    from matflow.generate.screen import available_models, training_dataset

    potential = canonical_name(potential)  # an unknown name fails the flow once
    outdir = str(outdir) if outdir is not None else str(get_settings().run_dir / "generate_out")
    if novelty_dataset == "auto":
        novelty_dataset = training_dataset(model, version)
    names, skipped = available_models(tuple(models) if models is not None else DEFAULT_MODELS)
    for name, why in skipped.items():
        print(f"model {name} skipped: {why}")
    samples = sample_task(model, version, num_samples, n_step_each, seed)
    sources = [f"cdvae_{i:04d}" for i in range(len(samples))]
    relax_f = relax_task.map(samples, sources, unmapped(potential), unmapped(max_steps),
                             unmapped(fmax_eV_per_A))
    predict_f = predict_task.map(relax_f, sources, unmapped(names))
    relaxed = [_record(f, s, "relax") for f, s in zip(relax_f, sources, strict=True)]
    predictions = []
    for f, s in zip(predict_f, sources, strict=True):
        rec = _record(f, s, "predict")
        if rec is not None and "values" not in rec:  # the predict task itself failed
            rec = {"values": {}, "errors": {"all": rec["reason"]}}
        if rec is not None:
            rec["errors"].update({m: f"not loaded ({why})" for m, why in skipped.items()})
        predictions.append(rec)
    options = dict(potential=potential, novelty_dataset=novelty_dataset, hull_dataset=hull_dataset,
                   reference_max_steps=reference_max_steps, sources=sources, cache_dir=cache_dir)
    rows = screen_task(samples, relaxed, predictions, outdir, options)
    failures = [{"source": r["id"], "reason": r["reason"]} for r in rows if r["status"] != "ok"]
    summary = {"n_ok": len(rows) - len(failures), "n_failed": len(failures), "failures": failures,
               "outdir": outdir, "table": str(Path(outdir) / "screen.csv"), "rows": rows,
               "skipped_models": skipped}
    unique = [r for r in rows if r["status"] == "ok" and r["duplicate_of"] is None]
    lines = [f"- table: `{summary['table']}`", f"- unique relaxed candidates: {len(unique)}"]
    lines += [f"- `{r['id']}` {r['formula']}: {r['energy_eV_per_atom']:.4f} eV/atom, E_hull proxy "
              f"{r['e_above_hull_eV_per_atom']} eV/atom, novel={r['novel']}" for r in unique[:50]]
    return finish_batch("cdvae-generate", summary, lines, title=f"generate {model}@{version}")
