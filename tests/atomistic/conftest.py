"""Shared fixtures for the CHGNet atomistics tests: tiny cells, the model loaded once."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk


@pytest.fixture(scope="session")
def chgnet_model():
    from matflow.atomistic.model import load_chgnet

    return load_chgnet()


@pytest.fixture(scope="session")
def stock_calc(chgnet_model):
    """Stock CHGNet's ASE calculator: the reference the fast path must reproduce."""
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(chgnet_model, use_device="cpu")


@pytest.fixture(scope="session")
def fast_calc(chgnet_model):
    from matflow.atomistic.fast import FastCHGNetCalculator

    return FastCHGNetCalculator(chgnet_model)


@pytest.fixture
def cu4():
    """4-atom conventional fcc Cu (a = 3.61 Å)."""
    return bulk("Cu", "fcc", a=3.61, cubic=True)


@pytest.fixture
def crconi16():
    """16-atom random fcc CrCoNi, rattled and slightly strained (no symmetry left)."""
    atoms = bulk("Ni", "fcc", a=3.57, cubic=True).repeat((2, 2, 1))
    rng = np.random.default_rng(3)
    atoms.numbers = rng.permutation(np.array([24, 27, 28] * 6)[:16])
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.set_cell(atoms.cell.array @ np.array([[1.01, 0.01, 0], [0, 0.99, 0], [0, 0.02, 1.0]]),
                   scale_atoms=True)
    return atoms


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the test machine's 2 cores are shared, and spinning OpenMP threads on
    an oversubscribed machine cost far more than they gain on 4–32-atom cells."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
