"""SIGTERM and SIGINT mid-batch: finished rows are kept, the exit code says which signal, a rerun resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matflow.featurize import FeatureCache, get_preset

N_STRUCTURES = 60


@pytest.fixture(scope="module")
def many_cifs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for i in range(N_STRUCTURES):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.0 + 0.01 * i), ["Na", "Cl"],
                                      [[0, 0, 0], [0.5, 0.5, 0.5]])
        s.to(filename=str(folder / f"nacl_{i:03d}.cif"))
    return folder


def _featurize(folder: Path, out: Path, cache_dir: Path, stderr_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MATFLOW_CACHE_DIR": str(cache_dir)}
    # a shell that starts the suite in the background ignores SIGINT in its children, and Python
    # honours an inherited ignore: give the child the default disposition, as a terminal would
    return subprocess.Popen([sys.executable, "-m", "matflow.cli", "featurize", str(folder), "-o", str(out),
                             "--preset", "structure"], env=env, stdout=subprocess.PIPE,
                            stderr=open(stderr_path, "w"), text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_progress(stderr_path: Path, proc: subprocess.Popen, rows: int, timeout: float = 240) -> int:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        found = re.findall(r"(\d+)/\d+ \[", stderr_path.read_text(errors="replace"))
        if found and int(found[-1]) >= rows:
            return int(found[-1])
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.2)
    raise AssertionError("no progress seen")


@pytest.mark.parametrize(("signum", "code", "name", "resume"), [(signal.SIGTERM, 143, "SIGTERM", True),
                                                                 (signal.SIGINT, 130, "SIGINT", False)])
def test_signal_mid_batch_keeps_finished_rows_and_resumes(many_cifs, tmp_path, signum, code, name, resume):
    out, cache_dir, err = tmp_path / "t.parquet", tmp_path / "cache", tmp_path / "stderr.txt"
    proc = _featurize(many_cifs, out, cache_dir, err)
    _wait_for_progress(err, proc, 5)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    message = err.read_text()
    assert proc.returncode == code, message[-2000:]
    assert f"interrupted by {name}" in message and "rerun the same command to resume" in message
    assert "Traceback" not in message
    partial = pd.read_parquet(out)
    counts = partial["status"].value_counts().to_dict()
    assert counts.get("ok", 0) >= 5 and counts.get("not computed", 0) >= 1, counts
    assert set(counts) <= {"ok", "not computed"}
    cache = FeatureCache(cache_dir / "features.sqlite")
    cached = cache.get_many(get_preset("structure").key(), partial.index[partial["status"] == "ok"])
    assert len(cached) == counts["ok"]  # every row the table calls finished is in the cache
    if not resume:
        return

    rerun = _featurize(many_cifs, out, cache_dir, err)
    stdout, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, err.read_text()[-2000:]
    assert f"wrote {N_STRUCTURES} featurized structure(s)" in stdout
    final = pd.read_parquet(out)
    assert (final["status"] == "ok").all()
    done_before = partial.index[partial["status"] == "ok"]
    pd.testing.assert_frame_equal(final.loc[done_before].iloc[:, 4:], partial.loc[done_before].iloc[:, 4:])
