"""The main job on bundled data, run as Prefect flows: ``make demo``.

Featurizes the bundled Matbench phonons structures (1,265) with the structure preset. A first run takes
a few minutes on 2 cores; reruns read the feature cache.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

import flows._prefect_env  # noqa: F401
from flows.featurize import featurize

OUT = Path("out")


@flow(name="matflow-demo")
def demo(n_jobs: int = 2) -> dict:
    summary = featurize(dataset="matbench_phonons", output=str(OUT / "matbench_phonons_features.parquet"),
                        preset="structure", n_jobs=n_jobs)
    return {"featurize": summary}


def main() -> None:
    results = demo()
    f = results["featurize"]
    print(f"\nfeature table: {f['output']} ({f['n_ok']} structures x {f['n_features']} features, "
          f"{f['n_failed']} failed; {f['n_cached']} from cache)")


if __name__ == "__main__":
    main()
