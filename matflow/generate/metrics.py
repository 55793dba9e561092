"""Generation and reconstruction metrics of CDVAE (Xie et al., ICLR 2022, section 5).

- Reconstruction: match rate and mean normalised RMS displacement of matched pairs under pymatgen's
  `StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)`.
- Validity: structural (every interatomic distance > 0.5 Å and a non-degenerate cell) and
  compositional (charge neutrality with an electronegativity ordering, via SMACT; Davies et al.,
  J. Open Source Softw. 4, 1361, 2019).
- Coverage COV-R / COV-P: fraction of reference (generated) crystals that have a generated
  (reference) crystal within a CrystalNN structure-fingerprint distance and a Magpie
  composition-fingerprint distance (Zimmermann & Jain, RSC Adv. 10, 6063, 2020; Ward et al.,
  npj Comput. Mater. 2, 16028, 2016). Cutoffs are the paper's: 0.2 / 4 for Perov-5 and Carbon-24,
  0.4 / 10 for MP-20. As in the paper, the two nearest distances are taken independently, and only
  valid generated crystals enter.
- Property statistics: earth mover's distance of density (g/cm^3) and of the number of distinct
  elements between valid generated and reference crystals.
- Uniqueness (no duplicate among the generated) and novelty (no match in the training set).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from typing import Any

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

STRUCTURE_MATCHER_KWARGS = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
COVERAGE_CUTOFFS = {
    "perov_5": {"structure": 0.2, "composition": 4.0},
    "carbon_24": {"structure": 0.2, "composition": 4.0},
    "mp_20": {"structure": 0.4, "composition": 10.0},
}
SINGLE_ELEMENT_DATASETS = frozenset({"carbon_24"})
"""Datasets of one element: compositional validity, composition coverage and the element-count
EMD are meaningless there, and CDVAE reports only structural metrics for them."""
MIN_DISTANCE = 0.5
"""Å; the structural-validity threshold of Court et al., Chem. Mater. 32, 9253 (2020), used by CDVAE."""


class CDVAEMetricError(ValueError):
    """Inputs a metric cannot be computed on."""


def _matcher() -> StructureMatcher:
    return StructureMatcher(**STRUCTURE_MATCHER_KWARGS)


def structural_validity(structure: Structure, min_distance: float = MIN_DISTANCE) -> bool:
    """True when all interatomic distances (periodic images included) exceed `min_distance` Å
    and the cell volume is at least 0.1 Å^3."""
    if structure.volume < 0.1 or not math.isfinite(structure.volume):
        return False
    if len(structure) == 1:
        # the only distances are to the atom's own images: the shortest lattice vector
        return min(structure.lattice.abc) > min_distance
    distances = structure.distance_matrix + np.eye(len(structure)) * 1e6
    if distances.min() <= min_distance:
        return False
    # an atom's own images are not in the distance matrix
    return bool(_shortest_lattice_translation(structure) > min_distance)


def _shortest_lattice_translation(structure: Structure) -> float:
    reduced = structure.lattice.get_lll_reduced_lattice()
    return float(min(reduced.abc))


def compositional_validity(composition: Composition | str) -> bool:
    """SMACT test: some assignment of known oxidation states is charge-neutral and orders the
    electronegativities (Pauling test). Single elements and all-metal alloys count as valid, as in
    CDVAE's evaluation. When an element has no Pauling electronegativity the Pauling test is
    skipped for that assignment.
    """
    import smact
    from smact.screening import pauling_test

    composition = Composition(composition)
    if len(composition) == 0:
        raise CDVAEMetricError("composition is empty")
    integer, _ = composition.get_integer_formula_and_factor()
    reduced = Composition(integer)
    symbols = [element.symbol for element in reduced.elements]
    counts = [int(round(reduced[symbol])) for symbol in symbols]
    if len(symbols) == 1:
        return True
    if all(symbol in smact.metals for symbol in symbols):
        return True
    try:
        elements = [smact.Element(symbol) for symbol in symbols]
    except (NameError, KeyError, ValueError):
        return False
    electronegativities = [element.pauling_eneg for element in elements]
    check_pauling = all(value is not None for value in electronegativities)
    for states in itertools.product(*(element.oxidation_states or [0] for element in elements)):
        if sum(state * count for state, count in zip(states, counts, strict=True)) != 0:
            continue
        if not check_pauling or pauling_test(states, electronegativities):
            return True
    return False


def reconstruction_metrics(predicted: list[Structure], true: list[Structure]) -> dict[str, float]:
    """Match rate and mean RMS displacement (normalised by (V/N)^(1/3)) over matched pairs."""
    if len(predicted) != len(true):
        raise CDVAEMetricError(f"predicted has {len(predicted)} structures, true has {len(true)}")
    if not true:
        raise CDVAEMetricError("no structures to compare")
    matcher = _matcher()
    rms = []
    for pred, ref in zip(predicted, true, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = matcher.get_rms_dist(pred, ref)
            except Exception:  # noqa: BLE001 - degenerate generated lattices count as no match
                result = None
        if result is not None:
            rms.append(result[0])
    return {"match_rate": len(rms) / len(true),
            "rms_dist": float(np.mean(rms)) if rms else float("nan"),
            "n": len(true)}


def structure_fingerprints(structures: list[Structure]) -> np.ndarray:
    """Mean over sites of CrystalNN order-parameter fingerprints (matminer preset 'ops')."""
    from matminer.featurizers.site import CrystalNNFingerprint

    featurizer = CrystalNNFingerprint.from_preset("ops")
    rows = []
    for structure in structures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sites = [featurizer.featurize(structure, i) for i in range(len(structure))]
                rows.append(np.mean(sites, axis=0))
            except Exception:  # noqa: BLE001 - a structure CrystalNN cannot analyse gets NaN
                rows.append(np.full(len(featurizer.feature_labels()), np.nan))
    return np.asarray(rows, dtype=float)


def composition_fingerprints(compositions: list[Composition]) -> np.ndarray:
    """Magpie elemental-property statistics (matminer `ElementProperty` preset 'magpie')."""
    from matminer.featurizers.composition import ElementProperty

    featurizer = ElementProperty.from_preset("magpie")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [featurizer.featurize(Composition(c)) for c in compositions]
    return np.asarray(rows, dtype=float)


def coverage(generated_struct: np.ndarray, generated_comp: np.ndarray, reference_struct: np.ndarray,
             reference_comp: np.ndarray, *, structure_cutoff: float,
             composition_cutoff: float) -> dict[str, float]:
    """COV-R and COV-P from fingerprint arrays (composition ones already standardised).

    Rows with non-finite fingerprints are dropped.
    """
    def finite(struct: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.isfinite(struct).all(axis=1) & np.isfinite(comp).all(axis=1)
        return struct[keep], comp[keep]

    gen_s, gen_c = finite(generated_struct, generated_comp)
    ref_s, ref_c = finite(reference_struct, reference_comp)
    if len(gen_s) == 0 or len(ref_s) == 0:
        return {"cov_recall": 0.0, "cov_precision": 0.0}
    struct_dist = cdist(gen_s, ref_s)
    comp_dist = cdist(gen_c, ref_c)
    recall = (struct_dist.min(axis=0) <= structure_cutoff) & (
        comp_dist.min(axis=0) <= composition_cutoff)
    precision = (struct_dist.min(axis=1) <= structure_cutoff) & (
        comp_dist.min(axis=1) <= composition_cutoff)
    return {"cov_recall": float(recall.mean()), "cov_precision": float(precision.mean())}


def _group_by_formula(structures: list[Structure]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, structure in enumerate(structures):
        groups[structure.composition.reduced_formula].append(index)
    return groups


def _matches(matcher: StructureMatcher, a: Structure, b: Structure) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(matcher.fit(a, b))
        except Exception:  # noqa: BLE001 - degenerate cells do not match anything
            return False


def uniqueness(structures: list[Structure]) -> float:
    """Fraction of structures that do not match an earlier one in the list."""
    if not structures:
        raise CDVAEMetricError("no structures for uniqueness")
    matcher = _matcher()
    unique = 0
    for indices in _group_by_formula(structures).values():
        kept: list[Structure] = []
        for index in indices:
            if not any(_matches(matcher, structures[index], other) for other in kept):
                kept.append(structures[index])
        unique += len(kept)
    return unique / len(structures)


def novelty(structures: list[Structure], training: list[Structure]) -> float:
    """Fraction of structures that match no training structure (compared within a formula)."""
    if not structures:
        raise CDVAEMetricError("no structures for novelty")
    matcher = _matcher()
    training_groups = _group_by_formula(training)
    novel = 0
    for structure in structures:
        candidates = training_groups.get(structure.composition.reduced_formula, [])
        if not any(_matches(matcher, structure, training[i]) for i in candidates):
            novel += 1
    return novel / len(structures)


def composition_scale(compositions: list[Composition]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the Magpie fingerprints of ``compositions``, for standardising
    composition fingerprints before the coverage cutoff (constant features get a scale of 1)."""
    scaling = composition_fingerprints(compositions)
    mean = np.nanmean(scaling, axis=0)
    std = np.nanstd(scaling, axis=0)
    std[~np.isfinite(std) | (std < 1e-8)] = 1.0
    mean[~np.isfinite(mean)] = 0.0
    return mean, std


def generation_metrics(generated: list[Structure], reference: list[Structure], *,
                       dataset: str = "perov_5", training: list[Structure] | None = None,
                       scale: tuple[np.ndarray, np.ndarray] | None = None,
                       reference_fingerprints: tuple[np.ndarray, np.ndarray] | None = None,
                       other_scales: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                       ) -> dict[str, Any]:
    """Validity, coverage, property EMDs, uniqueness and novelty of generated crystals.

    Composition fingerprints are standardised with ``scale`` (mean, std; see ``composition_scale``)
    when given, else with the mean and standard deviation of the training set when given, else of
    the reference set. The scale sets how strict the composition cutoff is: a training set of one
    structure family (Perov-5's ABX3) spreads each Magpie feature less than a broad set of
    inorganic crystals, so the same cutoff admits fewer neighbours. ``reference_fingerprints``
    (structure, raw composition) skips recomputing the reference set's fingerprints when several
    generated sets are scored against it; ``other_scales`` (name -> (mean, std)) adds the coverage
    under each of those scales as ``coverage_by_scale[name]``. For single-element datasets
    (`SINGLE_ELEMENT_DATASETS`, e.g. Carbon-24) only structural metrics are returned, as in the
    paper: validity is structural validity and coverage uses the structure fingerprints alone.
    """
    if dataset not in COVERAGE_CUTOFFS:
        raise CDVAEMetricError(f"dataset={dataset!r}: unknown; known {sorted(COVERAGE_CUTOFFS)}")
    if not generated or not reference:
        raise CDVAEMetricError(f"need generated and reference structures, got {len(generated)} "
                               f"and {len(reference)}")
    struct_valid = np.array([structural_validity(s) for s in generated])
    cutoffs = COVERAGE_CUTOFFS[dataset]
    if dataset in SINGLE_ELEMENT_DATASETS:
        return _structural_generation_metrics(generated, reference, struct_valid, cutoffs, training)
    comp_valid = np.array([compositional_validity(s.composition) for s in generated])
    valid = struct_valid & comp_valid
    valid_structures = [s for s, ok in zip(generated, valid, strict=True) if ok]
    result: dict[str, Any] = {
        "n_generated": len(generated), "n_reference": len(reference),
        "structural_validity": float(struct_valid.mean()),
        "compositional_validity": float(comp_valid.mean()),
        "validity": float(valid.mean()),
    }
    if scale is None:
        scale = composition_scale([s.composition for s in (training if training else reference)])
    mean, std = scale
    if valid_structures:
        gen_struct = structure_fingerprints(valid_structures)
        gen_raw = composition_fingerprints([s.composition for s in valid_structures])
        ref_struct, ref_raw = reference_fingerprints or reference_fingerprint_arrays(reference)
        result.update(coverage(gen_struct, (gen_raw - mean) / std, ref_struct, (ref_raw - mean) / std,
                               structure_cutoff=cutoffs["structure"],
                               composition_cutoff=cutoffs["composition"]))
        if other_scales:
            result["coverage_by_scale"] = {
                name: coverage(gen_struct, (gen_raw - m) / sd, ref_struct, (ref_raw - m) / sd,
                               structure_cutoff=cutoffs["structure"],
                               composition_cutoff=cutoffs["composition"])
                for name, (m, sd) in other_scales.items()}
        result["density_emd"] = float(wasserstein_distance(
            [s.density for s in valid_structures], [s.density for s in reference]))
        result["num_elements_emd"] = float(wasserstein_distance(
            [len(s.composition) for s in valid_structures], [len(s.composition) for s in reference]))
    else:
        result.update({"cov_recall": 0.0, "cov_precision": 0.0, "density_emd": float("nan"),
                       "num_elements_emd": float("nan")})
    result["uniqueness"] = uniqueness(generated)
    if training is not None:
        result["novelty"] = novelty(generated, training)
    result["coverage_cutoffs"] = cutoffs
    return result


def reference_fingerprint_arrays(reference: list[Structure]) -> tuple[np.ndarray, np.ndarray]:
    """Structure and raw (unscaled) composition fingerprints of a reference set."""
    return (structure_fingerprints(reference),
            composition_fingerprints([s.composition for s in reference]))


def _structural_generation_metrics(generated: list[Structure], reference: list[Structure],
                                   struct_valid: np.ndarray, cutoffs: dict[str, float],
                                   training: list[Structure] | None) -> dict[str, Any]:
    """The single-element metric set: structural validity, structure-fingerprint COV-R/COV-P,
    density EMD, uniqueness and novelty."""
    valid_structures = [s for s, ok in zip(generated, struct_valid, strict=True) if ok]
    result: dict[str, Any] = {
        "n_generated": len(generated), "n_reference": len(reference),
        "metric_set": "structural (single-element dataset)",
        "structural_validity": float(struct_valid.mean()),
        "validity": float(struct_valid.mean()),
    }
    if valid_structures:
        gen_struct = structure_fingerprints(valid_structures)
        ref_struct = structure_fingerprints(reference)
        result.update(coverage(gen_struct, np.zeros((len(gen_struct), 1)), ref_struct,
                               np.zeros((len(ref_struct), 1)),
                               structure_cutoff=cutoffs["structure"],
                               composition_cutoff=cutoffs["composition"]))
        result["density_emd"] = float(wasserstein_distance(
            [s.density for s in valid_structures], [s.density for s in reference]))
    else:
        result.update({"cov_recall": 0.0, "cov_precision": 0.0, "density_emd": float("nan")})
    result["uniqueness"] = uniqueness(generated)
    if training is not None:
        result["novelty"] = novelty(generated, training)
    result["coverage_cutoffs"] = {"structure": cutoffs["structure"]}
    return result
