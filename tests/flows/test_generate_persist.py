"""The ``generate`` flow persists its samples and per-candidate records in the output folder (and
as Prefect results): a rerun on the same folder loads them instead of recomputing."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rerun_loads_finished_candidates(tmp_path, monkeypatch, one_torch_thread):
    from flows.generate import generate
    from matflow.generate import screen
    from matflow.pipeline import steps

    calls = {"relax": 0, "sample": 0}
    real_relax, real_sample = screen.relax_sample, steps.sample_cdvae

    def counting_relax(*args, **kwargs):
        calls["relax"] += 1
        return real_relax(*args, **kwargs)

    def counting_sample(*args, **kwargs):
        calls["sample"] += 1
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(screen, "relax_sample", counting_relax)
    monkeypatch.setattr(steps, "sample_cdvae", counting_sample)
    out = tmp_path / "out"
    kwargs = dict(num_samples=2, n_step_each=1, seed=2, outdir=str(out), max_steps=5, models=[],
                  novelty_dataset=None, hull=False, cache_dir=str(tmp_path / "cache"),
                  return_state=True)
    first = generate(**kwargs)
    assert first.is_completed(), first.message
    assert calls == {"relax": 2, "sample": 1}
    table_first = pd.read_csv(out / "screen.csv")
    items = sorted(p.relative_to(out).parts[1] for p in (out / "items").glob("*/*.json"))
    assert items.count("relax") == 2 and items.count("sample") == 1
    assert sorted(p.name for p in (out / "samples").glob("*.cif")) == [
        "cdvae_0000.cif", "cdvae_0001.cif"]
    assert any((out / "prefect-results").iterdir())
    summary = first.result()
    assert summary["n_computed"] == 2 and summary["n_loaded"] == 0

    second = generate(**kwargs)
    assert second.is_completed(), second.message
    assert calls == {"relax": 2, "sample": 1}  # nothing recomputed
    summary = second.result()
    assert summary["n_computed"] == 0 and summary["n_loaded"] == 2 and summary["samples_loaded"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "screen.csv"), table_first)

    # a run killed before one candidate finished leaves no record of it (simulated by deleting its
    # item file and the Prefect results): the rerun computes just that candidate
    lost = next(p for p in (out / "items" / "relax").glob("*.json")
                if json.loads(p.read_text())["item"] == "cdvae_0001")
    lost.unlink()
    shutil.rmtree(out / "prefect-results")
    third = generate(**kwargs)
    assert third.is_completed(), third.message
    assert calls == {"relax": 3, "sample": 1}
    assert third.result()["n_computed"] == 1 and third.result()["n_loaded"] == 1

    # the Prefect results alone (item files gone) also spare the recomputation
    shutil.rmtree(out / "items")
    fourth = generate(**kwargs)
    assert fourth.is_completed(), fourth.message
    assert calls == {"relax": 3, "sample": 1}
    assert fourth.result()["n_loaded"] == 2
    pd.testing.assert_frame_equal(pd.read_csv(out / "screen.csv"), table_first)
