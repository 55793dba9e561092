"""One settings object for matflow: defaults, then an optional config file, then MATFLOW_* variables.

Per-run values are function arguments; these are only machine-wide defaults (where data, models,
caches and run folders live, which torch device and how many threads to use, and where flows run).

Sources, later ones winning:

1. the defaults below;
2. a TOML or YAML file: the one named by ``MATFLOW_CONFIG``, else ``./matflow.toml`` when present
   (flat ``key = value`` pairs, or the same pairs under a ``[matflow]`` table; relative paths in
   it are taken relative to the file's folder);
3. environment variables ``MATFLOW_<KEY>`` (e.g. ``MATFLOW_CACHE_DIR``, ``MATFLOW_TORCH_THREADS``).

``get_settings()`` re-reads the environment on each call (tests monkeypatch variables) and re-parses
the file only when its modification time or size changed, so a call costs well under a millisecond.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MATFLOW_"
CONFIG_ENV = "MATFLOW_CONFIG"
DEFAULT_CONFIG_NAME = "matflow.toml"
_PATH_KEYS = ("data_dir", "models_dir", "cache_dir", "run_dir")


class SettingsError(ValueError):
    """A setting has a bad value or the config file cannot be used; the message names which."""


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "matflow"


def config_path() -> Path | None:
    """The config file in force: ``$MATFLOW_CONFIG`` (must exist), else ``./matflow.toml`` if present."""
    named = os.environ.get(CONFIG_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise SettingsError(f"{CONFIG_ENV}={named!r}: no such file")
        return path
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


@lru_cache(maxsize=8)
def _parse_config(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The file's settings as a flat dict (cached per path, modification time and size)."""
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise SettingsError(f"config file {path}: unknown format {suffix!r} (use .toml, .yaml or .yml)")
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # yaml.YAMLError, imported lazily
        if type(exc).__module__.startswith("yaml"):
            first = " ".join(str(exc).split())
            raise SettingsError(f"config file {path}: not valid YAML ({first})") from None
        raise
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: expected key = value pairs, got {type(data).__name__}")
    if isinstance(data.get("matflow"), dict) and len(data) == 1:
        data = data["matflow"]
    data = {str(k).lower(): v for k, v in data.items()}
    for key in _PATH_KEYS:
        if isinstance(data.get(key), str):
            value = Path(data[key]).expanduser()
            data[key] = value if value.is_absolute() else file.parent.resolve() / value
    return data


def config_values() -> tuple[Path | None, dict[str, Any]]:
    """The config file in force (or None) and its key/value pairs."""
    path = config_path()
    if path is None:
        return None, {}
    stat = path.stat()
    return path, _parse_config(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the TOML/YAML config file (below environment variables in priority)."""

    def get_field_value(self, field, field_name: str) -> tuple[Any, str, bool]:
        return config_values()[1].get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(config_values()[1])


class Settings(BaseSettings):
    """Machine-wide defaults of matflow (see the module docstring for where each value comes from).

    data_dir, models_dir, cache_dir: bundled data, model registry and feature/selection caches.
    run_dir: parent of the default output folders of the flows. device: torch device ("auto" = CUDA
    when present). n_jobs: worker processes of the library's own parallel loops (featurization).
    torch_threads: torch intra-op threads, 0 = torch's default. task_runner: where Prefect tasks run,
    "local" (threads of the flow process) or "dask". dask_address: scheduler of an existing Dask
    cluster; None starts a LocalCluster of ``dask_workers`` single-threaded worker processes.
    prefect_api_url: Prefect server to report to; None = Prefect's own setting (ephemeral server).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True,
                                      validate_default=True)

    data_dir: Path = PROJECT_ROOT / "data"
    models_dir: Path = PROJECT_ROOT / "models"
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    run_dir: Path = Path(".")
    device: str = "auto"
    n_jobs: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=0, ge=0)
    task_runner: Literal["local", "dask"] = "local"
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1)
    prefect_api_url: str | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "auto" and not re.fullmatch(r"(cpu|cuda|mps|xpu)(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, mps or xpu, optionally with :<index>")
        return value

    @field_validator("task_runner", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dask_address", "prefect_api_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings as the environment and config file say now (same as ``get_settings()``)."""
        return get_settings()


def _origin(name: str, file: Path | None, file_values: dict[str, Any]) -> str:
    """Where a setting's value comes from: its environment variable, the config file, or the default."""
    var = ENV_PREFIX + name.upper()
    if any(k.upper() == var for k in os.environ):
        return f"env {var}"
    if name in file_values:
        return f"file {file}"
    return "default"


def _one_line(exc: ValidationError, file: Path | None, file_values: dict[str, Any]) -> str:
    problems, unknown = [], []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            unknown.append(name)
            continue
        reason = err["msg"].removeprefix("Value error, ")
        where = _origin(name, file, file_values)
        if where.startswith("env "):
            problems.append(f"{where.removeprefix('env ')}={err.get('input')!r}: {reason}")
        elif where.startswith("file "):
            problems.append(f"{name} = {err.get('input')!r} in config file {file}: {reason}")
        else:
            problems.append(f"{name}={err.get('input')!r}: {reason}")
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))} in config file {file} "
                        f"(known: {', '.join(Settings.model_fields)})")
    return "invalid matflow settings: " + "; ".join(problems)


def get_settings() -> Settings:
    """Settings as the environment (and config file) say now: cheap, re-read on every call."""
    file, values = config_values()
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, file, values)) from None


def settings_report() -> str:
    """Each setting, its value and where it came from (default, env var or config file), one a line."""
    settings = get_settings()
    file, values = config_values()
    width = max(len(name) for name in Settings.model_fields)
    lines = [f"config file: {file if file else f'none (set {CONFIG_ENV} or add ./{DEFAULT_CONFIG_NAME})'}"]
    for name in Settings.model_fields:
        value = getattr(settings, name)
        lines.append(f"{name:<{width}} = {str(value) if value is not None else '-':<40} "
                     f"({_origin(name, file, values)})")
    return "\n".join(lines)
