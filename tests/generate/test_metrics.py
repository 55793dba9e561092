from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matflow.generate.metrics import (
    CDVAEMetricError,
    composition_fingerprints,
    composition_scale,
    compositional_validity,
    coverage,
    generation_metrics,
    novelty,
    reconstruction_metrics,
    reference_fingerprint_arrays,
    structural_validity,
    structure_fingerprints,
    uniqueness,
)


def test_identical_sets_match_perfectly(perov_set):
    structures = perov_set.structures[:3]
    result = reconstruction_metrics(structures, [s.copy() for s in structures])
    assert result["match_rate"] == 1.0
    assert result["rms_dist"] == pytest.approx(0.0, abs=1e-8)


def test_a_shuffled_structure_does_not_match(perov_set):
    true = perov_set.structures[0]
    wrong = Structure(true.lattice, true.species, np.random.default_rng(0).random((5, 3)))
    wrong.replace_species({wrong.species[0]: "Xe"})
    assert reconstruction_metrics([wrong], [true])["match_rate"] == 0.0


def test_close_atoms_are_structurally_invalid():
    too_close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.3 / 5.0, 0, 0]])
    fine = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    tiny_cell = Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]])
    assert not structural_validity(too_close)
    assert structural_validity(fine)
    assert not structural_validity(tiny_cell)  # the atom is 0.4 Å from its own image


def test_charge_neutrality():
    assert compositional_validity("NaCl")
    assert compositional_validity("SrTiO3")
    assert not compositional_validity("NaCl2")
    assert not compositional_validity("CaF")
    assert compositional_validity("Cu3Au")  # all-metal alloys count as valid


def test_coverage_counts_neighbours_within_both_cutoffs():
    reference_s = np.array([[0.0, 0.0], [1.0, 1.0]])
    reference_c = np.array([[0.0], [10.0]])
    generated_s = np.array([[0.05, 0.0], [1.0, 1.0]])
    generated_c = np.array([[1.0], [30.0]])  # second is structurally close, compositionally far
    result = coverage(generated_s, generated_c, reference_s, reference_c,
                      structure_cutoff=0.2, composition_cutoff=4.0)
    assert result == {"cov_recall": 0.5, "cov_precision": 0.5}


def test_uniqueness_and_novelty(perov_set):
    a, b = perov_set.structures[:2]
    assert uniqueness([a, a.copy(), b]) == pytest.approx(2 / 3)
    assert novelty([a, b], training=[a]) == pytest.approx(0.5)


def test_generation_metrics_on_the_reference_itself(perov_set):
    reference = perov_set.structures[:4]
    result = generation_metrics(reference, reference, dataset="perov_5", training=reference)
    assert result["structural_validity"] == 1.0
    assert result["cov_recall"] == 1.0 and result["cov_precision"] == 1.0
    assert result["density_emd"] == pytest.approx(0.0)
    assert result["novelty"] == 0.0
    with pytest.raises(CDVAEMetricError, match="dataset='mp20'"):
        generation_metrics(reference, reference, dataset="mp20")


def test_composition_scale_sets_how_strict_the_composition_cutoff_is(perov_set):
    generated, reference = perov_set.structures[:3], perov_set.structures[3:6]
    raw = composition_fingerprints([s.composition for s in generated + reference])
    width = raw.shape[1]
    loose = (np.zeros(width), np.full(width, 1e9))  # every composition within the cutoff
    strict = (np.zeros(width), np.full(width, 1e-9))  # only identical compositions within it
    ref_fps = reference_fingerprint_arrays(reference)
    result = generation_metrics(generated, reference, dataset="perov_5", scale=loose,
                                reference_fingerprints=ref_fps, other_scales={"strict": strict})
    struct_only = coverage(structure_fingerprints(generated), np.zeros((3, 1)),
                           ref_fps[0], np.zeros((3, 1)), structure_cutoff=0.2, composition_cutoff=4.0)
    assert result["cov_recall"] == struct_only["cov_recall"]
    assert result["coverage_by_scale"]["strict"]["cov_recall"] <= result["cov_recall"]
    assert {s.composition.reduced_formula for s in generated}.isdisjoint(
        s.composition.reduced_formula for s in reference)  # so no composition lies within the strict cutoff
    assert result["coverage_by_scale"]["strict"] == {"cov_recall": 0.0, "cov_precision": 0.0}
    mean, std = composition_scale([s.composition for s in generated])
    assert mean.shape == std.shape == (width,) and (std > 0).all()
