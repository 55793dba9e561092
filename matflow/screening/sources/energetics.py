"""Phase evidence from CHGNet energies of random fcc, bcc and hcp solid solutions.

For a composition, random substitutional supercells on the fcc, bcc and hcp lattices (a few
realisations each, at most ``max_atoms`` atoms) are relaxed with CHGNet (Deng et al., Nat. Mach.
Intell. 5, 1031, 2023), positions and cell together. Their mean energies give:

* which lattice a solid solution would take: the lowest one is supported, more the larger its margin
  over the next lattice; lattices within the noise floor of the lowest share that support as a set
  (fcc and hcp, one stacking fault apart, often do);
* whether a solid solution is favoured at all: the mixing energy of the lowest lattice relative to
  the elements in their own lowest-energy structure; a positive mixing energy supports MP
  (separation into other phases).

Both supports are simple mass functions, ``max_support * (1 - exp(-(x - noise) / scale))`` for a
margin x above the noise floor, combined by Dempster's rule. CHGNet's energy differences of a few
meV/atom are within its error (its test MAE is about 30 meV/atom), and the spread of the random
realisations is added to the noise floor, so most of the mass stays on ignorance.

Random occupation is used instead of special quasi-random structures (icet's ``generate_sqs`` is
too slow for screening); averaging over ``n_realisations`` random cells stands in for the SQS's
matched correlations. Elemental references are the lowest of relaxed fcc, bcc and hcp cells; for
elements whose ground state is none of these (Mn, Si, Ga, ...) the reference energy is too high and
their mixing energies come out too low, which weakens (never invents) MP support.

Results are cached as JSON per composition key and settings under ``<cache_dir>/energetics/``.
It costs seconds per composition on one core, so the benchmark uses it on a subset only.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from matflow.atomistic.model import DEFAULT_MODEL
from matflow.evidence import combine
from matflow.outputs import atomic_write_text
from matflow.screening.composition import composition_key, parse_composition
from matflow.screening.phases import BCC, FCC, HCP, MP, N_FOCAL, OMEGA
from matflow.screening.sources.base import Composition, EvidenceSource
from matflow.screening.sources.substitutability import SourceInputError, check_training_rows
from matflow.settings import get_settings

LATTICES: dict[str, int] = {"FCC": FCC, "BCC": BCC, "HCP": HCP}
CHGNET_MAX_Z = 94
"""CHGNet 0.3.0 has embeddings for Z = 1..94; heavier elements get vacuous mass."""
_HCP_C_OVER_A = math.sqrt(8 / 3)


def _atomic_volume_guess(symbol: str) -> float:
    """Close-packed volume per atom (Å³) from the metallic radius (atomic radius if none)."""
    import warnings

    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        el = Element(symbol)
        radius = el.metallic_radius or el.atomic_radius or 1.4
    return 4 / 3 * math.pi * float(radius) ** 3 / 0.7405


def lattice_cell(lattice: str, volume_per_atom: float, max_atoms: int):
    """The most isotropic ``lattice`` supercell with at most ``max_atoms`` sites (ASE Atoms, one
    placeholder species), scaled to ``volume_per_atom`` (Å³)."""
    from ase.build import bulk

    if lattice == "FCC":
        unit = bulk("Cu", "fcc", a=(4 * volume_per_atom) ** (1 / 3), cubic=True)
    elif lattice == "BCC":
        unit = bulk("Cu", "bcc", a=(2 * volume_per_atom) ** (1 / 3), cubic=True)
    elif lattice == "HCP":
        a = (2 * volume_per_atom / (math.sqrt(3) / 2 * _HCP_C_OVER_A)) ** (1 / 3)
        unit = bulk("Cu", "hcp", a=a, c=a * _HCP_C_OVER_A)
    else:
        raise SourceInputError(f"lattice {lattice!r}: one of {', '.join(LATTICES)}")
    lengths = unit.cell.lengths()
    best, best_key = (1, 1, 1), None
    for reps in product(range(1, 9), repeat=3):
        n = len(unit) * reps[0] * reps[1] * reps[2]
        if n > max_atoms:
            continue
        sizes = lengths * np.array(reps)
        key = (-n, sizes.max() / sizes.min())
        if best_key is None or key < best_key:
            best, best_key = reps, key
    return unit.repeat(best)


def site_counts(composition: Composition, n_sites: int) -> dict[str, int]:
    """Integer atom counts closest to the fractions (largest remainder), every element at least 1."""
    if n_sites < len(composition):
        raise SourceInputError(f"{n_sites} sites cannot hold the {len(composition)} elements of "
                               f"{composition_key(composition)}; raise max_atoms")
    ideal = {e: x * n_sites for e, x in composition.items()}
    counts = {e: max(1, int(math.floor(v))) for e, v in ideal.items()}
    while sum(counts.values()) < n_sites:
        e = max(ideal, key=lambda s: ideal[s] - counts[s])
        counts[e] += 1
    while sum(counts.values()) > n_sites:
        e = max((s for s in counts if counts[s] > 1), key=lambda s: counts[s] - ideal[s])
        counts[e] -= 1
    return counts


def support(margin_meV: float, noise_meV: float, scale_meV: float, max_support: float) -> float:
    """Simple-support mass of an energy margin: 0 up to the noise floor, rising to max_support."""
    excess = max(0.0, margin_meV - noise_meV)
    return max_support * (1.0 - math.exp(-excess / scale_meV))


class EnergeticsSource(EvidenceSource):
    """Phase masses from CHGNet energies of relaxed random fcc/bcc/hcp supercells.

    max_atoms: sites per supercell. n_realisations: random cells per lattice (energies averaged).
    relax_steps / fmax_eV_per_A: FIRE steps and force threshold of each relaxation (cell included).
    noise_meV, scale_meV, max_support: map energy margins (meV/atom) to support (see module doc).
    seed: random occupations. cache: read/write the JSON cache; cache_dir: its root (None = the
    settings' cache_dir).
    """

    name: ClassVar[str] = "energetics"

    def __init__(self, max_atoms: int = 32, n_realisations: int = 2, relax_steps: int = 60,
                 fmax_eV_per_A: float = 0.05, noise_meV: float = 5.0, scale_meV: float = 30.0,
                 max_support: float = 0.6, seed: int = 0, cache: bool = True,
                 cache_dir: str | None = None, model_name: str = DEFAULT_MODEL):
        self.max_atoms = max_atoms
        self.n_realisations = n_realisations
        self.relax_steps = relax_steps
        self.fmax_eV_per_A = fmax_eV_per_A
        self.noise_meV = noise_meV
        self.scale_meV = scale_meV
        self.max_support = max_support
        self.seed = seed
        self.cache = cache
        self.cache_dir = cache_dir
        self.model_name = model_name

    # ------------------------------------------------------------------ settings and cache
    def _check_params(self) -> None:
        if int(self.max_atoms) < 2:
            raise SourceInputError(f"max_atoms {self.max_atoms}: must be >= 2")
        if int(self.n_realisations) < 1 or int(self.relax_steps) < 1:
            raise SourceInputError(f"n_realisations {self.n_realisations} and relax_steps "
                                   f"{self.relax_steps}: must be >= 1")
        if not 0 <= self.max_support < 1:
            raise SourceInputError(f"max_support {self.max_support}: must be in [0, 1)")
        if self.noise_meV < 0 or self.scale_meV <= 0 or self.fmax_eV_per_A <= 0:
            raise SourceInputError("noise_meV must be >= 0; scale_meV and fmax_eV_per_A > 0")

    def _calc_settings(self) -> dict[str, Any]:
        """Everything the energies depend on (the mass mapping is applied after the cache)."""
        return {"model": self.model_name, "max_atoms": int(self.max_atoms),
                "n_realisations": int(self.n_realisations), "relax_steps": int(self.relax_steps),
                "fmax_eV_per_A": float(self.fmax_eV_per_A), "seed": int(self.seed), "version": 2}

    def _cache_root(self) -> Path:
        root = Path(self.cache_dir) if self.cache_dir is not None else get_settings().cache_dir
        digest = hashlib.sha256(json.dumps(self._calc_settings(), sort_keys=True).encode())
        return root / "energetics" / digest.hexdigest()[:16]

    def _cached(self, name: str, compute) -> dict[str, Any]:
        path = self._cache_root() / f"{name}.json"
        if self.cache and path.is_file():
            try:
                return {**json.loads(path.read_text()), "cached": True}
            except (OSError, json.JSONDecodeError):
                pass  # a damaged entry is recomputed and overwritten
        record = compute()
        if self.cache:
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))
        return {**record, "cached": False}

    # ------------------------------------------------------------------ CHGNet work
    def _relaxer(self):
        if getattr(self, "_relax_calc", None) is None:
            from matflow.atomistic.fast import FastCHGNetCalculator
            from matflow.atomistic.model import load_chgnet
            from matflow.atomistic.relax import RelaxCalc

            calc = FastCHGNetCalculator(load_chgnet(self.model_name), compute_magmoms=False)
            self._relax_calc = RelaxCalc(calc, fmax_eV_per_A=float(self.fmax_eV_per_A),
                                         max_steps=int(self.relax_steps), relax_cell=True,
                                         model_name=self.model_name)
        return self._relax_calc

    def _relax_energy(self, atoms, source: str) -> tuple[float, float, bool]:
        """(energy eV/atom, volume Å³/atom, converged within relax_steps) after relaxation."""
        res = self._relaxer().relax(atoms, source=source)
        energy, volume = res.final_energy_eV_per_atom, res.final_volume_A3 / res.n_atoms
        if not (math.isfinite(energy) and math.isfinite(volume) and volume > 0):
            raise ValueError(f"{source}: relaxation ended with energy {energy} eV/atom and volume "
                             f"{volume} Å³/atom")
        return energy, volume, res.converged

    def element_reference(self, symbol: str) -> dict[str, Any]:
        """Lowest CHGNet energy (eV/atom) of the element over relaxed fcc, bcc and hcp cells."""

        def compute() -> dict[str, Any]:
            guess = _atomic_volume_guess(symbol)
            per_lattice = {}
            for lattice in LATTICES:
                atoms = lattice_cell(lattice, guess, 4)
                atoms.set_chemical_symbols([symbol] * len(atoms))
                energy, volume, converged = self._relax_energy(atoms, f"{symbol} {lattice}")
                per_lattice[lattice] = {"energy_eV_per_atom": energy, "volume_A3_per_atom": volume,
                                        "converged": converged}
            best = min(per_lattice, key=lambda k: per_lattice[k]["energy_eV_per_atom"])
            return {"element": symbol, "structure": best, "lattices": per_lattice,
                    **per_lattice[best]}

        return self._cached(f"element_{symbol}", compute)

    def energies(self, composition: Composition | str) -> dict[str, Any]:
        """CHGNet energies of one composition (cached): per lattice the mean and spread over
        realisations (eV/atom), the mixing energy of each lattice (meV/atom) against the elemental
        references, realised atom counts and the seconds it took."""
        comp = parse_composition(composition)
        key = composition_key(comp)

        def compute() -> dict[str, Any]:
            start = time.perf_counter()
            refs = {e: self.element_reference(e) for e in comp}
            volume = sum(x * refs[e]["volume_A3_per_atom"] for e, x in comp.items())
            digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
            lattices: dict[str, Any] = {}
            counts: dict[str, int] = {}
            for li, lattice in enumerate(LATTICES):
                template = lattice_cell(lattice, volume, int(self.max_atoms))
                counts = site_counts(comp, len(template))
                species = np.array([e for e, n in sorted(counts.items()) for _ in range(n)])
                values, n_converged = [], 0
                for r in range(int(self.n_realisations)):
                    rng = np.random.default_rng([int(self.seed), digest, li, r])
                    atoms = template.copy()
                    atoms.set_chemical_symbols(list(rng.permutation(species)))
                    energy, _, converged = self._relax_energy(atoms, f"{key} {lattice} #{r}")
                    values.append(energy)
                    n_converged += int(converged)
                n_sites = len(template)
                reference = sum(n * refs[e]["energy_eV_per_atom"] for e, n in counts.items()) / n_sites
                lattices[lattice] = {
                    "energy_eV_per_atom": float(np.mean(values)),
                    "spread_meV_per_atom": float(np.std(values) * 1000),
                    "mixing_meV_per_atom": float((np.mean(values) - reference) * 1000),
                    "n_sites": n_sites, "counts": counts, "n_converged": n_converged,
                }
            return {"composition": key, "lattices": lattices,
                    "references": {e: {"structure": refs[e]["structure"],
                                       "energy_eV_per_atom": refs[e]["energy_eV_per_atom"]}
                                   for e in sorted(comp)},
                    "seconds": time.perf_counter() - start, "settings": self._calc_settings()}

        return self._cached(key, compute)

    # ------------------------------------------------------------------ evidence
    def mass_from_energies(self, record: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Phase mass (16,) from an ``energies`` record, and the numbers behind it."""
        lattices = record["lattices"]
        mixing_of = {k: lattices[k]["mixing_meV_per_atom"] for k in lattices}
        lowest = min(mixing_of, key=mixing_of.get)
        spread = {k: v["spread_meV_per_atom"] for k, v in lattices.items()}

        def noise_between(a: str, b: str) -> float:
            return float(self.noise_meV) + max(spread[a], spread[b])

        # lattices within the noise of the lowest cannot be told apart (fcc and hcp often are, as
        # their energies differ only by a stacking fault): the support goes to the set of them
        tied = sorted((k for k in mixing_of
                       if mixing_of[k] - mixing_of[lowest] <= noise_between(lowest, k)),
                      key=mixing_of.get)
        rest = [k for k in mixing_of if k not in tied]
        mixing = mixing_of[lowest]
        if rest:
            nearest = min(rest, key=mixing_of.get)
            margin = mixing_of[nearest] - mixing
            s_lattice = support(margin, noise_between(lowest, nearest), self.scale_meV,
                                self.max_support)
        else:
            margin, s_lattice = 0.0, 0.0
        noise = float(self.noise_meV) + spread[lowest]
        s_mp = support(mixing, noise, self.scale_meV, self.max_support)
        m_lattice, m_mp = np.zeros(N_FOCAL), np.zeros(N_FOCAL)
        m_lattice[sum(LATTICES[k] for k in tied)] += s_lattice
        m_lattice[OMEGA] += 1 - s_lattice
        m_mp[MP], m_mp[OMEGA] = s_mp, 1 - s_mp
        fused, conflict = combine([m_lattice, m_mp], rule="dempster")
        detail = {"lowest_lattice": lowest, "supported_lattices": tied,
                  "margin_meV_per_atom": round(margin, 2),
                  "mixing_meV_per_atom": round(mixing, 2), "noise_floor_meV_per_atom": round(noise, 2),
                  "support_lattice": round(s_lattice, 4), "support_MP": round(s_mp, 4),
                  "conflict": round(float(np.asarray(conflict)), 4)}
        return np.asarray(fused, dtype=float).reshape(N_FOCAL), detail

    def _unsupported(self, comp: Composition) -> list[str]:
        from ase.data import atomic_numbers

        return sorted(e for e in comp if atomic_numbers[e] > CHGNET_MAX_Z)

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> EnergeticsSource:
        """Checks the rows and settings; nothing is learnt (the fusion fits this source's discount,
        and computing CHGNet energies for every training alloy would cost hours)."""
        self._check_params()
        check_training_rows(compositions, phases, self.name)
        self.n_training_rows_ = len(compositions)
        return self

    def _energies_or_reason(self, comp: Composition) -> tuple[dict[str, Any] | None, str]:
        """The energies record, or None and why: a relaxation that fails for one candidate (a
        non-finite energy, an error inside the potential) leaves that candidate without energetic
        evidence instead of stopping the screening of all the others."""
        try:
            return self.energies(comp), ""
        except Exception as exc:  # noqa: BLE001 - any failure of one alloy means "no evidence"
            reason = f"CHGNet energetics failed for {composition_key(comp)}: " \
                     f"{type(exc).__name__}: {exc}"
            if not hasattr(self, "failures_"):
                self.failures_: dict[str, str] = {}
            self.failures_[composition_key(comp)] = reason
            warnings.warn(reason + "; its energetics mass is vacuous", RuntimeWarning,
                          stacklevel=3)
            return None, reason

    def masses(self, compositions: Sequence[Composition]) -> np.ndarray:
        """Masses per composition; vacuous (all on the frame) for elements CHGNet lacks and for
        alloys whose relaxations failed (listed in ``failures_``)."""
        self._check_params()
        out = np.zeros((len(compositions), N_FOCAL))
        for i, composition in enumerate(compositions):
            comp = parse_composition(composition)
            record = None if self._unsupported(comp) else self._energies_or_reason(comp)[0]
            if record is None:
                out[i, OMEGA] = 1.0
                continue
            out[i], _ = self.mass_from_energies(record)
        return out

    def explain(self, composition: Composition) -> dict[str, Any]:
        comp = parse_composition(composition)
        unsupported = self._unsupported(comp)
        if unsupported:
            return {"source": self.name, "note": f"element(s) {', '.join(unsupported)} beyond "
                    f"CHGNet's Z <= {CHGNET_MAX_Z}: vacuous"}
        record, reason = self._energies_or_reason(comp)
        if record is None:
            return {"source": self.name, "note": f"{reason}: vacuous"}
        mass, detail = self.mass_from_energies(record)
        return {"source": self.name, **detail, "ignorance": round(float(mass[OMEGA]), 4),
                "lattices": {k: {"energy_eV_per_atom": round(v["energy_eV_per_atom"], 5),
                                 "mixing_meV_per_atom": round(v["mixing_meV_per_atom"], 2),
                                 "spread_meV_per_atom": round(v["spread_meV_per_atom"], 2),
                                 "relaxations_converged": f"{v['n_converged']}/"
                                                          f"{record['settings']['n_realisations']}"}
                             for k, v in record["lattices"].items()},
                "seconds": round(record["seconds"], 2), "cached": record["cached"],
                "method": (f"random {record['settings']['max_atoms']}-site supercells, "
                           f"{record['settings']['n_realisations']} realisations, "
                           f"{record['settings']['relax_steps']} FIRE steps, CHGNet "
                           f"{record['settings']['model']}")}
