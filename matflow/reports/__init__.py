"""Self-contained HTML (and PDF) reports that lab teams read: figures, tables with units, provenance."""

from __future__ import annotations

from matflow.reports.hea import render_screening_report
from matflow.reports.html import (
    ChromiumNotFoundError,
    PdfRenderError,
    ReportInputError,
    dataframe_to_html,
    external_resources,
    figure_to_png_data_uri,
    figure_to_svg,
    find_chromium,
    image_file_to_html,
    render_template,
    to_pdf,
    write_html,
)
from matflow.reports.sro import render_sro_report

__all__ = [
    "ChromiumNotFoundError",
    "PdfRenderError",
    "ReportInputError",
    "dataframe_to_html",
    "external_resources",
    "figure_to_png_data_uri",
    "figure_to_svg",
    "find_chromium",
    "image_file_to_html",
    "render_screening_report",
    "render_sro_report",
    "render_template",
    "to_pdf",
    "write_html",
]
