"""MD throughput of matflow's CHGNet path against chgnet's own MolecularDynamics, in one run.

For the 108-atom and 500-atom fcc CrCoNi cells (random equiatomic, a = 3.57 Å): 100 NVT steps at
800 K (Berendsen, taut 100 fs, 2 fs step) with both paths from the same initial velocities, reporting
atom-steps per second and the ratio; then 100 NVE steps on the 108-atom cell with both, reporting the
total-energy drift (meV/atom/ps) to show the physics is unchanged.
Writes benchmarks/results/md.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matflow.atomistic.model import load_chgnet, package_versions, set_torch_threads  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def crconi(n_rep: int, seed: int = 0):
    """Random equiatomic fcc CrCoNi, n_rep³ conventional cells (4 n_rep³ atoms)."""
    from ase.build import bulk

    atoms = bulk("Ni", "fcc", a=3.57, cubic=True).repeat(n_rep)
    n = len(atoms)
    species = np.array([24, 27, 28] * (n // 3 + 1))[:n]
    atoms.numbers = np.random.default_rng(seed).permutation(species)
    return atoms


def drift_meV_per_atom_ps(times_fs: np.ndarray, etot_eV: np.ndarray, n_atoms: int) -> float:
    slope = np.polyfit(times_fs / 1000.0, etot_eV / n_atoms, 1)[0]
    return float(slope * 1000.0)


def run_stock(atoms, ensemble: str, n_steps: int, seed: int, temperature_K: float) -> dict:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from chgnet.model.dynamics import MolecularDynamics

    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    with contextlib.redirect_stdout(io.StringIO()):
        md = MolecularDynamics(atoms, model=load_chgnet(), ensemble=ensemble, thermostat="Berendsen",
                               temperature=temperature_K, timestep=2.0, taut=100.0,
                               trajectory=None, logfile=None, use_device="cpu")
    rec = []
    md.dyn.attach(lambda: rec.append((md.dyn.get_time() / md.dyn.dt * 2.0,
                                      md.atoms.get_potential_energy() + md.atoms.get_kinetic_energy(),
                                      md.atoms.get_temperature())), interval=1)
    t0 = time.perf_counter()
    md.run(n_steps)
    wall = time.perf_counter() - t0
    rec = np.array(rec)
    return {"wall_s": wall, "times_fs": rec[:, 0], "etot_eV": rec[:, 1], "T_K": rec[:, 2]}


def run_stock_flush_denormals(atoms, ensemble: str, n_steps: int, seed: int,
                              temperature_K: float) -> dict:
    """Stock CHGNet with subnormal floats flushed to zero, to show how much of matflow's gain that
    one switch is worth on its own."""
    import torch

    torch.set_flush_denormal(True)
    try:
        return run_stock(atoms, ensemble, n_steps, seed, temperature_K)
    finally:
        torch.set_flush_denormal(False)


def run_matflow(atoms, ensemble: str, n_steps: int, seed: int, temperature_K: float) -> dict:
    from ase.io import read

    from matflow.atomistic.md import MDSettings, run_md

    settings = MDSettings(ensemble=ensemble, thermostat="berendsen", temperature_K=temperature_K,
                          n_steps=n_steps, timestep_fs=2.0, taut_fs=100.0, seed=seed,
                          traj_every=1, checkpoint_every=10)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_md(atoms, tmp, settings)
        wall = time.perf_counter() - t0
        frames = read(res.trajectory, ":")
    times = np.array([f.info["time_fs"] for f in frames])
    etot = np.array([f.get_potential_energy() + f.info["kinetic_energy_eV"] for f in frames])
    temps = np.array([f.info["temperature_K"] for f in frames])
    return {"wall_s": wall, "times_fs": times, "etot_eV": etot, "T_K": temps}


def single_point(n_repeat: int = 5) -> dict:
    """Seconds per evaluation on the 108-atom cell: stock efsm vs fast efs vs fast energy-only."""
    from chgnet.model.dynamics import CHGNetCalculator

    from matflow.atomistic.fast import FastCHGNetCalculator

    model = load_chgnet()
    atoms = crconi(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    out = {}

    def timed(fn) -> float:
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_repeat):
            fn()
        return (time.perf_counter() - t0) / n_repeat

    stock, fast = CHGNetCalculator(model, use_device="cpu"), FastCHGNetCalculator(model)

    moved = [0]

    def full(calc):
        def run():  # a fresh displacement every call, so no cached result is reused
            moved[0] += 1
            a = atoms.copy()
            a.positions[0, 0] += 1e-4 * moved[0]
            a.calc = calc
            a.get_forces(), a.get_stress()
        return run

    out["stock_energy_forces_stress_s"] = timed(full(stock))
    out["matflow_energy_forces_stress_s"] = timed(full(fast))
    out["matflow_energy_only_s"] = timed(lambda: fast.energy_only([atoms]))
    out["matflow_batch_of_4_energy_forces_stress_s_per_structure"] = timed(
        lambda: fast.calc_many([atoms] * 4, batch_size=4)) / 4
    out["n_atoms"] = len(atoms)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="3,5", help="fcc repeats: 3 -> 108 atoms, 5 -> 500 atoms")
    ap.add_argument("--no-nve", action="store_true",
                    help="skip the NVE drift runs and keep those already in md.json")
    ap.add_argument("--single-point-only", action="store_true",
                    help="only time single evaluations and merge them into an existing md.json")
    args = ap.parse_args()
    set_torch_threads(args.threads)
    if args.single_point_only:
        path = RESULTS / "md.json"
        out = json.loads(path.read_text()) if path.exists() else {}
        out["single_point"] = {**single_point(), "torch_threads": args.threads}
        path.write_text(json.dumps(out, indent=1))
        print(out["single_point"])
        return
    load_chgnet()
    out = {"benchmark": "CHGNet MD throughput, matflow fast path vs chgnet MolecularDynamics",
           "settings": {"ensemble": "NVT Berendsen", "temperature_K": 800.0, "timestep_fs": 2.0,
                        "taut_fs": 100.0, "n_steps": args.steps, "seed": 0},
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} torch threads, "
                      "no GPU; the cores were shared with other jobs, so absolute rates "
                      "are noisy; each pair ran back to back and the 1-min load average before and "
                      "after each timed run is recorded",
           "notes": "matflow wall time includes writing every frame to extxyz and a checkpoint every "
                    "10 steps; chgnet's run writes nothing. The first step (velocities, neighbour "
                    "list) is inside both timings; model loading is outside. chgnet_flush_denormals "
                    "is stock CHGNet with torch.set_flush_denormal(True), one of matflow's changes "
                    "applied alone.",
           "versions": package_versions(), "nvt": [], "nve": {}}
    if args.no_nve and (RESULTS / "md.json").exists():
        out["nve"] = json.loads((RESULTS / "md.json").read_text()).get("nve", {})
    for rep in [int(x) for x in args.sizes.split(",")]:
        atoms = crconi(rep)
        row = {"n_atoms": len(atoms), "formula": atoms.get_chemical_formula()}
        runs = [("chgnet", run_stock), ("matflow", run_matflow)]
        if rep == 3:
            runs.insert(1, ("chgnet_flush_denormals", run_stock_flush_denormals))
        for name, fn in runs:
            load_before = os.getloadavg()[0]
            r = fn(atoms, "nvt", args.steps, 0, 800.0)
            row[name] = {"wall_s": r["wall_s"], "atom_steps_per_s": len(atoms) * args.steps / r["wall_s"],
                         "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
                         "mean_T_K_last_half": float(np.mean(r["T_K"][len(r["T_K"]) // 2:]))}
            print(name, len(atoms), row[name], flush=True)
        row["speedup"] = row["matflow"]["atom_steps_per_s"] / row["chgnet"]["atom_steps_per_s"]
        if "chgnet_flush_denormals" in row:
            row["speedup_vs_chgnet_flush_denormals"] = (
                row["matflow"]["atom_steps_per_s"] / row["chgnet_flush_denormals"]["atom_steps_per_s"])
        out["nvt"].append(row)
        (RESULTS / "md.json").write_text(json.dumps(out, indent=1))
    atoms = crconi(3)
    for name, fn in () if args.no_nve else (("chgnet", run_stock), ("matflow", run_matflow)):
        r = fn(atoms, "nve", args.steps, 1, 800.0)
        out["nve"][name] = {
            "n_atoms": len(atoms), "n_steps": args.steps, "timestep_fs": 2.0, "initial_T_K": 800.0,
            "drift_meV_per_atom_per_ps": drift_meV_per_atom_ps(r["times_fs"], r["etot_eV"], len(atoms)),
            "max_abs_dE_meV_per_atom": float(np.abs(r["etot_eV"] - r["etot_eV"][0]).max() / len(atoms) * 1000),
            "wall_s": r["wall_s"]}
        print(name, "nve", out["nve"][name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "md.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
