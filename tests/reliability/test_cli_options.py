"""Bad options and unwritable outputs are one-line usage errors (exit 2) before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from matflow.cli import app

DATA = Path(__file__).parent.parent / "data"
GOOD = str(DATA / "good" / "NaCl.cif")
runner = CliRunner()


def _usage_error(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["relax", GOOD, "--fmax", "-1"], "--fmax -1.0: must be a finite number > 0"),
    (["relax", GOOD, "--fmax", "0"], "--fmax 0.0: must be a finite number > 0"),
    (["relax", GOOD, "--fmax", "nan"], "--fmax nan: must be a finite number"),
    (["relax", GOOD, "--max-steps", "0"], "--max-steps 0"),
    (["relax", GOOD, "--pressure", "inf"], "--pressure inf"),
    (["phonons", GOOD, "--displacement", "0"], "--displacement 0.0: must be a finite number > 0"),
    (["phonons", GOOD, "--supercell-min-length", "-5"], "--supercell-min-length -5.0"),
    (["phonons", GOOD, "--t-step", "0"], "--t-step 0.0"),
    (["phonons", GOOD, "--t-max", "-10"], "--t-max -10.0"),
    (["featurize", GOOD, "-o", "x.parquet", "-j", "-3"], "--n-jobs -3"),
    (["featurize", GOOD, "-o", "x.parquet", "--preset", "nope"], "unknown preset 'nope'"),
    (["predict", "matbench_phonons", GOOD, "-j", "-1"], "--n-jobs -1"),
    (["train", "--dataset", "alexandria_cv300", "--limit", "0"], "--limit 0"),
])
def test_bad_numeric_options_are_one_line_usage_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _usage_error(args)
    assert needle in line
    assert not list(tmp_path.iterdir()), "a refused command must not write anything"


def test_output_that_is_a_directory_is_refused_before_work(tmp_path):
    line = _usage_error(["featurize", GOOD, "-o", str(tmp_path), "--preset", "composition"])
    assert f"output {tmp_path}: is a directory" in line


def test_output_under_a_file_is_refused_before_work(tmp_path):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    line = _usage_error(["featurize", GOOD, "-o", str(blocker / "t.parquet"), "--preset", "composition"])
    assert "is a file, not a folder" in line
    line = _usage_error(["predict", "alexandria_cv300", GOOD, "-o", str(blocker / "p.csv"), "-f", "csv"])
    assert "is a file, not a folder" in line
    line = _usage_error(["relax", GOOD, "-o", str(blocker)])
    assert "is a file; give a folder" in line
    line = _usage_error(["phonons", GOOD, "-o", str(blocker / "sub")])
    assert "is a file, not a folder" in line


def test_output_write_failure_at_the_end_is_exit_3(tmp_path, monkeypatch):
    from matflow.featurize import runner as runner_module

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner_module.FeatureTable, "write", full_disk)
    res = runner.invoke(app, ["featurize", GOOD, "-o", str(tmp_path / "t.parquet"), "--preset", "composition"])
    assert res.exit_code == 3, res.output
    assert "could not write output" in res.output and "No space left on device" in res.output
