"""Cluster-expansion energy model for chemical short-range order, fitted to a universal potential.

Following the route of Sheriff, Cao, Smidt & Freitas (PNAS 121, e2322962121 (2024)) — a machine-
learned energy model drives Monte Carlo, whose configurations give the SRO statistics — the energy
model here is an icet cluster expansion (Ångqvist et al., Adv. Theory Simul. 2, 1900015 (2019))
trained on energies of the chosen universal potential for ideal-lattice supercells:

* half of the training cells are random solid solutions; the other half are partially ordered by
  short swap Monte Carlo runs under a random nearest-neighbour pair interaction, so the training set
  covers the SRO that the production Monte Carlo visits, not only the random state;
* the fit is k-fold cross-validated (RMSE in meV/atom and R² of the out-of-fold predictions against
  the potential), and validated on held-out single swaps — the moves the Monte Carlo makes — as
  the error of the predicted swap energy in meV per swap;
* pairs only, or pairs and triplets: given several candidate cutoff sets, the expansion picks one
  by cross-validation on the training cells alone (the simplest candidate within one standard
  error of the best, Hastie, Tibshirani & Friedman, *Elements of Statistical Learning*, 7.10), and
  its reported CV error is nested (the choice is redone inside every outer fold). The held-out
  swaps play no part in the choice.

A fitted model is saved as icet's own ClusterExpansion file plus a JSON manifest (composition,
lattice, a, cutoffs, potential provenance, metrics); nothing is pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, reference_states

from matflow.sro.lattice import IDEAL_C_OVER_A, KNOWN_LATTICES, LatticeError, SROInputError
from matflow.sro.lattice import ideal_supercell as _ideal_supercell

FIT_METHODS = ("ardr", "ridge", "lasso", "ols")
DEFAULT_PAIR_CUTOFF = 4.0
"""Pair cutoff (Å) used when none is given: two fcc shells at a = 3.56 Å."""
_ATOMS_PER_CELL = {"fcc": 4, "bcc": 2, "hcp": 4}  # conventional / orthohexagonal cell


class CompositionError(SROInputError):
    """A composition that is malformed or does not fit the requested cell."""


# ---------------------------------------------------------------------------------- inputs
def check_lattice(lattice: str) -> str:
    """Lower-case lattice name, or LatticeError listing the known ones."""
    name = str(lattice).strip().lower()
    if name not in KNOWN_LATTICES:
        raise LatticeError(f"lattice {lattice!r}: unknown; known lattices: "
                           f"{', '.join(KNOWN_LATTICES)}")
    return name


def check_composition(composition: Mapping[str, float]) -> dict[str, float]:
    """Element -> fraction, sorted by element; fractions positive and summing to 1 (within 1e-6)."""
    if not isinstance(composition, Mapping) or len(composition) < 2:
        raise CompositionError(f"composition {composition!r}: need a mapping of at least two "
                               "elements to fractions, e.g. {'Cr': 1/3, 'Co': 1/3, 'Ni': 1/3}")
    out = {}
    for el, frac in composition.items():
        if el not in atomic_numbers or el == "X":
            raise CompositionError(f"composition: unknown element {el!r}")
        frac = float(frac)
        if not math.isfinite(frac) or frac <= 0:
            raise CompositionError(f"composition: fraction of {el} is {frac!r}; must be > 0")
        out[el] = frac
    total = sum(out.values())
    if abs(total - 1) > 1e-6:
        raise CompositionError(f"composition {composition!r}: fractions sum to {total:.6g}, not 1")
    return dict(sorted(out.items()))


def _reps(size: int | Sequence[int]) -> tuple[int, int, int]:
    reps = (size,) * 3 if isinstance(size, int | np.integer) else tuple(size)
    if len(reps) != 3 or any(int(r) != r or r < 1 for r in reps):
        raise SROInputError(f"size {size!r}: must be a positive integer or three of them")
    return tuple(int(r) for r in reps)


def species_counts(composition: Mapping[str, float], n_sites: int, *, lattice: str = "fcc",
                   tol: float = 1e-6) -> dict[str, int]:
    """Atoms per element in a cell of ``n_sites``; CompositionError names sizes that would work."""
    comp = check_composition(composition)
    counts = {el: frac * n_sites for el, frac in comp.items()}
    if all(abs(c - round(c)) < tol * max(1, n_sites) for c in counts.values()):
        return {el: int(round(c)) for el, c in counts.items()}
    per_cell = _ATOMS_PER_CELL.get(lattice, 1)
    denominators = [Fraction(f).limit_denominator(1000).denominator for f in comp.values()]
    lcm = math.lcm(*denominators)
    good = [n for n in range(1, 13) if (per_cell * n**3) % lcm == 0][:4]
    hint = (f"; cubic sizes that work on {lattice}: "
            + ", ".join(f"{n} ({per_cell * n**3} atoms)" for n in good)) if good else ""
    raise CompositionError(
        f"composition {comp}: {n_sites} sites give non-integer atom counts "
        f"({', '.join(f'{el} {c:.3f}' for el, c in counts.items())}); the number of sites must be "
        f"a multiple of {lcm}{hint}")


_ATOMS_PER_REFERENCE_CELL = {"Mn": 58, "In": 2, "Sn": 4}
"""Atoms in ASE's reference cell where its symmetry alone does not say: α-Mn (I-43m, 58 atoms),
body-centred tetragonal In (2) and β-Sn (4)."""


def elemental_atomic_volume(element: str) -> float:
    """Volume per atom (Å³) of an element in its reference state (ASE's ``reference_states``)."""
    ref = reference_states[atomic_numbers[element]] or {}
    sym, a = ref.get("symmetry"), ref.get("a")
    if sym == "fcc":
        return a**3 / 4
    if sym == "bcc":
        return a**3 / 2
    if sym == "hcp":
        return math.sqrt(3) / 2 * a**2 * a * ref.get("c/a", IDEAL_C_OVER_A) / 2
    if sym == "diamond":
        return a**3 / 8
    if sym in ("cubic", "bct", "tetragonal") and element in _ATOMS_PER_REFERENCE_CELL:
        return a**3 * ref.get("c/a", 1.0) / _ATOMS_PER_REFERENCE_CELL[element]
    raise CompositionError(f"composition: {element} has no reference atomic volume here ({sym} "
                           "reference state); pass a= explicitly")


def vegard_lattice_parameter(composition: Mapping[str, float], lattice: str) -> float:
    """Lattice parameter (Å) from the composition-weighted atomic volume of the elements in their
    reference states (ASE's ``reference_states``, Kittel's data): Zen's law, the volume form of
    Vegard's law (Zen, Am. Mineral. 41, 523 (1956)). A first guess, not a prediction."""
    comp = check_composition(composition)
    lattice = check_lattice(lattice)
    volume = sum(frac * elemental_atomic_volume(el) for el, frac in comp.items())
    if lattice == "fcc":
        return (4 * volume) ** (1 / 3)
    if lattice == "bcc":
        return (2 * volume) ** (1 / 3)
    return (2 * volume / (math.sqrt(3) / 2 * IDEAL_C_OVER_A)) ** (1 / 3)


def primitive_cell(lattice: str, a: float, species: str) -> Atoms:
    """The one-species primitive cell the cluster space is built on."""
    from ase.build import bulk

    lattice = check_lattice(lattice)
    if lattice == "hcp":
        return bulk(species, "hcp", a=a, c=a * IDEAL_C_OVER_A)
    return bulk(species, lattice, a=a)


def random_supercell(composition: Mapping[str, float], lattice: str, a: float,
                     size: int | Sequence[int], rng: np.random.Generator) -> Atoms:
    """A random solid solution with exactly the composition's atom counts."""
    lattice = check_lattice(lattice)
    reps = _reps(size)
    if lattice == "hcp":
        # orthohexagonal cell (a1, a1 + 2 a2, c) built from the cluster space's own primitive
        # cell, so that every site sits where icet expects it
        from ase.build import make_supercell

        ortho = np.array([[1, 0, 0], [1, 2, 0], [0, 0, 1]])
        atoms = make_supercell(primitive_cell("hcp", a, "X"), np.diag(reps) @ ortho)
    else:
        atoms = _ideal_supercell(lattice, a, reps)
    counts = species_counts(composition, len(atoms), lattice=lattice)
    symbols = np.repeat(list(counts), list(counts.values()))
    atoms.set_chemical_symbols(list(rng.permutation(symbols)))
    return atoms


def _nearest_neighbour_pairs(atoms: Atoms, lattice: str, a: float) -> tuple[np.ndarray, np.ndarray]:
    from matflow.sro.lattice import shell_neighbours

    nb = shell_neighbours(atoms, n_shells=1, lattice=lattice, a=a)
    return nb.i[0], nb.j[0]


def partially_ordered_supercells(composition: Mapping[str, float], lattice: str, a: float,
                                 size: int | Sequence[int], n: int, rng: np.random.Generator,
                                 *, strength_eV: float = 0.05, temperature_K: float = 1000.0,
                                 sweeps: int = 5) -> list[Atoms]:
    """Cells with short-range order of random kind and strength.

    Each cell runs ``sweeps`` swap sweeps of Monte Carlo at ``temperature_K`` under its own random
    symmetric nearest-neighbour pair interaction (entries ~ N(0, ``strength_eV``)); the stopping
    point after a few sweeps leaves partial order, as in an annealed alloy.
    """
    from matflow.sro.montecarlo import (
        CanonicalMonteCarlo,
        pair_hamiltonian_from_neighbour_shells,
        types_from_symbols,
    )

    out = []
    for _ in range(n):
        atoms = random_supercell(composition, lattice, a, size, rng)
        species = sorted(set(atoms.get_chemical_symbols()))
        i, j = _nearest_neighbour_pairs(atoms, lattice, a)
        w = rng.normal(0.0, strength_eV, (len(species), len(species)))
        table = (w + w.T)[None] / 2
        ham = pair_hamiltonian_from_neighbour_shells(species, [(i, j)], table, len(atoms))
        mc = CanonicalMonteCarlo(ham, types_from_symbols(atoms.get_chemical_symbols(), species),
                                 seed=int(rng.integers(2**31)))
        mc.run(temperature_K, int(rng.integers(1, sweeps + 1)) * len(atoms))
        atoms.set_chemical_symbols([species[t] for t in mc.types])
        out.append(atoms)
    return out


# ---------------------------------------------------------------------------------- cutoffs
def triplet_cutoffs(lattice: str, a: float) -> tuple[float, float]:
    """Triplet cutoffs (Å) halfway between neighbour shells 1-2 and 2-3 of the ideal lattice: the
    first keeps nearest-neighbour triangles, the second adds those with second-neighbour sides."""
    from matflow.sro.lattice import shell_distances

    r = shell_distances(check_lattice(lattice), float(a), 3)
    return round(float(r[0] + r[1]) / 2, 4), round(float(r[1] + r[2]) / 2, 4)


def cutoff_candidates(lattice: str, a: float,
                      pair_cutoff: float = DEFAULT_PAIR_CUTOFF) -> list[tuple[float, ...]]:
    """Cutoff sets that ``cutoffs="auto"`` chooses among: pairs only, then pairs plus each of the
    two ``triplet_cutoffs``."""
    pair_cutoff = float(pair_cutoff)
    return [(pair_cutoff,)] + [(pair_cutoff, t) for t in triplet_cutoffs(lattice, a)]


def _check_cutoff_set(cutoffs) -> tuple[float, ...]:
    try:
        values = tuple(float(c) for c in cutoffs)
    except (TypeError, ValueError):
        raise ValueError(f"cutoffs {cutoffs!r}: need numbers (Å), one per cluster order from "
                         "pairs up") from None
    if not values or any(not (math.isfinite(c) and c > 0) for c in values):
        raise ValueError(f"cutoffs {cutoffs!r}: need at least one positive cutoff (Å)")
    return values


def cutoff_sets(cutoffs) -> list[tuple[float, ...]]:
    """Candidate cutoff sets from one set ``(5.0, 4.0)`` or a list of sets ``[(5.0,), (5.0, 4.0)]``."""
    if isinstance(cutoffs, str):
        raise ValueError(f"cutoffs {cutoffs!r}: resolve 'auto' with cutoff_candidates() first")
    items = list(cutoffs) if cutoffs is not None else []
    if items and all(isinstance(c, Sequence) and not isinstance(c, str) for c in items):
        sets = [_check_cutoff_set(c) for c in items]
        if len(set(sets)) != len(sets):
            raise ValueError(f"cutoffs {cutoffs!r}: the same candidate appears twice")
        return sets
    return [_check_cutoff_set(items)]


def _fold_rmse(x: np.ndarray, y: np.ndarray, reg, folds) -> tuple[float, float]:
    """Out-of-fold RMSE (eV/atom) and its standard error from the spread of the fold RMSEs."""
    from sklearn.base import clone

    sq, per_fold = np.zeros(len(y)), []
    for train, test in folds.split(x):
        model = clone(reg).fit(x[train], y[train])
        r = model.predict(x[test]) - y[test]
        sq[test] = r**2
        per_fold.append(float(np.sqrt(np.mean(r**2))))
    k = len(per_fold)
    se = float(np.std(per_fold, ddof=1) / math.sqrt(k)) if k > 1 else 0.0
    return float(np.sqrt(np.mean(sq))), se


def _choose(xs: list[np.ndarray], y: np.ndarray, reg, folds) -> tuple[int, list[dict]]:
    """Index of the candidate feature set with the fewest columns whose CV RMSE lies within one
    standard error of the lowest (one-standard-error rule), and each candidate's CV numbers."""
    rows = []
    for x in xs:
        rmse, se = _fold_rmse(x, y, reg, folds)
        rows.append({"cv_rmse_meV_per_atom": 1000 * rmse, "cv_rmse_se_meV_per_atom": 1000 * se,
                     "n_parameters": x.shape[1] + 1})
    best = min(range(len(rows)), key=lambda k: rows[k]["cv_rmse_meV_per_atom"])
    limit = rows[best]["cv_rmse_meV_per_atom"] + rows[best]["cv_rmse_se_meV_per_atom"]
    within = [k for k, r in enumerate(rows) if r["cv_rmse_meV_per_atom"] <= limit]
    return min(within, key=lambda k: (rows[k]["n_parameters"], k)), rows


# ---------------------------------------------------------------------------------- estimator
def _regressor(fit_method: str, random_state: int):
    from sklearn.linear_model import ARDRegression, LassoCV, LinearRegression, RidgeCV

    if fit_method == "ardr":
        return ARDRegression(fit_intercept=True)
    if fit_method == "ridge":
        return RidgeCV(alphas=np.logspace(-8, 1, 28), fit_intercept=True)
    if fit_method == "lasso":
        return LassoCV(fit_intercept=True, cv=5, random_state=random_state, max_iter=20000)
    return LinearRegression(fit_intercept=True)


class ClusterExpansionModel:
    """Cluster expansion (icet) fitted with a scikit-learn linear model; sklearn estimator rules.

    ``fit(structures, energies_eV)`` takes ideal-lattice ASE cells and their total energies (eV per
    cell); the expansion predicts energy per atom. ``cutoffs`` (Å): one entry per cluster order
    from pairs up (``(4.0,)`` = pairs only, ``(5.0, 4.0)`` = pairs and triplets; the fast Monte
    Carlo takes up to triplets), or a list of such sets to choose from by ``cv``-fold
    cross-validation on the training cells (one-standard-error rule; the chosen set is
    ``cutoffs_``, the comparison ``cutoff_selection_``, and the reported CV error is then nested).
    ``species``: the allowed elements (default: all found in the training cells). ``cv``: folds of
    the reported cross-validation (RMSE and R² of out-of-fold predictions).
    """

    def __init__(self, lattice: str = "fcc", a: float = 3.56,
                 cutoffs: Sequence[float] | Sequence[Sequence[float]] = (DEFAULT_PAIR_CUTOFF,),
                 species: Sequence[str] | None = None, fit_method: str = "ardr", cv: int = 5,
                 random_state: int = 0) -> None:
        self.lattice = lattice
        self.a = a
        self.cutoffs = cutoffs
        self.species = species
        self.fit_method = fit_method
        self.cv = cv
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in ("lattice", "a", "cutoffs", "species", "fit_method",
                                              "cv", "random_state")}

    def set_params(self, **params) -> ClusterExpansionModel:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def _cluster_space(self, species: list[str], cutoffs: Sequence[float]):
        from icet import ClusterSpace

        prim = primitive_cell(self.lattice, float(self.a), species[0])
        return ClusterSpace(prim, [float(c) for c in cutoffs], [species] * len(prim))

    def fit(self, structures: Sequence[Atoms], energies_eV: Sequence[float]
            ) -> ClusterExpansionModel:
        """Fit ECIs to total energies (eV per cell) and store CV metrics in ``metrics_``."""
        from icet import ClusterExpansion
        from sklearn.model_selection import KFold, cross_val_predict

        check_lattice(self.lattice)
        if self.fit_method not in FIT_METHODS:
            raise ValueError(f"fit_method {self.fit_method!r}: unknown; choose one of {FIT_METHODS}")
        candidates = cutoff_sets(self.cutoffs)
        energies = np.asarray(energies_eV, dtype=np.float64)
        if len(structures) != len(energies) or len(structures) < max(self.cv, 2):
            raise ValueError(f"structures/energies: {len(structures)} cells and {len(energies)} "
                             f"energies; need equal numbers, at least cv={self.cv}")
        if not np.all(np.isfinite(energies)):
            raise ValueError("energies_eV: contains non-finite values")
        species = sorted(self.species or {s for at in structures for s in at.get_chemical_symbols()})
        spaces = [self._cluster_space(species, c) for c in candidates]
        n_atoms = np.array([len(at) for at in structures], dtype=np.float64)
        xs = [np.array([cs.get_cluster_vector(at) for at in structures]) for cs in spaces]
        y = energies / n_atoms
        reg = _regressor(self.fit_method, self.random_state)
        folds = KFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        if len(candidates) == 1:
            chosen = 0
            y_cv = cross_val_predict(reg, xs[0][:, 1:], y, cv=folds)
            self.cutoff_selection_ = None
        else:
            chosen, rows = _choose([x[:, 1:] for x in xs], y, reg, folds)
            # nested: the choice is made again on the training rows of every outer fold
            y_cv = np.zeros_like(y)
            outer_choices = []
            for train, test in folds.split(y):
                inner = KFold(n_splits=min(self.cv, len(train)), shuffle=True,
                              random_state=self.random_state)
                k, _ = _choose([x[train, 1:] for x in xs], y[train], reg, inner)
                outer_choices.append(k)
                model = _regressor(self.fit_method, self.random_state)
                model.fit(xs[k][train, 1:], y[train])
                y_cv[test] = model.predict(xs[k][test, 1:])
            self.cutoff_selection_ = {
                "rule": "fewest parameters within one standard error of the lowest CV RMSE, "
                        f"{self.cv}-fold CV on the training cells only",
                "candidates": [{"cutoffs_A": list(c), **r}
                               for c, r in zip(candidates, rows, strict=True)],
                "chosen_cutoffs_A": list(candidates[chosen]),
                "outer_fold_choices": [list(candidates[k]) for k in outer_choices],
            }
        x = xs[chosen]
        cs = spaces[chosen]
        reg.fit(x[:, 1:], y)
        params = np.concatenate([[reg.intercept_], reg.coef_])
        self.cutoffs_ = candidates[chosen]
        self.cluster_space_ = cs
        self.species_ = species
        self.ce_ = ClusterExpansion(cs, params, metadata={"fit_method": self.fit_method})
        resid_cv = y_cv - y
        resid_train = x @ params - y
        sst = float(np.sum((y - y.mean()) ** 2))
        self.metrics_ = {
            "n_structures": len(y),
            "n_parameters": len(params),
            "energy_std_meV_per_atom": 1000 * float(np.std(y)),
            "cv_rmse_meV_per_atom": 1000 * float(np.sqrt(np.mean(resid_cv**2))),
            "cv_r2": 1 - float(np.sum(resid_cv**2)) / sst if sst > 0 else float("nan"),
            "train_rmse_meV_per_atom": 1000 * float(np.sqrt(np.mean(resid_train**2))),
            "cv_folds": int(self.cv),
            "cv_nested": len(candidates) > 1,
        }
        return self

    def predict(self, structures: Sequence[Atoms]) -> np.ndarray:
        """Total energies (eV per cell)."""
        return np.array([len(at) * self.ce_.predict(at) for at in structures])

    def swap_errors(self, bases: Sequence[Atoms], swapped: Sequence[Atoms],
                    e_bases: np.ndarray, e_swapped: np.ndarray) -> dict:
        """Error of predicted single-swap energies (meV per swap) against reference energies."""
        ref = 1000 * (np.asarray(e_swapped) - np.asarray(e_bases))
        pred = 1000 * (self.predict(swapped) - self.predict(bases))
        err = pred - ref
        return {"n_swaps": len(ref), "swap_rmse_meV": float(np.sqrt(np.mean(err**2))),
                "swap_mae_meV": float(np.mean(np.abs(err))),
                "swap_std_reference_meV": float(np.std(ref)),
                "swap_corr": float(np.corrcoef(ref, pred)[0, 1]) if len(ref) > 2 else float("nan")}


# ---------------------------------------------------------------------------------- pipeline
@dataclass
class EnergyModelFit:
    """A fitted cluster expansion with what it was fitted to and how well it reproduces it."""

    model: ClusterExpansionModel
    composition: dict
    lattice: str
    a: float
    size: tuple
    potential: dict
    metrics: dict
    settings: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)

    @property
    def cluster_expansion(self):
        return self.model.ce_

    def to_dict(self) -> dict:
        return {"composition": self.composition, "lattice": self.lattice, "a_A": self.a,
                "size": list(self.size), "cutoffs_A": [float(c) for c in self.model.cutoffs_],
                "cutoff_selection": self.model.cutoff_selection_,
                "species": self.model.species_, "fit_method": self.model.fit_method,
                "potential": self.potential, "metrics": self.metrics, "settings": self.settings,
                "timings_s": self.timings_s,
                "ecis": [float(p) for p in self.model.ce_.parameters]}

    def save(self, directory: str | Path) -> Path:
        """Write ``cluster_expansion.ce`` (icet's format) and ``manifest.json`` into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.ce_.write(str(directory / "cluster_expansion.ce"))
        tmp = directory / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(directory / "manifest.json")
        return directory


def load_energy_model(directory: str | Path) -> EnergyModelFit:
    """Read a model written by ``EnergyModelFit.save``; errors name the missing file."""
    from icet import ClusterExpansion

    directory = Path(directory)
    manifest, ce_file = directory / "manifest.json", directory / "cluster_expansion.ce"
    for path in (manifest, ce_file):
        if not path.is_file():
            raise FileNotFoundError(f"energy model {directory}: missing {path.name}")
    meta = json.loads(manifest.read_text())
    model = ClusterExpansionModel(lattice=meta["lattice"], a=meta["a_A"],
                                  cutoffs=tuple(meta["cutoffs_A"]), species=meta["species"],
                                  fit_method=meta["fit_method"])
    model.ce_ = ClusterExpansion.read(str(ce_file))
    model.cluster_space_ = model.ce_.get_cluster_space_copy()
    model.species_ = meta["species"]
    model.metrics_ = meta["metrics"]
    model.cutoffs_ = tuple(meta["cutoffs_A"])
    model.cutoff_selection_ = meta.get("cutoff_selection")
    return EnergyModelFit(model=model, composition=meta["composition"], lattice=meta["lattice"],
                          a=meta["a_A"], size=tuple(meta["size"]), potential=meta["potential"],
                          metrics=meta["metrics"], settings=meta.get("settings", {}),
                          timings_s=meta.get("timings_s", {}))


def _relax_positions(atoms_list: list[Atoms], potential, fmax: float = 0.05, steps: int = 100):
    from ase.optimize import FIRE

    calc = potential.calculator()
    out = []
    for atoms in atoms_list:
        work = atoms.copy()
        work.calc = calc
        FIRE(work, logfile=None).run(fmax=fmax, steps=steps)
        out.append(float(work.get_potential_energy()))
    return np.array(out)


def single_swaps(cells: Sequence[Atoms], rng: np.random.Generator) -> list[Atoms]:
    """Each cell with one random pair of unlike atoms exchanged."""
    out = []
    for atoms in cells:
        sym = np.array(atoms.get_chemical_symbols())
        i = int(rng.integers(len(sym)))
        j = int(rng.choice(np.flatnonzero(sym != sym[i])))
        sym[i], sym[j] = sym[j], sym[i]
        new = atoms.copy()
        new.set_chemical_symbols(list(sym))
        out.append(new)
    return out


def fit_energy_model(composition: Mapping[str, float], lattice: str = "fcc",
                     a: float | None = None, *, potential="chgnet", n_structures: int = 60,
                     size: int | Sequence[int] = 3,
                     cutoffs: Sequence[float] | Sequence[Sequence[float]] | str = (
                         DEFAULT_PAIR_CUTOFF,),
                     fit_method: str = "ardr", cv: int = 5, ordered_fraction: float = 0.5,
                     n_swaps: int = 16, relax: bool = False, seed: int = 0,
                     potential_energies=None) -> EnergyModelFit:
    """Generate random and partially ordered cells, label them with ``potential`` (a name or a
    loaded Potential), fit a cluster expansion, cross-validate it and test it on single swaps.

    ``cutoffs``: one set (Å, pairs up), a list of sets to choose among by cross-validation on the
    training cells, or ``"auto"`` for ``cutoff_candidates`` (pairs only, or pairs and triplets).
    ``relax``: relax atomic positions (fixed ideal cell) before taking the energy; the expansion
    then describes relaxed energies on the ideal lattice. ``potential_energies``: optional callable
    ``list[Atoms] -> eV array`` replacing the potential (synthetic models, tests).
    """
    from matflow.atomistic.potentials import Potential, load_potential

    comp = check_composition(composition)
    lattice = check_lattice(lattice)
    a_note = "given"
    if a is None:
        a, a_note = vegard_lattice_parameter(comp, lattice), "Vegard (Zen's law) estimate"
    if isinstance(cutoffs, str):
        if cutoffs.strip().lower() != "auto":
            raise SROInputError(f"cutoffs {cutoffs!r}: give numbers (Å) or 'auto'")
        cutoffs = cutoff_candidates(lattice, a)
    candidates = cutoff_sets(cutoffs)
    reps = _reps(size)
    n_sites = _ATOMS_PER_CELL[lattice] * int(np.prod(reps))
    species_counts(comp, n_sites, lattice=lattice)
    if n_structures < max(cv, 2) or not 0 <= ordered_fraction <= 1:
        raise SROInputError(f"n_structures {n_structures} must be >= cv ({cv}); ordered_fraction "
                            f"{ordered_fraction} must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_ordered = int(round(ordered_fraction * n_structures))
    cells = [random_supercell(comp, lattice, a, reps, rng) for _ in range(n_structures - n_ordered)]
    cells += partially_ordered_supercells(comp, lattice, a, reps, n_ordered, rng)
    n_bases = max(1, n_swaps)
    bases = [random_supercell(comp, lattice, a, reps, rng) for _ in range(n_bases // 2)]
    bases += partially_ordered_supercells(comp, lattice, a, reps, n_bases - len(bases), rng)
    swapped = single_swaps(bases, rng)
    t_gen = time.perf_counter() - t0

    if potential_energies is not None:
        label, prov = potential_energies, {"name": "user-supplied energies"}
    else:
        pot = potential if isinstance(potential, Potential) else load_potential(potential)
        prov = pot.provenance()
        label = (lambda cells_: _relax_positions(cells_, pot)) if relax else pot.energies
    t1 = time.perf_counter()
    energies = np.asarray(label(cells))
    e_bases, e_swapped = np.asarray(label(bases)), np.asarray(label(swapped))
    t_label = time.perf_counter() - t1
    n_labelled = len(cells) + len(bases) + len(swapped)

    t2 = time.perf_counter()
    model = ClusterExpansionModel(lattice=lattice, a=a,
                                  cutoffs=candidates[0] if len(candidates) == 1 else candidates,
                                  species=list(comp), fit_method=fit_method, cv=cv,
                                  random_state=seed).fit(cells, energies)
    metrics = {**model.metrics_, **model.swap_errors(bases, swapped, e_bases, e_swapped)}
    if model.cutoff_selection_ is not None:
        # what the other candidates would have given on the held-out swaps: reported beside the
        # choice, never used for it
        for row in model.cutoff_selection_["candidates"]:
            other = model if tuple(row["cutoffs_A"]) == model.cutoffs_ else ClusterExpansionModel(
                lattice=lattice, a=a, cutoffs=tuple(row["cutoffs_A"]), species=list(comp),
                fit_method=fit_method, cv=cv, random_state=seed).fit(cells, energies)
            row["swap_rmse_meV_not_used_for_choice"] = other.swap_errors(
                bases, swapped, e_bases, e_swapped)["swap_rmse_meV"]
    t_fit = time.perf_counter() - t2
    return EnergyModelFit(
        model=model, composition=comp, lattice=lattice, a=float(a), size=reps, potential=prov,
        metrics=metrics,
        settings={"n_structures": n_structures, "ordered_fraction": ordered_fraction,
                  "n_swaps": n_bases, "relax": relax, "seed": seed, "a_source": a_note,
                  "atoms_per_cell": n_sites},
        timings_s={"generate": t_gen, "label": t_label, "fit": t_fit,
                   "labels_per_s": n_labelled / t_label if t_label else float("nan")})
