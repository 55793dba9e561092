"""MODNet-style property prediction: NMI feature selection, joint-learning torch network, calibrated
uncertainty, a model registry and the train pipeline. Never imports Prefect."""

from __future__ import annotations

from matflow.ml.estimator import MODNetRegressor, Prediction
from matflow.ml.selection import NMIFeatureSelector, cached_cross_nmi, cross_nmi, rank_features

__all__ = ["MODNetRegressor", "Prediction", "NMIFeatureSelector", "cross_nmi", "cached_cross_nmi",
           "rank_features"]
