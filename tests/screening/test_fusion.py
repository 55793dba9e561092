"""Evidence fusion with fitted reliabilities, and the data-driven source it leans on."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from matflow.screening.composition import composition_key, parse_composition
from matflow.screening.data import load_phase_labels
from matflow.screening.fusion import (
    EvidenceFusion,
    FusionError,
    best_accuracy_threshold,
    fcc_probability,
    single_phase_probability,
)
from matflow.screening.phases import FCC, MP, N_FOCAL, OMEGA, PHASE_MASKS, PHASES
from matflow.screening.sources.base import EvidenceSource
from matflow.screening.sources.classifier import DataSource


class PriorSource(EvidenceSource):
    """Training phase frequencies, half committed, half on Ω: honest and uninformative."""

    name: ClassVar[str] = "prior"

    def fit(self, compositions, phases):
        counts = pd.Series(list(phases)).value_counts(normalize=True)
        self.masses_ = np.zeros(N_FOCAL)
        for phase, share in counts.items():
            self.masses_[PHASE_MASKS[phase]] = 0.5 * share
        self.masses_[OMEGA] += 0.5
        return self

    def masses(self, compositions):
        return np.tile(self.masses_, (len(compositions), 1))


class MemorizerSource(EvidenceSource):
    """Certain of the training label of an alloy it has seen, certain of FCC for any other."""

    name: ClassVar[str] = "memorizer"

    def fit(self, compositions, phases):
        self.seen_ = {composition_key(c): p for c, p in zip(compositions, phases, strict=True)}
        return self

    def masses(self, compositions):
        out = np.zeros((len(compositions), N_FOCAL))
        for row, comp in enumerate(compositions):
            out[row, PHASE_MASKS[self.seen_.get(composition_key(comp), "FCC")]] = 1.0
        return out


def _synthetic(n_groups: int = 12, per_group: int = 6, seed: int = 0):
    """Alloys in distinct element sets; mostly multi-phase, so 'always FCC' is usually wrong."""
    rng = np.random.default_rng(seed)
    pool = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "W"]
    comps, phases = [], []
    for g in range(n_groups):
        elements = [pool[g], pool[(g + 3) % 12], pool[(g + 7) % 12]]
        for _ in range(per_group):
            x = rng.dirichlet(np.ones(3)) * 0.7 + 0.1
            comps.append(dict(zip(elements, x / x.sum(), strict=True)))
            phases.append(str(rng.choice(["MP", "MP", "MP", "BCC", "FCC"])))
    return comps, np.array(phases)


def test_memorizer_is_discounted_because_rates_use_out_of_fold_masses() -> None:
    comps, phases = _synthetic()
    fusion = EvidenceFusion([PriorSource(), MemorizerSource()], n_inner_splits=3).fit(comps, phases)
    # in-sample the memorizer is always right; out of fold it only ever says FCC
    assert fusion.rates_["memorizer"] >= 0.5
    assert fusion.rates_["memorizer"] > fusion.rates_["prior"]


def test_rates_ignore_test_rows_labels() -> None:
    comps, phases = _synthetic(seed=1)
    train, test = np.arange(48), np.arange(48, len(comps))
    relabelled = phases.copy()
    relabelled[test] = np.where(phases[test] == "MP", "FCC", "MP")
    fits = []
    for labels in (phases, relabelled):
        full = EvidenceFusion([PriorSource(), MemorizerSource()])
        full.fit([comps[i] for i in train], labels[train])
        fits.append(full)
    assert fits[0].rates_ == fits[1].rates_
    assert fits[0].threshold_single_phase_ == fits[1].threshold_single_phase_
    # whereas changing training labels does change what is learned
    flipped = phases.copy()
    flipped[train] = np.where(phases[train] == "MP", "FCC", "MP")
    other = EvidenceFusion([PriorSource(), MemorizerSource()]).fit(
        [comps[i] for i in train], flipped[train]
    )
    assert (other.rates_, other.threshold_single_phase_) != (
        fits[0].rates_,
        fits[0].threshold_single_phase_,
    )


@pytest.fixture(scope="module")
def small_labels() -> pd.DataFrame:
    labels = load_phase_labels()
    groups = labels["element_set"].drop_duplicates().sample(n=60, random_state=3)
    return labels[labels["element_set"].isin(groups)].head(240).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted_data_source(small_labels) -> DataSource:
    return DataSource(max_iter=20).fit(list(small_labels["composition"]), small_labels["phase"])


def test_hierarchical_masses_keep_the_lattice_odds_and_the_single_phase_probability() -> None:
    """P(FCC | FCC or BCC) stays the lattice model's odds however unsure the single-phase model
    is (up to the small (1 - c) terms), and with c = 1 BetP(SS) is the single-phase probability."""
    from matflow.evidence import pignistic
    from matflow.screening.fusion import fcc_probability, single_phase_probability

    p_single = np.array([0.05, 0.5, 0.95])
    lattice = np.array([[0.8, 0.2, 0.0]] * 3)
    exact = DataSource._hierarchical_masses(p_single, lattice, np.ones(3))
    assert np.allclose(exact.sum(axis=1), 1.0) and exact[:, 0].max() == 0.0
    assert np.allclose(single_phase_probability(exact), p_single)
    assert np.allclose(fcc_probability(exact), 0.8)
    assert np.allclose(pignistic(exact)[:, 3], 1 - p_single)
    unsure = DataSource._hierarchical_masses(p_single, lattice, np.full(3, 0.95))
    assert np.all(np.abs(fcc_probability(unsure) - 0.8) < 0.02)  # 0.70 at p = 0.05 with the lattice masses scaled by c·p


def test_data_source_masses_are_valid_and_ignorance_grows_with_distance(
    fitted_data_source, small_labels
) -> None:
    ds = fitted_data_source
    near = list(small_labels["composition"].head(5))
    candidates = ("Os", "Ir", "Tc", "Rh", "Ru", "Pt", "Au", "Ag", "Sc", "Ga", "In", "Sn", "Re")
    unseen = [el for el in candidates if el not in ds.vocabulary_]
    far = [dict.fromkeys(unseen[:2], 0.5)]
    m = ds.masses(near + far)
    assert m.shape == (6, N_FOCAL)
    assert np.allclose(m.sum(axis=1), 1.0)
    assert (m >= 0).all() and (m[:, 0] == 0).all()
    assert m[-1, OMEGA] > m[:5, OMEGA].max()  # nothing like it in training
    # both classifiers' evidence keeps 1 - c on Ω, and their conjunction keeps (1 - c)^2 there
    assert m[-1, OMEGA] == pytest.approx((1 - ds.max_confidence * np.exp(-1 / ds.distance_scale)) ** 2)
    info = ds.explain(near[0])
    assert info["distance_to_nearest"] == 0.0
    assert info["nearest_training_alloy"] == composition_key(near[0])
    assert 0.0 <= info["p_single_phase"] <= 1.0


def test_data_source_is_a_sklearn_estimator(fitted_data_source) -> None:
    twin = clone(fitted_data_source)
    assert twin.get_params() == fitted_data_source.get_params()
    assert not hasattr(twin, "feature_names_")
    with pytest.raises(ValueError, match="max_confidence"):
        DataSource(max_confidence=1.5).fit([{"Co": 0.5, "Ni": 0.5}], ["FCC"])
    with pytest.raises(ValueError, match="unknown labels"):
        DataSource().fit([{"Co": 0.5, "Ni": 0.5}], ["liquid"])


@pytest.mark.parametrize("rule", ["dempster", "yager", "dubois_prade"])
def test_fused_probabilities_are_probabilities(small_labels, rule) -> None:
    from matflow.screening.sources.rules import RulesSource

    comps, phases = list(small_labels["composition"]), small_labels["phase"].to_numpy()
    # rates fitted by inner CV for Dempster's rule; fixed for the others to keep the test short
    reliabilities = "fit" if rule == "dempster" else {"rules": 0.7, "data": 0.9}
    fusion = EvidenceFusion(
        [RulesSource(), DataSource(max_iter=20)],
        rule=rule,
        reliabilities=reliabilities,
        rate_grid=(0.01, 0.3, 0.6, 1.0),
        n_passes=1,
    ).fit(comps[:200], phases[:200])
    fused, conflict, per_source = fusion.masses(comps[200:])
    assert set(per_source) == {"rules", "data"}
    assert np.allclose(fused.sum(axis=1), 1.0) and (fused >= -1e-12).all()
    assert ((conflict >= 0) & (conflict <= 1)).all()
    for p in (fusion.predict_proba_single_phase(comps[200:]), fusion.predict_proba_fcc(comps[200:])):
        assert ((p >= 0) & (p <= 1)).all()
    assert set(fusion.rates_) == {"rules", "data"}
    assert all(0.0 <= r <= 1.0 for r in fusion.rates_.values())
    assert fusion.predict_single_phase(comps[200:]).dtype == bool


def test_fixed_reliability_zero_silences_a_source() -> None:
    comps, phases = _synthetic()
    fusion = EvidenceFusion(
        [PriorSource(), MemorizerSource()], reliabilities={"prior": 1.0, "memorizer": 0.0}
    ).fit(comps, phases)
    assert fusion.rates_ == {"prior": 0.0, "memorizer": 1.0}
    fused, conflict, per_source = fusion.masses(comps[:4])
    assert np.allclose(fused, per_source["prior"])
    assert np.allclose(conflict, 0.0)


def test_task_probabilities_from_pignistic() -> None:
    m = np.zeros((2, N_FOCAL))
    m[0, FCC], m[0, OMEGA] = 0.6, 0.4  # BetP: FCC .7, BCC .1, HCP .1, MP .1
    m[1, MP] = 1.0
    assert single_phase_probability(m) == pytest.approx([0.9, 0.0])
    assert fcc_probability(m) == pytest.approx([0.875, 0.5])
    assert best_accuracy_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) <= 0.8


def test_bad_configuration_is_named() -> None:
    comps, phases = _synthetic()
    with pytest.raises(FusionError, match="rule 'bogus'"):
        EvidenceFusion([PriorSource()], rule="bogus").fit(comps, phases)
    with pytest.raises(FusionError, match="duplicate names"):
        EvidenceFusion([PriorSource(), PriorSource()]).fit(comps, phases)
    with pytest.raises(FusionError, match="no value for source 'memorizer'"):
        EvidenceFusion([PriorSource(), MemorizerSource()], reliabilities={"prior": 1}).fit(
            comps, phases
        )
    with pytest.raises(FusionError, match="empty"):
        EvidenceFusion([]).fit(comps, phases)
    with pytest.raises(FusionError, match="unknown labels"):
        EvidenceFusion([PriorSource()]).fit(comps[:2], ["FCC", "liquid"])
    with pytest.raises(FusionError, match="not fitted"):
        EvidenceFusion([PriorSource()]).masses(comps[:1])
    with pytest.raises(FusionError, match="element set"):
        EvidenceFusion([PriorSource()]).fit([parse_composition("CoNi")] * 3, ["FCC"] * 3)


def test_base_rates_turn_ignorance_into_the_training_frequencies() -> None:
    """A source that knows nothing (all mass on Ω) gives P = 3/4 single-phase with equal base rates;
    with the training base rates it gives the training frequency of single-phase alloys, and the
    multi-class Brier score of that honest ignorance is lower, so "auto" picks the training rates."""
    comps, phases = _synthetic()  # 3 of 5 phases drawn multi-phase

    class IgnorantSource(PriorSource):
        name: ClassVar[str] = "ignorant"

        def fit(self, compositions, phases):
            self.masses_ = np.zeros(N_FOCAL)
            self.masses_[OMEGA] = 1.0
            return self

    uniform = EvidenceFusion([IgnorantSource()]).fit(comps, phases)
    assert uniform.base_rate_ is None and uniform.base_rate_choice_ == "uniform"
    assert uniform.predict_proba_single_phase(comps[:3]) == pytest.approx([0.75] * 3)
    training = EvidenceFusion([IgnorantSource()], base_rates="training").fit(comps, phases)
    counts = np.array([np.sum(phases == p) + 1.0 for p in PHASES])
    np.testing.assert_allclose(training.predict_proba(comps[:1])[0], counts / counts.sum())
    auto = EvidenceFusion([IgnorantSource()], base_rates="auto").fit(comps, phases)
    assert auto.base_rate_choice_ == "training"
    assert auto.inner_brier_by_base_rate_["training"] < auto.inner_brier_by_base_rate_["uniform"]
    with pytest.raises(FusionError, match="base_rates 'prior'"):
        EvidenceFusion([PriorSource()], base_rates="prior").fit(comps, phases)
