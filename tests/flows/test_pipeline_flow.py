"""The ``pipeline`` flow on Prefect's ephemeral server: per-item tasks, a truthful final state with a
failure artifact, the run directory's tables and report, and a rerun that computes nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from matflow.pipeline.config import PRESETS


@pytest.fixture(scope="module")
def flow_config(tmp_path_factory) -> dict:
    """Two CDVAE samples (no alloys: the SRO and screening steps are the library tests') and one
    structure file with overlapping atoms."""
    from pymatgen.core import Lattice, Structure

    folder = tmp_path_factory.mktemp("flow-config")
    bad = folder / "overlap.cif"
    Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]]).to(filename=str(bad))
    return {**PRESETS["test"], "name": "flow-test", "hea": None, "structure_files": [str(bad)]}


def test_pipeline_flow_maps_items_reports_failures_and_resumes(flow_config, tmp_path):
    import torch
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import pipeline
    from flows.states import artifact_key

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path / "run"
        state = pipeline(config=flow_config, run_dir=str(run_dir), return_state=True)
        assert state.is_completed() and state.message == "2 ok, 1 failed"
        summary = state.result()
        assert summary["report"] == str(run_dir / "report.html") and summary["n_computed"] == 9
        assert summary["failures"][0]["step"] == "read"
        assert "atoms too close" in summary["failures"][0]["reason"]
        tables = {n: pd.read_parquet(run_dir / f"{n}.parquet") for n in ("relaxed", "predictions")}
        assert list(tables["relaxed"]["id"]) == ["cdvae-000", "cdvae-001"]
        assert len(tables["predictions"]) == 4
        assert len(list((run_dir / "prefect-results").iterdir())) >= 6  # persisted task results

        async def task_names(flow_run_id):
            async with get_client() as client:
                runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
                artifacts = await client.read_artifacts()
            return sorted(r.name for r in runs), artifacts

        import asyncio

        async def task_states(flow_run_id):
            async with get_client() as client:
                runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return sorted((r.name, r.state.name) for r in runs)

        names, artifacts = asyncio.run(task_names(state.state_details.flow_run_id))
        assert sum(n.startswith("relax-cdvae-") for n in names) == 2  # one task per candidate
        assert sum(n.startswith("predict-") for n in names) == 4
        assert any(a.key == artifact_key("pipeline") and "atoms too close" in (a.data or "")
                   for a in artifacts)

        rerun = pipeline(config=flow_config, run_dir=str(run_dir), return_state=True)
        again = rerun.result()
        assert again["n_computed"] == 0 and again["n_loaded"] == 9
        states = asyncio.run(task_states(rerun.state_details.flow_run_id))
        cached = [name for name, state in states if state == "Cached"]
        assert len(cached) == 8, states  # relax, features, predict tasks: Prefect cache hits
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert [a["status"] for a in manifest["attempts"]] == ["completed_with_failures"] * 2
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "predictions.parquet"),
                                      tables["predictions"])
    finally:
        torch.set_num_threads(threads)


def test_pipeline_flow_fails_when_nothing_finishes(tmp_path):
    from flows.pipeline import pipeline
    from flows.states import AllInputsFailed

    bad = tmp_path / "overlap.cif"
    bad.write_text("data_x\n_cell_length_a 4\n")  # unreadable: the only candidate fails
    config = {"name": "all-bad", "structure_files": [str(bad)], "optional_models": []}
    state = pipeline(config=config, run_dir=str(tmp_path / "run"), return_state=True)
    assert state.is_failed() and state.message == "all 1 inputs failed"
    with pytest.raises(AllInputsFailed):
        state.result()
