"""Self-contained HTML reports: Jinja2 templates, inline figures and tables, PDF via Chromium.

A report is read on lab PCs, attached to e-mails and archived next to the data it describes, so
it must open with no network: CSS is inline, matplotlib figures are inline SVG (or base64 PNG),
and a Content-Security-Policy in every page forbids loading anything from elsewhere. Links in
citations stay plain ``<a href>`` anchors, which load nothing until clicked.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from matflow.outputs import atomic_write, atomic_write_text, check_output_file

__all__ = [
    "ChromiumNotFoundError",
    "PdfRenderError",
    "ReportInputError",
    "dataframe_to_html",
    "external_resources",
    "figure_to_png_data_uri",
    "figure_to_svg",
    "find_chromium",
    "flatten_mapping",
    "format_number",
    "image_file_to_html",
    "render_template",
    "to_pdf",
    "utc_now",
    "write_html",
]

TEMPLATE_DIR = Path(__file__).parent / "templates"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class ReportInputError(ValueError):
    """A report input that cannot be rendered, with the input's name and the reason."""

    def __init__(self, what: str, reason: str):
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class ChromiumNotFoundError(FileNotFoundError):
    """No headless Chromium to print the PDF with."""


class PdfRenderError(RuntimeError):
    """Chromium ran but did not produce a PDF."""


# --------------------------------------------------------------------------- templates


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    return env


def render_template(name: str, **context: Any) -> str:
    """Render one template of ``matflow/reports/templates``; unknown variables are errors.

    ``StrictUndefined`` makes a misspelt variable fail the render instead of silently printing
    an empty cell in a report somebody will act on.
    """
    return _environment().get_template(name).render(**context)


def write_html(html: str, path: str | os.PathLike) -> Path:
    """Write a rendered page atomically (a killed run leaves the old report or the new one)."""
    path = check_output_file(path)
    return atomic_write_text(path, html)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- numbers and tables


def format_number(value: Any, digits: int = 3) -> str:
    """Short text for a table cell: fixed decimals, '–' for missing, integers kept whole."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return "–" if math.isnan(float(value)) else str(value)
        magnitude = abs(float(value))
        if magnitude != 0 and (magnitude >= 1e5 or magnitude < 10 ** (-digits)):
            return f"{float(value):.{max(digits - 1, 1)}e}"
        return f"{float(value):.{digits}f}"
    return str(value)


def _header_label(column: str, units: Mapping[str, str]) -> str:
    unit = units.get(column)
    return f"{column} ({unit})" if unit else column


def dataframe_to_html(
    frame: pd.DataFrame,
    *,
    units: Mapping[str, str] | None = None,
    digits: Mapping[str, int] | int = 3,
    row_classes: Sequence[str] | None = None,
    cell_classes: Mapping[tuple[int, str], str] | None = None,
    links: Mapping[str, str | Callable[[str], str | None]] | None = None,
    caption: str | None = None,
    css_class: str = "data",
) -> Markup:
    """An escaped HTML table with each unit in its column header.

    ``units`` maps column -> unit text ('kJ/mol'; use '–' for dimensionless quantities so the
    reader sees the absence of a unit is deliberate). ``digits`` sets decimals per column.
    ``links`` maps a column to a URL template such as ``'https://doi.org/{}'`` (or a function of
    the cell text returning a URL or None) for cells that are citations; anchors load nothing,
    so the page stays self-contained.
    """
    units = units or {}
    links = links or {}
    cell_classes = cell_classes or {}
    if row_classes is not None and len(row_classes) != len(frame):
        raise ReportInputError("row_classes", f"{len(row_classes)} classes for {len(frame)} rows")
    esc = html_lib.escape
    parts = [f'<table class="{esc(css_class)}">']
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>")
    for column in frame.columns:
        parts.append(f'<th scope="col">{esc(_header_label(str(column), units))}</th>')
    parts.append("</tr></thead><tbody>")
    for i, (_, row) in enumerate(frame.iterrows()):
        cls = f' class="{esc(row_classes[i])}"' if row_classes is not None and row_classes[i] else ""
        parts.append(f"<tr{cls}>")
        for column in frame.columns:
            value = row[column]
            ndig = digits if isinstance(digits, int) else digits.get(str(column), 3)
            text = format_number(value, ndig)
            numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
                value, bool | np.bool_
            )
            classes = ["num"] if numeric else []
            if (i, str(column)) in cell_classes:
                classes.append(cell_classes[(i, str(column))])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            body = esc(text)
            link = links.get(str(column))
            if link is not None and text not in ("", "–"):
                url = link(text) if callable(link) else link.format(text)
                if url:
                    body = f'<a href="{esc(url)}">{body}</a>'
            parts.append(f"<td{attr}>{body}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return Markup("".join(parts))


def flatten_mapping(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts/lists as (dotted key, text) rows for a key–value table."""
    if isinstance(value, Mapping):
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows.extend(flatten_mapping(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list | tuple) and any(isinstance(v, Mapping | list | tuple) for v in value):
        rows = []
        for i, inner in enumerate(value):
            rows.extend(flatten_mapping(inner, f"{prefix}[{i}]"))
        return rows
    if isinstance(value, list | tuple | set | frozenset):
        return [(prefix, ", ".join(str(v) for v in value))]
    if isinstance(value, float):
        return [(prefix, f"{value:g}")]
    return [(prefix, "" if value is None else str(value))]


# --------------------------------------------------------------------------- figures

_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.DOTALL)


def figure_to_svg(figure: Any, *, title: str | None = None, close: bool = True) -> Markup:
    """A matplotlib figure as inline ``<svg>`` markup, ready to drop into the page.

    The XML prolog, the RDF metadata and the namespace declarations are dropped: HTML5 parses
    inline SVG without them, and they are URLs a reader (or a self-containment check) would
    otherwise mistake for resources to fetch. ``title`` becomes the accessible name.
    """
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    if close:
        plt.close(figure)
    svg = buffer.getvalue()
    match = _SVG_START.search(svg)
    if match is None:
        raise ReportInputError("figure", "matplotlib produced no <svg> element")
    svg = _METADATA.sub("", svg[match.start():])
    head_end = svg.index(">")
    head = _XMLNS.sub("", svg[:head_end])
    attrs = ' role="img" class="figure"'
    if title:
        attrs += f' aria-label="{html_lib.escape(title)}"'
    return Markup(head + attrs + svg[head_end:])


def figure_to_png_data_uri(figure: Any, *, dpi: int = 150, close: bool = True) -> str:
    """A matplotlib figure as a base64 PNG ``data:`` URI, for figures too dense for SVG."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def image_file_to_html(path: str | os.PathLike, *, alt: str) -> Markup:
    """Embed an existing figure file (SVG inline, raster as base64) so the page needs no folder."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"figure {path}", "file not found")
    suffix = path.suffix.lower()
    if suffix == ".svg":
        svg = path.read_text(encoding="utf-8", errors="replace")
        match = _SVG_START.search(svg)
        if match is None:
            raise ReportInputError(f"figure {path}", "no <svg> element in the file")
        svg = _METADATA.sub("", svg[match.start():])
        head_end = svg.index(">")
        return Markup(
            _XMLNS.sub("", svg[:head_end])
            + f' role="img" class="figure" aria-label="{html_lib.escape(alt)}"'
            + svg[head_end:]
        )
    if suffix not in _IMAGE_TYPES:
        raise ReportInputError(
            f"figure {path}", f"unsupported type {suffix!r}; use .svg, .png, .jpg or .gif"
        )
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return Markup(
        f'<img class="figure" alt="{html_lib.escape(alt)}" '
        f'src="data:{_IMAGE_TYPES[suffix]};base64,{data}">'
    )


# --------------------------------------------------------------------------- self-containment

_RESOURCE_ATTRS = {"src", "href", "xlink:href", "srcset", "poster", "data", "action", "background"}
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]+)", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import\s+['\"]?([^'\";\s]+)", re.IGNORECASE)


def _is_external(url: str) -> bool:
    url = url.strip().lower()
    return not (url.startswith("data:") or url.startswith("#") or url == "")


class _ResourceFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value is None:
                continue
            if name == "style":
                self._scan_css(value, f"<{tag} style>")
            elif name in _RESOURCE_ATTRS and not (tag == "a" and name == "href"):
                if _is_external(value):
                    self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._scan_css(data, "<style>")

    def _scan_css(self, css: str, where: str) -> None:
        for pattern in (_CSS_URL, _CSS_IMPORT):
            for url in pattern.findall(css):
                if _is_external(url):
                    self.found.append(f"{where} {url}")


def external_resources(html: str) -> list[str]:
    """Everything in ``html`` that a browser would fetch from outside the file (empty = good).

    Anchors (``<a href>``) are citations the reader may follow and load nothing by themselves;
    every other URL in an attribute or in CSS must be a ``data:`` URI or a ``#fragment``.
    """
    finder = _ResourceFinder()
    finder.feed(html)
    finder.close()
    return finder.found


# --------------------------------------------------------------------------- PDF


def find_chromium(executable: str | os.PathLike | None = None) -> Path:
    """The Chromium binary: the argument, then ``$MATFLOW_CHROMIUM``, then the usual names on PATH."""
    candidates: list[str] = []
    if executable is not None:
        candidates.append(str(executable))
    elif os.environ.get("MATFLOW_CHROMIUM"):
        candidates.append(os.environ["MATFLOW_CHROMIUM"])
    else:
        candidates.extend(CHROMIUM_NAMES)
        candidates.append("/usr/bin/chromium")
    for name in candidates:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ChromiumNotFoundError(
        f"no Chromium found (tried {', '.join(candidates)}); PDF reports need a headless "
        "Chromium: install it (Debian/Ubuntu: `apt-get install chromium`) or set MATFLOW_CHROMIUM "
        "to the browser binary. The HTML report does not need it."
    )


def to_pdf(
    html_path: str | os.PathLike,
    pdf_path: str | os.PathLike,
    *,
    chromium: str | os.PathLike | None = None,
    timeout_s: float = 120.0,
) -> Path:
    """Print an HTML report to PDF with headless Chromium (what the reader's browser would print).

    The PDF is written atomically. Chromium runs with a throw-away profile and with networking
    features off, so printing never reaches the network either.
    """
    html_path = Path(html_path)
    if not html_path.is_file():
        raise ReportInputError(f"html_path {html_path}", "file not found")
    pdf_path = check_output_file(pdf_path)
    binary = find_chromium(chromium)

    def _print(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="matflow-chromium-") as profile:
            command = [
                str(binary),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={tmp}",
                html_path.resolve().as_uri(),
            ]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired as error:
                raise PdfRenderError(
                    f"Chromium did not finish printing {html_path} within {timeout_s:g} s"
                ) from error
        head = tmp.read_bytes()[:5] if tmp.exists() else b""
        if done.returncode != 0 or head != b"%PDF-":
            tail = (done.stderr or "").strip().splitlines()[-5:]
            raise PdfRenderError(
                f"Chromium (exit {done.returncode}) wrote no PDF for {html_path}: "
                + " | ".join(tail)
            )

    return atomic_write(pdf_path, _print)
