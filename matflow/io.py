"""Read crystal structures from files and validate them before any expensive step.

Every error names the file (and frame, for multi-frame files) and says why it was refused, so that a
lab user can fix the input. Batch reading never stops on one bad file: good structures and per-file
failures are returned side by side.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.core import Element, Structure

__all__ = [
    "StructureInputError",
    "ValidationLimits",
    "LoadedStructure",
    "FailedInput",
    "BatchRead",
    "expand_inputs",
    "read_structure_file",
    "validate_structure",
    "read_structures",
    "STRUCTURE_SUFFIXES",
]

CIF_SUFFIXES = {".cif", ".mcif"}
POSCAR_SUFFIXES = {".vasp", ".poscar"}
XYZ_SUFFIXES = {".xyz", ".extxyz"}
JSON_SUFFIXES = {".json"}
STRUCTURE_SUFFIXES = CIF_SUFFIXES | POSCAR_SUFFIXES | XYZ_SUFFIXES | JSON_SUFFIXES
POSCAR_NAME = re.compile(r"^(POSCAR|CONTCAR)", re.IGNORECASE)


class StructureInputError(ValueError):
    """A structure input that matflow refuses, with the file it came from and the reason."""

    def __init__(self, source: str | os.PathLike, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class ValidationLimits:
    """Physical sanity limits applied to every structure.

    min_distance_A: closest allowed interatomic distance (Å); closer atoms mean a broken file.
    density range (g/cm³): outside it the lattice units or the cell are almost surely wrong
    (the densest element, Os, is 22.6 g/cm³; aerogels reach ~0.01 g/cm³).
    """

    min_distance_A: float = 0.5
    min_density_g_cm3: float = 0.01
    max_density_g_cm3: float = 30.0
    allow_partial_occupancy: bool = False


@dataclass
class LoadedStructure:
    source: str
    structure: Structure


@dataclass
class FailedInput:
    source: str
    reason: str


@dataclass
class BatchRead:
    """Result of reading many inputs: good structures and failures, in input order."""

    structures: list[LoadedStructure] = field(default_factory=list)
    failures: list[FailedInput] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _is_structure_file(path: Path) -> bool:
    return path.suffix.lower() in STRUCTURE_SUFFIXES or bool(POSCAR_NAME.match(path.name))


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[FailedInput]]:
    """Expand files, directories (recursively) and glob patterns into a sorted, de-duplicated list.

    An input that matches nothing is reported as a failure rather than silently skipped.
    """
    paths: list[Path] = []
    failures: list[FailedInput] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if (p.is_file() or p.is_symlink()) and _is_structure_file(p))
            if not found:
                failures.append(FailedInput(text, "directory holds no structure files "
                                            f"(looked for {', '.join(sorted(STRUCTURE_SUFFIXES))}, POSCAR*, CONTCAR*)"))
            paths.extend(found)
        elif path.exists() or os.path.islink(text):
            paths.append(path)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                failures.append(FailedInput(text, "glob pattern matched no files"))
            paths.extend(found)
        else:
            failures.append(FailedInput(text, "file not found"))
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, failures


_UNKNOWN_ELEMENT = re.compile(r"(?:'|\")?([A-Z][a-z]{0,2}|[A-Za-z0-9]+)(?:'|\")? is not a valid Element|"
                              r"Unknown element[:\s]+'?([A-Za-z0-9]+)|invalid.*symbol[:\s]+'?([A-Za-z0-9]+)",
                              re.IGNORECASE)


def _check_raw_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise StructureInputError(path, "is a directory, not a structure file") from exc
    except OSError as exc:
        raise StructureInputError(path, f"unreadable file ({exc.strerror or exc})") from exc
    if not raw.strip():
        raise StructureInputError(path, "empty file")
    if b"\x00" in raw[:8192]:
        raise StructureInputError(path, "binary file, not a text structure format")
    return raw


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CIF_SUFFIXES:
        return "cif"
    if suffix in XYZ_SUFFIXES:
        return "extxyz"
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in POSCAR_SUFFIXES or POSCAR_NAME.match(path.name):
        return "poscar"
    raise StructureInputError(
        path,
        f"unknown structure format '{suffix or path.name}' "
        "(expected .cif, POSCAR/CONTCAR/.vasp, .xyz/.extxyz or pymatgen .json)",
    )


def _unknown_symbols(symbols: Iterable[str]) -> list[str]:
    bad = []
    for sym in symbols:
        if not Element.is_valid_symbol(sym) and sym not in bad:
            bad.append(sym)
    return bad


def _parse_cif(path: Path, text: str) -> list[Structure]:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text, occupancy_tolerance=1.0)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            reasons = " ".join(str(w.message) for w in caught)
            _raise_element_error(path, f"{exc} {reasons}")
            raise StructureInputError(path, f"malformed CIF ({_first_line(exc)})") from exc
    if not structures:
        raise StructureInputError(path, "malformed CIF (no structure could be parsed)")
    return structures


def _parse_poscar(path: Path, text: str) -> list[Structure]:
    from pymatgen.io.vasp import Poscar

    lines = text.splitlines()
    if len(lines) >= 6:
        tokens = lines[5].split()
        if tokens and all(not t.lstrip("-").isdigit() for t in tokens):
            bad = _unknown_symbols(tokens)
            if bad:
                raise StructureInputError(path, f"unknown element symbol(s) {', '.join(map(repr, bad))}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poscar = Poscar.from_str(text, read_velocities=False)
    except Exception as exc:
        _raise_element_error(path, str(exc))
        raise StructureInputError(path, f"malformed POSCAR ({_first_line(exc)})") from exc
    return [poscar.structure]


def _parse_extxyz(path: Path) -> list[Structure]:
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        frames = ase_read(str(path), index=":", format="extxyz")
    except Exception as exc:
        _raise_element_error(path, str(exc))
        raise StructureInputError(path, f"malformed extxyz ({_first_line(exc)})") from exc
    out = []
    for i, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise StructureInputError(f"{path}@{i}" if len(frames) > 1 else path, "empty structure (no atoms)")
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise StructureInputError(
                f"{path}@{i}" if len(frames) > 1 else path,
                "extxyz frame has no periodic 3-D lattice (needs Lattice=\"...\" and pbc=\"T T T\")",
            )
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def _parse_json(path: Path, text: str) -> list[Structure]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructureInputError(path, f"malformed JSON (line {exc.lineno}: {exc.msg})") from exc
    items = data if isinstance(data, list) else [data]
    out = []
    for i, item in enumerate(items):
        where = f"{path}@{i}" if isinstance(data, list) else path
        if isinstance(item, dict) and "structure" in item and "lattice" not in item:
            item = item["structure"]
        if not isinstance(item, dict) or "lattice" not in item or "sites" not in item:
            raise StructureInputError(where, "malformed JSON (not a pymatgen Structure dict: needs 'lattice' and 'sites')")
        symbols = [sp.get("element", "") for site in item["sites"] for sp in site.get("species", [])
                   if isinstance(sp, dict)]
        bad = _unknown_symbols(s for s in symbols if s)
        if bad:
            raise StructureInputError(where, f"unknown element symbol(s) {', '.join(map(repr, bad))}")
        if not item["sites"]:
            raise StructureInputError(where, "empty structure (no atoms)")
        try:
            out.append(Structure.from_dict(item))
        except Exception as exc:
            _raise_element_error(where, str(exc))
            raise StructureInputError(where, f"malformed JSON structure ({_first_line(exc)})") from exc
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _raise_element_error(source: str | os.PathLike, message: str) -> None:
    match = _UNKNOWN_ELEMENT.search(message)
    if match:
        symbol = next(g for g in match.groups() if g)
        symbol = re.match(r"[A-Za-z]+", symbol).group(0) if re.match(r"[A-Za-z]+", symbol) else symbol
        raise StructureInputError(source, f"unknown element symbol(s) '{symbol}'")


def read_structure_file(path: str | os.PathLike) -> list[Structure]:
    """Parse one file into one or more structures (several for multi-frame extxyz, JSON lists, CIF blocks).

    Raises StructureInputError naming the file and the reason; does not validate physics
    (see validate_structure).
    """
    path = Path(path)
    fmt = _file_format(path)
    raw = _check_raw_file(path)
    text = raw.decode("utf-8", errors="replace")
    if fmt == "cif":
        if "_atom_site" not in text and "data_" not in text:
            raise StructureInputError(path, "malformed CIF (no data_ block or _atom_site loop)")
        return _parse_cif(path, text)
    if fmt == "poscar":
        return _parse_poscar(path, text)
    if fmt == "extxyz":
        return _parse_extxyz(path)
    return _parse_json(path, text)


def validate_structure(
    structure: Structure, source: str | os.PathLike, limits: ValidationLimits | None = None
) -> Structure:
    """Check that a structure is physically sensible; raise StructureInputError with the reason if not."""
    limits = limits or ValidationLimits()
    if len(structure) == 0:
        raise StructureInputError(source, "empty structure (no atoms)")
    symbols = [getattr(sp, "symbol", str(sp)) for sp in structure.composition.elements]
    bad = [sym for sym in symbols if not Element.is_valid_symbol(sym)]
    if bad:
        raise StructureInputError(source, f"unknown element symbol(s) {', '.join(map(repr, bad))}")
    if not structure.is_ordered and not limits.allow_partial_occupancy:
        disordered = [i for i, site in enumerate(structure) if not site.is_ordered]
        raise StructureInputError(
            source,
            f"partial occupancy on {len(disordered)} site(s) (first: site {disordered[0]}, "
            f"{structure[disordered[0]].species}); this step needs an ordered structure",
        )
    volume = structure.volume
    if not volume > 1e-6:
        raise StructureInputError(source, f"degenerate lattice (cell volume {volume:.3g} Å³)")
    density = float(structure.density)
    if not (limits.min_density_g_cm3 <= density <= limits.max_density_g_cm3):
        raise StructureInputError(
            source,
            f"absurd density {density:.4g} g/cm³ (allowed {limits.min_density_g_cm3}–"
            f"{limits.max_density_g_cm3}); check the lattice units and the cell",
        )
    if len(structure) > 1 or min(structure.lattice.abc) < limits.min_distance_A:
        centers, neighbors, _images, distances = structure.get_neighbor_list(
            limits.min_distance_A, exclude_self=True
        )
        if len(distances):
            k = int(distances.argmin())
            raise StructureInputError(
                source,
                f"atoms too close: sites {int(centers[k])} and {int(neighbors[k])} are "
                f"{float(distances[k]):.3f} Å apart (minimum {limits.min_distance_A} Å)",
            )
    return structure


def read_structures(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    limits: ValidationLimits | None = None,
) -> BatchRead:
    """Read and validate files, directories and globs; never stops on a bad file."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths, failures = expand_inputs(inputs)
    batch = BatchRead(failures=list(failures))
    for path in paths:
        try:
            structures = read_structure_file(path)
        except StructureInputError as exc:
            batch.failures.append(FailedInput(exc.source, exc.reason))
            continue
        except Exception as exc:  # a parser bug must not kill the batch
            batch.failures.append(FailedInput(str(path), f"could not parse ({_first_line(exc)})"))
            continue
        multi = len(structures) > 1
        for i, structure in enumerate(structures):
            source = f"{path}@{i}" if multi else str(path)
            try:
                validate_structure(structure, source, limits)
            except StructureInputError as exc:
                batch.failures.append(FailedInput(exc.source, exc.reason))
                continue
            batch.structures.append(LoadedStructure(source, structure))
    return batch
