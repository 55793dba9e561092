"""Periodic neighbour graphs for batches of crystals, built with vesin.

PyG's `radius_graph` needs torch-cluster, which is not available for current torch, and it does not
know about periodic images anyway. vesin (Cartesian cell lists with periodic shifts) gives, for each
crystal, pairs (i, j) and the integer image shift S such that r_ij = x_j + S·L − x_i lies within the
cutoff. Lists are built on CPU without gradients; distances are then recomputed from the (possibly
differentiable) fractional coordinates, so gradients flow through them.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin

TIE_TOLERANCE = 1e-4
"""Å. Neighbours this close to the k-th distance are all kept, so truncation to `max_neighbors` does
not depend on atom order (symmetric cells have many equal distances)."""


def wrapped_frac_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a − b in fractional coordinates, wrapped to [−0.5, 0.5): the shortest periodic difference."""
    diff = a - b
    return diff - torch.round(diff)


def _one_crystal(cart: np.ndarray, lattice: np.ndarray, cutoff: float,
                 max_neighbors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts, d = calculator.compute(points=cart, box=lattice, periodic=True,
                                         quantities="ijSd")
    if len(i) == 0:
        return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
    # sort by receiver then distance; keep the k nearest per receiver plus exact ties
    order = np.lexsort((d, i))
    i, j, shifts, d = i[order], j[order], shifts[order], d[order]
    starts = np.searchsorted(i, i, side="left")
    rank = np.arange(len(i)) - starts
    counts = np.bincount(i, minlength=len(cart))
    kth_index = starts + np.minimum(counts[i], max_neighbors) - 1
    keep = (rank < max_neighbors) | (d <= d[kth_index] + TIE_TOLERANCE)
    return i[keep].astype(np.int64), j[keep].astype(np.int64), shifts[keep].astype(np.int64)


def periodic_radius_graph(frac_coords: torch.Tensor, lattices: torch.Tensor, num_atoms: torch.Tensor,
                          cutoff: float, max_neighbors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges within `cutoff` Å (periodic images included) for a batch of crystals.

    frac_coords: (N, 3); lattices: (B, 3, 3) with rows as lattice vectors; num_atoms: (B,).
    Returns edge_index (2, E) with rows (source j, target i), global atom indices, and the integer
    image shift (E, 3) of the source atom. Self-pairs with a non-zero shift (an atom's own images)
    are included, as they carry the cell size in small cells.
    """
    if frac_coords.ndim != 2 or frac_coords.shape[1] != 3:
        raise ValueError(f"frac_coords shape {tuple(frac_coords.shape)}: expected (N, 3)")
    if lattices.ndim != 3 or lattices.shape[1:] != (3, 3):
        raise ValueError(f"lattices shape {tuple(lattices.shape)}: expected (B, 3, 3)")
    counts = num_atoms.detach().cpu().numpy().astype(np.int64)
    if counts.sum() != frac_coords.shape[0] or len(counts) != lattices.shape[0]:
        raise ValueError(f"num_atoms sums to {counts.sum()} over {len(counts)} crystals, but there "
                         f"are {frac_coords.shape[0]} atoms and {lattices.shape[0]} lattices")
    frac = (frac_coords.detach().cpu().double().numpy()) % 1.0
    cells = lattices.detach().cpu().double().numpy()
    sources, targets, all_shifts = [], [], []
    offset = 0
    for crystal, n in enumerate(counts):
        cart = frac[offset:offset + n] @ cells[crystal]
        i, j, shifts = _one_crystal(cart, cells[crystal], cutoff, max_neighbors)
        sources.append(j + offset)
        targets.append(i + offset)
        all_shifts.append(shifts)
        offset += n
    device = frac_coords.device
    edge_index = torch.from_numpy(np.stack([np.concatenate(sources), np.concatenate(targets)]))
    shifts = torch.from_numpy(np.concatenate(all_shifts).reshape(-1, 3))
    return edge_index.to(device), shifts.to(device=device, dtype=frac_coords.dtype)


def edge_vectors(frac_coords: torch.Tensor, lattices: torch.Tensor, batch: torch.Tensor,
                 edge_index: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Cartesian vectors from each target atom i to its source neighbour j's image, in Å.

    Uses the wrapped fractional difference plus the recorded shift, so a change of which image of
    j a coordinate sits in (wrapping into [0, 1)) does not change the vector.
    """
    source, target = edge_index
    frac = frac_coords % 1.0
    # the list was built on coords wrapped to [0,1); rebuild the same image explicitly
    frac_vec = frac[source] - frac[target] + shifts
    cell = lattices[batch[target]]
    return torch.einsum("ei,eij->ej", frac_vec, cell)
