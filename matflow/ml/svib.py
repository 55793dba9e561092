"""Vibrational entropy and heat capacity at any temperature from the phonon-DOS head.

Training data: one row per dataset row (Matbench phonons, Alexandria Cv(300 K), the 5-material DFPT
fixture), with the "structure" preset features and whichever labels the row has: DFT last DOS peak
(Matbench), DFT Cv(300 K) (Alexandria), DFPT S/Cv(T) (fixture, only when asked: it is the test set),
and a universal potential's DOS and S/Cv curves from ``data/phonon_labels`` (read row by row, so a
labelling run in progress contributes what it has finished; nothing is written there).

Serving: ``load_svib`` and ``predict_svib_files`` / ``predict_svib_structures`` give S, Cv, F per atom
at any temperature with conformal intervals on S and Cv, and the predicted DOS for plots.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from matflow.ml.dos import (
    CALIBRATION_TEMPERATURES_K,
    DEFAULT_CURVE_T,
    DOS_FORMAT,
    DOS_FORMAT_VERSION,
    FINE_GRID,
    DOSHeadRegressor,
)
from matflow.provenance import file_sha256

__all__ = ["SvibData", "load_potential_labels", "assemble_training_data", "benchmark_split",
           "save_dos_model", "load_dos_version", "load_svib", "predict_svib_structures", "predict_svib_files",
           "write_dos_files", "MEV_PER_J", "SVIB_T_K"]

PRESET = "structure"
SVIB_T_K = 305.0
SVIB_TRAINING_DATASETS: tuple[str, ...] = ("matbench_phonons", "alexandria_cv300")
"""The DFT datasets whose rows the svib mixture trains on (the DFPT fixture is its test set)."""
MEV_PER_J = 1000.0 / 96485.33212  # J K⁻¹ mol⁻¹ -> meV K⁻¹ per atom (divide by the Faraday constant)
WEIGHTS_FILE, MANIFEST_FILE, CARD_FILE = "weights.safetensors", "manifest.json", "README.md"


def _default_label_dir() -> Path:
    from matflow.settings import get_settings

    return Path(get_settings().data_dir) / "phonon_labels"


def load_potential_labels(label_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict]:
    """The potential's label rows finished so far (one per structure and dataset) and a snapshot record
    (potential, counts per dataset, newest row time). Empty table when the folder has none."""
    label_dir = Path(label_dir) if label_dir is not None else _default_label_dir()
    run_file = label_dir / "run.json"
    if not run_file.is_file():
        return pd.DataFrame(), {"potential": None, "counts": {}, "snapshot_utc": None, "label_dir": str(label_dir)}
    run = json.loads(run_file.read_text(encoding="utf-8"))
    rows, newest = [], 0.0
    for path in sorted((label_dir / "rows").glob("*/*.json")):
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a row being written by the labelling run is read next time
        row["dataset"] = path.parent.name
        rows.append(row)
        newest = max(newest, path.stat().st_mtime)
    table = pd.DataFrame(rows)
    counts = {str(k): int(v) for k, v in table["dataset"].value_counts().items()} if len(table) else {}
    snap = dt.datetime.fromtimestamp(newest, dt.UTC).isoformat(timespec="seconds") if newest else None
    return table, {"potential": run.get("potential"), "counts": counts, "snapshot_utc": snap,
                   "label_dir": str(label_dir), "temperatures_K": run.get("temperatures_K"),
                   "phonon_settings": run.get("phonon_settings")}


@dataclass
class SvibData:
    """Features, masked labels and a description of every row (``rows``: dataset, row, mp_id,
    formula, structure_hash, label flags)."""

    X: pd.DataFrame
    targets: dict[str, np.ndarray]
    rows: pd.DataFrame
    snapshot: dict
    counts: dict = field(default_factory=dict)
    fixture: pd.DataFrame | None = None

    def subset(self, idx: np.ndarray) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        return self.X.iloc[idx], {k: v[idx] for k, v in self.targets.items()}


def _features(structures: list, sources: list[str], use_cache: bool) -> pd.DataFrame:
    """Feature rows in ``sources`` order; all-NaN for a structure that failed."""
    from matflow.featurize import featurize_structures

    table = featurize_structures(structures, PRESET, sources=sources, use_cache=use_cache)
    frame = table.table.set_index("source").reindex(sources)
    X = frame[table.feature_columns].astype(float)
    X.loc[~frame["status"].eq("ok").to_numpy()] = np.nan
    return X


def assemble_training_data(*, include_fixture_labels: bool = False, label_dir: str | os.PathLike | None = None,
                           max_imaginary_fraction: float = 0.0, curve_temperatures: Sequence[float] = DEFAULT_CURVE_T,
                           use_cache: bool = True) -> SvibData:
    """Rows of Matbench, Alexandria and the fixture with features and masked labels (``dos.LABEL_TERMS``).

    A potential label is used when the potential's phonons have at most ``max_imaginary_fraction`` of
    their modes imaginary (default 0: any imaginary mode drops that row's potential labels, its DFT
    label stays). The fixture's DFPT curves are labels only with ``include_fixture_labels``.
    """
    from matflow import datasets
    from matflow.structures import structure_hash

    mb = datasets.load_matbench_phonons().reset_index(drop=True)
    al = datasets.load_alexandria_cv300()
    fx = datasets.load_vib_thermo_fixture()
    structures = list(mb["structure"]) + list(al["structure"]) + list(fx["structure"])
    rows = pd.DataFrame({
        "dataset": ["matbench_phonons"] * len(mb) + ["alexandria_cv300"] * len(al) + ["vib_thermo_fixture"] * len(fx),
        "row": list(range(len(mb))) + list(range(len(al))) + list(range(len(fx))),
        "mp_id": list(mb["mp_id"]) + list(al["mp_id"]) + list(fx["mp_id"]),
        "formula": [s.composition.reduced_formula for s in structures],
        "structure_hash": [structure_hash(s) for s in structures],
    })
    sources = [f"{d}[{r}]" for d, r in zip(rows["dataset"], rows["row"], strict=True)]
    X = _features(structures, sources, use_cache)
    X.index = pd.RangeIndex(len(X))
    n, curve_T = len(rows), [float(t) for t in curve_temperatures]
    cal_T = np.asarray(CALIBRATION_TEMPERATURES_K)
    t = {k: np.full(n, np.nan) for k in ("cv300", "peak_THz")}
    t |= {k: np.full((n, len(curve_T)), np.nan) for k in ("S_dft", "Cv_dft", "S_pot", "Cv_pot")}
    t |= {k: np.full((n, cal_T.size), np.nan) for k in ("S_cal", "Cv_cal")}
    t["dos_pot"] = np.full((n, FINE_GRID.n_bins), np.nan)
    is_mb, is_al, is_fx = (rows["dataset"] == d for d in ("matbench_phonons", "alexandria_cv300", "vib_thermo_fixture"))
    from matflow.atomistic.thermo import THZ_TO_CM1

    t["peak_THz"][is_mb.to_numpy()] = mb["last_phdos_peak_cm-1"].to_numpy() / THZ_TO_CM1
    t["cv300"][is_al.to_numpy()] = al["cv_300K_J_per_K_mol_atom"].to_numpy()
    if include_fixture_labels:
        for i, r in zip(np.flatnonzero(is_fx), fx.itertuples(), strict=True):
            for key, col in (("S_dft", "S_J_per_K_mol_atom"), ("Cv_dft", "Cv_J_per_K_mol_atom")):
                t[key][i] = np.interp(curve_T, r.temperatures_K, getattr(r, col))
            t["S_cal"][i] = np.interp(cal_T, r.temperatures_K, r.S_J_per_K_mol_atom)
            t["Cv_cal"][i] = np.interp(cal_T, r.temperatures_K, r.Cv_J_per_K_mol_atom)
    labels, snapshot = load_potential_labels(label_dir)
    counts = {"potential_rows_found": int(len(labels)), "potential_rows_used": 0, "potential_rows_imaginary": 0}
    if len(labels):
        label_T = np.asarray(snapshot["temperatures_K"], dtype=float)
        key_of = {(d, h): i for i, (d, h) in enumerate(zip(rows["dataset"], rows["structure_hash"], strict=True))}
        for lab in labels.itertuples():
            i = key_of.get((lab.dataset, lab.structure_hash))
            if i is None:
                continue
            if float(lab.imaginary_fraction) > max_imaginary_fraction:
                counts["potential_rows_imaginary"] += 1
                continue
            S, Cv = np.asarray(lab.S_J_per_K_mol_atom), np.asarray(lab.Cv_J_per_K_mol_atom)
            t["dos_pot"][i] = np.asarray(lab.dos_states_per_THz_per_atom, dtype=float)
            t["S_pot"][i], t["Cv_pot"][i] = np.interp(curve_T, label_T, S), np.interp(curve_T, label_T, Cv)
            if not (include_fixture_labels and rows.loc[i, "dataset"] == "vib_thermo_fixture"):
                t["S_cal"][i], t["Cv_cal"][i] = np.interp(cal_T, label_T, S), np.interp(cal_T, label_T, Cv)
            counts["potential_rows_used"] += 1
    ok = X.notna().any(axis=1).to_numpy()
    rows["features_ok"] = ok
    for key in ("cv300", "peak_THz", "S_dft", "dos_pot"):
        rows[f"has_{key}"] = np.isfinite(t[key]).reshape(n, -1).all(axis=1) & ok
    counts |= {"rows": int(n), "rows_features_ok": int(ok.sum()),
               "dft_cv300": int(rows["has_cv300"].sum()), "dft_last_peak": int(rows["has_peak_THz"].sum()),
               "dft_fixture_curves": int(rows["has_S_dft"].sum()), "potential_dos": int(rows["has_dos_pot"].sum())}
    return SvibData(X, t, rows, snapshot, counts, fx)


def benchmark_split(data: SvibData, fold: int, *, exclude_fixture: bool = True) -> tuple[np.ndarray, dict]:
    """Training rows for outer fold ``fold`` and the held-out rows per dataset.

    Held out: Alexandria's ``alexandria_folds()[fold]`` and Matbench's official ``matbench_folds()[fold]``
    test rows, together (one model per fold serves both comparisons). Left out of training besides:
    every row of a held-out material (same mp-id) in the other dataset, rows whose features failed, and
    with ``exclude_fixture`` the fixture's materials (mp-988, Si3N4, is also an Alexandria row).
    """
    from matflow.datasets import alexandria_folds, matbench_folds

    r = data.rows
    test = {"alexandria_cv300": np.flatnonzero(r["dataset"].eq("alexandria_cv300").to_numpy())[
                alexandria_folds(int(r["dataset"].eq("alexandria_cv300").sum()))[fold][1]],
            "matbench_phonons": np.flatnonzero(r["dataset"].eq("matbench_phonons").to_numpy())[
                matbench_folds(int(r["dataset"].eq("matbench_phonons").sum()))[fold][1]]}
    held_ids = set(r["mp_id"].iloc[np.concatenate(list(test.values()))])
    held_hashes = set(r["structure_hash"].iloc[np.concatenate(list(test.values()))])
    if exclude_fixture:
        fixture = r["dataset"].eq("vib_thermo_fixture")
        held_ids |= set(r["mp_id"][fixture])
        held_hashes |= set(r["structure_hash"][fixture])
    out = r["mp_id"].isin(held_ids) | r["structure_hash"].isin(held_hashes) | ~r["features_ok"]
    if exclude_fixture:
        out |= r["dataset"].eq("vib_thermo_fixture")
    return np.flatnonzero(~out.to_numpy()), test


def fixture_free_rows(data: SvibData) -> np.ndarray:
    """Every row usable for training a model that keeps the fixture as a test set."""
    r = data.rows
    fixture = r["dataset"].eq("vib_thermo_fixture")
    out = fixture | r["mp_id"].isin(set(r["mp_id"][fixture])) | r["structure_hash"].isin(
        set(r["structure_hash"][fixture])) | ~r["features_ok"]
    return np.flatnonzero(~out.to_numpy())


# ---------------------------------------------------------------------- registry
def save_dos_model(est: DOSHeadRegressor, folder: str | os.PathLike, *, name: str, version: str,
                   feature_names: Sequence[str], label_sources: dict, metrics: dict | None = None,
                   description: str = "", limits: Sequence[str] = (), card_extra: Sequence[str] = ()) -> Path:
    """Write ``weights.safetensors``, ``manifest.json`` (format ``matflow-dos``) and a model card."""
    from safetensors.torch import save_file

    from matflow.featurize import get_preset
    from matflow.ml.registry import package_versions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = est.get_state()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": DOS_FORMAT})
    spec = get_preset(PRESET)
    manifest = {
        "format": DOS_FORMAT, "format_version": DOS_FORMAT_VERSION, "name": name, "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "description": description,
        "featurizer": {"preset": PRESET, "preset_key": spec.key(), "preset_versions": spec.versions(),
                       "n_features_in": len(feature_names), "feature_names_in": [str(f) for f in feature_names]},
        "targets": [{"name": "S_vib", "unit": "J K^-1 mol^-1 per atom", "n_outputs": 1,
                     "note": f"at {SVIB_T_K:g} K by default; any T from the predicted DOS"},
                    {"name": "Cv", "unit": "J K^-1 mol^-1 per atom", "n_outputs": 1},
                    {"name": "F_vib", "unit": "kJ mol^-1 per atom", "n_outputs": 1},
                    {"name": "phonon DOS", "unit": "states THz^-1 atom^-1", "n_outputs": FINE_GRID.n_bins}],
        "dos_grid": {"max_THz": FINE_GRID.max_THz, "bin_THz": FINE_GRID.bin_THz, "output_bin_THz": est.bin_THz,
                     "description": FINE_GRID.describe()},
        "uncertainty": {"method": "cross-fitted members; conformal quantile of |S_label - S_out_of_fold| (and Cv) "
                                  "per temperature on 5-800 K; constant width at each T; none outside 5-800 K",
                        "coverage": est.coverage, "calibrated": meta["calibrated"],
                        "n_calibration": meta["n_calibration"],
                        "calibration_reference": "S/Cv(T) of the potential's phonons (not DFT) on the training rows"},
        "training_data": {"dataset": "svib_mixture", "label_sources": label_sources,
                          "n_rows": int(sum(v for k, v in meta["label_counts"].items() if k in ("cv300", "peak_THz")))},
        "metrics": metrics or {},
        "estimator": meta,
        "package_versions": package_versions(),
        "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(folder / WEIGHTS_FILE)},
        "limits": list(limits),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    (folder / CARD_FILE).write_text(_card(manifest, card_extra))
    return folder


def _card(m: dict, extra: Sequence[str]) -> str:
    src = m["training_data"]["label_sources"]
    lines = [f"# {m['name']} {m['version']}", "", m.get("description", ""), "", "## Labels: which are DFT, which are not", ""]
    lines += [f"- {line}" for line in src.get("summary", [])]
    lines += ["", "## Model",
              f"- Phonon-DOS head: MLP {m['estimator']['params']['hidden']} on the `{m['featurizer']['preset']}` "
              f"features -> softmax over {m['dos_grid']['output_bin_THz']:g}-THz bins on 0-{m['dos_grid']['max_THz']:g} THz, "
              "3 modes per atom; S, Cv, F at any T by the harmonic formulas "
              "(`matflow.atomistic.thermo`), so they are thermodynamically consistent.",
              f"- {m['estimator']['n_members']} cross-fitted members; interval: {m['uncertainty']['method']}; "
              f"nominal coverage {m['uncertainty']['coverage']:.0%}, {m['uncertainty']['n_calibration']} calibration rows "
              f"({m['uncertainty']['calibration_reference']}).", "", f"## Metrics (held-out rows; {m.get('metrics', {}).get('benchmark', 'benchmarks/results/svib.json')})", ""]
    lines += list(extra) or ["- none recorded"]
    lines += ["", "## Limits", *(f"- {x}" for x in m.get("limits", [])), "",
              "## Versions", ", ".join(f"{k} {v}" for k, v in m["package_versions"].items()), ""]
    return "\n".join(lines)


def load_dos_version(name: str, version: str, folder: Path, manifest: dict):
    """A ``RegisteredModel`` for a ``matflow-dos`` version folder; ``ModelLoadError`` says what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from matflow.ml.manifest import ModelLoadError
    from matflow.ml.registry import RegisteredModel

    def fail(reason: str) -> ModelLoadError:
        return ModelLoadError.of(name, version, reason)

    fv = manifest.get("format_version")
    if not isinstance(fv, int) or fv > DOS_FORMAT_VERSION:
        raise fail(f"manifest format_version {fv!r}: this matflow reads {DOS_FORMAT} up to {DOS_FORMAT_VERSION}")
    for key in ("featurizer", "estimator", "weights", "targets", "uncertainty", "training_data"):
        if not isinstance(manifest.get(key), (dict, list)):
            raise fail(f"manifest field {key!r} is missing")
    weights = folder / str(manifest["weights"].get("file", WEIGHTS_FILE))
    try:
        blob = weights.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read weights file {weights.name} ({exc})") from None
    if hashlib.sha256(blob).hexdigest() != manifest["weights"].get("sha256"):
        raise fail(f"weights file {weights.name} does not match the manifest's sha256: truncated or corrupt")
    try:
        est = DOSHeadRegressor.from_state(load_safetensors(blob), manifest["estimator"])
    except (SafetensorError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise fail(f"weights do not fit the manifest ({type(exc).__name__}: {str(exc)[:200]})") from None
    return RegisteredModel(name, version, folder, manifest, est)


def load_svib(version: str = "latest", root: str | os.PathLike | None = None):
    """The registered ``svib`` model (``matflow.ml.registry.load`` dispatches on the format)."""
    from matflow.ml.registry import load

    return load("svib", version, root=root)


# ---------------------------------------------------------------------- prediction
def _predict_table(model, table, temperatures_K: Sequence[float]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    from matflow.ml.predict import unseen_elements

    ok = table.table[table.table["status"] == "ok"]
    names = model.manifest["featurizer"]["feature_names_in"]
    if ok.empty:
        return pd.DataFrame(), {}
    X = ok.reindex(columns=names).astype(float).to_numpy()
    est = model.estimator
    pred = est.predict_thermo(X, temperatures_K)
    dos = pred.dos
    seen = _mixture_elements(model)
    out = []
    for i, (source, formula) in enumerate(zip(ok["source"], ok["formula"], strict=True)):
        unseen = unseen_elements(formula, seen)
        in_domain = None if pred.in_domain is None else bool(pred.in_domain[i])
        domain = {"in_domain": False if unseen else in_domain, "unseen_elements": unseen,
                  "ad_distance": np.nan if pred.ad_distance is None else float(pred.ad_distance[i])}
        if unseen:  # the interval was calibrated on rows whose elements it knows
            for name in ("S_lower", "S_upper", "Cv_lower", "Cv_upper"):
                getattr(pred, name)[i] = np.nan
        for j, T in enumerate(pred.temperatures_K):
            out.append({"source": source, "formula": formula, "T_K": float(T),
                        "S_J_per_K_mol_atom": pred.S[i, j], "S_lower": pred.S_lower[i, j], "S_upper": pred.S_upper[i, j],
                        "S_meV_per_K_atom": pred.S[i, j] * MEV_PER_J,
                        "S_lower_meV": pred.S_lower[i, j] * MEV_PER_J, "S_upper_meV": pred.S_upper[i, j] * MEV_PER_J,
                        "Cv_J_per_K_mol_atom": pred.Cv[i, j], "Cv_lower": pred.Cv_lower[i, j],
                        "Cv_upper": pred.Cv_upper[i, j], "F_kJ_per_mol_atom": pred.F[i, j],
                        "coverage": pred.coverage, **domain})
    return pd.DataFrame(out), {str(s): dos[i] for i, s in enumerate(ok["source"])}


def predict_svib_structures(model, structures: Sequence, sources: Sequence[str] | None = None, *,
                            temperatures_K: Sequence[float] = (SVIB_T_K,), use_cache: bool = True):
    """(rows, DOS per source, failures): one row per structure and temperature."""
    from matflow.featurize import featurize_structures

    table = featurize_structures(list(structures), model.preset, sources=sources, use_cache=use_cache)
    rows, dos = _predict_table(model, table, temperatures_K)
    return rows, dos, table.failures


def predict_svib_files(model, inputs: Sequence[str | os.PathLike], *, temperatures_K: Sequence[float] = (SVIB_T_K,),
                       use_cache: bool = True, n_jobs: int = 1, progress: bool = False):
    """(rows, DOS per source, failures) for files, folders or globs; bad files are failures."""
    from matflow.featurize import featurize_files

    table = featurize_files([str(x) for x in inputs], model.preset, n_jobs=n_jobs, use_cache=use_cache,
                            progress=progress)
    rows, dos = _predict_table(model, table, temperatures_K)
    return rows, dos, table.failures


def _slug(source: str) -> str:
    base = Path(str(source)).name or "structure"
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in base)


def write_dos_files(dos: dict[str, np.ndarray], folder: str | os.PathLike) -> list[Path]:
    """Per structure: ``<name>_dos.csv`` (frequency THz, cm⁻¹, states/THz/atom) and ``<name>_dos.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matflow.atomistic.thermo import THZ_TO_CM1
    from matflow.outputs import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nu = FINE_GRID.centres_THz
    written = []
    for source, g in dos.items():
        stem = _slug(source)
        frame = pd.DataFrame({"frequency_THz": nu, "frequency_cm-1": nu * THZ_TO_CM1, "dos_states_per_THz_per_atom": g})
        csv = folder / f"{stem}_dos.csv"
        atomic_write_text(csv, frame.to_csv(index=False, float_format="%.6g"))
        top = nu[np.flatnonzero(np.cumsum(g) * FINE_GRID.bin_THz < 3.0 * 0.9995)[-1]] if g.sum() > 0 else nu[-1]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(nu, g, lw=1.2)
        ax.set_xlim(0, min(FINE_GRID.max_THz, top * 1.15 + 1))
        ax.set_xlabel("frequency (THz)")
        ax.set_ylabel("g(ν) (states THz$^{-1}$ atom$^{-1}$)")
        ax.set_title(f"predicted phonon DOS: {source}", fontsize=9)
        fig.tight_layout()
        png = folder / f"{stem}_dos.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        written += [csv, png]
    return written


def _mixture_elements(model) -> set[str] | None:
    """Elements of the DFT datasets the mixture was trained on (their union), None if unknown."""
    from matflow.ml.predict import dataset_elements

    if model.manifest.get("training_data", {}).get("dataset") != "svib_mixture":
        return None
    parts = [dataset_elements(d) for d in SVIB_TRAINING_DATASETS]
    return None if any(p is None for p in parts) else set().union(*parts)


def svib_table_text(rows: pd.DataFrame, model) -> str:
    """The human-readable table of ``matflow predict svib``: S per atom in both units with
    intervals, Cv and F, one line per structure and temperature, and where the limits are written."""
    def interval(lo: float, hi: float, digits: int) -> str:
        return f"[{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "none"

    def domain(flag, unseen) -> str:
        if isinstance(unseen, str) and unseen:
            return f"OUT (element never in training data: {unseen})"
        return "unknown" if flag is None or (isinstance(flag, float) and np.isnan(flag)) else (
            "in" if flag else "OUT")

    head = ["source", "formula", "T (K)", "S (J/K/mol-atom)", "interval", "S (meV/K/atom)", "interval",
            "Cv (J/K/mol-atom)", "F (kJ/mol-atom)", "domain"]
    body = [[str(r.source), str(r.formula), f"{r.T_K:g}", f"{r.S_J_per_K_mol_atom:.2f}",
             interval(r.S_lower, r.S_upper, 2), f"{r.S_meV_per_K_atom:.4f}",
             interval(r.S_lower_meV, r.S_upper_meV, 4), f"{r.Cv_J_per_K_mol_atom:.2f}",
             f"{r.F_kJ_per_mol_atom:.3f}", domain(r.in_domain, getattr(r, "unseen_elements", ""))]
            for r in rows.itertuples()]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"intervals: {rows['coverage'].iloc[0]:.0%} conformal, calibrated on the potential's S(T) and "
                 "Cv(T) of the training rows (5-800 K; none outside); domain OUT: farther from the training "
                 "rows than 95 % of them are from each other, or an element no training row has, no interval given; unknown: the model was saved "
                 f"without a domain; labels and limits: models/{model.name}/{model.version}/README.md")
    return "\n".join(lines)
