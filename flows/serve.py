"""Scheduled deployments of matflow's flows, declared in one TOML or YAML file and served by Prefect.

``matflow serve deploy/deployments.toml`` (or ``python -m flows.serve CONFIG``) reads the file, checks
every entry before anything starts (the flow's import path, the schedule, the parameters against the
flow's signature) and serves all deployments from this process with ``prefect.serve``: scheduled runs
and runs started from the UI/API execute here until SIGINT or SIGTERM. ``--dry-run`` only checks and
lists them; ``--work-pool NAME`` registers them in a work pool of the configured Prefect server, for
``prefect worker start --pool NAME`` to run, instead of serving them here.

Where runs go: ``PREFECT_API_URL`` (or matflow's ``prefect_api_url``) when set; otherwise ``matflow
serve`` starts ``prefect server start`` on 127.0.0.1 for as long as it serves, because Prefect's
embedded per-process server runs no scheduler and cron/interval schedules would never fire there.

File format (TOML shown; YAML takes the same keys)::

    limit = 2                         # optional: most flow runs executing at once in this process

    [[deployments]]
    name = "weekly-hea-screening"     # Prefect deployment name (unique in the file)
    flow = "flows.screening:screen_hea"   # module:attribute of a Prefect flow
    cron = "0 3 * * 1"                # or interval = 3600 (seconds) / "PT6H"; neither = run on demand
    timezone = "UTC"                  # of the cron/interval anchor (default UTC)
    description = "..."
    tags = ["screening"]
    concurrency_limit = 1             # optional: most concurrent runs of this deployment
    enabled = true                    # false: checked for shape only, not imported nor served
    [deployments.parameters]          # a complete call of the flow (required parameters included)
    elements = ["Co", "Cr", "Fe", "Ni", "Mn"]

Runs load their flow by module path (``flows.screening.screen_hea``), so they work from any working
directory where matflow is installed.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import argparse
import contextlib
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import Flow
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from matflow.settings import get_settings

FORMATS = (".toml", ".yaml", ".yml")


class DeploymentConfigError(ValueError):
    """The deployments file cannot be served; the message names the file, each bad entry and why."""


class DeploymentSpec(BaseModel):
    """One entry of the deployments file: which flow, when, and with which parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[^/%&><]+$")
    flow: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    cron: str | None = None
    interval: dt.timedelta | None = None
    timezone: str = "UTC"
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, ge=1)
    paused: bool = False
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from prefect.schedules import Cron

        try:
            Cron(value)
        except ValueError:
            raise ValueError(f"bad cron {value!r}: expected 5 fields, minute hour day-of-month month "
                             "day-of-week (e.g. '30 1 * * *' = daily at 01:30)") from None
        return value

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError(f"interval {value}: must be positive")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (an IANA name such as 'Europe/Berlin')") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> DeploymentSpec:
        if self.cron is not None and self.interval is not None:
            raise ValueError("give cron or interval, not both")
        return self

    def schedule_text(self) -> str:
        """The schedule in words, for listings."""
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        if self.interval is not None:
            return f"every {self.interval}"
        return "on demand (no schedule)"


class DeploymentsFile(BaseModel):
    """The whole file: the deployments and the runner's concurrency limit."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[dict[str, Any]] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)


class ServedDeployment(BaseModel):
    """A checked entry with the flow it names (None when the entry is disabled)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: DeploymentSpec
    flow: Any = None

    def describe(self) -> dict[str, Any]:
        """Name, flow, schedule and parameters, as listed by ``--dry-run``."""
        full = f"{self.flow.name}/{self.spec.name}" if self.flow is not None else self.spec.name
        return {"deployment": full, "flow": self.spec.flow,
                "schedule": self.spec.schedule_text(), "parameters": self.spec.parameters,
                "tags": self.spec.tags, "enabled": self.spec.enabled, "paused": self.spec.paused}


def _read(path: Path) -> dict[str, Any]:
    """The file's content as a dict; errors name the file."""
    if not path.is_file():
        raise DeploymentConfigError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DeploymentConfigError(f"{path}: unknown format {suffix!r} (use .toml, .yaml or .yml)")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentConfigError(f"{path}: cannot be read ({exc})") from None
    except Exception as exc:  # yaml.YAMLError (yaml is imported lazily)
        if type(exc).__module__.startswith("yaml"):
            raise DeploymentConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        raise
    if not isinstance(data, dict):
        raise DeploymentConfigError(f"{path}: expected a table with a 'deployments' list, "
                                    f"got {type(data).__name__}")
    return data


def _errors(exc: ValidationError) -> list[str]:
    """pydantic errors as 'field: reason' strings."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        out.append(f"{loc}: {reason}" if loc else reason)
    return out


def resolve_flow(ref: str) -> Flow:
    """The Prefect flow named by ``module:attribute`` (e.g. ``flows.pipeline:pipeline``)."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"flow {ref!r}: no module {exc.name!r}") from None
    except Exception as exc:
        raise ValueError(f"flow {ref!r}: importing {module_name} failed ({type(exc).__name__}: {exc})") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"flow {ref!r}: module {module_name} has no attribute {attr!r}")
    if not isinstance(obj, Flow):
        raise ValueError(f"flow {ref!r}: {attr} is a {type(obj).__name__}, not a Prefect flow")
    return obj


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger that would print the error we are about to report in our own words."""
    logger = logging.getLogger(logger_name)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def check_parameters(flow: Flow, parameters: dict[str, Any]) -> None:
    """Refuse parameters that are not a complete, well-typed call of ``flow``.

    A deployment's parameters must be a complete call: a scheduled run has no one to supply a
    missing value. Raises ``ValueError`` naming each bad parameter.
    """
    sig = inspect.signature(flow.fn)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in parameters if k not in sig.parameters]
    if unknown and not takes_kwargs:
        raise ValueError(f"parameters: {', '.join(map(repr, unknown))} not accepted by flow "
                         f"{flow.name!r} (it takes {', '.join(sig.parameters)})")
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError

    try:
        with _quiet("prefect.flows"):
            flow.validate_parameters(parameters)
    except (ParameterTypeError, SignatureMismatchError) as exc:
        lines = [ln.strip(" -") for ln in str(exc).splitlines()[1:] if ln.strip()] or [str(exc)]
        raise ValueError("parameters: " + "; ".join(lines)) from None


def _flow_problems(raw: dict[str, Any], exc: ValidationError) -> list[str]:
    """Flow and parameter problems of an entry whose other fields are bad, so one pass reports all."""
    bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    if {"flow", "parameters", "enabled"} & bad or raw.get("enabled", True) is False:
        return []
    if not isinstance(raw.get("flow"), str) or not isinstance(raw.get("parameters", {}), dict):
        return []
    try:
        check_parameters(resolve_flow(raw["flow"]), raw.get("parameters", {}))
    except ValueError as err:
        return [str(err)]
    return []


def load_deployments(path: str | Path) -> tuple[list[ServedDeployment], int | None]:
    """Read and check the deployments file: every entry, every problem.

    Returns the checked entries (disabled ones included, without a flow) and the runner's ``limit``.
    Raises ``DeploymentConfigError`` listing one line per problem, each naming the file and the entry.
    """
    path = Path(path)
    data = _read(path)
    try:
        top = DeploymentsFile.model_validate(data)
    except ValidationError as exc:
        raise DeploymentConfigError("\n".join(f"{path}: {e}" for e in _errors(exc))) from None
    problems: list[str] = []
    checked: list[ServedDeployment] = []
    seen: set[str] = set()
    for i, raw in enumerate(top.deployments):
        label = f"deployment {raw.get('name')!r}" if isinstance(raw, dict) and raw.get("name") else \
            f"deployment #{i + 1}"
        try:
            spec = DeploymentSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{path}: {label}: {e}" for e in _errors(exc)]
            problems += [f"{path}: {label}: {e}" for e in _flow_problems(raw, exc)]
            continue
        if spec.name in seen:
            problems.append(f"{path}: {label}: name used twice in the file")
            continue
        seen.add(spec.name)
        if not spec.enabled:
            checked.append(ServedDeployment(spec=spec))
            continue
        try:
            flow = resolve_flow(spec.flow)
            check_parameters(flow, spec.parameters)
        except ValueError as exc:
            problems.append(f"{path}: {label}: {exc}")
            continue
        checked.append(ServedDeployment(spec=spec, flow=flow))
    if problems:
        raise DeploymentConfigError("\n".join(problems))
    return checked, top.limit


def build_deployment(entry: ServedDeployment):
    """The Prefect ``RunnerDeployment`` of a checked, enabled entry (loaded by module path)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron, Interval

    spec = entry.spec
    schedule = None
    if spec.cron is not None:
        schedule = Cron(spec.cron, timezone=spec.timezone)
    elif spec.interval is not None:
        schedule = Interval(spec.interval, timezone=spec.timezone)
    return entry.flow.to_deployment(
        spec.name, schedule=schedule, parameters=spec.parameters, tags=spec.tags,
        description=spec.description or (inspect.getdoc(entry.flow.fn) or "").split("\n\n")[0] or None,
        concurrency_limit=spec.concurrency_limit, paused=spec.paused,
        entrypoint_type=EntrypointType.MODULE_PATH)


def listing(entries: list[ServedDeployment]) -> str:
    """Human-readable list of the deployments (what ``--dry-run`` prints)."""
    lines = []
    for entry in entries:
        d = entry.describe()
        state = "" if d["enabled"] else "  [disabled: not served]"
        state += "  [paused]" if d["paused"] and d["enabled"] else ""
        lines += [f"{d['deployment']}{state}",
                  f"  flow:       {d['flow']}",
                  f"  schedule:   {d['schedule']}",
                  f"  parameters: {json.dumps(d['parameters'], sort_keys=True, default=str)}"]
        if d["tags"]:
            lines.append(f"  tags:       {', '.join(d['tags'])}")
    return "\n".join(lines)


def register_in_work_pool(deployments: list, work_pool: str, out) -> None:
    """Register the deployments in a work pool of the configured Prefect server (nothing is served
    here): the pool's workers (``prefect worker start --pool NAME``) then run them."""
    from prefect import deploy
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise DeploymentConfigError(f"--work-pool {work_pool}: needs a Prefect server; set PREFECT_API_URL "
                                    "(e.g. prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api)")
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(work_pool)
        except ObjectNotFound:
            raise DeploymentConfigError(f"--work-pool {work_pool}: no such work pool on {api}; create it with "
                                        f"prefect work-pool create {work_pool} --type process") from None
    deploy(*deployments, work_pool_name=work_pool, build=False, push=False, print_next_steps_message=False,
           ignore_warnings=True)
    print(f"registered {len(deployments)} deployment(s) in work pool {work_pool!r} on {api}; "
          f"run them with: prefect worker start --pool {work_pool}", file=out, flush=True)


def serve_config(path: str | Path, *, dry_run: bool = False, work_pool: str | None = None, out=None) -> int:
    """Check the file, print the deployments, and (unless ``dry_run``) serve them until a signal.

    Returns the number of deployments served (or that would be). ``prefect.serve`` handles SIGINT
    and SIGTERM: in-flight runs are cancelled and the schedules paused, so a stopped server does not
    pile up late runs. ``work_pool``: register them in that work pool of the configured server
    instead of serving them here (the file's ``limit`` then does not apply; the pool's does).
    """
    out = out or sys.stdout
    entries, limit = load_deployments(path)
    active = [e for e in entries if e.spec.enabled]
    deployments = [build_deployment(e) for e in active]  # builds schedules: catches errors before serving
    print(listing(entries), file=out)
    print(f"{len(active)} deployment(s) to serve from {path}"
          + (f" ({len(entries) - len(active)} disabled)" if len(entries) > len(active) else ""), file=out)
    if dry_run or not deployments:
        return len(active)
    if work_pool:
        register_in_work_pool(deployments, work_pool, out)
        return len(active)
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = PREFECT_API_URL.value()  # the environment, matflow's prefect_api_url or a Prefect profile
    if api:
        print(f"serving on {api}; Ctrl-C or SIGTERM stops", file=out, flush=True)
        serve(*deployments, limit=limit, print_starting_message=False)
        return len(active)
    log = get_settings().run_dir / "schedules" / "prefect-server.log"
    print(f"no Prefect server configured (PREFECT_API_URL): starting one on 127.0.0.1, log {log}",
          file=out, flush=True)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:  # SIGTERM before Prefect's runner takes it over: an orderly stop, the server included
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        with local_prefect_server(log) as api:
            os.environ["PREFECT_API_URL"] = api  # flow-run processes report to it too
            with temporary_settings(updates={PREFECT_API_URL: api}):
                print(f"serving on {api} (UI: {api.removesuffix('/api')}); Ctrl-C or SIGTERM stops both",
                      file=out, flush=True)
                serve(*deployments, limit=limit, print_starting_message=False)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return len(active)


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a port the system picks."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Block until the server at ``api`` answers its health check; a clear error (with the log's
    tail) if it exits or does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.is_file() else ""
            what = f"exited with code {proc.returncode}" if proc.poll() is not None else \
                f"did not answer in {timeout_s:.0f} s"
            raise RuntimeError(f"Prefect server at {api} {what}; log {log}:\n{tail}")
        time.sleep(0.5)


@contextlib.contextmanager
def local_prefect_server(log: Path, port: int = 4200, timeout_s: float = 180,
                         env: dict[str, str] | None = None) -> Iterator[str]:
    """A ``prefect server start`` on 127.0.0.1 for as long as the block runs; yields its API URL.

    Prefect's embedded per-process server runs no scheduler service, so cron and interval
    schedules would never create runs there; a local server (database and settings in
    ``PREFECT_HOME``, ``~/.prefect`` by default, so history survives restarts) does. It runs in its
    own session: Ctrl-C in the terminal reaches only ``matflow serve``, which stops the server last.
    ``env``: the server's environment (default: this process's); ``PREFECT_API_URL`` is dropped.
    """
    port = _free_port(port)
    api = f"http://127.0.0.1:{port}/api"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PREFECT_API_URL"}
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_healthy(api, proc, timeout_s, log)
        yield api
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.serve CONFIG [--dry-run]``: exit 0, or 2 with one line per problem."""
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="check and list, start nothing")
    parser.add_argument("--work-pool", help="register in this work pool instead of serving here")
    args = parser.parse_args(argv)
    try:
        serve_config(args.config, dry_run=args.dry_run, work_pool=args.work_pool)
    except DeploymentConfigError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
