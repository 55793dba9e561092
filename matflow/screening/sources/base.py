"""The contract every evidence source follows, so fusion, validation and reports treat them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

Composition = dict[str, float]
"""Element symbol -> mole fraction, fractions summing to 1."""


class EvidenceSource(BaseEstimator):
    """A source of evidence on an alloy's phase that keeps its own ignorance.

    Subclasses follow scikit-learn's rules (``__init__`` only stores arguments; ``fit`` learns
    from training rows only and returns ``self``). ``masses`` returns an array of shape
    (n, 16) indexed by the bitmask of ``matflow.screening.phases.PHASES``: rows sum to 1, column 0
    (the empty set) is 0, and mass on OMEGA (column 15) is what the source does not know.
    Reliability discounting is applied by the fusion, not by the source.
    """

    name: ClassVar[str] = "source"

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> EvidenceSource:
        return self

    def masses(self, compositions: Sequence[Composition]) -> np.ndarray:
        raise NotImplementedError

    def explain(self, composition: Composition) -> dict[str, Any]:
        """JSON-able summary of what this source saw for one composition (for reports)."""
        return {}
