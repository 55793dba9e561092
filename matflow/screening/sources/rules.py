"""Evidence from the classical empirical phase-formation rules, with their borderline doubt kept.

The rules (all on descriptors from ``matflow.screening.descriptors``):

- solid solution needs δ ≤ 6.6 % and Ω ≥ 1.1 (Yang & Zhang, Mater. Chem. Phys. 132, 233 (2012));
- and −22 ≤ ΔH_mix ≤ 7 kJ/mol (Guo & Liu, Prog. Nat. Sci. Mater. Int. 21, 433 (2011));
- among solid solutions, VEC ≥ 8 gives fcc, VEC < 6.87 bcc, and fcc + bcc mixtures lie in
  between (Guo, Ng, Lu, Liu, J. Appl. Phys. 109, 103505 (2011)).

Applied as hard cut-offs they say "yes" or "no" even a hair from a threshold. ``RulesSource`` turns
each criterion into a soft score g = logistic(distance to the threshold / width) and then into a
mass function that keeps ignorance:

- pass_k = max(0, 2 g_k − 1) and fail_k = max(0, 1 − 2 g_k): 0 at the threshold, → 1 far from it;
- m(SOLID_SOLUTION) = strength · min_k pass_k (all criteria must pass);
- m(MP) = strength · max_k fail_k (one clear failure suffices);
- the rest, including everything a borderline alloy cannot decide, stays on Ω.

Because a criterion cannot both pass and fail, the two supports never conflict. The solid-solution
mass is then split by VEC: a share logistic((VEC − 8)/w) to FCC, logistic((6.87 − VEC)/w) to BCC,
and the middle share to FCC ∪ BCC ∪ MP ("fcc, bcc or their mixture, not hcp"), because Guo et al.
found fcc + bcc mixtures in that range. A criterion that cannot be evaluated (a binary enthalpy
missing from the Takeuchi–Inoue table) neither passes nor fails, so its mass goes to Ω.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit

from matflow.evidence import belief, plausibility
from matflow.screening.descriptors import describe_many
from matflow.screening.phases import BCC, FCC, MP, N_FOCAL, OMEGA, SOLID_SOLUTION
from matflow.screening.sources.base import Composition, EvidenceSource

DELTA_MAX_PCT = 6.6
"""Yang & Zhang (2012): solid solutions have δ ≤ 6.6 %."""
OMEGA_MIN = 1.1
"""Yang & Zhang (2012): solid solutions have Ω ≥ 1.1."""
DHMIX_RANGE_KJMOL = (-22.0, 7.0)
"""Guo & Liu (2011): solid solutions have −22 ≤ ΔH_mix ≤ 7 kJ/mol."""
VEC_FCC_MIN = 8.0
"""Guo et al. (2011): fcc solid solutions at VEC ≥ 8."""
VEC_BCC_MAX = 6.87
"""Guo et al. (2011): bcc solid solutions at VEC < 6.87."""

FCC_BCC_OR_MIXTURE = FCC | BCC | MP

CITATIONS: tuple[str, ...] = (
    "X. Yang, Y. Zhang, Mater. Chem. Phys. 132, 233 (2012)",
    "S. Guo, C. T. Liu, Prog. Nat. Sci. Mater. Int. 21, 433 (2011)",
    "S. Guo, C. Ng, J. Lu, C. T. Liu, J. Appl. Phys. 109, 103505 (2011)",
    "Y. Zhang et al., Adv. Eng. Mater. 10, 534 (2008)",
    "A. Takeuchi, A. Inoue, Mater. Trans. 46, 2817 (2005)",
)


def _soft_scores(desc: pd.DataFrame, widths: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Logistic degree (0..1, 0.5 at the threshold) to which each criterion holds; NaN unknown."""
    delta = desc["delta_pct"].to_numpy(float)
    omega = desc["omega"].to_numpy(float)
    d_h = desc["dHmix_kJmol"].to_numpy(float)
    lo, hi = DHMIX_RANGE_KJMOL
    with np.errstate(divide="ignore", invalid="ignore"):
        # Ω spans decades, so its distance is measured in ln Ω
        log_omega = np.log(omega)
    scores = {
        "delta": expit((DELTA_MAX_PCT - delta) / widths["delta_pct"]),
        "omega": expit((log_omega - np.log(OMEGA_MIN)) / widths["log_omega"]),
        "dHmix": expit((d_h - lo) / widths["dHmix_kJmol"])
        * expit((hi - d_h) / widths["dHmix_kJmol"]),
    }
    for key, src in (("omega", omega), ("dHmix", d_h)):
        scores[key] = np.where(np.isnan(src), np.nan, scores[key])
    return scores


class RulesSource(EvidenceSource):
    """Mass functions from the classical δ, Ω, ΔH_mix and VEC rules; needs no labels.

    Parameters
    ----------
    strength:
        Largest mass the rules may commit to SOLID_SOLUTION or MP (the rest stays on Ω even far
        from every threshold), since the rules are empirical and miss a fair share of alloys.
    delta_width_pct, log_omega_width, dhmix_width_kjmol, vec_width:
        Logistic widths: how far from a threshold (in the descriptor's unit; for Ω in ln Ω) a
        criterion counts as clearly met. At two widths the score is 0.88 (pass = 0.76).
    radii:
        Atomic-radius set for δ (see ``matflow.screening.descriptors``).
    """

    name: ClassVar[str] = "rules"

    def __init__(
        self,
        strength: float = 0.8,
        delta_width_pct: float = 0.5,
        log_omega_width: float = 0.25,
        dhmix_width_kjmol: float = 2.0,
        vec_width: float = 0.2,
        radii: str = "miracle2010",
    ) -> None:
        self.strength = strength
        self.delta_width_pct = delta_width_pct
        self.log_omega_width = log_omega_width
        self.dhmix_width_kjmol = dhmix_width_kjmol
        self.vec_width = vec_width
        self.radii = radii

    def _check_params(self) -> None:
        if not 0.0 <= float(self.strength) <= 1.0:
            raise ValueError(f"RulesSource: strength={self.strength!r} must be in [0, 1]")
        for key in ("delta_width_pct", "log_omega_width", "dhmix_width_kjmol", "vec_width"):
            value = float(getattr(self, key))
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"RulesSource: {key}={value!r} must be a finite number > 0")

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> RulesSource:
        """Nothing to learn: the thresholds are the published ones. Checks the parameters."""
        self._check_params()
        if len(compositions) != len(phases):
            raise ValueError(
                f"RulesSource.fit: {len(compositions)} compositions but {len(phases)} phases"
            )
        self.is_fitted_ = True
        return self

    def _widths(self) -> dict[str, float]:
        return {
            "delta_pct": float(self.delta_width_pct),
            "log_omega": float(self.log_omega_width),
            "dHmix_kJmol": float(self.dhmix_width_kjmol),
        }

    def _masses_from(self, desc: pd.DataFrame) -> np.ndarray:
        scores = _soft_scores(desc, self._widths())
        stacked = np.stack([scores["delta"], scores["omega"], scores["dHmix"]], axis=1)
        passes = np.nan_to_num(np.clip(2.0 * stacked - 1.0, 0.0, None), nan=0.0)
        fails = np.nan_to_num(np.clip(1.0 - 2.0 * stacked, 0.0, None), nan=0.0)
        strength = float(self.strength)
        m_ss = strength * passes.min(axis=1)
        m_mp = strength * fails.max(axis=1)

        vec = desc["vec"].to_numpy(float)
        to_fcc = expit((vec - VEC_FCC_MIN) / float(self.vec_width))
        to_bcc = expit((VEC_BCC_MAX - vec) / float(self.vec_width))
        out = np.zeros((len(desc), N_FOCAL))
        out[:, FCC] = m_ss * to_fcc
        out[:, BCC] = m_ss * to_bcc
        out[:, FCC_BCC_OR_MIXTURE] = m_ss * (1.0 - to_fcc - to_bcc)
        out[:, MP] = m_mp
        out[:, OMEGA] = 1.0 - m_ss - m_mp
        return out

    def masses(self, compositions: Sequence[Composition]) -> np.ndarray:
        """(n, 16) mass functions; rows sum to 1, column 15 is what the rules cannot decide."""
        self._check_params()
        return self._masses_from(describe_many(list(compositions), radii=self.radii))

    def explain(self, composition: Composition) -> dict[str, Any]:
        """Descriptors, each criterion's verdict (pass / fail / borderline / unknown) and masses."""
        desc = describe_many([composition], radii=self.radii)
        row = desc.iloc[0]
        scores = _soft_scores(desc, self._widths())
        criteria = {}
        for key, text in (
            ("delta", f"δ ≤ {DELTA_MAX_PCT} % (Yang & Zhang 2012)"),
            ("omega", f"Ω ≥ {OMEGA_MIN} (Yang & Zhang 2012)"),
            ("dHmix", f"{DHMIX_RANGE_KJMOL[0]} ≤ ΔH_mix ≤ {DHMIX_RANGE_KJMOL[1]} kJ/mol "
                      "(Guo & Liu 2011)"),
        ):
            g = float(scores[key][0])
            verdict = ("unknown" if np.isnan(g) else "pass" if g >= 0.88
                       else "fail" if g <= 0.12 else "borderline")
            criteria[key] = {"rule": text, "score": None if np.isnan(g) else g, "verdict": verdict}
        vec = float(row["vec"])
        vec_class = "FCC" if vec >= VEC_FCC_MIN else "BCC" if vec < VEC_BCC_MAX else "FCC+BCC"
        m = self._masses_from(desc)[0]
        return {
            "source": self.name,
            "descriptors": {k: (float(v) if not isinstance(v, str) else v)
                            for k, v in row.items()},
            "criteria": criteria,
            "vec_class": f"{vec_class} (Guo et al. 2011: VEC ≥ {VEC_FCC_MIN} fcc, "
                         f"< {VEC_BCC_MAX} bcc)",
            "masses": {
                "FCC": float(m[FCC]),
                "BCC": float(m[BCC]),
                "FCC|BCC|MP": float(m[FCC_BCC_OR_MIXTURE]),
                "MP": float(m[MP]),
                "ignorance": float(m[OMEGA]),
            },
            "bel_SS": float(belief(m, SOLID_SOLUTION)),
            "pl_SS": float(plausibility(m, SOLID_SOLUTION)),
            "citations": list(CITATIONS),
        }


def classical_rules_predict(
    compositions: Sequence[Composition], *, radii: str = "miracle2010"
) -> dict[str, np.ndarray]:
    """The published rules as hard cut-offs: the "rules_classical" baseline.

    Returns arrays of length n: ``single_phase`` (1 when δ ≤ 6.6 %, Ω ≥ 1.1 and
    −22 ≤ ΔH_mix ≤ 7 kJ/mol, else 0; 0 when ΔH_mix is unknown), ``fcc`` (1 when VEC ≥ 7.435, the
    midpoint of Guo's 6.87–8 mixed band, else 0; for fcc-vs-bcc tasks), ``vec_class`` ("FCC",
    "BCC" or "FCC+BCC" by Guo's bands) and continuous scores for ROC curves:
    ``single_phase_score`` (the smallest soft criterion score, 0..1) and ``fcc_score`` (VEC).
    """
    desc = describe_many(list(compositions), radii=radii)
    delta = desc["delta_pct"].to_numpy(float)
    omega = desc["omega"].to_numpy(float)
    d_h = desc["dHmix_kJmol"].to_numpy(float)
    vec = desc["vec"].to_numpy(float)
    lo, hi = DHMIX_RANGE_KJMOL
    with np.errstate(invalid="ignore"):
        single = (delta <= DELTA_MAX_PCT) & (omega >= OMEGA_MIN) & (d_h >= lo) & (d_h <= hi)
    default_widths = RulesSource()._widths()
    scores = _soft_scores(desc, default_widths)
    soft = np.nan_to_num(np.stack(list(scores.values()), axis=1), nan=0.0).min(axis=1)
    vec_class = np.where(vec >= VEC_FCC_MIN, "FCC", np.where(vec < VEC_BCC_MAX, "BCC", "FCC+BCC"))
    return {
        "single_phase": single.astype(int),
        "fcc": (vec >= 0.5 * (VEC_FCC_MIN + VEC_BCC_MAX)).astype(int),
        "vec_class": vec_class,
        "single_phase_score": soft,
        "fcc_score": vec,
    }
