"""Benchmark matflow's MODNet-style regressor; writes benchmarks/results/modnet_<dataset>.json.

  python benchmarks/modnet.py matbench_phonons alexandria_cv300 [--register] [--config default]
  python benchmarks/modnet.py vib_thermo_5      # joint-learning smoke test of temperature functions

matbench_phonons: official Matbench v0.1 folds, MAE in cm^-1, next to the leaderboard anchors.
alexandria_cv300: KFold(5, shuffle=True, random_state=0) over file order, MAE and R^2 in J/K/mol-atom.
Each fold records training wall time and the process's peak RSS. ``--register`` then trains on the
full dataset and registers the model with the CV figures in its manifest and model card. Not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matflow.ml import train as pipeline  # noqa: E402
from matflow.ml.registry import package_versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

ANCHORS = {
    "matbench_phonons": {
        "unit": "cm^-1",
        "leaderboard_mae": {"MODNet v0.1.12": 34.2751, "MegNet (kgcnn v2.1.0), best": 28.7606},
        "source": "Matbench v0.1 leaderboard, matbench_phonons (mean MAE over the 5 official folds)",
    },
    "alexandria_cv300": {"unit": "J K^-1 mol^-1 per atom", "leaderboard_mae": {},
                         "source": "no public leaderboard; Dulong-Petit limit 3R = 24.94"},
}


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def _machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "note": "2 shared CPU cores (other jobs running concurrently), no GPU"}


def _results_path(dataset: str, config: str, preset: str = "structure") -> Path:
    name = f"modnet_{dataset}"
    name += "" if config == "default" else f"_{config}"
    name += "" if preset == "structure" else f"_{preset}"
    return RESULTS / f"{name}.json"


def _register(payload: dict, data, cross, dataset: str, config: str, version: str, n_threads: int) -> str:
    """Fit on every row and register, with the CV figures of ``payload`` in manifest and card."""
    cv = payload["cv"]
    t0 = time.perf_counter()
    est = pipeline.fit_full(data, config, cross=cross, n_threads=n_threads)
    metrics = {"cv": {k: v for k, v in cv.items() if k != "folds"},
               "cv_per_fold_mae": [round(f["mae"], 4) for f in cv["folds"]],
               "cv_per_fold_coverage": [round(f["coverage"], 4) for f in cv["folds"]],
               "cv_protocol": payload["protocol"], "cv_config": config,
               "anchors": payload["anchors"].get("leaderboard_mae", {}),
               "full_fit_wall_s": round(time.perf_counter() - t0, 1)}
    path = pipeline.register(est, data, dataset, version, metrics=metrics, overwrite=True)
    print(f"registered {path}", flush=True)
    return str(Path(path).relative_to(Path(__file__).resolve().parent.parent))


def register_from_results(dataset: str, config: str, version: str, n_threads: int,
                          preset: str = "structure") -> None:
    out = _results_path(dataset, config, preset)
    payload = json.loads(out.read_text())
    if payload.get("status") != "done":
        raise SystemExit(f"{out} holds no finished CV run")
    data = pipeline.featurize_dataset(dataset, preset)
    cross = pipeline.dataset_cross_nmi(data)
    payload["registered_model"] = _register(payload, data, cross, dataset, config, version, n_threads)
    _write(out, payload)


def bench_cv(dataset: str, config: str, n_jobs: int, register: bool, version: str, n_threads: int,
             preset: str = "structure") -> dict:
    t0 = time.perf_counter()
    data = pipeline.featurize_dataset(dataset, preset, n_jobs=n_jobs)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    cross = pipeline.dataset_cross_nmi(data, n_jobs=n_jobs)
    t_nmi = time.perf_counter() - t0
    out = _results_path(dataset, config, preset)
    payload = {
        "benchmark": f"modnet_{dataset}", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": dataset, "n_rows": len(data.X), "n_failed_featurization": data.n_failed,
        "protocol": ("official Matbench v0.1 folds (KFold(5, shuffle=True, random_state=18012019))"
                     if dataset == "matbench_phonons" else "KFold(5, shuffle=True, random_state=0) over file order"),
        "target": data.targets, "featurizer_preset": preset, "n_raw_features": data.X.shape[1],
        "config": {k: v for k, v in pipeline.CONFIGS[config].items()}, "config_name": config,
        "featurize_wall_s_cached_or_not": round(t_feat, 1), "cross_nmi_wall_s_cached_or_not": round(t_nmi, 1),
        "anchors": ANCHORS.get(dataset, {}), "machine": _machine(), "package_versions": package_versions(),
        "status": "running",
    }
    _write(out, payload)
    cv = pipeline.cross_validate(data, config, cross=cross, n_threads=n_threads,
                                 log=lambda m: print(m, flush=True))
    payload.update({"cv": cv, "status": "done"})
    _write(out, payload)
    print(f"{dataset}: MAE {cv['mae_mean']:.4f} ± {cv['mae_std']:.4f}, R2 {cv['r2_mean']:.4f}, "
          f"coverage {cv['coverage_pooled']:.4f} -> {out}", flush=True)
    if register:
        payload["registered_model"] = _register(payload, data, cross, dataset, config, version, n_threads)
        _write(out, payload)
    return payload


def bench_vib_thermo(n_threads: int) -> dict:
    import torch

    torch.set_num_threads(n_threads)
    data = pipeline.featurize_dataset("vib_thermo_5", "structure")
    t0 = time.perf_counter()
    est = pipeline.make_estimator("joint", data=data).fit(data.X, data.Y)
    wall = time.perf_counter() - t0
    pred = est.predict(data.X)
    res = {}
    for i, name in enumerate(("S", "Cv")):
        true, fit = data.Y[:, 160 * i:160 * (i + 1)], pred[:, 160 * i:160 * (i + 1)]
        res[name] = {"unit": "J K^-1 mol^-1 per atom", "mae": float(np.abs(fit - true).mean()),
                     "max_abs_error": float(np.abs(fit - true).max()),
                     "relative_mae": float(np.abs(fit - true).mean() / np.abs(true).mean()),
                     "at_300K": {"true": [round(float(v), 4) for v in true[:, 59]],
                                 "fit": [round(float(v), 4) for v in fit[:, 59]]}}
    temps = data.targets[0].get("sub_targets", [])
    payload = {"benchmark": "modnet_vib_thermo", "kind": "smoke test of joint learning (training materials)",
               "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "n_materials": len(data.X),
               "n_temperatures": 160, "temperature_at_index_59": temps[59] if temps else None,
               "config": pipeline.CONFIGS["joint"], "fit_wall_s": round(wall, 1), "results": res,
               "machine": _machine()}
    _write(RESULTS / "modnet_vib_thermo.json", payload)
    print(json.dumps(res, indent=1))
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", choices=["matbench_phonons", "alexandria_cv300", "vib_thermo_5"])
    ap.add_argument("--config", default="default")
    ap.add_argument("--preset", default="structure", help="featurizer preset")
    ap.add_argument("--n-jobs", type=int, default=2, help="featurization / cross-NMI processes")
    ap.add_argument("--n-threads", type=int, default=1, help="torch threads while training")
    ap.add_argument("--register", action="store_true", help="train on all rows and register the model")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--register-only", action="store_true",
                    help="skip CV: train on all rows and register, with the CV figures of the existing JSON")
    args = ap.parse_args()
    for dataset in args.datasets:
        if dataset == "vib_thermo_5":
            bench_vib_thermo(args.n_threads)
        elif args.register_only:
            register_from_results(dataset, args.config, args.version, args.n_threads, args.preset)
        else:
            bench_cv(dataset, args.config, args.n_jobs, args.register, args.version, args.n_threads,
                     args.preset)


if __name__ == "__main__":
    main()
