"""Chemical short-range order: speed anchors and the CrCoNi demonstration.

``--part speed`` (writes benchmarks/results/sro.json and prints a table):

* Warren–Cowley analysis time (``matflow.sro.warren_cowley.warren_cowley``, neighbour search
  included) on random equiatomic fcc CrCoNi cells of 4,000 and 32,000 atoms;
* Monte Carlo trial swaps per second of matflow's ``CanonicalMonteCarlo`` and of icet's
  ``mchammer.ensembles.CanonicalEnsemble`` on the same 4,000-atom cell and the same pair cluster
  expansion (fcc Cr–Co–Ni, cutoff 4 Å, two pair orbits), interleaved (mchammer, matflow, mchammer,
  ...) ``--repeats`` times at 1000 K; each pair gives one ratio and the median is reported. Both
  run the same number of trial swaps of two unlike atoms;
* energy labels per second of each universal potential on 108-atom random CrCoNi cells;
* cross-validated RMSE of a pair cluster expansion fitted to each potential.

``--part crconi`` (writes benchmarks/results/sro_crconi.json, or ``--output``, and plots under
docs/sro/, or ``--plots``): equiatomic CrCoNi, fcc, a = 3.56 Å, annealed 1500 -> 400 K with an
energy model fitted to CHGNet and one fitted to SevenNet-0, compared with published SRO of CrCoNi.
``--cutoffs`` takes what ``matflow sro simulate --cutoffs`` takes (parsed by the same library
function, ``matflow.sro.simulate.parse_cutoffs``): ``5.2`` (pairs), ``5.2,3.0`` (pairs, triplets) or
``auto`` (pairs to ``--cutoff`` alone or with triplets, chosen by cross-validation on the training
cells only); without it, pairs to ``--cutoff``.

Threads: torch and numba run with one thread (``OMP_NUM_THREADS=1``, ``NUMBA_NUM_THREADS=1`` are
set before they load), the machine being shared.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "sro"
CRCONI = {"Cr": 1 / 3, "Co": 1 / 3, "Ni": 1 / 3}
A_CRCONI = 3.56


def machine() -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
            "load_avg_1min": os.getloadavg()[0], "git_commit": commit}


def crconi_cell(n_rep: int, seed: int = 0):
    """Random near-equiatomic fcc CrCoNi, n_rep³ cubic cells (4,000 atoms: 1,334/1,333/1,333)."""
    from matflow.sro.lattice import ideal_supercell

    atoms = ideal_supercell("fcc", A_CRCONI, n_rep)
    symbols = np.array(["Cr", "Co", "Ni"] * (len(atoms) // 3 + 1))[: len(atoms)]
    atoms.set_chemical_symbols(list(np.random.default_rng(seed).permutation(symbols)))
    return atoms


def bench_warren_cowley(sizes=(10, 20), repeats: int = 3) -> list[dict]:
    from matflow.sro.warren_cowley import warren_cowley

    out = []
    for n_rep in sizes:
        atoms = crconi_cell(n_rep)
        warren_cowley(atoms, n_shells=2, lattice="fcc", a=A_CRCONI)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            warren_cowley(atoms, n_shells=2, lattice="fcc", a=A_CRCONI)
            times.append(time.perf_counter() - t)
        out.append({"n_atoms": len(atoms), "median_s": float(np.median(times)),
                    "times_s": times, "shells": 2})
    return out


def pair_ce(seed: int = 0):
    """A pair cluster expansion for fcc Cr–Co–Ni (cutoff 4 Å) with fixed, CrCoNi-sized ECIs."""
    from ase.build import bulk
    from icet import ClusterExpansion, ClusterSpace

    cs = ClusterSpace(bulk("Ni", "fcc", a=A_CRCONI), [4.0], [["Cr", "Co", "Ni"]])
    params = np.random.default_rng(seed).normal(0.0, 0.005, len(cs))
    return ClusterExpansion(cs, params)


def bench_mc(repeats: int = 3, mchammer_trials: int = 20000, matflow_trials: int = 2_000_000,
             temperature_K: float = 1000.0) -> dict:
    from mchammer.calculators import ClusterExpansionCalculator
    from mchammer.ensembles import CanonicalEnsemble

    from matflow.sro.montecarlo import (
        CanonicalMonteCarlo,
        pair_hamiltonian_from_ce,
        types_from_symbols,
    )

    ce = pair_ce()
    cell = crconi_cell(10, seed=1)
    t = time.perf_counter()
    ham = pair_hamiltonian_from_ce(ce, cell)
    t_build = time.perf_counter() - t
    mc = CanonicalMonteCarlo(ham, types_from_symbols(cell.get_chemical_symbols(), ham.species),
                             seed=0)
    mc.run(temperature_K, 10_000)  # compile + warm-up
    t = time.perf_counter()
    calc = ClusterExpansionCalculator(cell, ce)
    ens = CanonicalEnsemble(cell, calc, temperature=temperature_K, dc_filename=None, random_seed=0)
    t_mch_setup = time.perf_counter() - t
    ens.run(1000)
    rows = []
    for _ in range(repeats):
        t = time.perf_counter()
        ens.run(mchammer_trials)
        r_mch = mchammer_trials / (time.perf_counter() - t)
        t = time.perf_counter()
        mc.run(temperature_K, matflow_trials)
        r_mf = matflow_trials / (time.perf_counter() - t)
        rows.append({"mchammer_trials_per_s": r_mch, "matflow_trials_per_s": r_mf,
                     "ratio": r_mf / r_mch})
    final = cell.copy()
    final.set_chemical_symbols([ham.species[k] for k in mc.types])
    rel = abs(mc.energy - len(final) * ce.predict(final)) / abs(len(final) * ce.predict(final))
    ratios = [r["ratio"] for r in rows]
    return {"n_atoms": len(cell), "cutoff_A": 4.0, "temperature_K": temperature_K,
            "pair_orbit_radii_A": ham.radii.tolist(), "repeats": rows,
            "median_ratio": float(np.median(ratios)), "min_ratio": float(min(ratios)),
            "median_matflow_trials_per_s": float(np.median([r["matflow_trials_per_s"]
                                                            for r in rows])),
            "median_mchammer_trials_per_s": float(np.median([r["mchammer_trials_per_s"]
                                                             for r in rows])),
            "matflow_setup_s": t_build, "mchammer_setup_s": t_mch_setup,
            "running_energy_vs_predict_rel_error": float(rel),
            "matflow_acceptance": mc.n_accepted / mc.n_trials}


def bench_potentials(names, n_cells: int = 8) -> list[dict]:
    from matflow.atomistic.potentials import load_potential

    cells = [crconi_cell(3, seed=100 + k) for k in range(n_cells)]
    out = []
    for name in names:
        t = time.perf_counter()
        pot = load_potential(name)
        t_load = time.perf_counter() - t
        pot.energies(cells[:1])  # warm-up
        t = time.perf_counter()
        e = pot.energies(cells)
        dt = time.perf_counter() - t
        out.append({"potential": name, "load_s": t_load, "n_cells": n_cells, "atoms_per_cell": 108,
                    "structures_per_s": n_cells / dt, "atoms_per_s": 108 * n_cells / dt,
                    "energy_std_meV_per_atom_random": 1000 * float(np.std(e / 108)),
                    "provenance": pot.provenance()})
    return out


def bench_ce(names, n_structures: int) -> list[dict]:
    from matflow.sro.energy_model import fit_energy_model

    out = []
    for name in names:
        fit = fit_energy_model(CRCONI, "fcc", A_CRCONI, potential=name, n_structures=n_structures,
                               size=3, cutoffs=(4.0,), seed=0)
        out.append({"potential": name, **fit.metrics, "timings_s": fit.timings_s})
    return out


def part_speed(args) -> dict:
    names = args.potentials.split(",")
    res = {"machine": machine(), "warren_cowley": bench_warren_cowley(),
           "monte_carlo": bench_mc(args.repeats), "potentials": bench_potentials(names),
           "cluster_expansion": bench_ce(names, args.n_train)}
    print("\nWarren–Cowley (2 shells, neighbour search included)")
    for r in res["warren_cowley"]:
        print(f"  {r['n_atoms']:>6} atoms  {r['median_s']:.3f} s")
    m = res["monte_carlo"]
    print(f"\nMonte Carlo, {m['n_atoms']} atoms, pair CE cutoff 4 Å, {m['temperature_K']:g} K")
    print(f"  {'repeat':>6} {'mchammer/s':>12} {'matflow/s':>12} {'ratio':>8}")
    for k, r in enumerate(m["repeats"]):
        print(f"  {k:>6} {r['mchammer_trials_per_s']:>12.4g} {r['matflow_trials_per_s']:>12.4g} "
              f"{r['ratio']:>8.0f}")
    print(f"  median ratio {m['median_ratio']:.0f}; running energy vs predict rel. error "
          f"{m['running_energy_vs_predict_rel_error']:.1e}")
    print("\nPotentials, 108-atom CrCoNi cells, 1 thread")
    for r in res["potentials"]:
        print(f"  {r['potential']:<12} {r['structures_per_s']:.2f} structures/s "
              f"{r['atoms_per_s']:.0f} atoms/s (load {r['load_s']:.1f} s)")
    print("\nPair cluster expansion (cutoff 4 Å) per potential")
    for r in res["cluster_expansion"]:
        print(f"  {r['potential']:<12} std {r['energy_std_meV_per_atom']:.2f} meV/atom  CV RMSE "
              f"{r['cv_rmse_meV_per_atom']:.2f} meV/atom  R² {r['cv_r2']:.3f}  swap RMSE "
              f"{r['swap_rmse_meV']:.1f} meV (swap std {r['swap_std_reference_meV']:.1f})")
    return res


# ---------------------------------------------------------------------------------- CrCoNi
CRCONI_NOTES = (
    "Compared quantity: the signs (and rough size) of the first-shell Warren-Cowley alpha_ij of "
    "equiatomic fcc CrCoNi at the lowest annealing temperatures, alpha_ij = 1 - p_ij / c_j (alpha > 0: "
    "the pair is avoided, alpha < 0: preferred). References: (1) Ding, Yu, Asta & Ritchie, PNAS "
    "115, 8919 (2018), DFT-based Monte Carlo of CrCoNi: Cr-Cr nearest neighbours avoided "
    "(alpha_CrCr > 0 in shell 1) and Cr-Ni and Cr-Co unlike pairs preferred (alpha < 0); the "
    "DFT sign pattern used here is (alpha_CrCr > 0, alpha_CrCo < 0, alpha_CrNi < 0). (2) Tamm et "
    "al., Acta Mater. 99, 307 (2015), ab initio Monte Carlo of NiCoCr: short-range order driven "
    "by Cr avoiding Cr as nearest neighbour, the same qualitative picture. (3) Zhang et al., "
    "Nature 581, 283 (2020): energy-filtered TEM and diffuse electron scattering find SRO "
    "domains in CrCoNi aged at 1000 C and weaker or no SRO after water quenching: qualitative "
    "support that SRO forms at 1000-1300 K, no per-pair alpha. (4) Woodgate et al., "
    "arXiv:2303.00641: the DFT-predicted order type of CrCoNi depends on the magnetic state "
    "assumed (paramagnetic vs ferrimagnetic), so agreement in sign is the fair test for "
    "potentials trained on spin-polarised MPtrj data. Magnitudes are not compared number by "
    "number: the published alpha values were not available in stored references here, so only "
    "signs are scored. No published DFT ordering energy is compared. "
)



def _alpha_plot(sim, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    species = sim.species
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    temps = np.array([r["temperature_K"] for r in sim.temperatures])
    order = np.argsort(temps)
    rnd_mean, rnd_std = np.array(sim.random_alpha_mean), np.array(sim.random_alpha_std)
    n = 0
    for a_i in range(len(species)):
        for b_i in range(a_i, len(species)):
            for shell, ax in enumerate(axes):
                t, mean, err = sim.alpha(shell, species[a_i], species[b_i])
                ax.errorbar(t[order], mean[order], yerr=err[order], fmt="o-", color=f"C{n}",
                            label=f"{species[a_i]}–{species[b_i]}", capsize=2)
                lo = rnd_mean[shell, a_i, b_i] - 1.96 * rnd_std[shell, a_i, b_i]
                hi = rnd_mean[shell, a_i, b_i] + 1.96 * rnd_std[shell, a_i, b_i]
                ax.axhspan(lo, hi, color=f"C{n}", alpha=0.08)
            n += 1
    for shell, ax in enumerate(axes):
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_xlabel("temperature (K)")
        ax.set_title(f"shell {shell + 1} ({sim.shell_radii_A[shell]:.2f} Å)", fontsize=9)
    axes[0].set_ylabel("Warren–Cowley α (MC mean ± block s.e.)")
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(f"{title}; shaded: 95 % band of a random arrangement ({sim.n_atoms} atoms)",
                 fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def check_cutoffs(text: str | None, pair_cutoff: float) -> tuple[list, str]:
    """Resolve ``--cutoffs`` for fcc CrCoNi with the library's parser (the one the CLI uses), so a
    bad value stops the run before any labelling; returns the candidate set(s) and the reason."""
    from matflow.sro.simulate import parse_cutoffs

    return parse_cutoffs(text, lattice="fcc", a=A_CRCONI, pair_cutoff=pair_cutoff)


def crconi_summary(d: dict) -> dict:
    """Per-potential summary of one ``SROSimulation.to_dict()``: first-shell α at the lowest T (and
    per T), DFT-sign agreement, the cutoffs used and, when chosen automatically, every candidate's
    inner CV figures; the swap RMSE is on held-out single swaps that play no part in any choice."""
    sp = d["species"]
    cr, co, ni = sp.index("Cr"), sp.index("Co"), sp.index("Ni")
    low = min(d["temperatures"], key=lambda r: r["temperature_K"])
    a1 = np.array(low["alpha"])[0]
    metrics = d["energy_model"]["metrics"]
    signs = [a1[cr, cr] > 0, a1[cr, co] < 0, a1[cr, ni] < 0]
    selection = d["energy_model"].get("cutoff_selection")
    return {
        "T_low_K": low["temperature_K"],
        "alpha1_CrCr": float(a1[cr, cr]),
        "alpha1_CrCo": float(a1[cr, co]),
        "alpha1_CrNi": float(a1[cr, ni]),
        "alpha1_CoNi": float(a1[co, ni]),
        "agrees_with_DFT_sign_pattern": bool(all(signs)),
        "n_DFT_signs_matched": int(sum(signs)),
        "alpha1_by_T": {f"{r['temperature_K']:g}": {
            f"{sp[i]}{sp[j]}": float(np.array(r["alpha"])[0][i, j])
            for i in range(len(sp)) for j in range(i, len(sp))} for r in d["temperatures"]},
        "cutoffs_A": d["settings"]["cutoffs_A"],
        "cutoffs_reason": d["settings"]["cutoffs_reason"],
        "n_parameters": metrics["n_parameters"],
        "cv_rmse_meV_per_atom": metrics["cv_rmse_meV_per_atom"],
        "cv_nested": bool(metrics.get("cv_nested", False)),
        "cv_r2": metrics["cv_r2"],
        "energy_std_meV_per_atom": metrics["energy_std_meV_per_atom"],
        "swap_rmse_meV": metrics["swap_rmse_meV"],
        "swap_std_reference_meV": metrics["swap_std_reference_meV"],
        "swap_corr": metrics["swap_corr"],
        "n_swaps": metrics["n_swaps"],
        "candidates": None if selection is None else [
            {k: row[k] for k in ("cutoffs_A", "n_parameters", "cv_rmse_meV_per_atom",
                                 "cv_rmse_se_meV_per_atom", "swap_rmse_meV_not_used_for_choice")}
            for row in selection["candidates"]],
        "outer_fold_choices": None if selection is None else selection["outer_fold_choices"],
    }


def part_crconi(args) -> dict:
    from matflow.sro.plots import plot_motifs
    from matflow.sro.simulate import simulate_sro

    temps = tuple(float(t) for t in args.temperatures.split(","))
    runs = {}
    for name in args.potentials.split(","):
        t = time.perf_counter()
        sim = simulate_sro(CRCONI, lattice="fcc", a=A_CRCONI, temperatures=temps, size=args.size,
                           potential=name, n_train=args.n_train, sweeps=args.sweeps, seed=0,
                           cutoff=args.cutoff, cutoffs=args.cutoffs,
                           progress=lambda msg, n=name: print(f"[{n}] {msg}", flush=True))
        wall = time.perf_counter() - t
        _alpha_plot(sim, args.plots / f"crconi_alpha_{name}.png", f"CrCoNi, energy model on {name}")
        plot_motifs(sim.motif_stats[-1], args.plots / f"crconi_motifs_{name}_{int(min(temps))}K.png")
        d = sim.to_dict()
        d["wall_time_s"] = wall
        runs[name] = d
        m = d["energy_model"]["metrics"]
        print(f"[{name}] cutoffs {d['settings']['cutoffs_A']} Å ({d['settings']['cutoffs_reason']})")
        for row in (d["energy_model"].get("cutoff_selection") or {}).get("candidates", []):
            print(f"    candidate {str(row['cutoffs_A']):<16} params {row['n_parameters']:>3}  CV "
                  f"{row['cv_rmse_meV_per_atom']:.3f} ± {row['cv_rmse_se_meV_per_atom']:.3f} "
                  f"meV/atom  held-out swap RMSE {row['swap_rmse_meV_not_used_for_choice']:.1f} meV")
        print(f"[{name}] std {m['energy_std_meV_per_atom']:.2f} meV/atom, CV RMSE "
              f"{m['cv_rmse_meV_per_atom']:.2f}{' (nested)' if m.get('cv_nested') else ''}, R² "
              f"{m['cv_r2']:.3f}, swap RMSE {m['swap_rmse_meV']:.1f} meV; wall {wall:.0f} s")
        for r in d["temperatures"]:
            a1 = np.array(r["alpha"])[0]
            sp = d["species"]
            print(f"   {r['temperature_K']:>6.0f} K  " + "  ".join(
                f"{sp[i]}{sp[j]} {a1[i, j]:+.3f}" for i in range(3) for j in range(i, 3)))
    summary = {name: crconi_summary(d) for name, d in runs.items()}
    findings = []
    for name, m in summary.items():
        findings.append(
            f"{name}: at {m['T_low_K']:.0f} K alpha1 CrCr {m['alpha1_CrCr']:+.3f}, CrCo "
            f"{m['alpha1_CrCo']:+.3f}, CrNi {m['alpha1_CrNi']:+.3f} ({m['n_DFT_signs_matched']}/3 DFT signs; CE "
            f"cutoffs {m['cutoffs_A']} A, CV R2 {m['cv_r2']:.2f}, energy spread "
            f"{m['energy_std_meV_per_atom']:.1f} meV/atom)")
    best = max(summary, key=lambda n: (summary[n]["n_DFT_signs_matched"], summary[n]["cv_r2"]))
    notes = (CRCONI_NOTES + "Result: " + "; ".join(findings) + f". Recommended default potential "
             f"for SRO: {best} (most DFT signs matched, then the better-determined energy model).")
    return {"machine": machine(), "composition": CRCONI, "lattice": "fcc", "a_A": A_CRCONI,
            "temperatures_K": list(temps), "settings": {"mc_size": args.size, "sweeps": args.sweeps,
                                                        "n_train": args.n_train,
                                                        "cutoff_A": args.cutoff,
                                                        "cutoffs": args.cutoffs,
                                                        "cutoffs_resolved_A": args.cutoff_sets,
                                                        "cutoffs_reason": args.cutoffs_reason},
            "summary": summary, "recommended_potential": best, "notes": notes, "runs": runs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("speed", "crconi"), default="speed")
    parser.add_argument("--potentials", default="chgnet,sevenn-0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--size", type=int, default=12)
    parser.add_argument("--sweeps", type=int, default=1000)
    parser.add_argument("--cutoff", type=float, default=5.2,
                        help="pair cutoff (Å) of the CrCoNi energy models (the pair part of 'auto')")
    parser.add_argument("--cutoffs", default=None,
                        help="as matflow sro simulate --cutoffs: 5.2 (pairs), 5.2,3.0 (pairs, "
                             "triplets) or auto (pairs to --cutoff alone or with triplets, chosen by "
                             "CV on the training cells); default: pairs to --cutoff")
    parser.add_argument("--temperatures", default="1500,1200,1000,800,600,400")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/sro.json or sro_crconi.json)")
    parser.add_argument("--plots", type=Path, default=DOCS, help="folder for the CrCoNi plots")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments; ``--cutoffs`` is resolved here so that a bad value fails at
    once (``args.cutoff_sets``, ``args.cutoffs_reason``)."""
    from matflow.sro.lattice import SROInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sets, why = check_cutoffs(args.cutoffs, args.cutoff)
    except SROInputError as exc:
        parser.error(f"--cutoffs: {exc}")
    args.cutoff_sets = [list(c) if isinstance(c, tuple | list) else c for c in sets]
    args.cutoffs_reason = why
    if args.output is None:
        args.output = RESULTS / ("sro.json" if args.part == "speed" else "sro_crconi.json")
    return args


def main() -> None:
    args = parse_args()
    t = time.perf_counter()
    res = part_speed(args) if args.part == "speed" else part_crconi(args)
    res["command"] = " ".join(["python", "benchmarks/sro.py", *sys.argv[1:]])
    res["wall_time_s"] = time.perf_counter() - t
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2, default=float))
    print(f"\nwrote {args.output} ({res['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
