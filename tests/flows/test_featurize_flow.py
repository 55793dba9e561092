"""The featurize flow runs on Prefect's ephemeral server and keeps good results when some files are bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent.parent / "data"


def test_featurize_flow_on_files(tmp_path):
    from flows.featurize import featurize

    for src in [DATA / "good" / "NaCl.cif", DATA / "good" / "Fe_bcc.json", DATA / "bad" / "empty.cif"]:
        shutil.copy(src, tmp_path / src.name)
    out = tmp_path / "features.parquet"
    summary = featurize(inputs=[str(tmp_path)], output=str(out), preset="structure")
    assert summary["n_ok"] == 2 and summary["n_failed"] == 1
    assert summary["failures"][0]["reason"] == "empty file"
    table = pd.read_parquet(out)
    assert set(table["status"]) == {"ok", "failed"}


def test_featurize_flow_on_dataset_slice(tmp_path):
    from flows.featurize import featurize

    summary = featurize(dataset="alexandria_cv300", output=str(tmp_path / "a.parquet"),
                        preset="composition", limit=5)
    assert summary["n_ok"] == 5 and summary["n_failed"] == 0
