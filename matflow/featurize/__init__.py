"""Featurization: presets of matminer featurizers, a disk cache and a parallel runner."""

from __future__ import annotations

from matflow.featurize.cache import FeatureCache
from matflow.featurize.presets import PRESETS, FeaturizerSpec, Preset, get_preset
from matflow.featurize.runner import (
    META_COLUMNS,
    FeatureCleaner,
    FeatureTable,
    default_cache,
    featurize_compositions,
    featurize_dataset,
    featurize_files,
    featurize_structures,
)

__all__ = [
    "PRESETS", "Preset", "FeaturizerSpec", "get_preset", "FeatureCache", "FeatureTable", "FeatureCleaner",
    "featurize_structures", "featurize_compositions", "featurize_files", "featurize_dataset", "default_cache", "META_COLUMNS",
]
