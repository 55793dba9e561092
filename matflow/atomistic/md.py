"""Molecular dynamics with CHGNet in NVE, NVT and NPT, writing frames as it goes and safe to SIGKILL.

Layout of a run directory (``workdir``):

* ``trajectory.extxyz`` - one frame every ``traj_every`` steps (positions, momenta, energy eV,
  forces eV/Å, stress eV/Å³, step, time_fs, temperature_K, pressure_GPa in the frame info);
* ``checkpoint.json`` - written atomically (temp file + fsync + rename) every ``checkpoint_every``
  steps: the exact dynamical state (positions, momenta, cell, thermostat/barostat variables, RNG
  state) and the byte length of the trajectory at that moment;
* ``result.json`` - written when the run finishes.

A run that finds a checkpoint resumes from it: the trajectory is cut back to the recorded byte
length, so frames written after the checkpoint (possibly half-written when the process was killed)
are dropped and regenerated; the dynamics restarts from the bit-identical state, so no frame is lost
or duplicated and the resumed trajectory equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from matflow.atomistic.model import DEFAULT_MODEL, load_chgnet, package_versions

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("nose-hoover", "langevin", "berendsen")
BAROSTATS = ("mtk", "berendsen")
TRAJ_NAME, CKPT_NAME, RESULT_NAME = "trajectory.extxyz", "checkpoint.json", "result.json"

_DYN_STATE = ("_q", "_p", "_eps", "_p_eps", "_volume0", "_cell0", "_h", "_p_g")
_THERMO_STATE = ("_eta", "_p_eta")
_BARO_STATE = ("_xi", "_p_xi")


class MDBlowUpError(RuntimeError):
    """The run left physical ground (temperature runaway, atoms flying apart, NaN energies)."""


@dataclass(frozen=True)
class MDSettings:
    """MD options in physical units. Defaults suit inorganic solids with CHGNet.

    timestep_fs: 2 fs (0.5 fs is used when the structure holds H, unless set explicitly).
    taut_fs: thermostat time constant (Nosé–Hoover tdamp, Berendsen tau), 100 fs = 50 steps.
    friction_per_ps: Langevin friction, 2 ps⁻¹ (weak enough not to slow diffusion much).
    taup_fs: barostat time constant, 1000 fs. pressure_GPa: external pressure.
    compressibility_per_GPa: Berendsen barostat only (1/bulk modulus; 0.01 GPa⁻¹ ≈ B = 100 GPa).
    max_temperature_factor: abort when T exceeds this many times the target (or the start T in NVE).
    """

    ensemble: str = "nvt"
    temperature_K: float = 300.0
    n_steps: int = 1000
    timestep_fs: float | None = None
    thermostat: str = "nose-hoover"
    barostat: str = "mtk"
    taut_fs: float = 100.0
    friction_per_ps: float = 2.0
    pressure_GPa: float = 0.0
    taup_fs: float = 1000.0
    compressibility_per_GPa: float = 0.01
    traj_every: int = 1
    checkpoint_every: int = 10
    seed: int = 0
    max_temperature_factor: float = 5.0

    def validate(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {self.ensemble!r}; choose one of {ENSEMBLES}")
        if self.ensemble == "nvt" and self.thermostat not in THERMOSTATS:
            raise ValueError(f"unknown thermostat {self.thermostat!r}; choose one of {THERMOSTATS}")
        if self.ensemble == "npt" and self.barostat not in BAROSTATS:
            raise ValueError(f"unknown barostat {self.barostat!r}; choose one of {BAROSTATS}")
        if self.temperature_K < 0 or self.n_steps < 0:
            raise ValueError("temperature_K and n_steps must be >= 0")
        if self.timestep_fs is not None and not 0 < self.timestep_fs <= 10:
            raise ValueError(f"timestep_fs={self.timestep_fs} outside (0, 10] fs")
        if self.traj_every < 1 or self.checkpoint_every < 1:
            raise ValueError("traj_every and checkpoint_every must be >= 1")


@dataclass
class MDResult:
    """Summary of a finished run (series live in the trajectory; see matflow.atomistic.analysis)."""

    workdir: str
    trajectory: str
    settings: dict
    timestep_fs: float
    n_steps: int
    n_frames: int
    n_atoms: int
    formula: str
    resumed_from_step: int | None
    wall_time_s: float
    final_temperature_K: float
    final_energy_eV: float
    mean_temperature_K: float
    input_hash: str
    model: str
    versions: dict = field(default_factory=package_versions)

    def to_dict(self) -> dict:
        return asdict(self)


def _atoms_hash(atoms: Atoms) -> str:
    payload = json.dumps({"numbers": atoms.numbers.tolist(), "cell": np.round(atoms.cell.array, 6).tolist(),
                          "pos": np.round(atoms.positions, 6).tolist()})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _to_atoms(structure) -> Atoms:
    if isinstance(structure, Atoms):
        return structure.copy()
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_atoms(structure)


def default_timestep_fs(atoms: Atoms) -> float:
    """2 fs for solids without hydrogen, 0.5 fs when H is present (fast O–H/N–H vibrations)."""
    return 0.5 if 1 in set(atoms.numbers.tolist()) else 2.0


def make_calculator(kind: str = "fast", model_name: str = DEFAULT_MODEL):
    """'fast': matflow's FastCHGNetCalculator; 'stock': chgnet's own CHGNetCalculator."""
    model = load_chgnet(model_name)
    if kind == "fast":
        from matflow.atomistic.fast import FastCHGNetCalculator

        return FastCHGNetCalculator(model)
    if kind == "stock":
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model, use_device=str(next(model.parameters()).device))
    raise ValueError(f"unknown calculator {kind!r}; choose 'fast' or 'stock'")


def build_dynamics(atoms: Atoms, s: MDSettings, timestep_fs: float, rng: np.random.Generator):
    """The ASE integrator for the chosen ensemble, all inputs converted from physical units."""
    dt = timestep_fs * units.fs
    if s.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if s.ensemble == "nvt":
        if s.thermostat == "nose-hoover":
            from ase.md.nose_hoover_chain import NoseHooverChainNVT

            return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=s.temperature_K,
                                      tdamp=s.taut_fs * units.fs)
        if s.thermostat == "langevin":
            from ase.constraints import FixCom
            from ase.md.langevin import Langevin

            atoms.set_constraint(FixCom())  # no centre-of-mass drift from the random kicks
            return Langevin(atoms, timestep=dt, temperature_K=s.temperature_K, fixcm=False,
                            friction=s.friction_per_ps / (1000 * units.fs), rng=rng)
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, timestep=dt, temperature_K=s.temperature_K,
                            taut=s.taut_fs * units.fs)
    if s.barostat == "mtk":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=s.temperature_K,
                               pressure_au=s.pressure_GPa * units.GPa, tdamp=s.taut_fs * units.fs,
                               pdamp=s.taup_fs * units.fs)
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(atoms, timestep=dt, temperature_K=s.temperature_K, taut=s.taut_fs * units.fs,
                        pressure_au=s.pressure_GPa * units.GPa, taup=s.taup_fs * units.fs,
                        compressibility_au=s.compressibility_per_GPa / units.GPa)


def _get_state(dyn, atoms: Atoms, rng: np.random.Generator) -> dict:
    def grab(obj, names):
        out = {}
        for name in names:
            if obj is not None and name in getattr(obj, "__dict__", {}):
                out[name] = np.asarray(getattr(obj, name)).tolist()
        return out

    return {
        "positions": atoms.positions.tolist(), "momenta": atoms.get_momenta().tolist(),
        "cell": atoms.cell.array.tolist(),
        "dyn": grab(dyn, _DYN_STATE),
        "thermostat": grab(getattr(dyn, "_thermostat", None), _THERMO_STATE),
        "barostat": grab(getattr(dyn, "_barostat", None), _BARO_STATE),
        "rng": rng.bit_generator.state,
    }


def _set_state(dyn, atoms: Atoms, rng: np.random.Generator, state: dict) -> None:
    atoms.set_cell(np.array(state["cell"]), scale_atoms=False)
    atoms.set_positions(np.array(state["positions"]))
    atoms.set_momenta(np.array(state["momenta"]))
    for obj, key in ((dyn, "dyn"), (getattr(dyn, "_thermostat", None), "thermostat"),
                     (getattr(dyn, "_barostat", None), "barostat")):
        for name, value in state.get(key, {}).items():
            arr = np.array(value, dtype=float)
            setattr(obj, name, float(arr) if arr.ndim == 0 else arr)
    rng.bit_generator.state = state["rng"]


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _append_frame(fh, frame: Atoms) -> None:
    """Append one extxyz frame to a binary file handle (byte offsets stay exact for truncation)."""
    import io

    from ase.io import write

    buf = io.StringIO()
    write(buf, frame, format="extxyz")
    fh.write(buf.getvalue().encode("utf-8"))


def _frame(atoms: Atoms, step: int, timestep_fs: float) -> Atoms:
    """A copy of atoms carrying its CHGNet results and the step bookkeeping in info."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    temperature = atoms.get_temperature()
    pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    frame.info.update(step=int(step), time_fs=float(step * timestep_fs),
                      temperature_K=float(temperature), pressure_GPa=float(pressure),
                      kinetic_energy_eV=float(atoms.get_kinetic_energy()))
    return frame


def run_md(
    structure,
    workdir: str | os.PathLike,
    settings: MDSettings | None = None,
    *,
    calculator=None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    stop_after_steps: int | None = None,
    model_name: str = DEFAULT_MODEL,
) -> MDResult:
    """Run (or resume) CHGNet MD of ``structure`` in ``workdir``; return a summary.

    ``progress(step, n_steps)`` is called after each step. ``stop_after_steps`` ends this call early
    (used to test restarts); a later call resumes. Raises MDBlowUpError with the last good frame
    kept in the trajectory and in ``last_good_frame.extxyz``.
    """
    from ase.io import write
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from matflow.atomistic.fast import check_structure

    s = settings or MDSettings()
    s.validate()
    t_start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    traj_path, ckpt_path = workdir / TRAJ_NAME, workdir / CKPT_NAME
    atoms = _to_atoms(structure)
    check_structure(atoms, source=f"{atoms.get_chemical_formula()} (MD in {workdir})")
    input_hash = _atoms_hash(atoms)
    timestep_fs = s.timestep_fs or default_timestep_fs(atoms)
    calc = calculator or make_calculator("fast", model_name)
    atoms.calc = calc
    rng = np.random.default_rng(s.seed)
    settings_key = {**asdict(s), "timestep_fs": timestep_fs, "input_hash": input_hash}

    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = json.loads(ckpt_path.read_text(encoding="utf-8"))
        if ckpt.get("settings") != settings_key:
            raise ValueError(f"{workdir}: checkpoint belongs to a run with other settings or input; "
                             "use another workdir or resume=False")
    if ckpt is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K, rng=rng)
        Stationary(atoms)
    dyn = build_dynamics(atoms, s, timestep_fs, rng)
    if ckpt is not None:
        _set_state(dyn, atoms, rng, ckpt["state"])
        step, n_frames, temps = ckpt["step"], ckpt["n_frames"], ckpt["temperatures"]
        with open(traj_path, "r+b") as fh:
            fh.truncate(ckpt["traj_bytes"])
        from ase.io import read

        last_good = read(traj_path, -1, format="extxyz") if n_frames else None
    else:
        step, n_frames, temps, last_good = 0, 0, [], None
        traj_path.write_bytes(b"")

    t_ref = s.temperature_K if s.temperature_K > 0 else 300.0
    t_max = s.max_temperature_factor * max(t_ref, 50.0)
    stop_at = s.n_steps if stop_after_steps is None else min(s.n_steps, step + stop_after_steps)

    def checkpoint(fh) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        _write_json_atomic(ckpt_path, {
            "settings": settings_key, "step": step, "n_frames": n_frames, "temperatures": temps,
            "traj_bytes": fh.tell(), "state": _get_state(dyn, atoms, rng)})

    def blow_up(reason: str, fh) -> None:
        fh.flush()
        if last_good is not None:
            write(workdir / "last_good_frame.extxyz", last_good, format="extxyz")
        raise MDBlowUpError(f"{atoms.get_chemical_formula()} MD in {workdir} stopped at step {step}: "
                            f"{reason}; last good frame kept in {traj_path} and last_good_frame.extxyz")

    from matflow.atomistic.fast import IsolatedAtomError

    with open(traj_path, "ab") as fh:
        if step == 0:
            frame = _frame(atoms, 0, timestep_fs)
            _append_frame(fh, frame)
            n_frames, last_good = 1, frame
            temps.append(frame.info["temperature_K"])
            checkpoint(fh)
        while step < stop_at:
            try:
                dyn.step()
                step += 1
                energy = atoms.get_potential_energy()
            except IsolatedAtomError as exc:
                step += 1
                blow_up(f"atoms flying apart ({exc})", fh)
            temperature = atoms.get_temperature()
            if not np.isfinite(energy) or not np.all(np.isfinite(atoms.positions)):
                blow_up("non-finite energy or positions", fh)
            if temperature > t_max:
                blow_up(f"temperature {temperature:.0f} K exceeds {t_max:.0f} K "
                        f"({s.max_temperature_factor}× the target)", fh)
            if step % s.traj_every == 0:
                frame = _frame(atoms, step, timestep_fs)
                _append_frame(fh, frame)
                n_frames += 1
                last_good = frame
                temps.append(float(temperature))
            if step % s.checkpoint_every == 0 or step == stop_at:
                checkpoint(fh)
            if progress is not None:
                progress(step, s.n_steps)

    result = MDResult(
        workdir=str(workdir), trajectory=str(traj_path), settings=asdict(s), timestep_fs=timestep_fs,
        n_steps=step, n_frames=n_frames, n_atoms=len(atoms), formula=atoms.get_chemical_formula(),
        resumed_from_step=None if ckpt is None else int(ckpt["step"]),
        wall_time_s=time.perf_counter() - t_start, final_temperature_K=float(atoms.get_temperature()),
        final_energy_eV=float(atoms.get_potential_energy()), mean_temperature_K=float(np.mean(temps)),
        input_hash=input_hash, model=f"CHGNet {model_name}")
    if step >= s.n_steps:
        _write_json_atomic(workdir / RESULT_NAME, result.to_dict())
    return result
