"""Triplet clusters in the fast SRO Monte Carlo: speed, exactness and what triplets do for the
energy model (writes benchmarks/results/sro_triplets.json, one key per part, and prints a table).

``--part speed``: on one random 4,000-atom fcc Cr–Co–Ni cell (a = 3.56 Å) at 1000 K, single thread:

* trial swaps per second of ``CanonicalMonteCarlo`` for a pair cluster expansion (cutoff 4 Å, the
  model of ``benchmarks/sro.py --part speed``) and for a pair + triplet expansion (cutoffs 4.0 and
  3.6 Å: nearest-neighbour triangles and those with one second-neighbour side), interleaved
  ``--repeats`` times;
* with ``--baseline FILE`` (a copy of ``matflow/sro/montecarlo.py`` from before triplets were
  supported), the pair-only rate of that module's kernel in the same interleaved loop, so that the
  pair path can be checked for a slowdown; the file's sha256 goes into the JSON;
* after the runs, the running energy of each model against ``N * ClusterExpansion.predict``.
The order of the models is reversed on every other repeat; on a shared machine the best repeat
is the steadier figure for comparing kernels, the median is reported beside it.

``--part ce``: equiatomic fcc CrCoNi (a = 3.56 Å), 108-atom training cells labelled with each
potential (``--potentials``), cluster expansions fitted with the candidates of ``cutoffs="auto"``:
pairs only to ``--pair-cutoff`` or pairs plus triplets (two triplet cutoffs), chosen by
cross-validation on the training cells; every candidate's CV RMSE and held-out swap RMSE are
recorded (the swaps play no part in the choice).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
A = 3.56


def cell_4000(seed: int = 1):
    from matflow.sro.lattice import ideal_supercell

    atoms = ideal_supercell("fcc", A, 10)
    symbols = np.array(["Cr", "Co", "Ni"] * (len(atoms) // 3 + 1))[: len(atoms)]
    atoms.set_chemical_symbols(list(np.random.default_rng(seed).permutation(symbols)))
    return atoms


def expansion(cutoffs: tuple[float, ...], seed: int = 0):
    """Cr–Co–Ni expansion with fixed random ECIs of CrCoNi size (0.005 eV)."""
    from ase.build import bulk
    from icet import ClusterExpansion, ClusterSpace

    cs = ClusterSpace(bulk("Ni", "fcc", a=A), list(cutoffs), [["Cr", "Co", "Ni"]])
    return ClusterExpansion(cs, np.random.default_rng(seed).normal(0.0, 0.005, len(cs)))


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("montecarlo_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rel_error(mc, ham, ce, cell) -> float:
    final = cell.copy()
    final.set_chemical_symbols([ham.species[k] for k in mc.types])
    ref = len(final) * ce.predict(final)
    return float(abs(mc.energy - ref) / abs(ref))


def machine() -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "load_avg_1min": os.getloadavg()[0]}


def part_speed(args) -> dict:
    from matflow.sro import montecarlo as current

    cell = cell_4000()
    models = {"pairs (4.0 Å)": (4.0,), "pairs + triplets (4.0, 3.6 Å)": (4.0, 3.6)}
    runners, info = {}, {}
    for name, cutoffs in models.items():
        ce = expansion(cutoffs)
        t = time.perf_counter()
        ham = current.hamiltonian_from_ce(ce, cell)
        build = time.perf_counter() - t
        types = current.types_from_symbols(cell.get_chemical_symbols(), ham.species)
        mc = current.CanonicalMonteCarlo(ham, types, seed=0)
        mc.run(args.temperature, 10_000)  # compile and warm up
        runners[name] = (mc, ham, ce)
        info[name] = {"cutoffs_A": list(cutoffs), "build_s": build,
                      "pair_entries_per_atom": len(ham.neighbours) / len(cell),
                      "triplet_entries_per_atom": len(ham.triplet_table) / len(cell),
                      "n_pair_tables": len(ham.tables), "n_triplet_tables": len(ham.triplet_tables)}
    baseline = None
    if args.baseline is not None:
        base = load_module(args.baseline)
        ce = expansion((4.0,))
        ham = base.pair_hamiltonian_from_ce(ce, cell)
        mc = base.CanonicalMonteCarlo(ham, base.types_from_symbols(cell.get_chemical_symbols(),
                                                                   ham.species), seed=0)
        mc.run(args.temperature, 10_000)
        runners["pairs (4.0 Å), before triplet support"] = (mc, ham, ce)
        baseline = {"path": str(args.baseline),
                    "sha256": hashlib.sha256(args.baseline.read_bytes()).hexdigest()}

    rates: dict[str, list[float]] = {name: [] for name in runners}
    load = []
    for repeat in range(args.repeats):
        load.append(os.getloadavg()[0])
        for name in list(runners) if repeat % 2 == 0 else list(runners)[::-1]:
            mc = runners[name][0]
            t = time.perf_counter()
            mc.run(args.temperature, args.trials)
            rates[name].append(args.trials / (time.perf_counter() - t))
    rows = {}
    for name, (mc, ham, ce) in runners.items():
        rows[name] = {**info.get(name, {"cutoffs_A": [4.0]}),
                      "trials_per_s": rates[name],
                      "median_trials_per_s": float(np.median(rates[name])),
                      "best_trials_per_s": float(np.max(rates[name])),
                      "acceptance": mc.n_accepted / mc.n_trials,
                      "running_energy_vs_predict_rel_error": rel_error(mc, ham, ce, cell)}
    print(f"{len(cell)} atoms, {args.temperature:g} K, {args.repeats} interleaved repeats, "
          f"load {np.mean(load):.1f}")
    for name, r in rows.items():
        print(f"  {name:<40} median {r['median_trials_per_s']:>9.3g}, best "
              f"{r['best_trials_per_s']:>9.3g} trials/s   "
              f"rel. energy error {r['running_energy_vs_predict_rel_error']:.1e}")
    return {"machine": {**machine(), "load_avg_1min_per_repeat": load}, "n_atoms": len(cell),
            "temperature_K": args.temperature, "trials_per_timing": args.trials,
            "repeats": args.repeats, "baseline": baseline, "models": rows}


def part_ce(args) -> dict:
    from matflow.sro.energy_model import cutoff_candidates, fit_energy_model

    comp = {"Cr": 1 / 3, "Co": 1 / 3, "Ni": 1 / 3}
    candidates = cutoff_candidates("fcc", A, args.pair_cutoff)
    out = []
    for name in args.potentials.split(","):
        t = time.perf_counter()
        fit = fit_energy_model(comp, "fcc", A, potential=name, n_structures=args.n_train, size=3,
                               cutoffs=candidates, n_swaps=args.n_swaps, seed=0)
        sel = fit.model.cutoff_selection_
        out.append({"potential": fit.potential, "chosen_cutoffs_A": list(fit.model.cutoffs_),
                    "metrics_of_chosen": fit.metrics, "selection": sel,
                    "wall_s": time.perf_counter() - t, "timings_s": fit.timings_s})
        print(f"{name}: chose {list(fit.model.cutoffs_)} Å; nested CV RMSE "
              f"{fit.metrics['cv_rmse_meV_per_atom']:.3f} meV/atom, swap RMSE "
              f"{fit.metrics['swap_rmse_meV']:.1f} meV (swap spread "
              f"{fit.metrics['swap_std_reference_meV']:.1f} meV)")
        for row in sel["candidates"]:
            print(f"    {str(row['cutoffs_A']):<16} params {row['n_parameters']:>3}  CV RMSE "
                  f"{row['cv_rmse_meV_per_atom']:.3f} ± {row['cv_rmse_se_meV_per_atom']:.3f} "
                  f"meV/atom  swap RMSE {row['swap_rmse_meV_not_used_for_choice']:.1f} meV")
    return {"machine": machine(), "composition": "CrCoNi (equiatomic)", "lattice": "fcc",
            "a_A": A, "n_train": args.n_train, "atoms_per_cell": 108, "n_swaps": args.n_swaps,
            "candidates_A": [list(c) for c in candidates], "fits": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "ce"), default="speed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=1_000_000, help="trial swaps per timing")
    parser.add_argument("--temperature", type=float, default=1000.0)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="montecarlo.py from before triplet support (pair-kernel comparison)")
    parser.add_argument("--potentials", default="chgnet", help="comma-separated, for --part ce")
    parser.add_argument("--pair-cutoff", type=float, default=5.2, help="Å, for --part ce")
    parser.add_argument("--n-train", type=int, default=80, help="training cells, for --part ce")
    parser.add_argument("--n-swaps", type=int, default=32, help="held-out swaps, for --part ce")
    parser.add_argument("--output", type=Path, default=RESULTS / "sro_triplets.json")
    args = parser.parse_args()
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    part = part_ce(args) if args.part == "ce" else part_speed(args)
    result[args.part] = {**part, "command": "python " + " ".join(sys.argv)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
