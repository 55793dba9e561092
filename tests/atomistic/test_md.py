"""CHGNet MD: every ensemble runs and writes complete frames; SIGKILL mid-run resumes exactly;
a run that blows up stops with a clear error and keeps its last good frame."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.io import read

from matflow.atomistic.md import MDBlowUpError, MDSettings, run_md

ENSEMBLES = [
    ("nve", {}),
    ("nvt", {"thermostat": "nose-hoover"}),
    ("nvt", {"thermostat": "langevin"}),
    ("nvt", {"thermostat": "berendsen"}),
    ("npt", {"barostat": "mtk"}),
    ("npt", {"barostat": "berendsen"}),
]


@pytest.mark.parametrize(("ensemble", "extra"), ENSEMBLES, ids=lambda x: str(x))
def test_each_ensemble_writes_every_frame(tmp_path, cu4, fast_calc, ensemble, extra):
    settings = MDSettings(ensemble=ensemble, temperature_K=300, n_steps=12, traj_every=2,
                          checkpoint_every=5, **extra)
    res = run_md(cu4, tmp_path, settings, calculator=fast_calc)
    frames = read(res.trajectory, ":")
    assert [f.info["step"] for f in frames] == list(range(0, 13, 2))
    assert res.n_frames == len(frames) == 7
    for f in frames:
        assert f.get_forces().shape == (4, 3)
        assert f.get_stress().shape == (6,)
        assert np.isfinite(f.get_potential_energy())
        assert 0 < f.info["temperature_K"] < 3000
        # pressure = virial part (-trace(stress) / 3) + ideal-gas part (2 E_kin / 3V), in GPa
        ideal = 2 * f.info["kinetic_energy_eV"] / (3 * f.get_volume())
        assert f.info["pressure_GPa"] == pytest.approx((-f.get_stress()[:3].mean() + ideal) / units.GPa, abs=1e-6)
        # free degrees of freedom: the Langevin and Nose-Hoover runs' FixCom removes 3, and MTK
        # conserves total momentum from a stationary start (counted by matflow, not by ASE)
        n_dof = 3 * len(f) - (3 if extra.get("thermostat") in ("langevin", "nose-hoover")
                              or extra.get("barostat") == "mtk" else 0)
        assert f.info["temperature_K"] == pytest.approx(2 * f.info["kinetic_energy_eV"] / (n_dof * units.kB),
                                                        rel=1e-9)
    assert res.timestep_fs == 2.0
    stored = json.loads((tmp_path / "result.json").read_text())
    assert (stored["n_steps"], stored["n_frames"], stored["settings"]["ensemble"]) == (12, 7, ensemble)
    assert stored["mean_temperature_K"] == pytest.approx(np.mean([f.info["temperature_K"] for f in frames]))


def test_nve_conserves_energy(tmp_path, cu4, fast_calc):
    atoms = cu4.repeat((2, 1, 1))
    res = run_md(atoms, tmp_path, MDSettings(ensemble="nve", temperature_K=600, n_steps=30,
                                            timestep_fs=1.0), calculator=fast_calc)
    frames = read(res.trajectory, ":")
    etot = np.array([f.get_potential_energy() + f.info["kinetic_energy_eV"] for f in frames])
    ekin = np.array([f.info["kinetic_energy_eV"] for f in frames])
    assert np.ptp(ekin) / len(atoms) > 0.005  # energy really moves between kinetic and potential
    assert np.ptp(etot) / len(atoms) < 0.002  # but the total stays within 2 meV/atom


def test_npt_berendsen_compresses_under_pressure(tmp_path, cu4, fast_calc):
    s = MDSettings(ensemble="npt", barostat="berendsen", temperature_K=300, n_steps=15,
                   pressure_GPa=30.0, taup_fs=100.0)
    res = run_md(cu4, tmp_path, s, calculator=fast_calc)
    frames = read(res.trajectory, ":")
    assert frames[-1].get_volume() < frames[0].get_volume() * 0.995


def _frames_signature(path: Path):
    frames = read(path, ":")
    return [f.info["step"] for f in frames], np.array([f.positions for f in frames])


def test_sigkill_mid_run_resumes_without_lost_or_duplicated_frames(tmp_path, cu4, fast_calc):
    import torch

    atoms = cu4.repeat((2, 1, 1))
    settings = dict(ensemble="nvt", thermostat="langevin", temperature_K=500, n_steps=40,
                    traj_every=1, checkpoint_every=7, seed=11)
    killed = tmp_path / "killed"
    atoms.write(tmp_path / "start.extxyz")
    script = (
        f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"
        "from ase.io import read\n"
        "from matflow.atomistic.md import MDSettings, run_md\n"
        f"run_md(read({str(tmp_path / 'start.extxyz')!r}), {str(killed)!r}, MDSettings(**{settings!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    traj = killed / "trajectory.extxyz"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill once a few checkpoints are behind us
            if traj.exists() and traj.read_bytes().count(b"Lattice=") >= 17:
                break
            assert proc.poll() is None, "MD subprocess ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("MD subprocess made no progress")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "result.json").exists()
    n_before = traj.read_bytes().count(b"Lattice=")
    assert 17 <= n_before < 41

    resumed = run_md(read(tmp_path / "start.extxyz"), killed, MDSettings(**settings),
                     calculator=fast_calc)
    assert resumed.resumed_from_step is not None and 14 <= resumed.resumed_from_step < 40
    straight = run_md(read(tmp_path / "start.extxyz"), tmp_path / "straight", MDSettings(**settings),
                      calculator=fast_calc)
    steps_k, pos_k = _frames_signature(traj)
    steps_s, pos_s = _frames_signature(Path(straight.trajectory))
    assert steps_k == steps_s == list(range(41))
    np.testing.assert_allclose(pos_k, pos_s, atol=1e-6)


def test_resume_refuses_other_settings(tmp_path, cu4, fast_calc):
    run_md(cu4, tmp_path, MDSettings(n_steps=3), calculator=fast_calc, stop_after_steps=2)
    with pytest.raises(ValueError, match="other settings"):
        run_md(cu4, tmp_path, MDSettings(n_steps=3, temperature_K=900), calculator=fast_calc)


def test_blow_up_stops_with_clear_error_and_keeps_last_good_frame(tmp_path, cu4, fast_calc):
    atoms = cu4.repeat((2, 1, 1))
    atoms.rattle(0.25, seed=2)  # strained start: potential energy floods into kinetic energy
    s = MDSettings(ensemble="nve", temperature_K=50, n_steps=40, max_temperature_factor=2.0)
    with pytest.raises(MDBlowUpError, match="temperature .* exceeds 100 K") as err:
        run_md(atoms, tmp_path, s, calculator=fast_calc)
    assert "last good frame" in str(err.value)
    last = read(tmp_path / "last_good_frame.extxyz")
    frames = read(tmp_path / "trajectory.extxyz", ":")
    assert last.info["step"] == frames[-1].info["step"]
    assert all(f.info["temperature_K"] <= 100 for f in frames)


def test_bad_settings_are_refused(cu4):
    with pytest.raises(ValueError, match="unknown ensemble"):
        MDSettings(ensemble="nph").validate()
    with pytest.raises(ValueError, match="timestep"):
        MDSettings(timestep_fs=50).validate()


def test_overlapping_atoms_and_unknown_elements_are_refused_with_the_input_named(tmp_path, cu4):
    from ase import Atoms

    from matflow.io import StructureInputError

    squashed = cu4.copy()
    squashed.positions[1] = squashed.positions[0] + [0.2, 0, 0]
    with pytest.raises(StructureInputError, match="atoms too close: .* 0.200 Å"):
        run_md(squashed, tmp_path / "a", MDSettings(n_steps=2))
    fm = Atoms("Fm2", positions=[[0, 0, 0], [1.6, 1.6, 1.6]], cell=[3.2] * 3, pbc=True)
    with pytest.raises(StructureInputError, match="Fm2 .*not covered by CHGNet"):
        run_md(fm, tmp_path / "b", MDSettings(n_steps=2))


@pytest.mark.parametrize(("ensemble", "extra"), [("nvt", {"thermostat": "nose-hoover"}),
                                                 ("npt", {"barostat": "mtk"})])
def test_thermostat_and_barostat_state_survive_a_restart(tmp_path, cu4, fast_calc, ensemble, extra):
    s = MDSettings(ensemble=ensemble, temperature_K=400, n_steps=10, checkpoint_every=3,
                   taut_fs=20.0, taup_fs=100.0, **extra)
    first = run_md(cu4, tmp_path / "split", s, calculator=fast_calc, stop_after_steps=5)
    assert first.n_steps == 5 and not (tmp_path / "split" / "result.json").exists()
    resumed = run_md(cu4, tmp_path / "split", s, calculator=fast_calc)
    assert resumed.resumed_from_step == 5
    straight = run_md(cu4, tmp_path / "straight", s, calculator=fast_calc)
    a = read(resumed.trajectory, ":")
    b = read(straight.trajectory, ":")
    assert [f.info["step"] for f in a] == [f.info["step"] for f in b] == list(range(11))
    np.testing.assert_allclose([f.positions for f in a], [f.positions for f in b], atol=1e-9)
    np.testing.assert_allclose([f.cell.array for f in a], [f.cell.array for f in b], atol=1e-9)
