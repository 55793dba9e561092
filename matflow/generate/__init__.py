"""Crystal generation with CDVAE (Xie et al., ICLR 2022): data, model, training, sampling, metrics.

Import from the submodules; this package file only re-exports the main entry points.
"""

from __future__ import annotations

from matflow.generate.baseline import RandomCrystalBaseline
from matflow.generate.config import CDVAEConfig, CDVAEConfigError
from matflow.generate.data import CDVAEDataError, LatticeScaler, read_cdvae_csv
from matflow.generate.metrics import (
    compositional_validity,
    generation_metrics,
    reconstruction_metrics,
    structural_validity,
)
from matflow.generate.model import CDVAE
from matflow.generate.sample import (
    decode,
    generate,
    generate_from_model,
    reconstruct,
    write_cifs,
)
from matflow.generate.train import CDVAETrainingError, load_model, load_trained, train

__all__ = [
    "CDVAE", "CDVAEConfig", "CDVAEConfigError", "CDVAEDataError", "CDVAETrainingError",
    "LatticeScaler", "RandomCrystalBaseline", "compositional_validity", "decode", "generate",
    "generate_from_model", "generation_metrics", "load_model", "load_trained", "read_cdvae_csv", "reconstruct",
    "reconstruction_metrics", "structural_validity", "train", "write_cifs",
]
