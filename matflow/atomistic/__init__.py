"""CHGNet atomistics: relaxation, MD with kill-safe restart, trajectory analysis, a faster CHGNet
inference path and phonon-based vibrational thermodynamics.

Heavy modules (torch, chgnet, phonopy) load on first use of the submodules, not on import of this
package.
"""

from __future__ import annotations

__all__ = ["analysis", "fast", "md", "model", "phonons", "relax"]
