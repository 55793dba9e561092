"""Validate a universal potential (CHGNet by default, ``--potential``) + phonopy vibrational
thermodynamics against DFT phonon data. (``benchmarks/potentials_phonons.py`` compares potentials.)

(a) ``--fixture``: the 5-material DFPT fixture (Petretto et al. 2018 via MODNet): S and Cv at 305 K,
    MAE per atom (J K⁻¹ mol⁻¹ per mole of atoms) -> benchmarks/results/phonons_fixture.json
(b) ``--alexandria N``: a fixed random subset (seed 0) of the 1,170 Alexandria PBE binaries: Cv at
    300 K, MAE per atom and time per material -> benchmarks/results/phonons_alexandria.json

Both write their JSON after every material, so an interrupted run still leaves valid partial results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matflow.atomistic.model import package_versions, set_torch_threads  # noqa: E402
from matflow.atomistic.phonons import PhononCalc  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _summary(rows: list[dict], key_pred: str, key_ref: str) -> dict:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"n_ok": 0}
    err = np.array([r[key_pred] - r[key_ref] for r in ok])
    stable = [r for r in ok if not r["has_imaginary_modes"]]
    err_stable = np.array([r[key_pred] - r[key_ref] for r in stable]) if stable else np.array([np.nan])
    return {"n_ok": len(ok), "n_failed": len(rows) - len(ok), "mae": float(np.abs(err).mean()),
            "mean_signed_error": float(err.mean()), "n_with_imaginary_modes": len(ok) - len(stable),
            "mae_without_imaginary": float(np.abs(err_stable).mean()),
            "median_time_s": float(np.median([r["time_s"] for r in ok])),
            "mean_time_s": float(np.mean([r["time_s"] for r in ok]))}


def run_fixture(calc: PhononCalc, meta: dict) -> dict:
    from matflow.datasets import load_vib_thermo_fixture

    df = load_vib_thermo_fixture()
    rows, out_path = [], RESULTS / "phonons_fixture.json"
    for _, row in df.iterrows():
        t0 = time.perf_counter()
        ref_s = float(np.interp(305.0, row.temperatures_K, row.S_J_per_K_mol_atom))
        ref_cv = float(np.interp(305.0, row.temperatures_K, row.Cv_J_per_K_mol_atom))
        entry = {"mp_id": row.mp_id, "formula": row.structure.composition.reduced_formula,
                 "n_atoms": len(row.structure), "S_ref": ref_s, "Cv_ref": ref_cv}
        try:
            res = calc.run(row.structure)
            at = res.at(305.0)
            entry |= {"S_chgnet": at["S_J_per_K_mol_atom"], "Cv_chgnet": at["Cv_J_per_K_mol_atom"],
                      "has_imaginary_modes": res.has_imaginary_modes,
                      "min_frequency_THz": res.min_frequency_THz,
                      "supercell_matrix": res.supercell_matrix, "n_displacements": res.n_displacements}
        except Exception as exc:  # keep going; record why
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["time_s"] = time.perf_counter() - t0
        rows.append(entry)
        print(json.dumps(entry), flush=True)
        payload = {**meta, "benchmark": "5-material DFPT fixture, S and Cv at 305 K",
                   "units": "J K^-1 mol^-1 per mole of atoms",
                   "S_305K": _summary(rows, "S_chgnet", "S_ref"),
                   "Cv_305K": _summary(rows, "Cv_chgnet", "Cv_ref"), "materials": rows}
        _write(out_path, payload)
    return payload


def _subset_text(n: int, seed: int, max_sites: int) -> str:
    text = f"first {n} of a seed-{seed} random permutation of the 1,170 rows"
    return text + (f", keeping rows with nsites <= {max_sites} (cost cap)" if max_sites else
                   " (all sizes)")


def _alexandria_payload(meta: dict, rows: list[dict], n: int, seed: int, max_sites: int,
                        wall_s: float) -> dict:
    return {**meta, "benchmark": "Alexandria PBE binaries, Cv at 300 K",
            "units": "J K^-1 mol^-1 per mole of atoms", "subset": _subset_text(n, seed, max_sites),
            "n_requested": n, "n_done": len(rows), "wall_time_s": wall_s,
            "Cv_300K": _summary(rows, "Cv_chgnet", "Cv_ref"), "materials": rows}


def run_alexandria(calc: PhononCalc, meta: dict, n: int, max_sites: int, seed: int,
                   tag: str = "", shard: tuple[int, int] = (0, 1)) -> dict:
    """Cv(300 K) of a fixed random subset; ``shard=(k, m)`` runs every m-th material from the k-th
    (for m processes side by side) into its own part file, joined by ``merge_shards``."""
    from matflow.datasets import load_alexandria_cv300

    df = load_alexandria_cv300()
    order = np.random.default_rng(seed).permutation(len(df))
    picked = [i for i in order if not max_sites or int(df.iloc[i].nsites) <= max_sites][:n]
    k, m = shard
    suffix = f".part{k}of{m}" if m > 1 else ""
    rows, out_path = [], RESULTS / f"phonons_alexandria{tag}{suffix}.json"
    t_all = time.perf_counter()
    for i in picked[k::m]:
        row = df.iloc[i]
        t0 = time.perf_counter()
        entry = {"row": int(i), "mp_id": row.mp_id, "formula": row.formula, "nsites": int(row.nsites),
                 "Cv_ref": float(row.cv_300K_J_per_K_mol_atom)}
        try:
            res = calc.run(row.structure)
            entry |= {"Cv_chgnet": res.at(300.0)["Cv_J_per_K_mol_atom"],
                      "has_imaginary_modes": res.has_imaginary_modes,
                      "min_frequency_THz": res.min_frequency_THz,
                      "n_displacements": res.n_displacements,
                      "supercell_atoms": int(round(res.n_atoms * abs(np.linalg.det(res.supercell_matrix))))}
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["time_s"] = time.perf_counter() - t0
        entry["load_average_1min"] = os.getloadavg()[0]
        rows.append(entry)
        print(json.dumps(entry), flush=True)
        _write(out_path, _alexandria_payload(meta, rows, n, seed, max_sites, time.perf_counter() - t_all))
    return _alexandria_payload(meta, rows, n, seed, max_sites, time.perf_counter() - t_all)


def merge_shards(tag: str, m: int) -> dict:
    """Join the part files of an m-way sharded Alexandria run into one results file."""
    parts = [json.loads((RESULTS / f"phonons_alexandria{tag}.part{k}of{m}.json").read_text())
             for k in range(m)]
    rows = [r for part in parts for r in part["materials"]]
    meta = {key: val for key, val in parts[0].items()
            if key not in ("materials", "Cv_300K", "n_done", "wall_time_s")}
    payload = {**meta, "n_done": len(rows), "Cv_300K": _summary(rows, "Cv_chgnet", "Cv_ref"),
               "wall_time_s": max(p["wall_time_s"] for p in parts),
               "processes": m, "materials": rows}
    _write(RESULTS / f"phonons_alexandria{tag}.json", payload)
    for k in range(m):
        (RESULTS / f"phonons_alexandria{tag}.part{k}of{m}.json").unlink()
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fixture", action="store_true")
    ap.add_argument("--alexandria", type=int, default=0, help="number of binaries (0 = skip)")
    ap.add_argument("--max-sites", type=int, default=0, help="skip larger cells (0 = all sizes)")
    ap.add_argument("--shard", default="0/1", help="K/M: run every M-th material from the K-th")
    ap.add_argument("--merge-shards", type=int, default=0, help="join M part files and exit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supercell-min-length", type=float, default=10.0)
    ap.add_argument("--fmax", type=float, default=0.01)
    ap.add_argument("--relax-max-steps", type=int, default=300)
    ap.add_argument("--no-relax", action="store_true", help="use the input geometry as is")
    ap.add_argument("--tag", default="", help="suffix of the Alexandria results file name")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--potential", default="chgnet", help="a load_potential name")
    args = ap.parse_args()
    if args.merge_shards:
        summary = merge_shards(args.tag, args.merge_shards)["Cv_300K"]
        print(json.dumps(summary, indent=1))
        return
    set_torch_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    calc = PhononCalc(supercell_min_length_A=args.supercell_min_length, fmax_eV_per_A=args.fmax,
                      relax_max_steps=args.relax_max_steps, relax=not args.no_relax, t_min_K=0,
                      t_max_K=1000, t_step_K=5, potential=args.potential)
    meta = {"settings": calc.settings, "versions": package_versions(), "model": calc.model,
            "potential": calc.potential_provenance,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
                       f"shared with other jobs, {args.threads} torch threads, no GPU",
            "notes": ("input (DFT) geometry used as is" if args.no_relax else
                      f"structures relaxed with {calc.model} (positions+cell)")
                     + " before phonopy finite displacements; imaginary modes excluded from S and Cv "
                       "and counted; timings on a 2-core machine shared with other jobs (the 1-min "
                       "load average after each material is recorded)."}
    if args.fixture:
        run_fixture(calc, meta)
    if args.alexandria:
        k, m = (int(x) for x in args.shard.split("/"))
        run_alexandria(calc, meta, args.alexandria, args.max_sites, args.seed, args.tag, (k, m))


if __name__ == "__main__":
    main()
