"""Element substitutability as judged by language-model "expert personas", used by analogy.

Ha et al. (arXiv:2502.14631, 2025) asked GPT-4o, in five expert personas (Solidstate, Metallurgist,
Mechanical, Corrosion, Materials), whether each of 351 element pairs over 27 elements can substitute
for each other (Q1: Yes/No) and how well (Q2: High/Medium/Low/No); the answers are bundled in
``data/hea_dst_ha2025/AI_experts_knowledge.csv``. Here:

* each persona's answer for a pair becomes a mass function over {substitutable, not}
  (``DEFAULT_ANSWER_MASSES``; the mapping is our choice, not the paper's, and keeps ignorance);
* each persona is discounted by a reliability *fitted on the training rows*: the discount that best
  predicts (least squares on the pignistic probability) how often training alloys that differ by
  that swap share their phase; a persona no better than "don't know" gets reliability 0;
* the discounted personas are combined into one substitutability per pair: averaged by default,
  since five roles of one language model are not independent witnesses (Dempster's rule and the
  cautious rule are options, see ``ExpertKnowledgeSource``);
* phase evidence comes by the same one-swap analogy as ``SubstitutabilitySource``, with the
  experts' belief in place of the data-derived one. The two are kept as separate sources (rather
  than the experts being a prior inside the data-derived one) so fusion can weigh, and reports can
  show, where language-model knowledge and measured swap pairs disagree.

Swaps involving an element outside the table's 27 carry no expert belief; a query reached only
through such swaps is vacuous, and ``explain`` names the elements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from matflow.evidence import combine, discount_by_reliability, pignistic
from matflow.screening.composition import parse_composition
from matflow.screening.phases import OMEGA
from matflow.screening.sources.base import Composition
from matflow.screening.sources.substitutability import (
    NOT_SUBST,
    SUBST,
    SUBSTITUTABILITY_FRAME,
    AnalogySource,
    Pair,
    SourceInputError,
    SwapIndex,
    analogy_masses,
    check_training_rows,
    describe_analogues,
    pair_of,
    simple_pair_mass,
)
from matflow.settings import get_settings

EXPERT_TABLE = Path("hea_dst_ha2025") / "AI_experts_knowledge.csv"
PERSONAS: tuple[str, ...] = ("Solidstate", "Metallurgist", "Mechanical", "Corrosion", "Materials")
LEVELS: tuple[str, ...] = ("High", "Medium", "Low", "No")

DEFAULT_ANSWER_MASSES: dict[str, tuple[float, float]] = {
    "High": (0.8, 0.0),
    "Medium": (0.5, 0.0),
    "Low": (0.2, 0.0),
    "No": (0.0, 0.8),
}
"""Answer level -> (m(substitutable), m(not)); the remainder is ignorance. 'No' is used whenever Q1
is No. A language model's verbal level is weak evidence, so no answer commits more than 0.8."""


class ExpertTableError(ValueError):
    """The expert-knowledge table is missing or malformed; the message names the file and row."""


def default_expert_table() -> Path:
    return get_settings().data_dir / EXPERT_TABLE


@lru_cache(maxsize=4)
def _read(path: Path, mtime: float) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise ExpertTableError(f"expert table {path}: cannot read ({exc})") from None
    needed = ["element_a", "element_b", "expert_persona", "q1_substitutable",
              "q2_substitutability_level"]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise ExpertTableError(f"expert table {path}: missing column(s) {', '.join(missing)}")
    rows = []
    for i, rec in enumerate(raw[needed].itertuples(index=False), start=2):
        a, b, persona, q1, q2 = (str(v).strip() for v in rec)
        q1, q2 = q1.removeprefix("Q1"), q2.removeprefix("Q2")
        if q1 not in ("Yes", "No") or q2 not in LEVELS:
            raise ExpertTableError(f"expert table {path}, line {i}: answers {q1!r}/{q2!r} not "
                                   f"Yes/No and one of {', '.join(LEVELS)}")
        if not a or not b or a == b:
            raise ExpertTableError(f"expert table {path}, line {i}: bad element pair {a!r}, {b!r}")
        rows.append((*pair_of(a, b), persona, q1 == "Yes", "No" if q1 == "No" else q2))
    table = pd.DataFrame(rows, columns=["element_a", "element_b", "persona", "substitutable",
                                        "level"])
    if table.duplicated(["element_a", "element_b", "persona"]).any():
        raise ExpertTableError(f"expert table {path}: a persona answers one pair twice")
    return table


def read_expert_table(path: str | Path | None = None) -> pd.DataFrame:
    """Expert answers, one row per (pair, persona): element_a <= element_b (sorted), persona,
    substitutable (Q1 as bool), level (Q2; 'No' whenever Q1 is No)."""
    resolved = Path(path) if path is not None else default_expert_table()
    if not resolved.is_file():
        raise ExpertTableError(f"expert table {resolved}: file not found")
    return _read(resolved.resolve(), resolved.stat().st_mtime).copy()


def fit_reliability(p_substitutable: np.ndarray, shared_outcome: np.ndarray,
                    weights: np.ndarray | None = None, step: float = 0.05) -> tuple[float, float]:
    """Reliability r in [0, 1] (grid ``step``) whose discounted pignistic probability
    r * p + (1 - r) / 2 best predicts the observed share of swap pairs with the same phase.

    Returns (reliability, weighted mean squared error at it). With no observation, r = 0.
    """
    p = np.asarray(p_substitutable, dtype=float)
    y = np.asarray(shared_outcome, dtype=float)
    if p.shape != y.shape:
        raise SourceInputError(f"fit_reliability: {p.shape} predictions vs {y.shape} outcomes")
    if not len(p):
        return 0.0, float("nan")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=float)
    grid = np.linspace(0.0, 1.0, int(round(1 / step)) + 1)
    pred = grid[:, None] * p[None, :] + (1 - grid[:, None]) * 0.5
    errors = ((pred - y[None, :]) ** 2 * w).sum(axis=1) / w.sum()
    best = int(np.argmin(errors))  # ties go to the smaller reliability
    return float(grid[best]), float(errors[best])


class ExpertKnowledgeSource(AnalogySource):
    """Phase evidence by analogy through language-model expert substitutability.

    path: expert table (default: the bundled one). tolerance, strength: as in
    ``SubstitutabilitySource``. answer_masses: level -> (m(S), m(N)) (default
    ``DEFAULT_ANSWER_MASSES``). reliabilities: "fit" (from training swap pairs) or a mapping
    persona -> reliability in [0, 1]. persona_rule: how the discounted personas are combined:
    "average" (default), "cautious" or "dempster". The personas are one language model answering
    in five roles, so their answers are not independent evidence, which Dempster's rule assumes
    (five agreeing personas would count five times). Averaging the mass functions (Murphy, Decision
    Support Systems 29, 1, 2000) and Denœux's cautious rule (Artificial Intelligence 172, 234,
    2008), which keeps the strongest persona's support instead of adding them up, are both made for
    dependent sources.
    """

    name: ClassVar[str] = "experts"

    def __init__(self, path: str | Path | None = None, tolerance: float = 0.02,
                 strength: float = 0.6, max_pools: int | None = 5,
                 answer_masses: Mapping[str, tuple[float, float]] | None = None,
                 reliabilities: str | Mapping[str, float] = "fit", persona_rule: str = "average"):
        self.path = path
        self.tolerance = tolerance
        self.strength = strength
        self.max_pools = max_pools
        self.answer_masses = answer_masses
        self.reliabilities = reliabilities
        self.persona_rule = persona_rule

    def _answer_masses(self) -> dict[str, np.ndarray]:
        spec = dict(DEFAULT_ANSWER_MASSES if self.answer_masses is None else self.answer_masses)
        if set(spec) != set(LEVELS):
            raise SourceInputError(f"answer_masses keys {sorted(spec)}: need exactly {LEVELS}")
        out = {}
        for level, (support, against) in spec.items():
            if min(support, against) < 0 or support + against > 1:
                raise SourceInputError(f"answer_masses[{level!r}] = {(support, against)}: masses "
                                       "must be >= 0 and sum to at most 1")
            out[level] = simple_pair_mass(support, against)
        return out

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> ExpertKnowledgeSource:
        if not 0 <= self.strength < 1:
            raise SourceInputError(f"strength {self.strength}: must be in [0, 1)")
        if self.max_pools is not None and self.max_pools < 1:
            raise SourceInputError(f"max_pools {self.max_pools}: must be >= 1 or None")
        if self.persona_rule not in ("average", "cautious", "dempster"):
            raise SourceInputError(f"persona_rule {self.persona_rule!r}: 'average', 'cautious' "
                                   "or 'dempster'")
        parsed, masks = check_training_rows(compositions, phases, self.name)
        table = read_expert_table(self.path)
        answers = self._answer_masses()
        self.personas_: tuple[str, ...] = tuple(sorted(set(table["persona"])))
        self.pairs_: list[Pair] = sorted({(a, b) for a, b in zip(table["element_a"],
                                                                 table["element_b"], strict=True)})
        self.elements_: frozenset[str] = frozenset(e for p in self.pairs_ for e in p)
        position = {p: i for i, p in enumerate(self.pairs_)}
        # persona masses (n_personas, n_pairs, 4); a persona that skipped a pair says nothing
        persona_masses = np.zeros((len(self.personas_), len(self.pairs_), SUBSTITUTABILITY_FRAME.size))
        persona_masses[..., SUBSTITUTABILITY_FRAME.omega] = 1.0
        for a, b, persona, level in table[["element_a", "element_b", "persona", "level"]].itertuples(
                index=False):
            persona_masses[self.personas_.index(persona), position[(a, b)]] = answers[level]

        self.index_ = SwapIndex(parsed, masks, self.tolerance)
        families = [f for f in self.index_.swap_families() if f.pair in position]
        self.n_swap_families_ = len(families)
        if self.reliabilities == "fit":
            cols = np.array([position[f.pair] for f in families], dtype=np.int64)
            shared = np.array([f.n_same / (f.n_same + f.n_different) for f in families])
            self.reliabilities_: dict[str, float] = {}
            self.reliability_errors_: dict[str, float] = {}
            for k, persona in enumerate(self.personas_):
                p_subst = pignistic(persona_masses[k, cols])[..., 0] if len(cols) else np.zeros(0)
                r, err = fit_reliability(p_subst, shared)
                self.reliabilities_[persona], self.reliability_errors_[persona] = r, err
        elif isinstance(self.reliabilities, Mapping):
            unknown = set(self.reliabilities) - set(self.personas_)
            if unknown:
                raise SourceInputError(f"reliabilities: unknown persona(s) {sorted(unknown)}; "
                                       f"the table has {', '.join(self.personas_)}")
            self.reliabilities_ = {p: float(self.reliabilities.get(p, 0.0)) for p in self.personas_}
            bad = {p: r for p, r in self.reliabilities_.items() if not 0 <= r <= 1}
            if bad:
                raise SourceInputError(f"reliabilities {bad}: must be in [0, 1]")
            self.reliability_errors_ = {}
        else:
            raise SourceInputError(f"reliabilities {self.reliabilities!r}: 'fit' or a mapping "
                                   "persona -> reliability")
        discounted = [discount_by_reliability(persona_masses[k], self.reliabilities_[p])
                      for k, p in enumerate(self.personas_)]
        if self.persona_rule != "average" and len(discounted) > 1:
            fused, conflict = combine(discounted, rule=self.persona_rule)
        else:
            fused, conflict = np.mean(discounted, axis=0), np.zeros(len(self.pairs_))
        self.pair_masses_: dict[Pair, np.ndarray] = dict(zip(self.pairs_, np.asarray(fused),
                                                             strict=True))
        self.pair_conflict_: dict[Pair, float] = dict(
            zip(self.pairs_, np.asarray(conflict, dtype=float).reshape(-1), strict=True))
        return self

    def belief(self, a: str, b: str) -> float:
        """Bel(a and b substitutable) from the discounted, combined personas; 0 outside the table."""
        m = self.pair_masses_.get(pair_of(a, b))
        return 0.0 if m is None else float(m[SUBST])

    def disbelief(self, a: str, b: str) -> float:
        """Bel(a and b not substitutable); 0 outside the table."""
        m = self.pair_masses_.get(pair_of(a, b))
        return 0.0 if m is None else float(m[NOT_SUBST])

    def explain(self, composition: Composition) -> dict[str, Any]:
        check_is_fitted(self, "index_")
        comp = parse_composition(composition)
        fused, conflict, used = analogy_masses(self.index_, [comp], self.belief, self.strength,
                                               self.max_pools)
        outside = sorted(set(comp) - self.elements_)
        analogues = describe_analogues(self.index_, used[0])
        if analogues:
            note = f"{len(used[0])} analogue(s) through expert-substitutable swaps"
        elif outside:
            note = (f"element(s) {', '.join(outside)} not in the expert table "
                    f"({len(self.elements_)} elements): vacuous")
        else:
            note = "no known alloy one expert-substitutable swap away: vacuous"
        return {
            "source": self.name,
            "analogues": analogues,
            "n_analogues": len(used[0]),
            "conflict": round(float(conflict[0]), 4),
            "elements_outside_table": outside,
            "persona_reliabilities": {p: round(r, 3) for p, r in self.reliabilities_.items()},
            "ignorance": round(float(fused[0, OMEGA]), 4),
            "note": note,
        }
