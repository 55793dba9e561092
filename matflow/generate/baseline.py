"""A random-crystal baseline for the generation metrics.

Compositions (with their atom counts) are drawn from the training set, lattice parameters from
independent normal distributions fitted to the training set's lengths / N^(1/3) and angles, and
positions uniformly in the cell. Any score a generator earns beyond this baseline comes from
having learned where atoms go.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure
from sklearn.base import BaseEstimator

from matflow.generate.data import lattice_features


class RandomCrystalBaseline(BaseEstimator):
    """scikit-learn style: `fit(structures)` learns the statistics, `sample(n, seed)` draws.

    `min_angle`/`max_angle` (degrees) clip sampled angles so every cell is a valid lattice.
    """

    def __init__(self, min_angle: float = 30.0, max_angle: float = 150.0) -> None:
        self.min_angle = min_angle
        self.max_angle = max_angle

    def fit(self, structures: list[Structure], y: object = None) -> RandomCrystalBaseline:
        if not structures:
            raise ValueError("structures: empty list, cannot fit RandomCrystalBaseline")
        if not 0 < self.min_angle < self.max_angle < 180:
            raise ValueError(f"min_angle={self.min_angle}, max_angle={self.max_angle}: need "
                             "0 < min_angle < max_angle < 180")
        features = np.stack([lattice_features(s) for s in structures])
        self.lattice_mean_ = features.mean(axis=0)
        self.lattice_std_ = features.std(axis=0)
        self.species_ = [[site.specie.symbol for site in s] for s in structures]
        return self

    def sample(self, num_samples: int, seed: int = 0) -> list[Structure]:
        """`num_samples` random crystals (deterministic for a given seed)."""
        if not hasattr(self, "species_"):
            raise ValueError("RandomCrystalBaseline is not fitted; call fit(structures) first")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r}: must be an integer >= 1")
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(num_samples):
            species = self.species_[rng.integers(len(self.species_))]
            n = len(species)
            values = rng.normal(self.lattice_mean_, self.lattice_std_)
            lengths = np.clip(values[:3], 0.3, None) * n ** (1 / 3)
            angles = np.clip(values[3:], self.min_angle, self.max_angle)
            lattice = Lattice.from_parameters(*lengths, *angles)
            if not np.isfinite(lattice.volume) or lattice.volume < 0.1:
                lattice = Lattice.from_parameters(*lengths, 90.0, 90.0, 90.0)
            out.append(Structure(lattice, species, rng.random((n, 3))))
        return out
