"""A faster CHGNet ASE calculator for MD, relaxation, phonons and Monte Carlo.

Stock ``chgnet.model.CHGNet.forward`` differentiates the energy with ``create_graph=True`` and in two
separate ``autograd.grad`` calls (forces, then stress): the second-order graph is only needed to train
on forces. Here the same model weights and the same crystal graph give the same numbers through:

* one first-order backward pass for positions and strain together (forces eV/Å, stress eV/Å³);
* a neighbour candidate list built once with radius ``cutoff + skin`` and re-filtered to the exact
  cutoff from the current positions every call; it is rebuilt when any atom has moved more than
  ``skin / 2`` or the cell changed, so the resulting graph is identical to a fresh search;
* the CHGNet crystal graph and its angle (line) graph built with vectorised numpy, not edge by edge;
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


class FastCHGNetCalculator(Calculator):
    """ASE calculator returning stock CHGNet's energy, forces, stress and magmoms, faster.

    skin (Å): neighbour-list skin; 0 rebuilds the list every call. stress is in eV/Å³ (ASE units),
    magmoms in μB, energy in eV (total, not per atom). With ``lazy_energy=True`` a request for the
    energy alone (ASE ``get_potential_energy``) skips the backward pass, as Monte Carlo wants;
    otherwise every call computes all properties at once, as MD and relaxation want.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress", "magmoms")

    def __init__(self, model=None, *, model_name: str = DEFAULT_MODEL, skin: float = 1.0,
                 compute_magmoms: bool = True, lazy_energy: bool = False, **kwargs) -> None:
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
            pred = model._compute(batched, compute_force=False, compute_stress=False,
                                  compute_magmom=magmoms, return_crystal_feas=crystal_features)
            per_atom = pred["e"]
            counts = torch.tensor(n_atoms, dtype=per_atom.dtype, device=per_atom.device)
            model_energy = per_atom * counts if model.is_intensive else per_atom
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
