"""Final flow-run states that tell the truth about a batch.

A batch flow whose every input failed must not show a green "Completed" in the Prefect UI, and one
that partly failed must say how many failed where an operator looks first (the state message and
an artifact). ``finish_batch`` turns a library batch summary
(``{"n_ok", "n_failed", "failures": [{"source", "reason"}], ...}``) into that state.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import re
from collections.abc import Sequence

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

MAX_LISTED_FAILURES = 200  # an artifact stays readable; the full list is in the returned summary


class AllInputsFailed(RuntimeError):
    """Raised by a batch flow (as its Failed state's result) when not one input succeeded."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def artifact_key(kind: str) -> str:
    """A Prefect artifact key for ``kind`` (keys allow only lowercase letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-summary".lower()).strip("-")


def _cell(text: object) -> str:
    """Text safe inside one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def state_message(summary: dict) -> str:
    """The one-line outcome of a batch: "all N inputs failed" or "n ok, m failed"."""
    n_ok, n_failed = int(summary["n_ok"]), int(summary["n_failed"])
    if n_ok == 0:
        return f"all {n_failed} inputs failed" if n_failed else "no inputs to run"
    return f"{n_ok} ok, {n_failed} failed"


def batch_markdown(title: str, summary: dict, lines: Sequence[str] = ()) -> str:
    """Markdown report of a batch: counts, the flow's own lines, then a table of failed inputs."""
    failures = summary.get("failures", [])
    text = [f"# {title}", f"**{state_message(summary)}**", ""]
    if summary.get("outdir"):
        text.append(f"- output: `{summary['outdir']}`")
    text += list(lines)
    if failures:
        text += ["", f"## Failed inputs ({len(failures)})", "", "| input | reason |", "|---|---|"]
        text += [f"| `{_cell(f['source'])}` | {_cell(f['reason'])} |"
                 for f in failures[:MAX_LISTED_FAILURES]]
        if len(failures) > MAX_LISTED_FAILURES:
            text.append(f"\n… and {len(failures) - MAX_LISTED_FAILURES} more (see the flow's result)")
    return "\n".join(text)


def finish_batch(kind: str, summary: dict, lines: Sequence[str] = (), *,
                 title: str | None = None) -> State:
    """Log the failures, publish the summary artifact and return the flow's final state.

    Return the result from the flow body (``return finish_batch(...)``): the run ends Completed
    with message "n ok, m failed" and the summary as its result when anything succeeded, else
    Failed with message "all N inputs failed" (calling the flow then raises ``AllInputsFailed``,
    which carries the summary).
    """
    logger = get_run_logger()
    for failure in summary.get("failures", []):
        logger.warning("failed %s: %s", failure["source"], failure["reason"])
    message = state_message(summary)
    create_markdown_artifact(batch_markdown(title or kind, summary, lines), key=artifact_key(kind),
                             description=f"{title or kind}: {message}")
    if int(summary["n_ok"]) == 0:
        return Failed(message=message, data=AllInputsFailed(message, summary))
    return Completed(message=message, data=summary)


def result_or_failure(future, **fields) -> dict:
    """A mapped task's result, or ``{"ok": False, **fields, "reason": ...}`` when the task itself
    failed or crashed (e.g. a killed worker), so one lost task becomes one failed item."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result()
    return {"ok": False, **fields, "reason": f"task {state.name.lower()}: {state.message or 'no message'}"}
