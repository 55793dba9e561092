from __future__ import annotations

import math

import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from matflow.generate.data import structure_to_data
from matflow.generate.model import CDVAE


def _encode(model, structures, scaler):
    batch = Batch.from_data_list([structure_to_data(s, scaler) for s in structures])
    with torch.no_grad():
        return model.encode(batch)[0]


def test_encoder_is_invariant_to_periodic_translation(tiny_config, perov_set, scaler):
    torch.manual_seed(0)
    model = CDVAE(tiny_config).eval()
    structures = perov_set.structures[:3]
    moved = []
    for structure in structures:
        shifted = structure.copy()
        shifted.translate_sites(list(range(len(shifted))), [0.37, -0.21, 0.83],
                                frac_coords=True, to_unit_cell=True)
        moved.append(shifted)
    assert torch.allclose(_encode(model, structures, scaler), _encode(model, moved, scaler),
                          atol=1e-4)


def test_encoder_is_invariant_to_atom_permutation(tiny_config, perov_set, scaler):
    torch.manual_seed(1)
    model = CDVAE(tiny_config).eval()
    structure = perov_set.structures[0]
    permuted = Structure.from_sites([structure[i] for i in (3, 0, 4, 1, 2)])
    mu, mu_permuted = _encode(model, [structure], scaler), _encode(model, [permuted], scaler)
    assert torch.allclose(mu, mu_permuted, atol=1e-5)
    # and it is not trivially constant: a different crystal gives a different embedding
    other = _encode(model, [perov_set.structures[1]], scaler)
    assert not torch.allclose(mu, other, atol=1e-4)


def test_score_rotates_with_the_cell(tiny_config, perov_batch):
    torch.manual_seed(2)
    model = CDVAE(tiny_config).eval()
    angle = 0.7
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0],
                             [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    z = torch.randn(perov_batch.num_atoms.shape[0], tiny_config.latent_dim)
    frac = (perov_batch.frac_coords + 0.05 * torch.randn_like(perov_batch.frac_coords)) % 1.0
    sigma = torch.full((frac.shape[0],), 0.3)
    args = (z, frac, perov_batch.atom_types)
    with torch.no_grad():
        score, logits = model.score(*args, perov_batch.lattice, perov_batch.num_atoms,
                                    perov_batch.batch, sigma)
        rotated_lattice = perov_batch.lattice @ rotation.T
        score_rot, logits_rot = model.score(*args, rotated_lattice, perov_batch.num_atoms,
                                            perov_batch.batch, sigma)
    assert torch.allclose(score @ rotation.T, score_rot, atol=1e-4)
    assert torch.allclose(logits, logits_rot, atol=1e-4)
    assert score.abs().max() > 0


def test_a_few_steps_lower_the_loss(tiny_config, perov_batch):
    torch.manual_seed(3)
    model = CDVAE(tiny_config)

    def fixed_noise_loss() -> dict[str, float]:
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return {k: float(v) for k, v in model.losses(perov_batch, generator=generator).items()}

    before = fixed_noise_loss()
    assert set(before) >= {"num_atoms", "lattice", "composition", "coord", "type", "kl", "total"}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(25):
        losses = model.losses(perov_batch, generator=torch.Generator().manual_seed(100 + step))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    after = fixed_noise_loss()
    assert after["total"] < 0.9 * before["total"]
    assert after["composition"] < before["composition"]


def test_property_head_adds_a_loss(tiny_config, perov_batch):
    import dataclasses

    torch.manual_seed(4)
    model = CDVAE(dataclasses.replace(tiny_config, predict_property=True))
    losses = model.losses(perov_batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(perov_batch.y).all()
    assert losses["property"] > 0
    assert model.property_head is not None
