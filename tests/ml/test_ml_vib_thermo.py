"""Joint learning of temperature functions: S(T) and Cv(T) of the 5-material DFPT fixture (smoke test).

One multi-output head per property (160 temperatures each), both trained jointly; the model must
reproduce its training materials' curves. Not a benchmark: five materials cannot test generalisation.
"""

from __future__ import annotations

import numpy as np
import torch

from matflow.ml import train as pipeline


def test_joint_model_reproduces_training_S_and_Cv_curves():
    torch.set_num_threads(1)
    data = pipeline.featurize_dataset("vib_thermo_5", "structure")
    assert data.Y.shape == (5, 320) and data.target_specs == (("S", 160, 0), ("Cv", 160, 0))
    est = pipeline.make_estimator("joint", data=data, epochs=800, patience=800)
    est.fit(data.X, data.Y)
    heads = est.nets_[0].heads
    assert [h.out_features for h in heads] == [160, 160]
    pred = est.predict(data.X)
    S, Cv = data.Y[:, :160], data.Y[:, 160:]
    for true, fit in ((S, pred[:, :160]), (Cv, pred[:, 160:])):
        spread = np.abs(true - true.mean(axis=0)).mean()  # what predicting the mean curve would cost
        assert np.abs(fit - true).mean() < 0.02 * spread
    # physical shape survives: Cv rises with T towards 3R, S increases with T
    assert np.all(np.diff(pred[:, 160:][:, ::20], axis=1) > -0.05)
    assert np.all(pred[:, 160:].max(axis=1) < 3 * 8.314462618 * 1.02)
