"""What the model registry holds: one entry per registered version, for ``matflow models``.

Every version is loaded the way ``matflow.ml.registry.load`` loads it (schema, weights checksum, weights
that fit the manifest), so a version listed as ``ok`` is one ``predict`` can serve and a broken one is
listed with the registry's reason instead of stopping the listing. ``latest`` is resolved by the same
rule as ``load(name)``: the newest version that loads.

An entry holds the model's targets with their units, its featurizer preset, whether that preset runs
CHGNet, the cross-validation figures of its manifest (``metrics.cv``: MAE mean and standard deviation
over folds, in the target's unit, and the pooled coverage of its nominal-coverage intervals) and a
cold-predict time when the manifest records one (``metrics.cold_predict_s``: seconds for one structure
in a new process with an empty feature cache, a number or ``{structure: seconds}``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from matflow.provenance import file_sha256

__all__ = ["ModelVersionInfo", "ModelInfo", "catalog", "catalog_table", "catalog_json"]

DASH = "—"


@dataclass
class ModelVersionInfo:
    """One registered version. ``status`` is ``ok`` or ``broken`` (``reason`` then says why);
    ``warnings`` holds what loading it warned about (a featurizer preset key that differs)."""

    name: str
    version: str
    status: str
    reason: str | None = None
    targets: list[dict] = field(default_factory=list)
    preset: str | None = None
    needs_chgnet: bool | None = None
    coverage: float | None = None
    cv_mae_mean: float | None = None
    cv_mae_std: float | None = None
    cv_coverage_pooled: float | None = None
    cold_predict_s: float | dict | None = None
    latest: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class ModelInfo:
    """A registered model: its versions oldest first and the one ``latest`` resolves to (None when
    none loads)."""

    name: str
    latest: str | None
    versions: list[ModelVersionInfo]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _cold_predict(metrics: dict) -> float | dict | None:
    value = metrics.get("cold_predict_s")
    if isinstance(value, dict):
        times = {str(k): _number(v) for k, v in value.items()}
        return {k: v for k, v in times.items() if v is not None} or None
    return _number(value)


GENERATOR_FORMATS = {"matflow-cdvae": "generated crystals (CDVAE)"}
"""Registry formats of models that generate structures rather than predict a property."""


def _generator_info(name: str, version: str, root: Path | None) -> ModelVersionInfo | None:
    """A generator's entry (its weights' checksum checked), or None for a property model."""
    import json

    from matflow.ml.registry import _models_dir

    folder = _models_dir(root) / name / version
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kind = GENERATOR_FORMATS.get(manifest.get("format")) if isinstance(manifest, dict) else None
    if kind is None:
        return None
    weights = manifest.get("weights") or {}
    path = folder / str(weights.get("file", ""))
    if not path.is_file():
        return ModelVersionInfo(name, version, "broken", reason=f"missing weights file {path.name!r}")
    if file_sha256(path) != weights.get("sha256"):
        return ModelVersionInfo(name, version, "broken", reason="weights do not match their sha256")
    return ModelVersionInfo(name, version, "ok", targets=[{"name": kind, "unit": "", "n_outputs": 0}],
                            preset="none (generator)", needs_chgnet=False)


def _version_info(name: str, version: str, root: Path | None) -> ModelVersionInfo:
    from matflow.ml.registry import ModelLoadError, PresetMismatchWarning, load

    generator = _generator_info(name, version, root)
    if generator is not None:
        return generator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PresetMismatchWarning)
        try:
            model = load(name, version, root=root)
        except ModelLoadError as exc:
            return ModelVersionInfo(name, version, "broken", reason=exc.reason)
        except Exception as exc:  # a listing reports a version it cannot load; it does not stop
            return ModelVersionInfo(name, version, "broken", reason=f"{type(exc).__name__}: {exc}")
    notes = []
    for w in caught:
        if issubclass(w.category, PresetMismatchWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    manifest = model.manifest
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    cv = metrics.get("cv") if isinstance(metrics.get("cv"), dict) else {}
    preset = model.preset
    return ModelVersionInfo(
        name, version, "ok",
        targets=[{"name": t["name"], "unit": t.get("unit", ""), "n_outputs": t["n_outputs"]}
                 for t in manifest["targets"]],
        preset=preset, needs_chgnet="chgnet" in preset,
        coverage=_number(manifest["uncertainty"].get("coverage")),
        cv_mae_mean=_number(cv.get("mae_mean")), cv_mae_std=_number(cv.get("mae_std")),
        cv_coverage_pooled=_number(cv.get("coverage_pooled")),
        cold_predict_s=_cold_predict(metrics),
        warnings=notes)


def catalog(root: str | Path | None = None) -> list[ModelInfo]:
    """Every registered model and version under ``root`` (default: the settings' models folder)."""
    from matflow.ml.registry import list_models, list_versions

    base = Path(root) if root is not None else None
    out = []
    for name in list_models(base):
        versions = [_version_info(name, v, base) for v in list_versions(name, base)]
        latest = next((v for v in reversed(versions) if v.status == "ok"), None)
        if latest is not None:
            latest.latest = True
        out.append(ModelInfo(name, latest.version if latest else None, versions))
    return out


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _mae_text(v: ModelVersionInfo) -> str:
    """MAE ± std across folds, the std to 3 significant digits and the mean to the same decimals."""
    if v.cv_mae_mean is None:
        return DASH
    unit = v.targets[0]["unit"] if len(v.targets) == 1 and v.targets[0]["unit"] else ""
    if v.cv_mae_std is not None and v.cv_mae_std > 0:
        decimals = max(0, 2 - math.floor(math.log10(v.cv_mae_std)))
        text = f"{v.cv_mae_mean:.{decimals}f} ± {v.cv_mae_std:.{decimals}f}"
    else:
        text = _fmt(v.cv_mae_mean)
    return f"{text} {unit}" if unit else text


def _cold_text(value: float | dict | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, dict):
        low, high = min(value.values()), max(value.values())
        return f"{low:.1f} s" if low == high else f"{low:.1f}–{high:.1f} s"
    return f"{value:.1f} s"


COLUMNS = ("model", "version", "status", "target (unit)", "preset", "CHGNet", "CV MAE ± std",
           "CV coverage", "cold predict", "latest")


def _row(v: ModelVersionInfo) -> list[str]:
    if v.status != "ok":
        return [v.name, v.version, "broken", DASH, DASH, DASH, DASH, DASH, DASH, ""]
    targets = ", ".join(f"{t['name']} ({t['unit']})" if t["unit"] else t["name"] for t in v.targets)
    coverage = DASH
    if v.cv_coverage_pooled is not None:
        nominal = f" of {v.coverage:.0%}" if v.coverage is not None else ""
        coverage = f"{v.cv_coverage_pooled:.3f}{nominal}"
    return [v.name, v.version, "ok" if not v.warnings else "ok (warning)", targets, v.preset,
            "yes" if v.needs_chgnet else "no", _mae_text(v), coverage, _cold_text(v.cold_predict_s),
            "<- latest" if v.latest else ""]


def catalog_table(models: list[ModelInfo]) -> str:
    """A plain-text table, one row per version, then one line per broken version or warning and one
    line per model saying what ``latest`` resolves to."""
    rows = [list(COLUMNS)] + [_row(v) for m in models for v in m.versions]
    widths = [max(len(r[k]) for r in rows) for k in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    notes = []
    for m in models:
        for v in m.versions:
            if v.status != "ok":
                notes.append(f"{v.name}@{v.version} is broken: {v.reason}")
            notes.extend(v.warnings)
    for m in models:
        notes.append(f"{m.name}: latest = {m.latest}" if m.latest else f"{m.name}: no version loads")
    return "\n".join([*lines, "", *notes])


def catalog_json(models: list[ModelInfo]) -> list[dict]:
    """The catalog as JSON-ready dicts: ``[{name, latest, versions: [...]}]``."""
    return [{"name": m.name, "latest": m.latest, "versions": [asdict(v) for v in m.versions]} for m in models]
