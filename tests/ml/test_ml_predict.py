"""Prediction from files and structures (``matflow.ml.predict``) and the registry's preset-key check.

Uses the shipped ``structure``-preset models on a few 2-4 site cells; the feature cache of the test
session makes repeated structures free.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, app
from matflow.datasets import load_alexandria_cv300, load_vib_thermo_fixture
from matflow.featurize import PRESETS, get_preset
from matflow.featurize import presets as presets_module
from matflow.ml import predict as predict_module
from matflow.ml.predict import membership_lines, predict_files, predict_structures, training_set
from matflow.ml.registry import ModelLoadError, PresetMismatchWarning, list_versions, load
from matflow.settings import PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"
runner = CliRunner()


@pytest.fixture(scope="module")
def alexandria():
    return load_alexandria_cv300().set_index("mp_id")


def _copy_model(tmp_path, name: str, version: str, edit) -> None:
    folder = tmp_path / name / version
    shutil.copytree(MODELS / name / version, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_every_shipped_model_loads_without_a_preset_warning():
    for name in ("matbench_phonons", "alexandria_cv300"):
        for version in list_versions(name, MODELS):
            with warnings.catch_warnings():
                warnings.simplefilter("error", PresetMismatchWarning)
                model = load(name, version, root=MODELS, strict_preset=True)
            assert model.manifest["featurizer"]["preset_key"] == get_preset(model.preset).key()


def test_altered_preset_key_warns_and_strict_refuses(tmp_path):
    def edit(manifest):
        manifest["featurizer"]["preset_key"] = "0123456789abcdef"
        manifest["package_versions"]["matminer"] = "0.9.0"
        manifest["featurizer"]["preset_versions"]["matminer"] = "0.9.0"  # recorded with the preset key

    _copy_model(tmp_path, "alexandria_cv300", "v4", edit)
    installed = get_preset("structure").key()
    with pytest.warns(PresetMismatchWarning,
                      match=rf"alexandria_cv300@v4 was trained with featurizer preset 'structure' key "
                            rf"0123456789abcdef, the installed featurizers give {installed} \(package versions "
                            r"differ: matminer 0\.9\.0 -> .*\); predictions may be off"):
        model = load("alexandria_cv300", "v4", root=tmp_path)
    assert model.version == "v4"
    with pytest.raises(ModelLoadError, match=r"alexandria_cv300@v4: .*key 0123456789abcdef.*refused"):
        load("alexandria_cv300", "v4", root=tmp_path, strict_preset=True)
    with pytest.raises(ModelLoadError, match="none of its 1 version"), pytest.warns(UserWarning):
        load("alexandria_cv300", root=tmp_path, strict_preset=True)
    with warnings.catch_warnings():  # loadable: a mismatch is not a broken version
        warnings.simplefilter("error")
        assert list_versions("alexandria_cv300", tmp_path, valid_only=True) == ["v4"]


def test_chgnet_model_warns_when_the_installed_chgnet_differs(tmp_path, monkeypatch):
    _copy_model(tmp_path, "matbench_phonons", "v10",
                lambda m: m["featurizer"].update(preset_versions=get_preset(m["featurizer"]["preset"]).versions()))
    old = tmp_path / "old"  # a manifest written before preset_versions were recorded
    _copy_model(old, "matbench_phonons", "v10", lambda m: m["featurizer"].pop("preset_versions", None))
    real = presets_module._package_version
    monkeypatch.setattr(presets_module, "_package_version", lambda n: "99.0.0" if n == "chgnet" else real(n))
    for preset in PRESETS.values():
        preset._key.clear()
    try:
        with pytest.warns(PresetMismatchWarning, match=r"structure-chgnet-full.*chgnet \S+ -> 99\.0\.0"):
            load("matbench_phonons", "v10", root=tmp_path)
        with pytest.warns(PresetMismatchWarning, match=r"versions of .*chgnet.* were not recorded"):
            load("matbench_phonons", "v10", root=old)
    finally:
        for preset in PRESETS.values():
            preset._key.clear()


def test_predict_files_marks_training_structures_with_their_label(tmp_path, alexandria, cocrfeni):
    naf = alexandria.loc["mp-682", "structure"]
    naf.to(filename=str(tmp_path / "naf.json"))                    # identical: same structure hash
    rocksalt_cscl = alexandria.loc["mp-573697", "structure"].copy()
    rocksalt_cscl.scale_lattice(rocksalt_cscl.volume * 1.03)       # another geometry, named by its id
    rocksalt_cscl.to(filename=str(tmp_path / "mp-573697.cif"))
    b2_cscl = alexandria.loc["mp-22865", "structure"].copy()
    b2_cscl.scale_lattice(b2_cscl.volume * 0.97)                   # no id: found by StructureMatcher
    b2_cscl.to(filename=str(tmp_path / "cscl.json"))
    cocrfeni.to(filename=str(tmp_path / "cocrfeni.json"))          # not a binary: not in Alexandria
    model = load("alexandria_cv300", root=MODELS)
    rows, failures = predict_files(model, [str(tmp_path)])
    assert failures == []
    by_file = {src.rsplit("/", 1)[-1]: r for src, r in zip(rows["source"], rows.itertuples(), strict=True)}
    column = "cv_300K_J_per_K_mol_atom"
    assert rows["in_training_data"].dtype == bool
    expected = {"naf.json": ("mp-682", "structure hash"),
                "mp-573697.cif": ("mp-573697", "material id mp-573697"),
                "cscl.json": ("mp-22865", "structure match mp-22865")}
    for name, (mp_id, how) in expected.items():
        row = by_file[name]
        assert row.in_training_data, name
        assert row.training_match == how
        assert row.training_label == pytest.approx(alexandria.loc[mp_id, column], rel=1e-12)
    new = by_file["cocrfeni.json"]
    assert not new.in_training_data and math.isnan(new.training_label) and new.training_match == ""

    lines = membership_lines(rows, model)
    ref = f"alexandria_cv300@{model.version}"
    naf = by_file["naf.json"]
    assert naf.formula == "NaF"
    assert len(lines) == 4  # the three training structures, then the rest
    assert (f"{ref}: NaF ({naf.source}) is in its training data (alexandria_cv300, matched by structure hash): "
            f"cv_300K training label {naf.training_label:.4g} {naf.unit}, predicted {naf.value:.4g}") in lines
    assert lines[-1] == f"{ref}: the other 1 of 4 predicted structures are not in its training data"


def test_cli_table_says_which_structure_is_training_data(tmp_path, alexandria, monkeypatch):
    alexandria.loc["mp-682", "structure"].to(filename=str(tmp_path / "naf.json"))
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(MODELS))
    res = runner.invoke(app, ["predict", "alexandria_cv300", str(tmp_path / "naf.json")])
    assert res.exit_code == EXIT_OK, res.output
    header = res.stdout.splitlines()[0].split()
    assert header[-1] == "train"
    label = alexandria.loc["mp-682", "cv_300K_J_per_K_mol_atom"]
    assert f"yes (label {label:.4g})" in res.stdout


def test_demo_statement_si3n4_is_in_alexandria_training_data(alexandria):
    """The demo's library calls: Si3N4 (mp-988) of the DFPT fixture is an Alexandria training
    material (its fixture structure differs slightly: no hash match) and not a Matbench one."""
    fixture = load_vib_thermo_fixture().set_index("mp_id")
    si3n4 = fixture.loc["mp-988", "structure"]
    model = load("alexandria_cv300", root=MODELS)
    rows, _ = predict_structures(model, [si3n4], sources=["mp-988"])
    (row,) = rows.itertuples()
    assert row.in_training_data and row.training_match == "material id mp-988"
    assert row.training_label == pytest.approx(alexandria.loc["mp-988", "cv_300K_J_per_K_mol_atom"])
    (line, rest) = membership_lines(rows, model)
    assert line.startswith(f"alexandria_cv300@{model.version}: Si3N4 (mp-988) is in its training data "
                           "(alexandria_cv300, matched by material id mp-988): cv_300K training label 13.46")
    assert rest.endswith("all predicted structures are in its training data")

    phonons = load("matbench_phonons", root=MODELS)
    rows, _ = predict_structures(phonons, [si3n4], sources=["mp-988"])
    assert not rows["in_training_data"].any()
    assert membership_lines(rows, phonons) == [
        f"matbench_phonons@{phonons.version}: none of the 1 predicted structures is in its training data "
        "(matbench_phonons)"]


def test_training_set_is_kept_on_disk_and_rebuilt_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("MATFLOW_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(predict_module, "_MEMO", {})
    first = training_set("matbench_phonons")
    path = tmp_path / "training_hashes" / "matbench_phonons.json"
    assert path.is_file() and len(first.hashes) == 1265

    def no_build(dataset):
        raise AssertionError("should have been read from disk")

    monkeypatch.setattr(predict_module, "_MEMO", {})
    monkeypatch.setattr(predict_module, "_build", no_build)
    assert training_set("matbench_phonons").hashes == first.hashes
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "key": "stale"}))
    monkeypatch.setattr(predict_module, "_MEMO", {})
    with pytest.raises(AssertionError, match="read from disk"):
        training_set("matbench_phonons")
    assert training_set("no_such_dataset") is None


def test_table_says_when_no_interval_can_be_given():
    import pandas as pd

    from matflow.ml.predict import prediction_table_text

    rows = pd.DataFrame([
        {"source": "near.cif", "formula": "NaCl", "target": "cv", "value": 20.0, "unit": "J", "lower": 19.0,
         "upper": 21.0, "coverage": 0.9, "in_domain": True, "interval_ok": True, "in_training_data": False,
         "training_label": float("nan")},
        {"source": "far.cif", "formula": "XeF6", "target": "cv", "value": 20.0, "unit": "J",
         "lower": float("nan"), "upper": float("nan"), "coverage": 0.9, "in_domain": False,
         "interval_ok": False, "in_training_data": False, "training_label": float("nan")},
    ])
    lines = prediction_table_text(rows).splitlines()
    assert "[19, 21] (90%)" in lines[2]
    assert "none: farther from the training data than any calibration row" in lines[3]
    assert "nan" not in lines[3]


def test_an_element_never_in_training_makes_a_row_out_of_domain(alexandria):
    """Gd is in none of the Alexandria binaries: GdF made from NaF's cell is flagged, with the element
    named, whatever its feature distance; NaF itself stays in domain."""
    from matflow.ml.predict import prediction_table_text, training_elements

    model = load("alexandria_cv300", root=MODELS)
    seen = training_elements(model)
    assert {"Na", "F"} <= seen and "Gd" not in seen
    naf = alexandria.loc["mp-682", "structure"]
    gdf = naf.copy()
    gdf.replace_species({"Na": "Gd"})
    rows, failures = predict_structures(model, [naf, gdf], sources=["naf", "gdf"])
    assert failures == []
    by_source = rows.set_index("source")
    assert by_source.loc["naf", "unseen_elements"] == "" and bool(by_source.loc["naf", "in_domain"])
    assert by_source.loc["gdf", "unseen_elements"] == "Gd" and not bool(by_source.loc["gdf", "in_domain"])
    assert not bool(by_source.loc["gdf", "interval_ok"]) and math.isnan(by_source.loc["gdf", "lower"])
    assert bool(by_source.loc["naf", "interval_ok"]) and by_source.loc["naf", "lower"] < by_source.loc["naf", "upper"]
    text = prediction_table_text(rows)
    assert "NO (element never in training data: Gd)" in text and "none: element never in training data" in text


def test_report_cell_names_the_elements_a_model_never_saw():
    from matflow.reports.pipeline import _applicability

    assert _applicability(False, "Gd") == "OUT OF DOMAIN (element never in training data: Gd)"
    assert _applicability(True, "") == "in domain"
    assert _applicability(False, None) == "OUT OF DOMAIN"
    assert _applicability(float("nan"), None) == "unknown"
