"""The SRO analysis and HEA screening flows on Prefect's ephemeral server: one task per file, a
failure report, the report written and the ranking's head published."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

DUMP = Path(__file__).resolve().parents[2] / "data" / "sro_warren_cowley" / "fcc_ternary_4000atoms.dump.gz"


def test_sro_analyze_flow_reports_good_and_bad_files(tmp_path):
    from flows.sro import sro_analyze
    from flows.states import AllInputsFailed

    bad = tmp_path / "empty.dump"
    bad.write_text("")
    summary = sro_analyze(inputs=[str(DUMP), str(bad)], lattice="fcc")
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    assert summary["failures"][0]["source"].endswith("empty.dump")
    good = [r for r in summary["records"] if r["ok"]][0]
    assert abs(good["warren_cowley"]["alpha"][0][0][0] - 0.33578938) < 1e-6
    with pytest.raises(AllInputsFailed):
        sro_analyze(inputs=[str(bad)], lattice="fcc")


def test_screen_hea_flow_writes_report_and_returns_top(tmp_path, monkeypatch):
    import matflow.screening.screen as screen_module
    from flows.screening import screen_hea
    from matflow.screening.data import load_phase_labels
    from matflow.screening.fusion import EvidenceFusion
    from matflow.screening.sources.rules import RulesSource

    labels = load_phase_labels().sample(150, random_state=0)
    fusion = EvidenceFusion([RulesSource()], reliabilities={"rules": 0.8}).fit(
        list(labels["composition"]), list(labels["phase"]))
    monkeypatch.setattr(screen_module, "default_fusion", lambda *a, **k: fusion)
    report, csv = tmp_path / "report.html", tmp_path / "ranking.csv"
    out = screen_hea(elements=["Co", "Cr", "Fe", "Ni", "Mn"], components=[4], step=0.1,
                     bounds=(0.1, 0.4), report=str(report), top=5, csv=str(csv))
    assert out["n_candidates"] == 5 * 45 and len(out["top"]) == 5
    assert [row["rank"] for row in out["top"]] == [1, 2, 3, 4, 5]
    assert report.is_file() and "Belief versus plausibility" in report.read_text()
    assert len(pd.read_csv(csv)) == 225
