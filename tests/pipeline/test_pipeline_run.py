"""The pipeline on the test preset: a complete run directory, a bad candidate recorded as a failure,
and a run SIGKILLed at a random point that resumes to identical outputs without recomputing
anything finished before the kill. The runs are subprocesses (``python -m matflow.pipeline``) with one
torch/BLAS thread, so their numbers are comparable bit for bit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matflow.pipeline.config import PRESETS
from matflow.pipeline.run import TABLES

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MATFLOW_TORCH_THREADS="1", PYTHONHASHSEED="0")
    return env


def _command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "matflow.pipeline", "--config", str(config), "--run-dir", str(run_dir)]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """The test preset plus one structure file whose atoms overlap (a bad candidate)."""
    folder = tmp_path_factory.mktemp("pipeline-config")
    bad = folder / "overlap.cif"
    Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]]).to(filename=str(bad))
    path = folder / "config.json"
    path.write_text(json.dumps({**PRESETS["test"], "structure_files": [str(bad)]}))
    return path


@pytest.fixture(scope="module")
def reference(config_file, tmp_path_factory) -> Path:
    """A run that was never interrupted."""
    run_dir = tmp_path_factory.mktemp("pipeline-reference") / "run"
    done = subprocess.run(_command(config_file, run_dir), env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report:" in done.stdout
    return run_dir


def test_run_dir_has_every_table_the_manifest_and_the_report(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["status"] == "completed_with_failures"
    assert set(manifest["outputs"]) == set(TABLES)
    tables = {name: pd.read_parquet(reference / f"{name}.parquet") for name in TABLES}
    assert {n for n, t in tables.items() if t.empty} == set()
    # two CDVAE samples and one alloy picked by screening; the overlapping file never got in
    ids = list(tables["candidates"]["id"])
    assert ids[:2] == ["cdvae-000", "cdvae-001"] and ids[2].startswith("alloy-") and len(ids) == 3
    assert set(tables["relaxed"]["id"]) == set(ids)
    assert set(tables["predictions"]["model"]) == {"alexandria_cv300", "matbench_phonons"}
    assert len(tables["predictions"]) == 2 * len(ids)
    pred = tables["predictions"]
    assert pred["value"].notna().all()
    # an input beyond the distances the interval widening was calibrated on gets no interval, and says so
    has = pred["interval_ok"].astype(bool)
    assert has.sum() >= len(pred) - 2 and pred.loc[has, ["lower", "upper"]].notna().all().all()
    assert pred.loc[~has, ["lower", "upper"]].isna().all().all()
    assert (pred.loc[has, "lower"] <= pred.loc[has, "upper"]).all()
    report = (reference / "report.html").read_text()
    assert "[nan" not in report and ("none: input beyond the calibrated distances" in report) == (not has.all())
    first_shell = tables["sro"][tables["sro"]["shell"] == 1]
    assert len(first_shell) == 10  # 4 species: 10 pairs at one temperature
    assert tables["screening"]["rank"].tolist() == sorted(tables["screening"]["rank"])
    for cand in ids:
        assert (reference / "structures" / "candidates" / f"{cand}.cif").is_file()
        assert (reference / "structures" / "relaxed" / f"{cand}.cif").is_file()
    # the bad candidate is a recorded failure with its reason; the others finished
    assert [f["step"] for f in manifest["failures"]] == ["read"]
    assert "atoms too close" in manifest["failures"][0]["reason"]
    assert manifest["counts"] == {"candidates": 3, "alloys": 1, "ok": 3, "failed": 1}
    assert {m["name"] for m in manifest["models"]} == {"alexandria_cv300", "matbench_phonons"}
    assert manifest["inputs_hash"] and manifest["versions"]["matflow"]
    assert manifest["potential"]["model"].startswith("CHGNet")
    html = (reference / "report.html").read_text()
    for text in ("Candidates and predictions", "Warren–Cowley", "HEA screening evidence",
                 "atoms too close", manifest["inputs_hash"], "cv_300K", "last_phdos_peak"):
        assert text in html


def _finished(run_dir: Path) -> dict[str, str]:
    out = {}
    for path in (run_dir / "items").glob("*/*.json"):
        out[f"{path.parent.name}/{path.stem}"] = json.loads(path.read_text())["attempt"]
    return out


def test_sigkilled_run_resumes_to_identical_outputs_without_recomputing(config_file, reference,
                                                                         tmp_path):
    n_items = len(_finished(reference))
    seed = int(time.time()) % 10_000
    rng = random.Random(seed)
    kill_after = rng.randint(1, n_items - 2)  # finished items before the kill (at least one)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_command(config_file, run_dir), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (run_dir / "items").is_dir() and len(_finished(run_dir)) >= kill_after:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        assert proc.poll() is None, f"the run ended before the kill (seed {seed})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _finished(run_dir)
    assert before, f"no item finished before the kill (seed {seed})"
    killed = json.loads((run_dir / "manifest.json").read_text())
    assert killed["status"] == "running"

    done = subprocess.run(_command(config_file, run_dir), env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    first, second = manifest["attempts"]
    assert first["status"] == "interrupted" and set(first["computed"]) == set(before)
    assert second["status"] == "completed_with_failures"
    assert not set(second["computed"]) & set(before), f"recomputed a finished item (seed {seed})"
    assert set(before) <= set(second["loaded"])
    assert len(second["computed"]) + len(second["loaded"]) == n_items
    assert _finished(run_dir) == {**_finished(run_dir), **before}  # finished items untouched

    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / f"{name}.parquet"),
                                      pd.read_parquet(reference / f"{name}.parquet"))
    cifs = sorted(p.relative_to(reference) for p in (reference / "structures").rglob("*.cif"))
    assert cifs == sorted(p.relative_to(run_dir) for p in (run_dir / "structures").rglob("*.cif"))
    for cif in cifs:
        assert (run_dir / cif).read_bytes() == (reference / cif).read_bytes(), cif


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_errors(reference, tmp_path):
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", "--dump-dom",
               (reference / "report.html").resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if "CONSOLE" in line] == []
    dom = done.stdout
    assert dom.count("<svg") >= 1 and "Short-range order of alloy candidates" in dom
    assert "Content-Security-Policy" in dom  # nothing can load from the network
