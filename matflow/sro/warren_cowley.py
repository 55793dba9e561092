"""Warren–Cowley short-range-order parameters with their significance against randomness.

α_ij^m = 1 − p_ij^m / c_j, where p_ij^m is the probability that an m-th shell neighbour of an
i atom is a j atom and c_j the concentration of j (Cowley, Phys. Rev. 77, 669 (1950); the
multicomponent form as used by Sheriff, Cao, Smidt & Freitas, PNAS (2024), arXiv:2311.01545).
α < 0: i–j pairs are favoured; α > 0: avoided; α = 0: random.

A finite cell of a random solid solution never gives α = 0 exactly, so every α comes with the
spread it would have in a random arrangement of the same composition on the same neighbour list:
``z`` (distance from the random mean in standard deviations) and ``band`` (central 95 %). Without
that a lab team cannot tell ordering from the noise of a 500-atom cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ase import Atoms

from matflow.sro.lattice import ShellNeighbours, SROInputError, as_ordered_atoms, shell_neighbours

__all__ = [
    "WarrenCowley",
    "warren_cowley",
    "warren_cowley_from_types",
    "pair_counts",
    "random_alpha_moments",
    "sampled_alpha",
    "types_and_species",
]

# Two-sided 95 % quantile of the normal distribution, for the analytic band.
_Z95 = 1.959963984540054
SIGNIFICANCE_METHODS = ("analytic", "sampled")


@dataclass
class WarrenCowley:
    """Warren–Cowley parameters of one configuration, with significance against randomness.

    ``alpha``, ``z``: (n_shells, n_species, n_species), rows i = centre species, columns j =
    neighbour species, in the order of ``species``. ``band``: (..., 2) central 95 % of α in a
    random arrangement. ``radii`` in Å, ``counts`` neighbours per atom per shell.
    ``random_mean`` / ``random_std``: mean and spread of α under randomness (finite-size bias
    included: the mean off-diagonal α of a random cell is −1/(N−1), not 0).
    """

    species: tuple[str, ...]
    concentrations: np.ndarray
    alpha: np.ndarray
    radii: np.ndarray
    counts: list[int]
    z: np.ndarray
    band: np.ndarray
    n_atoms: int
    significance: str = "analytic"
    random_mean: np.ndarray | None = None
    random_std: np.ndarray | None = None

    @property
    def significant(self) -> np.ndarray:
        """True where α lies outside the central 95 % band of a random arrangement."""
        return (self.alpha < self.band[..., 0]) | (self.alpha > self.band[..., 1])

    def to_dict(self) -> dict:
        """JSON-able dictionary (lists of floats; NaN written as None)."""

        def clean(x):
            arr = np.asarray(x, dtype=float)
            return arr.tolist() if arr.ndim else float(arr)

        def nan_to_none(v):
            if isinstance(v, list):
                return [nan_to_none(u) for u in v]
            return None if isinstance(v, float) and not np.isfinite(v) else v

        out = {
            "species": list(self.species),
            "concentrations": clean(self.concentrations),
            "alpha": clean(self.alpha),
            "radii_A": clean(self.radii),
            "counts": [int(c) for c in self.counts],
            "z": clean(self.z),
            "band": clean(self.band),
            "n_atoms": int(self.n_atoms),
            "significance": self.significance,
            "significant": np.asarray(self.significant).tolist(),
        }
        if self.random_mean is not None:
            out["random_mean"] = clean(self.random_mean)
        if self.random_std is not None:
            out["random_std"] = clean(self.random_std)
        return {k: nan_to_none(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> WarrenCowley:
        """Inverse of ``to_dict`` (None read back as NaN)."""

        def arr(key):
            value = data.get(key)
            if value is None:
                return None
            return np.array(_none_to_nan(value), dtype=float)

        return cls(
            species=tuple(data["species"]),
            concentrations=arr("concentrations"),
            alpha=arr("alpha"),
            radii=arr("radii_A"),
            counts=[int(c) for c in data["counts"]],
            z=arr("z"),
            band=arr("band"),
            n_atoms=int(data["n_atoms"]),
            significance=data.get("significance", "analytic"),
            random_mean=arr("random_mean"),
            random_std=arr("random_std"),
        )

    def table(self) -> pd.DataFrame:
        """Long table: one row per shell and ordered species pair."""
        rows = []
        for m in range(self.alpha.shape[0]):
            for a, si in enumerate(self.species):
                for b, sj in enumerate(self.species):
                    rows.append(
                        {
                            "shell": m + 1,
                            "radius": float(self.radii[m]),
                            "i": si,
                            "j": sj,
                            "alpha": float(self.alpha[m, a, b]),
                            "z": float(self.z[m, a, b]),
                            "band_lo": float(self.band[m, a, b, 0]),
                            "band_hi": float(self.band[m, a, b, 1]),
                            "significant": bool(self.significant[m, a, b]),
                        }
                    )
        return pd.DataFrame(rows)


def _none_to_nan(value):
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return np.nan if value is None else value


def pair_counts(types: np.ndarray, neighbours: ShellNeighbours, n_species: int) -> np.ndarray:
    """Directed pair counts N_ij per shell, shape (n_shells, n_species, n_species)."""
    out = np.empty((neighbours.n_shells, n_species, n_species), dtype=float)
    for m, (i, j) in enumerate(zip(neighbours.i, neighbours.j, strict=True)):
        out[m] = np.bincount(
            types[i] * n_species + types[j], minlength=n_species * n_species
        ).reshape(n_species, n_species)
    return out


def warren_cowley_from_types(
    types: np.ndarray, neighbours: ShellNeighbours, n_species: int
) -> np.ndarray:
    """α (n_shells, n_species, n_species) from integer species 0..n_species-1; no validation.

    For inner loops (Monte Carlo): one bincount per shell. p_ij is normalised by the i atoms'
    actual pair count, so it stays exact for count shells. A species absent from ``types`` gives
    NaN in its row and column.
    """
    counts = pair_counts(types, neighbours, n_species)
    conc = np.bincount(types, minlength=n_species) / len(types)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / counts.sum(axis=2, keepdims=True)
        return 1.0 - p / conc[None, None, :]


def types_and_species(
    atoms: Atoms, species: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer species per atom and the species labels, in a stable order.

    Order: ``species`` when given; else ``atoms.info['species_order']`` (the readers store the
    LAMMPS type order there); else by atomic number. Labels from ``atoms.info['type_labels']``
    (e.g. "type 1" for an unmapped LAMMPS type) replace element symbols.
    """
    symbol_list = [str(s) for s in atoms.get_chemical_symbols()]
    labels = dict(atoms.info.get("type_labels") or {})
    if species is None:
        order = atoms.info.get("species_order")
        if order is None:
            present = {s: int(n) for s, n in zip(symbol_list, atoms.numbers, strict=True)}
            order = sorted(present, key=lambda s: present[s])
        present_set = set(symbol_list)
        order = [str(s) for s in order if s in present_set]
        species_symbols = list(order)
        names = tuple(labels.get(s, s) for s in species_symbols)
    else:
        names = tuple(str(s) for s in species)
        inverse = {v: k for k, v in labels.items()}
        species_symbols = [inverse.get(s, s) for s in names]
        if len(set(species_symbols)) != len(species_symbols):
            raise SROInputError(f"species {list(names)!r} lists a species twice")
        missing = sorted(set(symbol_list) - set(species_symbols))
        if missing:
            raise SROInputError(
                f"species {list(names)!r} does not list {missing!r}, present in the structure"
            )
    index = {s: k for k, s in enumerate(species_symbols)}
    types = np.fromiter((index[s] for s in symbol_list), dtype=np.intp, count=len(symbol_list))
    return types, names


def random_alpha_moments(
    concentrations: np.ndarray, neighbours: ShellNeighbours, n_atoms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of α under a random permutation of species on the cell.

    The mean is exact for a symmetric pair list without self-pairs: E[N_ij] = P n_i n_j / (N(N−1))
    (i ≠ j) and P n_i (n_i − 1) / (N(N−1)) (i = j), with P directed pairs.

    The variance is an approximation derived here: treat sites as independent draws with
    probabilities c (which makes bond counts multinomial with corrections for two bonds sharing a
    site), then remove the part of the variance that comes from composition fluctuations (the
    Hájek projection of the pair count on the site indicators), because a permutation keeps the
    composition fixed. For a Z-regular list of N sites this leaves

        Var(α_ij) = ((1 − c_i)(1 − c_j) + c_i c_j) / (N Z c_i c_j)   (i ≠ j)
        Var(α_ii) = 2 (1 − c_i)² / (N Z c_i²)

    to leading order in 1/N (binary, equiatomic: 1/B with B = NZ/2 bonds, the binomial result).
    ``tests/sro/test_warren_cowley.py`` checks it against shuffling.
    """
    c = np.asarray(concentrations, dtype=float)
    n_s = len(c)
    n = float(n_atoms)
    ci, cj = c[:, None], c[None, :]
    off = ~np.eye(n_s, dtype=bool)
    means, stds = [], []
    for z in neighbours.counts:
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(off, -1.0 / (n - 1.0), 1.0 - n * (ci * n - 1.0) / ((n - 1.0) * ci * n))
            var_off = ((1 - ci) * (1 - cj) + ci * cj) / (n * z * ci * cj)
            var_diag = 2.0 * (1 - ci) ** 2 / (n * z * ci**2)
            var = np.where(off, var_off, np.broadcast_to(var_diag, var_off.shape))
        means.append(mean)
        stds.append(np.sqrt(var))
    return np.array(means), np.array(stds)


def sampled_alpha(
    types: np.ndarray,
    neighbours: ShellNeighbours,
    n_species: int,
    n_random: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """α of ``n_random`` random shuffles of ``types`` on the same neighbour list.

    Shape (n_random, n_shells, n_species, n_species). Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    shuffled = types.copy()
    out = np.empty((n_random, neighbours.n_shells, n_species, n_species))
    for k in range(n_random):
        rng.shuffle(shuffled)
        out[k] = warren_cowley_from_types(shuffled, neighbours, n_species)
    return out


def warren_cowley(
    atoms_or_types: Atoms | np.ndarray | Sequence[int],
    neighbours: ShellNeighbours | None = None,
    *,
    species: Sequence[str] | None = None,
    n_shells: int = 2,
    lattice: str | None = None,
    a: float | None = None,
    counts: Sequence[int] | None = None,
    significance: str = "analytic",
    n_random: int = 200,
    seed: int = 0,
    c_over_a: float | None = None,
) -> WarrenCowley:
    """Warren–Cowley α per shell and species pair, with z-scores and the random 95 % band.

    ``atoms_or_types``: an ordered periodic structure (ase.Atoms or pymatgen Structure), or an
    integer species array 0..n_s−1 together with ``neighbours``. Shells come from ``neighbours``
    when given, else from ``shell_neighbours`` with ``n_shells``, ``lattice``, ``a``, ``counts``.
    ``significance``: "analytic" (normal approximation, see ``random_alpha_moments``) or
    "sampled" (``n_random`` shuffles with ``seed``; band = 2.5/97.5 percentiles).
    """
    if significance not in SIGNIFICANCE_METHODS:
        raise SROInputError(
            f"unknown significance {significance!r}; choose one of {', '.join(SIGNIFICANCE_METHODS)}"
        )
    if isinstance(atoms_or_types, np.ndarray | list | tuple):
        types = np.asarray(atoms_or_types)
        if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer) or types.min() < 0:
            raise SROInputError(
                "atoms_or_types: an array must hold one non-negative integer species per atom"
            )
        if neighbours is None:
            raise SROInputError("atoms_or_types: an integer species array needs neighbours=")
        n_species = int(types.max()) + 1
        names = tuple(species) if species is not None else tuple(str(k) for k in range(n_species))
        if len(names) < n_species:
            raise SROInputError(f"species {list(names)!r} names fewer than {n_species} species")
        n_species = len(names)
        types = types.astype(np.intp)
    else:
        atoms = as_ordered_atoms(atoms_or_types)
        types, names = types_and_species(atoms, species)
        n_species = len(names)
        if neighbours is None:
            neighbours = shell_neighbours(
                atoms, n_shells=n_shells, lattice=lattice, a=a, counts=counts, c_over_a=c_over_a
            )
    if neighbours.n_atoms and neighbours.n_atoms != len(types):
        raise SROInputError(
            f"neighbours were built for {neighbours.n_atoms} atoms, the species array has {len(types)}"
        )
    n = len(types)
    conc = np.bincount(types, minlength=n_species) / n
    alpha = warren_cowley_from_types(types, neighbours, n_species)
    if significance == "analytic":
        mean, std = random_alpha_moments(conc, neighbours, n)
        band = np.stack([mean - _Z95 * std, mean + _Z95 * std], axis=-1)
    else:
        if int(n_random) < 2:
            raise SROInputError(
                f"n_random must be at least 2 for sampled significance, got {n_random}"
            )
        samples = sampled_alpha(types, neighbours, n_species, int(n_random), seed)
        mean, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
        band = np.moveaxis(np.percentile(samples, [2.5, 97.5], axis=0), 0, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (alpha - mean) / std, np.nan)
    return WarrenCowley(
        species=names,
        concentrations=conc,
        alpha=alpha,
        radii=np.asarray(neighbours.radii, dtype=float),
        counts=list(neighbours.counts),
        z=z,
        band=band,
        n_atoms=n,
        significance=significance,
        random_mean=mean,
        random_std=std,
    )
