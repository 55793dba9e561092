"""Registry robustness: schema errors name the field, weights are always checksummed, ``latest`` skips
broken versions, and model names cannot be paths. Works on copies of a shipped model in ``tmp_path``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_USAGE, app
from matflow.ml.manifest import Manifest, validate_manifest
from matflow.ml.registry import (
    ModelLoadError,
    SkippedVersionWarning,
    list_versions,
    load,
    save_model,
)
from matflow.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models"
NAME = "matbench_phonons"
DATA = Path(__file__).parent.parent / "data"


def _copy(root: Path, version: str, name: str = NAME) -> Path:
    target = root / name / version
    shutil.copytree(SHIPPED / NAME / version, target)
    return target


@pytest.fixture
def v8(tmp_path) -> Path:
    """A copy of the shipped matbench_phonons v8 under ``tmp_path/models``."""
    return _copy(tmp_path / "models", "v8")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write(folder: Path, manifest) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _set(manifest: dict, path: str, value) -> dict:
    """Set (or, for value ``...``, delete) the field at a dotted path like ``targets.0.unit``."""
    *parents, last = path.split(".")
    node = manifest
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return manifest


def _assert_one_clear_message(exc: ModelLoadError) -> None:
    text = str(exc)
    assert text.count("\n") <= 1, text
    assert "validation error" not in text and "pydantic" not in text and "Traceback" not in text


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("targets.0.unit", 5, "expected a string, got 5"),
    ("estimator.n_members", "10", "expected an integer, got '10'"),
    ("estimator.params.widths.1.0", "x", "expected an integer, got 'x'"),
    ("selected_features", {"a": 1}, "expected a list, got an object"),
    ("featurizer", [], "expected an object, got a list"),
    ("featurizer.feature_names_in", "density", "expected a list"),
    ("uncertainty.calibrated", "yes", "expected true or false"),
])
def test_field_of_the_wrong_type_names_model_version_and_field(v8, field, value, reason):
    _write(v8, _set(_manifest(v8), field, value))
    with pytest.raises(ModelLoadError, match=rf"^model {NAME}@v8: manifest field '{field}': {reason}") as info:
        load(NAME, "v8", root=v8.parent.parent)
    _assert_one_clear_message(info.value)


@pytest.mark.parametrize("field", ["targets.0.n_outputs", "estimator.y_ndim", "featurizer.feature_names_in",
                                   "selected_features.3.name", "uncertainty"])
def test_missing_key_names_the_field(v8, field):
    _write(v8, _set(_manifest(v8), field, ...))
    with pytest.raises(ModelLoadError, match=rf"^model {NAME}@v8: manifest field '{field}': missing") as info:
        load(NAME, "v8", root=v8.parent.parent)
    _assert_one_clear_message(info.value)


@pytest.mark.parametrize(("content", "described"), [([1, 2], "a list"), (None, "null"), ("model", "'model'"),
                                                     (3, "3")])
def test_manifest_that_is_not_an_object(v8, content, described):
    _write(v8, content)
    with pytest.raises(ModelLoadError, match=f"must hold a JSON object, got {described}"):
        load(NAME, "v8", root=v8.parent.parent)


def test_inconsistent_fields_are_named(v8):
    manifest = _manifest(v8)
    n = len(manifest["selected_features"])
    manifest["estimator"]["selected_idx"] = manifest["estimator"]["selected_idx"][:-1]
    _write(v8, manifest)
    with pytest.raises(ModelLoadError, match=f"manifest field 'estimator.selected_idx': has {n - 1} entries, "
                                             f"selected_features has {n}"):
        load(NAME, "v8", root=v8.parent.parent)


def test_truncated_weights_fail_the_checksum(v8):
    weights = v8 / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match=r"weights file weights.safetensors does not match the manifest's "
                                             r"sha256 \(4096 bytes.*truncated or corrupt") as info:
        load(NAME, "v8", root=v8.parent.parent)
    _assert_one_clear_message(info.value)


@pytest.mark.parametrize("sha", [..., None])
@pytest.mark.parametrize("truncate", [False, True])
def test_weights_without_checksum_are_refused(v8, sha, truncate):
    manifest = _manifest(v8)
    if sha is ...:
        del manifest["weights"]["sha256"]
    else:
        manifest["weights"]["sha256"] = sha
    _write(v8, manifest)
    if truncate:
        weights = v8 / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match="manifest has no weights checksum; refusing to load unverified weights"):
        load(NAME, "v8", root=v8.parent.parent)


def test_unreadable_weights_with_a_matching_checksum_are_a_clear_error(v8):
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{not a header"
    (v8 / "weights.safetensors").write_bytes(garbage)
    _write(v8, _set(_manifest(v8), "weights.sha256", hashlib.sha256(garbage).hexdigest()))
    with pytest.raises(ModelLoadError, match=f"^model {NAME}@v8: weights file weights.safetensors is not readable "
                                             "safetensors") as info:
        load(NAME, "v8", root=v8.parent.parent)
    _assert_one_clear_message(info.value)


def test_weights_of_another_model_are_a_clear_error(tmp_path, v8):
    other = _copy(tmp_path / "other", "v10")
    shutil.copy(other / "weights.safetensors", v8 / "weights.safetensors")
    _write(v8, _set(_manifest(v8), "weights.sha256", _manifest(other)["weights"]["sha256"]))
    with pytest.raises(ModelLoadError, match=f"^model {NAME}@v8: weights do not fit the manifest") as info:
        load(NAME, "v8", root=v8.parent.parent)
    _assert_one_clear_message(info.value)


def test_weights_file_cannot_point_outside_the_version_folder(v8):
    _write(v8, _set(_manifest(v8), "weights.file", "../v7/weights.safetensors"))
    with pytest.raises(ModelLoadError, match="manifest field 'weights.file': .*not a path"):
        load(NAME, "v8", root=v8.parent.parent)


def test_latest_skips_a_broken_newest_version_with_a_warning(v8):
    root = v8.parent.parent
    v10 = _copy(root, "v10")
    _write(v10, _set(_manifest(v10), "targets.0.unit", 5))
    with pytest.warns(SkippedVersionWarning, match=rf"{NAME}@v10 is broken.*'targets.0.unit': expected a string"):
        model = load(NAME, root=root)
    assert model.version == "v8"
    assert model.manifest["targets"][0]["unit"] == "cm^-1"
    with pytest.raises(ModelLoadError, match=f"^model {NAME}@v10: manifest field 'targets.0.unit'"):
        load(NAME, "v10", root=root)
    assert list_versions(NAME, root) == ["v8", "v10"]
    with pytest.warns(SkippedVersionWarning, match=f"{NAME}@v10"):
        assert list_versions(NAME, root, valid_only=True) == ["v8"]


def test_latest_skips_truncated_weights(v8):
    root = v8.parent.parent
    weights = _copy(root, "v10") / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(SkippedVersionWarning, match=f"{NAME}@v10 is broken.*sha256"):
        assert load(NAME, root=root).version == "v8"


def test_latest_with_every_version_broken_is_one_clear_error(v8):
    root = v8.parent.parent
    v10 = _copy(root, "v10")
    for folder in (v8, v10):
        _write(folder, _set(_manifest(folder), "estimator.y_ndim", ...))
    with (pytest.warns(SkippedVersionWarning),
          pytest.raises(ModelLoadError, match=f"^model {NAME}: none of its 2 version.s. loads; newest {NAME}@v10: "
                                              "manifest field 'estimator.y_ndim': missing")):
        load(NAME, root=root)


def test_cli_reports_an_explicit_broken_version_without_traceback(v8, monkeypatch):
    _write(v8, _set(_manifest(v8), "targets.0.unit", 5))
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(v8.parent.parent))
    res = CliRunner().invoke(app, ["predict", f"{NAME}@v8", str(DATA / "good" / "NaCl.cif")])
    assert res.exit_code == EXIT_USAGE
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "manifest field 'targets.0.unit': expected a string" in " ".join(res.output.split())
    assert "Traceback" not in res.output


@pytest.mark.parametrize("bad", ["../models", "a/b", "/tmp/x", "..", ".", "a\\b"])
def test_path_like_model_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=r"^model name must be a plain name, not a path: "):
        load(bad, root=tmp_path / "models")
    with pytest.raises(ValueError, match=r"^model name must be a plain name, not a path: "):
        list_versions(bad, tmp_path / "models")
    with pytest.raises(ValueError, match=r"^model name must be a plain name, not a path: "):
        save_model(None, bad, "v1", preset="composition", targets=[], dataset="x", training_hash="0", n_train=0,
                   root=tmp_path / "models")
    with pytest.raises(ValueError, match=r"^model version must be a plain name, not a path: "):
        load(NAME, bad, root=tmp_path / "models")


def test_a_path_cannot_reach_a_model_outside_the_models_dir(tmp_path):
    _copy(tmp_path, "v8", name="outside")
    (tmp_path / "models").mkdir()
    with pytest.raises(ValueError, match="not a path: '../outside'"):
        load("../outside", root=tmp_path / "models")
    assert not (tmp_path / "escaped").exists()
    with pytest.raises(ValueError, match="not a path"):
        save_model(None, NAME, "../../escaped", preset="composition", targets=[], dataset="x", training_hash="0",
                   n_train=0, root=tmp_path / "models")
    assert not (tmp_path / "escaped").exists()


def test_unknown_name_lists_the_available_models(v8):
    with pytest.raises(ModelLoadError, match=f"unknown model 'phonons'.*available: {NAME}"):
        load("phonons", root=v8.parent.parent)


def _property_manifests() -> list:
    """Shipped property models (structure generators have their own format and loader)."""
    import json

    return [p for p in sorted(SHIPPED.glob("*/*/manifest.json"))
            if json.loads(p.read_text()).get("format") == "matflow-modnet"]


@pytest.mark.parametrize("path", _property_manifests(),
                         ids=lambda p: f"{p.parent.parent.name}@{p.parent.name}")
def test_every_shipped_manifest_validates(path):
    data = json.loads(path.read_text())
    manifest = validate_manifest(data, path.parent.parent.name, path.parent.name)
    assert isinstance(manifest, Manifest)
    assert manifest.weights.sha256 == data["weights"]["sha256"]
    dumped = manifest.model_dump()
    assert dumped["metrics"] == data["metrics"] and dumped["scalers"] == data["scalers"]


def test_the_shipped_models_dir_has_the_documented_versions():
    """The versions the README names (latest, most accurate, and the earlier loadable ones)."""
    shipped = {(p.parent.parent.name, p.parent.name) for p in SHIPPED.glob("*/*/manifest.json")}
    documented = {(NAME, v) for v in ("v8", "v10")} | {("alexandria_cv300", "v4")}
    assert documented <= shipped


def test_the_card_says_how_intervals_widen():
    from matflow.ml.registry import _widening_lines

    two = {"params": {"widening": True, "widening_form": "two_stage", "widening_groups": 5},
           "widening_n_calibration": 2340}
    (line,) = _widening_lines(two)
    assert "(two_stage)" in line and "w_near(d)" in line and "2340 calibration scores" in line
    older = {"params": {"widening": True, "widening_groups": 5}, "widening_n_calibration": 2530}
    assert "(pooled)" in _widening_lines(older)[0]  # saved before the form existed: one stage
    assert _widening_lines({"params": {"widening": False}}) == []
    for spec in ("alexandria_cv300/v4", "matbench_phonons/v8", "matbench_phonons/v10"):
        card = (SHIPPED / spec / "README.md").read_text()
        manifest = json.loads((SHIPPED / spec / "manifest.json").read_text())
        assert _widening_lines(manifest["estimator"])[0] in card
