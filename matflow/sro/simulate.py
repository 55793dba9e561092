"""The SRO simulation pipeline: energy model -> annealed canonical Monte Carlo -> SRO statistics.

``simulate_sro`` is the one definition that the ``matflow sro simulate`` command, the Prefect flow
and the benchmarks call: it fits (or loads) a cluster expansion on a universal potential, anneals a
random solid solution from the highest to the lowest temperature and records, per temperature, the
energy, heat capacity, acceptance rate, Warren–Cowley α per shell with errors and the first-shell
motif statistics, next to the energy model's accuracy and the provenance of every piece.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from matflow.provenance import installed_versions
from matflow.sro.energy_model import (
    _ATOMS_PER_CELL,
    EnergyModelFit,
    check_composition,
    check_lattice,
    cutoff_candidates,
    fit_energy_model,
    load_energy_model,
    random_supercell,
    vegard_lattice_parameter,
)
from matflow.sro.lattice import SROInputError

DEFAULT_TRAIN_SIZE = {"fcc": 3, "bcc": 4, "hcp": 3}  # 108, 128, 108 atoms
DEFAULT_MC_SIZE = {"fcc": 8, "bcc": 10, "hcp": 8}  # 2048, 2000, 2048 atoms


DEFAULT_SRO_POTENTIAL = "sevenn-0"
"""SevenNet-0 labels the training cells by default: on equiatomic CrCoNi it reproduces the sign
pattern of DFT Monte Carlo (Cr–Cr avoided, Cr–Co preferred; Ding et al., PNAS 2018) where CHGNet's
configurational energies are flatter and order the wrong way (benchmarks/results/sro_crconi.json)."""


def _versions() -> dict:
    return installed_versions(("matflow", "icet", "numba", "numpy", "scikit-learn", "ase", "chgnet",
                               "sevenn", "torch"))


def parse_cutoffs(cutoffs: str | Sequence[float] | None, *, lattice: str, a: float,
                  pair_cutoff: float) -> tuple[list, str]:
    """Cutoff set(s) for ``fit_energy_model`` and why: ``None`` = pairs to ``pair_cutoff``;
    ``"auto"`` = choose pairs only or pairs + triplets by CV on the training cells;
    ``"5.0,4.0"`` or ``(5.0, 4.0)`` = that set (pair, triplet cutoffs in Å)."""
    if cutoffs is None:
        return [float(pair_cutoff)], "default: pairs only"
    if isinstance(cutoffs, str):
        text = cutoffs.strip().lower()
        if text == "auto":
            return (cutoff_candidates(lattice, a, pair_cutoff),
                    "auto: pairs only or pairs + triplets, chosen by cross-validation on the "
                    "training cells")
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise SROInputError(f"cutoffs {cutoffs!r}: give 'auto' or comma-separated cutoffs in "
                                "Å, pair first, e.g. 5.0,4.0") from None
    else:
        try:
            values = [float(v) for v in cutoffs]
        except (TypeError, ValueError):
            raise SROInputError(f"cutoffs {cutoffs!r}: give 'auto' or one or two numbers (Å), "
                                "pair first") from None
    if not 1 <= len(values) <= 2 or not all(np.isfinite(v) and 0 < v <= 20 for v in values):
        raise SROInputError(f"cutoffs {cutoffs!r}: need one or two cutoffs in (0, 20] Å (pair, "
                            "triplet); the fast Monte Carlo takes clusters up to triplets")
    return values, "given"


def default_mc_size(composition: Mapping[str, float], lattice: str) -> int:
    """Smallest cubic repeat from the lattice's default up whose atom counts are integers."""
    from matflow.sro.energy_model import species_counts

    per_cell = _ATOMS_PER_CELL[lattice]
    start = DEFAULT_MC_SIZE[lattice]
    for n in range(start, start + 12):
        try:
            species_counts(composition, per_cell * n**3, lattice=lattice)
            return n
        except SROInputError:
            continue
    species_counts(composition, per_cell * start**3, lattice=lattice)  # raises with advice
    return start  # pragma: no cover


@dataclass
class SROSimulation:
    """Per-temperature observables of an annealing run with the energy model and provenance."""

    composition: dict
    lattice: str
    a_A: float
    a_source: str
    size: list
    n_atoms: int
    species: list
    shell_radii_A: list
    random_alpha_mean: list
    random_alpha_std: list
    temperatures: list
    energy_model: dict
    settings: dict
    versions: dict = field(default_factory=_versions)
    timings_s: dict = field(default_factory=dict)
    motif_stats: list = field(default_factory=list, repr=False)
    """MotifStats of the final configuration per temperature (for plots; not in ``to_dict``)."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("motif_stats")
        return out

    def alpha(self, shell: int, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Temperatures (K), α_ab in ``shell`` and its error, in annealing order."""
        ia, ib = self.species.index(a), self.species.index(b)
        t = np.array([r["temperature_K"] for r in self.temperatures])
        mean = np.array([r["alpha"][shell][ia][ib] for r in self.temperatures])
        err = np.array([r["alpha_err"][shell][ia][ib] for r in self.temperatures])
        return t, mean, err


def simulate_sro(composition: Mapping[str, float], *, lattice: str = "fcc",
                 a: float | None = None, temperatures: Sequence[float] = (1200, 800, 500),
                 size: int | Sequence[int] | None = None, potential: str = DEFAULT_SRO_POTENTIAL,
                 n_train: int = 60, train_size: int | Sequence[int] | None = None,
                 cutoff: float = 4.0, cutoffs: str | Sequence[float] | None = None,
                 fit_method: str = "ardr",
                 sweeps: int = 200, equilibration_sweeps: int | None = None,
                 n_shells: int = 2, seed: int = 0,
                 model: EnergyModelFit | str | Path | None = None,
                 progress: Callable[[str], None] | None = None) -> SROSimulation:
    """Fit (or load) the energy model, anneal from high to low T and collect SRO statistics.

    ``a``: lattice parameter (Å); default a Vegard (Zen's law) estimate from the elements, noted as
    such in ``a_source``. ``size``: cubic repeats of the conventional cell for the Monte Carlo
    (default 8 on fcc = 2,048 atoms, or the next size with integer atom counts). ``sweeps``:
    production sweeps per temperature (one sweep = one trial swap per atom); equilibration sweeps
    default to half of them. ``cutoff``: pair cutoff (Å). ``cutoffs``: ``None`` (pairs only, to
    ``cutoff``), ``"auto"`` (pairs only or with triplets, chosen by cross-validation on the training
    cells alone) or explicit ``"5.0,4.0"`` / ``(5.0, 4.0)`` (pair, triplet; Å). ``model``: a
    fitted ``EnergyModelFit`` or the directory of a saved one (then nothing is fitted and
    ``potential``, ``n_train`` and ``cutoffs`` are ignored).
    """
    from matflow.sro.lattice import shell_neighbours
    from matflow.sro.montecarlo import (
        CanonicalMonteCarlo,
        anneal,
        hamiltonian_from_ce,
        types_from_symbols,
    )
    from matflow.sro.motifs import motif_kl
    from matflow.sro.warren_cowley import random_alpha_moments, warren_cowley_from_types

    t_start = time.perf_counter()
    comp = check_composition(composition)
    lattice = check_lattice(lattice)
    temps = sorted((float(t) for t in temperatures), reverse=True)
    if not temps or min(temps) <= 0:
        raise SROInputError(f"temperatures {list(temperatures)!r}: need positive values in K")
    if sweeps < 10:
        raise SROInputError(f"sweeps {sweeps}: need at least 10 production sweeps per temperature")
    say = progress or (lambda _msg: None)

    if model is None:
        a_source = "given" if a is not None else "Vegard (Zen's law) estimate from elemental volumes"
        a = float(a) if a is not None else vegard_lattice_parameter(comp, lattice)
        requested, why = parse_cutoffs(cutoffs, lattice=lattice, a=a, pair_cutoff=cutoff)
        say(f"fitting the energy model on {potential} ({n_train} cells)")
        fit = fit_energy_model(comp, lattice, a, potential=potential, n_structures=n_train,
                               size=train_size or DEFAULT_TRAIN_SIZE[lattice], cutoffs=requested,
                               fit_method=fit_method, seed=seed)
        selection = fit.model.cutoff_selection_
        if selection is not None:
            why += f" ({selection['rule']})"
    else:
        fit = model if isinstance(model, EnergyModelFit) else load_energy_model(model)
        if fit.lattice != lattice:
            raise SROInputError(f"model: fitted on {fit.lattice}, asked for {lattice}")
        missing = sorted(set(comp) - set(fit.model.species_))
        if missing:
            raise SROInputError(f"model: has no parameters for {missing} (species "
                                f"{fit.model.species_})")
        if a is not None and abs(float(a) - fit.a) > 1e-6:
            raise SROInputError(f"a = {a} Å differs from the model's {fit.a} Å")
        a, a_source = fit.a, "from the energy model"
        why = "from the energy model"
    t_fit = time.perf_counter() - t_start

    reps = size if size is not None else default_mc_size(comp, lattice)
    rng = np.random.default_rng(seed + 1)
    cell = random_supercell(comp, lattice, a, reps, rng)
    ham = hamiltonian_from_ce(fit.cluster_expansion, cell)
    types = types_from_symbols(cell.get_chemical_symbols(), ham.species)
    n_species = len(ham.species)
    nb = shell_neighbours(cell, n_shells=n_shells, lattice=lattice, a=a)
    conc = np.bincount(types, minlength=n_species) / len(types)
    rnd_mean, rnd_std = random_alpha_moments(conc, nb, len(types))

    def observe(t: np.ndarray) -> np.ndarray:
        return warren_cowley_from_types(t.astype(np.intp), nb, n_species)

    mc = CanonicalMonteCarlo(ham, types, seed=seed)
    n_equil = equilibration_sweeps if equilibration_sweeps is not None else sweeps // 2
    records, motif_stats = [], []
    for t in temps:
        res = anneal(mc, [t], n_equil_sweeps=n_equil, n_prod_sweeps=sweeps, observe=observe,
                     progress=say)[0]
        motifs = motif_kl(mc.types.astype(np.intp), nb, n_species, n_random=20, seed=seed,
                          species=ham.species)
        rec = res.to_dict()
        rec["motifs_final_shell1"] = motifs.to_dict(n_top=8)
        motif_stats.append(motifs)
        records.append(rec)
    return SROSimulation(
        composition=comp, lattice=lattice, a_A=float(a), a_source=a_source,
        size=list(np.broadcast_to(np.asarray(reps), 3).tolist()), n_atoms=len(cell),
        species=list(ham.species), shell_radii_A=[float(r) for r in nb.radii],
        random_alpha_mean=rnd_mean.tolist(), random_alpha_std=rnd_std.tolist(),
        temperatures=records, energy_model=fit.to_dict(),
        settings={"sweeps": sweeps, "equilibration_sweeps": n_equil, "seed": seed,
                  "n_shells": n_shells, "cutoff_A": float(max(fit.model.cutoffs_)),
                  "cutoffs_A": [float(c) for c in fit.model.cutoffs_], "cutoffs_reason": why,
                  "pair_orbit_radii_A": [float(r) for r in ham.radii],
                  "triplet_orbit_radii_A": sorted({float(r) for r in ham.triplet_radii}),
                  "trial": "swap of two atoms of different species, Metropolis"},
        timings_s={"energy_model": t_fit, "total": time.perf_counter() - t_start},
        motif_stats=motif_stats)
