"""Decode CDVAE latents into crystals by annealed Langevin dynamics.

Given z, the property heads fix the atom count, the lattice and the composition; atoms start at
uniform random fractional positions and are moved by the score network through the noise ladder,
largest sigma first, with step size alpha = step_lr * (sigma / sigma_L)^2 and `n_step_each` steps per
level (Song & Ermon, NeurIPS 2019; Xie et al., ICLR 2022). Atom types are re-read from the decoder's
type logits at every step, as in CDVAE.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from matflow.generate.data import LatticeScaler, structure_to_data
from matflow.generate.model import CDVAE


class CDVAESamplingError(ValueError):
    """Bad sampling arguments."""


def composition_counts(probabilities: np.ndarray, num_atoms: int) -> np.ndarray:
    """Integer atom counts per element (summing to `num_atoms`) by largest remainder."""
    expected = probabilities / probabilities.sum() * num_atoms
    counts = np.floor(expected).astype(int)
    remainder = expected - counts
    for index in np.argsort(-remainder)[: num_atoms - counts.sum()]:
        counts[index] += 1
    return counts


@torch.no_grad()
def predicted_num_atoms(model: CDVAE, z: torch.Tensor) -> np.ndarray:
    """Atom count per latent from the number-of-atoms head (at least one atom)."""
    logits = model.num_atoms_head(z)
    logits[:, 0] = -torch.inf  # a crystal has at least one atom
    return logits.argmax(dim=-1).cpu().numpy()


@torch.no_grad()
def predicted_counts(model: CDVAE, z: torch.Tensor, num_atoms: np.ndarray) -> list[np.ndarray]:
    """Atom count per element (index 0 is Z = 1) per latent, from the composition head's softmax
    rounded to ``num_atoms`` by largest remainder: the types Langevin dynamics starts from."""
    probabilities = torch.softmax(model.composition_head(z), dim=-1).cpu().numpy()
    return [composition_counts(probabilities[i], int(num_atoms[i])) for i in range(len(num_atoms))]


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CDVAESamplingError(f"{name}={value!r}: must be an integer >= 1")


@torch.no_grad()
def langevin_dynamics(model: CDVAE, z: torch.Tensor, frac_coords: torch.Tensor,
                      atom_types: torch.Tensor, lattices: torch.Tensor, num_atoms: torch.Tensor, *,
                      n_step_each: int, step_lr: float, generator: torch.Generator,
                      show_progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Anneal the fractional coordinates (N, 3) and atom types (N,) of a batch; returns both."""
    batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=z.device), num_atoms)
    sigmas = model.sigmas
    inverse_lattice = torch.linalg.inv(lattices)[batch]
    total = len(sigmas) * n_step_each
    bar = tqdm(total=total, desc="Langevin", disable=not show_progress, leave=False)
    for sigma in sigmas:
        step = step_lr * (sigma / sigmas[-1]) ** 2
        sigma_atom = sigma.expand(len(batch))
        for _ in range(n_step_each):
            noise = torch.randn(frac_coords.shape, generator=generator, device=z.device)
            scaled_score, type_logits = model.score(z, frac_coords, atom_types, lattices,
                                                    num_atoms, batch, sigma_atom)
            cart_step = step * scaled_score / sigma + torch.sqrt(2 * step) * noise
            frac_coords = (frac_coords + torch.einsum("ni,nij->nj", cart_step, inverse_lattice)) % 1
            atom_types = type_logits.argmax(dim=-1) + 1
            bar.update(1)
    bar.close()
    return frac_coords, atom_types


@torch.no_grad()
def decode(model: CDVAE, scaler: LatticeScaler, z: torch.Tensor, *,
           n_step_each: int | None = None, step_lr: float | None = None, seed: int = 0,
           num_atoms: list[int] | None = None, lattices: list[Lattice] | None = None,
           show_progress: bool = False) -> list[Structure]:
    """Latents (B, latent_dim) -> B pymatgen Structures.

    `num_atoms` / `lattices` override the heads' predictions (teacher forcing, for diagnosis).
    """
    config = model.config
    n_step_each = config.langevin_steps_per_level if n_step_each is None else n_step_each
    step_lr = config.langevin_step_lr if step_lr is None else step_lr
    _check_positive_int("n_step_each", n_step_each)
    if not math.isfinite(step_lr) or step_lr <= 0:
        raise CDVAESamplingError(f"step_lr={step_lr!r}: must be a finite number > 0")
    device = z.device
    generator = torch.Generator(device=device).manual_seed(seed)
    count = z.shape[0]
    if num_atoms is None:
        atoms = predicted_num_atoms(model, z)
    else:
        atoms = np.asarray(num_atoms, dtype=int)
        if len(atoms) != count or atoms.min() < 1:
            raise CDVAESamplingError(f"num_atoms: need {count} positive counts, got {num_atoms}")
    if lattices is None:
        lattice_norm = model.lattice_head(z).cpu().numpy()
        lattices = [scaler.inverse_transform(lattice_norm[i], int(atoms[i])) for i in range(count)]
    elif len(lattices) != count:
        raise CDVAESamplingError(f"lattices: need {count}, got {len(lattices)}")
    types = [np.repeat(np.arange(1, len(counts) + 1), counts) for counts in predicted_counts(model, z, atoms)]
    atom_types = torch.tensor(np.concatenate(types), dtype=torch.long, device=device)
    num_atoms_t = torch.tensor(atoms, dtype=torch.long, device=device)
    cells = torch.tensor(np.stack([lat.matrix for lat in lattices]), dtype=torch.float32,
                         device=device)
    frac = torch.rand((int(atoms.sum()), 3), generator=generator, device=device)
    frac, atom_types = langevin_dynamics(model, z, frac, atom_types, cells, num_atoms_t,
                                         n_step_each=n_step_each, step_lr=step_lr,
                                         generator=generator, show_progress=show_progress)
    frac_np, types_np = frac.cpu().numpy(), atom_types.cpu().numpy()
    structures, offset = [], 0
    for i in range(count):
        n = int(atoms[i])
        structures.append(Structure(lattices[i], types_np[offset:offset + n].tolist(),
                                    frac_np[offset:offset + n]))
        offset += n
    return structures


def generate(model: CDVAE, scaler: LatticeScaler, num_samples: int, *, batch_size: int = 128,
             n_step_each: int | None = None, step_lr: float | None = None, seed: int = 0,
             show_progress: bool = True) -> list[Structure]:
    """Sample `num_samples` new crystals from z ~ N(0, I)."""
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("batch_size", batch_size)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    structures: list[Structure] = []
    for start in tqdm(range(0, num_samples, batch_size), desc="CDVAE generate",
                      disable=not show_progress):
        size = min(batch_size, num_samples - start)
        z = torch.randn((size, model.config.latent_dim), generator=generator, device=device)
        structures += decode(model, scaler, z, n_step_each=n_step_each, step_lr=step_lr,
                             seed=seed + start + 1, show_progress=show_progress)
    return structures


def reconstruct(model: CDVAE, scaler: LatticeScaler, structures: list[Structure], *,
                batch_size: int = 128, n_step_each: int | None = None,
                step_lr: float | None = None, seed: int = 0, teacher_forcing: bool = False,
                show_progress: bool = True) -> list[Structure]:
    """Encode `structures` (z = mu) and decode them again.

    With `teacher_forcing` the true atom count and lattice are used, isolating the score decoder.
    """
    if not structures:
        raise CDVAESamplingError("structures: empty list, nothing to reconstruct")
    _check_positive_int("batch_size", batch_size)
    model.eval()
    device = next(model.parameters()).device
    out: list[Structure] = []
    for start in tqdm(range(0, len(structures), batch_size), desc="CDVAE reconstruct",
                      disable=not show_progress):
        chunk = structures[start:start + batch_size]
        batch = Batch.from_data_list([structure_to_data(s, scaler) for s in chunk]).to(device)
        with torch.no_grad():
            mu, _ = model.encode(batch)
        out += decode(model, scaler, mu, n_step_each=n_step_each, step_lr=step_lr,
                      seed=seed + start,
                      num_atoms=[len(s) for s in chunk] if teacher_forcing else None,
                      lattices=[s.lattice for s in chunk] if teacher_forcing else None,
                      show_progress=show_progress)
    return out


def generate_from_model(name: str = "cdvae-perov5", version: str | None = "latest",
                        num_samples: int = 10, *,
                        n_step_each: int | None = None, seed: int = 0, device: str = "cpu",
                        show_progress: bool = True) -> list[Structure]:
    """Load a shipped model (`models/<name>/<version>/`, "latest": the highest vN) and sample
    from it."""
    from matflow.generate.train import load_model

    model, scaler, _ = load_model(name, version, device)
    return generate(model, scaler, num_samples, n_step_each=n_step_each, seed=seed,
                    show_progress=show_progress)


def write_cifs(structures: list[Structure], out_dir: str | Path, prefix: str = "cdvae") -> list[Path]:
    """Write one CIF per structure (`<prefix>_0000.cif`, ...) into `out_dir`; returns the paths."""
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise CDVAESamplingError(f"{directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, structure in enumerate(structures):
        path = directory / f"{prefix}_{index:04d}.cif"
        structure.to(filename=str(path), fmt="cif")
        paths.append(path)
    return paths
