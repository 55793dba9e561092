"""The run directory of one pipeline run: per-item results, tables, structures, manifest, report.

Layout::

    manifest.json           inputs hash, config, versions, models, timings, failures, attempts
    items/<step>/<key>.json one finished item, keyed by the content hash of its inputs
    structures/candidates/  CIF of every candidate;  structures/relaxed/  CIF after relaxation
    *.parquet               the assembled tables;    report.html

Every item file is written atomically (temporary file, fsync, rename), so a run killed at any moment
leaves finished items whole and unfinished ones absent; a rerun loads the finished ones. Each item
records the attempt that computed it, so the manifest can say, per attempt, which items were
computed and which were loaded, also for an attempt that was killed before writing its summary.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matflow.outputs import atomic_write_text, check_output_dir

__all__ = ["RunDir", "content_key", "ItemFailed"]

ITEM_FORMAT = 1


class ItemFailed(RuntimeError):
    """A per-item step failed; ``reason`` is recorded (and reused on a rerun) as the item's failure."""

    def __init__(self, step: str, item: str, reason: str):
        super().__init__(f"{step} {item}: {reason}")
        self.step, self.item, self.reason = step, item, reason


def _jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def content_key(step: str, *parts: Any) -> str:
    """sha256 (20 hex digits) of a step name and the canonical JSON of its inputs."""
    text = json.dumps([step, *map(_jsonable, parts)], sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunDir:
    """One run's folder. ``attempt`` names this process's attempt (a fresh id per ``RunDir``
    unless given: a flow's tasks in other processes pass the flow's id)."""

    def __init__(self, path: str | os.PathLike, attempt: str | None = None):
        self.path = check_output_dir(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.attempt = attempt or uuid.uuid4().hex[:12]

    # ---------------------------------------------------------------- items
    def item_path(self, step: str, key: str) -> Path:
        return self.path / "items" / step / f"{key}.json"

    def load_item(self, step: str, key: str) -> dict | None:
        """The stored record of a finished item, or None (an unreadable file counts as unfinished)."""
        path = self.item_path(step, key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if record.get("format") == ITEM_FORMAT else None

    def item(self, step: str, key: str, label: str, compute: Callable[[], Any]) -> dict:
        """The item's stored record, computing and storing it first when absent.

        The record is ``{"ok", "result" | "reason", "attempt", "seconds", ...}`` and is what the
        caller uses either way, so a computed and a loaded item give identical outputs. An exception
        from ``compute`` is stored as a failure with its reason (a rerun does not retry a failed
        item; delete its file to retry it).
        """
        record = self.load_item(step, key)
        if record is not None:
            return record
        t0 = time.perf_counter()
        try:
            result = compute()
            record = {"ok": True, "result": _jsonable(result)}
        except Exception as exc:  # one bad item becomes a recorded failure
            reason = exc.reason if isinstance(exc, ItemFailed) else f"{type(exc).__name__}: {exc}"
            record = {"ok": False, "reason": " ".join(str(reason).split())[:2000]}
        record.update(format=ITEM_FORMAT, step=step, key=key, item=label, attempt=self.attempt,
                      seconds=round(time.perf_counter() - t0, 3), finished=_now())
        text = json.dumps(record, sort_keys=True, allow_nan=False, default=str)
        atomic_write_text(self.item_path(step, key), text)
        return json.loads(text)

    def finished_items(self) -> dict[str, str]:
        """``"<step>/<key>" -> attempt`` of every finished item on disk."""
        out = {}
        for path in sorted((self.path / "items").glob("*/*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out[f"{path.parent.name}/{path.stem}"] = str(record.get("attempt"))
        return out

    # ---------------------------------------------------------------- manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_manifest(self, manifest: dict) -> Path:
        return atomic_write_text(self.manifest_path,
                                 json.dumps(_jsonable(manifest), indent=1, sort_keys=False))

    def begin_attempt(self, inputs_hash: str, config: dict) -> dict:
        """Record this attempt as running; an earlier attempt still marked running was killed, and
        gets the items it finished (from the item files) as its ``computed`` list."""
        manifest = self.read_manifest()
        if manifest.get("inputs_hash") not in (None, inputs_hash):
            raise ValueError(f"run dir {self.path}: holds a run of other inputs "
                             f"({manifest.get('inputs_hash')}, this config {inputs_hash}); "
                             "give another run dir")
        finished = self.finished_items()
        attempts = manifest.get("attempts", [])
        for previous in attempts:
            if previous.get("status") == "running":
                previous["status"] = "interrupted"
                previous["computed"] = sorted(k for k, a in finished.items() if a == previous["id"])
        attempts.append({"id": self.attempt, "started": _now(), "status": "running",
                         "pid": os.getpid()})
        manifest.update(inputs_hash=inputs_hash, config=config, attempts=attempts,
                        status="running")
        self.write_manifest(manifest)
        return manifest

    def end_attempt(self, manifest: dict, used: list[str], status: str) -> dict:
        """Close this attempt: which of the ``used`` items (``step/key``) it computed or loaded."""
        finished = self.finished_items()
        computed = sorted(k for k in used if finished.get(k) == self.attempt)
        loaded = sorted(k for k in used if k in finished and finished[k] != self.attempt)
        attempt = next(a for a in manifest["attempts"] if a["id"] == self.attempt)
        attempt.update(finished=_now(), status=status, computed=computed, loaded=loaded,
                       n_computed=len(computed), n_loaded=len(loaded))
        manifest["status"] = status
        self.write_manifest(manifest)
        return manifest
