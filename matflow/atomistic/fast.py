"""A faster CHGNet ASE calculator for MD, relaxation, phonons and Monte Carlo.

Stock ``chgnet.model.CHGNet.forward`` differentiates the energy with ``create_graph=True`` and in two
separate ``autograd.grad`` calls (forces, then stress): the second-order graph is only needed to train
on forces. Here the same model weights and the same crystal graph give the same numbers through:

* one first-order backward pass for positions and strain together (forces eV/Å, stress eV/Å³);
* a neighbour candidate list built once with radius ``cutoff + skin`` and re-filtered to the exact
  cutoff from the current positions every call; it is rebuilt when any atom has moved more than
  ``skin / 2`` or the cell changed, so the resulting graph is identical to a fresh search;
* the CHGNet crystal graph and its angle (line) graph built with vectorised numpy, not edge by edge;
* CHGNet's message-passing layers evaluated with the same weights in fewer operations (see
  ``_FusedGatedMLP``): the first linear layer of each gated MLP acts on a concatenation of gathered
  atom, bond and angle features, so it is split by input block and applied to each source tensor
  before the gather (in a 108-atom fcc cell: 108 atoms or 648 short bonds instead of 14,256 angle
  rows), which leaves a third of the forward multiply-adds; the angle update of the last interaction
  block, whose output no energy term reads, is skipped. Models whose layers differ from this
  layout run through CHGNet's own forward pass (``fused=False`` forces that);
* subnormal floats flushed to zero while the model runs (see ``flush_denormals``);
* ``torch.no_grad`` energy-only evaluation when only the energy is asked for (Monte Carlo);
* batching of several structures in one forward pass (``calc_many``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from matflow.atomistic.model import DEFAULT_MODEL, load_chgnet

EV_PER_A3_PER_GPA = 1 / 160.21766208
"""1 GPa in eV/Å³ (CHGNet reports stress in GPa; ASE wants eV/Å³)."""


class UnsupportedElementError(ValueError):
    """A structure holds an element CHGNet has no embedding for."""


class IsolatedAtomError(RuntimeError):
    """An atom has no neighbour within CHGNet's cutoff (cell blown apart or vacuum too large)."""


@dataclass
class _NeighbourCache:
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    ref_positions: np.ndarray
    centers: np.ndarray
    neighbors: np.ndarray
    images: np.ndarray
    skin: float


def check_elements(numbers: Sequence[int], max_z: int, source: str = "structure") -> None:
    """Raise UnsupportedElementError naming the elements CHGNet cannot treat (Z > max_z)."""
    from ase.data import chemical_symbols

    bad = sorted({int(z) for z in numbers if int(z) > max_z or int(z) < 1})
    if bad:
        names = ", ".join(chemical_symbols[z] if z < len(chemical_symbols) else str(z) for z in bad)
        raise UnsupportedElementError(
            f"{source}: element(s) {names} not covered by CHGNet (it knows Z = 1..{max_z})"
        )


def check_structure(atoms: Atoms, source: str = "structure", *, max_z: int = 94,
                    min_distance_A: float = 0.5) -> None:
    """Refuse, with the input named, what CHGNet cannot treat: unknown elements, a non-periodic or
    degenerate cell, overlapping atoms (closer than ``min_distance_A``)."""
    from ase.neighborlist import neighbor_list

    from matflow.io import StructureInputError

    try:
        check_elements(atoms.numbers, max_z, source)
    except UnsupportedElementError as exc:
        raise StructureInputError(source, str(exc).split(": ", 1)[1]) from exc
    if not atoms.pbc.all() or atoms.cell.rank < 3 or atoms.get_volume() < 1e-6:
        raise StructureInputError(source, "needs a periodic 3-D cell (pbc all True, non-zero volume)")
    i, j, d = neighbor_list("ijd", atoms, min_distance_A)
    if len(d):
        k = int(np.argmin(d))
        raise StructureInputError(source, f"atoms too close: sites {int(i[k])} and {int(j[k])} are "
                                          f"{float(d[k]):.3f} Å apart (minimum {min_distance_A} Å)")


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero (x86 FTZ/DAZ) inside the block, then switch it off again.

    CHGNet's backward pass on CPU produces many subnormal float32 gradients (values below 1.2e-38);
    arithmetic on them is one to two orders of magnitude slower on x86, which made the single-thread
    backward pass about 1.6x slower than it needs to be. Flushing them changes no result at float32
    precision (tests compare with stock CHGNet). The flag is per thread and is cleared on exit.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def crystal_graph_arrays(centers: np.ndarray, neighbors: np.ndarray, images: np.ndarray,
                         distances: np.ndarray, bond_cutoff: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CHGNet's atom graph and bond (line) graph from a directed neighbour list, vectorised.

    Same content as ``chgnet.graph.Graph.adjacency_list`` + ``line_graph_adjacency_list`` (which walk
    Python objects edge by edge): directed edge (i, j, image) and its reverse (j, i, -image) share
    one undirected edge, numbered by first appearance; an angle joins two distinct directed edges
    leaving the same atom, the first no longer than ``bond_cutoff`` and the second shorter. Rows
    may come in another order than CHGNet's, which only changes floating-point summation order.

    Returns int32 arrays: atom_graph (E, 2), directed2undirected (E,), undirected2directed (U,),
    bond_graph (A, 5) as [centre, undirected a, directed a, undirected b, directed b].
    """
    centers = np.asarray(centers, dtype=np.int64)
    neighbors = np.asarray(neighbors, dtype=np.int64)
    images = np.asarray(images, dtype=np.int64).reshape(-1, 3)
    n_edges = len(centers)
    n_nodes = int(max(centers.max(initial=-1), neighbors.max(initial=-1))) + 1
    span = 2 * int(np.abs(images).max(initial=0)) + 1

    def key(i, j, img):
        code = ((img[:, 0] + span // 2) * span + img[:, 1] + span // 2) * span + img[:, 2] + span // 2
        return (i * n_nodes + j) * span**3 + code

    forward, backward = key(centers, neighbors, images), key(neighbors, centers, -images)
    order = np.argsort(forward, kind="stable")
    pos = np.searchsorted(forward, backward, sorter=order)
    pos = np.minimum(pos, n_edges - 1)
    partner = order[pos]
    if n_edges and not np.array_equal(forward[partner], backward):
        raise ValueError("neighbour list is not symmetric: an edge has no reverse edge")
    first = np.minimum(np.arange(n_edges), partner)
    undirected2directed, directed2undirected = np.unique(first, return_inverse=True)

    # angles: ordered pairs (a, b), a != b, of short directed edges leaving the same atom
    a_ok = np.flatnonzero(distances <= bond_cutoff)
    short = a_ok[distances[a_ok] < bond_cutoff]
    if len(a_ok):
        by_center = a_ok[np.argsort(centers[a_ok], kind="stable")]
        b_sorted = short[np.argsort(centers[short], kind="stable")]
        b_centers = centers[b_sorted]
        lo = np.searchsorted(b_centers, centers[by_center], side="left")
        hi = np.searchsorted(b_centers, centers[by_center], side="right")
        counts = hi - lo
        a_rep = np.repeat(by_center, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        b_rep = b_sorted[np.repeat(lo, counts) + offsets]
        keep = a_rep != b_rep
        a_rep, b_rep = a_rep[keep], b_rep[keep]
    else:
        a_rep = b_rep = np.zeros(0, dtype=np.int64)
    bond_graph = np.stack([centers[a_rep], directed2undirected[a_rep], a_rep,
                           directed2undirected[b_rep], b_rep], axis=1)
    atom_graph = np.stack([centers, neighbors], axis=1)
    as32 = lambda x: np.ascontiguousarray(x, dtype=np.int32)  # noqa: E731
    return as32(atom_graph), as32(directed2undirected), as32(undirected2directed), as32(bond_graph)


class _UnsupportedLayout(Exception):
    """The model's layers differ from what the fused forward pass reproduces (stock path is used)."""


def _first_linear(mlp: torch.nn.Module) -> tuple[torch.nn.Linear, list[torch.nn.Module]]:
    """The first Linear of a CHGNet MLP and the layers after it; only identity dropouts may precede it."""
    layers = list(mlp.layers)
    for k, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            return layer, layers[k + 1:]
        if not (isinstance(layer, torch.nn.Dropout) and layer.p == 0):
            raise _UnsupportedLayout(f"unexpected {type(layer).__name__} before the first Linear")
    raise _UnsupportedLayout("MLP without a Linear layer")


class _FusedGatedMLP:
    """A CHGNet ``GatedMLP`` whose input is ``cat([block_0, block_1, ...], dim=1)`` of gathered rows.

    ``W @ cat(x_0[i_0], x_1[i_1], ...) = sum_k (W_k @ x_k)[i_k]``: each block's share of the first
    linear layer (core and gate together, 2h outputs) is applied to its source tensor before the
    gather. The rest of the gated MLP (hidden layers, LayerNorms, SiLU * sigmoid) is unchanged and
    reuses the model's own modules. Only floating-point summation order differs from stock.
    """

    def __init__(self, gmlp: torch.nn.Module, sizes: Sequence[int]) -> None:
        core, self.core_rest = _first_linear(gmlp.mlp_core)
        gate, self.gate_rest = _first_linear(gmlp.mlp_gate)
        if sum(sizes) != core.in_features or (core.bias is None) != (gate.bias is None):
            raise _UnsupportedLayout("gated MLP input size or bias layout differs")
        self.h = core.out_features
        weight = torch.cat([core.weight, gate.weight]).detach()  # (2h, sum(sizes))
        self.blocks = [w.t().contiguous() for w in weight.split(list(sizes), dim=1)]
        self.bias = None if core.bias is None else torch.cat([core.bias, gate.bias]).detach()
        self.gmlp = gmlp
        # the first two blocks side by side: the two atoms of a bond, or the two bonds of an angle
        self.pair = torch.cat([self.blocks[0], self.blocks[1]], dim=1)
        # the same element-wise activation opening both hidden paths is applied once to all 2h
        self.shared_act = None
        if (self.core_rest and self.gate_rest and type(self.core_rest[0]) is type(self.gate_rest[0])
                and isinstance(self.core_rest[0], torch.nn.SiLU | torch.nn.ReLU | torch.nn.GELU)):
            self.shared_act, self.core_rest, self.gate_rest = (
                self.core_rest[0], self.core_rest[1:], self.gate_rest[1:])

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        """Gated output from the first layer's pre-activations z (N, 2h)."""
        if self.shared_act is not None:
            z = self.shared_act(z)
        core, gate = z.split(self.h, dim=1)
        for layer in self.core_rest:
            core = layer(core)
        for layer in self.gate_rest:
            gate = layer(gate)
        g = self.gmlp
        if g.norm is not None:
            core, gate = g.bn1(core), g.bn2(gate)
        return g.activation(core) * g.sigmoid(gate)


class _FusedCHGNet:
    """Energy (and magmoms, crystal features) of a ``BatchedGraph`` with the weights of a CHGNet,
    through ``_FusedGatedMLP`` layers; the same function of positions and strain as
    ``CHGNet._compute``. Raises ``_UnsupportedLayout`` for a model it does not reproduce."""

    def __init__(self, model) -> None:
        self.model = model
        a = model.atom_embedding.embedding.embedding_dim
        b = model.bond_embedding.out_features
        ang = model.angle_embedding.out_features
        self.atom = [_FusedGatedMLP(layer.twoBody_atom, (a, b, a)) for layer in model.atom_conv_layers]
        # an atom update's centre and neighbour blocks side by side
        self.atom_pair = [torch.cat([f.blocks[0], f.blocks[2]], dim=1) for f in self.atom]
        self.bond = [None if layer is None else _FusedGatedMLP(layer.twoBody_bond, (b, b, ang, a))
                     for layer in model.bond_conv_layers]
        self.angle = [None if layer is None else _FusedGatedMLP(layer.twoBody_bond, (b, b, ang, a))
                      for layer in model.angle_layers]
        for layer in model.bond_conv_layers:
            if layer is not None and not (layer.resnet and layer.bond_norm is None and (
                    not layer.use_mlp_out or _first_linear(layer.mlp_out)[0].bias is None)):
                raise _UnsupportedLayout("bond update with norm, bias or no residual")

    def _gathered(self, fused: _FusedGatedMLP, angle_feas, atom_feas, bond_short, ix) -> torch.Tensor:
        """First-layer pre-activations of a bond or angle update, one row per angle.

        An angle's first bond and its centre atom always come together, so their two shares are
        summed once per (centre, bond) pair and gathered once per angle; the angle's own share is
        added inside the matrix product.
        """
        h2 = 2 * fused.h
        w_ang, w_atom = fused.blocks[2], fused.blocks[3]
        pij = bond_short @ fused.pair
        pc = atom_feas @ w_atom if fused.bias is None else torch.addmm(fused.bias, atom_feas, w_atom)
        pair = pij[:, :h2].index_select(0, ix["pair_bond"]) + pc.index_select(0, ix["pair_centre"])
        rows = pair.index_select(0, ix["inv_pair"]) + pij[:, h2:].index_select(0, ix["inv_j"])
        return torch.addmm(rows, angle_feas, w_ang)

    def _atom_conv(self, k: int, atom_feas, bond_feas, edge_weight, centre, neighbour, d2u):
        layer, fused = self.model.atom_conv_layers[k], self.atom[k]
        w_bond = fused.blocks[1]
        pa = atom_feas @ self.atom_pair[k]
        z = bond_feas @ w_bond if fused.bias is None else torch.addmm(fused.bias, bond_feas, w_bond)
        z = z.index_select(0, d2u)
        z = z + pa[:, :2 * fused.h].index_select(0, centre)
        z = z + pa[:, 2 * fused.h:].index_select(0, neighbour)
        messages = fused.finish(z) * edge_weight
        new = atom_feas.new_zeros(atom_feas.shape[0], messages.shape[1]).index_add_(0, centre, messages)
        if layer.use_mlp_out:
            new = layer.mlp_out(new)
        if layer.resnet:
            new = new + atom_feas
        if layer.atom_norm is not None:
            new = layer.atom_norm(new)
        return new

    def __call__(self, g, *, magmoms: bool = False, crystal_features: bool = False) -> dict:
        """{"energy": model energy per graph (eV, extensive, without the composition term),
        "m": list of |magmom| per graph, "crystal_fea": pooled features} for a BatchedGraph."""
        m = self.model
        out: dict = {}
        atoms_per_graph = torch.bincount(g.atom_owners)
        centre, neighbour = g.batched_atom_graph[:, 0], g.batched_atom_graph[:, 1]
        d2u = g.directed2undirected
        atom_feas = m.atom_embedding(g.atomic_numbers - 1)
        bond_feas = m.bond_embedding(g.bond_bases_ag)
        edge_weight = m.bond_weights_ag(g.bond_bases_ag).index_select(0, d2u)
        has_angles = len(g.angle_bases) != 0
        if has_angles:
            bg = g.batched_bond_graph.long()
            short, inv = torch.unique(bg[:, 1:3], return_inverse=True)
            inv_i, inv_j = inv[:, 0], inv[:, 1]
            pairs, inv_pair = torch.unique(bg[:, 0] * len(short) + inv_i, return_inverse=True)
            angles = {"inv_j": inv_j, "inv_pair": inv_pair, "pair_centre": pairs // len(short),
                      "pair_bond": pairs % len(short)}
            bw_short = m.bond_weights_bg(g.bond_bases_bg.index_select(0, short))
            pair_weight = bw_short.index_select(0, inv_i) * bw_short.index_select(0, inv_j)
            angle_feas = m.angle_embedding(g.angle_bases)
        blocks = list(zip(range(len(m.atom_conv_layers) - 1), m.bond_conv_layers, m.angle_layers,
                          strict=False))
        for idx, bond_layer, angle_layer in blocks:
            atom_feas = self._atom_conv(idx, atom_feas, bond_feas, edge_weight, centre, neighbour, d2u)
            if has_angles and bond_layer is not None:
                bond_short = bond_feas.index_select(0, short)
                fused = self.bond[idx]
                z = self._gathered(fused, angle_feas, atom_feas, bond_short, angles)
                update = fused.finish(z) * pair_weight
                agg = bond_short.new_zeros(len(short), update.shape[1]).index_add_(0, inv_i, update)
                if bond_layer.use_mlp_out:
                    agg = bond_layer.mlp_out(agg)
                bond_feas = bond_feas.index_add(0, short, agg)
                # the last block's angle update feeds nothing that the energy reads
                if angle_layer is not None and idx < len(blocks) - 1:
                    fused = self.angle[idx]
                    z = self._gathered(fused, angle_feas, atom_feas, bond_feas.index_select(0, short),
                                       angles)
                    new_angle = fused.finish(z)
                    if angle_layer.resnet:
                        new_angle = new_angle + angle_feas
                    if angle_layer.angle_norm is not None:
                        new_angle = angle_layer.angle_norm(new_angle)
                    angle_feas = new_angle
            if idx == m.n_conv - 2 and magmoms:
                out["m"] = list(torch.split(torch.abs(m.site_wise(atom_feas)).view(-1),
                                            atoms_per_graph.tolist()))
        atom_feas = self._atom_conv(len(m.atom_conv_layers) - 1, atom_feas, bond_feas, edge_weight,
                                    centre, neighbour, d2u)
        if m.readout_norm is not None:
            atom_feas = m.readout_norm(atom_feas)
        if m.mlp_first:
            out["energy"] = m.pooling(m.mlp(atom_feas), g.atom_owners).view(-1)
            if crystal_features:
                out["crystal_fea"] = m.pooling(atom_feas, g.atom_owners)
        else:
            crystal_feas = m.pooling(atom_feas, g.atom_owners)
            out["energy"] = m.mlp(crystal_feas).view(-1) * atoms_per_graph
            if crystal_features:
                out["crystal_fea"] = crystal_feas
        return out


class FastCHGNetCalculator(Calculator):
    """ASE calculator returning stock CHGNet's energy, forces, stress and magmoms, faster.

    skin (Å): neighbour-list skin; 0 rebuilds the list every call. stress is in eV/Å³ (ASE units),
    magmoms in μB, energy in eV (total, not per atom). With ``lazy_energy=True`` a request for the
    energy alone (ASE ``get_potential_energy``) skips the backward pass, as Monte Carlo wants;
    otherwise every call computes all properties at once, as MD and relaxation want.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress", "magmoms")

    def __init__(self, model=None, *, model_name: str = DEFAULT_MODEL, skin: float = 1.0,
                 compute_magmoms: bool = True, lazy_energy: bool = False, fused: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model if model is not None else load_chgnet(model_name)
        self.converter = self.model.graph_converter
        self.cutoff = float(self.converter.atom_graph_cutoff)
        self.bond_cutoff = float(self.converter.bond_graph_cutoff)
        self.max_z = int(self.model.atom_embedding.embedding.num_embeddings)
        self.skin = float(skin)
        self.compute_magmoms = compute_magmoms
        self.lazy_energy = lazy_energy
        self.device = next(self.model.parameters()).device
        self.n_neighbour_builds = 0
        self._cache: _NeighbourCache | None = None
        self._fused: _FusedCHGNet | None | bool = None if fused else False

    # ----------------------------------------------------------------- graph construction
    def _candidates(self, atoms: Atoms, *, reuse: bool = True) -> _NeighbourCache:
        """Neighbour candidates within cutoff + skin, reused while atoms move less than skin/2.

        With ``reuse=False`` a one-off list with no skin is built and the cache is left alone.
        """
        pos = atoms.positions
        cache = self._cache
        if reuse and cache is not None and cache.skin > 0:
            same = (len(cache.numbers) == len(atoms) and np.array_equal(cache.numbers, atoms.numbers)
                    and np.array_equal(cache.pbc, atoms.pbc)
                    and np.allclose(cache.cell, atoms.cell.array, rtol=0, atol=1e-12))
            if same:
                disp = np.linalg.norm(pos - cache.ref_positions, axis=1).max()
                if disp < 0.5 * cache.skin:
                    return cache
        from pymatgen.core import Lattice, Structure

        skin = self.skin if reuse else 0.0
        structure = Structure(Lattice(atoms.cell.array), atoms.numbers, pos, coords_are_cartesian=True)
        centers, neighbors, images, _ = structure.get_neighbor_list(
            r=self.cutoff + skin, sites=structure.sites, numerical_tol=1e-8)
        images = np.asarray(images, dtype=np.int64).reshape(-1, 3)
        # canonical edge order: the graph then does not depend on when the list was built, so a
        # resumed MD run is bit-identical to an uninterrupted one
        order = np.lexsort((images[:, 2], images[:, 1], images[:, 0], neighbors, centers))
        cand = _NeighbourCache(
            numbers=atoms.numbers.copy(), cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(),
            ref_positions=pos.copy(), centers=centers[order].astype(np.int64),
            neighbors=neighbors[order].astype(np.int64), images=images[order], skin=skin)
        if reuse:
            self._cache = cand
            self.n_neighbour_builds += 1
        return cand

    def graph(self, atoms: Atoms, *, requires_grad: bool = True, reuse: bool = True):
        """CHGNet CrystalGraph of atoms, the same as ``model.graph_converter`` would build."""
        from chgnet.graph.crystalgraph import CrystalGraph

        check_elements(atoms.numbers, self.max_z)
        if not atoms.pbc.all():
            raise ValueError("CHGNet needs a periodic 3-D cell (pbc all True)")
        cand = self._candidates(atoms, reuse=reuse)
        lattice = atoms.cell.array
        frac = np.linalg.solve(lattice.T, atoms.positions.T).T
        vec = (frac[cand.neighbors] + cand.images - frac[cand.centers]) @ lattice
        dist = np.linalg.norm(vec, axis=1)
        keep = (dist <= self.cutoff) & (dist > 1e-8)
        centers, neighbors = cand.centers[keep], cand.neighbors[keep]
        images, dist = cand.images[keep], dist[keep]
        n_atoms = len(atoms)
        if len(np.setdiff1d(np.arange(n_atoms), centers)):
            n_iso = n_atoms - len(np.unique(centers))
            raise IsolatedAtomError(
                f"{n_iso} atom(s) have no neighbour within {self.cutoff} Å (atoms flying apart?)")
        atom_graph, directed2undirected, undirected2directed, bond_graph = crystal_graph_arrays(
            centers, neighbors, images, dist, self.bond_cutoff)
        dtype = torch.float32
        return CrystalGraph(
            atomic_number=torch.tensor(atoms.numbers, dtype=torch.int32),
            atom_frac_coord=torch.tensor(frac, dtype=dtype, requires_grad=requires_grad),
            atom_graph=torch.from_numpy(atom_graph),
            atom_graph_cutoff=self.cutoff,
            neighbor_image=torch.tensor(images, dtype=dtype),
            directed2undirected=torch.from_numpy(directed2undirected),
            undirected2directed=torch.from_numpy(undirected2directed),
            bond_graph=torch.from_numpy(bond_graph),
            bond_graph_cutoff=self.bond_cutoff,
            lattice=torch.tensor(lattice, dtype=dtype, requires_grad=requires_grad),
            composition=atoms.get_chemical_formula(),
        ).to(str(self.device))

    # ----------------------------------------------------------------- model evaluation
    def _fused_model(self) -> _FusedCHGNet | None:
        """The fused forward pass for this model, built on first use; None where the model's layout
        is not one it reproduces (then CHGNet's own ``_compute`` runs)."""
        if self._fused is None:
            try:
                self._fused = _FusedCHGNet(self.model)
            except _UnsupportedLayout as exc:
                warnings.warn(f"CHGNet layers not fused ({exc}); using the stock forward pass",
                              stacklevel=2)
                self._fused = False
        return self._fused or None

    def _evaluate(self, graphs: list, *, forces: bool, magmoms: bool,
                  crystal_features: bool = False) -> list[dict]:
        """Energies (eV), and optionally forces (eV/Å), stress (eV/Å³), magmoms (μB) and the pooled
        crystal feature vector, per graph."""
        from chgnet.model.model import BatchedGraph

        model = self.model
        n_atoms = [int(g.atomic_number.shape[0]) for g in graphs]
        grad_ctx = torch.enable_grad() if forces else torch.no_grad()
        with grad_ctx, flush_denormals(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            batched = BatchedGraph.from_graphs(
                graphs, bond_basis_expansion=model.bond_basis_expansion,
                angle_basis_expansion=model.angle_basis_expansion, compute_stress=forces)
            fused = self._fused_model()
            if fused:
                pred = fused(batched, magmoms=magmoms, crystal_features=crystal_features)
                model_energy = pred["energy"]
            else:
                pred = model._compute(batched, compute_force=False, compute_stress=False,
                                      compute_magmom=magmoms, return_crystal_feas=crystal_features)
                model_energy = pred["e"]
            counts = torch.tensor(n_atoms, dtype=model_energy.dtype, device=model_energy.device)
            if not fused and model.is_intensive:
                model_energy = model_energy * counts
            comp = 0.0
            if model.composition_model is not None:
                comp = model.composition_model(graphs)
                comp = comp * counts if model.is_intensive else comp
            total = model_energy + comp
            grads = None
            if forces:
                inputs = [*batched.atom_positions, *batched.strains]
                grads = torch.autograd.grad(model_energy.sum(), inputs)
        out = []
        n = len(graphs)
        for i in range(n):
            res = {"energy": float(total[i].detach().cpu())}
            if forces:
                res["forces"] = (-grads[i]).detach().cpu().numpy().astype(np.float64)
                volume = float(batched.volumes[i].detach())
                stress = grads[n + i].detach().cpu().numpy().astype(np.float64) / volume
                res["stress"] = stress
            if magmoms:
                res["magmoms"] = pred["m"][i].detach().cpu().numpy().astype(np.float64)
            if crystal_features:
                res["crystal_fea"] = pred["crystal_fea"][i].detach().cpu().numpy().astype(np.float64)
            out.append(res)
        return out

    # ----------------------------------------------------------------- ASE interface
    def calculate(self, atoms: Atoms | None = None, properties=None,
                  system_changes=all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        need_grad = not self.lazy_energy or bool({"forces", "stress"} & set(properties))
        graph = self.graph(self.atoms, requires_grad=need_grad)
        res = self._evaluate([graph], forces=need_grad,
                             magmoms=self.compute_magmoms or "magmoms" in properties)[0]
        self.results["energy"] = self.results["free_energy"] = res["energy"]
        if need_grad:
            self.results["forces"] = res["forces"]
            s = res["stress"]
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if "magmoms" in res:
            self.results["magmoms"] = res["magmoms"]

    def energy_only(self, atoms_list: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
        """Total energies (eV) without any autograd graph: the Monte Carlo path."""
        energies = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            graphs = [self.graph(a, requires_grad=False, reuse=False) for a in chunk]
            energies += [r["energy"] for r in self._evaluate(graphs, forces=False, magmoms=False)]
        return np.asarray(energies)

    def crystal_features(self, atoms_list: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
        """CHGNet's pooled crystal feature vector per structure (the input of its energy readout),
        without any autograd graph: a learned descriptor for transfer to other properties."""
        rows = []
        for start in range(0, len(atoms_list), batch_size):
            graphs = [self.graph(a, requires_grad=False, reuse=False)
                      for a in atoms_list[start:start + batch_size]]
            rows += [r["crystal_fea"] for r in self._evaluate(graphs, forces=False, magmoms=False,
                                                               crystal_features=True)]
        return np.stack(rows) if rows else np.zeros((0, 0))

    def calc_many(self, atoms_list: Sequence[Atoms], batch_size: int = 8) -> list[dict]:
        """Energy (eV), forces (eV/Å), stress (eV/Å³, 3×3), magmoms (μB) of many structures, batched."""
        out: list[dict] = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            graphs = [self.graph(a, requires_grad=True, reuse=False) for a in chunk]
            out += self._evaluate(graphs, forces=True, magmoms=self.compute_magmoms)
        return out
