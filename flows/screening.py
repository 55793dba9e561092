"""Prefect flow ``screen_hea``: rank candidate high-entropy alloys and write the lab report.

All logic is in ``matflow.screening`` and ``matflow.reports``; the flow publishes the ranking's head
as a Prefect table artifact so the result is visible in the UI without opening the report.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact

ARTIFACT_COLUMNS = ["rank", "composition", "bel_SS", "pl_SS", "gap_SS", "predicted", "conflict",
                    "known_phase"]


@task(name="hea-screen")
def screen_task(elements: list[str], options: dict) -> object:
    from matflow.screening.screen import screen

    return screen(elements, **options)


@task(name="hea-report")
def report_task(result, html: str, pdf: str | None, top: int) -> str:
    from matflow.reports.hea import render_screening_report

    Path(html).parent.mkdir(parents=True, exist_ok=True)
    return str(render_screening_report(result, html, pdf_path=pdf, top=top))


@flow(name="screen_hea", log_prints=True)
def screen_hea(elements: list[str], components: list[int] = (4, 5), step: float = 0.05,
               bounds: tuple[float, float] = (0.05, 0.35),
               report: str = "out/hea_screening.html", pdf: str | None = None, top: int = 20,
               csv: str | None = None) -> dict:
    """Enumerate candidates from ``elements``, fuse the evidence, rank, and write the report."""
    result = screen_task(list(elements), dict(components=list(components), step=step,
                                              bounds=tuple(bounds)))
    html = report_task(result, report, pdf, top)
    if csv:
        result.write_csv(csv)
    head = result.table.head(top)
    rows = [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in head[[c for c in ARTIFACT_COLUMNS if c in head]].to_dict(orient="records")]
    create_table_artifact(rows, key="hea-screening-top",
                          description=f"Top {len(rows)} of {len(result.table)} candidates from "
                                      f"{', '.join(elements)}; report at {html}")
    print(f"ranked {len(result.table)} candidates; report: {html}")
    return {"report": html, "n_candidates": len(result.table), "top": rows}
