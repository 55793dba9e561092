"""CHGNet MD guards: absurd settings are refused up front, a run whose atoms collapse stops with the
reason and keeps its frames, and the temperature ceiling follows the composition's melting points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read

from matflow.atomistic.md import (
    MDBlowUpError,
    MDSettings,
    closest_contact,
    run_md,
    temperature_ceiling_K,
)


class _Spring(Calculator):
    """Pulls atoms 0 and 1 together with a harmonic spring of rest length 0 (k in eV/Å²): a stand-in
    for a potential with a short-range hole, collapsing the pair within about 100 steps of 2 fs."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, k: float = 0.1):
        super().__init__()
        self.k = k

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        v = self.atoms.positions[1] - self.atoms.positions[0]
        forces = np.zeros((len(self.atoms), 3))
        forces[0], forces[1] = self.k * v, -self.k * v
        self.results = {"energy": 0.5 * self.k * float(v @ v), "forces": forces, "stress": np.zeros(6)}


def test_temperature_ceiling_follows_the_highest_melting_element():
    assert temperature_ceiling_K(["Cu"]) == pytest.approx(3 * 1357.77, abs=1)
    assert temperature_ceiling_K(["Na", "Cl"]) == 3000.0  # floor: Na melts at 371 K
    assert temperature_ceiling_K(["H", "O"]) == 3000.0
    assert temperature_ceiling_K(["W", "C"]) == 10_000.0  # capped


def test_absurd_target_temperature_is_refused_up_front(tmp_path, cu4):
    with pytest.raises(ValueError, match="temperature_K=1e\\+06 K is above 10,000 K"):
        MDSettings(temperature_K=1e6).validate()
    with pytest.raises(ValueError, match="5000 K is above 4073 K, the ceiling for Cu4"):
        run_md(cu4, tmp_path / "hot", MDSettings(temperature_K=5000, n_steps=5))
    assert not (tmp_path / "hot").exists()  # refused before any file or model work


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature_K", math.nan, "temperature_K must be a finite number > 0"),
    ("temperature_K", 0.0, "temperature_K must be a finite number > 0"),
    ("n_steps", 0, "n_steps must be an integer >= 1"),
    ("n_steps", 2.5, "n_steps must be an integer >= 1"),
    ("traj_every", 1.5, "traj_every must be an integer >= 1"),
    ("taut_fs", 0.0, "taut_fs must be a finite number > 0"),
    ("friction_per_ps", math.nan, "friction_per_ps must be a finite number > 0"),
    ("taup_fs", -100.0, "taup_fs must be a finite number > 0"),
    ("pressure_GPa", math.inf, "pressure_GPa must be a finite number"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("max_temperature_factor", 0.5, "max_temperature_factor must be a finite number > 1"),
])
def test_non_finite_and_non_positive_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        MDSettings(**{field: value}).validate()


def test_collapsing_atoms_stop_the_run_with_the_reason_and_keep_the_frames(tmp_path, cu4):
    s = MDSettings(ensemble="nve", temperature_K=300, n_steps=300, traj_every=5, checkpoint_every=20)
    with pytest.raises(MDBlowUpError, match=r"atoms collapsed: atoms 0 \(Cu\) and 1 \(Cu\) are "
                                            r"1\.\d\d Å apart, closer than 1\.32 Å") as err:
        run_md(cu4, tmp_path, s, calculator=_Spring(0.1))
    assert "last good frame" in str(err.value)
    frames = read(tmp_path / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(range(0, 5 * len(frames), 5))
    # the pair's separation is a 3-D harmonic oscillator, x(t) = x0 cos ωt + (u0 / ω) sin ωt with
    # ω = sqrt(2k / m): the run must stop at the first checked frame (every 5 steps) after |x| < 1.32 Å
    first = frames[0]
    velocities = first.get_momenta() / first.get_masses()[:, None]
    x0, u0 = first.positions[1] - first.positions[0], velocities[1] - velocities[0]
    omega = math.sqrt(2 * 0.1 / first.get_masses()[0])
    t = np.arange(0.0, 600.0, 0.01) * units.fs
    separation = np.linalg.norm(np.outer(np.cos(omega * t), x0) + np.outer(np.sin(omega * t), u0 / omega), axis=1)
    crossing_step = t[np.argmax(separation < 1.32)] / units.fs / 2.0
    last_good = frames[-1].info["step"]
    assert last_good < crossing_step <= last_good + 5, (last_good, crossing_step)
    assert str(err.value).count(f"stopped at step {last_good + 5}:") == 1
    assert all(closest_contact(f) is None for f in frames)
    assert read(tmp_path / "last_good_frame.extxyz").info["step"] == frames[-1].info["step"]
    assert not (tmp_path / "result.json").exists()


def test_a_start_with_atoms_closer_than_the_covalent_rule_is_refused(tmp_path, cu4):
    from matflow.io import StructureInputError

    squashed = cu4.copy()
    squashed.positions[1] = squashed.positions[0] + [0.6, 0.6, 0.0]  # 0.85 Å: passes the 0.5 Å check
    with pytest.raises(StructureInputError, match=r"too close for MD: atoms 0 \(Cu\) and 1 \(Cu\) are "
                                                  r"0\.85 Å apart, closer than 1\.32 Å"):
        run_md(squashed, tmp_path, MDSettings(n_steps=2), calculator=_Spring())
