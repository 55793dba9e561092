"""A faster CHGNet ASE calculator for MD, relaxation, phonons and Monte Carlo.

Stock ``chgnet.model.CHGNet.forward`` differentiates the energy with ``create_graph=True`` and in two
separate ``autograd.grad`` calls (forces, then stress): the second-order graph is only needed to train
on forces. Here the same model weights and the same crystal graph give the same numbers through:

* one first-order backward pass for positions and strain together (forces eV/Å, stress eV/Å³);
* a neighbour candidate list built once with radius ``cutoff + skin`` and re-filtered to the exact
  cutoff from the current positions every call; it is rebuilt when any atom has moved more than
  ``skin / 2`` or the cell changed, so the resulting graph is identical to a fresh search;
* ``torch.no_grad`` energy-only evaluation when only the energy is asked for (Monte Carlo);
* batching of several structures in one forward pass (``calc_many``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
        graph = self.converter.create_graph(n_atoms, centers, neighbors, images, dist)
        atom_graph, directed2undirected = graph.adjacency_list()
        bond_graph, undirected2directed = graph.line_graph_adjacency_list(cutoff=self.bond_cutoff)
        dtype = torch.float32
        return CrystalGraph(
            atomic_number=torch.tensor(atoms.numbers, dtype=torch.int32),
            atom_frac_coord=torch.tensor(frac, dtype=dtype, requires_grad=requires_grad),
            atom_graph=torch.tensor(atom_graph, dtype=torch.int32),
            atom_graph_cutoff=self.cutoff,
            neighbor_image=torch.tensor(images, dtype=dtype),
            directed2undirected=torch.tensor(directed2undirected, dtype=torch.int32),
            undirected2directed=torch.tensor(undirected2directed, dtype=torch.int32),
            bond_graph=torch.tensor(bond_graph, dtype=torch.int32),
            bond_graph_cutoff=self.bond_cutoff,
            lattice=torch.tensor(lattice, dtype=dtype, requires_grad=requires_grad),
            composition=atoms.get_chemical_formula(),
        ).to(str(self.device))

    # ----------------------------------------------------------------- model evaluation
    def _evaluate(self, graphs: list, *, forces: bool, magmoms: bool) -> list[dict]:
        """Energies (eV), and optionally forces (eV/Å), stress (eV/Å³), magmoms (μB), per graph."""
        from chgnet.model.model import BatchedGraph

        model = self.model
        n_atoms = [int(g.atomic_number.shape[0]) for g in graphs]
        grad_ctx = torch.enable_grad() if forces else torch.no_grad()
        with grad_ctx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            batched = BatchedGraph.from_graphs(
                graphs, bond_basis_expansion=model.bond_basis_expansion,
                angle_basis_expansion=model.angle_basis_expansion, compute_stress=forces)
            pred = model._compute(batched, compute_force=False, compute_stress=False,
                                  compute_magmom=magmoms)
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

    def calc_many(self, atoms_list: Sequence[Atoms], batch_size: int = 8) -> list[dict]:
        """Energy (eV), forces (eV/Å), stress (eV/Å³, 3×3), magmoms (μB) of many structures, batched."""
        out: list[dict] = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            graphs = [self.graph(a, requires_grad=True, reuse=False) for a in chunk]
            out += self._evaluate(graphs, forces=True, magmoms=self.compute_magmoms)
        return out
