"""Flows meant to run on a schedule: ``retrain_if_changed`` retrains a model only when its dataset changed.

A nightly retraining should cost nothing on the nights nothing changed. The flow hashes the dataset's
files (SHA-256 of each file's bytes, under ``MATFLOW_DATA_DIR``) and compares the result with the hash
recorded for the model's current version, in ``<run_dir>/schedules/retrain-<model>.json``:

- same hash, same current version: nothing to do; the run ends Completed with message "unchanged";
- different hash: the ``train`` flow runs as a subflow, registers the next version, and the hash
  taken *before* training is recorded with it (a file that changes during training is seen as
  changed on the next run, never missed);
- no record for the current version (a model trained by hand, or the first scheduled run):
  ``if_unrecorded="record"`` (default) records the present hash as the baseline of the current
  version without training, ``"retrain"`` trains as if changed. With no model at all, it trains.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.states import Completed

from matflow.outputs import atomic_write_text
from matflow.provenance import file_sha256
from matflow.settings import get_settings

DATASET_FILES: dict[str, tuple[str, ...]] = {
    "matbench_phonons": ("phonons_petretto2018/matbench_phonons.json.gz",),
    "alexandria_cv300": ("alexandria_phonon_cv300/alexandria_binary_phonon_cv300.json.gz",),
    "vib_thermo_5": ("phonons_petretto2018/modnet_vib_thermo_5materials.json",),
}
"""Files (relative to the data directory) each trainable dataset is read from."""


def dataset_files(dataset: str, files: list[str] | None = None) -> list[Path]:
    """The files behind ``dataset`` (or the given ``files``/glob patterns, relative to the data
    directory); a missing file is an error naming it, so a moved dataset is not "unchanged"."""
    root = get_settings().data_dir
    if files is None:
        if dataset not in DATASET_FILES:
            raise ValueError(f"dataset {dataset!r}: no known files; give files=[...] "
                             f"(known datasets: {', '.join(DATASET_FILES)})")
        files = list(DATASET_FILES[dataset])
    paths: list[Path] = []
    for pattern in files:
        candidate = Path(pattern).expanduser()
        candidate = candidate if candidate.is_absolute() else root / candidate
        if any(ch in pattern for ch in "*?["):
            matched = sorted(p for p in candidate.parent.glob(candidate.name) if p.is_file())
            if not matched:
                raise ValueError(f"dataset {dataset!r}: {candidate} matches no file")
            paths += matched
        elif candidate.is_file():
            paths.append(candidate)
        else:
            raise ValueError(f"dataset {dataset!r}: file {candidate} not found")
    return paths


def files_sha256(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of each file's bytes, keyed by its path."""
    return {str(path): file_sha256(path) for path in paths}


def combined_sha256(file_hashes: dict[str, str]) -> str:
    """One hash over the files' contents (names excluded: moving the data directory is no change)."""
    h = hashlib.sha256()
    for digest in sorted(file_hashes.values()):
        h.update(digest.encode())
    return h.hexdigest()


def record_path(model: str, state_dir: str | None = None) -> Path:
    """Where the dataset hash of the model's current version is recorded."""
    base = Path(state_dir) if state_dir else get_settings().run_dir / "schedules"
    return base / f"retrain-{model}.json"


def read_record(path: Path) -> dict | None:
    """The record, or None when missing or unreadable (then the current version counts as unrecorded)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"version", "sha256"} <= record.keys() else None


def write_record(path: Path, *, model: str, version: str, dataset: str, sha256: str,
                 files: dict[str, str], reason: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(
        {"model": model, "version": version, "dataset": dataset, "sha256": sha256, "files": files,
         "reason": reason, "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        indent=1) + "\n")


def current_version(model: str, models_dir: str | None = None) -> str | None:
    """The newest registered version of ``model`` (None when it has none)."""
    from matflow.ml.registry import list_versions

    versions = list_versions(model, models_dir)
    return versions[-1] if versions else None


def decide(current_sha: str, version: str | None, record: dict | None,
           if_unrecorded: str) -> Literal["unchanged", "retrain", "record"]:
    """What the run does, from the current hash, the model's current version and the record."""
    if version is None:
        return "retrain"
    if record is None or record.get("version") != version:
        return "retrain" if if_unrecorded == "retrain" else "record"
    return "unchanged" if record.get("sha256") == current_sha else "retrain"


@flow(name="retrain_if_changed", log_prints=True)
def retrain_if_changed(dataset: str, name: str | None = None, files: list[str] | None = None,
                       preset: str = "structure", config: str | dict = "default",
                       evaluate: bool = False, search: bool = False, n_jobs: int = 1,
                       limit: int | None = None, models_dir: str | None = None,
                       state_dir: str | None = None,
                       if_unrecorded: Literal["record", "retrain"] = "record"):
    """Retrain ``name`` (default: the dataset's name) on ``dataset`` only if the dataset's files
    changed since its current version was recorded; see the module docstring for what is compared."""
    from flows.train import train

    logger = get_run_logger()
    model = name or dataset
    hashes = files_sha256(dataset_files(dataset, files))
    sha = combined_sha256(hashes)
    path = record_path(model, state_dir)
    record = read_record(path)
    version = current_version(model, models_dir)
    action = decide(sha, version, record, if_unrecorded)
    result = {"action": action, "model": model, "dataset": dataset, "version": version,
              "dataset_sha256": sha, "recorded_sha256": record.get("sha256") if record else None,
              "record": str(path)}
    if action == "unchanged":
        logger.info("%s: dataset %s unchanged (sha256 %s…) since %s %s", model, dataset, sha[:12], model, version)
        return Completed(message="unchanged", data=result)
    if action == "record":
        write_record(path, model=model, version=version, dataset=dataset, sha256=sha, files=hashes,
                     reason="baseline: recorded without training")
        logger.info("%s %s had no recorded dataset hash; recorded %s… as its baseline", model, version, sha[:12])
        return Completed(message=f"baseline recorded for {model} {version}", data=result)
    logger.info("%s: dataset %s changed (sha256 %s… vs %s); retraining", model, dataset, sha[:12],
                (result["recorded_sha256"] or "none recorded")[:12])
    summary = train(dataset=dataset, preset=preset, config=config, name=model, evaluate=evaluate,
                    search=search, n_jobs=n_jobs, limit=limit, models_dir=models_dir)
    write_record(path, model=model, version=summary["version"], dataset=dataset, sha256=sha, files=hashes,
                 reason=f"trained on this data (previous version: {version or 'none'})")
    result.update(version=summary["version"], previous_version=version, path=summary["path"],
                  n_train=summary["n_train"], n_failed=summary["n_failed"])
    return Completed(message=f"retrained: {model} {summary['version']}", data=result)


if __name__ == "__main__":  # pragma: no cover
    print(retrain_if_changed(dataset="matbench_phonons"))
