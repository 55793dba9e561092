"""CDVAE: a periodic graph VAE whose decoder is a noise-conditional score network.

After Xie, Fu, Ganea, Barzilay, Jaakkola, ICLR 2022 (arXiv:2110.06197). Differences from the paper,
because PyG's DimeNet/GemNet need torch-cluster/torch-sparse, which current torch lacks:

- Encoder: SchNet-style continuous-filter convolutions (Schütt et al., J. Chem. Phys. 148, 241722,
  2018) over a periodic radius graph with a Gaussian distance basis and a cosine cutoff, instead of
  DimeNet++. Only interatomic distances enter, so the embedding is invariant to rotations, to
  periodic translations of all atoms and (sum aggregation, mean pooling) to atom permutations.
- Decoder: the same convolutions on the noisy structure, with z and log(sigma) added to every atom
  embedding; the coordinate score is a sum over edges of a learned scalar times the unit edge
  vector, so it is rotation-equivariant and translation-invariant (like GemNet's direct force
  head), instead of GemNet-dT.
- Type-denoising cross-entropy is not divided by the type noise level.

Training uses the paper's teacher forcing: the decoder sees the true lattice and atom count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from matflow.generate.config import CDVAEConfig
from matflow.generate.graph import edge_vectors, periodic_radius_graph, wrapped_frac_diff

LOSS_NAMES = ("num_atoms", "lattice", "composition", "coord", "type", "kl", "property")


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """`layers` hidden Linear+SiLU blocks then a Linear output."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden), nn.SiLU()]
        dim = hidden
    modules.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*modules)


class GaussianBasis(nn.Module):
    """Expands distances (Å) on Gaussians evenly spaced from 0 to the cutoff."""

    def __init__(self, cutoff: float, num_gaussians: int) -> None:
        super().__init__()
        centers = torch.linspace(0.0, cutoff, num_gaussians)
        self.register_buffer("centers", centers)
        self.gamma = 0.5 / float(centers[1] - centers[0]) ** 2

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (distance.unsqueeze(-1) - self.centers) ** 2)


def cosine_cutoff(distance: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Smoothly takes edges to zero weight at the cutoff, so the graph's edge set can change
    (atoms crossing the cutoff, truncation ties) without a jump in the output."""
    return 0.5 * (torch.cos(math.pi * distance / cutoff) + 1.0) * (distance < cutoff)


class ContinuousFilterConv(MessagePassing):
    """SchNet interaction: messages x_j * W(d_ij), W a filter network of the distance basis."""

    def __init__(self, hidden_dim: int, num_gaussians: int, cutoff: float) -> None:
        super().__init__(aggr="add")
        self.cutoff = cutoff
        self.filter = nn.Sequential(nn.Linear(num_gaussians, hidden_dim), nn.SiLU(),
                                    nn.Linear(hidden_dim, hidden_dim))
        self.lin_in = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.lin_out = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                     nn.Linear(hidden_dim, hidden_dim))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, distance: torch.Tensor,
                basis: torch.Tensor) -> torch.Tensor:
        weight = self.filter(basis) * cosine_cutoff(distance, self.cutoff).unsqueeze(-1)
        return self.lin_out(self.propagate(edge_index, x=self.lin_in(h), weight=weight))

    def message(self, x_j: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x_j * weight


class PeriodicGraphNet(nn.Module):
    """Stack of residual continuous-filter convolutions on a periodic graph."""

    def __init__(self, hidden_dim: int, layers: int, num_gaussians: int, cutoff: float) -> None:
        super().__init__()
        self.basis = GaussianBasis(cutoff, num_gaussians)
        self.convs = nn.ModuleList(ContinuousFilterConv(hidden_dim, num_gaussians, cutoff)
                                   for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(layers))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor,
                distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        basis = self.basis(distance)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + conv(norm(h), edge_index, distance, basis)
        return h, basis


class CDVAE(nn.Module):
    """Encoder, property heads and score decoder of CDVAE. Records its config (`self.config`)."""

    def __init__(self, config: CDVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("sigmas", torch.tensor(c.sigmas, dtype=torch.float32))
        self.register_buffer("type_sigmas", torch.tensor(c.type_sigmas, dtype=torch.float32))
        # encoder
        self.enc_embed = nn.Embedding(c.num_elements, c.hidden_dim)
        self.enc_net = PeriodicGraphNet(c.hidden_dim, c.encoder_layers, c.num_gaussians, c.cutoff)
        self.enc_readout = mlp(c.hidden_dim, c.hidden_dim, c.hidden_dim, 1)
        self.fc_mu = nn.Linear(c.hidden_dim, c.latent_dim)
        self.fc_logvar = nn.Linear(c.hidden_dim, c.latent_dim)
        # heads on z
        self.num_atoms_head = mlp(c.latent_dim, c.head_hidden_dim, c.max_atoms + 1, c.head_layers)
        self.lattice_head = mlp(c.latent_dim, c.head_hidden_dim, 6, c.head_layers)
        self.composition_head = mlp(c.latent_dim, c.head_hidden_dim, c.num_elements, c.head_layers)
        self.property_head = (mlp(c.latent_dim, c.head_hidden_dim, 1, c.head_layers)
                              if c.predict_property else None)
        # decoder
        self.dec_embed = nn.Embedding(c.num_elements, c.hidden_dim)
        self.dec_z = nn.Linear(c.latent_dim, c.hidden_dim)
        self.dec_sigma = mlp(1, c.hidden_dim, c.hidden_dim, 1)
        self.dec_net = PeriodicGraphNet(c.hidden_dim, c.decoder_layers, c.num_gaussians, c.cutoff)
        self.edge_score = mlp(2 * c.hidden_dim + c.num_gaussians, c.hidden_dim, 1, 1)
        self.type_head = mlp(c.hidden_dim, c.hidden_dim, c.num_elements, 1)

    # -- graph helpers -------------------------------------------------------------------------
    def _graph(self, frac_coords: torch.Tensor, lattices: torch.Tensor, num_atoms: torch.Tensor,
               batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        edge_index, shifts = periodic_radius_graph(frac_coords, lattices, num_atoms,
                                                   self.config.cutoff, self.config.max_neighbors)
        vectors = edge_vectors(frac_coords, lattices, batch, edge_index, shifts)
        distance = vectors.norm(dim=-1).clamp_min(1e-6)
        return edge_index, vectors, distance

    # -- encoder -------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Crystal batch -> (mu, logvar), each (B, latent_dim)."""
        edge_index, _, distance = self._graph(batch.frac_coords, batch.lattice, batch.num_atoms,
                                              batch.batch)
        h = self.enc_embed(batch.atom_types - 1)
        h, _ = self.enc_net(h, edge_index, distance)
        pooled = scatter(self.enc_readout(h), batch.batch, dim=0,
                         dim_size=batch.num_atoms.shape[0], reduce="mean")
        return self.fc_mu(pooled), self.fc_logvar(pooled).clamp(-10.0, 10.0)

    # -- decoder -------------------------------------------------------------------------------
    def score(self, z: torch.Tensor, frac_coords: torch.Tensor, atom_types: torch.Tensor,
              lattices: torch.Tensor, num_atoms: torch.Tensor, batch: torch.Tensor,
              sigma_per_atom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-scaled Cartesian score sigma·∇log p (N, 3) and atom-type logits (N, elements).

        `atom_types` are atomic numbers (1-based).
        """
        edge_index, vectors, distance = self._graph(frac_coords, lattices, num_atoms, batch)
        h = (self.dec_embed(atom_types - 1) + self.dec_z(z)[batch]
             + self.dec_sigma(torch.log(sigma_per_atom).unsqueeze(-1)))
        h, basis = self.dec_net(h, edge_index, distance)
        source, target = edge_index
        coefficient = self.edge_score(torch.cat([h[target], h[source], basis], dim=-1))
        coefficient = coefficient * cosine_cutoff(distance, self.config.cutoff).unsqueeze(-1)
        unit = vectors / distance.unsqueeze(-1)
        score = scatter(coefficient * unit, target, dim=0, dim_size=h.shape[0], reduce="sum")
        return score, self.type_head(h)

    # -- training ------------------------------------------------------------------------------
    def losses(self, batch: Batch, *, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
        """All CDVAE training losses on one batch (each averaged over crystals)."""
        c = self.config
        num_crystals = batch.num_atoms.shape[0]
        atom_batch = batch.batch
        mu, logvar = self.encode(batch)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        target_types = batch.atom_types - 1

        def per_crystal_mean(values: torch.Tensor) -> torch.Tensor:
            return scatter(values, atom_batch, dim=0, dim_size=num_crystals, reduce="mean").mean()

        out: dict[str, torch.Tensor] = {}
        out["num_atoms"] = F.cross_entropy(self.num_atoms_head(z), batch.num_atoms)
        out["lattice"] = F.mse_loss(self.lattice_head(z), batch.lattice_norm)
        composition_logits = self.composition_head(z)
        out["composition"] = per_crystal_mean(
            F.cross_entropy(composition_logits[atom_batch], target_types, reduction="none"))
        out["kl"] = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()

        # coordinate noise: Cartesian Gaussian of width sigma, wrapped into the cell
        levels = torch.randint(len(self.sigmas), (num_crystals,), generator=generator,
                               device="cpu").to(mu.device)
        sigma_atom = self.sigmas[levels][atom_batch]
        cart_noise = torch.randn(batch.frac_coords.shape, generator=generator,
                                 device=mu.device) * sigma_atom.unsqueeze(-1)
        inverse_lattice = torch.linalg.inv(batch.lattice)[atom_batch]
        noisy_frac = (batch.frac_coords
                      + torch.einsum("ni,nij->nj", cart_noise, inverse_lattice)) % 1.0
        # type noise: the true type mixed with the predicted composition, then sampled
        type_levels = torch.randint(len(self.type_sigmas), (num_crystals,), generator=generator,
                                    device="cpu").to(mu.device)
        type_sigma_atom = self.type_sigmas[type_levels][atom_batch]
        composition_probs = F.softmax(composition_logits.detach(), dim=-1)[atom_batch]
        type_probs = (F.one_hot(target_types, c.num_elements).float()
                      + type_sigma_atom.unsqueeze(-1) * composition_probs)
        noisy_types = torch.multinomial(type_probs, 1, generator=generator).squeeze(-1) + 1

        score, type_logits = self.score(z, noisy_frac, noisy_types, batch.lattice, batch.num_atoms,
                                        atom_batch, sigma_atom)
        # target: sigma * grad log q(noisy | clean) = -(noisy - clean) / sigma, with the shortest
        # periodic displacement (the wrapped-noise approximation used by CDVAE)
        displacement = torch.einsum("ni,nij->nj", wrapped_frac_diff(noisy_frac, batch.frac_coords),
                                    batch.lattice[atom_batch])
        target_score = -displacement / sigma_atom.unsqueeze(-1)
        out["coord"] = per_crystal_mean(0.5 * ((score - target_score) ** 2).sum(dim=-1))
        out["type"] = per_crystal_mean(F.cross_entropy(type_logits, target_types, reduction="none"))
        if self.property_head is not None:
            known = torch.isfinite(batch.y)
            prediction = self.property_head(z).squeeze(-1)
            out["property"] = (F.mse_loss(prediction[known], batch.y[known]) if known.any()
                               else prediction.sum() * 0.0)
        else:
            out["property"] = torch.zeros((), device=mu.device)
        weights = {"num_atoms": c.cost_num_atoms, "lattice": c.cost_lattice,
                   "composition": c.cost_composition, "coord": c.cost_coord, "type": c.cost_type,
                   "kl": c.beta_kl, "property": c.cost_property}
        out["total"] = sum(weights[name] * out[name] for name in LOSS_NAMES)
        return out
