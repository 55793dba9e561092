"""Read atomic configurations for SRO analysis: MD/MC snapshots and ordered crystal files.

SRO is measured on large cells (thousands of atoms) that come from LAMMPS dumps, from
``matflow md`` trajectories (``trajectory.extxyz``, ``relax.traj``) or from crystal files. The
readers return ``ase.Atoms`` (cheap for 10^5 atoms) and refuse, naming the file and the reason,
what would give a wrong α: a missing or unreadable file, non-finite coordinates or cells, and
partial occupancy (CIF/POSCAR go through ``matflow.io``, which knows those formats' pitfalls).

LAMMPS types carry no element: without ``type_map`` each type keeps ASE's placeholder element
(type k -> atomic number k) and is labelled "type k" in results; ``type_map={1: "Cr", ...}`` names
them. The type order is kept in ``atoms.info["species_order"]`` so that α rows follow the types.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from matflow.io import POSCAR_NAME, StructureInputError, read_structure_file
from matflow.sro.lattice import DisorderedStructureError

__all__ = ["read_configurations", "configuration_format", "ConfigurationReadError"]

_LAMMPS_SUFFIXES = {".dump", ".lammpstrj", ".lammpsdump"}
_ASE_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj"}
_PYMATGEN_SUFFIXES = {".cif", ".vasp", ".poscar", ".json"}


class ConfigurationReadError(StructureInputError):
    """A configuration file that cannot be used for SRO; names the file and the reason."""


def configuration_format(path: str | os.PathLike) -> str:
    """Format name for ``path``: "lammps-dump-text", "extxyz", "traj" or "pymatgen" (CIF/POSCAR/JSON).

    A ``.gz`` ending is looked through for LAMMPS dumps and extxyz.
    """
    path = Path(path)
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    suffix = Path(stem).suffix
    if suffix in _LAMMPS_SUFFIXES or stem.startswith("dump.") or stem.endswith(".dump"):
        return "lammps-dump-text"
    if suffix in _ASE_FORMATS and not (name.endswith(".gz") and suffix == ".traj"):
        return _ASE_FORMATS[suffix]
    if not name.endswith(".gz") and (suffix in _PYMATGEN_SUFFIXES or POSCAR_NAME.match(path.name)):
        return "pymatgen"
    raise ConfigurationReadError(
        path,
        f"unknown configuration format '{path.name}' (expected a LAMMPS text dump .dump/.lammpstrj"
        " [.gz], .xyz/.extxyz [.gz], ASE .traj, .cif, POSCAR/CONTCAR/.vasp or pymatgen .json)",
    )


def _select(frames: list, index, path: Path) -> list:
    if isinstance(index, str):
        key = index.strip().lower()
        if key in (":", "all"):
            return frames
        if key == "last":
            return frames[-1:]
        if key == "first":
            return frames[:1]
        try:
            if ":" in key:
                parts = [int(p) if p else None for p in key.split(":")]
                return frames[slice(*parts)]
            index = int(key)
        except ValueError as exc:
            raise ConfigurationReadError(
                path, f"frame index {index!r} is not an integer, a slice, 'first', 'last' or ':'"
            ) from exc
    if isinstance(index, slice):
        return frames[index]
    try:
        return [frames[int(index)]]
    except IndexError as exc:
        raise ConfigurationReadError(
            path, f"frame {index} requested, the file has {len(frames)} frame(s)"
        ) from exc


def _ase_index(index) -> str | int | slice:
    """Pass simple selections to ASE so that a long trajectory is not parsed in full."""
    if isinstance(index, str) and index.strip().lower() == "last":
        return -1
    if isinstance(index, str) and index.strip().lower() == "first":
        return 0
    if isinstance(index, str) and index.strip().lower() == "all":
        return ":"
    return index


def _apply_type_map(atoms: Atoms, type_map: dict[int, str] | None, path: Path, k: int) -> None:
    if "type" not in atoms.arrays:
        if type_map:
            raise ConfigurationReadError(path, f"frame {k}: type_map given but no type column")
        return
    types = np.asarray(atoms.arrays["type"], dtype=int)
    present = sorted(set(types.tolist()))
    if type_map is None:
        # ASE already set atomic number = type; keep it as a placeholder and label it.
        if present[0] < 1 or present[-1] >= len(chemical_symbols):
            raise ConfigurationReadError(
                path, f"frame {k}: LAMMPS types {present[0]}..{present[-1]} need a type_map"
            )
        atoms.numbers = types
        symbols = {t: chemical_symbols[t] for t in present}
        atoms.info["type_labels"] = {symbols[t]: f"type {t}" for t in present}
        atoms.info["species_order"] = [symbols[t] for t in present]
        return
    missing = [t for t in present if t not in type_map]
    if missing:
        raise ConfigurationReadError(
            path, f"frame {k}: LAMMPS type(s) {missing} not in type_map {dict(type_map)}"
        )
    try:
        atoms.set_chemical_symbols([type_map[t] for t in types.tolist()])
    except (KeyError, ValueError) as exc:
        raise ConfigurationReadError(path, f"type_map names an unknown element ({exc})") from exc
    order: list[str] = []
    for t in present:
        if type_map[t] not in order:
            order.append(type_map[t])
    atoms.info["species_order"] = order


def _check_frame(atoms: Atoms, path: Path, k: int) -> None:
    if len(atoms) == 0:
        raise ConfigurationReadError(path, f"frame {k}: no atoms")
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.isfinite(cell).all():
        raise ConfigurationReadError(path, f"frame {k}: non-finite cell")
    bad = ~np.isfinite(atoms.positions).all(axis=1)
    if bad.any():
        raise ConfigurationReadError(
            path, f"frame {k}: non-finite coordinates on atom {int(np.argmax(bad))}"
        )


def read_configurations(
    path: str | os.PathLike,
    *,
    index: str | int | slice = ":",
    type_map: dict[int, str] | None = None,
) -> list[Atoms]:
    """Frames of one configuration file as ``ase.Atoms``.

    ``index``: ":" (all), "last", "first", an integer or a slice ("0:10:2"). ``type_map`` maps LAMMPS
    types to elements. Raises ConfigurationReadError (a ValueError) naming the file and the reason;
    DisorderedStructureError for partial occupancy.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigurationReadError(path, "file not found")
    if path.is_dir():
        raise ConfigurationReadError(path, "is a directory, not a configuration file")
    fmt = configuration_format(path)
    if path.stat().st_size == 0:
        raise ConfigurationReadError(path, "empty file")
    if fmt == "pymatgen":
        frames = _read_pymatgen(path)
        frames = _select(frames, index, path)
    else:
        from ase.io import read

        try:
            result = read(str(path), index=_ase_index(index), format=fmt)
        except StructureInputError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()
            reason = text[0] if text else type(exc).__name__
            raise ConfigurationReadError(path, f"malformed {fmt} file ({reason})") from exc
        frames = result if isinstance(result, list) else [result]
    if not frames:
        raise ConfigurationReadError(path, f"no frames selected by index {index!r}")
    for k, atoms in enumerate(frames):
        _check_frame(atoms, path, k)
        if fmt == "lammps-dump-text":
            _apply_type_map(atoms, type_map, path, k)
        atoms.info["source"] = str(path)
    return frames


def _read_pymatgen(path: Path) -> list[Atoms]:
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    structures = read_structure_file(path)
    for k, structure in enumerate(structures):
        if not structure.is_ordered:
            bad = next(n for n, site in enumerate(structure) if not site.is_ordered)
            source = f"{path}@{k}" if len(structures) > 1 else str(path)
            raise DisorderedStructureError(
                f"{source}: partial occupancy on site {bad} ({structure[bad].species}); "
                "SRO needs one species per site (give an ordered supercell)"
            )
        frames.append(AseAtomsAdaptor.get_atoms(structure))
    return frames
