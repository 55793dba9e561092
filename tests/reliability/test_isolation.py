"""A native crash, a failed cached row or an interruption never loses a batch's finished work."""

from __future__ import annotations

import ctypes
import os
import stat

import pytest
from pymatgen.core import Lattice, Structure

from matflow.featurize import FeatureCache, featurize_structures
from matflow.featurize import runner as runner_module
from matflow.outputs import OutputPathError, atomic_write_text, check_output_dir, check_output_file


def _rocksalt(a: float, cation: str = "Na") -> Structure:
    return Structure(Lattice.cubic(a), [cation, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def batch() -> list[Structure]:
    structures = [_rocksalt(3.0 + 0.1 * i) for i in range(4)]
    structures.insert(2, _rocksalt(3.6, "K"))
    return structures


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_segfault_in_a_featurizer_fails_one_row_and_keeps_the_rest(batch, monkeypatch, tmp_path, n_jobs):
    real = runner_module._featurize_one

    def segfault_on_kcl(obj, built):
        if obj.composition.reduced_formula == "KCl":
            ctypes.string_at(0)  # a real SIGSEGV inside the worker, as spglib gives on NaN input
        return real(obj, built)

    monkeypatch.setattr(runner_module, "_featurize_one", segfault_on_kcl)
    cache = FeatureCache(tmp_path / "f.sqlite")
    result = featurize_structures(batch, "composition", n_jobs=n_jobs, cache=cache)
    status = dict(zip(result.table["source"], result.table["status"], strict=True))
    assert status.pop("structure[2]") == "failed"
    assert set(status.values()) == {"ok"} and len(status) == 4
    kcl = result.table[result.table["formula"] == "KCl"].iloc[0]
    assert "crashed" in kcl["errors"]
    assert [f.source for f in result.failures] == ["structure[2]"]
    # the crash is not cached: a later run (the bug fixed) retries the structure
    monkeypatch.setattr(runner_module, "_featurize_one", real)
    rerun = featurize_structures(batch, "composition", n_jobs=n_jobs, cache=cache)
    assert (rerun.n_computed, rerun.n_cached, rerun.n_ok) == (1, 4, 5)


def test_failed_rows_are_retried_not_served_from_the_cache(batch, monkeypatch, tmp_path):
    real = runner_module._featurize_one

    def fail_everything(obj, built):
        row = real(obj, built)
        return {**row, "status": "failed", "errors": "magpie: simulated failure"}

    cache = FeatureCache(tmp_path / "f.sqlite")
    monkeypatch.setattr(runner_module, "_featurize_one", fail_everything)
    first = featurize_structures(batch[:2], "composition", cache=cache)
    assert first.n_ok == 0
    monkeypatch.setattr(runner_module, "_featurize_one", real)
    second = featurize_structures(batch[:2], "composition", cache=cache)
    assert (second.n_computed, second.n_ok) == (2, 2)


def test_cache_only_pass_marks_missing_rows_not_computed(batch, tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    featurize_structures(batch[:2], "composition", cache=cache)
    partial = featurize_structures(batch, "composition", cache=cache, compute=False)
    assert partial.n_computed == 0
    assert list(partial.table["status"]) == ["ok", "ok", "not computed", "not computed", "not computed"]
    assert partial.table.iloc[2:, 4:].isna().all().all()


def test_output_file_checks(tmp_path):
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_file(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_file(blocker / "sub" / "out.parquet")
    with pytest.raises(OutputPathError, match="is a file; give a folder"):
        check_output_dir(blocker)
    assert check_output_file(tmp_path / "new" / "deeper" / "t.parquet")  # creatable: fine


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_output_in_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(OutputPathError, match="no permission"):
            check_output_file(locked / "t.parquet")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")

    def broken(tmp):
        tmp.write_text("half a ")
        raise OSError(28, "No space left on device")

    from matflow.outputs import atomic_write

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temporary file left behind
