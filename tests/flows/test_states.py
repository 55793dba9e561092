"""Batch flows end in a state that tells the truth: Completed with the failures listed when some
input succeeded, Failed ("all N inputs failed") when none did."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data"


def _artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_state_message_and_markdown_name_every_failure():
    from flows.states import batch_markdown, state_message

    summary = {"n_ok": 1, "n_failed": 1, "failures": [{"source": "a|b.cif", "reason": "empty file"}]}
    assert state_message(summary) == "1 ok, 1 failed"
    assert state_message({"n_ok": 0, "n_failed": 3, "failures": []}) == "all 3 inputs failed"
    text = batch_markdown("Featurization", summary)
    assert "| `a\\|b.cif` | empty file |" in text  # a pipe in a file name does not break the table


def test_one_bad_one_good_input_completes_with_failure_artifact(tmp_path):
    from flows.featurize import featurize

    for src in [DATA / "good" / "NaCl.cif", DATA / "bad" / "empty.cif"]:
        shutil.copy(src, tmp_path / src.name)
    state = featurize(inputs=[str(tmp_path)], output=str(tmp_path / "f.parquet"),
                      preset="composition", return_state=True)
    assert state.is_completed()
    assert state.message == "1 ok, 1 failed"
    summary = state.result()
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    [artifact] = [a for a in _artifacts(state.state_details.flow_run_id) if a.key == "featurize-summary"]
    assert "1 ok, 1 failed" in artifact.data
    assert "empty.cif" in artifact.data and "empty file" in artifact.data


def test_only_bad_inputs_end_failed_with_count(tmp_path):
    from flows.featurize import featurize
    from flows.states import AllInputsFailed

    (tmp_path / "empty.cif").write_text("")
    (tmp_path / "junk.cif").write_text("not a cif at all\n")
    state = featurize(inputs=[str(tmp_path)], output=str(tmp_path / "f.parquet"),
                      preset="composition", return_state=True)
    assert state.is_failed()
    assert state.message == "all 2 inputs failed"
    with pytest.raises(AllInputsFailed, match="all 2 inputs failed") as info:
        state.result()
    assert info.value.summary["n_failed"] == 2
    [artifact] = [a for a in _artifacts(state.state_details.flow_run_id) if a.key == "featurize-summary"]
    assert "all 2 inputs failed" in artifact.data and "junk.cif" in artifact.data


def test_relax_flow_with_only_bad_inputs_fails(tmp_path):
    from flows.atomistic import relax

    (tmp_path / "broken.cif").write_text("")
    state = relax(inputs=[str(tmp_path / "broken.cif"), str(tmp_path / "nothing-*.cif")],
                  outdir=str(tmp_path / "out"), return_state=True)
    assert state.is_failed() and state.message == "all 2 inputs failed"
