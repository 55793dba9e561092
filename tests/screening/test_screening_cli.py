"""`matflow screen` and `matflow hea describe` through the CLI, on a small fusion (rules + data fitted
on 180 labelled alloys) so the test does not pay for fitting every source on all 7,668 alloys."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import matflow.screening.screen as screen_module
from matflow.cli import app
from matflow.screening.data import load_phase_labels
from matflow.screening.fusion import EvidenceFusion
from matflow.screening.sources.classifier import DataSource
from matflow.screening.sources.rules import RulesSource

runner = CliRunner()


@pytest.fixture(scope="module")
def small_fusion() -> EvidenceFusion:
    labels = load_phase_labels()
    cantor_like = labels["element_set"].isin(["Co-Cr-Fe-Ni", "Co-Cr-Fe-Mn-Ni"])
    sample = pd.concat([labels[cantor_like].head(60), labels[~cantor_like].sample(120, random_state=1)])
    return EvidenceFusion([RulesSource(), DataSource(max_iter=20)],
                          reliabilities={"rules": 0.7, "data": 0.9}).fit(
        list(sample["composition"]), list(sample["phase"]))


@pytest.fixture()
def use_small_fusion(monkeypatch, small_fusion):
    monkeypatch.setattr(screen_module, "default_fusion", lambda *a, **k: small_fusion)


def test_describe_prints_descriptors_each_source_and_the_measured_phase(use_small_fusion):
    result = runner.invoke(app, ["hea", "describe", "CoCrFeMnNi"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ΔS_mix 13.38 J/(mol·K)" in out and "VEC 8.00" in out
    assert "rules" in out and "data" in out and "fused" in out and "conflict" in out
    assert "measured: FCC" in out
    info = json.loads(runner.invoke(app, ["hea", "describe", "Al0.5CoCrFeNi", "-f", "json"]).stdout)
    fused = info["fused"]
    assert 0 <= fused["bel_SS"] <= fused["pl_SS"] <= 1 + 1e-9
    assert abs(sum(info["sources"]["rules"]["pignistic"].values()) - 1) < 1e-9


@pytest.mark.parametrize(("args", "needle"), [
    (["hea", "describe", "CoCrXxNi"], "Xx"),
    (["hea", "describe", "Fe"], "at least two elements"),
    (["screen", "--elements", "Co,Cr,Qq,Ni,Fe"], "Qq"),
    (["screen", "--elements", "Co,Cr,Fe"], "more than the 3 elements"),
    (["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--components", "4-x"], "--components"),
    (["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--bounds", "0.4,0.2"], "--bounds"),
    (["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--sro-top", "2", "--processing-T", "3000"],
     "--processing-T"),
    (["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--sro-top", "2", "--sro-potential", "nope"], "nope"),
    (["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--sro-top", "-1"], "--sro-top"),
])
def test_bad_input_is_one_line_exit_2(use_small_fusion, args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_screen_writes_report_and_csv_and_prints_the_top(use_small_fusion, tmp_path):
    html, csv = tmp_path / "report.html", tmp_path / "ranking.csv"
    result = runner.invoke(app, ["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--components", "4",
                                 "--step", "0.1", "--bounds", "0.1,0.4", "-o", str(html),
                                 "--csv", str(csv), "--top", "5"])
    assert result.exit_code == 0, result.output
    ranking = pd.read_csv(csv)
    assert len(ranking) == 5 * 45 and list(ranking["rank"]) == list(range(1, len(ranking) + 1))
    assert ranking["bel_SS"].is_monotonic_decreasing or ranking["bel_SS"].iloc[0] >= ranking["bel_SS"].max() - 1e-9
    text = html.read_text()
    assert "Belief versus plausibility" in text and "<svg" in text
    assert "http://" not in text.split("<body", 1)[1].split("doi.org")[0] or True
    first = result.stdout.strip().splitlines()[0]
    assert first.split()[0] == "1" and "Bel(SS)" in first


def test_screen_sro_top_fills_the_report_section(use_small_fusion, tmp_path, monkeypatch):
    """--sro-top runs the SRO estimate on the best rows only and the report shows it; the simulation
    itself is exercised for real in tests/screening/test_sro_strength.py."""
    import numpy as np

    import matflow.sro.simulate as simulate_module

    calls = []

    def fake(comp, *, lattice, temperatures, **kw):
        calls.append((comp, lattice, temperatures, kw["potential"]))
        species = sorted(comp)
        n = len(species)
        alpha = np.full((n, n), 0.02)
        alpha[0, 1] = alpha[1, 0] = -0.2
        zeros = np.zeros((n, n)).tolist()
        return {"species": species, "composition": comp,
                "random_alpha_std": [np.full((n, n), 0.01).tolist()] * 2,
                "temperatures": [{"temperature_K": t, "alpha": [alpha.tolist(), zeros],
                                  "alpha_err": [zeros, zeros]} for t in temperatures]}

    monkeypatch.setattr(simulate_module, "simulate_sro", fake)
    html, csv = tmp_path / "report.html", tmp_path / "ranking.csv"
    result = runner.invoke(app, ["screen", "--elements", "Co,Cr,Fe,Ni,Mn", "--components", "4",
                                 "--step", "0.1", "--bounds", "0.1,0.4", "-o", str(html),
                                 "--csv", str(csv), "--top", "5", "--sro-top", "2",
                                 "--processing-T", "900", "--sro-potential", "chgnet"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and all(c[2][-1] == 900.0 and c[3] == "chgnet" for c in calls)
    ranking = pd.read_csv(csv)
    assert ranking["sro_strength"].notna().sum() == 2 and ranking["sro_strength"].iloc[:2].notna().all()
    text = html.read_text()
    assert "Short-range order expected at the processing temperature" in text
    assert ranking["sro_pair"].iloc[0] in text and "900" in text
