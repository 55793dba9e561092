"""Do the shipped Cv(300 K) models' 90 % intervals cover the DFPT fixture? One row per material and version.

The five DFPT materials of ``load_vib_thermo_fixture()`` are ternary and quaternary compounds, outside the
binary Alexandria training set (except mp-988, Si3N4, which the model says is in its training data).
For every registered version of ``alexandria_cv300`` found in ``models/`` (or the ones named), reports the
prediction, interval, applicability flag and whether the interval covers the DFPT Cv at 300 K. Earlier
results for versions that have since left ``models/`` are kept under ``history``.

    python benchmarks/fixture_intervals.py [--versions v3]   # writes benchmarks/results/fixture_intervals.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matflow.datasets import load_vib_thermo_fixture  # noqa: E402
from matflow.ml.predict import predict_structures  # noqa: E402
from matflow.ml.registry import list_versions, load  # noqa: E402
from matflow.provenance import installed_versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fixture_intervals.json"
MODEL = "alexandria_cv300"
T_K = 300.0


def check_version(version: str, fixture) -> dict:
    model = load(MODEL, version)
    rows, failures = predict_structures(model, list(fixture["structure"]), sources=list(fixture["mp_id"]))
    by_source = {r["source"]: r for r in rows.to_dict("records")}
    materials = []
    for _, f in fixture.iterrows():
        temps = np.asarray(f["temperatures_K"], dtype=float)
        j = int(np.argmin(np.abs(temps - T_K)))
        dfpt = float(np.asarray(f["Cv_J_per_K_mol_atom"], dtype=float)[j])
        r = by_source.get(f["mp_id"])
        if r is None:
            materials.append({"mp_id": f["mp_id"], "dfpt_cv": dfpt, "failed": True})
            continue
        lower, upper = r["lower"], r["upper"]
        has_interval = lower is not None and np.isfinite(lower) and np.isfinite(upper)
        materials.append({
            "mp_id": f["mp_id"], "T_K": float(temps[j]), "dfpt_cv": round(dfpt, 3), "predicted": round(r["value"], 3),
            "lower": round(lower, 3) if has_interval else None, "upper": round(upper, 3) if has_interval else None,
            "in_domain": bool(r["in_domain"]), "in_training_data": bool(r["in_training_data"]),
            "covered": bool(has_interval and lower <= dfpt <= upper), "abs_error": round(abs(r["value"] - dfpt), 3)})
    widening = model.estimator.widening_ is not None
    return {"version": version, "distance_widening": widening, "n_failed": len(failures),
            "n_covered": sum(m.get("covered", False) for m in materials), "n": len(materials),
            "materials": materials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default=None, help="comma-separated versions (default: every one in models/)")
    args = ap.parse_args()
    versions = args.versions.split(",") if args.versions else list_versions(MODEL, valid_only=True)
    fixture = load_vib_thermo_fixture()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    history = {**previous.get("history", {}), **{v["version"]: v for v in previous.get("versions", [])}}
    results = [check_version(v, fixture) for v in versions]
    for r in results:
        history.pop(r["version"], None)
    payload = {"benchmark": "shipped alexandria_cv300 intervals on the DFPT fixture, Cv(300 K), J/K/mol-atom",
               "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "nominal_coverage": 0.9,
               "versions": results, "history": history, "package_versions": installed_versions(("matflow", "torch", "matminer", "pymatgen", "scikit-learn"))}
    RESULTS.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"{'version':8} {'material':10} {'DFPT':>6} {'pred':>6} {'interval':>16} {'domain':>6} covered")
    for r in results:
        for m in r["materials"]:
            if m.get("failed"):
                print(f"{r['version']:8} {m['mp_id']:10} featurization failed")
                continue
            interval = f"[{m['lower']:.2f}, {m['upper']:.2f}]" if m["lower"] is not None else "none"
            print(f"{r['version']:8} {m['mp_id']:10} {m['dfpt_cv']:6.2f} {m['predicted']:6.2f} {interval:>16} "
                  f"{'in' if m['in_domain'] else 'OUT':>6} {m['covered']}")
        print(f"{r['version']}: {r['n_covered']} of {r['n']} covered (widening {'on' if r['distance_widening'] else 'off'})")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
