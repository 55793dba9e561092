"""Model registry: ``models/<name>/<version>/`` with safetensors weights, a JSON manifest and a model card.

Nothing is pickled: network weights and the arrays a prediction needs (imputation medians, scalers,
conformal quantiles, the applicability reference set) are tensors in ``weights.safetensors``; everything
else (featurizer preset, selected features, targets with units, training-data hash, metrics, package
versions) is JSON. ``load`` checks the manifest against its schema (``matflow.ml.manifest``) and the
weights against the manifest's SHA-256 before parsing them, and refuses, with a ``ModelLoadError`` naming
model, version and reason, anything it cannot serve. ``latest`` is the newest version that loads: broken
newer versions are skipped with a ``SkippedVersionWarning``. A model whose recorded featurizer preset key
differs from the installed preset's (other package versions, other featurizer settings) loads with a
``PresetMismatchWarning``, or is refused with ``strict_preset=True``.

Predicting from files or structures (featurize, then predict) is ``matflow.ml.predict``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matflow.ml.manifest import (
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    ModelLoadError,
    check_plain_name,
    validate_manifest,
)
from matflow.provenance import file_sha256

__all__ = ["FORMAT", "FORMAT_VERSION", "save_model", "load", "list_models", "list_versions",
           "RegisteredModel", "data_hash", "ModelLoadError", "SkippedVersionWarning", "PresetMismatchWarning",
           "check_plain_name"]


class SkippedVersionWarning(UserWarning):
    """A broken version was passed over while resolving ``latest`` (or listing valid versions)."""


class PresetMismatchWarning(UserWarning):
    """The installed featurizers compute the model's preset differently from those it was trained with
    (the preset key differs): its inputs, and so its predictions, may be off."""


MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
_VERSION_RE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


def _models_dir(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    from matflow.settings import get_settings

    return get_settings().models_dir


def _version_key(version: str) -> tuple:
    m = _VERSION_RE.match(version)
    return (1, *(int(g or 0) for g in m.groups())) if m else (0, version)


def _is_plain(name: str) -> bool:
    try:
        check_plain_name(name)
    except ValueError:
        return False
    return True


def list_models(root: str | Path | None = None) -> list[str]:
    """Model names (folders with at least one version holding a manifest), sorted."""
    base = _models_dir(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _is_plain(p.name) and list_versions(p.name, base))


def list_versions(name: str, root: str | Path | None = None, *, valid_only: bool = False) -> list[str]:
    """Versions of a model holding a manifest, oldest first (v2 < v10).

    ``valid_only``: keep only the versions that load (schema, checksum, weights); each one left out is
    reported with a ``SkippedVersionWarning`` giving the reason. That loads every version, so it costs
    a read of all the weights.
    """
    check_plain_name(name, "model name")
    base = _models_dir(root) / name
    if not base.is_dir():
        return []
    versions = sorted((p.name for p in base.iterdir() if _is_plain(p.name) and (p / MANIFEST_FILE).is_file()),
                      key=_version_key)
    if not valid_only:
        return versions
    good = []
    for version in versions:
        try:
            with warnings.catch_warnings():  # loadable is the question here; load() reports mismatches
                warnings.simplefilter("ignore", PresetMismatchWarning)
                _load_version(name, version, base / version)
        except ModelLoadError as exc:
            warnings.warn(f"model {name}@{version} is broken and left out: {exc.reason}",
                          SkippedVersionWarning, stacklevel=2)
        else:
            good.append(version)
    return good


def data_hash(X: pd.DataFrame | np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (first 16 hex) of the training features and targets, to tell training sets apart."""
    h = hashlib.sha256()
    if isinstance(X, pd.DataFrame):
        h.update(json.dumps([str(c) for c in X.columns]).encode())
    h.update(np.ascontiguousarray(np.asarray(X, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(y, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    import matminer
    import pymatgen.core
    import safetensors
    import sklearn
    import torch

    from matflow import __version__

    return {"matflow": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "matminer": matminer.__version__, "pymatgen": getattr(pymatgen.core, "__version__", ""),
            "safetensors": safetensors.__version__}


def _models_subdir(base: Path, name: str, version: str) -> Path:
    """``base/name/version`` after checking both are plain names (no ``..``, no separators)."""
    check_plain_name(name, "model name")
    check_plain_name(version, "model version")
    return base / name / version


_UNCERTAINTY_METHODS = {
    "cross": "cross-conformal: each member skips one fold of the training rows and every row calibrates out of "
             "fold; residuals normalised by the mean out-of-fold residual of the {k} nearest training rows; "
             "half-width scaled by the gain of averaging the folds (shrink); out of domain never below z x the members' spread",
    "split": "bootstrap ensemble + split-conformal on held-out rows, residuals normalised by the ensemble spread",
}


def save_model(estimator, name: str, version: str, *, preset: str, targets: Sequence[dict],
               dataset: str, training_hash: str, n_train: int, metrics: dict | None = None,
               description: str = "", limits: Sequence[str] = (), root: str | Path | None = None,
               overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write weights, manifest and model card of a fitted ``MODNetRegressor``; returns the folder.

    ``targets``: one dict per property, in the estimator's order, with ``name``, ``column``, ``unit`` and
    optionally ``sub_targets`` (e.g. temperatures in K) for multi-output properties.
    """
    from safetensors.torch import save_file

    from matflow.featurize import get_preset

    folder = _models_subdir(_models_dir(root), name, version)
    if version == "latest":
        raise ValueError("model version 'latest' is reserved: it means the newest version that loads")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ValueError(f"model {name} version {version} already exists at {folder}; pick a new version")
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = estimator.get_state()
    if len(targets) != len(meta["targets"]):
        raise ValueError(f"targets lists {len(targets)} properties, the model has {len(meta['targets'])}")
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    spec = get_preset(preset)
    relevance = meta["relevance"] or [None] * len(meta["selected_features"])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "description": description,
        "featurizer": {"preset": preset, "preset_key": spec.key(), "preset_versions": spec.versions(),
                       "description": spec.description,
                       "featurizers": [{"name": f.name, "on": f.on, "metals_only": f.metals_only}
                                       for f, _ in spec.build()],
                       "n_features_in": meta["n_features_in"], "feature_names_in": meta["feature_names_in"]},
        "selected_features": [{"name": f, "nmi_relevance": r}
                              for f, r in zip(meta["selected_features"], relevance, strict=True)],
        "scalers": {"features": "min-max to [-0.5, 0.5] on training rows, NaN -> training median",
                    "targets": "standardised per sub-target (mean, std in weights)"},
        "targets": [{**meta_t, **t} for meta_t, t in zip(meta["targets"], targets, strict=True)],
        "uncertainty": {"method": _UNCERTAINTY_METHODS[meta["calibration"]].format(k=estimator.calib_neighbors),
                        "calibration": meta["calibration"],
                        "coverage": estimator.coverage, "calibrated": meta["calibrated"],
                        "n_calibration": meta["n_calibration"],
                        "shrink": [float(v) for v in getattr(estimator.calibrator_, "shrink_", [])] or None,
                        "applicability": {"method": f"mean distance to {estimator.ad_neighbors} nearest "
                                                    "training rows in scaled selected-feature space",
                                          "threshold": meta["ad_threshold"],
                                          "training_quantile": estimator.ad_quantile}},
        "training_data": {"dataset": dataset, "n_rows": int(n_train), "sha256_16": training_hash},
        "metrics": metrics or {},
        "estimator": {k: v for k, v in meta.items() if k not in ("feature_names_in", "selected_features",
                                                                  "relevance", "targets")},
        "package_versions": package_versions(),
        "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(folder / WEIGHTS_FILE)},
        "limits": list(limits),
        **(extra or {}),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    (folder / CARD_FILE).write_text(model_card(manifest))
    return folder


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _widening_lines(estimator: dict) -> list[str]:
    """The card's line on how intervals widen away from the training data (none for older models)."""
    params = estimator.get("params", {})
    if not params.get("widening") or not estimator.get("widening_n_calibration"):
        return []
    form = params.get("widening_form", "pooled")
    how = ("two stages: w_near(d) from out-of-fold rows, allowed below 1, times w_far(d) >= 1 from all "
           "calibration rows (out of fold and of held-out groups)" if form == "two_stage" else
           "one stage: w(d) >= 1 from out-of-fold and held-out-group rows pooled")
    return [f"- Distance widening ({form}): the half-width is multiplied by a factor of the distance d to the "
            f"training rows, in {how} ({params.get('widening_groups')} groups, "
            f"{estimator['widening_n_calibration']} calibration scores); no interval is given farther than "
            "any calibration row."]


def model_card(manifest: dict) -> str:
    """Markdown model card: data, metrics, uncertainty, limits, selected features with relevance."""
    t_lines = [f"| {t['name']} | `{t.get('column', '')}` | {t.get('unit', '')} | {t['n_outputs']} |"
               for t in manifest["targets"]]
    metric_lines = []
    for key, value in manifest.get("metrics", {}).items():
        if isinstance(value, dict):
            metric_lines.append(f"- **{key}**: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in value.items()
                                                              if not isinstance(v, (list, dict))))
        else:
            metric_lines.append(f"- **{key}**: {_fmt(value)}")
        folds = value.get("folds") if isinstance(value, dict) else None
        if folds:
            metric_lines.append(f"- **{key}** per fold: MAE " + ", ".join(_fmt(f["mae"]) for f in folds)
                                + "; coverage " + ", ".join(f"{f['coverage']:.3f}" for f in folds))
    feats = [f"| {i + 1} | `{f['name']}` | {_fmt(f['nmi_relevance']) if f['nmi_relevance'] is not None else '–'} |"
             for i, f in enumerate(manifest["selected_features"])]
    unc = manifest["uncertainty"]
    est = manifest["estimator"]["params"]
    if not unc["calibrated"]:
        calibrated_on = "NOT calibrated (too few rows)"
    elif unc.get("calibration") == "cross":
        shrink = ", ".join(f"{v:.3f}" for v in unc.get("shrink") or [])
        calibrated_on = f"calibrated out of fold on all {unc['n_calibration']} training rows (shrink {shrink})"
    else:
        calibrated_on = f"calibrated on {unc['n_calibration']} held-out rows"
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        manifest.get("description", ""),
        "",
        "## Data",
        f"- Dataset: `{manifest['training_data']['dataset']}`, {manifest['training_data']['n_rows']} training rows "
        f"(features+targets SHA-256/16 `{manifest['training_data']['sha256_16']}`).",
        f"- Featurizer preset: `{manifest['featurizer']['preset']}` (key `{manifest['featurizer']['preset_key']}`), "
        f"{manifest['featurizer']['n_features_in']} raw features.",
        "",
        "| target | column | unit | outputs |",
        "|---|---|---|---|",
        *t_lines,
        "",
        "## Model",
        f"- MODNet-style network (shared/group/property blocks {est['widths']}, {est['activation']}), "
        f"{manifest['estimator']['n_members']} ensemble members, {len(manifest['selected_features'])} NMI-selected features.",
        f"- Intervals: {unc['method']}; nominal coverage {unc['coverage']:.0%}, {calibrated_on}.",
        *_widening_lines(manifest["estimator"]),
        f"- Applicability: {unc['applicability']['method']}; in domain when below {unc['applicability']['threshold']:.4g} "
        f"({unc['applicability']['training_quantile']:.0%} of training rows are).",
        "",
        "## Metrics",
        *(metric_lines or ["- none recorded"]),
        "",
        "## Limits",
        *(f"- {x}" for x in manifest.get("limits", [])),
        "- Trained on ordered, DFT-relaxed crystals; disordered, defective or molecular inputs are outside its scope.",
        "- An interval's coverage is marginal (on average over structures like the training set), "
        "not per structure; out-of-domain predictions are flagged, not corrected.",
        "",
        "## Selected features (order of selection, NMI to target)",
        "",
        "| # | feature | NMI |",
        "|---|---|---|",
        *feats,
        "",
        "## Versions",
        ", ".join(f"{k} {v}" for k, v in manifest["package_versions"].items()),
        "",
    ]
    return "\n".join(lines)


@dataclass
class RegisteredModel:
    """A loaded model: the fitted estimator plus its manifest and folder."""

    name: str
    version: str
    path: Path
    manifest: dict
    estimator: object

    @property
    def preset(self) -> str:
        return self.manifest["featurizer"]["preset"]

    def predict_features(self, features: pd.DataFrame):
        """``Prediction`` for a feature table with (at least) the model's input columns."""
        names = self.manifest["featurizer"]["feature_names_in"]
        missing = [c for c in names if c not in features.columns]
        if missing:
            raise ValueError(f"model {self.name} {self.version} needs feature columns the table lacks, "
                             f"e.g. {missing[:3]} ({len(missing)} missing): featurizer mismatch")
        return self.estimator.predict_dist(features[names].astype(float))

    def predict_table(self, table) -> pd.DataFrame:
        """One row per (structure, sub-target) from a ``FeatureTable``: value, unit, interval, flag.

        Rows are ordered by target, then sub-target, then the table's ok rows in order
        (``matflow.ml.predict`` relies on this to add training-data membership)."""
        ok = table.table[table.table["status"] == "ok"]
        if ok.empty:
            return pd.DataFrame(columns=["source", "formula", "target", "value", "unit", "lower", "upper",
                                         "coverage", "std", "in_domain", "distance", "interval_ok"])
        pred = self.predict_features(ok)
        mean, lo, hi, sd = (np.atleast_2d(np.asarray(a).T).T for a in (pred.mean, pred.lower, pred.upper, pred.std))
        interval_ok = np.broadcast_to(np.asarray(pred.interval_ok, dtype=bool), np.shape(pred.distance))
        rows = []
        col = 0
        for target in self.manifest["targets"]:
            subs = target.get("sub_targets") or [None] * target["n_outputs"]
            for j in range(target["n_outputs"]):
                label = target["name"] if subs[j] is None else f"{target['name']}[{subs[j]}]"
                for i, (source, formula) in enumerate(zip(ok["source"], ok["formula"], strict=True)):
                    rows.append({"source": source, "formula": formula, "target": label,
                                 "value": float(mean[i, col + j]), "unit": target.get("unit", ""),
                                 "lower": float(lo[i, col + j]), "upper": float(hi[i, col + j]),
                                 "coverage": pred.coverage, "std": float(sd[i, col + j]),
                                 "in_domain": bool(pred.in_domain[i]), "distance": float(pred.distance[i]),
                                 "interval_ok": bool(interval_ok[i])})
            col += target["n_outputs"]
        return pd.DataFrame(rows)


def load(name: str, version: str = "latest", root: str | Path | None = None, *,
         strict_preset: bool = False) -> RegisteredModel:
    """Load a registered model.

    ``version="latest"`` picks the newest version that loads; a broken newer version is skipped with a
    ``SkippedVersionWarning`` saying why. An explicitly named version is loaded or refused.

    The manifest's ``featurizer.preset_key`` is compared with the installed preset's ``key()``: on a
    mismatch the model loads with a ``PresetMismatchWarning`` naming both keys and the package versions
    that differ, or, with ``strict_preset=True``, is refused (a ``ModelLoadError``; for ``latest`` the
    version is skipped like a broken one). Errors are
    ``ModelLoadError`` (a ``ValueError``) naming model, version and reason: unknown model (with the
    available names), unknown version, a manifest that is not valid JSON or does not match the schema
    (with the field path), weights without a checksum in the manifest or not matching it, weights that
    do not fit the manifest. A name or version that is not a plain name raises ``ValueError``.
    """
    check_plain_name(name, "model name")
    check_plain_name(version, "model version")
    base = _models_dir(root)
    versions = list_versions(name, base)
    if not versions:
        known = list_models(base)
        raise ModelLoadError(f"unknown model {name!r} in {base}; available: {', '.join(known) or 'none'}", name=name)
    if version != "latest":
        if version not in versions:
            raise ModelLoadError(f"model {name!r} has no version {version!r}; available: {', '.join(versions)}",
                                 name=name, version=version)
        return _load_version(name, version, base / name / version, strict_preset)
    skipped: list[ModelLoadError] = []
    for candidate in reversed(versions):
        try:
            model = _load_version(name, candidate, base / name / candidate, strict_preset)
        except ModelLoadError as exc:
            skipped.append(exc)
            warnings.warn(f"model {name}@{candidate} is broken, skipped for 'latest': {exc.reason}",
                          SkippedVersionWarning, stacklevel=2)
            continue
        return model
    newest = skipped[0]
    raise ModelLoadError(f"model {name}: none of its {len(versions)} version(s) loads; "
                         f"newest {name}@{newest.version}: {newest.reason}", name=name, reason=newest.reason)


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as at most two of its lines (torch lists every mismatched tensor on its own line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_arrays(tensors: dict, n_selected: int, n_outputs: int) -> str | None:
    """Why the per-feature and per-output arrays in the weights cannot belong to this manifest, or None."""
    expected = {"array.medians": n_selected, "array.x_min": n_selected, "array.x_scale": n_selected,
                "array.y_mean": n_outputs, "array.y_std": n_outputs}
    for key, n in expected.items():
        if key not in tensors:
            return f"{key[len('array.'):]} is missing"
        if tuple(tensors[key].shape) != (n,):
            return f"{key[len('array.'):]} has shape {tuple(tensors[key].shape)}, expected ({n},)"
    ad = tensors.get("array.ad_train_X")
    if ad is None:
        return "ad_train_X is missing"
    if ad.ndim != 2 or ad.shape[1] != n_selected:
        return f"ad_train_X has shape {tuple(ad.shape)}, expected (rows, {n_selected})"
    return None


def _preset_mismatch(manifest: dict) -> str | None:
    """Why the installed featurizers may not reproduce the model's inputs, or None when the keys agree."""
    from matflow.featurize import get_preset

    featurizer = manifest["featurizer"]
    preset = get_preset(featurizer["preset"])
    recorded, installed = featurizer["preset_key"], preset.key()
    if recorded == installed:
        return None
    trained_with = featurizer.get("preset_versions") or manifest.get("package_versions") or {}
    now = preset.versions()
    changed = [f"{pkg} {trained_with[pkg]} -> {now[pkg]}" for pkg in now
               if pkg in trained_with and str(trained_with[pkg]) != str(now[pkg])]
    unrecorded = [pkg for pkg in now if pkg not in trained_with]
    if changed:
        why = "package versions differ: " + ", ".join(changed)
    else:
        why = "the recorded package versions agree, so the featurizers or their settings differ"
        if unrecorded:
            why += f" (versions of {', '.join(unrecorded)} were not recorded)"
    return (f"was trained with featurizer preset {featurizer['preset']!r} key {recorded}, the installed "
            f"featurizers give {installed} ({why}); predictions may be off")


def _load_version(name: str, version: str, folder: Path, strict_preset: bool = False) -> RegisteredModel:
    """Load one version folder; every problem becomes a ``ModelLoadError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from matflow.featurize import PRESETS
    from matflow.ml.estimator import MODNetRegressor

    def fail(reason: str) -> ModelLoadError:
        return ModelLoadError.of(name, version, reason)

    try:
        text = (folder / MANIFEST_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {MANIFEST_FILE} ({exc})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{MANIFEST_FILE} is not valid JSON ({exc})") from None
    if isinstance(manifest, dict) and manifest.get("format") == "matflow-dos":  # phonon-DOS head (svib)
        from matflow.ml.svib import load_dos_version

        return load_dos_version(name, version, folder, manifest)
    checked = validate_manifest(manifest, name, version)
    preset = checked.featurizer.preset
    if preset not in PRESETS:
        raise fail(f"manifest field 'featurizer.preset': unknown featurizer preset {preset!r}; "
                   "this matflow knows " + ", ".join(sorted(PRESETS)))
    weights = folder / checked.weights.file
    try:
        blob = weights.read_bytes()
    except FileNotFoundError:
        raise fail(f"weights file {weights.name} is missing") from None
    except OSError as exc:
        raise fail(f"cannot read weights file {weights.name} ({exc})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != checked.weights.sha256.lower():
        raise fail(f"weights file {weights.name} does not match the manifest's sha256 "
                   f"({len(blob)} bytes, sha256 {digest[:12]}..., expected {checked.weights.sha256[:12]}...): "
                   "truncated or corrupt; restore the file")
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, RuntimeError, ValueError, OSError) as exc:
        raise fail(f"weights file {weights.name} is not readable safetensors ({_short(exc)})") from None
    n_outputs = sum(t.n_outputs for t in checked.targets)
    problem = _check_arrays(tensors, len(checked.selected_features), n_outputs)
    if problem:
        raise fail(f"weights do not fit the manifest: {problem}")
    meta = dict(manifest["estimator"])
    meta["feature_names_in"] = manifest["featurizer"]["feature_names_in"]
    meta["selected_features"] = [f["name"] for f in manifest["selected_features"]]
    rel = [f.get("nmi_relevance") for f in manifest["selected_features"]]
    meta["relevance"] = None if any(r is None for r in rel) else rel
    meta["targets"] = [{"name": t["name"], "n_outputs": t["n_outputs"], "group": t.get("group", 0)}
                       for t in manifest["targets"]]
    try:
        estimator = MODNetRegressor.from_state(tensors, meta)
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
        raise fail(f"weights do not fit the manifest ({type(exc).__name__}: {_short(exc)})") from None
    mismatch = _preset_mismatch(manifest)
    if mismatch and strict_preset:
        raise fail(f"{mismatch}; refused (strict_preset)")
    if mismatch:
        warnings.warn(f"model {name}@{version} {mismatch}", PresetMismatchWarning, stacklevel=3)
    return RegisteredModel(name, version, folder, manifest, estimator)
