"""The ``generate`` flow on Prefect's ephemeral server: CDVAE samples relaxed, predicted and
screened by per-sample tasks, ending Completed with the table."""

from __future__ import annotations

import math

import pandas as pd


def test_generate_flow_samples_relaxes_predicts_and_writes_table(tmp_path):
    import torch

    from flows.generate import generate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "out"
        state = generate(num_samples=3, n_step_each=1, seed=1, outdir=str(out), max_steps=10,
                         models=["alexandria_cv300", "svib", "no_such_model"],
                         reference_max_steps=30, cache_dir=str(tmp_path / "cache"),
                         return_state=True)
    finally:
        torch.set_num_threads(threads)
    assert state.is_completed(), state.message
    summary = state.result()
    assert state.message == f"{summary['n_ok']} ok, {summary['n_failed']} failed"
    assert summary["n_ok"] + summary["n_failed"] == 3 and summary["n_ok"] >= 1
    assert "no_such_model" in summary["skipped_models"]
    table = pd.read_csv(out / "screen.csv")
    assert list(table["id"]) == ["cdvae_0000", "cdvae_0001", "cdvae_0002"]
    ok = table[table["status"] == "ok"]
    assert ok["energy_eV_per_atom"].notna().all()
    assert ok["novel"].notna().all()
    assert ok["alexandria_cv300:cv_300K"].notna().all() and ok["svib:S_vib_305K"].notna().all()
    unique = ok[ok["duplicate_of"].isna()]
    assert all(e >= -1e-6 for e in unique["e_above_hull_eV_per_atom"] if not math.isnan(e))
    assert all((out / c).is_file() for c in unique["cif"])
    assert (out / "screen.parquet").is_file()


def test_generate_flow_fails_when_no_sample_relaxes(tmp_path, monkeypatch):
    import pytest

    from flows.generate import generate
    from flows.states import AllInputsFailed
    from matflow.generate import screen

    def broken(sample, *, source, **_):
        return {"ok": False, "source": source, "step": "relax", "reason": "relaxation blew up"}

    monkeypatch.setattr(screen, "relax_sample", broken)
    state = generate(num_samples=2, n_step_each=1, outdir=str(tmp_path / "out"), models=[],
                     novelty_dataset=None, cache_dir=str(tmp_path / "cache"), return_state=True)
    assert state.is_failed() and state.message == "all 2 inputs failed"
    with pytest.raises(AllInputsFailed) as info:
        state.result()
    assert [f["reason"] for f in info.value.summary["failures"]] == ["relax: relaxation blew up"] * 2
