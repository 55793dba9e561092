"""Property-based fuzzing of the structure readers: whatever the bytes, read_structures returns good
structures and failures that name the file, never an exception, and nothing non-finite gets through."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matflow.io import ValidationLimits, read_structures, validate_structure

GOOD = Path(__file__).parent / "data" / "good"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

special = st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 0.0, 1e-300, 1e12, -7.5]
)
elements = st.sampled_from(["Cu", "Fe", "Ni", "Na", "Cl", "Si", "H", "O", "Og"])
odd_symbol = st.one_of(
    st.sampled_from(["X", "D", "T", "Xx", "Qq", "cu", "X0+"]),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1, max_size=3
    ),
)


@st.composite
def cells(draw):
    """A random cell (a skewed near-cubic lattice, 1-4 atoms), then zero to three corruptions:
    a NaN/inf/huge/zero number in the lattice or the coordinates, or an odd element symbol."""
    a = draw(st.floats(1.5, 8))
    skew = np.array(draw(st.lists(st.floats(-0.4, 0.4), min_size=9, max_size=9))).reshape(3, 3)
    lattice = (np.eye(3) * a + skew).tolist()
    n = draw(st.integers(1, 4))
    species = draw(st.lists(elements, min_size=n, max_size=n))
    coords = [draw(st.lists(st.floats(-0.2, 1.2), min_size=3, max_size=3)) for _ in range(n)]
    for kind, where in draw(
        st.lists(
            st.tuples(st.sampled_from(["lattice", "coord", "species"]), st.integers(0, 11)),
            max_size=3,
        )
    ):
        if kind == "lattice":
            lattice[where % 3][where // 3 % 3] = draw(special)
        elif kind == "coord":
            coords[where % n][where // n % 3] = draw(special)
        else:
            species[where % n] = draw(odd_symbol)
    return lattice, species, coords


def _poscar(cell) -> str:
    lattice, species, coords = cell
    lines = [
        "fuzz",
        "1.0",
        *(" ".join(repr(x) for x in row) for row in lattice),
        " ".join(species),
        " ".join("1" for _ in species),
        "Direct",
        *(" ".join(repr(x) for x in c) for c in coords),
    ]
    return "\n".join(lines) + "\n"


def _json_item(cell) -> dict:
    lattice, species, coords = cell
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "lattice": {"matrix": lattice},
        "sites": [
            {"species": [{"element": s, "occu": 1}], "abc": c}
            for s, c in zip(species, coords, strict=True)
        ],
    }


def _xyz_frame(cell) -> str:
    lattice, species, coords = cell
    flat = " ".join(repr(x) for row in lattice for x in row)
    lines = [
        str(len(species)),
        f'Lattice="{flat}" Properties=species:S:1:pos:R:3 pbc="T T T"',
        *(f"{s} " + " ".join(repr(x) for x in c) for s, c in zip(species, coords, strict=True)),
    ]
    return "\n".join(lines) + "\n"


def _check_batch(path: Path) -> None:
    batch = read_structures([path])
    assert batch.structures or batch.failures
    for failure in batch.failures:
        assert failure.source == str(path) or failure.source.startswith(f"{path}@")
        assert failure.reason
    limits = ValidationLimits.from_env()
    for item in batch.structures:
        assert item.source == str(path) or item.source.startswith(f"{path}@")
        s = item.structure
        assert np.isfinite(s.lattice.matrix).all()
        assert np.isfinite(s.frac_coords).all() and np.isfinite(s.cart_coords).all()
        validate_structure(s, item.source, limits)


@FUZZ
@given(
    cells=st.lists(cells(), min_size=1, max_size=3), fmt=st.sampled_from(["POSCAR", "json", "xyz"])
)
def test_random_cells_never_raise_and_nothing_non_finite_passes(cells, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        if fmt == "POSCAR":
            path = Path(tmp) / "POSCAR"
            path.write_text(_poscar(cells[0]))
        elif fmt == "json":
            path = Path(tmp) / "cells.json"
            items = [_json_item(c) for c in cells]
            path.write_text(json.dumps(items if len(items) > 1 else items[0]))
        else:
            path = Path(tmp) / "cells.xyz"
            path.write_text("".join(_xyz_frame(c) for c in cells))
        _check_batch(path)


@FUZZ
@given(
    name=st.sampled_from(sorted(p.name for p in GOOD.iterdir())),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    keep=st.floats(0.05, 1.0),
    repeat=st.integers(1, 3),
)
def test_byte_flipped_and_truncated_files_never_raise(name, flips, keep, repeat):
    data = bytearray((GOOD / name).read_bytes())
    for where, byte in flips:
        data[int(where * len(data))] = byte
    data = bytes(data[: max(1, int(keep * len(data)))])
    if name.endswith("extxyz"):
        data = data * repeat
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        _check_batch(path)
