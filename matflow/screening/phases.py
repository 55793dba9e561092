"""The frame of discernment for alloy phase: which phase an as-made alloy shows.

Focal sets are bitmasks over PHASES in this order, so a mass function over the frame is a
length-16 vector indexed by the mask (index 0 is the empty set and always carries 0 mass).
"""

from __future__ import annotations

PHASES: tuple[str, ...] = ("FCC", "BCC", "HCP", "MP")
"""Single-phase fcc, bcc, hcp solid solutions, and multi-phase (anything else, intermetallics included)."""

FCC, BCC, HCP, MP = 1, 2, 4, 8
SOLID_SOLUTION = FCC | BCC | HCP
"""The hypothesis 'single-phase solid solution', whatever its lattice."""
OMEGA = FCC | BCC | HCP | MP
"""The whole frame: mass here is a source's ignorance."""
N_FOCAL = 1 << len(PHASES)

PHASE_MASKS: dict[str, int] = {"FCC": FCC, "BCC": BCC, "HCP": HCP, "MP": MP}


def phase_mask(label: str) -> int:
    """Bitmask of a phase label; accepts the data sets' spellings ('multi-phase', 'fcc')."""
    key = label.strip().upper().replace("MULTI-PHASE", "MP").replace("MULTIPHASE", "MP")
    if key not in PHASE_MASKS:
        raise ValueError(f"unknown phase label {label!r}: expected one of {', '.join(PHASES)}")
    return PHASE_MASKS[key]
