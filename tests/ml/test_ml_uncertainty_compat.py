"""Saved models keep predicting what they predicted when they were registered.

Reference values: the shipped ``structure``-preset models on the features of NaCl and the first two DFPT
fixture materials, recorded when alexandria_cv300 v4 (two-stage widening) and matbench_phonons v8 (one-stage widening, loaded
as ``"pooled"``) were registered; the second row has five of the model's selected features set to NaN so the
stored training medians are exercised. A model saved before the widening still loads without one.
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
    "alexandria_cv300@v4": {
        "mean": [24.07427578, 20.756495173, 13.673943218],
        "lower": [23.638662391, 18.65514472, 13.067973294],
        "upper": [24.50988917, 22.857845626, 14.279913142],
    },
    "matbench_phonons@v8": {
        "mean": [195.363384625, 811.985847919, 931.073017465],
        "lower": [122.908761289, 710.854362498, 716.405280405],
        "upper": [267.81800796, 913.11733334, 1145.740754525],
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
    assert est.widening_ is not None
    assert est.widening_form == {"alexandria_cv300@v4": "two_stage", "matbench_phonons@v8": "pooled"}[spec]
    X = features[model.manifest["featurizer"]["feature_names_in"]].copy()
    X.loc[X.index[1], est.selected_names_[:5]] = np.nan
    pred = est.predict_dist(X)
    for field, values in REFERENCE[spec].items():
        np.testing.assert_allclose(getattr(pred, field), values, rtol=0, atol=1e-6, err_msg=f"{spec} {field}")
    assert np.all(pred.interval_ok)
    np.testing.assert_array_equal(est.cleaner_.medians_, est.get_state()[0]["array.medians"].numpy())
    X.loc[X.index[1], est.selected_names_[:5]] = np.inf  # inf is missing too, as in the feature tables
    np.testing.assert_allclose(est.predict_dist(X).mean, REFERENCE[spec]["mean"], rtol=0, atol=1e-6)


def test_a_model_saved_before_the_widening_loads_without_one():
    est = load("matbench_phonons", "v8", root=PROJECT_ROOT / "models").estimator
    tensors, meta = est.get_state()
    legacy = type(est).from_state({k: v for k, v in tensors.items() if not k.startswith("array.widening")}, meta)
    assert legacy.widening_ is None and legacy.calibrated_
