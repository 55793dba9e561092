"""Structure input: every case of the bad-input corpus gets a message naming the file and the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from matflow.io import (
    StructureInputError,
    ValidationLimits,
    read_structure_file,
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
    formulas = {s.source.split("/")[-1]: s.structure.composition.reduced_formula for s in batch.structures}
    assert formulas == {"Cu.extxyz": "Cu", "Fe_bcc.json": "Fe", "NaCl.cif": "NaCl", "POSCAR_Si": "Si"}


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
    with pytest.raises(StructureInputError, match=r"structure.pdb: unknown structure format '.pdb'"):
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
