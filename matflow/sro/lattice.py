"""Ideal lattices and neighbour shells for chemical short-range order on a fixed lattice.

Warren–Cowley parameters and motifs are defined per neighbour shell of an underlying lattice, so
every SRO number depends on which atoms are counted as m-th neighbours. Two ways are offered:

* by distance on the ideal lattice (``lattice`` and ``a``, or ``a`` inferred from the density):
  a pair belongs to shell m when its distance lies between the midpoints to the neighbouring ideal
  shells. Exact for relaxed or ideal cells.
* by neighbour count (``counts=[12, 6]``): each atom's k nearest neighbours, ranks grouped into
  shells. This survives thermal displacements (MD snapshots), where fixed distance windows would
  drop or add atoms.

Either way each atom must have the ideal number of neighbours in every shell: a vacancy, an
interstitial or a wrong lattice is refused with the atom index, the shell and the count, because a
silently wrong coordination biases every α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.build import bulk

__all__ = [
    "KNOWN_LATTICES",
    "SROInputError",
    "LatticeError",
    "ShellCountError",
    "DisorderedStructureError",
    "ShellNeighbours",
    "ideal_supercell",
    "shell_distances",
    "shell_counts",
    "lattice_parameter_from_density",
    "as_ordered_atoms",
    "shell_neighbours",
]

KNOWN_LATTICES = ("fcc", "bcc", "hcp")
IDEAL_C_OVER_A = math.sqrt(8.0 / 3.0)
# Relative tolerance under which two ideal neighbour distances count as one shell (hcp at ideal c/a).
_SHELL_MERGE_RTOL = 1e-6
# Atoms per conventional cell volume a^3 (hcp: per a^3 * c/a, see lattice_parameter_from_density).
_ATOMS_PER_A3 = {"fcc": 4.0, "bcc": 2.0}


class SROInputError(ValueError):
    """Input that an SRO analysis refuses; the message names the input and the reason."""


class LatticeError(SROInputError):
    """Unknown lattice name or a structure that does not fit the requested lattice."""


class DisorderedStructureError(SROInputError):
    """A structure with partially occupied sites: SRO needs one species per site."""


class ShellCountError(SROInputError):
    """An atom whose neighbour count in a shell differs from the ideal lattice's."""

    def __init__(self, atom: int, shell: int, count: int, expected: int, detail: str = ""):
        self.atom, self.shell, self.count, self.expected = atom, shell, count, expected
        super().__init__(
            f"atom {atom}: {count} neighbours in shell {shell + 1}, expected {expected}"
            + (f" ({detail})" if detail else "")
            + "; a vacancy, an interstitial, a wrong lattice or shells that split a set of"
            " equal distances"
        )


@dataclass
class ShellNeighbours:
    """Directed neighbour pairs per shell.

    ``i[m]``, ``j[m]``: atom indices of the pairs in shell m (0 = nearest). Periodic images count as
    separate pairs, so tiny cells give the right coordination. With distance shells every pair
    appears in both directions; with count shells each atom has exactly ``counts[m]`` outgoing pairs
    (symmetric on an ideal lattice, nearly so under thermal displacement).
    ``counts[m]``: neighbours per atom in shell m. ``radii[m]``: shell radius in Å (ideal radius for
    distance shells, mean pair distance for count shells).
    """

    i: list[np.ndarray]
    j: list[np.ndarray]
    counts: list[int]
    radii: np.ndarray
    n_atoms: int = 0
    method: str = "distance"
    lattice: str | None = None
    a: float | None = None

    @property
    def n_shells(self) -> int:
        return len(self.counts)


def _check_lattice_name(lattice: str) -> str:
    name = str(lattice).strip().lower()
    if name not in KNOWN_LATTICES:
        raise LatticeError(
            f"unknown lattice {lattice!r}; known lattices: {', '.join(KNOWN_LATTICES)}"
        )
    return name


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise SROInputError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _c_over_a(lattice: str, c_over_a: float | None) -> float | None:
    if lattice != "hcp":
        return None
    return IDEAL_C_OVER_A if c_over_a is None else _check_positive("c_over_a", c_over_a)


def ideal_supercell(
    lattice: str,
    a: float,
    size: int | tuple[int, int, int],
    *,
    c_over_a: float | None = None,
    symbol: str = "X",
) -> Atoms:
    """Periodic supercell of one placeholder species (``symbol``) on an ideal lattice.

    fcc and bcc use the cubic conventional cell (4 and 2 atoms), hcp the orthohexagonal cell
    (4 atoms, c = ``c_over_a`` * a, ideal sqrt(8/3) by default); ``size`` repeats it along a, b, c.
    """
    name = _check_lattice_name(lattice)
    a = _check_positive("a", a)
    reps = (size, size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(reps) != 3 or any(int(n) < 1 or int(n) != n for n in reps):
        raise SROInputError(f"size must be a positive integer or three of them, got {size!r}")
    if name == "hcp":
        coa = _c_over_a(name, c_over_a)
        cell = bulk(symbol, "hcp", a=a, c=a * coa, orthorhombic=True)
    else:
        cell = bulk(symbol, name, a=a, cubic=True)
    return cell.repeat(tuple(int(n) for n in reps))


@lru_cache(maxsize=64)
def _ideal_shells_unit(lattice: str, n_shells: int, c_over_a: float | None) -> tuple:
    """Shell radii (in units of a) and coordination numbers of the ideal lattice."""
    prim = bulk("X", "hcp", a=1.0, c=c_over_a) if lattice == "hcp" else bulk("X", lattice, a=1.0)
    cutoff = 1.5
    while True:
        i, d = _neighbour_pairs(prim.positions, np.asarray(prim.cell[:]), cutoff, "id")
        d = np.sort(d[i == 0])
        # Group distances that agree to the merge tolerance (hcp's two sets of six at ideal c/a).
        starts = np.flatnonzero(np.diff(d) > _SHELL_MERGE_RTOL * np.maximum(d[1:], 1.0)) + 1
        bounds = np.concatenate(([0], starts, [len(d)]))
        if len(bounds) - 2 >= n_shells:  # the last group may be cut by the cutoff
            radii = tuple(float(d[b]) for b in bounds[:n_shells])
            counts = tuple(int(bounds[k + 1] - bounds[k]) for k in range(n_shells))
            return radii, counts
        cutoff *= 1.5


def _ideal_shells(
    lattice: str, a: float, n_shells: int, c_over_a: float | None
) -> tuple[np.ndarray, list[int]]:
    coa = _c_over_a(lattice, c_over_a)
    radii, counts = _ideal_shells_unit(
        lattice, int(n_shells), None if coa is None else round(coa, 12)
    )
    return np.asarray(radii) * a, list(counts)


def shell_distances(
    lattice: str, a: float, n_shells: int, c_over_a: float | None = None
) -> np.ndarray:
    """Radii (Å) of the first ``n_shells`` neighbour shells of the ideal lattice."""
    name = _check_lattice_name(lattice)
    _check_n_shells(n_shells)
    return _ideal_shells(name, _check_positive("a", a), n_shells, c_over_a)[0]


def shell_counts(lattice: str, n_shells: int, c_over_a: float | None = None) -> list[int]:
    """Coordination numbers of the first ``n_shells`` shells (fcc 12, 6, 24, ...; bcc 8, 6, ...)."""
    name = _check_lattice_name(lattice)
    _check_n_shells(n_shells)
    return _ideal_shells(name, 1.0, n_shells, c_over_a)[1]


def _check_n_shells(n_shells: int) -> int:
    if isinstance(n_shells, bool) or int(n_shells) != n_shells or n_shells < 1:
        raise SROInputError(f"n_shells must be a positive integer, got {n_shells!r}")
    return int(n_shells)


def lattice_parameter_from_density(
    atoms: Atoms, lattice: str, c_over_a: float | None = None
) -> float:
    """Lattice parameter a (Å) of the ideal lattice with the cell's volume per atom."""
    name = _check_lattice_name(lattice)
    volume_per_atom = abs(float(atoms.get_volume())) / len(atoms)
    if name == "hcp":
        coa = _c_over_a(name, c_over_a)
        return (4.0 * volume_per_atom / (math.sqrt(3.0) * coa)) ** (1.0 / 3.0)
    return (_ATOMS_PER_A3[name] * volume_per_atom) ** (1.0 / 3.0)


def as_ordered_atoms(structure, source: str = "structure") -> Atoms:
    """An ``ase.Atoms`` copy of an ordered, 3-D periodic structure (ase.Atoms or pymatgen).

    Refuses partial occupancy (pymatgen disordered sites, or ASE's CIF ``occupancy`` record),
    non-finite positions and cells without volume, naming ``source`` and the reason.
    """
    if not isinstance(structure, Atoms):
        from pymatgen.core import Structure

        if not isinstance(structure, Structure):
            raise SROInputError(
                f"{source}: expected ase.Atoms or pymatgen Structure, got {type(structure).__name__}"
            )
        if not structure.is_ordered:
            bad = next(k for k, site in enumerate(structure) if not site.is_ordered)
            raise DisorderedStructureError(
                f"{source}: partial occupancy on site {bad} ({structure[bad].species}); "
                "SRO needs one species per site (give an ordered supercell)"
            )
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_atoms(structure)
    atoms = structure.copy()
    occupancy = structure.info.get("occupancy")
    if occupancy:
        for tag, occ in occupancy.items():
            if len(occ) > 1 or any(abs(float(v) - 1.0) > 1e-6 for v in occ.values()):
                raise DisorderedStructureError(
                    f"{source}: partial occupancy on site {tag} ({dict(occ)}); "
                    "SRO needs one species per site (give an ordered supercell)"
                )
    if len(atoms) == 0:
        raise SROInputError(f"{source}: no atoms")
    if not np.all(atoms.pbc):
        raise SROInputError(
            f"{source}: cell is not periodic in all three directions (pbc={atoms.pbc.tolist()}); "
            "neighbour shells of a bulk lattice need a periodic cell"
        )
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-6:
        raise SROInputError(f"{source}: cell matrix is non-finite or has no volume")
    bad_rows = ~np.isfinite(atoms.positions).all(axis=1)
    if bad_rows.any():
        raise SROInputError(f"{source}: non-finite position on atom {int(np.argmax(bad_rows))}")
    return atoms


def _neighbour_pairs(
    positions: np.ndarray, cell: np.ndarray, cutoff: float, quantities: str
) -> list[np.ndarray]:
    """Full periodic neighbour list (both directions, images included) from vesin.

    vesin is a cell-list code several times faster than ase.neighborlist on these cells.
    """
    from vesin import NeighborList

    out = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=True, quantities=quantities
    )
    return [
        q.astype(np.intp) if name in "ij" else q for name, q in zip(quantities, out, strict=True)
    ]


def shell_neighbours(
    atoms: Atoms,
    *,
    n_shells: int = 2,
    lattice: str | None = None,
    a: float | None = None,
    counts: Sequence[int] | None = None,
    c_over_a: float | None = None,
) -> ShellNeighbours:
    """Neighbour pairs per shell of a periodic cell of any shape.

    ``counts`` given: count shells (k nearest per atom, ``counts`` per shell; for MD snapshots).
    Else distance shells of ``lattice`` with parameter ``a`` (inferred from the density when None);
    with neither, fcc, bcc and hcp are tried in turn and the first whose shells fit every atom wins.
    Raises ShellCountError for an atom with a non-ideal count, LatticeError for an unknown lattice
    and DisorderedStructureError for partial occupancy.
    """
    atoms = as_ordered_atoms(atoms)
    if counts is not None:
        shell_sizes = [int(c) for c in counts]
        if not shell_sizes or any(c < 1 for c in shell_sizes):
            raise SROInputError(f"counts must be positive neighbour numbers, got {list(counts)!r}")
        return _count_shells(atoms, shell_sizes)
    n_shells = _check_n_shells(n_shells)
    if lattice is not None:
        name = _check_lattice_name(lattice)
        return _distance_shells(atoms, name, a, n_shells, c_over_a)
    if a is not None:
        raise SROInputError("a was given without lattice; give lattice= too (fcc, bcc or hcp)")
    reasons = []
    for name in KNOWN_LATTICES:
        try:
            # fcc and ideal hcp share their first two shells; the third tells them apart.
            found = _distance_shells(atoms, name, None, max(n_shells, 3), c_over_a)
        except ShellCountError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        return ShellNeighbours(
            found.i[:n_shells],
            found.j[:n_shells],
            found.counts[:n_shells],
            found.radii[:n_shells],
            found.n_atoms,
            found.method,
            found.lattice,
            found.a,
        )
    raise LatticeError(
        "the cell fits none of the known lattices at its density ("
        + "; ".join(reasons)
        + "); give lattice= and a=, or counts= for displaced configurations"
    )


def _distance_shells(
    atoms: Atoms, lattice: str, a: float | None, n_shells: int, c_over_a: float | None
) -> ShellNeighbours:
    if a is None:
        a = lattice_parameter_from_density(atoms, lattice, c_over_a)
    a = _check_positive("a", a)
    radii, ideal = _ideal_shells(lattice, a, n_shells + 1, c_over_a)
    upper = 0.5 * (radii[:-1] + radii[1:])  # halfway to the next ideal shell
    i, j, d = _neighbour_pairs(atoms.positions, np.asarray(atoms.cell[:]), upper[-1], "ijd")
    shell = np.searchsorted(upper, d, side="right")
    n = len(atoms)
    per_atom = np.bincount(i * n_shells + shell, minlength=n * n_shells).reshape(n, n_shells)
    expected = np.asarray(ideal[:n_shells])
    bad = per_atom != expected
    if bad.any():
        atom, m = (int(x) for x in np.argwhere(bad)[0])
        raise ShellCountError(
            atom,
            m,
            int(per_atom[atom, m]),
            int(expected[m]),
            f"{lattice} a = {a:.4f} Å, shell radius {radii[m]:.3f} Å; {int(bad.any(axis=1).sum())}"
            " atoms affected",
        )
    pairs_i = [i[shell == m] for m in range(n_shells)]
    pairs_j = [j[shell == m] for m in range(n_shells)]
    return ShellNeighbours(
        pairs_i, pairs_j, [int(c) for c in expected], radii[:n_shells], n, "distance", lattice, a
    )


def _count_shells(atoms: Atoms, shell_sizes: list[int]) -> ShellNeighbours:
    n = len(atoms)
    k = int(sum(shell_sizes))
    cell = np.asarray(atoms.cell[:])
    volume_per_atom = abs(np.linalg.det(cell)) / n
    # Sphere holding about k + 1 atoms at this density, with room for thermal disorder.
    cutoff = 1.25 * (3.0 * (k + 1) * volume_per_atom / (4.0 * math.pi)) ** (1.0 / 3.0)
    for _ in range(12):
        i, j, d = _neighbour_pairs(atoms.positions, cell, cutoff, "ijd")
        found = np.bincount(i, minlength=n)
        if found.min() > k:
            break
        cutoff *= 1.3
    else:
        raise SROInputError(f"could not find {k + 1} neighbours per atom within {cutoff:.2f} Å")
    order = np.lexsort((d, i))
    i, j, d = i[order], j[order], d[order]
    start = np.concatenate(([0], np.cumsum(found)[:-1]))
    rank = np.arange(len(i)) - start[i]
    keep = rank <= k
    dist = d[keep].reshape(n, k + 1)
    partner = j[keep].reshape(n, k + 1)
    edges = np.concatenate(([0], np.cumsum(shell_sizes)))
    means = [float(dist[:, edges[m] : edges[m + 1]].mean()) for m in range(len(shell_sizes))]
    _check_count_boundaries(dist, edges, shell_sizes)
    pairs_i, pairs_j = [], []
    for m in range(len(shell_sizes)):
        pairs_i.append(np.repeat(np.arange(n), shell_sizes[m]))
        pairs_j.append(np.ascontiguousarray(partner[:, edges[m] : edges[m + 1]]).ravel())
    return ShellNeighbours(
        pairs_i, pairs_j, list(shell_sizes), np.asarray(means), n, "count", None, None
    )


# A shell boundary whose typical gap is below this fraction of the distance splits a shell.
_MIN_RELATIVE_GAP = 0.02


def _check_count_boundaries(dist: np.ndarray, edges: np.ndarray, shell_sizes: list[int]) -> None:
    """Refuse count shells that split a shell, and atoms missing or gaining a nearest neighbour.

    Every boundary must lie in a gap: the median distance of the first atom beyond it must exceed
    the median of the last atom before it by 2 %. Per atom only the first boundary is checked
    (last neighbour of shell 1 below, first beyond above, the midpoint of the two medians): that
    gap is wide on fcc, bcc and hcp, so thermal motion does not cross it, while a vacancy or an
    interstitial always changes some atom's nearest neighbours. Outer boundaries are not checked
    per atom because thermal displacements legitimately swap neighbours there.
    """
    for m, size in enumerate(shell_sizes):
        last_in, first_out = dist[:, edges[m + 1] - 1], dist[:, edges[m + 1]]
        typical_in, typical_out = float(np.median(last_in)), float(np.median(first_out))
        gap = typical_out - typical_in
        if gap <= _MIN_RELATIVE_GAP * typical_in:
            raise SROInputError(
                f"counts {shell_sizes}: the boundary after shell {m + 1} ({size} neighbours) falls "
                f"inside a set of nearly equal distances (typical {typical_in:.3f} Å vs "
                f"{typical_out:.3f} Å beyond it); the counts do not match this lattice's shells"
            )
        if m > 0:
            continue
        threshold = 0.5 * (typical_in + typical_out)
        bad = (last_in >= threshold) | (first_out <= threshold)
        if bad.any():
            atom = int(np.argmax(bad))
            within = int(np.count_nonzero(dist[atom] < threshold))
            raise ShellCountError(
                atom,
                m,
                within,
                size,
                f"count shells {shell_sizes}, neighbours within {threshold:.3f} Å, halfway between "
                f"the typical last neighbour of shell 1 and the first beyond; {int(bad.sum())} "
                "atoms affected; if thermal motion crosses a narrow gap, as between bcc's 8 and 6, "
                "merge those shells (counts=[14, ...])",
            )
