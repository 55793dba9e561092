"""CHGNet MD reruns: a finished run extends to more steps exactly, returns as is for no more steps,
starts over on request, names the settings that differ, and an interruption keeps a checkpoint of
the last completed step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator
from ase.io import read

from matflow.atomistic.md import MDSettings, run_md


class _Untouchable(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, *args, **kwargs):
        raise AssertionError("a finished run was recomputed")


def _positions(path):
    frames = read(path, ":")
    return [f.info["step"] for f in frames], np.array([f.positions for f in frames])


def test_extending_a_finished_run_equals_a_straight_longer_run(tmp_path, cu4, fast_calc):
    s10 = MDSettings(ensemble="nvt", thermostat="langevin", temperature_K=500, n_steps=10,
                     checkpoint_every=4, seed=5)
    s20 = MDSettings(**{**s10.__dict__, "n_steps": 20})
    first = run_md(cu4, tmp_path / "ext", s10, calculator=fast_calc)
    assert first.n_frames == 11 and (tmp_path / "ext" / "result.json").exists()
    extended = run_md(cu4, tmp_path / "ext", s20, calculator=fast_calc)
    assert extended.resumed_from_step == 10 and extended.n_steps == 20 and extended.n_frames == 21
    straight = run_md(cu4, tmp_path / "straight", s20, calculator=fast_calc)
    steps_e, pos_e = _positions(extended.trajectory)
    steps_s, pos_s = _positions(straight.trajectory)
    assert steps_e == steps_s == list(range(21))
    np.testing.assert_allclose(pos_e, pos_s, atol=1e-6)
    assert extended.mean_temperature_K == pytest.approx(straight.mean_temperature_K)

    # the same or fewer steps: the stored result, nothing recomputed
    for n in (20, 12):
        again = run_md(cu4, tmp_path / "ext", MDSettings(**{**s10.__dict__, "n_steps": n}),
                       calculator=_Untouchable())
        assert again.n_steps == 20 and again.n_frames == 21
        assert again.final_energy_eV == extended.final_energy_eV
    assert len(read(extended.trajectory, ":")) == 21


def test_other_settings_are_named_and_restart_is_suggested(tmp_path, cu4, fast_calc):
    run_md(cu4, tmp_path, MDSettings(n_steps=3), calculator=fast_calc, stop_after_steps=2)
    with pytest.raises(ValueError, match="other settings") as err:
        run_md(cu4, tmp_path, MDSettings(n_steps=3, temperature_K=900.0, seed=4), calculator=fast_calc)
    message = str(err.value)
    assert "temperature_K: 300.0 there, 900.0 now" in message and "seed: 0 there, 4 now" in message
    assert "--restart" in message and "restart=True" in message
    moved = cu4.copy()
    moved.positions[0] += 0.1
    with pytest.raises(ValueError, match="input structure"):
        run_md(moved, tmp_path, MDSettings(n_steps=3), calculator=fast_calc)


def test_restart_discards_the_run_and_starts_over(tmp_path, cu4, fast_calc):
    run_md(cu4, tmp_path, MDSettings(n_steps=6), calculator=fast_calc)
    (tmp_path / "last_good_frame.extxyz").write_text("stale")
    fresh = run_md(cu4, tmp_path, MDSettings(n_steps=4, temperature_K=600.0), calculator=fast_calc,
                   restart=True)
    assert fresh.resumed_from_step is None and fresh.n_frames == 5
    assert [f.info["step"] for f in read(fresh.trajectory, ":")] == list(range(5))
    assert not (tmp_path / "last_good_frame.extxyz").exists()
    ckpt = json.loads((tmp_path / "checkpoint.json").read_text())
    assert ckpt["step"] == 4 and ckpt["settings"]["temperature_K"] == 600.0


class _InterruptingCalc(Calculator):
    """Delegates to CHGNet and raises ``exc`` on the n-th evaluation (inside an MD step)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, inner, n: int, exc: type[BaseException]):
        super().__init__()
        self.inner, self.n, self.exc, self.calls = inner, n, exc, 0

    def calculate(self, atoms=None, properties=None, system_changes=None):
        self.calls += 1
        if self.calls == self.n:
            raise self.exc()
        super().calculate(atoms, properties, system_changes)
        self.inner.calculate(atoms, ["energy", "forces", "stress"], system_changes)
        self.results = dict(self.inner.results)


@pytest.mark.parametrize("where", ["progress", "mid-step"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interruption_keeps_a_checkpoint_of_the_last_completed_step(tmp_path, cu4, fast_calc, where,
                                                                    exc):
    s = MDSettings(ensemble="nvt", thermostat="nose-hoover", temperature_K=400, n_steps=16,
                   checkpoint_every=5, seed=2)
    work = tmp_path / "cut"
    if where == "progress":
        def stop_at_13(step, n):
            if step == 13:
                raise exc()

        with pytest.raises(exc):
            run_md(cu4, work, s, calculator=fast_calc, progress=stop_at_13)
        last_done = 13
    else:  # one evaluation for step 0, then one per step: call 14 is inside step 13
        with pytest.raises(exc):
            run_md(cu4, work, s, calculator=_InterruptingCalc(fast_calc, 14, exc))
        last_done = 12
    ckpt = json.loads((work / "checkpoint.json").read_text())
    assert ckpt["step"] == last_done  # not only the periodic one at step 10
    on_disk = read(work / "trajectory.extxyz", ":")  # complete frames only, up to that step
    assert [f.info["step"] for f in on_disk] == list(range(last_done + 1))
    assert not (work / "result.json").exists()

    resumed = run_md(cu4, work, s, calculator=fast_calc)
    assert resumed.resumed_from_step == last_done
    straight = run_md(cu4, tmp_path / "straight", s, calculator=fast_calc)
    steps_r, pos_r = _positions(resumed.trajectory)
    steps_s, pos_s = _positions(straight.trajectory)
    assert steps_r == steps_s == list(range(17))
    np.testing.assert_allclose(pos_r, pos_s, atol=1e-6)
