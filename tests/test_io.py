"""Structure input: every case of the bad-input corpus gets a message naming the file and the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matflow.io import (
    DEFAULT_MAX_SITES,
    MAX_SITES_ENV,
    FailedInput,
    LoadedStructure,
    StructureInputError,
    ValidationLimits,
    read_structure_file,
    read_structure_items,
    read_structures,
    validate_structure,
)

TEST_DATA = Path(__file__).parent / "data"

BAD = TEST_DATA / "bad"
GOOD = TEST_DATA / "good"

BAD_CASES = {
    "unreadable.cif": "unreadable file",
    "malformed.cif": "malformed CIF",
    "POSCAR_truncated": "malformed POSCAR",
    "malformed.json": "malformed JSON (line 1",
    "not_a_structure.json": "not a pymatgen Structure dict",
    "no_lattice.xyz": "no periodic 3-D lattice",
    "empty.cif": "empty file",
    "binary.cif": "binary file",
    "empty_structure.json": "empty structure (no atoms)",
    "POSCAR_unknown_element": "unknown element symbol(s) 'Xx'",
    "unknown_element.cif": "unknown element symbol(s) 'Qq'",
    "partial_occupancy.cif": "partial occupancy on 4 site(s)",
    "overlapping_atoms.cif": "atoms too close: sites 0 and 1 are 0.300 Å apart",
    "POSCAR_absurd_density": "absurd density 472 g/cm³",
    "absurd_low_density.vasp": "absurd density 7.749e-06 g/cm³",
    "POSCAR_nan_coordinate": "non-finite coordinates (NaN) on site 2 (Si)",
    "nan_coordinate.cif": "non-finite coordinates (NaN) on atom row 1 (_atom_site_fract_y = 'nan')",
    "nan_coordinate.json": "non-finite coordinates (NaN) on site 1 (Fe)",
    "nan_coordinate.xyz": "non-finite coordinates (NaN) on site 3 (Cu)",
    "POSCAR_inf_lattice": "non-finite lattice (inf or overflow in lattice vector a)",
    "zero_volume.json": "degenerate lattice (cell volume 0 Å³",
    "POSCAR_coplanar_lattice": "degenerate lattice (cell volume 0 Å³",
    "POSCAR_absurd_lattice_length": "absurd lattice: vector a is 5.43e+04 Å long (allowed 0.1–10000 Å)",
    "POSCAR_huge_coordinate": "huge coordinate on site 1: fractional a = 1e+12",
    "huge_number.xyz": "huge coordinate on site 3: fractional b = 2.77e+307",
    "empty_list.json": "JSON list holds no structures",
    "unparseable_coordinates.cif": "malformed CIF: could not read atom coordinates (_atom_site_fract_y = '0.5x'",
    "POSCAR_zero_atoms": "malformed POSCAR: atom counts line says 0 atoms",
    "POSCAR_more_atoms_than_lines": "malformed POSCAR: atom counts 12 (12 atoms) but 8 coordinate lines",
    "POSCAR_negative_count": "malformed POSCAR: negative atom count in the counts line (-8)",
    "POSCAR_non_utf8": "malformed POSCAR: atom counts 8 (8 atoms) but 3 coordinate lines (line 12",
    "POSCAR_dummy_species": "unknown element symbol(s) 'X' (a dummy species",
    "isotope.json": "isotope symbol(s) 'D' are not elements",
    "truncated.xyz": "truncated extxyz frame (line 1 says 4 atoms but 2 atom lines follow)",
}


@pytest.mark.parametrize("name,message", sorted(BAD_CASES.items()))
def test_bad_input_message_names_file_and_reason(name, message):
    batch = read_structures([BAD / name])
    assert not batch.structures
    assert len(batch.failures) == 1
    failure = batch.failures[0]
    assert failure.source.endswith(name)
    assert message in failure.reason


def test_corpus_is_fully_covered():
    on_disk = {p.name for p in BAD.iterdir()}
    assert on_disk == set(BAD_CASES)


def test_good_files_of_every_format_are_read():
    batch = read_structures([GOOD])
    assert batch.ok
    formulas = {
        s.source.split("/")[-1]: s.structure.composition.reduced_formula for s in batch.structures
    }
    assert formulas == {
        "Cu.extxyz": "Cu",
        "Fe_bcc.json": "Fe",
        "NaCl.cif": "NaCl",
        "POSCAR_Si": "Si",
    }


def test_batch_keeps_good_results_and_lists_every_failure(tmp_path):
    for p in list(GOOD.iterdir()) + [BAD / "empty.cif", BAD / "binary.cif"]:
        shutil.copy(p, tmp_path / p.name)
    batch = read_structures([tmp_path, tmp_path / "missing.cif", str(tmp_path / "*.nothing")])
    assert len(batch.structures) == 4
    reasons = {f.source.split("/")[-1]: f.reason for f in batch.failures}
    assert reasons == {
        "missing.cif": "file not found",
        "*.nothing": "glob pattern matched no files",
        "empty.cif": "empty file",
        "binary.cif": "binary file, not a text structure format",
    }


def test_glob_and_duplicates(tmp_path):
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "a.cif")
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "b.cif")
    batch = read_structures([str(tmp_path / "*.cif"), tmp_path / "a.cif"])
    assert [s.source.split("/")[-1] for s in batch.structures] == ["a.cif", "b.cif"]


def test_multi_frame_extxyz_names_each_frame(tmp_path, nacl):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(nacl)
    write(tmp_path / "two.extxyz", [atoms, atoms], format="extxyz")
    batch = read_structures([tmp_path / "two.extxyz"])
    assert [s.source.split("/")[-1] for s in batch.structures] == ["two.extxyz@0", "two.extxyz@1"]


def test_unknown_format_is_named(tmp_path):
    path = tmp_path / "structure.pdb"
    path.write_text("ATOM")
    with pytest.raises(
        StructureInputError, match=r"structure.pdb: unknown structure format '.pdb'"
    ):
        read_structure_file(path)


def test_disorder_allowed_when_the_step_handles_it():
    (structure,) = read_structure_file(BAD / "partial_occupancy.cif")
    validate_structure(structure, "x", ValidationLimits(allow_partial_occupancy=True))
    with pytest.raises(StructureInputError, match="partial occupancy"):
        validate_structure(structure, "x")


def test_close_atoms_across_periodic_boundary():
    s = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0.01, 0, 0], [0.95, 0, 0]])
    with pytest.raises(StructureInputError, match=r"0\.240 Å apart"):
        validate_structure(s, "pbc.cif")


# ---- validation at the door: non-finite numbers, absurd cells, size limit ------------------------

CU_FRAME = (
    '4\nLattice="3.61 0.0 0.0 0.0 3.61 0.0 0.0 0.0 3.61" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
    "Cu 0 0 0\nCu 1.805 1.805 0\nCu 1.805 0 1.805\n{last}\n"
)


def _cu(nx: int = 1, ny: int = 1, nz: int = 1) -> Structure:
    cell = Structure(
        Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    return cell * (nx, ny, nz)


def test_nan_coordinate_refused_even_where_disorder_is_allowed():
    """The composition preset's limits (partial occupancy allowed) must still refuse NaN."""
    s = _cu()
    s.replace(3, {"Fe": 0.5, "Ni": 0.5}, coords=[0.0, float("nan"), 0.5])
    with pytest.raises(
        StructureInputError, match=r"x.json: non-finite coordinates \(NaN\) on site 3"
    ):
        validate_structure(s, "x.json", ValidationLimits(allow_partial_occupancy=True))


def test_composition_preset_refuses_nan_structure():
    from matflow.featurize.runner import featurize_structures

    s = _cu()
    s.replace(1, "Cu", coords=[float("nan"), 0.5, 0.0])
    result = featurize_structures([s], "composition", sources=["nan-cell"], use_cache=False)
    assert [(f.source, f.reason) for f in result.failures] == [
        ("nan-cell", "non-finite coordinates (NaN) on site 1 (Cu)")
    ]


def test_inf_lattice_refused_before_density():
    s = Structure(Lattice([[np.inf, 0, 0], [0, 3.61, 0], [0, 0, 3.61]]), ["Cu"], [[0, 0, 0]])
    with pytest.raises(
        StructureInputError, match=r"non-finite lattice \(inf or overflow in lattice vector a\)"
    ):
        validate_structure(s, "inf.json")


def test_zero_volume_refused_and_left_handed_cell_accepted():
    flat = Structure(Lattice([[3.61, 0, 0], [0, 3.61, 0], [3.61, 3.61, 0]]), ["Cu"], [[0, 0, 0]])
    with pytest.raises(
        StructureInputError, match=r"flat.json: degenerate lattice \(cell volume 0 Å³"
    ):
        validate_structure(flat, "flat.json")
    # pymatgen's own lattice reductions return left-handed bases; the volume is |det| and they are fine
    left = Structure(
        Lattice([[-3.61, 0, 0], [0, 3.61, 0], [0, 0, 3.61]]),
        ["Cu"] * 4,
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    assert np.linalg.det(left.lattice.matrix) < 0
    validate_structure(left, "left.json")


def test_absurd_lattice_length_refused():
    tiny = Structure(Lattice.orthorhombic(0.05, 40, 40), ["H"], [[0, 0, 0]])
    with pytest.raises(StructureInputError, match=r"absurd lattice: vector a is 0.05 Å long"):
        validate_structure(tiny, "tiny.json")


def test_too_many_sites_names_the_limit_and_how_to_raise_it(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_SITES_ENV, raising=False)
    big = _cu(7, 7, 6)  # 1176 sites
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big.as_dict()))
    batch = read_structures([path])
    assert not batch.structures
    assert batch.failures[0].reason == (
        "cell has 1176 sites, more than the limit of 1000; raise it with MATFLOW_MAX_SITES=2000 or --max-sites"
    )
    monkeypatch.setenv(MAX_SITES_ENV, "2000")
    batch = read_structures([path])
    assert batch.ok and len(batch.structures[0].structure) == 1176


def test_max_sites_limits_construction(monkeypatch):
    monkeypatch.setenv(MAX_SITES_ENV, "5000")
    assert ValidationLimits().max_sites == DEFAULT_MAX_SITES == 1000
    assert ValidationLimits.from_env().max_sites == 5000
    assert ValidationLimits.from_env(max_sites=7, allow_partial_occupancy=True).max_sites == 7
    monkeypatch.setenv(MAX_SITES_ENV, "lots")
    with pytest.raises(
        ValueError, match="MATFLOW_MAX_SITES must be a whole number of at least 1, got 'lots'"
    ):
        ValidationLimits.from_env()
    with pytest.raises(ValueError, match="max_sites"):
        ValidationLimits(max_sites=0)


def test_huge_sparse_cell_does_not_exhaust_memory():
    """A grid neighbour search over a 1e4 Å cell would allocate tens of GB; the check must not."""
    rng = np.random.default_rng(0)
    s = Structure(Lattice.orthorhombic(6000, 6000, 0.6), ["Pb"] * 800, rng.random((800, 3)))
    assert validate_structure(s, "sparse.json") is s


# ---- per-item isolation in multi-structure files -------------------------------------------------


def test_json_list_keeps_good_items_and_names_the_bad_one(tmp_path, nacl):
    bad = nacl.as_dict()
    bad["sites"][1]["abc"][0] = float("nan")
    path = tmp_path / "many.json"
    path.write_text(
        json.dumps([nacl.as_dict(), nacl.as_dict(), nacl.as_dict(), bad, nacl.as_dict()])
    )
    batch = read_structures([path])
    assert [s.source for s in batch.structures] == [f"{path}@{i}" for i in (0, 1, 2, 4)]
    assert [(f.source, f.reason) for f in batch.failures] == [
        (f"{path}@3", "non-finite coordinates (NaN) on site 1 (Na)")
    ]


def test_extxyz_bad_middle_frame_and_truncated_last_frame(tmp_path):
    good = CU_FRAME.format(last="Cu 0 1.805 1.805")
    text = (
        good
        + CU_FRAME.format(last="Cu 0 nan 1.805")
        + good
        + "garbage line\n"
        + good
        + CU_FRAME.format(last="Zz 0 1.8 1.8")
        + good
        + good[:-40]
    )
    path = tmp_path / "traj.xyz"
    path.write_text(text)
    batch = read_structures([path])
    assert [s.source.split("@")[1] for s in batch.structures] == ["0", "2", "4", "6"]
    reasons = {f.source.split("@")[1]: f.reason for f in batch.failures}
    assert reasons["1"] == "non-finite coordinates (NaN) on site 3 (Cu)"
    assert reasons["3"].startswith("malformed extxyz frame (line 19 should hold the atom count")
    assert reasons["5"] == "unknown element symbol(s) 'Zz'"
    assert reasons["7"].startswith("truncated extxyz frame (line 38 says 4 atoms")
    assert all(f.source.startswith(str(path)) for f in batch.failures)


def test_extxyz_frame_with_too_few_atom_lines_does_not_eat_the_next_frame(tmp_path):
    short = CU_FRAME.format(last="").replace("Cu 1.805 0 1.805\n\n", "")
    path = tmp_path / "short.extxyz"
    path.write_text(short + CU_FRAME.format(last="Cu 0 1.805 1.805"))
    items = read_structure_items(path)
    assert (
        isinstance(items[0], FailedInput)
        and "says 4 atoms but 2 atom lines follow" in items[0].reason
    )
    assert isinstance(items[1], LoadedStructure) and items[1].source == f"{path}@1"


def test_multi_block_cif_keeps_good_blocks(tmp_path):
    good = (GOOD / "NaCl.cif").read_text()
    bad = (BAD / "unparseable_coordinates.cif").read_text()
    path = tmp_path / "blocks.cif"
    path.write_text(good + "\n" + bad + "\n" + good.replace("data_NaCl", "data_NaCl_2"))
    batch = read_structures([path])
    assert [s.source for s in batch.structures] == [f"{path}@0", f"{path}@2"]
    assert [f.source for f in batch.failures] == [f"{path}@1"]
    assert (
        "could not read atom coordinates (_atom_site_fract_y = '0.5x'" in batch.failures[0].reason
    )


def test_read_structure_file_still_raises_for_a_bad_item(tmp_path, nacl):
    bad = nacl.as_dict()
    bad["lattice"]["matrix"][2][2] = float("inf")
    path = tmp_path / "pair.json"
    path.write_text(json.dumps([nacl.as_dict(), bad]))
    with pytest.raises(
        StructureInputError,
        match=r"pair.json@1: non-finite lattice \(inf or overflow in lattice vector c\)",
    ):
        read_structure_file(path)
    assert len(read_structure_file(GOOD / "Cu.extxyz")) == 1


def test_read_structure_items_reports_a_whole_file_error_once(tmp_path):
    assert read_structure_items(BAD / "empty_list.json") == [
        FailedInput(str(BAD / "empty_list.json"), "JSON list holds no structures")
    ]
    assert read_structure_items(GOOD / "POSCAR_Si")[0].structure.composition.reduced_formula == "Si"
