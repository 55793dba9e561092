"""First-shell chemical motifs and the length scale of short-range order.

Warren–Cowley parameters average over pairs; two alloys with the same α can still differ in how
neighbourhoods are built. Sheriff, Cao, Smidt & Freitas (PNAS 2024, arXiv:2311.01545) therefore
describe SRO by the distribution of local chemical motifs: a motif is the centre species plus the
multiset of species among its first-shell neighbours (e.g. Ni centre with 5 Cr, 4 Co, 3 Ni). The
distance of the observed motif distribution from that of an ideal random solution (a multinomial)
measures how much order there is.

A finite cell samples only N motifs out of many possible ones, so even a perfectly random cell has a
positive Kullback–Leibler divergence from the multinomial. ``motif_kl`` measures that baseline on
random shuffles of the same cell, so that the reported value can be judged against it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

from matflow.sro.lattice import ShellNeighbours, SROInputError
from matflow.sro.warren_cowley import WarrenCowley

__all__ = [
    "Motif",
    "MotifStats",
    "motif_distribution",
    "random_motif_distribution",
    "motif_kl",
    "sro_length_scale",
]

Motif = tuple[int, tuple[int, ...]]
# Shells whose concentration-weighted rms α exceeds this many times the rms of a random cell
# carry SRO signal; P(chi2_1 > 9) = 0.3 %, so a random cell almost never passes.
SIGNAL_FACTOR = 3.0
# Enumerate the random distribution (for plots) only up to this many possible motifs.
_MAX_ENUMERATED = 200_000


def _neighbour_species_counts(
    types: np.ndarray, neighbours: ShellNeighbours, n_species: int, shell: int
) -> np.ndarray:
    """(n_atoms, n_species): how many shell-``shell`` neighbours of each atom are of each species."""
    if not 0 <= shell < neighbours.n_shells:
        raise SROInputError(f"shell {shell} not available; neighbours have {neighbours.n_shells}")
    i, j = neighbours.i[shell], neighbours.j[shell]
    n = len(types)
    return np.bincount(i * n_species + types[j], minlength=n * n_species).reshape(n, n_species)


def _motif_codes(types: np.ndarray, counts: np.ndarray, base: int) -> np.ndarray:
    """One integer per atom encoding (centre species, neighbour counts) in base ``base``."""
    if (counts.shape[1] + 1) * math.log2(base) >= 62:
        raise SROInputError(
            f"{counts.shape[1]} species with up to {base - 1} neighbours each: too many motifs to encode"
        )
    weights = base ** np.arange(counts.shape[1] + 1, dtype=np.int64)
    return types.astype(np.int64) * weights[-1] + counts.astype(np.int64) @ weights[:-1]


def _decode(code: int, n_species: int, base: int) -> Motif:
    counts = []
    for _ in range(n_species):
        code, rest = divmod(int(code), base)
        counts.append(rest)
    return int(code), tuple(counts)


def motif_distribution(
    types: np.ndarray, neighbours: ShellNeighbours, n_species: int, shell: int = 0
) -> dict[Motif, int]:
    """Number of atoms per motif (centre species, neighbour counts per species) in one shell."""
    types = np.asarray(types, dtype=np.intp)
    counts = _neighbour_species_counts(types, neighbours, n_species, shell)
    base = int(counts.sum(axis=1).max()) + 1
    codes, freq = np.unique(_motif_codes(types, counts, base), return_counts=True)
    return {_decode(c, n_species, base): int(f) for c, f in zip(codes, freq, strict=True)}


def _log_random_probability(
    centres: np.ndarray, counts: np.ndarray, concentrations: np.ndarray
) -> np.ndarray:
    """ln of c_centre × multinomial(counts; c) for each row; -inf where a zero-c species appears."""
    c = np.asarray(concentrations, dtype=float)
    z = counts.sum(axis=1)
    with np.errstate(divide="ignore"):
        log_c = np.log(c)
    terms = np.where(counts > 0, counts * log_c[None, :], 0.0)
    return log_c[centres] + gammaln(z + 1.0) - gammaln(counts + 1.0).sum(axis=1) + terms.sum(axis=1)


def random_motif_distribution(
    concentrations: Sequence[float] | np.ndarray, coordination: int
) -> dict[Motif, float]:
    """Motif probabilities of an ideal random solution: c_centre × multinomial(Z; c).

    Motifs with zero probability (a species of zero concentration) are left out.
    """
    c = np.asarray(concentrations, dtype=float)
    if c.ndim != 1 or not np.isfinite(c).all() or (c < 0).any() or abs(c.sum() - 1.0) > 1e-6:
        raise SROInputError(f"concentrations must be non-negative and sum to 1, got {c.tolist()}")
    z = int(coordination)
    if z < 1:
        raise SROInputError(f"coordination must be a positive integer, got {coordination!r}")
    n_s = len(c)
    n_motifs = n_s * math.comb(z + n_s - 1, n_s - 1)
    if n_motifs > _MAX_ENUMERATED:
        raise SROInputError(
            f"{n_motifs} possible motifs for {n_s} species and coordination {z}; too many to list"
        )
    compositions = [
        np.bincount(np.asarray(combo, dtype=np.intp), minlength=n_s)
        for combo in itertools.combinations_with_replacement(range(n_s), z)
    ]
    counts = np.array(compositions)
    out: dict[Motif, float] = {}
    for centre in range(n_s):
        if c[centre] == 0:
            continue
        logp = _log_random_probability(np.full(len(counts), centre), counts, c)
        for row, lp in zip(counts, logp, strict=True):
            if np.isfinite(lp):
                out[(centre, tuple(int(k) for k in row))] = float(np.exp(lp))
    return out


def _kl_bits(
    types: np.ndarray, neighbour_counts: np.ndarray, concentrations: np.ndarray, base: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """KL(observed || random) in bits, with the motif codes and both probabilities."""
    codes, first, freq = np.unique(
        _motif_codes(types, neighbour_counts, base), return_index=True, return_counts=True
    )
    p = freq / freq.sum()
    log_q = _log_random_probability(types[first], neighbour_counts[first], concentrations)
    kl = float(np.sum(p * (np.log(p) - log_q)) / math.log(2.0))
    return kl, codes, p, np.exp(log_q)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class MotifStats:
    """First-shell motif statistics of one configuration.

    ``kl_bits``: KL divergence (bits) of the observed motif distribution from the ideal random
    solution of the same composition. ``baseline_mean_bits`` ± ``baseline_std_bits``: the same KL
    for random shuffles of this cell (the value expected without any order at this cell size).
    ``excess_sigma``: (kl − baseline mean) / baseline std. ``motifs``, ``observed``, ``expected``:
    observed motifs (plus the most probable random ones), with observed and random probabilities.
    """

    kl_bits: float
    baseline_mean_bits: float
    baseline_std_bits: float
    n_atoms: int
    coordination: int
    shell: int
    species: tuple[str, ...]
    concentrations: np.ndarray
    motifs: list[Motif] = field(default_factory=list)
    observed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    expected: np.ndarray = field(default_factory=lambda: np.zeros(0))
    baseline_bits: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def excess_sigma(self) -> float:
        if not self.baseline_std_bits > 0:
            return math.nan
        return (self.kl_bits - self.baseline_mean_bits) / self.baseline_std_bits

    @property
    def exceeds_baseline(self) -> bool:
        """True when the KL lies above the largest value seen in the random shuffles."""
        return bool(len(self.baseline_bits)) and self.kl_bits > float(np.max(self.baseline_bits))

    def label(self, motif: Motif) -> str:
        centre, counts = motif
        parts = " ".join(f"{self.species[k]}×{n}" for k, n in enumerate(counts) if n)
        return f"{self.species[centre]}: {parts}"

    def top(self, n: int = 10) -> list[dict]:
        """The ``n`` motifs with the largest observed or random probability."""
        order = np.argsort(-np.maximum(self.observed, self.expected), kind="stable")[:n]
        return [
            {
                "motif": self.label(self.motifs[k]),
                "observed": float(self.observed[k]),
                "random": float(self.expected[k]),
            }
            for k in order
        ]

    def to_dict(self, n_top: int = 10) -> dict:
        excess = self.excess_sigma
        return {
            "kl_bits": self.kl_bits,
            "baseline_mean_bits": _finite_or_none(self.baseline_mean_bits),
            "baseline_std_bits": _finite_or_none(self.baseline_std_bits),
            "excess_sigma": excess if math.isfinite(excess) else None,
            "exceeds_baseline": self.exceeds_baseline,
            "n_atoms": self.n_atoms,
            "coordination": self.coordination,
            "shell": self.shell + 1,
            "species": list(self.species),
            "concentrations": np.asarray(self.concentrations).tolist(),
            "n_motifs_observed": int(np.count_nonzero(self.observed)),
            "top_motifs": self.top(n_top),
        }


def motif_kl(
    types: np.ndarray,
    neighbours: ShellNeighbours,
    n_species: int,
    *,
    n_random: int = 50,
    seed: int = 0,
    shell: int = 0,
    species: Sequence[str] | None = None,
) -> MotifStats:
    """KL divergence (bits) of the observed motifs from a random solution, with its baseline.

    The baseline is the KL of ``n_random`` random shuffles of ``types`` on the same neighbours
    (same composition, same cell size), so ``kl_bits`` well above ``baseline_mean_bits`` means
    the local environments are not random.
    """
    types = np.asarray(types, dtype=np.intp)
    n = len(types)
    if n == 0 or types.min() < 0 or types.max() >= n_species:
        raise SROInputError(f"types must be integers 0..{n_species - 1}, one per atom")
    names = tuple(species) if species is not None else tuple(str(k) for k in range(n_species))
    conc = np.bincount(types, minlength=n_species) / n
    neighbour_counts = _neighbour_species_counts(types, neighbours, n_species, shell)
    # Any shuffle keeps each atom's number of neighbours, so no species count can exceed it.
    base = int(neighbour_counts.sum(axis=1).max()) + 1
    kl, codes, p, q = _kl_bits(types, neighbour_counts, conc, base)
    rng = np.random.default_rng(seed)
    shuffled = types.copy()
    baseline = np.empty(int(n_random))
    for k in range(int(n_random)):
        rng.shuffle(shuffled)
        counts_k = _neighbour_species_counts(shuffled, neighbours, n_species, shell)
        baseline[k] = _kl_bits(shuffled, counts_k, conc, base)[0]
    motifs = [_decode(c, n_species, base) for c in codes]
    observed, expected = list(p), list(q)
    coordination = int(neighbours.counts[shell])
    try:
        reference = random_motif_distribution(conc, coordination)
    except SROInputError:  # too many motifs to list: keep the observed ones only
        reference = {}
    seen = set(motifs)
    for motif, prob in sorted(reference.items(), key=lambda kv: -kv[1])[:10]:
        if motif not in seen:
            motifs.append(motif)
            observed.append(0.0)
            expected.append(prob)
    return MotifStats(
        kl_bits=kl,
        baseline_mean_bits=float(baseline.mean()) if len(baseline) else math.nan,
        baseline_std_bits=float(baseline.std(ddof=1)) if len(baseline) > 1 else math.nan,
        n_atoms=n,
        coordination=coordination,
        shell=shell,
        species=names,
        concentrations=conc,
        motifs=motifs,
        observed=np.asarray(observed),
        expected=np.asarray(expected),
        baseline_bits=baseline,
    )


def sro_length_scale(wc: WarrenCowley, *, signal_factor: float = SIGNAL_FACTOR) -> dict:
    """Decay length (Å) of short-range order from |α| against shell radius.

    Per shell m the order is summarised by the concentration-weighted rms
    σ_m = sqrt(Σ_ij c_i c_j α_ij²) and compared with the same rms expected in a random cell
    (from the random mean and spread of α). Shells with σ_m > ``signal_factor`` × that level carry
    signal. With at least two such shells and σ falling with distance, ln σ_m = ln A − r_m / ξ is
    fitted by least squares and ξ reported. Otherwise the result says why no length is given:
    no shell above the random level ("no_decay"), only the first shell above it ("short": an
    upper bound on ξ from the first quiet shell), or σ not falling ("no_decay": long-range order).
    """
    c = np.asarray(wc.concentrations, dtype=float)
    weight = c[:, None] * c[None, :]
    alpha = np.nan_to_num(np.asarray(wc.alpha, dtype=float))
    if wc.random_std is not None and wc.random_mean is not None:
        std, mean = np.asarray(wc.random_std), np.asarray(wc.random_mean)
    else:
        band = np.asarray(wc.band)
        std = (band[..., 1] - band[..., 0]) / (2 * 1.959963984540054)
        mean = band.mean(axis=-1)
    rms = np.sqrt(np.einsum("ij,mij->m", weight, alpha**2))
    noise = np.sqrt(np.einsum("ij,mij->m", weight, np.nan_to_num(std**2 + mean**2)))
    radii = np.asarray(wc.radii, dtype=float)
    signal = rms > signal_factor * noise
    out = {
        "radii_A": radii.tolist(),
        "rms_alpha": rms.tolist(),
        "random_rms_alpha": noise.tolist(),
        "signal_shells": [int(m) + 1 for m in np.flatnonzero(signal)],
        "signal_factor": signal_factor,
        "decay_length_A": None,
        "decay_length_upper_bound_A": None,
        "amplitude": None,
        "n_points": int(signal.sum()),
    }
    if not signal.any():
        out["status"] = "no_decay"
        out["reason"] = (
            f"no shell has rms α above {signal_factor:g}× the level of a random cell; "
            "the configuration is indistinguishable from a random solution"
        )
        return out
    idx = np.flatnonzero(signal)
    if len(idx) == 1:
        m = int(idx[0])
        quiet = [k for k in range(m + 1, len(rms)) if not signal[k]]
        out["status"] = "short" if quiet else "no_decay"
        if quiet:
            k = quiet[0]
            ratio = rms[m] / (signal_factor * noise[k])
            if ratio > 1:
                out["decay_length_upper_bound_A"] = float((radii[k] - radii[m]) / math.log(ratio))
            out["reason"] = (
                f"only shell {m + 1} is above the random level; the order decays within "
                f"{radii[k] - radii[m]:.2f} Å (upper bound on the decay length given)"
            )
        else:
            out["reason"] = f"only shell {m + 1} (the last analysed) is above the random level"
        return out
    slope, intercept = np.polyfit(radii[idx], np.log(rms[idx]), 1)
    if slope >= 0:
        out["status"] = "no_decay"
        out["reason"] = (
            "rms α does not fall with distance over the shells with signal "
            "(long-range order, or too few shells analysed)"
        )
        return out
    out["status"] = "fitted"
    out["decay_length_A"] = float(-1.0 / slope)
    out["amplitude"] = float(math.exp(intercept))
    out["reason"] = f"exponential fit over {len(idx)} shells" + (
        " (two points: exact, no residual)" if len(idx) == 2 else ""
    )
    return out
