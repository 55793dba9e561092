"""The main job on bundled data, run as the Prefect flow ``pipeline``: ``make demo``.

Runs the end-to-end pipeline with the ``demo`` preset (``matflow.pipeline.config.PRESETS``): six
CDVAE perovskites and the two best-ranked quaternary alloys of Al-Co-Cr-Fe-Ni-Cu (HEA screening) are
relaxed with CHGNet, featurized and predicted by the shipped models (last phonon-DOS peak, Cv(300 K),
S_vib when its model is installed), the alloys get a Monte Carlo short-range-order estimate, and
everything lands in one run directory with a manifest and an HTML report. A rerun resumes: finished
items are loaded from the run directory, not recomputed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from flows.pipeline import pipeline
from flows.runners import with_settings_runner


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", help="pipeline preset (demo, test) or config file")
    parser.add_argument("--run-dir", default=None, help="default <run_dir>/runs/<name>-<inputs hash>")
    args = parser.parse_args(argv)
    from matflow.atomistic.model import set_torch_threads

    set_torch_threads()
    t0 = time.perf_counter()
    summary = with_settings_runner(pipeline)(config=args.preset, run_dir=args.run_dir)
    print(f"\n{summary['status']}: {summary['n_ok']} candidates finished, {summary['n_failed']} failed; "
          f"{summary['n_computed']} items computed, {summary['n_loaded']} loaded from the run "
          f"directory, in {time.perf_counter() - t0:.0f} s")
    for failure in summary["failures"]:
        print(f"  failed {failure['source']} ({failure['step']}): {failure['reason']}")
    print(f"run directory: {Path(summary['run_dir']).resolve()}")
    print(f"report: {Path(summary['report']).resolve()}")


if __name__ == "__main__":
    main()
