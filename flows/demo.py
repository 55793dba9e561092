"""The main job on bundled data, run as Prefect flows: ``make demo``.

1. featurizes the bundled Matbench phonons structures (1,265) with the structure preset (a few minutes
   on 2 cores the first time; reruns read the feature cache);
2. predicts the last phonon-DOS peak and Cv(300 K) per atom, with intervals and applicability flags,
   for the five bundled DFPT fixture materials with the shipped models, and says which of them are in
   which model's training data, with the training label (Si3N4, mp-988, is in alexandria_cv300's).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

import flows._prefect_env  # noqa: F401
from flows.featurize import featurize

OUT = Path("out")


@task(name="predict-fixture-materials")
def predict_fixture(models: list[str]) -> str:
    import pandas as pd

    from matflow.datasets import load_vib_thermo_fixture
    from matflow.ml.predict import membership_lines, predict_structures
    from matflow.ml.registry import load

    fixture = load_vib_thermo_fixture()
    frames, statements = [], []
    for name in models:
        model = load(name)
        rows, _failures = predict_structures(model, list(fixture["structure"]), sources=list(fixture["mp_id"]))
        statements += membership_lines(rows, model)
        rows.insert(0, "model", f"{model.name}@{model.version}")
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "demo_predictions.csv"
    table.to_csv(path, index=False)
    print(table.to_string(index=False, max_colwidth=40))
    print("\n".join(statements))
    return str(path.resolve())


@flow(name="matflow-demo")
def demo(n_jobs: int = 2) -> dict:
    summary = featurize(dataset="matbench_phonons", output=str(OUT / "matbench_phonons_features.parquet"),
                        preset="structure", n_jobs=n_jobs)
    predictions = predict_fixture(["matbench_phonons", "alexandria_cv300"])
    return {"featurize": summary, "predictions": predictions}


def main() -> None:
    results = demo()
    f = results["featurize"]
    print(f"\nfeature table: {f['output']} ({f['n_ok']} structures x {f['n_features']} features, "
          f"{f['n_failed']} failed; {f['n_cached']} from cache)")
    print(f"predictions: {results['predictions']}")


if __name__ == "__main__":
    main()
