"""``matflow models``: the registered models with their targets, presets, CV metrics and the version
``latest`` loads, on the shipped registry and on a copy holding a broken version."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, EXIT_PARTIAL, app
from matflow.ml.catalog import COLUMNS
from matflow.ml.registry import load
from matflow.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models"
runner = CliRunner()


def _manifest(name: str, version: str, root=SHIPPED) -> dict:
    return json.loads((root / name / version / "manifest.json").read_text())


def _table_rows(stdout: str) -> tuple[list[str], dict[tuple[str, str], list[str]], list[str]]:
    """Header cells, rows keyed by (model, version), and the note lines after the blank line."""
    table, _, notes = stdout.partition("\n\n")
    lines = table.splitlines()
    starts = [lines[0].index(col) for col in COLUMNS]
    cells = [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] for line in lines]
    return cells[0], {(c[0], c[1]): c for c in cells[1:]}, notes.strip().splitlines()


def test_shipped_registry_table(monkeypatch):
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(SHIPPED))
    res = runner.invoke(app, ["models"])
    assert res.exit_code == EXIT_OK, res.output
    header, rows, notes = _table_rows(res.stdout)
    assert header == list(COLUMNS)
    assert {("matbench_phonons", v) for v in ("v8", "v10")} | {("alexandria_cv300", "v4"), ("matbench_phonons_fast", "v1"),
                                                             ("cdvae-perov5", "v2"), ("cdvae-carbon24", "v2"), ("svib", "v6")} == set(rows)
    # the phonon-DOS model: S_vib, Cv, F_vib from its predicted DOS; its figures are in benchmarks/results/svib.json
    svib = rows.pop(("svib", "v6"))
    assert svib[2] == "ok" and svib[3].startswith("S_vib (J K^-1 mol^-1 per atom)") and svib[6] == "—"
    # a structure generator is listed as such, with its weights checked, and no property metrics
    for generator in (("cdvae-perov5", "v2"), ("cdvae-carbon24", "v2")):
        assert rows.pop(generator)[2:6] == ["ok", "generated crystals (CDVAE)", "none (generator)", "no"]
    for (name, version), row in rows.items():
        manifest = _manifest(name, version)
        target = manifest["targets"][0]
        cv = manifest["metrics"]["cv"]
        assert row[2] == "ok"
        assert row[3] == f"{target['name']} ({target['unit']})"
        assert row[4] == manifest["featurizer"]["preset"]
        assert row[5] == ("yes" if "chgnet" in manifest["featurizer"]["preset"] else "no")
        assert row[6].endswith(f" {target['unit']}") and " ± " in row[6]
        mean, std = (float(x) for x in row[6][: -len(target["unit"]) - 1].split(" ± "))
        assert mean == pytest.approx(cv["mae_mean"], rel=2e-3) and std == pytest.approx(cv["mae_std"], rel=5e-3)
        assert row[7] == f"{cv['coverage_pooled']:.3f} of 90%"
        assert row[8] == "—"  # no shipped manifest records a cold-predict time
    # the figures the README quotes, as the table prints them
    assert rows[("matbench_phonons", "v8")][6] == "37.77 ± 1.44 cm^-1"
    assert rows[("matbench_phonons", "v10")][5:8] == ["yes", "33.59 ± 1.73 cm^-1", "0.905 of 90%"]
    assert rows[("alexandria_cv300", "v4")][6:8] == ["0.2927 ± 0.0256 J K^-1 mol^-1 (per atom)", "0.910 of 90%"]
    for name in ("matbench_phonons", "alexandria_cv300"):
        latest = load(name, root=SHIPPED).version
        assert [v for (n, v), row in rows.items() if n == name and row[9] == "<- latest"] == [latest]
        assert f"{name}: latest = {latest}" in notes
    assert rows[("matbench_phonons", "v10")][9] == "<- latest"


@pytest.fixture
def registry(tmp_path):
    """matbench_phonons v8 copied; the shipped v10 copied as v9, given a recorded cold-predict time, and as
    v10 with a number where the target unit belongs."""
    root = tmp_path / "models"
    for version in ("v8", "v9", "v10"):
        shutil.copytree(SHIPPED / "matbench_phonons" / ("v8" if version == "v8" else "v10"),
                        root / "matbench_phonons" / version)
    v9 = _manifest("matbench_phonons", "v9", root)
    v9["version"] = "v9"
    v9["metrics"]["cold_predict_s"] = {"NaCl": 7.1, "Si3N4": 6.1, "Li7BiO6": 6.2}
    (root / "matbench_phonons" / "v9" / "manifest.json").write_text(json.dumps(v9))
    v10 = _manifest("matbench_phonons", "v10", root)
    v10["targets"][0]["unit"] = 5
    (root / "matbench_phonons" / "v10" / "manifest.json").write_text(json.dumps(v10))
    return root


@pytest.mark.filterwarnings("ignore::matflow.ml.registry.SkippedVersionWarning")
def test_broken_version_is_listed_with_its_reason(registry, monkeypatch):
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(registry))
    reason = "manifest field 'targets.0.unit': expected a string, got 5"

    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == EXIT_PARTIAL, res.output
    listing = json.loads(res.stdout)
    assert listing["models_dir"] == str(registry)
    (model,) = listing["models"]
    assert model["name"] == "matbench_phonons"
    assert model["latest"] == "v9" == load("matbench_phonons", root=registry).version
    by_version = {v["version"]: v for v in model["versions"]}
    assert list(by_version) == ["v8", "v9", "v10"]
    assert by_version["v10"]["status"] == "broken" and by_version["v10"]["reason"] == reason
    assert by_version["v10"]["latest"] is False and by_version["v10"]["preset"] is None
    v9 = by_version["v9"]
    assert (v9["status"], v9["latest"], v9["preset"], v9["needs_chgnet"]) == \
        ("ok", True, "structure-chgnet-full", True)
    assert v9["targets"] == [{"name": "last_phdos_peak", "unit": "cm^-1", "n_outputs": 1}]
    cv = _manifest("matbench_phonons", "v10", SHIPPED)["metrics"]["cv"]
    assert (v9["cv_mae_mean"], v9["cv_mae_std"], v9["cv_coverage_pooled"]) == \
        (cv["mae_mean"], cv["mae_std"], cv["coverage_pooled"])
    assert v9["cold_predict_s"] == {"NaCl": 7.1, "Si3N4": 6.1, "Li7BiO6": 6.2}
    assert by_version["v8"]["cold_predict_s"] is None and by_version["v8"]["latest"] is False

    res = runner.invoke(app, ["models"])
    assert res.exit_code == EXIT_PARTIAL, res.output
    _, rows, notes = _table_rows(res.stdout)
    assert rows[("matbench_phonons", "v10")][2:] == ["broken", "—", "—", "—", "—", "—", "—", ""]
    assert rows[("matbench_phonons", "v9")][8:] == ["6.1–7.1 s", "<- latest"]
    assert notes == [f"matbench_phonons@v10 is broken: {reason}", "matbench_phonons: latest = v9"]


def test_every_version_broken_and_empty_registry(registry, tmp_path, monkeypatch):
    shutil.rmtree(registry / "matbench_phonons" / "v8")
    weights = registry / "matbench_phonons" / "v9" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(registry))
    res = runner.invoke(app, ["models"])
    assert res.exit_code == EXIT_PARTIAL, res.output
    _, rows, notes = _table_rows(res.stdout)
    assert [row[2] for row in rows.values()] == ["broken", "broken"]
    assert notes[0].startswith("matbench_phonons@v9 is broken: weights file weights.safetensors does not "
                               "match the manifest's sha256 (1000 bytes")
    assert notes[-1] == "matbench_phonons: no version loads"

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(empty))
    res = runner.invoke(app, ["models"])
    assert res.exit_code == EXIT_OK and res.stdout.strip() == f"no registered models in {empty}"
    res = runner.invoke(app, ["models", "--json"])
    assert json.loads(res.stdout) == {"models_dir": str(empty), "models": []}
