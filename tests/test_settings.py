"""matflow settings: defaults, a TOML/YAML file, MATFLOW_* variables on top, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from matflow.settings import PROJECT_ROOT, Settings, SettingsError, get_settings, settings_report


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No config file and no MATFLOW_* variables but the ones a test sets (CWD has no matflow.toml)."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("MATFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_keep_the_old_fields(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    s = get_settings()
    assert s.data_dir == PROJECT_ROOT / "data" and s.models_dir == PROJECT_ROOT / "models"
    assert s.cache_dir == tmp_path / "xdg" / "matflow"
    assert s.device == "auto" and s.task_runner == "local" and s.dask_address is None
    assert s.n_jobs == 1 and s.torch_threads == 0 and s.dask_workers == 2
    assert Settings.from_env() == s


def test_env_vars_are_reread_on_every_call(monkeypatch, tmp_path):
    monkeypatch.setenv("MATFLOW_CACHE_DIR", str(tmp_path / "c1"))
    assert get_settings().cache_dir == tmp_path / "c1"
    monkeypatch.setenv("MATFLOW_CACHE_DIR", str(tmp_path / "c2"))
    monkeypatch.setenv("MATFLOW_TORCH_THREADS", "1")
    monkeypatch.setenv("MATFLOW_TASK_RUNNER", "Dask")
    s = get_settings()
    assert s.cache_dir == tmp_path / "c2" and s.torch_threads == 1 and s.task_runner == "dask"


def test_toml_file_sits_below_env_and_resolves_paths_next_to_it(monkeypatch, tmp_path):
    conf = tmp_path / "conf" / "site.toml"
    conf.parent.mkdir()
    conf.write_text('[matflow]\ncache_dir = "cache"\nn_jobs = 3\ndask_workers = 4\n'
                    'task_runner = "dask"\ndask_address = "tcp://10.0.0.5:8786"\n')
    monkeypatch.setenv("MATFLOW_CONFIG", str(conf))
    monkeypatch.setenv("MATFLOW_N_JOBS", "2")
    s = get_settings()
    assert s.cache_dir == conf.parent / "cache"
    assert s.n_jobs == 2 and s.dask_workers == 4 and s.dask_address == "tcp://10.0.0.5:8786"
    report = settings_report()
    assert f"config file: {conf}" in report
    lines = {line.split()[0]: line for line in report.splitlines()[1:]}
    assert lines["n_jobs"].endswith("(env MATFLOW_N_JOBS)")
    assert lines["dask_workers"].endswith(f"(file {conf})")
    assert lines["device"].endswith("(default)")
    conf.write_text("n_jobs = 5\n")  # an edited file is seen on the next call
    monkeypatch.delenv("MATFLOW_N_JOBS")
    assert get_settings().n_jobs == 5


def test_local_matflow_toml_and_yaml(monkeypatch, tmp_path):
    (tmp_path / "matflow.toml").write_text('device = "cpu"\n')
    assert get_settings().device == "cpu"
    yaml_file = tmp_path / "m.yaml"
    yaml_file.write_text("device: cuda:1\nrun_dir: /data/runs\n")
    monkeypatch.setenv("MATFLOW_CONFIG", str(yaml_file))
    s = get_settings()
    assert s.device == "cuda:1" and s.run_dir == Path("/data/runs")


@pytest.mark.parametrize(("env", "message"), [
    ({"MATFLOW_TORCH_THREADS": "lots"}, "MATFLOW_TORCH_THREADS='lots': Input should be a valid integer"),
    ({"MATFLOW_N_JOBS": "0"}, "MATFLOW_N_JOBS='0': Input should be greater than or equal to 1"),
    ({"MATFLOW_TASK_RUNNER": "spark"}, "MATFLOW_TASK_RUNNER='spark': Input should be 'local' or 'dask'"),
    ({"MATFLOW_DEVICE": "gpu"}, "MATFLOW_DEVICE='gpu': must be auto, cpu, cuda"),
    ({"MATFLOW_CONFIG": "/no/such/matflow.toml"}, "MATFLOW_CONFIG='/no/such/matflow.toml': no such file"),
])
def test_bad_env_values_name_the_variable(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        get_settings()
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("n_jobs = -2\n", "n_jobs = -2 in config file"),
    ("cache_dri = 'x'\n", "unknown key(s) 'cache_dri' in config file"),
    ("n_jobs = [\n", "config file"),
])
def test_bad_file_values_name_the_key_and_file(monkeypatch, tmp_path, text, message):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    monkeypatch.setenv("MATFLOW_CONFIG", str(conf))
    with pytest.raises(SettingsError) as info:
        get_settings()
    assert message in str(info.value) and str(conf) in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_are_cheap_to_reread():
    import time

    get_settings()
    start = time.perf_counter()
    for _ in range(200):
        get_settings()
    assert (time.perf_counter() - start) / 200 < 0.005  # seconds per call, with room for a busy CPU
