"""Element substitutability learnt from known alloys, and phase evidence by analogy.

Ha et al. (Nat. Comput. Sci. 1, 470, 2021; arXiv:2502.14631, 2025) treat "element a can take the
place of element b without changing the alloy's phase" as evidence to be collected from known
alloys and fused with Dempster's rule. This module does both halves:

1. **Substitutability.** Two training alloys form a *swap pair* when they share every element but
   one (alloy X holds a where alloy Y holds b) and their fractions agree within ``tolerance`` (the
   largest absolute difference over the shared elements and over X[a] vs Y[b]). A swap pair with the
   same measured phase supports "a and b are substitutable"; different phases support "not". Swap
   pairs of one *family* (the same shared element set, e.g. every Co-Cr-Fe-Ni + one element series)
   come from the same series of experiments and are not independent, so each family contributes one
   simple mass function over {substitutable, not}: its weight grows with the number of swap pairs
   (``pair_mass * n / (n + 1)``) and is split by the share of agreeing pairs. Families are combined
   by Dempster's rule, so more agreeing families give more belief.
2. **Analogy.** A query alloy is compared with the training alloys that differ from it by one swap
   (within ``tolerance``); each analogue's measured phase is transferred as a mass function on that
   phase, discounted by the belief that the swapped pair is substitutable, and the analogues'
   masses are combined by Dempster's rule. No analogue leaves the query vacuous (all mass on OMEGA).

Lookups go through an index keyed by the shared element set, so a fit on ~6,000 alloys and a
prediction for ~1,500 take seconds, not an all-pairs loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from matflow.evidence import Frame, combine_dempster, vacuous
from matflow.screening.composition import composition_key, parse_composition
from matflow.screening.phases import N_FOCAL, OMEGA, PHASES, phase_mask
from matflow.screening.sources.base import Composition, EvidenceSource

SUBSTITUTABILITY_FRAME = Frame(("substitutable", "not_substitutable"))
"""The two-hypothesis frame of one element pair; masses are length-4 vectors (∅, S, N, Ω)."""
SUBST = SUBSTITUTABILITY_FRAME.mask("substitutable")
NOT_SUBST = SUBSTITUTABILITY_FRAME.mask("not_substitutable")

Pair = tuple[str, str]
"""An unordered element pair, stored sorted."""


class SourceInputError(ValueError):
    """Training or query input that an evidence source cannot use; the message names it."""


def pair_of(a: str, b: str) -> Pair:
    return (a, b) if a <= b else (b, a)


def check_training_rows(
    compositions: Sequence[Mapping[str, float] | str], phases: Sequence[str], source: str
) -> tuple[list[Composition], np.ndarray]:
    """Parsed compositions and phase masks; raises SourceInputError on mismatched or bad rows."""
    if len(compositions) != len(phases):
        raise SourceInputError(
            f"{source}.fit: {len(compositions)} compositions but {len(phases)} phase labels"
        )
    parsed = [parse_composition(comp) for comp in compositions]
    masks = np.empty(len(phases), dtype=np.int64)
    for i, label in enumerate(phases):
        try:
            masks[i] = phase_mask(str(label))
        except ValueError as exc:
            raise SourceInputError(f"{source}.fit: phase of row {i}: {exc}") from None
    return parsed, masks


@dataclass(frozen=True)
class Analogue:
    """A training alloy that becomes the query when its element ``swap_out`` is replaced by ``swap_in``."""

    row: int
    family: tuple[str, ...]
    swap_out: str
    swap_in: str
    distance: float


@dataclass(frozen=True)
class SwapFamily:
    """Swap-pair statistics of one element pair within one family of shared elements."""

    pair: Pair
    family: tuple[str, ...]
    n_same: int
    n_different: int


class SwapIndex:
    """Training alloys indexed by every 'all elements but one' subset, for one-swap matching.

    ``tolerance`` is the largest allowed absolute difference in mole fraction (shared elements and
    swapped slot alike) for two alloys to count as the same recipe with one element exchanged.
    """

    def __init__(self, compositions: Sequence[Composition], phase_masks: np.ndarray,
                 tolerance: float) -> None:
        self.compositions = list(compositions)
        self.phase_masks = np.asarray(phase_masks, dtype=np.int64)
        self.keys = [composition_key(comp) for comp in self.compositions]
        self.tolerance = float(tolerance)
        members: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
        for row, comp in enumerate(self.compositions):
            for element in comp:
                family = tuple(sorted(e for e in comp if e != element))
                members[family].append((row, element))
        # per family: rows, swapped element, fractions (shared elements in family order, then swap)
        self._families: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for family, entries in members.items():
            rows = np.array([row for row, _ in entries], dtype=np.int64)
            swapped = np.array([element for _, element in entries])
            fractions = np.array(
                [[self.compositions[row][e] for e in family] + [self.compositions[row][element]]
                 for row, element in entries]
            )
            self._families[family] = (rows, swapped, fractions)

    def swap_families(self) -> list[SwapFamily]:
        """Every (element pair, family) with at least one swap pair, with same/different counts."""
        out: list[SwapFamily] = []
        for family, (rows, swapped, fractions) in self._families.items():
            if len(rows) < 2:
                continue
            distance = np.abs(fractions[:, None, :] - fractions[None, :, :]).max(axis=-1)
            close = (distance <= self.tolerance) & (swapped[:, None] != swapped[None, :])
            first, second = np.nonzero(np.triu(close, k=1))
            if not len(first):
                continue
            same = self.phase_masks[rows[first]] == self.phase_masks[rows[second]]
            counts: dict[Pair, list[int]] = defaultdict(lambda: [0, 0])
            for i, j, agree in zip(first, second, same, strict=True):
                counts[pair_of(str(swapped[i]), str(swapped[j]))][0 if agree else 1] += 1
            out += [SwapFamily(pair, family, n_same, n_diff)
                    for pair, (n_same, n_diff) in sorted(counts.items())]
        return out

    def analogues(self, composition: Composition) -> list[Analogue]:
        """Training alloys that differ from ``composition`` by exactly one swapped element."""
        found: list[Analogue] = []
        for swap_in in composition:
            family = tuple(sorted(e for e in composition if e != swap_in))
            entry = self._families.get(family)
            if entry is None:
                continue
            rows, swapped, fractions = entry
            target = np.array([composition[e] for e in family] + [composition[swap_in]])
            distance = np.abs(fractions - target).max(axis=1)
            for k in np.flatnonzero((distance <= self.tolerance) & (swapped != swap_in)):
                found.append(Analogue(int(rows[k]), family, str(swapped[k]), swap_in,
                                      float(distance[k])))
        return found


def simple_pair_mass(support: float, against: float) -> np.ndarray:
    """Mass vector over the substitutability frame: m(S)=support, m(N)=against, rest ignorance."""
    m = np.zeros(SUBSTITUTABILITY_FRAME.size)
    m[SUBST], m[NOT_SUBST] = support, against
    m[SUBSTITUTABILITY_FRAME.omega] = 1.0 - support - against
    return m


def combine_rows(stacks: list[list[np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Dempster-combine a variable number of mass vectors per row (vacuous where a row has none).

    Rows are padded with vacuous masses (the neutral element of Dempster's rule) so the whole batch
    is one left fold of ``combine_dempster``. Folding with a renormalisation at every step gives the
    same masses as one normalisation at the end (the rule is associative) but never divides by a
    vanishing 1 - K when many mildly conflicting pieces of evidence meet. Returns
    (masses (n, width), total conflict K (n,) of the unnormalised conjunctive combination).
    """
    n_hyp = int(np.log2(width))
    n = len(stacks)
    depth = max((len(s) for s in stacks), default=0)
    if depth == 0:
        return vacuous(n_hyp, shape=(n,)), np.zeros(n)
    padded = np.broadcast_to(vacuous(n_hyp), (depth, n, width)).copy()
    for row, masses in enumerate(stacks):
        for level, m in enumerate(masses):
            padded[level, row] = m
    fused, log_kept = padded[0], np.zeros(n)
    for level in padded[1:]:
        fused, conflict = combine_dempster(fused, level)
        fused = fused / fused.sum(axis=-1, keepdims=True)  # keep rounding drift from accumulating
        log_kept += np.log1p(-np.asarray(conflict, dtype=float).reshape(n))
    return np.asarray(fused), 1.0 - np.exp(log_kept)


def analogy_masses(
    index: SwapIndex, compositions: Sequence[Composition],
    pair_belief: Callable[[str, str], float], strength: float, max_pools: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[Analogue, float]]]]:
    """Phase masses (n, 16) from one-swap analogues, the conflict K (n,) among them, and the
    analogues used per query with their substitutability belief.

    Analogues reached through the same swap within the same family (a fraction series of one
    recipe) are pooled into one mass function (their phase shares times the belief), as they are
    one piece of evidence. The ``max_pools`` pools with the highest belief (then the closest
    fractions) are combined by Dempster's rule; capping them keeps a query with dozens of similar
    analogues from reaching certainty on evidence that is far from independent.
    """
    stacks: list[list[np.ndarray]] = []
    used: list[list[tuple[Analogue, float]]] = []
    for comp in compositions:
        pools: dict[tuple, list[tuple[Analogue, float]]] = defaultdict(list)
        for analogue in index.analogues(comp):
            belief = float(pair_belief(analogue.swap_out, analogue.swap_in))
            if belief > 0:
                pools[(analogue.family, analogue.swap_out)].append((analogue, belief))
        ranked = sorted(pools.values(),
                        key=lambda pool: (-pool[0][1], min(a.distance for a, _ in pool)))
        ranked = ranked[:max_pools] if max_pools is not None else ranked
        masses = []
        for pool in ranked:
            m = np.zeros(N_FOCAL)
            weight = strength * pool[0][1] / len(pool)
            for analogue, _ in pool:
                m[index.phase_masks[analogue.row]] += weight
            m[OMEGA] += 1.0 - m.sum()
            masses.append(m)
        stacks.append(masses)
        used.append([item for pool in ranked for item in pool])
    fused, conflict = combine_rows(stacks, N_FOCAL)
    return fused, conflict, used


def describe_analogues(index: SwapIndex, used: list[tuple[Analogue, float]],
                       limit: int = 20) -> list[dict[str, Any]]:
    """JSON-able list of the ``limit`` strongest analogues (for reports)."""
    rows = [
        {"composition": index.keys[a.row],
         "measured_phase": PHASES[int(index.phase_masks[a.row]).bit_length() - 1],
         "substitution": f"{a.swap_out}->{a.swap_in}", "substitutability_belief": round(belief, 4),
         "fraction_distance": round(a.distance, 4)}
        for a, belief in used
    ]
    rows.sort(key=lambda r: (-r["substitutability_belief"], r["fraction_distance"]))
    return rows[:limit]


class AnalogySource(EvidenceSource):
    """Phase masses by analogy with known alloys one substitutable swap away; subclasses say how
    substitutable two elements are (``belief``) and hold ``index_``, ``strength``, ``max_pools``."""

    def belief(self, a: str, b: str) -> float:
        raise NotImplementedError

    def masses(self, compositions: Sequence[Composition]) -> np.ndarray:
        check_is_fitted(self, "index_")
        parsed = [parse_composition(comp) for comp in compositions]
        fused, _, _ = analogy_masses(self.index_, parsed, self.belief, self.strength,
                                   self.max_pools)
        return fused


class SubstitutabilitySource(AnalogySource):
    """Phase evidence by analogy with known alloys one substitutable swap away.

    tolerance: largest mole-fraction difference for two alloys to match (0.02 = 2 at.%).
    pair_mass: the most one family of swap pairs can say about one element pair (its ignorance is
    at least 1 - pair_mass). strength: the most one analogue pool can say about the query's phase.
    max_pools: how many analogue pools (strongest first) are combined per query (None: all).
    """

    name: ClassVar[str] = "substitutability"

    def __init__(self, tolerance: float = 0.02, pair_mass: float = 0.3, strength: float = 0.6,
                 max_pools: int | None = 5):
        self.tolerance = tolerance
        self.pair_mass = pair_mass
        self.strength = strength
        self.max_pools = max_pools

    def _check_params(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise SourceInputError(f"tolerance {self.tolerance}: must be in [0, 1)")
        for label, value in (("pair_mass", self.pair_mass), ("strength", self.strength)):
            if not 0 <= value < 1:
                raise SourceInputError(f"{label} {value}: must be in [0, 1) to keep some ignorance")
        if self.max_pools is not None and self.max_pools < 1:
            raise SourceInputError(f"max_pools {self.max_pools}: must be >= 1 or None")

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> SubstitutabilitySource:
        self._check_params()
        parsed, masks = check_training_rows(compositions, phases, self.name)
        self.index_ = SwapIndex(parsed, masks, self.tolerance)
        self.families_ = self.index_.swap_families()
        by_pair: dict[Pair, list[np.ndarray]] = defaultdict(list)
        for fam in self.families_:
            n = fam.n_same + fam.n_different
            weight = self.pair_mass * n / (n + 1)
            by_pair[fam.pair].append(simple_pair_mass(weight * fam.n_same / n,
                                                      weight * fam.n_different / n))
        pairs = sorted(by_pair)
        fused, conflict = combine_rows([by_pair[p] for p in pairs], SUBSTITUTABILITY_FRAME.size)
        self.pair_masses_: dict[Pair, np.ndarray] = dict(zip(pairs, fused, strict=True))
        self.pair_conflict_: dict[Pair, float] = dict(zip(pairs, map(float, conflict), strict=True))
        self.pair_families_: dict[Pair, int] = {p: len(by_pair[p]) for p in pairs}
        return self

    def pair_mass_of(self, a: str, b: str) -> np.ndarray:
        """Fused substitutability mass (∅, S, N, Ω) of elements a and b; vacuous if never seen."""
        found = self.pair_masses_.get(pair_of(a, b))
        return found.copy() if found is not None else vacuous(2)

    def belief(self, a: str, b: str) -> float:
        """Bel(a and b substitutable): the mass committed to 'substitutable' alone."""
        return float(self.pair_mass_of(a, b)[SUBST])

    def explain(self, composition: Composition) -> dict[str, Any]:
        check_is_fitted(self, "index_")
        comp = parse_composition(composition)
        fused, conflict, used = analogy_masses(self.index_, [comp], self.belief, self.strength,
                                               self.max_pools)
        analogues = describe_analogues(self.index_, used[0])
        return {
            "source": self.name,
            "analogues": analogues,
            "n_analogues": len(used[0]),
            "conflict": round(float(conflict[0]), 4),
            "ignorance": round(float(fused[0, OMEGA]), 4),
            "note": ("no known alloy one substitutable swap away: vacuous" if not analogues
                     else f"{len(used[0])} analogue(s) one swap away"),
        }
