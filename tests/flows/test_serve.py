"""Scheduled deployments: the deployments file is checked entry by entry, ``matflow serve --dry-run``
lists it, ``retrain_if_changed`` retrains only when the dataset's files changed, and one deployment
runs end to end through a real Prefect server started here as a subprocess."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DUMP = ROOT / "data" / "sro_warren_cowley" / "fcc_ternary_4000atoms.dump.gz"
ALPHA_1 = 0.33578938  # α of the first shell, first pair, of DUMP (tests/flows/test_sro_screen_flows.py)
TINY = {"n_features": 6, "widths": [[16], [8], [4]], "epochs": 20, "patience": 5, "batch_size": 16,
        "n_estimators": 2, "calib_fraction": 0.25, "min_calibration": 5}

SRO_ENTRY = f"""
[[deployments]]
name = "sro-check"
flow = "flows.sro:sro_analyze"
tags = ["test"]
[deployments.parameters]
inputs = ["{DUMP}"]
lattice = "fcc"
"""


def write(tmp_path: Path, text: str, name: str = "deployments.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> str:
    from flows.serve import DeploymentConfigError, load_deployments

    with pytest.raises(DeploymentConfigError) as info:
        load_deployments(path)
    return str(info.value)


# --- the deployments file -------------------------------------------------------------------------

def test_example_config_is_valid_and_builds_schedules():
    from flows.serve import build_deployment, load_deployments

    entries, limit = load_deployments(ROOT / "deploy" / "deployments.toml")
    enabled = {e.spec.name: e for e in entries if e.spec.enabled}
    assert limit == 1
    assert {"nightly-retrain-matbench-phonons", "weekly-hea-screening"} <= enabled.keys()
    assert [e.spec.name for e in entries if not e.spec.enabled] == ["pipeline-on-demand"]
    deployment = build_deployment(enabled["weekly-hea-screening"])
    assert deployment.entrypoint == "flows.screening.screen_hea"
    assert deployment.schedules[0].schedule.cron == "0 5 * * 1"
    assert deployment.parameters["elements"] == ["Al", "Co", "Cr", "Fe", "Ni", "Mn"]


@pytest.mark.parametrize("entry, expected", [
    ('name = "a"\nflow = "flows.nowhere:thing"', "deployment 'a': flow 'flows.nowhere:thing': no module 'flows.nowhere'"),
    ('name = "a"\nflow = "flows.sro:nothing"', "deployment 'a': flow 'flows.sro:nothing': module flows.sro has no attribute 'nothing'"),
    ('name = "a"\nflow = "flows.sro:finish_batch"', "not a Prefect flow"),
    ('name = "a"\nflow = "flows.sro"', "deployment 'a': flow: String should match pattern"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\ncron = "61 * * * *"\nparameters = {inputs = ["x"]}',
     "deployment 'a': cron: bad cron '61 * * * *'"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\ncron = "0 2 * * *"\ninterval = 60\nparameters = {inputs = ["x"]}',
     "give cron or interval, not both"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\ninterval = -5\nparameters = {inputs = ["x"]}',
     "interval: interval -1 day"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\ncron = "0 2 * * *"\ntimezone = "Mars/Base"\nparameters = {inputs = ["x"]}',
     "timezone: unknown timezone 'Mars/Base'"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"', "deployment 'a': parameters: inputs: Field required"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\nparameters = {inputs = ["x"], n_shells = "two"}',
     "deployment 'a': parameters: n_shells: Input should be a valid integer"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\nparameters = {inputs = ["x"], shells = 2}',
     "deployment 'a': parameters: 'shells' not accepted by flow 'sro_analyze'"),
    ('name = "a"\nflow = "flows.sro:sro_analyze"\nparameters = {inputs = ["x"]}\nschedule = "daily"',
     "deployment 'a': schedule: unknown key"),
    ('flow = "flows.sro:sro_analyze"', "deployment #1: name: Field required"),
])
def test_bad_entry_is_refused_naming_file_deployment_and_reason(tmp_path, entry, expected):
    path = write(tmp_path, f"[[deployments]]\n{entry}\n")
    message = errors_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_every_bad_entry_is_reported_and_good_ones_do_not_hide_them(tmp_path):
    path = write(tmp_path, SRO_ENTRY + SRO_ENTRY + '[[deployments]]\nname = "b"\nflow = "flows.x:y"\n')
    lines = errors_of(path).splitlines()
    assert lines == [f"{path}: deployment 'sro-check': name used twice in the file",
                     f"{path}: deployment 'b': flow 'flows.x:y': no module 'flows.x'"]


@pytest.mark.parametrize("name, text, expected", [
    ("d.toml", "deployments = [", "not valid TOML"),
    ("d.yaml", "deployments: [a, b", "not valid YAML"),
    ("d.json", "{}", "unknown format '.json'"),
    ("d.toml", "", "deployments: Field required"),
    ("d.toml", "deployments = []", "deployments: List should have at least 1 item"),
    ("d.yaml", "- a\n- b\n", "expected a table with a 'deployments' list, got list"),
    ("d.toml", 'limit = 0\n' + SRO_ENTRY, "limit: Input should be greater than or equal to 1"),
])
def test_bad_file_is_refused_naming_it(tmp_path, name, text, expected):
    path = write(tmp_path, text, name)
    message = errors_of(path)
    assert message.startswith(f"{path}: ") and expected in message


def test_yaml_file_with_interval_and_disabled_entry(tmp_path):
    from flows.serve import build_deployment, load_deployments

    path = write(tmp_path, f"""
deployments:
  - name: sro-every-6h
    flow: flows.sro:sro_analyze
    interval: PT6H
    timezone: Europe/Berlin
    parameters: {{inputs: ["{DUMP}"], lattice: fcc}}
  - name: later
    flow: flows.pipeline:pipeline
    enabled: false
""", "d.yaml")
    entries, limit = load_deployments(path)
    assert limit is None and [e.spec.enabled for e in entries] == [True, False]
    schedule = build_deployment(entries[0]).schedules[0].schedule
    assert schedule.interval.total_seconds() == 6 * 3600 and schedule.timezone == "Europe/Berlin"


# --- the command ------------------------------------------------------------------------------------

def test_serve_dry_run_lists_deployments_and_starts_nothing(tmp_path, monkeypatch):
    import prefect

    from matflow.cli import app

    monkeypatch.setattr(prefect, "serve", lambda *a, **k: pytest.fail("dry run must not serve"))
    path = write(tmp_path, SRO_ENTRY.replace('tags = ["test"]', 'tags = ["test"]\ncron = "15 4 * * 0"'))
    result = CliRunner().invoke(app, ["serve", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sro_analyze/sro-check"
    assert "  flow:       flows.sro:sro_analyze" in lines
    assert "  schedule:   cron '15 4 * * 0' (UTC)" in lines
    params = json.loads(lines[3].split(":", 1)[1])
    assert params == {"inputs": [str(DUMP)], "lattice": "fcc"}
    assert lines[-1] == f"1 deployment(s) to serve from {path}"


def test_serve_bad_config_exits_2_with_one_line_per_problem(tmp_path):
    from matflow.cli import app

    path = write(tmp_path, '[[deployments]]\nname = "a"\nflow = "flows.sro:sro_analyze"\ncron = "x"\n')
    result = CliRunner().invoke(app, ["serve", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"error: {path}: deployment 'a': cron: bad cron 'x': expected 5 fields" in result.output
    assert f"error: {path}: deployment 'a': parameters: inputs: Field required" in result.output


def test_import_matflow_cli_does_not_import_prefect():
    code = ("import sys, matflow.cli; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- retraining when the dataset changed -----------------------------------------------------------

@pytest.mark.parametrize("sha, version, record, if_unrecorded, expected", [
    ("h1", None, None, "record", "retrain"),
    ("h1", "v3", None, "record", "record"),
    ("h1", "v3", None, "retrain", "retrain"),
    ("h1", "v3", {"version": "v2", "sha256": "h1"}, "record", "record"),
    ("h1", "v3", {"version": "v3", "sha256": "h1"}, "retrain", "unchanged"),
    ("h2", "v3", {"version": "v3", "sha256": "h1"}, "record", "retrain"),
])
def test_retrain_decision(sha, version, record, if_unrecorded, expected):
    from flows.schedules import decide

    assert decide(sha, version, record, if_unrecorded) == expected


def test_retrain_if_changed_trains_only_when_the_dataset_files_change(tmp_path, monkeypatch):
    from flows.schedules import DATASET_FILES, retrain_if_changed

    rel = DATASET_FILES["alexandria_cv300"][0]
    data = tmp_path / "data"
    (data / rel).parent.mkdir(parents=True)
    shutil.copy(ROOT / "data" / rel, data / rel)
    monkeypatch.setenv("MATFLOW_DATA_DIR", str(data))
    models, state = tmp_path / "models", tmp_path / "state"
    kwargs = dict(dataset="alexandria_cv300", name="cv_tiny", preset="composition", config=TINY, limit=30,
                  models_dir=str(models), state_dir=str(state))

    first = retrain_if_changed(**kwargs, return_state=True)  # no model yet: trains v1
    assert first.is_completed() and first.message == "retrained: cv_tiny v1"
    record = json.loads((state / "retrain-cv_tiny.json").read_text())
    assert record["version"] == "v1" and record["sha256"] == first.result()["dataset_sha256"]

    again = retrain_if_changed(**kwargs, return_state=True)
    assert again.is_completed() and again.message == "unchanged"
    assert again.result()["action"] == "unchanged" and not (models / "cv_tiny" / "v2").exists()

    (state / "retrain-cv_tiny.json").unlink()  # a version trained elsewhere: baseline, no training
    baseline = retrain_if_changed(**kwargs, return_state=True)
    assert baseline.message == "baseline recorded for cv_tiny v1" and not (models / "cv_tiny" / "v2").exists()
    assert retrain_if_changed(**kwargs, return_state=True).message == "unchanged"

    records = json.loads(gzip.decompress((data / rel).read_bytes()))  # same records, other bytes
    (data / rel).write_bytes(gzip.compress(json.dumps(records, indent=1).encode(), mtime=0))
    changed = retrain_if_changed(**kwargs, return_state=True)
    assert changed.is_completed() and changed.message == "retrained: cv_tiny v2"
    assert changed.result()["previous_version"] == "v1" and (models / "cv_tiny" / "v2" / "manifest.json").is_file()
    assert retrain_if_changed(**kwargs, return_state=True).message == "unchanged"


def test_retrain_if_changed_names_a_missing_dataset_file(tmp_path, monkeypatch):
    from flows.schedules import retrain_if_changed

    monkeypatch.setenv("MATFLOW_DATA_DIR", str(tmp_path))
    state = retrain_if_changed(dataset="matbench_phonons", models_dir=str(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="matbench_phonons.json.gz not found"):
        state.result()


# --- one deployment through a real Prefect server ----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen | None, timeout: float = 20) -> int | None:
    """SIGTERM the process we started, then SIGKILL its process group if anything lingers; the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with _suppress_lookup():  # children (uvicorn, flow-run processes) that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return proc.returncode


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is ProcessLookupError


def _isolated_env(tmp_path: Path, api_url: str | None = None) -> dict[str, str]:
    """This machine's environment without any Prefect setting of the test session, plus a private
    PREFECT_HOME and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _wait_for(what: str, check, timeout_s: float, procs: list[subprocess.Popen], logs) -> object:
    """Poll ``check()`` until it returns something truthy; fail with the logs if a process we
    started exits or time runs out. ``ObjectNotFound`` (not registered yet) counts as not yet."""
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except (OSError, ObjectNotFound):
            value = None
        if value:
            return value
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[2:5]} exited ({proc.returncode}):\n{logs()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s:\n{logs()}"
        time.sleep(0.5)


def _healthy(api: str) -> bool:
    with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
        return response.status == 200


@pytest.mark.timeout(240)
def test_served_deployments_run_through_a_real_prefect_server(tmp_path):
    """`prefect server start` (scheduler on, private PREFECT_HOME and SQLite file) + `matflow serve`
    pointed at it: a run started with `run_deployment` and a run created by an interval schedule
    both complete with the right result; SIGTERM stops the runner, and the server stops after."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import local_prefect_server

    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    config = write(tmp_path, SRO_ENTRY + '\n[[deployments]]\nname = "sro-often"\nflow = "flows.sro:sro_analyze"\n'
                             f'interval = 15\nparameters = {{inputs = ["{DUMP}"], lattice = "fcc"}}\n')
    env = _isolated_env(tmp_path)
    env.update(PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="2")
    serve = None

    def logs() -> str:
        return f"--- matflow serve:\n{_tail(serve_log)}\n--- prefect server:\n{_tail(server_log, 15)}"

    with local_prefect_server(server_log, port=_free_port(), timeout_s=120, env=env) as api:
        try:
            with open(serve_log, "w") as log:  # from another folder: runs load their flow by module path
                serve = subprocess.Popen([sys.executable, "-m", "matflow.cli", "serve", str(config)],
                                         env={**env, "PREFECT_API_URL": api}, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
            with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                _wait_for("deployments registered", lambda: client.read_deployment_by_name(
                    "sro_analyze/sro-often") and client.read_deployment_by_name("sro_analyze/sro-check"),
                    90, [serve], logs)
                often = client.read_deployment_by_name("sro_analyze/sro-often")
                assert [s.schedule.interval.total_seconds() for s in often.schedules] == [15.0]

                run = run_deployment("sro_analyze/sro-check", timeout=120)
                assert run.state is not None and run.state.is_completed(), f"{run.state}\n{logs()}"
                assert run.state.message == "1 ok, 0 failed"
                artifacts = client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                summary = {a.key: a for a in artifacts}["sro-analysis-summary"]
                assert "1 ok, 0 failed" in summary.data and f"{ALPHA_1:+8.4f}" in summary.data
                assert DUMP.name in summary.data

                def scheduled_done():  # nobody triggers these: the server's scheduler does
                    runs = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[often.id])))
                    return [r for r in runs if r.state is not None and r.state.is_completed()]

                done = _wait_for("a scheduled run completed", scheduled_done, 90, [serve], logs)
                assert done[0].auto_scheduled and done[0].state.message == "1 ok, 0 failed"

            serve_code = _stop(serve, timeout=40)
            assert serve_code == 0, f"matflow serve did not stop cleanly on SIGTERM ({serve_code}):\n{logs()}"
            with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                final = client.read_flow_run(run.id).state
                assert final.is_completed(), f"stopping matflow serve changed the finished run to {final}"
                assert client.read_deployment_by_name("sro_analyze/sro-often").paused  # no late runs pile up
        finally:
            _stop(serve)
    with pytest.raises(OSError):  # the server is stopped with the block
        _healthy(api)


def test_serve_without_a_server_starts_a_local_one_and_serves_there(tmp_path, monkeypatch):
    """With no PREFECT_API_URL anywhere, `matflow serve` starts a local Prefect server (Prefect's
    per-process server runs no scheduler, so schedules would never fire) and serves on it, the
    flow-run processes included (environment variable)."""
    import contextlib

    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.serve as serve_module

    started, served = [], {}

    @contextlib.contextmanager
    def fake_server(log, **kwargs):
        started.append(log)
        yield "http://127.0.0.1:4999/api"

    def fake_serve(*deployments, limit=None, **kwargs):
        served.update(names=[d.name for d in deployments], limit=limit, setting=PREFECT_API_URL.value(),
                      env=os.environ.get("PREFECT_API_URL"))

    monkeypatch.setattr(serve_module, "local_prefect_server", fake_server)
    monkeypatch.setattr(prefect, "serve", fake_serve)
    monkeypatch.setenv("PREFECT_API_URL", "")
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("MATFLOW_RUN_DIR", str(tmp_path / "runs"))
    path = write(tmp_path, "limit = 2\n" + SRO_ENTRY)
    before = signal.getsignal(signal.SIGTERM)
    out = io.StringIO()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert serve_module.serve_config(path, out=out) == 1
        assert PREFECT_API_URL.value() is None  # restored after serving
    assert started == [tmp_path / "runs" / "schedules" / "prefect-server.log"]
    assert served == {"names": ["sro-check"], "limit": 2, "setting": "http://127.0.0.1:4999/api",
                      "env": "http://127.0.0.1:4999/api"}
    assert "serving on http://127.0.0.1:4999/api (UI: http://127.0.0.1:4999)" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handler is back


def test_work_pool_registers_deployments_for_workers_instead_of_serving(tmp_path, monkeypatch):
    """`--work-pool NAME`: the deployments go to that pool of the configured server (here the test
    session's Prefect server), for `prefect worker start --pool NAME`; nothing is served here."""
    import prefect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import DeploymentConfigError, serve_config

    monkeypatch.setattr(prefect, "serve", lambda *a, **k: pytest.fail("a work pool's deployments are not served"))
    path = write(tmp_path, SRO_ENTRY.replace('name = "sro-check"', 'name = "sro-pool"'))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(DeploymentConfigError, match="--work-pool matflow-test: needs a Prefect server"):
            serve_config(path, work_pool="matflow-test", out=io.StringIO())
    with pytest.raises(DeploymentConfigError, match="no such work pool .* prefect work-pool create matflow-test"):
        serve_config(path, work_pool="matflow-test", out=io.StringIO())
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="matflow-test", type="process"))
        out = io.StringIO()
        assert serve_config(path, work_pool="matflow-test", out=out) == 1
        deployment = client.read_deployment_by_name("sro_analyze/sro-pool")
    assert deployment.work_pool_name == "matflow-test"
    assert deployment.entrypoint == "flows.sro.sro_analyze"
    assert deployment.parameters == {"inputs": [str(DUMP)], "lattice": "fcc"}
    assert "prefect worker start --pool matflow-test" in out.getvalue()
