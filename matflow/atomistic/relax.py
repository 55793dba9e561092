"""Relax atomic positions and, optionally, the cell with a universal potential (CHGNet by default)
and an ASE optimiser.

The cell is relaxed through ASE's FrechetCellFilter (log-strain degrees of freedom, well conditioned
for both positions and lattice), so one optimiser handles both. Forces are converged to ``fmax``
(eV/Å) and, with the cell free, the stress to the same number in eV/Å³-per-atom units of the filter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units

from matflow.atomistic.model import DEFAULT_MODEL, load_chgnet, package_versions

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def potential_calculator(calculator=None, potential: str = "chgnet",
                         model_name: str = DEFAULT_MODEL) -> tuple[object, dict, str]:
    """``(ASE calculator, provenance, model label)`` for a step: the given calculator, else the
    named potential's (``load_potential``; an unknown name raises UnknownPotentialError).

    CHGNet with another ``model_name`` than the default keeps matflow's fast CHGNet path; a
    caller's own calculator gets CHGNet provenance only when it is the default fast CHGNet.
    """
    from matflow.atomistic.potentials import canonical_name, load_potential

    name = canonical_name(potential)
    if calculator is None and not (name == "chgnet" and model_name != DEFAULT_MODEL):
        pot = load_potential(name)
        prov = pot.provenance()
        return pot.calculator(), prov, prov["model"]
    if calculator is None:
        from matflow.atomistic.fast import FastCHGNetCalculator

        calculator = FastCHGNetCalculator(load_chgnet(model_name))
    if type(calculator).__name__ == "FastCHGNetCalculator" and model_name == DEFAULT_MODEL:
        prov = load_potential("chgnet").provenance()
        return calculator, prov, prov["model"]
    label = f"CHGNet {model_name}" if type(calculator).__name__ == "FastCHGNetCalculator" \
        else type(calculator).__name__
    return calculator, {"name": None, "model": label}, label


@dataclass
class RelaxResult:
    """Outcome of one relaxation, with the relaxed structure as a pymatgen dict."""

    source: str
    formula: str
    n_atoms: int
    converged: bool
    n_steps: int
    initial_energy_eV: float
    final_energy_eV: float
    final_energy_eV_per_atom: float
    max_force_eV_per_A: float
    pressure_GPa: float
    initial_volume_A3: float
    final_volume_A3: float
    structure: dict
    trajectory: str | None
    wall_time_s: float
    input_hash: str
    model: str
    settings: dict
    versions: dict = field(default_factory=package_versions)
    potential: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class RelaxCalc:
    """PropCalc-style relaxer: ``calc(structure) -> dict`` of unit-labelled properties.

    fmax_eV_per_A: force convergence (eV/Å). relax_cell: also relax the lattice (FrechetCellFilter).
    pressure_GPa: external hydrostatic pressure for the cell relaxation. max_steps: optimiser steps.
    potential: a ``load_potential`` name, used when no ``calculator`` is given; its provenance is
    recorded in every result.
    """

    def __init__(self, calculator=None, *, fmax_eV_per_A: float = 0.05, max_steps: int = 500,
                 optimizer: str = "FIRE", relax_cell: bool = True, pressure_GPa: float = 0.0,
                 model_name: str = DEFAULT_MODEL, potential: str = "chgnet") -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
        if fmax_eV_per_A <= 0 or max_steps < 1:
            raise ValueError("fmax_eV_per_A must be > 0 and max_steps >= 1")
        self.calculator, self.potential_provenance, self.model = potential_calculator(
            calculator, potential, model_name)
        self.model_name = model_name
        self.settings = dict(fmax_eV_per_A=fmax_eV_per_A, max_steps=max_steps, optimizer=optimizer,
                             relax_cell=relax_cell, pressure_GPa=pressure_GPa)

    def relax(self, structure, *, source: str = "structure", trajectory: str | os.PathLike | None = None,
              progress: Callable[[int], None] | None = None) -> RelaxResult:
        """Relax one structure (pymatgen Structure or ASE Atoms) and return the result document."""
        from ase import optimize
        from ase.filters import FrechetCellFilter
        from pymatgen.io.ase import AseAtomsAdaptor

        from matflow.atomistic.fast import check_structure
        from matflow.structures import structure_hash

        t0 = time.perf_counter()
        s = self.settings
        atoms = structure.copy() if isinstance(structure, Atoms) else AseAtomsAdaptor.get_atoms(structure)
        check_structure(atoms, source)
        pmg = AseAtomsAdaptor.get_structure(atoms)
        atoms.calc = self.calculator
        e0, v0 = float(atoms.get_potential_energy()), float(atoms.get_volume())
        target = FrechetCellFilter(atoms, scalar_pressure=s["pressure_GPa"] * units.GPa) \
            if s["relax_cell"] else atoms
        opt = getattr(optimize, s["optimizer"])(target, logfile=None,
                                                trajectory=str(trajectory) if trajectory else None)
        if progress is not None:
            opt.attach(lambda: progress(opt.nsteps), interval=1)
        converged = bool(opt.run(fmax=s["fmax_eV_per_A"], steps=s["max_steps"]))
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        final = AseAtomsAdaptor.get_structure(atoms)
        energy = float(atoms.get_potential_energy())
        return RelaxResult(
            source=source, formula=final.composition.reduced_formula, n_atoms=len(atoms),
            converged=converged, n_steps=int(opt.nsteps), initial_energy_eV=e0,
            final_energy_eV=energy, final_energy_eV_per_atom=energy / len(atoms),
            max_force_eV_per_A=float(np.linalg.norm(forces, axis=1).max()),
            pressure_GPa=float(-np.trace(stress) / 3 / units.GPa), initial_volume_A3=v0,
            final_volume_A3=float(atoms.get_volume()), structure=final.as_dict(),
            trajectory=str(trajectory) if trajectory else None, wall_time_s=time.perf_counter() - t0,
            input_hash=structure_hash(pmg), model=self.model, settings=dict(s),
            potential=dict(self.potential_provenance))

    def calc(self, structure) -> dict:
        """Unit-labelled properties of the relaxed structure (matcalc PropCalc shape)."""
        res = self.relax(structure)
        from pymatgen.core import Structure

        return {"final_structure": Structure.from_dict(res.structure),
                "energy_eV_per_atom": res.final_energy_eV_per_atom,
                "volume_A3": res.final_volume_A3, "pressure_GPa": res.pressure_GPa,
                "max_force_eV_per_A": res.max_force_eV_per_A, "converged": res.converged,
                "n_steps": res.n_steps}

    def calc_many(self, structures: Sequence, *, sources: Sequence[str] | None = None,
                  workdir: str | os.PathLike | None = None) -> tuple[list[RelaxResult], list]:
        """Relax many structures; one failure does not stop the batch.

        Returns (results, failures) where failures are ``matflow.io.FailedInput`` (source, reason).
        """
        from matflow.io import FailedInput

        sources = list(sources) if sources is not None else [f"structure[{i}]" for i in range(len(structures))]
        results, failures = [], []
        for structure, source in zip(structures, sources, strict=True):
            traj = None
            if workdir is not None:
                Path(workdir).mkdir(parents=True, exist_ok=True)
                traj = Path(workdir) / f"{Path(source).stem}.relax.traj"
            try:
                results.append(self.relax(structure, source=source, trajectory=traj))
            except Exception as exc:  # one bad structure must not kill the batch
                failures.append(FailedInput(source, f"{type(exc).__name__}: {exc}"))
        return results, failures


def relax(structure, **kwargs) -> RelaxResult:
    """Relax one structure with default settings and CHGNet unless ``potential`` names another
    (see RelaxCalc for the options)."""
    traj = kwargs.pop("trajectory", None)
    source = kwargs.pop("source", "structure")
    return RelaxCalc(**kwargs).relax(structure, source=source, trajectory=traj)
