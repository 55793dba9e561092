"""Molecular dynamics with CHGNet in NVE, NVT and NPT, writing frames as it goes and safe to SIGKILL.

Layout of a run directory (``workdir``):

* ``trajectory.extxyz`` - one frame every ``traj_every`` steps (positions, momenta, energy eV,
  forces eV/Å, stress eV/Å³, step, time_fs, temperature_K, pressure_GPa in the frame info);
* ``checkpoint.json`` - written atomically (temp file + fsync + rename) every ``checkpoint_every``
  steps, at the last step of a call and when the run is interrupted (KeyboardInterrupt, SystemExit
  or any other exception): the exact dynamical state (positions, momenta, cell, thermostat/barostat
  variables, RNG state) of the last completed step and the byte length of the trajectory then;
* ``result.json`` - written when the run finishes.

A run that finds a checkpoint resumes from it: the trajectory is cut back to the recorded byte
length, so frames written after the checkpoint (possibly half-written when the process was killed)
are dropped and regenerated; the dynamics restarts from the bit-identical state, so no frame is lost
or duplicated and the resumed trajectory equals an uninterrupted one. The same mechanism extends a
finished run: rerun with a larger ``n_steps`` (every other setting equal) and it continues from the
final checkpoint, appending to the same trajectory. ``restart=True`` discards the run and starts over.

Guards (a run that trips one stops with MDBlowUpError, its trajectory kept up to the last good frame):

* temperature: the target must not exceed ``temperature_ceiling_K`` of the composition (refused up
  front), and the instantaneous temperature must stay below both that ceiling and
  ``max_temperature_factor`` times the target;
* distance: at every written frame and checkpoint no two atoms may be closer than
  ``min_pair_distance_A`` (half the sum of their covalent radii, at least 0.5 Å).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable
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
LAST_GOOD_NAME = "last_good_frame.extxyz"
RUN_FILES = (TRAJ_NAME, CKPT_NAME, RESULT_NAME, LAST_GOOD_NAME, CKPT_NAME + ".tmp", RESULT_NAME + ".tmp")
"""The files of one run in its workdir (what ``restart=True`` deletes)."""

ABSOLUTE_MAX_TEMPERATURE_K = 10_000.0
"""No MD above this, whatever the composition: CHGNet learned near-equilibrium DFT (MPtrj) and says
nothing trustworthy about atoms colliding at these energies."""
CEILING_MELTING_FACTOR = 3.0
CEILING_FLOOR_K = 3000.0
MIN_DISTANCE_FLOOR_A = 0.5
MIN_DISTANCE_COVALENT_FRACTION = 0.5

_DYN_STATE = ("_q", "_p", "_eps", "_p_eps", "_volume0", "_cell0", "_h", "_p_g")
_THERMO_STATE = ("_eta", "_p_eta")
_BARO_STATE = ("_xi", "_p_xi")


class MDBlowUpError(RuntimeError):
    """The run left physical ground (temperature runaway, atoms collapsing onto each other or flying
    apart, NaN energies)."""


def temperature_ceiling_K(symbols: Iterable[str]) -> float:
    """The highest temperature (K) MD of this composition may target or reach.

    3x the highest melting point of its elements (pymatgen ``Element.melting_point``), at least
    3000 K and at most ``ABSOLUTE_MAX_TEMPERATURE_K`` (10,000 K). 3x the melting point is far into the
    liquid for any solid, where a potential fitted to near-equilibrium DFT has no data. The 3000 K
    floor keeps compositions of low-melting elements usable (water's H and O melt at 14 and 55 K,
    NaCl melts at 1074 K while Na melts at 371 K); an element pymatgen has no melting point for
    counts as the floor. Examples: Cu 4073 K, NaCl 3000 K, W 10,000 K (3x 3695 K capped).
    """
    from pymatgen.core import Element

    melting = [CEILING_FLOOR_K / CEILING_MELTING_FACTOR]
    for symbol in set(symbols):
        t_m = Element(symbol).melting_point
        if t_m is not None and math.isfinite(float(t_m)):
            melting.append(float(t_m))
    return min(ABSOLUTE_MAX_TEMPERATURE_K, CEILING_MELTING_FACTOR * max(melting))


def closest_contact(atoms: Atoms) -> tuple[int, int, float, float] | None:
    """The pair of atoms most closely collapsed onto each other, or None when every pair is apart.

    Returns ``(i, j, distance_A, limit_A)`` for the pair with the smallest distance/limit ratio
    among pairs closer than their limit (periodic images included). The limit is half the sum of
    the two covalent radii (Cordero et al. 2008, ``ase.data.covalent_radii``), at least 0.5 Å.
    Why: real bonds are no shorter than about 0.75x the covalent sum (triple bonds: C≡C 1.20 Å for
    a 1.52 Å sum, N≡N 1.10 Å for 1.42 Å) and thermal or pressure compression keeps well above half
    of it, so a closer pair has fallen into an unphysical short-range hole of the potential (a known
    failure of universal potentials, whose training data hold almost no such contacts). A fixed
    0.5 Å limit would let two Cu atoms (bond 2.55 Å) sit 0.6 Å apart; the 0.5 Å floor (the input
    validation's limit) applies to H-H and H-O, whose half-sums are 0.31 and 0.49 Å.
    """
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    half = MIN_DISTANCE_COVALENT_FRACTION * covalent_radii[atoms.numbers]
    i, j, d = neighbor_list("ijd", atoms, max(MIN_DISTANCE_FLOOR_A, 2 * float(half.max())))
    limit = np.maximum(MIN_DISTANCE_FLOOR_A, half[i] + half[j])
    bad = np.flatnonzero(d < limit)
    if not len(bad):
        return None
    k = bad[np.argmin(d[bad] / limit[bad])]
    return int(i[k]), int(j[k]), float(d[k]), float(limit[k])


def _describe_contact(atoms: Atoms, contact: tuple[int, int, float, float]) -> str:
    i, j, d, limit = contact
    sym = atoms.get_chemical_symbols()
    return (f"atoms {i} ({sym[i]}) and {j} ({sym[j]}) are {d:.2f} Å apart, closer than {limit:.2f} Å "
            "(half the sum of their covalent radii, at least 0.5 Å)")


def _check_number(name: str, value, *, minimum: float = 0.0, integer: bool = False,
                  allow_equal: bool = False) -> None:
    kind = "an integer" if integer else "a finite number"
    bound = f">= {minimum:g}" if allow_equal else f"> {minimum:g}"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(float(value)) or not (
            value >= minimum if allow_equal else value > minimum):
        raise ValueError(f"{name} must be {kind} {bound}, got {value!r}")


@dataclass(frozen=True)
class MDSettings:
    """MD options in physical units. Defaults suit inorganic solids with CHGNet.

    timestep_fs: 2 fs (0.5 fs is used when the structure holds H, unless set explicitly).
    taut_fs: thermostat time constant (Nosé–Hoover tdamp, Berendsen tau), 100 fs = 50 steps.
    friction_per_ps: Langevin friction, 2 ps⁻¹ (weak enough not to slow diffusion much).
    taup_fs: barostat time constant, 1000 fs. pressure_GPa: external pressure.
    compressibility_per_GPa: Berendsen barostat only (1/bulk modulus; 0.01 GPa⁻¹ ≈ B = 100 GPa).
    max_temperature_factor: abort when T exceeds this many times the target (or the start T in NVE);
    the run also aborts above ``temperature_ceiling_K`` of the composition, and refuses a target
    above it up front.
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
        """Raise ValueError naming the first bad option: unknown names, non-finite or out-of-range
        numbers (temperature in (0, 10,000] K, timestep in (0, 10] fs, counts >= 1)."""
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {self.ensemble!r}; choose one of {ENSEMBLES}")
        if self.ensemble == "nvt" and self.thermostat not in THERMOSTATS:
            raise ValueError(f"unknown thermostat {self.thermostat!r}; choose one of {THERMOSTATS}")
        if self.ensemble == "npt" and self.barostat not in BAROSTATS:
            raise ValueError(f"unknown barostat {self.barostat!r}; choose one of {BAROSTATS}")
        for name in ("temperature_K", "taut_fs", "friction_per_ps", "taup_fs", "compressibility_per_GPa"):
            _check_number(name, getattr(self, name))
        _check_number("pressure_GPa", self.pressure_GPa, minimum=-math.inf)
        _check_number("max_temperature_factor", self.max_temperature_factor, minimum=1.0)
        if self.temperature_K > ABSOLUTE_MAX_TEMPERATURE_K:
            raise ValueError(f"temperature_K={self.temperature_K:g} K is above "
                             f"{ABSOLUTE_MAX_TEMPERATURE_K:,.0f} K, the most CHGNet MD is run at "
                             "(see temperature_ceiling_K for the limit of a given composition)")
        if self.timestep_fs is not None:
            _check_number("timestep_fs", self.timestep_fs)
            if self.timestep_fs > 10:
                raise ValueError(f"timestep_fs={self.timestep_fs} outside (0, 10] fs")
        for name in ("n_steps", "traj_every", "checkpoint_every"):
            _check_number(name, getattr(self, name), minimum=1, integer=True, allow_equal=True)
        _check_number("seed", self.seed, integer=True, allow_equal=True)


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
    potential: dict = field(default_factory=dict)

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


def _momentum_scale(atoms: Atoms) -> float:
    """(3N - 3) / 3N: turns a chain's 3N-count target into kT/2 per free degree of freedom."""
    return (3 * len(atoms) - 3) / (3 * len(atoms))


def free_degrees_of_freedom(atoms: Atoms, s: MDSettings) -> int:
    """Degrees of freedom the frames' temperature is counted over.

    ASE's count (3N minus what constraints remove) except for MTK NPT, which conserves total
    momentum from a stationary start but cannot carry the FixCom constraint that would say so.
    """
    if s.ensemble == "npt" and s.barostat == "mtk":
        return 3 * len(atoms) - 3
    return int(atoms.get_number_of_degrees_of_freedom())


def build_dynamics(atoms: Atoms, s: MDSettings, timestep_fs: float, rng: np.random.Generator):
    """The ASE integrator for the chosen ensemble, all inputs converted from physical units."""
    dt = timestep_fs * units.fs
    if s.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if s.ensemble == "nvt":
        if s.thermostat == "nose-hoover":
            from ase.constraints import FixCom
            from ase.md.nose_hoover_chain import NoseHooverChainNVT

            # The chain conserves total momentum, so only 3N - 3 degrees of freedom are free, but
            # ASE's chain drives the kinetic energy towards 3N kT/2: a 4-atom cell would run 4/3
            # too hot. Aim the chain at the temperature that gives the free ones kT/2 each, and
            # let FixCom tell ASE's temperature readout the same count.
            atoms.set_constraint(FixCom())
            return NoseHooverChainNVT(atoms, timestep=dt,
                                      temperature_K=s.temperature_K * _momentum_scale(atoms),
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

        # Same 3N - 3 count as the Nose-Hoover NVT chain (MTK conserves total momentum), but ASE's
        # MTK refuses constraints, so frames read the temperature from free_degrees_of_freedom.
        return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=s.temperature_K * _momentum_scale(atoms),
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


def _frame(atoms: Atoms, step: int, timestep_fs: float, free_dof: int | None = None) -> Atoms:
    """A copy of atoms carrying its potential's results and the step bookkeeping in info."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    temperature = (atoms.get_temperature() if free_dof is None
                   else 2 * atoms.get_kinetic_energy() / (free_dof * units.kB))
    pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    frame.info.update(step=int(step), time_fs=float(step * timestep_fs),
                      temperature_K=float(temperature), pressure_GPa=float(pressure),
                      kinetic_energy_eV=float(atoms.get_kinetic_energy()))
    return frame


def _settings_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between a checkpoint's settings and this call's (n_steps aside)."""
    out = []
    for key in sorted((set(old) | set(new)) - {"n_steps"}):
        if old.get(key) == new.get(key):
            continue
        if key == "input_hash":
            out.append(f"input structure (hash {old.get(key)} there, {new.get(key)} now)")
        else:
            out.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return out


def _finished_result(workdir: Path, step: int, input_hash: str) -> MDResult | None:
    """The stored result of a run that has reached ``step``, or None if there is none to trust."""
    try:
        data = json.loads((workdir / RESULT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = {f for f in MDResult.__dataclass_fields__}
    required = names - {"potential"}  # results written before the potential was recorded lack it
    if data.get("n_steps") != step or data.get("input_hash") != input_hash or not required <= set(data):
        return None
    return MDResult(**{k: v for k, v in data.items() if k in names})


def run_md(
    structure,
    workdir: str | os.PathLike,
    settings: MDSettings | None = None,
    *,
    calculator=None,
    restart: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop_after_steps: int | None = None,
    model_name: str = DEFAULT_MODEL,
    potential: str = "chgnet",
) -> MDResult:
    """Run, resume or extend MD of ``structure`` in ``workdir`` with a universal potential
    (``potential``: a ``load_potential`` name; CHGNet, the default, through matflow's fast
    calculator); return a summary.

    A checkpoint in ``workdir`` from a run with the same settings is resumed; if that run already
    reached ``n_steps`` its stored result is returned without computing anything; a larger
    ``n_steps`` (every other setting equal) extends it from its final state, appending to the same
    trajectory. A checkpoint from other settings or another structure raises ValueError naming the
    differences. ``restart=True`` deletes the run's files in ``workdir`` (``RUN_FILES``) and starts
    over.

    Refused up front (ValueError): invalid settings, a target temperature above
    ``temperature_ceiling_K`` of the composition, atoms closer than ``closest_contact`` allows.
    ``progress(step, n_steps)`` is called after each step. ``stop_after_steps`` ends this call early
    (used to test restarts); a later call resumes. An interruption (KeyboardInterrupt, SystemExit,
    any exception) leaves a checkpoint of the last completed step and the trajectory up to it.
    Raises MDBlowUpError (temperature runaway, collapsed or isolated atoms, non-finite energy) with
    the last good frame kept in the trajectory and in ``last_good_frame.extxyz``.
    """
    from ase.io import write
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from matflow.atomistic.fast import IsolatedAtomError, check_structure
    from matflow.atomistic.potentials import canonical_name
    from matflow.io import StructureInputError

    s = settings or MDSettings()
    s.validate()
    potential = canonical_name(potential)  # an unknown name fails before any file is touched
    t_start = time.perf_counter()
    workdir = Path(workdir)
    traj_path, ckpt_path, result_path = workdir / TRAJ_NAME, workdir / CKPT_NAME, workdir / RESULT_NAME
    atoms = _to_atoms(structure)
    formula = atoms.get_chemical_formula()
    source = f"{formula} (MD in {workdir})"
    check_structure(atoms, source=source)
    contact = closest_contact(atoms)
    if contact is not None:
        raise StructureInputError(source, f"atoms too close for MD: {_describe_contact(atoms, contact)}")
    ceiling = temperature_ceiling_K(atoms.get_chemical_symbols())
    if s.temperature_K > ceiling:
        raise ValueError(f"{source}: target temperature {s.temperature_K:g} K is above {ceiling:.0f} K, "
                         f"the ceiling for {formula} ({CEILING_MELTING_FACTOR:g}x its highest elemental "
                         f"melting point, within {CEILING_FLOOR_K:,.0f}-{ABSOLUTE_MAX_TEMPERATURE_K:,.0f} K)")
    input_hash = _atoms_hash(atoms)
    timestep_fs = s.timestep_fs or default_timestep_fs(atoms)
    settings_key = {**asdict(s), "timestep_fs": timestep_fs, "input_hash": input_hash}
    if potential != "chgnet":  # CHGNet checkpoints predate the key; they stay resumable
        settings_key["potential"] = potential
    workdir.mkdir(parents=True, exist_ok=True)
    if restart:
        for name in RUN_FILES:
            (workdir / name).unlink(missing_ok=True)

    ckpt = None
    if ckpt_path.exists():
        try:
            ckpt = json.loads(ckpt_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{ckpt_path}: unreadable checkpoint ({exc}); start over with --restart "
                             "(CLI) / restart=True (API)") from exc
        diffs = _settings_diff(ckpt.get("settings") or {}, settings_key)
        if diffs:
            raise ValueError(
                f"{workdir}: checkpoint belongs to a run with other settings ({'; '.join(diffs)}). "
                "Rerun with the same settings to resume (a larger n_steps extends the run), use "
                "another output folder, or discard that run and start over with --restart (CLI) / "
                "restart=True (API)")
        traj_size = traj_path.stat().st_size if traj_path.exists() else -1
        if traj_size < ckpt["traj_bytes"]:
            raise ValueError(f"{workdir}: {TRAJ_NAME} is missing or shorter than its checkpoint "
                             "records; start over with --restart (CLI) / restart=True (API)")
        if ckpt["step"] >= s.n_steps:
            finished = _finished_result(workdir, ckpt["step"], input_hash)
            if finished is not None:
                return finished

    from matflow.atomistic.relax import potential_calculator

    if calculator is None and potential == "chgnet":
        calculator = make_calculator("fast", model_name)  # keeps the fast CHGNet path
    calc, provenance, model_label = potential_calculator(calculator, potential, model_name)
    atoms.calc = calc
    rng = np.random.default_rng(s.seed)
    if ckpt is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K, rng=rng)
        Stationary(atoms)
    dyn = build_dynamics(atoms, s, timestep_fs, rng)
    free_dof = free_degrees_of_freedom(atoms, s)
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
    if step < s.n_steps:
        result_path.unlink(missing_ok=True)

    t_relative = s.max_temperature_factor * max(s.temperature_K, 50.0)
    t_max = min(t_relative, ceiling)
    t_max_why = (f"{s.max_temperature_factor}× the target" if t_relative <= ceiling else
                 f"the ceiling for {formula}, {CEILING_MELTING_FACTOR:g}× its highest elemental "
                 "melting point")
    stop_at = s.n_steps if stop_after_steps is None else min(s.n_steps, step + stop_after_steps)
    done: dict = {}  # the last completed step: what a checkpoint (periodic or on interruption) holds

    def mark_done(fh) -> None:
        done.update(step=step, n_frames=n_frames, n_temps=len(temps), traj_bytes=fh.tell(),
                    state=_get_state(dyn, atoms, rng))

    def checkpoint(fh) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        _write_json_atomic(ckpt_path, {
            "settings": settings_key, "step": done["step"], "n_frames": done["n_frames"],
            "temperatures": temps[:done["n_temps"]], "traj_bytes": done["traj_bytes"],
            "state": done["state"]})

    def blow_up(reason: str, fh) -> None:
        fh.flush()
        if last_good is not None:
            write(workdir / LAST_GOOD_NAME, last_good, format="extxyz")
        raise MDBlowUpError(f"{formula} MD in {workdir} stopped at step {step}: {reason}; last good "
                            f"frame kept in {traj_path} and {LAST_GOOD_NAME}")

    with open(traj_path, "ab") as fh:
        try:
            if step == 0:
                frame = _frame(atoms, 0, timestep_fs, free_dof)
                _append_frame(fh, frame)
                n_frames, last_good = 1, frame
                temps.append(frame.info["temperature_K"])
                mark_done(fh)
                checkpoint(fh)
            else:
                mark_done(fh)
            while step < stop_at:
                try:
                    dyn.step()
                    step += 1
                    energy = atoms.get_potential_energy()
                except IsolatedAtomError as exc:
                    step = done["step"] + 1
                    blow_up(f"atoms flying apart ({exc})", fh)
                temperature = 2 * atoms.get_kinetic_energy() / (free_dof * units.kB)
                if not np.isfinite(energy) or not np.all(np.isfinite(atoms.positions)):
                    blow_up("non-finite energy or positions", fh)
                if temperature > t_max:
                    blow_up(f"temperature {temperature:.0f} K exceeds {t_max:.0f} K ({t_max_why})", fh)
                write_frame = step % s.traj_every == 0
                write_checkpoint = step % s.checkpoint_every == 0 or step == stop_at
                if write_frame or write_checkpoint:
                    contact = closest_contact(atoms)
                    if contact is not None:
                        blow_up(f"atoms collapsed: {_describe_contact(atoms, contact)}", fh)
                if write_frame:
                    frame = _frame(atoms, step, timestep_fs, free_dof)
                    _append_frame(fh, frame)
                    n_frames += 1
                    last_good = frame
                    temps.append(frame.info["temperature_K"])
                mark_done(fh)
                if write_checkpoint:
                    checkpoint(fh)
                if progress is not None:
                    progress(step, s.n_steps)
        except BaseException:
            if done:  # keep everything up to the last completed step, then let the exception go on
                fh.truncate(done["traj_bytes"])
                checkpoint(fh)
            raise

    settings_out = asdict(s) | ({"n_steps": step} if step > s.n_steps else {})
    result = MDResult(
        workdir=str(workdir), trajectory=str(traj_path), settings=settings_out, timestep_fs=timestep_fs,
        n_steps=step, n_frames=n_frames, n_atoms=len(atoms), formula=formula,
        resumed_from_step=None if ckpt is None else int(ckpt["step"]),
        wall_time_s=time.perf_counter() - t_start, final_temperature_K=float(atoms.get_temperature()),
        final_energy_eV=float(atoms.get_potential_energy()), mean_temperature_K=float(np.mean(temps)),
        input_hash=input_hash, model=model_label, potential=provenance)
    if step >= s.n_steps:
        _write_json_atomic(result_path, result.to_dict())
    return result
