"""Tiny CDVAE fixtures: a few Perov-5 crystals and a model small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from matflow.generate.config import CDVAEConfig
from matflow.generate.data import LatticeScaler, crystal_set_to_data, read_cdvae_csv

PEROV = Path(__file__).resolve().parents[2] / "data" / "cdvae_benchmarks" / "perov_5"


@pytest.fixture(scope="session")
def perov_csv() -> Path:
    return PEROV / "val.csv.gz"


@pytest.fixture(scope="session")
def perov_set(perov_csv):
    return read_cdvae_csv(perov_csv, property_column="heat_ref", max_atoms=20, limit=8)


@pytest.fixture(scope="session")
def scaler(perov_set) -> LatticeScaler:
    return LatticeScaler().fit(perov_set.structures, perov_set.properties)


@pytest.fixture
def tiny_config() -> CDVAEConfig:
    return CDVAEConfig(latent_dim=16, hidden_dim=16, encoder_layers=2, decoder_layers=2,
                       head_hidden_dim=16, head_layers=1, num_gaussians=8, cutoff=5.0,
                       max_neighbors=12, num_noise_levels=5, num_type_noise_levels=5,
                       batch_size=4, epochs=2, langevin_steps_per_level=2, learning_rate=3e-3)


@pytest.fixture
def perov_batch(perov_set, scaler) -> Batch:
    return Batch.from_data_list(crystal_set_to_data(perov_set, scaler))


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
