"""Fast canonical (fixed-composition) Metropolis Monte Carlo on a lattice with pair and triplet
interactions.

The energy model is a cluster expansion (icet) with pair and, optionally, triplet clusters. Up to
terms that depend on composition alone, such an expansion is a sum of effective interactions
``E = const + sum_(i,j) W_ij(s_i, s_j) + sum_(i,j,k) T_o(s_i, s_j, s_k)``; point terms and the
constant drop out of every swap energy because a swap conserves the composition.
``hamiltonian_from_ce`` reads these exactly off the expansion by substitutions in a one-species
host (species 0): the pair table of two atoms is the mixed second difference of the energy over
their species, the triplet table of a triplet orbit the mixed third difference of that orbit's
share of the cluster vector. Both vanish when any atom holds species 0, so the triplets' own
pair-like parts end up in the pair tables. Pair and triplet lists come from icet's supercell orbit
lists, so the running energy of the Monte Carlo equals ``N * ClusterExpansion.predict`` after any
number of swaps (tested to 1e-8 relative, fcc, bcc and hcp). Quadruplets and larger clusters are
refused.

A trial picks a random atom and a random atom of another species and accepts their swap with the
Metropolis probability; the energy change is computed from the two atoms' neighbourhoods only, in a
numba kernel (pairs and triplets that hold i or j; one that holds both counted once). A model
without triplets runs the pair-only kernel. Simulated annealing runs a descending list of
temperatures; each gets equilibration and production sweeps (1 sweep = N trials), and the
production series is checked with the integrated autocorrelation time (Sokal's windowing, Sokal,
"Monte Carlo methods in statistical mechanics", 1997) and block averages (Flyvbjerg & Petersen,
J. Chem. Phys. 91, 461 (1989)).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
from ase import Atoms

K_B_EV_PER_K = 8.617333262e-5
"""Boltzmann constant (eV/K), CODATA 2018."""


class MonteCarloInputError(ValueError):
    """Input the Monte Carlo refuses; the message names the input and the reason."""


# ---------------------------------------------------------------------------------- Hamiltonian
@dataclass
class PairHamiltonian:
    """Effective pair (and optional triplet) interactions on a fixed supercell, in CSR form.

    ``species``: element per type index. ``offsets`` (N+1,), ``neighbours`` (M,), ``orbit`` (M,):
    the directed pairs of atom i are ``neighbours[offsets[i]:offsets[i+1]]`` (a pair repeated once per
    periodic image that links them), each with its table index. ``tables`` (n_tables, S, S): pair
    energies in eV, ``tables[orbit[p], s_i, s_j]`` for the directed pair p = (i, j); an orbit
    without a symmetry that swaps its two ends (some hcp pairs) has a second, transposed table for
    the reverse direction. ``energy_offset``: eV added to the interaction sum so that
    ``energy(types)`` is the model's total energy for the composition it was built at. ``radii``:
    pair orbit lengths in Å.

    Triplets, in the same form: atom i's triplets are the entries
    ``triplet_offsets[i]:triplet_offsets[i+1]``, entry q holding the two other atoms
    ``triplet_first[q]``, ``triplet_second[q]`` and the table ``triplet_tables[triplet_table[q]]``
    (eV, indexed ``[s_i, s_first, s_second]``, already turned so that atom i comes first). Every
    triplet is stored once for each of its three atoms. ``triplet_radii``: icet's orbit radii (Å).
    """

    species: tuple[str, ...]
    offsets: np.ndarray
    neighbours: np.ndarray
    orbit: np.ndarray
    tables: np.ndarray
    energy_offset: float = 0.0
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    triplet_offsets: np.ndarray | None = None
    triplet_first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    triplet_second: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    triplet_table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    triplet_tables: np.ndarray | None = None
    triplet_radii: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        n_species = len(self.species)
        if self.triplet_offsets is None:
            self.triplet_offsets = np.zeros(self.n_atoms + 1, dtype=np.int64)
        if self.triplet_tables is None:
            self.triplet_tables = np.zeros((0, n_species, n_species, n_species))

    @property
    def n_atoms(self) -> int:
        return len(self.offsets) - 1

    @property
    def has_triplets(self) -> bool:
        return len(self.triplet_table) > 0

    def _triplet_args(self) -> tuple:
        return (self.triplet_offsets, self.triplet_first, self.triplet_second, self.triplet_table,
                self.triplet_tables)

    def pair_energy(self, types: np.ndarray) -> float:
        """Sum of pair energies (eV) over all undirected pairs, for a type array."""
        types = np.ascontiguousarray(types, dtype=np.int32)
        return float(_pair_energy(types, self.offsets, self.neighbours, self.orbit, self.tables))

    def triplet_energy(self, types: np.ndarray) -> float:
        """Sum of triplet energies (eV) over all triplets, for a type array."""
        types = np.ascontiguousarray(types, dtype=np.int32)
        return float(_triplet_energy(types, *self._triplet_args()))

    def interaction_energy(self, types: np.ndarray) -> float:
        """Pair plus triplet energy (eV), without the offset."""
        return self.pair_energy(types) + (self.triplet_energy(types) if self.has_triplets else 0.0)

    def energy(self, types: np.ndarray) -> float:
        """Total energy (eV) at the composition the offset was set for."""
        return self.energy_offset + self.interaction_energy(types)

    def swap_energy(self, types: np.ndarray, i: int, j: int) -> float:
        """Energy change (eV) of swapping the species of atoms i and j (local computation)."""
        types = np.ascontiguousarray(types, dtype=np.int32)
        if self.has_triplets:
            return float(_swap_delta3(types, int(i), int(j), self.offsets, self.neighbours,
                                      self.orbit, self.tables, *self._triplet_args()))
        return float(_swap_delta(types, int(i), int(j), self.offsets, self.neighbours, self.orbit,
                                 self.tables))


def pair_hamiltonian_from_neighbour_shells(species: Sequence[str], shell_pairs: Sequence[tuple],
                                           tables: np.ndarray, n_atoms: int) -> PairHamiltonian:
    """A PairHamiltonian from directed pairs per shell ``[(i_m, j_m), ...]`` and tables (m, S, S)."""
    tables = np.asarray(tables, dtype=np.float64)
    if tables.shape != (len(shell_pairs), len(species), len(species)):
        raise MonteCarloInputError(f"tables: shape {tables.shape}, expected "
                                   f"({len(shell_pairs)}, {len(species)}, {len(species)})")
    if not np.allclose(tables, tables.transpose(0, 2, 1)):
        raise MonteCarloInputError("tables: pair energies must be symmetric, W[m,a,b] == W[m,b,a]")
    i = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in shell_pairs])
    j = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in shell_pairs])
    orb = np.concatenate([np.full(len(p[0]), m, dtype=np.int32) for m, p in enumerate(shell_pairs)])
    return _csr(tuple(species), i, j, orb, tables, n_atoms)


def _csr(species, i, j, orb, tables, n_atoms, offset=0.0, radii=None) -> PairHamiltonian:
    order = np.lexsort((orb, j, i))
    i, j, orb = i[order], j[order], orb[order]
    offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    np.add.at(offsets, i + 1, 1)
    return PairHamiltonian(species=species, offsets=np.cumsum(offsets),
                           neighbours=j.astype(np.int32), orbit=orb.astype(np.int32),
                           tables=np.ascontiguousarray(tables, dtype=np.float64),
                           energy_offset=float(offset),
                           radii=np.zeros(len(tables)) if radii is None else np.asarray(radii))


MAX_CLUSTER_ORDER = 3
"""Largest cluster (triplets) whose interactions the fast Monte Carlo evaluates."""


def _check_supported(cluster_space) -> int:
    """Highest cluster order of the expansion; MonteCarloInputError if the kernel cannot run it."""
    orders = [orbit.order for orbit in cluster_space.orbit_list.orbits]
    max_order = max(orders, default=1)
    if max_order > MAX_CLUSTER_ORDER:
        raise MonteCarloInputError(
            f"cluster expansion: has clusters of order {max_order} (cutoffs "
            f"{list(cluster_space.cutoffs)}); the fast Monte Carlo handles pairs and triplets "
            "(order <= 3) only: fit with at most two cutoffs, e.g. cutoffs=(5.0, 4.0)")
    if len(cluster_space.get_sublattices(cluster_space.primitive_structure)) != 1:
        raise MonteCarloInputError("cluster expansion: more than one active sublattice is not "
                                   "supported by the fast Monte Carlo")
    return max_order


class _Probe:
    """Energies of a one-species host (species 0) with a few atoms substituted, per cluster-vector
    column set; substitutions are cached, since the differences below reuse them."""

    def __init__(self, cluster_space, structure: Atoms, species: tuple[str, ...],
                 ecis: np.ndarray) -> None:
        self.cs, self.species, self.ecis = cluster_space, species, ecis
        self.n_atoms = len(structure)
        self.host = structure.copy()
        self.host.set_chemical_symbols([species[0]] * self.n_atoms)
        self._cache: dict[tuple, np.ndarray] = {}

    def cv(self, subs: tuple[tuple[int, str], ...]) -> np.ndarray:
        key = tuple(sorted(subs))
        if key not in self._cache:
            work = self.host.copy()
            for site, sym in key:
                work[site].symbol = sym
            self._cache[key] = self.cs.get_cluster_vector(work)
        return self._cache[key]

    def mixed_difference(self, sites: Sequence[int], symbols: Sequence[str], cols) -> float:
        """Mixed finite difference (eV) of the total energy, restricted to ``cols``, over the
        species of ``sites``: the part of the energy that needs all of them substituted."""
        total = np.zeros_like(self.ecis)
        n = len(sites)
        for k in range(n + 1):
            for subset in itertools.combinations(range(n), k):
                sign = -1.0 if (n - k) % 2 else 1.0
                total += sign * self.cv(tuple((sites[m], symbols[m]) for m in subset))
        return self.n_atoms * float(self.ecis[cols] @ total[cols])


def _cluster_sites(orbit) -> np.ndarray:
    return np.array([[ls.index for ls in c.lattice_sites] for c in orbit.clusters], dtype=np.int64)


def _pair_terms(orbits, probe: _Probe, cols_of, *, exclusive: bool) -> tuple:
    """Directed pair lists and tables of the pair orbits in a supercell orbit list.

    Each orbit's table is ``W(s, t)``, the mixed difference over a representative pair (a, b),
    divided by the number of the orbit's clusters that join a and b. ``exclusive``: the
    difference sees every column (pairs and triplets), so no two orbits may join the same atoms,
    and orbits with an all-zero table are left out.
    """
    species, n_atoms = probe.species, probe.n_atoms
    n_sp = len(species)
    pairs_i, pairs_j, pairs_orb, tables, radii = [], [], [], [], []
    keys_seen: dict[int, int] = {}
    for k, orbit in enumerate(orbits):
        if orbit.order != 2:
            continue
        sites = _cluster_sites(orbit)
        if np.any(sites[:, 0] == sites[:, 1]):
            raise MonteCarloInputError(
                f"structure: in the {n_atoms}-atom cell an atom is a {orbit.radius * 2:.2f} Å "
                "pair neighbour of its own periodic image; use a larger cell")
        if exclusive:
            keys = np.unique(np.minimum(sites[:, 0], sites[:, 1]) * n_atoms
                             + np.maximum(sites[:, 0], sites[:, 1]))
            clash = [int(x) for x in keys if int(x) in keys_seen]
            if clash:
                raise MonteCarloInputError(
                    f"structure: the {n_atoms}-atom cell joins atoms {clash[0] // n_atoms} and "
                    f"{clash[0] % n_atoms} at two distances (through periodic images) within the "
                    "cluster cutoffs; use a larger cell")
            keys_seen.update(dict.fromkeys((int(x) for x in keys), k))
        a0, b0 = int(sites[0, 0]), int(sites[0, 1])
        n_forward = int(np.sum((sites[:, 0] == a0) & (sites[:, 1] == b0)))
        n_reverse = int(np.sum((sites[:, 0] == b0) & (sites[:, 1] == a0)))
        double = np.zeros((n_sp, n_sp))
        for s in range(1, n_sp):
            for t in range(1, n_sp):
                double[s, t] = probe.mixed_difference((a0, b0), (species[s], species[t]),
                                                      cols_of(k))
        if exclusive and not np.any(double):
            continue
        symmetric = np.allclose(double, double.T, rtol=1e-9, atol=1e-12)
        if n_reverse and not symmetric:
            raise MonteCarloInputError(
                f"structure: the {n_atoms}-atom cell joins two atoms by pair orbit {k} in both "
                "directions, which leaves its directed interaction undetermined; use a larger cell")
        table = double / (n_forward + n_reverse)
        # directed pairs: i sees j through the table, j sees i through its transpose
        fwd = len(tables)
        tables.append(table)
        rev = fwd
        if not symmetric:
            rev = fwd + 1
            tables.append(table.T.copy())
        pairs_i += [sites[:, 0], sites[:, 1]]
        pairs_j += [sites[:, 1], sites[:, 0]]
        pairs_orb += [np.full(len(sites), fwd, np.int32), np.full(len(sites), rev, np.int32)]
        radii += [2 * float(orbit.radius)] * (1 if symmetric else 2)  # icet: half the length
    if not tables:
        raise MonteCarloInputError("cluster expansion: no pair orbits (cutoff shorter than the "
                                   "nearest-neighbour distance?)")
    return (np.concatenate(pairs_i), np.concatenate(pairs_j), np.concatenate(pairs_orb),
            np.array(tables), radii)


# the three turns of a triplet table that put the atom at position 0, 1 or 2 first
_TURNS = ((0, (0, 1, 2)), (1, (1, 0, 2)), (2, (2, 0, 1)))


def _triplet_terms(orbits, probe: _Probe, columns: list[np.ndarray]) -> tuple:
    """Per-atom triplet entries and turned tables of the triplet orbits in a supercell orbit list.

    An orbit's table ``T(s, t, u)`` is the mixed third difference of that orbit's columns over a
    representative cluster (a, b, c), in icet's site order, which every cluster of the orbit shares.
    """
    species, n_atoms = probe.species, probe.n_atoms
    n_sp = len(species)
    atom, first, second, which, tables, radii = [], [], [], [], [], []
    for k, orbit in enumerate(orbits):
        if orbit.order != 3:
            continue
        sites = _cluster_sites(orbit)
        if np.any((sites[:, 0] == sites[:, 1]) | (sites[:, 0] == sites[:, 2])
                  | (sites[:, 1] == sites[:, 2])):
            raise MonteCarloInputError(
                f"structure: in the {n_atoms}-atom cell a triplet of orbit {k} holds an atom and "
                "its own periodic image; use a larger cell")
        rep = sites[0]
        n_cover = int(np.sum(np.all(np.sort(sites, axis=1) == np.sort(rep), axis=1)))
        if n_cover != 1:
            raise MonteCarloInputError(
                f"structure: the {n_atoms}-atom cell holds atoms {rep.tolist()} in {n_cover} "
                f"triplets of orbit {k} (through periodic images); use a larger cell")
        table = np.zeros((n_sp, n_sp, n_sp))
        for s, t, u in itertools.product(range(1, n_sp), repeat=3):
            table[s, t, u] = probe.mixed_difference(
                tuple(int(x) for x in rep), (species[s], species[t], species[u]), columns[k])
        if not np.any(table):
            continue
        own: list[int] = []
        for pos, turn in _TURNS:
            turned = table.transpose(turn)
            index = next((m for m in own if np.array_equal(tables[m], turned)), None)
            if index is None:
                index = len(tables)
                tables.append(np.ascontiguousarray(turned))
                radii.append(float(orbit.radius))
                own.append(index)
            others = [m for m in range(3) if m != pos]
            atom.append(sites[:, pos])
            first.append(sites[:, others[0]])
            second.append(sites[:, others[1]])
            which.append(np.full(len(sites), index, np.int32))
    if not tables:
        return None
    atom_all = np.concatenate(atom)
    order = np.argsort(atom_all, kind="stable")
    offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    np.add.at(offsets, atom_all + 1, 1)
    return (np.cumsum(offsets), np.concatenate(first)[order].astype(np.int32),
            np.concatenate(second)[order].astype(np.int32),
            np.concatenate(which)[order].astype(np.int32),
            np.ascontiguousarray(tables, dtype=np.float64), np.asarray(radii))


def hamiltonian_from_ce(ce, structure: Atoms) -> PairHamiltonian:
    """Exact pair and triplet interactions of an icet ``ClusterExpansion`` on ``structure``.

    ``structure`` fixes the supercell (and its composition, for ``energy_offset``). For a
    pair-only expansion each pair orbit's table is ``W_o(s, t) = E(i=s, j=t) - E(i=s) - E(j=t) +
    E(host)``, counted from that orbit's own cluster-vector elements, for one representative pair
    (i, j) of the orbit in a host of species 0, divided by the number of the orbit's clusters that
    join i and j. With triplets, the pair tables take the same difference over all elements (so
    the triplets' pair-like parts are included) on the pair orbits of a pair-only cluster space as
    long as the longest cutoff, and each triplet orbit gets the third difference of its own
    elements. Expansions with quadruplets or larger clusters raise MonteCarloInputError.
    """
    cs = ce._cluster_space
    max_order = _check_supported(cs)
    species = tuple(sorted(cs.chemical_symbols[0]))
    ecis = np.asarray(ce.parameters, dtype=np.float64)
    n_atoms = len(structure)
    supercell_orbits = cs.orbit_list.get_supercell_orbit_list(
        structure, cs.fractional_position_tolerance)

    # cluster-vector columns of each orbit (column 0 is the zerolet)
    columns, col = [], 1
    for orbit in cs.orbit_list.orbits:
        n_el = len(orbit.cluster_vector_elements)
        columns.append(np.arange(col, col + n_el))
        col += n_el
    if col != len(ecis):
        raise MonteCarloInputError(f"cluster expansion: {len(ecis)} parameters but the cluster "
                                   f"space has {col} cluster-vector elements")

    probe = _Probe(cs, structure, species, ecis)
    triplets = None
    if max_order <= 2:
        pair_orbits = supercell_orbits.orbits
        pi, pj, porb, tables, radii = _pair_terms(pair_orbits, probe, lambda k: columns[k],
                                                  exclusive=False)
    else:
        from icet import ClusterSpace

        # every pair a triplet spans lies within the longest cutoff; a pair-only space to that
        # length classifies them by symmetry (tables that come out zero are dropped)
        aux = ClusterSpace(cs.primitive_structure, [max(float(c) for c in cs.cutoffs) + 1e-3],
                           cs.chemical_symbols, symprec=cs.symprec,
                           position_tolerance=cs.position_tolerance)
        pair_orbits = aux.orbit_list.get_supercell_orbit_list(
            structure, aux.fractional_position_tolerance).orbits
        everything = np.arange(len(ecis))
        pi, pj, porb, tables, radii = _pair_terms(pair_orbits, probe, lambda k: everything,
                                                  exclusive=True)
        triplets = _triplet_terms(supercell_orbits.orbits, probe, columns)
    ham = _csr(species, pi.astype(np.int64), pj.astype(np.int64), porb, tables, n_atoms,
               radii=radii)
    if triplets is not None:
        (ham.triplet_offsets, ham.triplet_first, ham.triplet_second, ham.triplet_table,
         ham.triplet_tables, ham.triplet_radii) = triplets
    types = types_from_symbols(structure.get_chemical_symbols(), species)
    ham.energy_offset = n_atoms * float(ce.predict(structure)) - ham.interaction_energy(types)
    return ham


pair_hamiltonian_from_ce = hamiltonian_from_ce
"""Former name, kept for callers written when only pairs were supported."""


def types_from_symbols(symbols: Sequence[str], species: Sequence[str]) -> np.ndarray:
    """Type indices (int32) of chemical symbols in the order of ``species``."""
    index = {s: k for k, s in enumerate(species)}
    unknown = sorted(set(symbols) - set(index))
    if unknown:
        raise MonteCarloInputError(f"structure: species {unknown} not in the model's {list(species)}")
    return np.array([index[s] for s in symbols], dtype=np.int32)


# ---------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def _pair_energy(types, offsets, neighbours, orbit, tables):
    total = 0.0
    for i in range(len(types)):
        for p in range(offsets[i], offsets[i + 1]):
            total += tables[orbit[p], types[i], types[neighbours[p]]]
    return 0.5 * total


@numba.njit(cache=True, nogil=True, inline="always")
def _site_energy(types, i, offsets, neighbours, orbit, tables):
    e = 0.0
    ti = types[i]
    for p in range(offsets[i], offsets[i + 1]):
        e += tables[orbit[p], ti, types[neighbours[p]]]
    return e


@numba.njit(cache=True, nogil=True, inline="always")
def _local_energy(types, i, j, offsets, neighbours, orbit, tables):
    """Energy of all pairs that contain i or j (the i-j pairs counted once)."""
    e = _site_energy(types, j, offsets, neighbours, orbit, tables)
    ti = types[i]
    for p in range(offsets[i], offsets[i + 1]):
        k = neighbours[p]
        if k != j:
            e += tables[orbit[p], ti, types[k]]
    return e


@numba.njit(cache=True, nogil=True)
def _swap_delta(types, i, j, offsets, neighbours, orbit, tables):
    before = _local_energy(types, i, j, offsets, neighbours, orbit, tables)
    ti, tj = types[i], types[j]
    types[i], types[j] = tj, ti
    after = _local_energy(types, i, j, offsets, neighbours, orbit, tables)
    types[i], types[j] = ti, tj
    return after - before


@numba.njit(cache=True, nogil=True)
def _triplet_energy(types, t_offsets, t_first, t_second, t_table, t_tables):
    total = 0.0
    for i in range(len(types)):
        ti = types[i]
        for q in range(t_offsets[i], t_offsets[i + 1]):
            total += t_tables[t_table[q], ti, types[t_first[q]], types[t_second[q]]]
    return total / 3.0


@numba.njit(cache=True, nogil=True, inline="always")
def _triplet_delta(types, i, j, t_offsets, t_first, t_second, t_table, t_tables):
    """Change of the triplet energy when atoms i and j swap species (``types`` before the swap),
    in one pass over their triplets; one that holds both is taken from j's list only."""
    ti, tj = types[i], types[j]
    d = 0.0
    for q in range(t_offsets[i], t_offsets[i + 1]):
        a = t_first[q]
        b = t_second[q]
        if a == j or b == j:
            continue
        sa, sb = types[a], types[b]
        d += t_tables[t_table[q], tj, sa, sb] - t_tables[t_table[q], ti, sa, sb]
    for q in range(t_offsets[j], t_offsets[j + 1]):
        a = t_first[q]
        b = t_second[q]
        sa, sb = types[a], types[b]
        na = tj if a == i else sa
        nb = tj if b == i else sb
        d += t_tables[t_table[q], ti, na, nb] - t_tables[t_table[q], tj, sa, sb]
    return d


@numba.njit(cache=True, nogil=True)
def _swap_delta3(types, i, j, offsets, neighbours, orbit, tables, t_offsets, t_first, t_second,
                 t_table, t_tables):
    d3 = _triplet_delta(types, i, j, t_offsets, t_first, t_second, t_table, t_tables)
    return d3 + _swap_delta(types, i, j, offsets, neighbours, orbit, tables)


@numba.njit(cache=True, nogil=True)
def _metropolis3(types, offsets, neighbours, orbit, tables, t_offsets, t_first, t_second, t_table,
                 t_tables, beta, n_trials, rng):
    """``_metropolis`` with triplets; a separate kernel so that pair-only models keep theirs."""
    n = len(types)
    accepted = 0
    de_sum = 0.0
    for _ in range(n_trials):
        i = rng.integers(0, n)
        j = rng.integers(0, n)
        while types[j] == types[i]:
            j = rng.integers(0, n)
        ti, tj = types[i], types[j]
        de = _triplet_delta(types, i, j, t_offsets, t_first, t_second, t_table, t_tables)
        before = _local_energy(types, i, j, offsets, neighbours, orbit, tables)
        types[i], types[j] = tj, ti
        de += _local_energy(types, i, j, offsets, neighbours, orbit, tables) - before
        if de <= 0.0 or rng.random() < math.exp(-beta * de):
            accepted += 1
            de_sum += de
        else:
            types[i], types[j] = ti, tj
    return accepted, de_sum


@numba.njit(cache=True, nogil=True)
def _metropolis(types, offsets, neighbours, orbit, tables, beta, n_trials, rng):
    """n_trials swap attempts of two atoms of different species; returns (accepted, dE sum).
    ``rng`` is a numpy Generator (numba draws from its bit generator, so runs are reproducible)."""
    n = len(types)
    accepted = 0
    de_sum = 0.0
    for _ in range(n_trials):
        i = rng.integers(0, n)
        j = rng.integers(0, n)
        while types[j] == types[i]:
            j = rng.integers(0, n)
        ti, tj = types[i], types[j]
        before = _local_energy(types, i, j, offsets, neighbours, orbit, tables)
        types[i], types[j] = tj, ti
        after = _local_energy(types, i, j, offsets, neighbours, orbit, tables)
        de = after - before
        if de <= 0.0 or rng.random() < math.exp(-beta * de):
            accepted += 1
            de_sum += de
        else:
            types[i], types[j] = ti, tj
    return accepted, de_sum


# ---------------------------------------------------------------------------------- statistics
def integrated_autocorrelation_time(x: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time (in samples) with Sokal's automatic window (M >= c tau)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4 or np.var(x) == 0:
        return 0.5
    f = np.fft.rfft(x - x.mean(), n=2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf /= acf[0]
    tau = 0.5
    for m in range(1, n):
        tau += acf[m]
        if m >= c * tau:
            break
    return float(max(tau, 0.5))


def block_average(x: np.ndarray, n_blocks: int = 10) -> tuple[float, float]:
    """Mean and its standard error from ``n_blocks`` contiguous block means."""
    x = np.asarray(x, dtype=np.float64)
    n_blocks = max(2, min(n_blocks, len(x)))
    size = len(x) // n_blocks
    if size == 0:
        return float(x.mean()), float("nan")
    means = x[: size * n_blocks].reshape(n_blocks, size, *x.shape[1:]).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / math.sqrt(n_blocks))


# ---------------------------------------------------------------------------------- simulation
@dataclass
class TemperatureResult:
    """Observables at one temperature (energies per atom; errors are block standard errors)."""

    temperature_K: float
    energy_eV_per_atom: float
    energy_err_eV_per_atom: float
    heat_capacity_kB_per_atom: float
    heat_capacity_err_kB_per_atom: float
    acceptance_rate: float
    tau_int_samples: float
    n_samples: int
    n_effective: float
    converged: bool
    convergence_note: str
    alpha: list | None = None
    alpha_err: list | None = None
    wall_time_s: float = 0.0
    trials_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class CanonicalMonteCarlo:
    """Canonical swap Monte Carlo on a ``PairHamiltonian`` (pairs, and triplets when it has them).

    ``types``: starting species per site (int indices into ``hamiltonian.species``); the running
    ``energy`` (eV) starts at ``hamiltonian.energy(types)`` and is updated by accepted swaps only.
    """

    def __init__(self, hamiltonian: PairHamiltonian, types: np.ndarray, *, seed: int = 0) -> None:
        types = np.ascontiguousarray(types, dtype=np.int32)
        if types.shape != (hamiltonian.n_atoms,):
            raise MonteCarloInputError(f"types: length {len(types)}, the Hamiltonian has "
                                       f"{hamiltonian.n_atoms} sites")
        if types.min() < 0 or types.max() >= len(hamiltonian.species):
            raise MonteCarloInputError("types: indices outside the model's species")
        if len(np.unique(types)) < 2:
            raise MonteCarloInputError("types: a single species leaves nothing to swap")
        self.ham = hamiltonian
        self.types = types.copy()
        self.energy = hamiltonian.energy(self.types)
        self.n_trials = 0
        self.n_accepted = 0
        self.rng = np.random.default_rng(seed)

    def run(self, temperature_K: float, n_trials: int) -> float:
        """Attempt ``n_trials`` swaps at ``temperature_K``; returns the acceptance fraction."""
        if not temperature_K > 0:
            raise MonteCarloInputError(f"temperature {temperature_K!r} K: must be > 0")
        beta = 1.0 / (K_B_EV_PER_K * float(temperature_K))
        h = self.ham
        if h.has_triplets:
            acc, de = _metropolis3(self.types, h.offsets, h.neighbours, h.orbit, h.tables,
                                   *h._triplet_args(), beta, int(n_trials), self.rng)
        else:
            acc, de = _metropolis(self.types, h.offsets, h.neighbours, h.orbit, h.tables, beta,
                                  int(n_trials), self.rng)
        self.energy += de
        self.n_trials += int(n_trials)
        self.n_accepted += int(acc)
        return acc / max(int(n_trials), 1)

    def sample(self, temperature_K: float, *, n_equil_sweeps: int, n_prod_sweeps: int,
               sample_every: int = 1,
               observe: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, list, float]:
        """Equilibrate, then record the energy (eV) every ``sample_every`` sweeps and
        ``observe(types)`` when given; returns (energies, observations, acceptance)."""
        n = self.ham.n_atoms
        for _ in range(n_equil_sweeps):
            self.run(temperature_K, n)
        energies, obs, acc = [], [], []
        for sweep in range(1, n_prod_sweeps + 1):
            acc.append(self.run(temperature_K, n))
            if sweep % sample_every == 0:
                energies.append(self.energy)
                if observe is not None:
                    obs.append(observe(self.types))
        return np.array(energies), obs, float(np.mean(acc)) if acc else 0.0


def anneal(mc: CanonicalMonteCarlo, temperatures_K: Sequence[float], *, n_equil_sweeps: int = 50,
           n_prod_sweeps: int = 200, sample_every: int = 1,
           observe: Callable[[np.ndarray], np.ndarray] | None = None,
           progress: Callable[[str], None] | None = None) -> list[TemperatureResult]:
    """Simulated annealing through ``temperatures_K`` (sorted high to low), one result per T.

    ``observe(types)`` returns an array (e.g. Warren-Cowley α per shell and pair), averaged with
    block errors. A temperature is flagged not converged when the production run holds fewer than
    50 independent samples (n / (2 tau_int)) or its first and second halves differ by more than
    four combined standard errors (a drift left from equilibration).
    """
    temps = sorted((float(t) for t in temperatures_K), reverse=True)
    if not temps or min(temps) <= 0:
        raise MonteCarloInputError(f"temperatures {list(temperatures_K)!r}: need positive values")
    if n_prod_sweeps < 2 * sample_every:
        raise MonteCarloInputError("n_prod_sweeps: need at least two samples per temperature")
    n = mc.ham.n_atoms
    out = []
    for t in temps:
        start = time.perf_counter()
        energies, obs, acc = mc.sample(t, n_equil_sweeps=n_equil_sweeps,
                                       n_prod_sweeps=n_prod_sweeps, sample_every=sample_every,
                                       observe=observe)
        wall = time.perf_counter() - start
        e_atom = energies / n
        tau = integrated_autocorrelation_time(e_atom)
        n_eff = len(e_atom) / (2 * tau)
        mean, err = block_average(e_atom)
        kt = K_B_EV_PER_K * t
        # C/kB per atom = N var(e) / (kB T)^2 with e the energy per atom
        cv_series = n * (e_atom - mean) ** 2 / kt**2
        cv_mean, cv_err = block_average(cv_series)
        half = len(e_atom) // 2
        m1, s1 = block_average(e_atom[:half], 5)
        m2, s2 = block_average(e_atom[half:], 5)
        drift = abs(m1 - m2) > 4 * math.hypot(s1, s2) + 1e-12
        notes = []
        if n_eff < 50:
            notes.append(f"only {n_eff:.0f} independent samples (tau_int = {tau:.1f} samples)")
        if drift:
            notes.append(f"halves differ: {m1:.6f} vs {m2:.6f} eV/atom")
        alpha = alpha_err = None
        if obs:
            arr = np.array(obs)
            means = arr.mean(axis=0)
            n_b = max(2, min(10, len(arr)))
            size = len(arr) // n_b
            blocks = arr[: size * n_b].reshape(n_b, size, *arr.shape[1:]).mean(axis=1)
            alpha, alpha_err = means.tolist(), (blocks.std(axis=0, ddof=1) / math.sqrt(n_b)).tolist()
        n_trials = (n_equil_sweeps + n_prod_sweeps) * n
        res = TemperatureResult(
            temperature_K=t, energy_eV_per_atom=mean, energy_err_eV_per_atom=err,
            heat_capacity_kB_per_atom=cv_mean, heat_capacity_err_kB_per_atom=cv_err,
            acceptance_rate=acc, tau_int_samples=tau, n_samples=len(e_atom), n_effective=n_eff,
            converged=not notes, convergence_note="; ".join(notes) or "ok", alpha=alpha,
            alpha_err=alpha_err, wall_time_s=wall, trials_per_s=n_trials / wall if wall else 0.0)
        out.append(res)
        if progress is not None:
            progress(f"T = {t:g} K: E = {mean:.5f} ± {err:.5f} eV/atom, acc = {acc:.3f}, "
                     f"{res.trials_per_s:.3g} trials/s")
    return out
