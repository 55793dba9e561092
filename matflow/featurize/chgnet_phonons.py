"""Phonon and learned descriptors from pretrained CHGNet, as matminer featurizers.

The highest phonon frequencies of a crystal are set by its stiffest bonds and lightest atoms, which
composition and geometry descriptors only see indirectly. A pretrained universal potential sees them
directly: finite displacements in the primitive cell (phonopy, symmetry-reduced, typically 1–10
force calls on a few atoms) give the exact Γ-point dynamical matrix of the CHGNet energy surface,
and a small supercell adds the zone-boundary q-points. CHGNet is known to soften phonons (its Γ
maxima are about 0.8 of DFT's on Matbench phonons), so these are descriptors for a learned model,
not predictions of DFT frequencies. CHGNet's pooled crystal feature vector is offered as well.
"""

from __future__ import annotations

import os

import numpy as np
from matminer.featurizers.base import BaseFeaturizer
from pymatgen.core import Structure

THZ_TO_CM = 33.35641
_CALCULATOR = None


def _calculator():
    """One fast CHGNet calculator per process (workers of a parallel featurization load their own)."""
    global _CALCULATOR
    if _CALCULATOR is None:
        from matflow.atomistic.fast import FastCHGNetCalculator

        if os.environ.get("MATFLOW_FEATURIZE_WORKER"):
            import torch

            torch.set_num_threads(1)

        _CALCULATOR = FastCHGNetCalculator(skin=0.0, compute_magmoms=False)
    return _CALCULATOR


def _require_ordered(structure: Structure) -> None:
    if not structure.is_ordered:
        raise ValueError("needs an ordered structure (CHGNet has no partial occupancies)")


def _phonopy_with_chgnet_forces(structure: Structure, min_width_A: float | None,
                                displacement_A: float, batch_size: int, symmetrize: bool):
    """phonopy force constants of the primitive cell of ``structure`` from CHGNet forces, in the
    primitive cell itself (``min_width_A=None``) or in a diagonal supercell at least that wide,
    with the undisplaced supercell's residual forces subtracted (the input is rarely a CHGNet
    minimum, and a one-sided difference would read them as stiffness; on Matbench phonons this
    tightens the ratio of the Γ maximum to the DFT peak considerably). Returns the phonopy object
    and CHGNet's results for the undisplaced supercell."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from matflow.atomistic.phonons import supercell_atoms, supercell_for

    _require_ordered(structure)
    structure = structure.get_primitive_structure(tolerance=0.01)
    matrix = (np.eye(3, dtype=int) if min_width_A is None
              else supercell_for(structure.lattice.matrix, min_width_A))
    unit = PhonopyAtoms(symbols=[site.specie.symbol for site in structure],
                        cell=structure.lattice.matrix, scaled_positions=structure.frac_coords)
    phonon = Phonopy(unit, supercell_matrix=matrix, primitive_matrix=np.eye(3))
    phonon.generate_displacements(distance=displacement_A)
    results = _calculator().calc_many(supercell_atoms(phonon), batch_size=batch_size)
    phonon.forces = np.array([r["forces"] - results[0]["forces"] for r in results[1:]])
    phonon.produce_force_constants()
    if symmetrize:  # impose the acoustic sum rule and the crystal symmetry
        phonon.symmetrize_force_constants()
    return phonon, results[0]


class CHGNetGammaPhonons(BaseFeaturizer):
    """Γ-point phonon frequencies (cm⁻¹) and the CHGNet energy, force and pressure of a structure.

    The structure is used as given (not relaxed): the forces on the undisplaced cell are subtracted
    from the displaced ones, and the residual force and pressure are themselves reported, so a model
    can tell when the CHGNet minimum is far from the input geometry. Imaginary modes are negative
    frequencies.
    """

    def __init__(self, displacement_A: float = 0.01, batch_size: int = 8):
        self.displacement_A = displacement_A
        self.batch_size = batch_size
        self.residual_forces = "subtracted"
        self.cell = "primitive"  # Γ of the primitive cell: a conventional or supercell input would
        # otherwise fold zone-boundary modes into "Γ" and change the descriptors

    def featurize(self, structure: Structure) -> list[float]:
        from ase import units

        phonon, pristine = _phonopy_with_chgnet_forces(structure, None, self.displacement_A,
                                                        self.batch_size, symmetrize=False)
        freqs = np.sort(phonon.get_frequencies([0.0, 0.0, 0.0]) * THZ_TO_CM)
        optical = freqs[3:]
        n_atoms = len(phonon.unitcell)
        pressure_GPa = -float(np.trace(pristine["stress"])) / 3 / units.GPa  # stress in eV/Å³
        return [
            float(freqs[-1]),
            float(optical.mean()) if len(optical) else float("nan"),
            float(optical.std()) if len(optical) else float("nan"),
            float(optical.min()) if len(optical) else float("nan"),
            float(freqs[0]),
            float(np.mean(freqs < -1.0)),
            pristine["energy"] / n_atoms,
            float(np.linalg.norm(pristine["forces"], axis=1).max()),
            pressure_GPa,
        ]

    def feature_labels(self) -> list[str]:
        return ["gamma_max_freq_cm-1", "gamma_mean_optical_freq_cm-1", "gamma_std_optical_freq_cm-1",
                "gamma_min_optical_freq_cm-1", "gamma_min_freq_cm-1", "gamma_imaginary_fraction",
                "chgnet_energy_eV_per_atom", "chgnet_max_force_eV_per_A", "chgnet_pressure_GPa"]

    def citations(self) -> list[str]:
        return ["@article{deng2023chgnet, title={CHGNet as a pretrained universal neural network "
                "potential for charge-informed atomistic modelling}, journal={Nature Machine "
                "Intelligence}, volume={5}, pages={1031--1041}, year={2023}}",
                "@article{togo2023phonopy, title={Implementation strategies in phonopy and phono3py}, "
                "journal={J. Phys.: Condens. Matter}, volume={35}, pages={353001}, year={2023}}"]

    def implementors(self) -> list[str]:
        return ["matflow"]


class CHGNetEmbedding(BaseFeaturizer):
    """CHGNet's 64-dimensional pooled crystal feature (the input of its energy readout).

    A representation learned from 1.5 million DFT energies, forces, stresses and magnetic moments
    of the Materials Project trajectory set; a feature selector can pick the components that carry
    information about another property.
    """

    def featurize(self, structure: Structure) -> list[float]:
        from pymatgen.io.ase import AseAtomsAdaptor

        _require_ordered(structure)
        return _calculator().crystal_features([AseAtomsAdaptor.get_atoms(structure)])[0].tolist()

    def feature_labels(self) -> list[str]:
        return [f"crystal_fea_{i}" for i in range(64)]

    def citations(self) -> list[str]:
        return CHGNetGammaPhonons().citations()[:1]

    def implementors(self) -> list[str]:
        return ["matflow"]


class CHGNetSupercellPhonons(BaseFeaturizer):
    """Phonon frequencies (cm⁻¹) at the commensurate q-points of a supercell at least
    ``min_width_A`` wide, from CHGNet force constants: the top band away from Γ, where the flat
    optical bands that make the last peaks of a phonon DOS often lie. About 10x the cost of
    ``CHGNetGammaPhonons``."""

    def __init__(self, min_width_A: float = 6.0, displacement_A: float = 0.01, batch_size: int = 8):
        self.min_width_A = min_width_A
        self.displacement_A = displacement_A
        self.batch_size = batch_size

    def featurize(self, structure: Structure) -> list[float]:
        from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

        phonon, _ = _phonopy_with_chgnet_forces(structure, self.min_width_A, self.displacement_A,
                                                self.batch_size, symmetrize=True)
        qpoints = get_commensurate_points(phonon.supercell_matrix)
        freqs = np.sort(np.array([phonon.get_frequencies(q) for q in qpoints]) * THZ_TO_CM, axis=1)
        top = freqs[:, -1]
        return [float(freqs.max()), float(top.mean()), float(top.min()), float(np.median(top)),
                float(freqs.mean()), float(np.mean(freqs < -1.0)), float(len(qpoints))]

    def feature_labels(self) -> list[str]:
        return ["sc_max_freq_cm-1", "sc_top_band_mean_cm-1", "sc_top_band_min_cm-1",
                "sc_top_band_median_cm-1", "sc_mean_freq_cm-1", "sc_imaginary_fraction",
                "sc_n_qpoints"]

    def citations(self) -> list[str]:
        return CHGNetGammaPhonons().citations()

    def implementors(self) -> list[str]:
        return ["matflow"]
