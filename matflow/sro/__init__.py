"""Chemical short-range order (SRO) in alloys on a lattice.

Warren–Cowley parameters with their significance against a random solution of the same cell,
first-shell chemical motifs (Sheriff, Cao, Smidt & Freitas, PNAS 2024), the SRO decay length,
readers for MD/MC snapshots and plots. Pair models and Monte Carlo live in their own modules.
"""

from __future__ import annotations

from matflow.sro.analyze import analyze_configuration, analyze_files, format_table
from matflow.sro.lattice import (
    KNOWN_LATTICES,
    DisorderedStructureError,
    LatticeError,
    ShellCountError,
    ShellNeighbours,
    SROInputError,
    ideal_supercell,
    shell_counts,
    shell_distances,
    shell_neighbours,
)
from matflow.sro.motifs import (
    MotifStats,
    motif_distribution,
    motif_kl,
    random_motif_distribution,
    sro_length_scale,
)
from matflow.sro.readers import ConfigurationReadError, read_configurations
from matflow.sro.warren_cowley import (
    WarrenCowley,
    types_and_species,
    warren_cowley,
    warren_cowley_from_types,
)

__all__ = [
    "KNOWN_LATTICES",
    "ConfigurationReadError",
    "DisorderedStructureError",
    "LatticeError",
    "MotifStats",
    "SROInputError",
    "ShellCountError",
    "ShellNeighbours",
    "WarrenCowley",
    "analyze_configuration",
    "analyze_files",
    "format_table",
    "ideal_supercell",
    "motif_distribution",
    "motif_kl",
    "random_motif_distribution",
    "read_configurations",
    "shell_counts",
    "shell_distances",
    "shell_neighbours",
    "sro_length_scale",
    "types_and_species",
    "warren_cowley",
    "warren_cowley_from_types",
]
