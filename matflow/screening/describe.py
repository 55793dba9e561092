"""One alloy, all its evidence: descriptors, each source's masses, belief and plausibility, the
fused result and its conflict, and the measured phase when the alloy is in the data.

This is what ``matflow hea describe`` prints; it uses the same fitted fusion as ``screen``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from matflow.evidence import belief, pignistic, plausibility
from matflow.screening.composition import composition_key, parse_composition
from matflow.screening.phases import N_FOCAL, PHASES, SOLID_SOLUTION


def _focal_name(mask: int) -> str:
    members = [p for bit, p in enumerate(PHASES) if mask >> bit & 1]
    return "Ω" if len(members) == len(PHASES) else "{" + ",".join(members) + "}"


def _summary(m: np.ndarray) -> dict[str, Any]:
    """Masses on non-empty focal sets, Bel/Pl of a single-phase solid solution, pignistic P."""
    return {
        "masses": {_focal_name(mask): float(m[mask]) for mask in range(1, N_FOCAL) if m[mask] > 1e-6},
        "bel_SS": float(belief(m, SOLID_SOLUTION)),
        "pl_SS": float(plausibility(m, SOLID_SOLUTION)),
        "pignistic": dict(zip(PHASES, (float(p) for p in pignistic(m)), strict=True)),
    }


def describe_composition(composition: str | Mapping[str, float], fusion=None) -> dict[str, Any]:
    """Descriptors, each source's evidence (undiscounted, with its fitted reliability and what it
    saw), the fused masses with the conflict K, and the measured phase if known."""
    from matflow.screening.data import known_alloys_lookup, load_phase_labels
    from matflow.screening.descriptors import describe
    from matflow.screening.screen import default_fusion

    comp = parse_composition(composition)
    fusion = fusion if fusion is not None else default_fusion()
    fused, conflict, per_source = fusion.masses([comp])
    reliabilities = fusion.reliabilities_
    sources = {}
    for source in fusion.sources_:
        entry = _summary(per_source[source.name][0])
        entry["reliability"] = float(reliabilities.get(source.name, 1.0))
        try:
            entry["explain"] = source.explain(comp)
        except Exception as exc:  # an explanation must not hide the numbers
            entry["explain"] = {"error": f"{type(exc).__name__}: {exc}"}
        sources[source.name] = entry
    known = known_alloys_lookup(load_phase_labels())(comp)
    return {
        "composition": composition_key(comp),
        "descriptors": describe(comp),
        "sources": sources,
        "fused": {**_summary(fused[0]), "conflict": float(conflict[0]), "rule": fusion.rule},
        "known_phase": known[0] if known else None,
        "reference": known[1] if known else None,
    }


def description_text(info: Mapping[str, Any]) -> str:
    """Plain-text form of ``describe_composition`` for the terminal."""
    d = info["descriptors"]
    lines = [
        info["composition"],
        f"  δ {d['delta_pct']:.2f} %   ΔH_mix {d['dHmix_kJmol']:.2f} kJ/mol   "
        f"ΔS_mix {d['dSmix_JmolK']:.2f} J/(mol·K)   Ω {d['omega']:.2f}   VEC {d['vec']:.2f}   "
        f"T_m {d['Tm_K']:.0f} K",
        f"  {'source':<17}{'reliability':>11}{'Bel(SS)':>9}{'Pl(SS)':>8}  "
        + "  ".join(f"P({p})" for p in PHASES) + "  masses",
    ]
    rows = [(name, s) for name, s in info["sources"].items()] + [("fused", info["fused"])]
    for name, s in rows:
        rel = f"{s['reliability']:.2f}" if "reliability" in s else ""
        masses = ", ".join(f"{k} {v:.2f}" for k, v in s["masses"].items())
        lines.append(f"  {name:<17}{rel:>11}{s['bel_SS']:>9.2f}{s['pl_SS']:>8.2f}  "
                     + "  ".join(f"{s['pignistic'][p]:>{len(p) + 3}.2f}" for p in PHASES)
                     + f"  {masses}")
    lines.append(f"  conflict between sources K = {info['fused']['conflict']:.3f} "
                 f"({info['fused']['rule']}'s rule)")
    if info.get("known_phase"):
        lines.append(f"  measured: {info['known_phase']} ({info['reference']})")
    else:
        lines.append("  not in the bundled experimental data")
    lines.append("  Bel(SS) is the support that certainly points to a single-phase solid solution; "
                 "Pl(SS) what does not contradict it.")
    return "\n".join(lines)
