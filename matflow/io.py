"""Read crystal structures from files and validate them before any expensive step.

Every error names the file (and frame or list index, for multi-structure files) and says why it was
refused, so that a lab user can fix the input. Batch reading never stops on one bad file or one bad
item: good structures and per-item failures are returned side by side.

Checks run at the door, before spglib, matminer or CHGNet see a structure: a NaN coordinate or an
absurd cell can crash native code later (spglib, the neighbour search), so the readers refuse
non-finite numbers and unknown species themselves, and ``validate_structure`` applies the physical
limits (size, lattice lengths, coordinates, occupancy, density, interatomic distances).
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import DummySpecies, Element, Structure

__all__ = [
    "StructureInputError",
    "ValidationLimits",
    "LoadedStructure",
    "FailedInput",
    "BatchRead",
    "expand_inputs",
    "read_structure_file",
    "read_structure_items",
    "validate_structure",
    "read_structures",
    "STRUCTURE_SUFFIXES",
    "MAX_SITES_ENV",
    "DEFAULT_MAX_SITES",
]

CIF_SUFFIXES = {".cif", ".mcif"}
POSCAR_SUFFIXES = {".vasp", ".poscar"}
XYZ_SUFFIXES = {".xyz", ".extxyz"}
JSON_SUFFIXES = {".json"}
STRUCTURE_SUFFIXES = CIF_SUFFIXES | POSCAR_SUFFIXES | XYZ_SUFFIXES | JSON_SUFFIXES
POSCAR_NAME = re.compile(r"^(POSCAR|CONTCAR)", re.IGNORECASE)

MAX_SITES_ENV = "MATFLOW_MAX_SITES"
DEFAULT_MAX_SITES = 1000
_VECTOR_NAMES = ("a", "b", "c")
_ISOTOPES = {"D": "H", "T": "H"}
# Cells below this volume (Å³) are numerically singular: fractional coordinates cannot be computed.
_MIN_VOLUME_A3 = 1e-6
# Periodic images searched for the closest-pair check; beyond this the cell is refused, not searched.
_MAX_IMAGE_POINTS = 30_000_000


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
    min/max_density_g_cm3: outside this range the lattice units or the cell are almost surely wrong
    (the densest element, Os, is 22.6 g/cm³; aerogels reach ~0.01 g/cm³).
    allow_partial_occupancy: accept disordered sites (for steps such as the ``composition`` preset
    that handle them); every other check still applies.
    max_sites: largest cell accepted, in sites (default 1000). Featurizers, the symmetry search and
    CHGNet grow faster than linearly with the cell, so a larger cell is usually an accidental
    supercell; raise it with the ``MATFLOW_MAX_SITES`` environment variable (read by
    ``ValidationLimits.from_env``) or by passing ``max_sites=`` (the CLI's ``--max-sites``).
    min/max_lattice_length_A: lattice vector lengths outside 0.1–1e4 Å are unit or typing errors.
    max_abs_fractional_coord: a fractional coordinate beyond ±1000 (an atom a thousand cells away)
    is a unit or Direct/Cartesian mix-up, and wrapping it would lose precision.
    """

    min_distance_A: float = 0.5
    min_density_g_cm3: float = 0.01
    max_density_g_cm3: float = 30.0
    allow_partial_occupancy: bool = False
    max_sites: int = DEFAULT_MAX_SITES
    min_lattice_length_A: float = 0.1
    max_lattice_length_A: float = 1e4
    max_abs_fractional_coord: float = 1e3

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_sites, bool)
            or not isinstance(self.max_sites, int | np.integer)
            or self.max_sites < 1
        ):
            raise ValueError(
                f"max_sites must be a whole number of at least 1, got {self.max_sites!r}"
            )

    @classmethod
    def from_env(cls, **overrides) -> ValidationLimits:
        """Limits with ``max_sites`` taken from ``MATFLOW_MAX_SITES`` when set; keyword overrides win.

        This is the constructor for the default limits of the readers: ``ValidationLimits()`` alone
        ignores the environment, so that code which builds limits explicitly stays deterministic.
        """
        if "max_sites" not in overrides:
            text = os.environ.get(MAX_SITES_ENV, "").strip()
            if text:
                try:
                    value = int(text)
                except ValueError:
                    value = 0
                if value < 1:
                    raise ValueError(
                        f"{MAX_SITES_ENV} must be a whole number of at least 1, got {text!r}"
                    )
                overrides["max_sites"] = value
        return cls(**overrides)


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
            found = sorted(
                p
                for p in path.rglob("*")
                if (p.is_file() or p.is_symlink()) and _is_structure_file(p)
            )
            if not found:
                failures.append(
                    FailedInput(
                        text,
                        "directory holds no structure files "
                        f"(looked for {', '.join(sorted(STRUCTURE_SUFFIXES))}, POSCAR*, CONTCAR*)",
                    )
                )
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


_UNKNOWN_ELEMENT = re.compile(
    r"(?:'|\")?([A-Z][a-z]{0,2}|[A-Za-z0-9]+)(?:'|\")? is not a valid Element|"
    r"Unknown element[:\s]+'?([A-Za-z0-9]+)|invalid.*symbol[:\s]+'?([A-Za-z0-9]+)",
    re.IGNORECASE,
)


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


# ----------------------------------------------------------------------------------------------
# Checks shared by every reader
# ----------------------------------------------------------------------------------------------


def _symbols_reason(symbols: Iterable[str]) -> str | None:
    """Why a list of element symbols as written in a file is refused, or None if all are elements.

    'X' (a dummy species) and the isotope symbols 'D' and 'T' are refused: featurizers and
    potentials are defined per element, and pymatgen would silently turn D into an odd hydrogen.
    """
    unknown: list[str] = []
    isotopes: list[str] = []
    for sym in symbols:
        sym = str(sym)
        if sym in _ISOTOPES:
            if sym not in isotopes:
                isotopes.append(sym)
        elif not Element.is_valid_symbol(sym) and sym not in unknown:
            unknown.append(sym)
    if unknown:
        dummy = any(re.fullmatch(r"X[\d.+-]*", s) for s in unknown)
        hint = " (a dummy species, not an element)" if dummy else ""
        return f"unknown element symbol(s) {', '.join(map(repr, unknown))}{hint}"
    if isotopes:
        return (
            f"isotope symbol(s) {', '.join(map(repr, isotopes))} are not elements; "
            "write them as H (features and potentials are defined per element)"
        )
    return None


def _species_symbol(species) -> str:
    """The symbol of a pymatgen species as a reader should judge it ('D' stays 'D', dummies 'X')."""
    if isinstance(species, DummySpecies):
        return str(species.symbol)
    element = getattr(species, "element", species)
    if isinstance(element, Element):
        return element.name
    return str(getattr(species, "symbol", species))


def _nonfinite_kind(values: np.ndarray) -> str:
    return "NaN" if np.isnan(values).any() else "inf or overflow"


def _check_integrity(structure: Structure, source: str | os.PathLike) -> None:
    """Refuse what no later step may see: no atoms, unknown species, bad occupancies, non-finite
    or singular lattices and non-finite coordinates. Independent of any limits."""
    if len(structure) == 0:
        raise StructureInputError(source, "empty structure (no atoms)")
    symbols: list[str] = []
    for i, site in enumerate(structure):
        species = site.species
        if len(species) == 0:
            raise StructureInputError(
                source, f"site {i} has no species (zero or missing occupancy)"
            )
        total = 0.0
        for sp, occu in species.items():
            occu = float(occu)
            if not math.isfinite(occu) or occu <= 0:
                raise StructureInputError(
                    source, f"occupancy {occu!r} on site {i} (must be between 0 and 1)"
                )
            total += occu
            sym = _species_symbol(sp)
            if sym not in symbols:
                symbols.append(sym)
        if total > 1.0 + 1e-6:
            raise StructureInputError(
                source, f"occupancies on site {i} sum to {total:.4g} (more than 1)"
            )
    reason = _symbols_reason(symbols)
    if reason:
        raise StructureInputError(source, reason)
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    _check_lattice_matrix(matrix, source)
    frac = np.asarray(structure.frac_coords, dtype=float)
    with np.errstate(all="ignore"):
        cart = frac @ matrix
    for coords in (frac, cart):
        bad_rows = ~np.isfinite(coords).all(axis=1)
        if bad_rows.any():
            i = int(np.argmax(bad_rows))
            raise StructureInputError(
                source,
                f"non-finite coordinates ({_nonfinite_kind(coords[i])}) on site {i} "
                f"({structure[i].species_string})",
            )


def _check_lattice_matrix(matrix: np.ndarray, source: str | os.PathLike) -> None:
    """Refuse a lattice with NaN/inf entries, an overflowing volume or (nearly) zero volume."""
    if matrix.shape != (3, 3):
        raise StructureInputError(source, f"lattice is not a 3x3 matrix (shape {matrix.shape})")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise StructureInputError(
            source,
            f"non-finite lattice ({_nonfinite_kind(matrix[k])} in lattice vector {_VECTOR_NAMES[k]})",
        )
    with np.errstate(all="ignore"):
        volume = float(np.linalg.det(matrix))
    if not math.isfinite(volume):
        raise StructureInputError(
            source, "absurd lattice (cell volume overflows: the lattice numbers are too large)"
        )
    if abs(volume) < _MIN_VOLUME_A3:
        raise StructureInputError(
            source,
            f"degenerate lattice (cell volume {abs(volume):.3g} Å³: the lattice vectors are coplanar or zero)",
        )


# ----------------------------------------------------------------------------------------------
# Per-format parsers. Each returns one entry per item in the file: a Structure, or an _ItemError
# with the reason that item was refused. Whole-file problems raise StructureInputError.
# ----------------------------------------------------------------------------------------------


class _ItemError(Exception):
    """One item of a multi-structure file (CIF block, extxyz frame, JSON list entry) is unusable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _element_reason(message: str) -> str | None:
    match = _UNKNOWN_ELEMENT.search(message)
    if not match:
        return None
    symbol = next(g for g in match.groups() if g)
    letters = re.match(r"[A-Za-z]+", symbol)
    return f"unknown element symbol(s) '{letters.group(0) if letters else symbol}'"


def _split_cif_blocks(text: str) -> list[tuple[int, str]]:
    """Split CIF text at its data_ headers (outside ;-delimited text fields).

    Returns (line number of the data_ header, block text) pairs.
    """
    blocks: list[tuple[int, list[str]]] = []
    in_text_field = False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.startswith(";"):
            in_text_field = not in_text_field
        elif not in_text_field and re.match(r"\s*data_", line, re.IGNORECASE):
            blocks.append((number, [line]))
            continue
        if blocks:
            blocks[-1][1].append(line)
    return [(number, "".join(lines)) for number, lines in blocks]


_CIF_COORDS = (
    ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"),
    ("_atom_site_cartn_x", "_atom_site_cartn_y", "_atom_site_cartn_z"),
)
_CIF_CELL = (
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
)
_CIF_TOKEN = re.compile(
    r"(?P<comment>#.*)|'(?P<q1>.*?)'(?=\s|$)|\"(?P<q2>.*?)\"(?=\s|$)|(?P<bare>\S+)"
)
_CIF_RESERVED = re.compile(r"(data_|save_|loop_$|global_$|stop_$)", re.IGNORECASE)


def _cif_number(value) -> float | None:
    """A CIF number such as '0.1234(5)'; None for '?', '.' or anything unreadable."""
    text = re.sub(r"\(\d+\)$", "", str(value).strip())
    try:
        return float(text)
    except ValueError:
        return None


def _cif_tokens(block: str, first_line: int) -> list[tuple[str, int, bool]]:
    """CIF 1.1 tokens of a block as (text, line number, is a bare word), comments dropped."""
    tokens: list[tuple[str, int, bool]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(";"):
            start, text = i, [lines[i][1:]]
            i += 1
            while i < len(lines) and not lines[i].startswith(";"):
                text.append(lines[i])
                i += 1
            tokens.append(("\n".join(text), start + first_line, False))
            i += 1
            continue
        for match in _CIF_TOKEN.finditer(lines[i]):
            if match.group("comment") is not None:
                break
            bare = match.group("bare")
            value = (
                bare
                if bare is not None
                else match.group("q1")
                if match.group("q1") is not None
                else match.group("q2")
            )
            tokens.append((value, i + first_line, bare is not None))
        i += 1
    return tokens


def _cif_data(block: str, first_line: int) -> tuple[dict[str, list[str]], str | None]:
    """Tag -> values of a CIF block (tags lower-cased, '.' read as '_'), or the layout error found."""
    tokens = _cif_tokens(block, first_line)
    data: dict[str, list[str]] = {}

    def is_tag(k: int) -> bool:
        return tokens[k][2] and tokens[k][0].startswith("_")

    def is_reserved(k: int) -> bool:
        return tokens[k][2] and bool(_CIF_RESERVED.match(tokens[k][0]))

    k = 0
    while k < len(tokens):
        text, line, _bare = tokens[k]
        if is_reserved(k) and text.lower() != "loop_":
            k += 1
        elif is_reserved(k):
            tags = []
            k += 1
            while k < len(tokens) and is_tag(k):
                tags.append(tokens[k][0].lower().replace(".", "_"))
                k += 1
            if not tags:
                return data, f"malformed CIF: loop_ on line {line} has no column names"
            values = []
            while k < len(tokens) and not is_tag(k) and not is_reserved(k):
                values.append(tokens[k][0])
                k += 1
            if not values or len(values) % len(tags):
                shown = ", ".join(tags[:3]) + (", ..." if len(tags) > 3 else "")
                return data, (
                    f"malformed CIF: the loop on line {line} has {len(tags)} columns ({shown}) "
                    f"but {len(values)} values, not a whole number of rows"
                )
            for j, tag in enumerate(tags):
                data[tag] = values[j :: len(tags)]
        elif is_tag(k):
            if k + 1 >= len(tokens) or is_tag(k + 1) or is_reserved(k + 1):
                return data, f"malformed CIF: {text} on line {line} has no value"
            data[text.lower().replace(".", "_")] = [tokens[k + 1][0]]
            k += 2
        else:
            return (
                data,
                f"malformed CIF: stray value {text[:40]!r} on line {line} (not after a tag or in a loop)",
            )
    return data, None


def _diagnose_cif_block(block: str, first_line: int) -> str | None:
    """Name the line, tag or value that makes a CIF block unusable, in the terms a CIF author knows."""
    data, layout_error = _cif_data(block, first_line)
    if layout_error:
        return layout_error
    for tag in _CIF_CELL:
        if tag not in data:
            return f"malformed CIF: missing cell parameter {tag}"
        number = _cif_number(data[tag][0])
        if number is None:
            return f"malformed CIF: could not read cell parameter {tag} = {data[tag][0]!r}"
        if not math.isfinite(number):
            return f"non-finite cell parameter {tag} = {data[tag][0]!r}"
    if "_atom_site_type_symbol" not in data and "_atom_site_label" not in data:
        return "malformed CIF: atoms have no _atom_site_type_symbol or _atom_site_label"
    for names in _CIF_COORDS:
        if all(n in data for n in names):
            for name in names:
                for row, value in enumerate(data[name]):
                    number = _cif_number(value)
                    if number is None:
                        return f"malformed CIF: could not read atom coordinates ({name} = {value!r} on atom row {row})"
                    if not math.isfinite(number):
                        return (
                            f"non-finite coordinates ({'NaN' if math.isnan(number) else 'inf'}) on atom row "
                            f"{row} ({name} = {value!r})"
                        )
            return None
    return "malformed CIF: no atom coordinates (needs _atom_site_fract_x/_y/_z or _atom_site_Cartn_x/_y/_z)"


def _parse_cif(path: Path, text: str) -> list[Structure | _ItemError]:
    if "_atom_site" not in text.lower() and "data_" not in text.lower():
        raise StructureInputError(path, "malformed CIF (no data_ block or _atom_site loop)")
    blocks = [(line, b) for line, b in _split_cif_blocks(text) if "_atom_site" in b.lower()]
    if not blocks:
        raise StructureInputError(path, "malformed CIF (no data_ block with an _atom_site loop)")
    out: list[Structure | _ItemError] = []
    for line, block in blocks:
        try:
            out.extend(_parse_cif_block(block, line))
        except _ItemError as exc:
            out.append(exc)
    return out


def _parse_cif_block(block: str, first_line: int) -> list[Structure]:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(block, occupancy_tolerance=1.0)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            messages = f"{exc} " + " ".join(str(w.message) for w in caught)
            reason = _element_reason(messages) or _diagnose_cif_block(block, first_line)
            raise _ItemError(reason or f"malformed CIF ({_first_line(exc)})") from exc
    if not structures:
        raise _ItemError(
            _diagnose_cif_block(block, first_line) or "malformed CIF (no structure could be parsed)"
        )
    return structures


def _floats(tokens: Sequence[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _check_poscar_text(path: Path, lines: list[str]) -> None:
    """Check the POSCAR layout before pymatgen reads it, so a broken file is named in POSCAR terms.

    Layout: comment, scale factor, three lattice vectors, element symbols (optional in VASP 4),
    atom counts, optional 'Selective dynamics', Direct/Cartesian, one coordinate line per atom.
    """

    def need(i: int, what: str) -> list[str]:
        if i >= len(lines) or not lines[i].strip():
            raise StructureInputError(
                path, f"malformed POSCAR: file ends before the {what} (line {i + 1})"
            )
        return lines[i].split()

    scale = _floats(need(1, "scale factor"))
    if scale is None or len(scale) not in (1, 3):
        raise StructureInputError(
            path,
            f"malformed POSCAR: line 2 should hold the scale factor, found {lines[1].strip()!r}",
        )
    if not all(math.isfinite(s) for s in scale):
        raise StructureInputError(path, f"non-finite scale factor ({lines[1].strip()}) on line 2")
    vectors = []
    for k in range(2, 5):
        numbers = _floats(need(k, "lattice vectors")[:3])
        if numbers is None or len(numbers) < 3:
            raise StructureInputError(
                path,
                f"malformed POSCAR: lattice vector on line {k + 1} needs 3 numbers, found {lines[k].strip()!r}",
            )
        vectors.append(numbers)
    _check_lattice_matrix(
        np.array(vectors) * (np.array(scale)[:, None] if len(scale) == 3 else 1.0), path
    )
    if len(scale) == 1 and scale[0] == 0:
        raise StructureInputError(
            path, "degenerate lattice (scale factor 0 gives a cell volume of 0 Å³)"
        )
    tokens = need(5, "element symbols or atom counts")
    if all(re.fullmatch(r"[+-]?\d+", t) for t in tokens):
        counts_line, symbols = 5, None
    else:
        symbols = [re.split(r"[_/]", t)[0] for t in tokens]
        reason = _symbols_reason(symbols)
        if reason:
            raise StructureInputError(path, reason)
        counts_line = 6
        tokens = need(6, "atom counts")
    if not all(re.fullmatch(r"[+-]?\d+", t) for t in tokens):
        raise StructureInputError(
            path,
            f"malformed POSCAR: line {counts_line + 1} should hold the atom counts (whole numbers), "
            f"found {lines[counts_line].strip()!r}",
        )
    counts = [int(t) for t in tokens]
    shown = " ".join(tokens)
    if symbols is not None and len(symbols) != len(counts):
        raise StructureInputError(
            path,
            f"malformed POSCAR: {len(symbols)} element symbol(s) ({' '.join(symbols)}) "
            f"but {len(counts)} atom count(s) ({shown})",
        )
    if any(c < 0 for c in counts):
        raise StructureInputError(
            path, f"malformed POSCAR: negative atom count in the counts line ({shown})"
        )
    total = sum(counts)
    if total == 0:
        raise StructureInputError(
            path, f"malformed POSCAR: atom counts line says 0 atoms ({shown})"
        )
    j = counts_line + 1
    mode = need(j, "Direct/Cartesian line")
    if mode[0][:1] in "sS":
        j += 1
        need(j, "Direct/Cartesian line")
    j += 1
    n_coords = 0
    while j + n_coords < len(lines):
        numbers = _floats(lines[j + n_coords].split()[:3])
        if numbers is None or len(numbers) < 3:
            break
        n_coords += 1
        if n_coords >= total:
            break
    if n_coords < total:
        stop = j + n_coords
        where = (
            f" (line {stop + 1} is not three numbers: {lines[stop].strip()[:60]!r})"
            if stop < len(lines) and lines[stop].strip()
            else ""
        )
        raise StructureInputError(
            path,
            f"malformed POSCAR: atom counts {shown} ({total} atoms) but {n_coords} coordinate lines{where}",
        )


def _parse_poscar(path: Path, text: str) -> list[Structure | _ItemError]:
    from pymatgen.io.vasp import Poscar

    _check_poscar_text(path, text.splitlines())
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            poscar = Poscar.from_str(text, read_velocities=False)
    except Exception as exc:
        raise StructureInputError(
            path, _element_reason(str(exc)) or f"malformed POSCAR ({_first_line(exc)})"
        ) from exc
    return [poscar.structure]


_XYZ_COUNT = re.compile(r"\s*\d+\s*")
_XYZ_PROPERTIES = re.compile(r"Properties=\"?([^\"\s]+)", re.IGNORECASE)


def _split_xyz_frames(lines: list[str]) -> list[tuple[int, list[str] | str]]:
    """Cut extxyz text into frames at the atom-count lines.

    Returns (first line number, frame lines) for complete frames and (line number, reason) for
    truncated or garbled stretches, so that one broken frame does not hide the ones after it:
    an atom-count line where an atom line was expected starts the next frame.
    """
    frames: list[tuple[int, list[str] | str]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if not _XYZ_COUNT.fullmatch(lines[i]):
            j = i + 1
            while j < len(lines) and not _XYZ_COUNT.fullmatch(lines[j]):
                j += 1
            frames.append(
                (
                    i + 1,
                    f"malformed extxyz frame (line {i + 1} should hold the atom count, "
                    f"found {lines[i].strip()[:60]!r})",
                )
            )
            i = j
            continue
        n_atoms = int(lines[i])
        if i + 1 >= len(lines):
            frames.append(
                (
                    i + 1,
                    f"truncated extxyz frame (line {i + 1} says {n_atoms} atoms, then the file ends)",
                )
            )
            break
        atom_lines: list[str] = []
        j = i + 2
        while j < len(lines) and len(atom_lines) < n_atoms and not _XYZ_COUNT.fullmatch(lines[j]):
            atom_lines.append(lines[j])
            j += 1
        if len(atom_lines) < n_atoms:
            frames.append(
                (
                    i + 1,
                    f"truncated extxyz frame (line {i + 1} says {n_atoms} atoms "
                    f"but {len(atom_lines)} atom lines follow)",
                )
            )
        else:
            frames.append((i + 1, [lines[i], lines[i + 1], *atom_lines]))
        i = j
    return frames


def _xyz_columns(properties: str | None) -> int | None:
    """Number of columns an atom line needs under an extxyz Properties spec (None if unreadable)."""
    if properties is None:
        return 4
    parts = properties.split(":")
    if len(parts) % 3:
        return None
    try:
        return sum(int(n) for n in parts[2::3])
    except ValueError:
        return None


def _parse_xyz_frame(frame: list[str], first_line: int) -> Structure:
    """One extxyz frame (count, comment, atom lines) -> Structure; raises _ItemError with the reason.

    The layout (9 lattice numbers, one column per property on every atom line) is checked here so
    that the message names the line; ase's own messages for these are about internal arrays.
    """
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    n_atoms = int(frame[0])
    if n_atoms == 0:
        raise _ItemError("empty structure (no atoms)")
    comment = frame[1]
    lattice = re.search(r"Lattice=\"([^\"]*)\"", comment, re.IGNORECASE)
    if lattice and len(_floats(lattice.group(1).split()) or []) != 9:
        raise _ItemError(
            f'malformed extxyz frame (line {first_line + 1}: Lattice="..." must hold 9 numbers, '
            f"found {lattice.group(1)[:60]!r})"
        )
    props = _XYZ_PROPERTIES.search(comment)
    columns = _xyz_columns(props.group(1) if props else None)
    if columns is not None:
        for k, line in enumerate(frame[2:]):
            found = len(line.split())
            if found != columns:
                raise _ItemError(
                    f"malformed extxyz frame (line {first_line + 2 + k} has {found} columns, "
                    f"Properties needs {columns})"
                )
    if props is None or props.group(1).lower().startswith("species:s:1"):
        reason = _symbols_reason(
            dict.fromkeys(line.split()[0] for line in frame[2:] if line.split())
        )
        if reason:
            raise _ItemError(reason)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            atoms = ase_read(io.StringIO("\n".join(frame) + "\n"), index=0, format="extxyz")
    except Exception as exc:
        raise _ItemError(
            _element_reason(str(exc)) or f"malformed extxyz frame ({_first_line(exc)})"
        ) from exc
    no_lattice = 'extxyz frame has no periodic 3-D lattice (needs Lattice="..." and pbc="T T T")'
    if "lattice=" not in comment.lower() or not atoms.pbc.all():
        raise _ItemError(no_lattice)
    cell = np.asarray(atoms.cell.array, dtype=float)
    try:
        _check_lattice_matrix(cell, "")
    except StructureInputError as exc:
        raise _ItemError(exc.reason) from exc
    positions = np.asarray(atoms.positions, dtype=float)
    bad_rows = ~np.isfinite(positions).all(axis=1)
    if bad_rows.any():
        k = int(np.argmax(bad_rows))
        raise _ItemError(
            f"non-finite coordinates ({_nonfinite_kind(positions[k])}) on site {k} ({atoms[k].symbol})"
        )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return AseAtomsAdaptor.get_structure(atoms)


def _parse_extxyz(path: Path, text: str) -> list[Structure | _ItemError]:
    frames = _split_xyz_frames(text.splitlines())
    if not frames:
        raise StructureInputError(path, "malformed extxyz (no frames)")
    if all(isinstance(f, str) for _, f in frames) and len(frames) == 1:
        raise StructureInputError(path, frames[0][1])
    out: list[Structure | _ItemError] = []
    for line, frame in frames:
        if isinstance(frame, str):
            out.append(_ItemError(frame))
            continue
        try:
            out.append(_parse_xyz_frame(frame, line))
        except _ItemError as exc:
            out.append(exc)
        except Exception as exc:
            out.append(_ItemError(f"malformed extxyz frame ({_first_line(exc)})"))
    return out


def _json_item_reason(item) -> str | None:
    """Why one JSON item cannot be a pymatgen Structure, judged before pymatgen sees it."""
    if not isinstance(item, dict) or "lattice" not in item or "sites" not in item:
        return "malformed JSON (not a pymatgen Structure dict: needs 'lattice' and 'sites')"
    sites = item["sites"]
    if not isinstance(sites, list):
        return "malformed JSON structure ('sites' is not a list)"
    if not sites:
        return "empty structure (no atoms)"
    symbols: list[str] = []
    for i, site in enumerate(sites):
        species = site.get("species") if isinstance(site, dict) else None
        if not isinstance(species, list) or not species:
            return f"malformed JSON structure (site {i} has no 'species' list)"
        for sp in species:
            if not isinstance(sp, dict) or not isinstance(sp.get("element"), str):
                return (
                    f"malformed JSON structure (site {i}: each species needs an 'element' symbol)"
                )
            symbols.append(re.sub(r"[\d.+-]+$", "", sp["element"]) or sp["element"])
            occu = sp.get("occu", 1)
            if isinstance(occu, bool) or not isinstance(occu, int | float):
                return f"malformed JSON structure (occupancy {occu!r} on site {i} is not a number)"
            if not math.isfinite(occu) or occu <= 0:
                return f"occupancy {occu!r} on site {i} (must be between 0 and 1)"
    return _symbols_reason(dict.fromkeys(symbols))


def _parse_json(path: Path, text: str) -> list[Structure | _ItemError]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructureInputError(path, f"malformed JSON (line {exc.lineno}: {exc.msg})") from exc
    except Exception as exc:
        raise StructureInputError(path, f"malformed JSON ({_first_line(exc)})") from exc
    if isinstance(data, list) and not data:
        raise StructureInputError(path, "JSON list holds no structures")
    items = data if isinstance(data, list) else [data]
    out: list[Structure | _ItemError] = []
    for item in items:
        if isinstance(item, dict) and "structure" in item and "lattice" not in item:
            item = item["structure"]
        reason = _json_item_reason(item)
        if reason:
            out.append(_ItemError(reason))
            continue
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out.append(Structure.from_dict(item))
        except Exception as exc:
            out.append(
                _ItemError(
                    _element_reason(str(exc)) or f"malformed JSON structure ({_first_line(exc)})"
                )
            )
    return out


_FORMAT_NAMES = {"cif": "CIF", "poscar": "POSCAR", "extxyz": "extxyz", "json": "JSON"}


def _parse_items(path: Path) -> list[tuple[str, Structure | StructureInputError]]:
    """Parse a file into (source, Structure or per-item error) pairs; whole-file errors raise.

    Sources are ``file@i`` (0-based) when the file holds more than one item, else the file name.
    Each parsed structure has passed the limit-free integrity checks (_check_integrity).
    """
    fmt = _file_format(path)
    raw = _check_raw_file(path)
    text = raw.decode("utf-8", errors="replace")
    parser = {
        "cif": _parse_cif,
        "poscar": _parse_poscar,
        "extxyz": _parse_extxyz,
        "json": _parse_json,
    }[fmt]
    try:
        results = parser(path, text)
    except StructureInputError:
        raise
    except Exception as exc:  # a parser bug or an input no check foresaw: still name the file
        raise StructureInputError(
            path, f"malformed {_FORMAT_NAMES[fmt]} ({_first_line(exc)})"
        ) from exc
    multi = len(results) > 1
    items: list[tuple[str, Structure | StructureInputError]] = []
    for i, result in enumerate(results):
        source = f"{path}@{i}" if multi else str(path)
        if isinstance(result, _ItemError):
            items.append((source, StructureInputError(source, result.reason)))
            continue
        try:
            _check_integrity(result, source)
        except StructureInputError as exc:
            items.append((source, exc))
            continue
        except Exception as exc:
            items.append(
                (source, StructureInputError(source, f"unusable structure ({_first_line(exc)})"))
            )
            continue
        items.append((source, result))
    return items


def read_structure_file(path: str | os.PathLike) -> list[Structure]:
    """Parse one file into one or more structures (several for multi-frame extxyz, JSON lists, CIF blocks).

    Raises StructureInputError naming the file (``file@i`` for an item of a multi-structure file)
    and the reason, for the first item that cannot be read. Structures are refused here only for
    what no step may see (no atoms, unknown species, non-finite or singular lattices, non-finite
    coordinates); the physical limits are validate_structure's. ``read_structure_items`` keeps the
    good items of a file that also holds bad ones.
    """
    items = _parse_items(Path(path))
    for _source, result in items:
        if isinstance(result, StructureInputError):
            raise result
    return [result for _source, result in items]


def read_structure_items(
    path: str | os.PathLike, limits: ValidationLimits | None = None
) -> list[LoadedStructure | FailedInput]:
    """Read and validate every item of one file; never raises for a bad input.

    Returns, in file order, a LoadedStructure for each good item and a FailedInput for each bad one
    (source ``file@i`` in a multi-structure file), or a single FailedInput naming the file when the
    whole file is unusable. ``limits`` defaults to ``ValidationLimits.from_env()``.
    """
    path = Path(path)
    limits = limits or ValidationLimits.from_env()
    try:
        items = _parse_items(path)
    except StructureInputError as exc:
        return [FailedInput(exc.source, exc.reason)]
    except Exception as exc:
        return [FailedInput(str(path), f"could not parse ({_first_line(exc)})")]
    out: list[LoadedStructure | FailedInput] = []
    for source, result in items:
        if isinstance(result, StructureInputError):
            out.append(FailedInput(result.source, result.reason))
            continue
        try:
            validate_structure(result, source, limits, integrity_checked=True)
        except StructureInputError as exc:
            out.append(FailedInput(exc.source, exc.reason))
            continue
        except Exception as exc:
            out.append(FailedInput(source, f"could not validate ({_first_line(exc)})"))
            continue
        out.append(LoadedStructure(source, result))
    return out


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _suggested_max_sites(n_sites: int) -> int:
    return -(-n_sites // 1000) * 1000


def _closest_pair(
    structure: Structure, cutoff: float, source: str | os.PathLike
) -> tuple[int, int, float] | None:
    """Closest pair of atoms (periodic images included) nearer than ``cutoff`` Å, or None.

    A k-d tree over the images that can lie within the cutoff, in an LLL-reduced basis: its memory
    grows with the number of atoms, not with the size of the cell (a grid-based neighbour search
    allocates per empty cell, which exhausts memory for a sparse, huge cell).
    """
    from scipy.spatial import cKDTree

    lattice = structure.lattice.get_lll_reduced_lattice()
    matrix = np.asarray(lattice.matrix, dtype=float)
    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.min() < cutoff:
        return 0, 0, float(lengths.min())
    frac = np.mod(structure.cart_coords @ np.linalg.inv(matrix), 1.0)
    volume = abs(float(np.linalg.det(matrix)))
    heights = volume / np.linalg.norm(np.cross(matrix[[1, 2, 0]], matrix[[2, 0, 1]]), axis=1)
    reach = np.ceil(cutoff / heights).astype(int)
    n = len(frac)
    n_images = int(np.prod(2 * reach + 1))
    if n_images * n > _MAX_IMAGE_POINTS:
        raise StructureInputError(
            source, f"cell too skewed to check interatomic distances ({n_images} periodic images)"
        )
    shifts = np.array(
        sorted(itertools.product(*(range(-r, r + 1) for r in reach)), key=lambda s: s != (0, 0, 0))
    )
    points = ((frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)) @ matrix
    tree = cKDTree(points)
    k = min(3, len(points))
    distances, indices = tree.query(points[:n], k=k, distance_upper_bound=cutoff)
    distances = np.asarray(distances).reshape(n, k)
    indices = np.asarray(indices).reshape(n, k)
    valid = (indices != np.arange(n)[:, None]) & np.isfinite(distances)
    if not valid.any():
        return None
    masked = np.where(valid, distances, np.inf)
    center = int(np.argmin(masked.min(axis=1)))
    column = int(np.argmin(masked[center]))
    return center, int(indices[center, column] % n), float(masked[center, column])


def validate_structure(
    structure: Structure, source: str | os.PathLike, limits: ValidationLimits | None = None,
    *, integrity_checked: bool = False,
) -> Structure:
    """Check that a structure is physically sensible; raise StructureInputError with the reason if not.

    Order matters: the cheap size check first, then finiteness (so that no later check computes
    with NaN), then the cell, occupancy, density and interatomic distances. ``limits`` defaults to
    ``ValidationLimits.from_env()``. ``integrity_checked`` skips the finiteness and symbol checks
    that the readers already ran on each parsed item.
    """
    limits = limits or ValidationLimits.from_env()
    with np.errstate(all="ignore"):
        _validate(structure, source, limits, integrity_checked=integrity_checked)
    return structure


def _validate(structure: Structure, source: str | os.PathLike, limits: ValidationLimits,
              *, integrity_checked: bool = False) -> None:
    n_sites = len(structure)
    if n_sites == 0:
        raise StructureInputError(source, "empty structure (no atoms)")
    if n_sites > limits.max_sites:
        raise StructureInputError(
            source,
            f"cell has {n_sites} sites, more than the limit of {limits.max_sites}; raise it with "
            f"{MAX_SITES_ENV}={_suggested_max_sites(n_sites)} or --max-sites",
        )
    if not integrity_checked:
        _check_integrity(structure, source)
    for name, length in zip(_VECTOR_NAMES, structure.lattice.abc, strict=True):
        if not limits.min_lattice_length_A <= length <= limits.max_lattice_length_A:
            raise StructureInputError(
                source,
                f"absurd lattice: vector {name} is {length:.4g} Å long (allowed {limits.min_lattice_length_A:g}–"
                f"{limits.max_lattice_length_A:g} Å); check the lattice units and the scale factor",
            )
    frac = np.abs(np.asarray(structure.frac_coords, dtype=float))
    if frac.max() > limits.max_abs_fractional_coord:
        i, k = (int(x) for x in np.unravel_index(int(np.argmax(frac)), frac.shape))
        raise StructureInputError(
            source,
            f"huge coordinate on site {i}: fractional {_VECTOR_NAMES[k]} = {structure.frac_coords[i, k]:.4g}, "
            f"more than {limits.max_abs_fractional_coord:g} cells away; check the units and Direct/Cartesian",
        )
    if not structure.is_ordered and not limits.allow_partial_occupancy:
        disordered = [i for i, site in enumerate(structure) if not site.is_ordered]
        raise StructureInputError(
            source,
            f"partial occupancy on {len(disordered)} site(s) (first: site {disordered[0]}, "
            f"{structure[disordered[0]].species}); this step needs an ordered structure",
        )
    density = float(structure.density)
    if not (limits.min_density_g_cm3 <= density <= limits.max_density_g_cm3):
        raise StructureInputError(
            source,
            f"absurd density {density:.4g} g/cm³ (allowed {limits.min_density_g_cm3}–"
            f"{limits.max_density_g_cm3}); check the lattice units and the cell",
        )
    pair = _closest_pair(structure, limits.min_distance_A, source)
    if pair is not None:
        i, j, distance = pair
        if i == j:
            raise StructureInputError(
                source,
                f"atoms too close: site {i} is {distance:.3f} Å from its own periodic image "
                f"(minimum {limits.min_distance_A} Å); a lattice vector is too short",
            )
        raise StructureInputError(
            source,
            f"atoms too close: sites {i} and {j} are {distance:.3f} Å apart (minimum {limits.min_distance_A} Å)",
        )


def read_structures(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    limits: ValidationLimits | None = None,
) -> BatchRead:
    """Read and validate files, directories and globs; never stops on a bad file or a bad item.

    ``limits`` defaults to ``ValidationLimits.from_env()`` (so ``MATFLOW_MAX_SITES`` applies).
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    limits = limits or ValidationLimits.from_env()
    paths, failures = expand_inputs(inputs)
    batch = BatchRead(failures=list(failures))
    for path in paths:
        for item in read_structure_items(path, limits):
            if isinstance(item, LoadedStructure):
                batch.structures.append(item)
            else:
                batch.failures.append(item)
    return batch
