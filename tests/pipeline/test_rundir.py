"""The run directory's item store and manifest, and the pipeline config, without running the pipeline."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure

from matflow.pipeline.config import PipelineConfigError, load_config, preset
from matflow.pipeline.rundir import RunDir, content_key


def test_item_is_computed_once_then_loaded_and_attempts_are_told_apart(tmp_path):
    first = RunDir(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"energy_eV": 1.5, "nan": float("nan")}

    key = content_key("relax", "abc", {"fmax": 0.05})
    record = first.item("relax", key, "cand-0", compute)
    assert record["ok"] and record["result"] == {"energy_eV": 1.5, "nan": None}
    assert record["attempt"] == first.attempt
    second = RunDir(tmp_path)
    again = second.item("relax", key, "cand-0", compute)
    assert calls == [1] and again == record  # loaded, not recomputed, byte-identical content
    assert second.finished_items() == {f"relax/{key}": first.attempt}
    assert not list((tmp_path / "items" / "relax").glob(".*.tmp"))  # no temporary file left


def test_a_failing_item_is_recorded_with_its_reason_and_not_retried(tmp_path):
    rd = RunDir(tmp_path)

    def boom():
        raise ValueError("atoms too close: sites 0 and 1")

    record = rd.item("relax", "k1", "bad", boom)
    assert not record["ok"] and record["reason"] == "ValueError: atoms too close: sites 0 and 1"
    assert json.loads(rd.item_path("relax", "k1").read_text())["ok"] is False
    assert RunDir(tmp_path).item("relax", "k1", "bad", lambda: 1)["ok"] is False


def test_killed_attempt_gets_its_finished_items_on_the_next_start(tmp_path):
    killed = RunDir(tmp_path)
    killed.begin_attempt("h1", {"a": 1})
    killed.item("relax", "k1", "c0", lambda: 1)
    rerun = RunDir(tmp_path)
    manifest = rerun.begin_attempt("h1", {"a": 1})
    assert manifest["attempts"][0]["status"] == "interrupted"
    assert manifest["attempts"][0]["computed"] == ["relax/k1"]
    rerun.item("relax", "k2", "c1", lambda: 2)
    manifest = rerun.end_attempt(manifest, ["relax/k1", "relax/k2"], "completed")
    assert manifest["attempts"][1]["computed"] == ["relax/k2"]
    assert manifest["attempts"][1]["loaded"] == ["relax/k1"]
    with pytest.raises(ValueError, match="holds a run of other inputs"):
        RunDir(tmp_path).begin_attempt("other", {})


def test_content_key_changes_with_any_input():
    base = content_key("relax", "abc", {"fmax": 0.05})
    assert base == content_key("relax", "abc", {"fmax": 0.05})
    assert base != content_key("relax", "abc", {"fmax": 0.1})
    assert base != content_key("features", "abc", {"fmax": 0.05})


def test_config_presets_and_clear_errors(tmp_path):
    assert preset("test").inputs_hash() == preset("test").inputs_hash()
    assert preset("test").inputs_hash() != preset("demo").inputs_hash()
    assert preset("test", run_dir="x").inputs_hash() == preset("test").inputs_hash()
    with pytest.raises(PipelineConfigError, match="no candidate source"):
        load_config({"name": "x"})
    with pytest.raises(PipelineConfigError, match="relax.max_steps"):
        load_config({"structure_files": ["a.cif"], "relax": {"max_steps": 0}})
    with pytest.raises(PipelineConfigError, match="unknown; choose one of"):
        preset("huge")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"structure_files": ["a.cif"], "bogus": 1}))
    with pytest.raises(PipelineConfigError, match="bogus"):
        load_config(path)


def test_relax_step_records_overlapping_atoms_as_a_failure(tmp_path):
    from matflow.pipeline.run import relax_item

    config = load_config({"structure_files": ["unused.cif"], "relax": {"max_steps": 5}})
    rd = RunDir(tmp_path)
    overlap = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    record = relax_item(config, rd, {"id": "overlap", "structure": overlap.as_dict()})
    assert not record["ok"] and "atoms too close" in record["reason"]
    nan = overlap.as_dict()
    nan["sites"][1]["abc"] = [float("nan"), 0.5, 0.5]
    record = relax_item(config, rd, {"id": "nan", "structure": nan})
    assert not record["ok"] and record["item"] == "nan"
