"""Harmonic phonons from finite displacements (phonopy) on a universal potential's forces (CHGNet by
default, any name ``matflow.atomistic.potentials.load_potential`` accepts), and the vibrational
thermodynamics that follow: phonon DOS, S_vib(T), Cv(T), F_vib(T) per atom, imaginary modes flagged.

Units: frequencies THz; S and Cv J K⁻¹ mol⁻¹ per mole of atoms; F_vib kJ mol⁻¹ per mole of atoms.
Imaginary modes (printed by phonopy as negative frequencies) are excluded from the thermodynamics and
reported: a material with ``has_imaginary_modes`` is dynamically unstable, for that potential, at
the geometry used, and its S, Cv should not be trusted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms

from matflow.atomistic.model import DEFAULT_MODEL, package_versions

R_GAS = 8.314462618  # J K⁻¹ mol⁻¹


@dataclass
class PhononResult:
    """Vibrational thermodynamics of one structure on a temperature grid (per mole of atoms)."""

    formula: str
    n_atoms: int
    supercell_matrix: list
    n_displacements: int
    temperatures_K: list
    S_J_per_K_mol_atom: list
    Cv_J_per_K_mol_atom: list
    F_kJ_per_mol_atom: list
    dos_frequencies_THz: list
    dos_states_per_THz_per_atom: list
    min_frequency_THz: float
    max_frequency_THz: float
    gamma_frequencies_THz: list
    imaginary_fraction: float
    has_imaginary_modes: bool
    relaxed: bool
    wall_time_s: float
    input_hash: str
    model: str
    settings: dict
    versions: dict = field(default_factory=package_versions)
    potential: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def at(self, temperature_K: float) -> dict:
        """S, Cv (J/K/mol-atom) and F (kJ/mol-atom) linearly interpolated at one temperature."""
        t = np.asarray(self.temperatures_K)
        return {
            "S_J_per_K_mol_atom": float(np.interp(temperature_K, t, self.S_J_per_K_mol_atom)),
            "Cv_J_per_K_mol_atom": float(np.interp(temperature_K, t, self.Cv_J_per_K_mol_atom)),
            "F_kJ_per_mol_atom": float(np.interp(temperature_K, t, self.F_kJ_per_mol_atom)),
        }


def supercell_for(cell: np.ndarray, min_length_A: float) -> np.ndarray:
    """Diagonal supercell whose three perpendicular widths are at least ``min_length_A`` (Å).

    Perpendicular width (volume / area of the opposite face) is what bounds the force-constant range.
    """
    volume = abs(np.linalg.det(cell))
    widths = np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                       for i in range(3)])
    return np.diag(np.maximum(1, np.ceil(min_length_A / widths - 1e-9)).astype(int))


def supercell_atoms(phonon) -> list[Atoms]:
    """The undisplaced supercell of a phonopy object, then its displaced supercells, as ASE Atoms
    (the undisplaced one gives the residual forces to subtract)."""
    cells = [phonon.supercell, *phonon.supercells_with_displacements]
    return [Atoms(symbols=c.symbols, cell=c.cell, scaled_positions=c.scaled_positions, pbc=True)
            for c in cells]


class PhononCalc:
    """PropCalc-style phonon calculator (phonopy finite displacements on an ASE calculator's forces).

    calculator: an ASE calculator; when None, ``potential`` (a ``load_potential`` name, default
    "chgnet") supplies one, and its provenance is recorded in every result.
    displacement_A: finite displacement (Å). supercell_min_length_A: minimum supercell width (Å).
    mesh_length_A: phonopy automatic q-mesh length (larger = denser). temperatures: t_min_K..t_max_K
    in t_step_K steps. relax: relax positions and cell with the same potential first (fmax_eV_per_A),
    so that the expansion is about that potential's minimum. imaginary_tol_THz: modes below -tol count as imaginary.
    """

    def __init__(self, calculator=None, *, displacement_A: float = 0.01,
                 supercell_min_length_A: float = 10.0, mesh_length_A: float = 40.0,
                 t_min_K: float = 0.0, t_max_K: float = 1000.0, t_step_K: float = 10.0,
                 relax: bool = True, fmax_eV_per_A: float = 0.01, relax_cell: bool = True,
                 relax_max_steps: int = 300,
                 imaginary_tol_THz: float = 0.1, batch_size: int = 4,
                 model_name: str = DEFAULT_MODEL, potential: str = "chgnet") -> None:
        from matflow.atomistic.relax import potential_calculator

        self.calculator, self.potential_provenance, self.model = potential_calculator(
            calculator, potential or "chgnet", model_name)
        self.model_name = model_name
        self.settings = dict(displacement_A=displacement_A, supercell_min_length_A=supercell_min_length_A,
                             mesh_length_A=mesh_length_A, t_min_K=t_min_K, t_max_K=t_max_K,
                             t_step_K=t_step_K, relax=relax, fmax_eV_per_A=fmax_eV_per_A,
                             relax_cell=relax_cell, relax_max_steps=relax_max_steps,
                             imaginary_tol_THz=imaginary_tol_THz)
        self.batch_size = batch_size

    def _forces(self, supercells: list[Atoms]) -> list[np.ndarray]:
        if hasattr(self.calculator, "calc_many"):
            return [r["forces"] for r in self.calculator.calc_many(supercells, batch_size=self.batch_size)]
        out = []
        for sc in supercells:
            sc.calc = self.calculator
            out.append(sc.get_forces().copy())
        return out

    def phonopy(self, structure):
        """The phonopy object with force constants produced (for band structures and custom use)."""
        return self._run(structure)[0]

    def _run(self, structure):
        from phonopy import Phonopy
        from phonopy.structure.atoms import PhonopyAtoms
        from pymatgen.io.ase import AseAtomsAdaptor

        s = self.settings
        atoms = structure.copy() if isinstance(structure, Atoms) else AseAtomsAdaptor.get_atoms(structure)
        if not atoms.pbc.all() or atoms.cell.rank < 3 or atoms.get_volume() < 1e-6:
            raise ValueError("phonons need a periodic 3-D cell (pbc all True, non-zero volume)")
        from matflow.atomistic.fast import check_structure

        check_structure(atoms, atoms.get_chemical_formula())  # overlapping atoms, unknown elements
        relaxed = False
        if s["relax"]:
            from matflow.atomistic.relax import RelaxCalc

            res = RelaxCalc(self.calculator, potential=self.potential_provenance.get("name") or "chgnet",
                            fmax_eV_per_A=s["fmax_eV_per_A"], max_steps=s["relax_max_steps"],
                            optimizer="FIRE", relax_cell=s["relax_cell"],
                            model_name=self.model_name).relax(atoms)
            from pymatgen.core import Structure

            atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(res.structure))
            relaxed = res.converged
        unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                            scaled_positions=atoms.get_scaled_positions())
        sc_matrix = supercell_for(atoms.cell.array, s["supercell_min_length_A"])
        # 'P': thermodynamics per the given cell (phonopy >= 4 would otherwise pick a primitive cell)
        ph = Phonopy(unit, supercell_matrix=sc_matrix, primitive_matrix="P")
        ph.generate_displacements(distance=s["displacement_A"])
        cells = supercell_atoms(ph)
        forces = self._forces(cells)
        # residual forces of the undisplaced supercell (an unrelaxed or loosely relaxed input) would
        # read as stiffness in the one-sided differences: subtract them, as phonopy's --fz does
        ph.forces = np.array([f - forces[0] for f in forces[1:]])
        ph.produce_force_constants()
        ph.symmetrize_force_constants()
        return ph, atoms, relaxed, sc_matrix, len(cells) - 1

    def run(self, structure) -> PhononResult:
        """Phonons and vibrational thermodynamics of one structure (pymatgen Structure or ASE Atoms)."""
        return self.run_with_phonopy(structure)[0]

    def run_with_phonopy(self, structure):
        """``(PhononResult, phonopy object)``; the phonopy object holds the q-mesh just run
        (``.mesh.frequencies``, ``.mesh.weights``) for callers that bin their own DOS."""
        from pymatgen.io.ase import AseAtomsAdaptor

        from matflow.structures import structure_hash

        t0 = time.perf_counter()
        s = self.settings
        pmg = structure if not isinstance(structure, Atoms) else AseAtomsAdaptor.get_structure(structure)
        ph, atoms, relaxed, sc_matrix, n_disp = self._run(structure)
        n = len(atoms)
        ph.run_mesh(s["mesh_length_A"], is_gamma_center=True)
        freqs = ph.mesh.frequencies
        weights = ph.mesh.weights
        imag = freqs < -s["imaginary_tol_THz"]
        imaginary_fraction = float((imag * weights[:, None]).sum() / (weights.sum() * freqs.shape[1]))
        ph.run_qpoints([[0.0, 0.0, 0.0]])
        gamma = ph.qpoints.frequencies[0]
        ph.run_total_dos()
        dos = {"frequency_points": ph.total_dos.frequency_points, "total_dos": ph.total_dos.dos}
        ph.run_thermal_properties(t_min=s["t_min_K"], t_max=s["t_max_K"], t_step=s["t_step_K"],
                                  exclude_gamma_acoustic=True)
        thermal = ph.thermal_properties
        tp = {"temperatures": thermal.temperatures, "entropy": thermal.entropy,
              "heat_capacity": thermal.heat_capacity, "free_energy": thermal.free_energy}
        result = PhononResult(
            formula=pmg.composition.reduced_formula, n_atoms=n, supercell_matrix=sc_matrix.tolist(),
            n_displacements=n_disp, temperatures_K=np.asarray(tp["temperatures"]).tolist(),
            S_J_per_K_mol_atom=(np.asarray(tp["entropy"]) / n).tolist(),
            Cv_J_per_K_mol_atom=(np.asarray(tp["heat_capacity"]) / n).tolist(),
            F_kJ_per_mol_atom=(np.asarray(tp["free_energy"]) / n).tolist(),
            dos_frequencies_THz=np.asarray(dos["frequency_points"]).tolist(),
            dos_states_per_THz_per_atom=(np.asarray(dos["total_dos"]) / n).tolist(),
            min_frequency_THz=float(freqs.min()), max_frequency_THz=float(freqs.max()),
            gamma_frequencies_THz=np.asarray(gamma).tolist(), imaginary_fraction=imaginary_fraction,
            has_imaginary_modes=bool(imag.any()), relaxed=relaxed,
            wall_time_s=time.perf_counter() - t0, input_hash=structure_hash(pmg),
            model=self.model, settings=dict(s), potential=dict(self.potential_provenance))
        return result, ph

    def calc(self, structure) -> dict:
        """Unit-labelled vibrational properties (matcalc PropCalc shape)."""
        res = self.run(structure)
        return {
            "temperatures_K": np.asarray(res.temperatures_K),
            "S_J_per_K_mol_atom": np.asarray(res.S_J_per_K_mol_atom),
            "Cv_J_per_K_mol_atom": np.asarray(res.Cv_J_per_K_mol_atom),
            "F_kJ_per_mol_atom": np.asarray(res.F_kJ_per_mol_atom),
            "has_imaginary_modes": res.has_imaginary_modes,
            "min_frequency_THz": res.min_frequency_THz,
        }

    def calc_many(self, structures: Sequence, *, sources: Sequence[str] | None = None):
        """Run many structures; returns (results, failures) and never stops on one bad structure."""
        from matflow.io import FailedInput

        sources = list(sources) if sources is not None else [f"structure[{i}]" for i in range(len(structures))]
        results, failures = [], []
        for structure, source in zip(structures, sources, strict=True):
            try:
                results.append(self.run(structure))
            except Exception as exc:  # one bad structure must not kill the batch
                failures.append(FailedInput(source, f"{type(exc).__name__}: {exc}"))
        return results, failures


def label_vib_thermo(structures: Sequence, sources: Sequence[str] | None = None, *,
                     temperatures_K: Sequence[float] = tuple(range(0, 1001, 25)),
                     calc: PhononCalc | None = None, potential: str = "chgnet"):
    """Label structures with a potential's (default CHGNet) S_vib(T), Cv(T), F_vib(T) in long
    format for model training.

    Returns (table, failures): one row per (structure, temperature) with ``structure_hash``,
    ``source``, ``temperature_K``, ``S_J_per_K_mol_atom``, ``Cv_J_per_K_mol_atom``,
    ``F_kJ_per_mol_atom`` and ``has_imaginary_modes``, the layout a MODNet-style model uses to learn
    temperature functions; failures are ``matflow.io.FailedInput``.
    """
    import pandas as pd

    calc = calc or PhononCalc(potential=potential)
    sources = list(sources) if sources is not None else [f"structure[{i}]" for i in range(len(structures))]
    results, failures = calc.calc_many(structures, sources=sources)
    failed = {f.source for f in failures}
    rows = []
    ok_sources = [src for src in sources if src not in failed]
    for source, res in zip(ok_sources, results, strict=True):
        key = res.input_hash
        for t in temperatures_K:
            at = res.at(float(t))
            rows.append({"structure_hash": key, "source": source, "formula": res.formula,
                         "temperature_K": float(t), **at,
                         "has_imaginary_modes": res.has_imaginary_modes})
    return pd.DataFrame(rows), failures
