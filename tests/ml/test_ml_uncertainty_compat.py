"""Saved models keep predicting what they predicted before ``FeatureCleaner`` and the distance widening.

Reference values: the shipped models on the ``structure`` features of NaCl and the first two DFPT fixture
materials, recorded with the estimator's earlier own-median imputation; the second row has five of the
model's selected features set to NaN so the stored training medians are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from matflow.ml.registry import load
from matflow.settings import PROJECT_ROOT

DATA = Path(__file__).parent.parent / "data"

REFERENCE = {
    "alexandria_cv300@v2": {
        "mean": [24.055773241, 21.382413812, 13.707175439],
        "lower": [23.506303128, 20.984220073, 12.967252986],
        "upper": [24.605243354, 21.780607550, 14.447097892],
    },
    "matbench_phonons@v6": {
        "mean": [200.653882062, 809.882167109, 936.153065668],
        "lower": [129.117296444, 736.540306577, 818.699076970],
        "upper": [272.190467679, 883.224027642, 1053.607054365],
    },
}


@pytest.fixture(scope="module")
def features():
    from matflow.datasets import load_vib_thermo_fixture
    from matflow.featurize import featurize_structures

    structures = [Structure.from_file(DATA / "good" / "NaCl.cif")]
    structures += list(load_vib_thermo_fixture()["structure"].iloc[:2])
    table = featurize_structures(structures, "structure", sources=["NaCl", "fx0", "fx1"], n_jobs=1)
    return table.table[table.feature_columns].astype(float)


@pytest.mark.parametrize("spec", list(REFERENCE))
def test_shipped_model_predictions_unchanged(spec, features):
    model = load(*spec.split("@"), root=PROJECT_ROOT / "models")
    est = model.estimator
    assert est.widening_ is None  # saved before the distance widening: its intervals stay as they were
    X = features[model.manifest["featurizer"]["feature_names_in"]].copy()
    X.loc[X.index[1], est.selected_names_[:5]] = np.nan
    pred = est.predict_dist(X)
    for field, values in REFERENCE[spec].items():
        np.testing.assert_allclose(getattr(pred, field), values, rtol=0, atol=1e-6, err_msg=f"{spec} {field}")
    assert np.all(pred.interval_ok)
    np.testing.assert_array_equal(est.cleaner_.medians_, est.get_state()[0]["array.medians"].numpy())
    X.loc[X.index[1], est.selected_names_[:5]] = np.inf  # inf is missing too, as in the feature tables
    np.testing.assert_allclose(est.predict_dist(X).mean, REFERENCE[spec]["mean"], rtol=0, atol=1e-6)
