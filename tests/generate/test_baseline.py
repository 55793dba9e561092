from __future__ import annotations

from collections import Counter

import pytest

from matflow.generate.baseline import RandomCrystalBaseline


def test_random_baseline_draws_training_compositions(perov_set):
    baseline = RandomCrystalBaseline().fit(perov_set.structures)
    samples = baseline.sample(6, seed=3)
    training = {frozenset(Counter(str(s.specie) for s in x).items()) for x in perov_set.structures}
    for structure in samples:
        assert frozenset(Counter(str(s.specie) for s in structure).items()) in training
        assert structure.volume > 0
    assert [s.frac_coords.tolist() for s in baseline.sample(6, seed=3)] == [
        s.frac_coords.tolist() for s in samples]


def test_random_baseline_needs_fit_and_data():
    with pytest.raises(ValueError, match="not fitted"):
        RandomCrystalBaseline().sample(1)
    with pytest.raises(ValueError, match="empty"):
        RandomCrystalBaseline().fit([])
