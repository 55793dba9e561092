"""Structure helpers shared by every step: a stable content hash used as the key of feature tables."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from pymatgen.core import Composition, Structure


def structure_hash(structure: Structure, decimals: int = 5) -> str:
    """A stable 16-hex-digit hash of a structure's lattice, species and wrapped fractional coordinates.

    Independent of site order and of floating-point noise below 10^-decimals, so the same crystal
    read from a CIF or a POSCAR gets the same key (and the same cache entry).
    """
    lattice = np.round(structure.lattice.matrix, decimals) + 0.0
    frac = np.mod(np.round(structure.frac_coords, decimals), 1.0)
    frac = np.round(frac, decimals) % 1.0 + 0.0
    species = [site.species.formula if not site.is_ordered else site.specie.symbol
               if hasattr(site.specie, "symbol") else str(site.specie) for site in structure]
    rows = sorted((sp, *map(float, f)) for sp, f in zip(species, frac, strict=True))
    payload = json.dumps({"lattice": lattice.tolist(), "sites": rows}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def composition_hash(composition: Composition, decimals: int = 6) -> str:
    """Stable hash of a composition's normalised amounts (for composition-only tables)."""
    frac = composition.fractional_composition
    rows = sorted((el.symbol, round(float(amt), decimals)) for el, amt in frac.items())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
