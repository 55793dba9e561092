"""Do the 90 % intervals hold out of the applicability domain? Before/after the distance widening.

For ``MODNetRegressor`` with the distance widening off (``before``: ``widening=False``, the
cross-conformal interval of earlier versions), on as by default (``after``: the two-stage widening,
calibrated on k-means clusters of the features) and on with the chemical systems of the training rows
passed to ``fit`` as ``groups`` (``after_groups``), and both refitted on the same calibration rows in the
one-stage form of models fitted before 2026-12-03 (``after_pooled``, ``after_groups_pooled``: out-of-fold
and out-of-group rows pooled, w >= 1, read at the AD distance), reports 90 % coverage and mean width on

- a random 5-fold split (KFold, shuffled): inputs like the training rows;
- a grouped 5-fold split by chemical system (sorted element set): no test system is in training;
- a grouped 5-fold split by anion (most electronegative element): a whole anion family is unseen;

``after_family_system`` / ``after_family_formula`` refit the two-stage w(d) on the same calibration rows
with each row weighted by 1 / (rows of its chemical system / reduced formula among the training rows),
so a family of polymorphs weighs as one row (``DistanceWidening.fit_two_stage(..., weights=...)``).

``after_elements`` is ``after`` as ``matflow predict`` shows it: a test row with an element that no
training row of its fold has gets no interval (``matflow.ml.predict.unseen_elements``), whatever its
feature distance; the anion split holds out whole anion families, so there this check answers for the
distance-based widening.

And, for alexandria_cv300, the DFPT fixture check: trained on every Alexandria row, each of the five
``load_vib_thermo_fixture()`` materials' Cv(300 K) with its interval and whether that covers the DFPT
value. Rows farther from the training data than any calibration row get no interval with the widening
on; their share is reported and coverage is over the rows that do get one.

The widening only adds networks after the ensemble is trained (its own seeds), so one fit gives both
variants: "before" is the same fitted model with ``widening_`` removed. The first fold of the random
split is also fitted with ``widening=False`` to check that this is the same interval.

A cheap configuration (``CONFIG``; all informative features, no NMI selection, small networks) keeps the
run near 20 minutes on 2 busy cores; it is written to the JSON with the results.

    python benchmarks/ood_coverage.py            # writes benchmarks/results/ood_coverage.json
    python benchmarks/ood_coverage.py --dataset matbench_phonons   # ood_coverage_matbench_phonons.json
    python benchmarks/ood_coverage.py --inner-of 0 --splits random,chemical_system --no-fixture
        # the same splits inside the training rows of outer fold 0 of the dataset's benchmark folds (those
        # benchmarks/modnet.py evaluates on): a choice between widening forms made from these figures never
        # sees that fold's test rows -> ood_coverage_inner0.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupKFold, KFold

from matflow.ml.estimator import MODNetRegressor
from matflow.ml.predict import unseen_elements
from matflow.ml.uncertainty import NO_INTERVAL_NOTE, DistanceWidening

RESULTS_DIR = Path(__file__).parent / "results"
DATASET, PRESET = "alexandria_cv300", "structure"
UNITS = {"alexandria_cv300": "J/K/mol-atom", "matbench_phonons": "cm^-1"}
CONFIG = {"n_features": None, "widths": ((64,), (32,), (16,)), "epochs": 120, "patience": 15,
          "batch_size": 64, "lr": 2e-3, "loss": "mae", "n_estimators": 3, "calibration": "cross",
          "widening_groups": 5}


def chemical_system(structure) -> str:
    return "-".join(sorted(el.symbol for el in structure.composition.elements))


def anion(structure) -> str:
    return max(structure.composition.elements, key=lambda el: el.X).symbol


def _unwidened(est: MODNetRegressor) -> MODNetRegressor:
    """The same fitted model without its distance widening (what ``widening=False`` fits)."""
    twin = copy.copy(est)
    twin.widening_ = None
    return twin


def _pooled_form(est: MODNetRegressor) -> MODNetRegressor:
    """The same fitted model with w(d) refitted on its own calibration rows in the one-stage form."""
    twin = copy.copy(est)
    twin.widening_form = "pooled"
    twin.widening_ = DistanceWidening(est.coverage).fit(*est.widening_calibration_)
    return twin


def _family_weights(families: np.ndarray) -> np.ndarray:
    """1 / (rows of the same family among the training rows): a family weighs as one row."""
    _, inverse, counts = np.unique(families, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def _family_form(est: MODNetRegressor, families: np.ndarray) -> MODNetRegressor:
    """The same fitted model with the two-stage w(d) refitted on its own calibration rows, each row
    weighted by 1 / (size of its family among the training rows) in both stages' quantiles."""
    twin = copy.copy(est)
    distance, scores = est.widening_calibration_
    n = len(families)
    w = _family_weights(families)
    twin.widening_ = DistanceWidening(est.coverage).fit_two_stage(distance[:n], scores[:n], distance, scores,
                                                                  near_weights=w, weights=np.tile(w, 2))
    return twin


class _Pooled:
    def __init__(self, **arrays):
        self.__dict__.update(arrays)


VARIANTS = ("before", "after", "after_groups", "after_pooled", "after_groups_pooled", "after_family_formula",
            "after_family_system", "after_elements")


def _subset(pred, rows: np.ndarray) -> _Pooled:
    return _Pooled(**{f: np.broadcast_to(np.asarray(getattr(pred, f)), np.shape(pred.mean))[rows]
                      for f in ("mean", "lower", "upper", "in_domain", "interval_ok")})


def _withhold_unseen(pred, formulas: np.ndarray, seen: set[str]) -> _Pooled:
    """``pred`` with no interval for rows that have an element outside ``seen`` (the predict CLI's rule)."""
    unseen = np.array([bool(unseen_elements(f, seen)) for f in formulas])
    ok = np.broadcast_to(np.asarray(pred.interval_ok, dtype=bool), np.shape(pred.mean)).copy()
    ok[unseen] = False
    return _Pooled(mean=pred.mean, lower=pred.lower, upper=pred.upper, in_domain=pred.in_domain,
                   interval_ok=ok, n_unseen_element=int(unseen.sum()))


def _fit_variants(X: pd.DataFrame, y: np.ndarray, systems: np.ndarray, random_state: int,
                  reduced_formulas: np.ndarray | None = None) -> tuple[dict, float]:
    """Fitted models of the variants (two fits: without and with chemical-system groups; the other
    variants reuse their networks and calibration rows) and the wall time of the first fit."""
    est = MODNetRegressor(**CONFIG, random_state=random_state, n_threads=1)
    t0 = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - t0
    by_system = MODNetRegressor(**CONFIG, random_state=random_state, n_threads=1).fit(X, y, groups=systems)
    variants = {"before": _unwidened(est), "after": est, "after_groups": by_system,
                "after_pooled": _pooled_form(est), "after_groups_pooled": _pooled_form(by_system),
                "after_family_system": _family_form(est, systems)}
    if reduced_formulas is not None:
        variants["after_family_formula"] = _family_form(est, reduced_formulas)
    return variants, wall


def _system_weighted(hit: np.ndarray, ok: np.ndarray, systems: np.ndarray) -> float | None:
    """Coverage with each chemical system weighing as one: the 87 CdI2 polytypes of Alexandria are one
    material family, not 87 independent checks of an interval."""
    hit, ok = hit.reshape(len(systems), -1).all(axis=1), ok.reshape(len(systems), -1).all(axis=1)
    if not ok.any():
        return None
    _, inverse, counts = np.unique(systems[ok], return_inverse=True, return_counts=True)
    weight = 1.0 / counts[inverse]
    return float(np.sum(weight * hit[ok]) / np.sum(weight))


def _metrics(y: np.ndarray, pred, systems: np.ndarray | None = None) -> dict:
    ok = np.broadcast_to(np.asarray(pred.interval_ok, dtype=bool), y.shape)
    hit = (y >= pred.lower) & (y <= pred.upper)
    width = pred.upper - pred.lower
    return {"n": int(y.size), "n_with_interval": int(ok.sum()),
            "coverage": float(hit[ok].mean()) if ok.any() else None,
            **({} if systems is None else {"coverage_system_weighted": _system_weighted(hit, ok, systems)}),
            "mean_width": float(width[ok].mean()) if ok.any() else None,
            "median_width": float(np.median(width[ok])) if ok.any() else None,
            "coverage_in_domain": float(hit[ok & pred.in_domain].mean()) if (ok & pred.in_domain).any() else None,
            "coverage_out_of_domain": (float(hit[ok & ~pred.in_domain].mean())
                                       if (ok & ~pred.in_domain).any() else None),
            "n_out_of_domain": int((~pred.in_domain).sum()),
            "mae": float(np.mean(np.abs(y - pred.mean))),
            **({"n_unseen_element": pred.n_unseen_element} if hasattr(pred, "n_unseen_element") else {})}


def run_split(X: pd.DataFrame, y: np.ndarray, systems: np.ndarray, folds: list, name: str, log=print,
              check_switch: bool = False, formulas: np.ndarray | None = None) -> dict:
    reduced = None if formulas is None else np.array([_reduced_formula(f) for f in formulas])
    pooled = {v: [] for v in VARIANTS}
    per_fold = []
    for k, (tr, te) in enumerate(folds):
        models, wall = _fit_variants(X.iloc[tr], y[tr], systems[tr], k, None if reduced is None else reduced[tr])
        preds = {v: m.predict_dist(X.iloc[te]) for v, m in models.items()}
        if formulas is not None:
            seen = {el for f in formulas[tr] for el in _elements(f)}
            preds["after_elements"] = _withhold_unseen(preds["after"], formulas[te], seen)
        est = models["after"]
        fold = {"fold": k, "n_train": len(tr), "n_test": len(te), "fit_wall_s": round(wall, 1),
                "widening_max_distance": float(est.widening_.max_distance) if est.widening_ else None}
        for variant, pred in preds.items():
            fold[variant] = _metrics(y[te], pred, systems[te])
            pooled[variant].append((y[te], pred))
        names, counts = np.unique(systems[te], return_counts=True)
        biggest = names[np.argmax(counts)]
        largest = systems[te] == biggest
        fold["largest_system"] = {"system": str(biggest), "n": int(counts.max())} | {
            variant: _metrics(y[te][largest], _subset(preds[variant], largest))["coverage"]
            for variant in ("before", "after", "after_pooled", "after_family_formula", "after_family_system")
            if variant in preds}
        if check_switch and k == 0:
            off = MODNetRegressor(**CONFIG, random_state=k, n_threads=1, widening=False).fit(X.iloc[tr], y[tr])
            p_off = off.predict_dist(X.iloc[te])
            fold["widening_false_fit_equals_before"] = bool(
                np.allclose(p_off.lower, preds["before"].lower, rtol=0, atol=1e-9)
                and np.allclose(p_off.upper, preds["before"].upper, rtol=0, atol=1e-9))
        log(f"[{name}] fold {k}: coverage before {fold['before']['coverage']:.3f} "
            f"after {fold['after']['coverage']:.3f} ({fold['after']['n_with_interval']}/{len(te)} with interval), "
            f"width {fold['before']['mean_width']:.3f} -> {fold['after']['mean_width']:.3f}; "
            f"with chemical-system groups {fold['after_groups']['coverage']:.3f}; one-stage form "
            f"{fold['after_pooled']['coverage']:.3f} / {fold['after_groups_pooled']['coverage']:.3f}; family-weighted "
            f"{_fmt(fold.get('after_family_formula', {}).get('coverage'))} (formula) / "
            f"{fold['after_family_system']['coverage']:.3f} (system); "
            f"element check {_fmt(fold.get('after_elements', {}).get('coverage'))} "
            f"(system-weighted {fold['before']['coverage_system_weighted']:.3f} -> "
            f"{fold['after']['coverage_system_weighted']:.3f}) "
            f"({fold.get('after_elements', {}).get('n_with_interval', '-')}/{len(te)} with interval) ({wall:.0f} s)")
        per_fold.append(fold)
    out = {"folds": per_fold}
    pooled_systems = np.concatenate([systems[te] for _, te in folds])
    for variant, parts in pooled.items():
        if not parts:
            continue
        yy = np.concatenate([p[0] for p in parts])
        cat = {f: np.concatenate([np.broadcast_to(np.asarray(getattr(p[1], f)), p[0].shape) for p in parts])
               for f in ("mean", "lower", "upper", "in_domain", "interval_ok")}
        if variant == "after_elements":
            cat["n_unseen_element"] = int(sum(p[1].n_unseen_element for p in parts))
        out[variant] = _metrics(yy, _Pooled(**cat), pooled_systems)
    return out


def _reduced_formula(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


def _elements(formula: str) -> list[str]:
    from pymatgen.core import Composition

    return [el.symbol for el in Composition(formula).elements]


def fixture_check(X: pd.DataFrame, y: np.ndarray, systems: np.ndarray, names: list[str], log=print) -> dict:
    """Train on every Alexandria row; predict the five DFPT fixture materials' Cv(300 K)."""
    from matflow.datasets import load_alexandria_cv300, load_vib_thermo_fixture
    from matflow.featurize import featurize_structures

    fx = load_vib_thermo_fixture()
    table = featurize_structures(list(fx["structure"]), PRESET, sources=list(fx["mp_id"]), n_jobs=1)
    feats = table.table.set_index("source").loc[list(fx["mp_id"]), names].astype(float)
    models, wall = _fit_variants(X, y, systems, 0)
    preds = {v: m.predict_dist(feats) for v, m in models.items()}
    est = models["after"]
    shipped = None
    try:
        from matflow.ml.registry import load
        from matflow.settings import PROJECT_ROOT

        model = load(DATASET, "latest", root=PROJECT_ROOT / "models")
        shipped = (f"{model.name}@{model.version}", model.estimator.predict_dist(
            table.table.set_index("source").loc[list(fx["mp_id"]), model.manifest["featurizer"]["feature_names_in"]]
            .astype(float)))
    except Exception as exc:  # the check stands without the shipped model
        log(f"shipped model not evaluated: {exc}")
    train_ids = set(load_alexandria_cv300()["mp_id"])
    rows = []
    for i, r in fx.reset_index(drop=True).iterrows():
        cv = float(np.interp(300.0, r["temperatures_K"], r["Cv_J_per_K_mol_atom"]))
        row = {"mp_id": r["mp_id"], "formula": r["structure"].composition.reduced_formula,
               "n_elements": len(r["structure"].composition.elements), "in_alexandria_training": r["mp_id"] in train_ids,
               "dfpt_cv300": cv}
        for variant, pred in preds.items():
            lo, hi = float(pred.lower[i]), float(pred.upper[i])
            ok = bool(np.broadcast_to(pred.interval_ok, pred.mean.shape)[i])
            row[variant] = {"mean": float(pred.mean[i]), "lower": lo if ok else None, "upper": hi if ok else None,
                            "covers": bool(lo <= cv <= hi) if ok else None,
                            "note": "" if ok else NO_INTERVAL_NOTE,
                            "in_domain": bool(pred.in_domain[i]), "distance": float(pred.distance[i])}
        if shipped is not None:
            sp = shipped[1]
            row["shipped"] = {"model": shipped[0], "mean": float(sp.mean[i]), "lower": float(sp.lower[i]),
                              "upper": float(sp.upper[i]), "covers": bool(sp.lower[i] <= cv <= sp.upper[i]),
                              "in_domain": bool(sp.in_domain[i])}
        rows.append(row)
    return {"fit_wall_s": round(wall, 1), "widening_max_distance": float(est.widening_.max_distance),
            "widening_edges": est.widening_.edges_.tolist(), "widening_factor": est.widening_.factor_[:, 0].tolist(),
            "ad_threshold": float(est.domain_.threshold_), "materials": rows}


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(result: dict) -> None:
    print(f"\n90 % intervals, {result['dataset']} ({PRESET}), pooled over 5 folds; 'answered' = rows given an "
          f"interval; width in {UNITS[result['dataset']]}")
    print(f"{'split':<18} {'variant':<19} {'coverage':>8} {'by system':>9} {'mean width':>10} {'answered':>9} "
          f"{'cov in-AD':>9} {'cov out-AD':>10} {'MAE':>6}")
    for split, res in result["splits"].items():
        for variant in VARIANTS:
            if variant not in res:  # results written before the variant existed
                continue
            m = res[variant]
            print(f"{split:<18} {variant:<19} {_fmt(m['coverage']):>8} "
                  f"{_fmt(m.get('coverage_system_weighted')):>9} {_fmt(m['mean_width']):>10} "
                  f"{m['n_with_interval']:>4}/{m['n']:<4} {_fmt(m['coverage_in_domain']):>9} "
                  f"{_fmt(m['coverage_out_of_domain']):>10} {m['mae']:>6.3f}")
    fx = result.get("fixture")
    if fx:
        print("\nDFPT fixture, Cv(300 K) in J K^-1 mol^-1 per atom (trained on all Alexandria rows)")
        shown = [v for v in VARIANTS if v in fx["materials"][0]]
        print(f"{'material':<12} {'DFPT':>6} {'pred':>6} {'AD':>4} " + " ".join(f"{v:>20}" for v in shown))
        for r in fx["materials"]:
            cells = []
            for variant in shown:
                p = r[variant]
                cells.append("no interval" if p["lower"] is None else
                             f"[{p['lower']:.2f}, {p['upper']:.2f}] {'ok' if p['covers'] else 'MISS'}")
            print(f"{r['formula']:<12} {r['dfpt_cv300']:>6.2f} {r['before']['mean']:>6.2f} "
                  f"{'in' if r['before']['in_domain'] else 'OUT':>4} " + " ".join(f"{c:>20}" for c in cells))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DATASET, choices=sorted(UNITS))
    parser.add_argument("--splits", default="random,chemical_system,anion")
    parser.add_argument("--no-fixture", action="store_true")
    parser.add_argument("--n-jobs", type=int, default=1, help="featurization processes (cache misses only)")
    parser.add_argument("--inner-of", type=int, default=None, metavar="K",
                        help="run the splits on the training rows of outer fold K of the dataset's benchmark folds")
    parser.add_argument("--out", default=None, help="default: results/ood_coverage[_DATASET][_innerK].json")
    args = parser.parse_args(argv)
    from matflow.datasets import load_alexandria_cv300, load_matbench_phonons
    from matflow.ml.train import default_folds, default_folds_text, featurize_dataset

    dataset = args.dataset
    default_name = "ood_coverage" + ("" if dataset == DATASET else f"_{dataset}")
    default_name += ("" if args.inner_of is None else f"_inner{args.inner_of}") + ".json"
    out = Path(args.out) if args.out else RESULTS_DIR / default_name

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    data = featurize_dataset(dataset, PRESET, n_jobs=args.n_jobs)
    X, y = data.X, np.asarray(data.Y, dtype=float)
    loader = load_alexandria_cv300 if dataset == DATASET else load_matbench_phonons
    structures = loader()["structure"].iloc[data.row_index]
    labels = {"chemical_system": np.array([chemical_system(s) for s in structures]),
              "anion": np.array([anion(s) for s in structures])}
    formulas = np.array([s.composition.formula for s in structures])
    outer_rows = None
    if args.inner_of is not None:
        train_pos, _ = default_folds(data)[args.inner_of]  # the nested benchmark's outer folds, mapped as there
        where = {int(p): i for i, p in enumerate(data.row_index)}
        outer_rows = np.array([where[p] for p in train_pos if p in where], dtype=int)
        X, y, formulas = X.iloc[outer_rows], y[outer_rows], formulas[outer_rows]
        labels = {k: v[outer_rows] for k, v in labels.items()}
    t_feat = time.perf_counter() - t_start
    print(f"{dataset}: {X.shape[0]} rows, {X.shape[1]} features ({t_feat:.0f} s to load/featurize)")
    result = {"dataset": dataset, "preset": PRESET, "n_rows": int(len(X)), "nominal_coverage": 0.9,
              "config": {k: (list(map(list, v)) if k == "widths" else v) for k, v in CONFIG.items()},
              "splits": {}}
    if outer_rows is not None:
        result["inner_of_outer_fold"] = {"outer_folds": default_folds_text(dataset),
                                         "fold": args.inner_of, "n_training_rows": int(len(outer_rows))}
    for split in args.splits.split(","):
        if split == "random":
            folds = list(KFold(5, shuffle=True, random_state=0).split(X))
        else:
            folds = list(GroupKFold(5).split(X, groups=labels[split]))
        t0 = time.perf_counter()
        result["splits"][split] = run_split(X, y, labels["chemical_system"], folds, split,
                                            check_switch=split == "random", formulas=formulas)
        result["splits"][split]["wall_s"] = round(time.perf_counter() - t0, 1)
        if split != "random":
            result["splits"][split]["n_groups"] = int(len(np.unique(labels[split])))
    if not args.no_fixture and dataset == DATASET and outer_rows is None:
        result["fixture"] = fixture_check(X, y, labels["chemical_system"], list(X.columns))
    result["wall_s_total"] = round(time.perf_counter() - t_start, 1)
    result["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                         "torch_threads": 1, "note": "2 CPU cores shared with other jobs"}
    print_table(result)
    if out.exists():  # what was tried before stays with the results
        result["notes"] = json.loads(out.read_text()).get("notes", [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out} ({result['wall_s_total']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
