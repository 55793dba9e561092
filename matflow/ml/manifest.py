"""Schema of a registered model's ``manifest.json`` and the error the registry raises for a bad model.

The pydantic models cover the fields that loading a model and predicting with it read (featurizer,
selected features, targets, uncertainty, estimator state, weights) and the ones the model card shows;
any other key is kept (``extra="allow"``), so manifests may carry more than this schema names. Types are
strict (``"5"`` is not an integer), because a manifest written by ``save_model`` never needs coercion
and a coerced value would hide a hand edit gone wrong.

``validate_manifest`` turns pydantic's report into one ``ModelLoadError`` line that names the model,
the version, the field path and the reason, e.g.
``model matbench_phonons@v8: manifest field 'targets.0.unit': expected a string, got 5``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "ModelLoadError", "Manifest", "validate_manifest",
           "check_plain_name"]

FORMAT = "matflow-modnet"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ModelLoadError(ValueError):
    """A registered model cannot be served; the message says which model, which version and why.

    ``name``, ``version`` and ``reason`` hold the parts separately (``version`` is None when the
    problem is the model as a whole, e.g. an unknown name).
    """

    def __init__(self, message: str, *, name: str | None = None, version: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.name, self.version, self.reason = name, version, reason or message

    @classmethod
    def of(cls, name: str, version: str, reason: str) -> ModelLoadError:
        return cls(f"model {name}@{version}: {reason}", name=name, version=version, reason=reason)


def check_plain_name(value: object, what: str = "model name") -> str:
    """``value`` if it is a plain name (letters, digits, ``_ - .``; not ``.``/``..``); else ValueError.

    Model names and versions become folder names under the models directory, so anything that could
    walk out of it (``../x``, ``a/b``, ``/tmp/x``) is refused before a path is built.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"{what} must be a plain name, not a path: {value!r}")
    if not _PLAIN_NAME.match(value):
        raise ValueError(f"{what} may hold only letters, digits, '_', '-' and '.': {value!r}")
    return value


def _plain_file_name(value: str) -> str:
    check_plain_name(value, "file name")
    return value


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class FeaturizerSpec(_Part):
    preset: str
    preset_key: str
    n_features_in: int = Field(ge=1)
    feature_names_in: list[str]
    description: str = ""
    featurizers: list[dict[str, Any]] = []


class SelectedFeature(_Part):
    name: str
    nmi_relevance: float | None = None


class TargetSpec(_Part):
    name: str
    n_outputs: int = Field(ge=1)
    group: int = Field(0, ge=0)
    column: str = ""
    unit: str = ""
    sub_targets: list[Any] | None = None


class Applicability(_Part):
    method: str = ""
    threshold: float
    training_quantile: float = Field(gt=0, le=1)


class Uncertainty(_Part):
    method: str
    calibration: Literal["cross", "split"] | None = None
    coverage: float = Field(gt=0, lt=1)
    calibrated: bool
    n_calibration: int = Field(ge=0)
    shrink: list[float] | None = None
    applicability: Applicability


class EstimatorParams(_Part):
    """Constructor arguments of ``MODNetRegressor``; the typed ones are those a loaded model reads."""

    widths: list[list[Annotated[int, Field(ge=1)]]] = Field(min_length=1)
    activation: str | None = None
    coverage: float | None = Field(None, gt=0, lt=1)
    ad_neighbors: int | None = Field(None, ge=1)
    ad_quantile: float | None = Field(None, gt=0, le=1)
    calib_neighbors: int | None = Field(None, ge=1)
    calibration: Literal["cross", "split"] | None = None


class EstimatorState(_Part):
    params: EstimatorParams
    n_features_in: int = Field(ge=1)
    selected_idx: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    y_ndim: Literal[1, 2]
    calibrated: bool
    n_calibration: int = Field(ge=0)
    ad_threshold: float
    n_members: int = Field(ge=1)
    cv_n_folds: int = Field(0, ge=0)
    calibration: Literal["cross", "split"] | None = None
    train_info: list[dict[str, Any]] = []


class WeightsRef(_Part):
    file: Annotated[str, AfterValidator(_plain_file_name)] = WEIGHTS_FILE
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class TrainingData(_Part):
    dataset: str
    n_rows: int = Field(ge=0)
    sha256_16: str


class Manifest(_Part):
    """The whole manifest; ``model_dump()`` gives back the dict, extra keys included."""

    format: Literal["matflow-modnet"]
    format_version: int = Field(ge=1)
    name: str
    version: str
    created: str = ""
    description: str = ""
    featurizer: FeaturizerSpec
    selected_features: list[SelectedFeature] = Field(min_length=1)
    targets: list[TargetSpec] = Field(min_length=1)
    uncertainty: Uncertainty
    estimator: EstimatorState
    weights: WeightsRef
    training_data: TrainingData
    metrics: dict[str, Any] = {}
    package_versions: dict[str, str] = {}
    limits: list[str] = []


_REASONS = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
}
_CHECKSUM_MISSING = "manifest has no weights checksum; refusing to load unverified weights"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reason(error: dict) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing"
    if kind in _REASONS:
        return f"{_REASONS[kind]}, got {_describe(error.get('input'))}"
    msg = str(error.get("msg", kind))
    msg = msg.removeprefix("Value error, ")
    if kind in ("literal_error", "string_pattern_mismatch", "greater_than", "greater_than_equal", "less_than",
                "less_than_equal", "too_short", "too_long"):
        msg = f"{msg}, got {_describe(error.get('input'))}"
    return msg[:1].lower() + msg[1:]


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _consistency(m: Manifest) -> tuple[str, str] | None:
    """First disagreement between fields that must agree, as (field path, reason); None if they do."""
    names = m.featurizer.feature_names_in
    n_in = m.featurizer.n_features_in
    if names and len(names) != n_in:
        return "featurizer.feature_names_in", f"has {len(names)} names, n_features_in is {n_in}"
    if m.estimator.n_features_in != n_in:
        return "estimator.n_features_in", f"is {m.estimator.n_features_in}, featurizer.n_features_in is {n_in}"
    idx = m.estimator.selected_idx
    if len(idx) != len(m.selected_features):
        return "estimator.selected_idx", f"has {len(idx)} entries, selected_features has {len(m.selected_features)}"
    for k, (i, feat) in enumerate(zip(idx, m.selected_features, strict=True)):
        if i >= n_in:
            return f"estimator.selected_idx.{k}", f"index {i} is out of range for {n_in} input features"
        if names and names[i] != feat.name:
            return f"selected_features.{k}.name", f"is {feat.name!r}, but input feature {i} is {names[i]!r}"
    for k, t in enumerate(m.targets):
        if t.sub_targets is not None and len(t.sub_targets) != t.n_outputs:
            return f"targets.{k}.sub_targets", f"has {len(t.sub_targets)} entries, n_outputs is {t.n_outputs}"
    return None


def validate_manifest(data: object, name: str, version: str) -> Manifest:
    """Check a parsed ``manifest.json`` of model ``name``@``version``; ``ModelLoadError`` says what is wrong.

    Format and format version are checked first, so a manifest from another tool or a newer matflow is
    reported as such rather than as a list of fields this version does not know.
    """
    def fail(reason: str) -> ModelLoadError:
        return ModelLoadError.of(name, version, reason)

    if not isinstance(data, dict):
        raise fail(f"manifest.json must hold a JSON object, got {_describe(data)}")
    fmt = data.get("format")
    if "format" in data and fmt != FORMAT:
        raise fail(f"incompatible manifest format {fmt!r} (expected {FORMAT!r})")
    fv = data.get("format_version")
    if isinstance(fv, int) and not isinstance(fv, bool) and fv > FORMAT_VERSION:
        raise fail(f"manifest format_version {fv!r} is newer than this matflow supports ({FORMAT_VERSION}); "
                   "upgrade matflow")
    weights = data.get("weights")
    if isinstance(weights, dict) and weights.get("sha256") is None:
        raise fail(_CHECKSUM_MISSING)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise fail(f"manifest field '{_field_path(first['loc'])}': {_reason(first)}{more}") from None
    problem = _consistency(manifest)
    if problem is not None:
        raise fail(f"manifest field '{problem[0]}': {problem[1]}")
    return manifest
