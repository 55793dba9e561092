"""Which universal potential should label vibrational entropy? Phonons of each potential against DFT.

(a) the 5-material DFPT fixture (Petretto et al., Sci. Data 5, 180065 (2018), via MODNet): S and Cv
    at 305 K, MAE per mole of atoms; potential-relaxed geometry, supercell >= 10 Å (the settings of
    ``benchmarks/phonons.py --fixture``).
(b) Alexandria PBE phonons of binaries (Alexandria database, Schmidt et al.; the 1,170-row set of
    matcalc's benchmark data, see data/alexandria_phonon_cv300/PROVENANCE.md): the first N
    of the seed-0 permutation of the 1,170 rows with <= 24 sites; Cv(300 K) MAE, imaginary-mode
    counts and time per material; DFT geometry as given (no relaxation), supercell >= 7 Å.

Potentials run interleaved by material (each material through every potential before the next), so a
stop at any point leaves a fair comparison on the same materials. The JSON is rewritten after every
material and a rerun skips finished (material, potential) pairs.

    OMP_NUM_THREADS=1 python benchmarks/potentials_phonons.py --alexandria 200 \
        --potentials chgnet sevenn-0
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
FIXTURE_SETTINGS = dict(supercell_min_length_A=10.0, fmax_eV_per_A=0.01, relax_max_steps=300,
                        relax=True, t_min_K=0, t_max_K=1000, t_step_K=5)
ALEXANDRIA_SETTINGS = dict(supercell_min_length_A=7.0, relax=False, t_min_K=0, t_max_K=1000,
                           t_step_K=5)


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _mae_block(rows: list[dict], key: str) -> dict:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"n_ok": 0, "n_failed": len(rows)}
    err = np.array([r[key] - r[key + "_ref"] for r in ok])
    stable = np.array([not r["has_imaginary_modes"] for r in ok])
    return {"n_ok": len(ok), "n_failed": len(rows) - len(ok), "mae": float(np.abs(err).mean()),
            "mean_signed_error": float(err.mean()),
            "n_with_imaginary_modes": int((~stable).sum()),
            "mae_without_imaginary": float(np.abs(err[stable]).mean()) if stable.any() else None,
            "median_time_s": float(np.median([r["time_s"] for r in ok])),
            "total_time_s": float(np.sum([r["time_s"] for r in ok]))}


def summarize(rows: list[dict], potentials: list[str]) -> dict:
    """Per potential and benchmark: MAE, imaginary-mode count and time, on the materials that every
    potential finished (a fair comparison while a run is still going)."""
    out: dict = {}
    for bench, keys in (("fixture", ("S_305K", "Cv_305K")), ("alexandria", ("Cv_300K",))):
        done: dict[str, set] = {p: {r["material"] for r in rows
                                    if r["benchmark"] == bench and r["potential"] == p}
                                for p in potentials}
        common = set.intersection(*done.values()) if done else set()
        out[bench] = {"n_common_materials": len(common)}
        for pot in potentials:
            sel = [r for r in rows if r["benchmark"] == bench and r["potential"] == pot
                   and r["material"] in common]
            out[bench][pot] = {key: _mae_block(sel, key) for key in keys}
    return out


def _one(calc: PhononCalc, structure, temperature_K: float) -> dict:
    res = calc.run(structure)
    at = res.at(temperature_K)
    return {"S": at["S_J_per_K_mol_atom"], "Cv": at["Cv_J_per_K_mol_atom"],
            "has_imaginary_modes": res.has_imaginary_modes,
            "min_frequency_THz": res.min_frequency_THz,
            "imaginary_fraction": res.imaginary_fraction, "relaxed": res.relaxed,
            "supercell_atoms": int(round(res.n_atoms * abs(np.linalg.det(res.supercell_matrix))))}


def _materials(n_alexandria: int, max_sites: int, seed: int, fixture: bool):
    from matflow.datasets import load_alexandria_cv300, load_vib_thermo_fixture

    if fixture:
        for _, row in load_vib_thermo_fixture().iterrows():
            ref = {"S_305K_ref": float(np.interp(305.0, row.temperatures_K, row.S_J_per_K_mol_atom)),
                   "Cv_305K_ref": float(np.interp(305.0, row.temperatures_K,
                                                  row.Cv_J_per_K_mol_atom))}
            yield "fixture", row.mp_id, row.structure.composition.reduced_formula, row.structure, ref
    if n_alexandria:
        df = load_alexandria_cv300()
        order = np.random.default_rng(seed).permutation(len(df))
        picked = [i for i in order if int(df.iloc[i].nsites) <= max_sites][:n_alexandria]
        for i in picked:
            row = df.iloc[i]
            yield ("alexandria", f"row{int(i)}:{row.mp_id}", row.formula, row.structure,
                   {"Cv_300K_ref": float(row.cv_300K_J_per_K_mol_atom)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--potentials", nargs="+", default=["chgnet", "sevenn-0"])
    ap.add_argument("--alexandria", type=int, default=200, help="number of binaries (0 = skip)")
    ap.add_argument("--max-sites", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fixture", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=RESULTS / "potentials_phonons.json")
    ap.add_argument("--notes", default="", help="decision and remarks stored in the JSON")
    args = ap.parse_args()
    set_torch_threads(args.threads)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.output.read_text()) if args.output.exists() else {}
    rows: list[dict] = [r for r in old.get("materials", []) if r["potential"] in args.potentials]
    done = {(r["benchmark"], r["material"], r["potential"]) for r in rows}
    calcs = {bench: {p: PhononCalc(potential=p, **cfg) for p in args.potentials}
             for bench, cfg in (("fixture", FIXTURE_SETTINGS), ("alexandria", ALEXANDRIA_SETTINGS))}
    meta = {
        "benchmark": "universal potentials vs DFT phonon thermodynamics",
        "units": "J K^-1 mol^-1 per mole of atoms; time_s per material, wall clock",
        "settings": {"fixture": FIXTURE_SETTINGS, "alexandria": ALEXANDRIA_SETTINGS,
                     "alexandria_subset": f"first {args.alexandria} of the seed-{args.seed} "
                                          f"permutation of 1,170 rows with nsites <= {args.max_sites}"},
        "potentials": {p: calcs["fixture"][p].potential_provenance for p in args.potentials},
        "versions": package_versions(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores shared "
                   f"with other jobs, {args.threads} torch thread(s), no GPU",
        "notes": args.notes or old.get("notes", ""),
    }
    # keys this script does not compute (e.g. a subset run of another potential) stay in the file
    kept = {k: v for k, v in old.items() if k not in meta and k not in ("summary", "materials", "wall_time_s")}
    wall_before = float(old.get("wall_time_s", 0.0))
    t_start = time.perf_counter()

    def payload() -> dict:
        return {**meta, **kept, "wall_time_s": wall_before + time.perf_counter() - t_start,
                "summary": summarize(rows, args.potentials), "materials": rows}

    for bench, material, formula, structure, ref in _materials(
            args.alexandria, args.max_sites, args.seed, not args.no_fixture):
        temperature = 305.0 if bench == "fixture" else 300.0
        suffix = "_305K" if bench == "fixture" else "_300K"
        for pot in args.potentials:
            if (bench, material, pot) in done:
                continue
            entry = {"benchmark": bench, "material": material, "formula": formula,
                     "nsites": len(structure), "potential": pot, **ref}
            t0 = time.perf_counter()
            try:
                res = _one(calcs[bench][pot], structure, temperature)
                if bench == "fixture":
                    entry["S_305K"] = res.pop("S")
                else:
                    res.pop("S")
                entry[f"Cv{suffix}"] = res.pop("Cv")
                entry |= res
            except Exception as exc:  # one material must not stop the comparison; record why
                entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["time_s"] = time.perf_counter() - t0
            entry["load_average_1min"] = os.getloadavg()[0]
            rows.append(entry)
            print(json.dumps(entry), flush=True)
        _write(args.output, payload())
    final = payload()
    _write(args.output, final)
    print(table(final))


def table(payload: dict) -> str:
    """The summary as a plain-text table (one line per benchmark, quantity and potential)."""
    lines = [f"{'benchmark':<11} {'quantity':<8} {'potential':<12} {'n':>4} {'MAE':>6} "
             f"{'MSE':>6} {'imag':>5} {'MAE(stable)':>11} {'median s':>8}"]
    for bench, block in payload["summary"].items():
        for pot, per_key in block.items():
            if not isinstance(per_key, dict):
                continue
            for key, m in per_key.items():
                if not m.get("n_ok"):
                    continue
                stable = m["mae_without_imaginary"]
                lines.append(f"{bench:<11} {key:<8} {pot:<12} {m['n_ok']:>4} {m['mae']:>6.2f} "
                             f"{m['mean_signed_error']:>6.2f} {m['n_with_imaginary_modes']:>5} "
                             f"{stable if stable is None else round(stable, 2)!s:>11} "
                             f"{m['median_time_s']:>8.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
