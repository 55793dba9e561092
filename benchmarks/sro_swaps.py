"""Why do the SRO cluster expansions predict single swaps poorly, and does fitting to swaps help?
(writes benchmarks/results/sro_swaps.json and prints a table).

Equiatomic fcc CrCoNi, a = 3.56 Å, 108-atom cells, for each potential (``--potentials``):

* 80 training cells (half random, half partially ordered, as ``fit_energy_model`` makes them),
  each with one single-swap partner (one pair of unlike atoms exchanged), and 40 held-out
  base/swap pairs made the same way; all labelled with the potential (unrelaxed energies);
* cluster expansions with pairs to 5.2 Å, alone or with triplets to 3.04 Å (the two candidates
  ``cutoffs="auto"`` chose between in ``sro_crconi_auto.json``), fitted by ARD regression to the
  training cells' total energies (the library's fit, weight 0) or to those plus the training swap
  energies, the swap rows scaled by a weight w (meV per swap against meV per atom);
* for each w: the held-out swap RMSE, the 5-fold CV RMSE of total energies, and the 5-fold CV
  RMSE of the training swaps (cells and their partners held out together). The weight a user
  could choose, the one with the lowest training-swap CV, is marked; the held-out swaps play no
  part in it;
* the library fit's swap errors split by which two elements were exchanged.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
COMPOSITION = {"Cr": 1 / 3, "Co": 1 / 3, "Ni": 1 / 3}
A = 3.56
REPS = (3, 3, 3)
CUTOFF_SETS = ((5.2,), (5.2, 3.04))
WEIGHTS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1)


def make_cells(n_train: int, n_heldout: int, seed: int) -> dict:
    from matflow.sro.energy_model import (
        partially_ordered_supercells,
        random_supercell,
        single_swaps,
    )

    rng = np.random.default_rng(seed)

    def bases(n: int) -> list:
        out = [random_supercell(COMPOSITION, "fcc", A, REPS, rng) for _ in range(n // 2)]
        return out + partially_ordered_supercells(COMPOSITION, "fcc", A, REPS, n - len(out), rng)

    cells = bases(n_train)
    train_swaps = single_swaps(cells, rng)
    held = bases(n_heldout)
    return {"cells": cells, "train_swaps": train_swaps, "bases": held,
            "heldout_swaps": single_swaps(held, rng)}


def swap_kind(base, swapped) -> str:
    a, b = np.array(base.get_chemical_symbols()), np.array(swapped.get_chemical_symbols())
    return "-".join(sorted(a[a != b]))


def fit_with_swaps(x_tot, y_tot_meV, d_swap, y_swap_meV, weight: float) -> np.ndarray:
    """ECIs (intercept first) from centred total energies (meV/atom) and swap rows (meV/swap)."""
    from sklearn.linear_model import ARDRegression

    mx, my = x_tot.mean(axis=0), y_tot_meV.mean()
    rows = np.vstack([x_tot - mx, weight * d_swap])
    target = np.concatenate([y_tot_meV - my, weight * y_swap_meV])
    coef = ARDRegression(fit_intercept=False).fit(rows, target).coef_
    return np.concatenate([[my - mx @ coef], coef])


def rmse(r) -> float:
    return float(np.sqrt(np.mean(np.square(r))))


def study(cells: dict, energies: dict, cutoffs: tuple[float, ...], folds: int = 5) -> dict:
    from sklearn.model_selection import KFold

    from matflow.sro.energy_model import ClusterExpansionModel

    library = ClusterExpansionModel(lattice="fcc", a=A, cutoffs=cutoffs, species=list(COMPOSITION),
                                    cv=folds).fit(cells["cells"], energies["cells"])
    space = library.cluster_space_
    n = len(cells["cells"][0])
    x = {k: np.array([space.get_cluster_vector(at) for at in v])[:, 1:] for k, v in cells.items()}
    y_tot = 1000 * energies["cells"] / n
    d_train, y_train = n * (x["train_swaps"] - x["cells"]), 1000 * (energies["train_swaps"] - energies["cells"])
    d_held, y_held = n * (x["heldout_swaps"] - x["bases"]), 1000 * (energies["heldout_swaps"] - energies["bases"])
    split = list(KFold(folds, shuffle=True, random_state=0).split(y_tot))
    rows = []
    for w in WEIGHTS:
        ecis = fit_with_swaps(x["cells"], y_tot, d_train, y_train, w)
        pred = d_held @ ecis[1:]
        tot_res, swap_res = [], []
        for tr, te in split:
            e = fit_with_swaps(x["cells"][tr], y_tot[tr], d_train[tr], y_train[tr], w)
            tot_res.append(e[0] + x["cells"][te] @ e[1:] - y_tot[te])
            swap_res.append(d_train[te] @ e[1:] - y_train[te])
        rows.append({"weight": w, "heldout_swap_rmse_meV": rmse(pred - y_held),
                     "heldout_swap_corr": float(np.corrcoef(pred, y_held)[0, 1]),
                     "cv_total_rmse_meV_per_atom": rmse(np.concatenate(tot_res)),
                     "cv_train_swap_rmse_meV": rmse(np.concatenate(swap_res))})
    chosen = min(rows, key=lambda r: r["cv_train_swap_rmse_meV"])
    lib_pred = {"train": d_train @ library.ce_.parameters[1:] * 1000,
                "heldout": d_held @ library.ce_.parameters[1:] * 1000}
    by_kind = {}
    for part, base_key, swap_key, ref in (("train", "cells", "train_swaps", y_train),
                                          ("heldout", "bases", "heldout_swaps", y_held)):
        kinds = np.array([swap_kind(b, s) for b, s in zip(cells[base_key], cells[swap_key], strict=True)])
        err = lib_pred[part] - ref
        by_kind[part] = {k: {"n": int((kinds == k).sum()), "reference_std_meV": float(ref[kinds == k].std()),
                             "rmse_meV": rmse(err[kinds == k]), "bias_meV": float(err[kinds == k].mean())}
                         for k in sorted(set(kinds))}
    return {"cutoffs_A": list(cutoffs), "n_parameters": len(library.ce_.parameters),
            "heldout_swap_std_meV": float(y_held.std()), "train_swap_std_meV": float(y_train.std()),
            "library_fit": {"cv_rmse_meV_per_atom": library.metrics_["cv_rmse_meV_per_atom"],
                            "heldout_swap_rmse_meV": rmse(lib_pred["heldout"] - y_held)},
            "by_weight": rows, "weight_chosen_on_training_swaps": chosen["weight"],
            "heldout_swap_rmse_at_chosen_meV": chosen["heldout_swap_rmse_meV"],
            "errors_by_swap_kind_weight0": by_kind}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potentials", default="chgnet,sevenn-0")
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-heldout", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "sro_swaps.json")
    args = parser.parse_args(argv)

    from matflow.atomistic.potentials import load_potential

    t_start = time.time()
    cells = make_cells(args.n_train, args.n_heldout, args.seed)
    n_atoms = len(cells["cells"][0])
    runs = {}
    for name in args.potentials.split(","):
        pot = load_potential(name)
        t0 = time.time()
        energies = {k: np.asarray(pot.energies(v), dtype=float) for k, v in cells.items()}
        label_s = time.time() - t0
        runs[name] = {"potential": pot.provenance(), "label_seconds": label_s,
                      "energy_std_meV_per_atom": float(1000 * np.std(energies["cells"] / n_atoms)),
                      "cutoff_sets": [study(cells, energies, c) for c in CUTOFF_SETS]}
    out = {
        "benchmark": "sro_swaps", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "composition": COMPOSITION, "lattice": "fcc", "a_A": A, "atoms_per_cell": n_atoms,
        "n_train_cells": args.n_train, "n_heldout_swaps": args.n_heldout, "seed": args.seed,
        "weights": list(WEIGHTS), "runs": runs,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_avg_1min": os.getloadavg()[0]},
        "command": "python benchmarks/sro_swaps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_time_s": time.time() - t_start,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))
    print(f"{'potential':10} {'cutoffs':12} {'w':>6} {'held-out swap RMSE':>19} {'corr':>5} "
          f"{'CV total':>9} {'CV train swaps':>15}")
    for name, run in runs.items():
        for cset in run["cutoff_sets"]:
            for row in cset["by_weight"]:
                mark = " <" if row["weight"] == cset["weight_chosen_on_training_swaps"] else ""
                print(f"{name:10} {str(cset['cutoffs_A']):12} {row['weight']:6.3f} "
                      f"{row['heldout_swap_rmse_meV']:13.1f} / {cset['heldout_swap_std_meV']:3.0f} "
                      f"{row['heldout_swap_corr']:5.2f} {row['cv_total_rmse_meV_per_atom']:9.2f} "
                      f"{row['cv_train_swap_rmse_meV']:15.1f}{mark}")
    return out


if __name__ == "__main__":
    main()
