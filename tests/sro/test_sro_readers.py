"""Configuration readers for SRO and the file-level pipeline (analyze_files, format_table)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read as ase_read
from ase.io import write

from matflow.sro.analyze import analyze_files, format_table
from matflow.sro.lattice import DisorderedStructureError, ideal_supercell
from matflow.sro.readers import ConfigurationReadError, read_configurations
from matflow.sro.warren_cowley import warren_cowley

DATA = Path(__file__).resolve().parents[2] / "data" / "sro_warren_cowley"
DUMP = DATA / "fcc_ternary_4000atoms.dump.gz"

DISORDERED_CIF = """data_CuAu
_cell_length_a 3.75
_cell_length_b 3.75
_cell_length_c 3.75
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Cu1 Cu 0.0 0.0 0.0 0.5
Au1 Au 0.0 0.0 0.0 0.5
Cu2 Cu 0.5 0.5 0.0 1.0
Cu3 Cu 0.5 0.0 0.5 1.0
Cu4 Cu 0.0 0.5 0.5 1.0
"""


def decorated_l12(atoms, a):
    frac_cubic = np.mod(atoms.positions / a + 1e-9, 1.0)
    corner = np.all(np.isclose(frac_cubic, 0.0, atol=1e-6), axis=1)
    atoms.set_chemical_symbols(np.where(corner, "Au", "Cu"))
    return atoms


def write_triclinic_dump(path: Path, atoms, types) -> None:
    """A LAMMPS text dump of a triclinic box with scaled coordinates (xs ys zs)."""
    cell, _ = atoms.cell.standard_form()  # lower-triangular: a along x, b in xy
    frac = atoms.get_scaled_positions()
    lx, ly, lz = cell[0, 0], cell[1, 1], cell[2, 2]
    xy, xz, yz = cell[1, 0], cell[2, 0], cell[2, 1]
    xlo_b = min(0.0, xy, xz, xy + xz)
    xhi_b = lx + max(0.0, xy, xz, xy + xz)
    lines = [
        "ITEM: TIMESTEP",
        "100",
        "ITEM: NUMBER OF ATOMS",
        str(len(atoms)),
        "ITEM: BOX BOUNDS xy xz yz pp pp pp",
        f"{xlo_b} {xhi_b} {xy}",
        f"{min(0.0, yz)} {ly + max(0.0, yz)} {xz}",
        f"0.0 {lz} {yz}",
        "ITEM: ATOMS id type xs ys zs",
    ]
    lines += [
        f"{k + 1} {t} {f[0]} {f[1]} {f[2]}"
        for k, (t, f) in enumerate(zip(types, frac, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")


def test_lammps_dump_gz_with_type_map_and_frames():
    frames = read_configurations(DUMP, type_map={1: "Cr", 2: "Co", 3: "Ni"})
    assert len(frames) == 2
    assert frames[0].get_chemical_formula() == "Co1333Cr1334Ni1333"
    assert frames[0].info["species_order"] == ["Cr", "Co", "Ni"]
    last = read_configurations(DUMP, index="last")
    assert len(last) == 1 and last[0].info["timestep"] == 25
    assert warren_cowley(last[0]).species == ("type 1", "type 2", "type 3")
    with pytest.raises(ConfigurationReadError, match=r"type\(s\) \[2, 3\] not in type_map"):
        read_configurations(DUMP, type_map={1: "Cr"})


def test_triclinic_scaled_dump_gives_same_alpha_as_cubic(tmp_path):
    a = 3.75
    cubic = decorated_l12(ideal_supercell("fcc", a, 2), a)
    primitive = decorated_l12(bulk("Cu", "fcc", a=a).repeat((4, 4, 4)), a)
    types = np.where(np.asarray(primitive.get_chemical_symbols()) == "Au", 2, 1)
    path = tmp_path / "tri.lammpstrj"
    write_triclinic_dump(path, primitive, types)
    (atoms,) = read_configurations(path, type_map={1: "Cu", 2: "Au"})
    assert not np.allclose(atoms.cell.angles(), 90.0)
    got = warren_cowley(atoms, lattice="fcc", species=["Cu", "Au"]).alpha
    want = warren_cowley(cubic, lattice="fcc", species=["Cu", "Au"]).alpha
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_md_extxyz_traj_poscar_and_cif_round_trip(tmp_path):
    a = 3.6
    atoms = ideal_supercell("fcc", a, 2)
    atoms.set_chemical_symbols(np.random.default_rng(0).choice(["Ni", "Cr"], len(atoms)))
    moved = atoms.copy()
    moved.rattle(0.02, seed=1)
    write(tmp_path / "trajectory.extxyz", [atoms, moved], format="extxyz")  # as matflow md writes
    with gzip.open(tmp_path / "frames.xyz.gz", "wt") as fh:
        write(fh, [atoms, moved], format="extxyz")
    write(tmp_path / "relax.traj", [atoms, moved])
    write(tmp_path / "POSCAR", atoms, format="vasp")
    write(tmp_path / "cell.cif", atoms, format="cif")
    reference = warren_cowley(atoms, lattice="fcc").alpha
    for name, n_frames in (
        ("trajectory.extxyz", 2),
        ("frames.xyz.gz", 2),
        ("relax.traj", 2),
        ("POSCAR", 1),
        ("cell.cif", 1),
    ):
        frames = read_configurations(tmp_path / name)
        assert len(frames) == n_frames, name
        np.testing.assert_allclose(
            warren_cowley(frames[0], lattice="fcc").alpha, reference, atol=1e-9, err_msg=name
        )
    (last,) = read_configurations(tmp_path / "trajectory.extxyz", index="last")
    np.testing.assert_allclose(last.positions, moved.positions, atol=1e-6)


def test_disordered_cif_is_refused(tmp_path):
    path = tmp_path / "CuAu_disordered.cif"
    path.write_text(DISORDERED_CIF)
    with pytest.raises(DisorderedStructureError, match=r"CuAu_disordered\.cif.*partial occupancy"):
        read_configurations(path)
    # The same file read by ASE directly (occupancies kept in atoms.info) is refused too.
    with pytest.raises(DisorderedStructureError, match="partial occupancy on site 0"):
        warren_cowley(ase_read(path), lattice="fcc")


def test_bad_files_name_the_file_and_reason(tmp_path):
    with pytest.raises(ConfigurationReadError, match=r"missing\.dump: file not found"):
        read_configurations(tmp_path / "missing.dump")
    truncated = tmp_path / "cut.dump"
    truncated.write_text(gzip.decompress(DUMP.read_bytes()).decode()[:400])
    with pytest.raises(ConfigurationReadError, match=r"cut\.dump: malformed lammps-dump-text"):
        read_configurations(truncated)
    nan_xyz = tmp_path / "nan.xyz"
    nan_xyz.write_text(
        '2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
        "Cu 0 0 0\nCu nan 1.5 1.5\n"
    )
    with pytest.raises(
        ConfigurationReadError, match=r"nan\.xyz: frame 0: non-finite coordinates on atom 1"
    ):
        read_configurations(nan_xyz)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigurationReadError, match=r"notes\.txt: unknown configuration format"):
        read_configurations(tmp_path / "notes.txt")


def test_analyze_files_keeps_going_after_a_bad_file(tmp_path):
    expected = json.loads((DATA / "expected_warren_cowley.json").read_text())
    results = analyze_files(
        [DUMP, tmp_path / "missing.dump"],
        frames="last",
        type_map={1: "Cr", 2: "Co", 3: "Ni"},
        n_motif_random=5,
    )
    assert [r["ok"] for r in results] == [True, False]
    good, bad = results
    np.testing.assert_allclose(
        good["warren_cowley"]["alpha"][0], expected["wc_shell1_12nn"], atol=1e-6
    )
    assert (
        good["motifs"]["kl_bits"]
        > good["motifs"]["baseline_mean_bits"] + 5 * good["motifs"]["baseline_std_bits"]
    )
    assert good["length_scale"]["status"] in {"fitted", "short", "no_decay"}
    assert "missing.dump" in bad["reason"] and "file not found" in bad["reason"]
    json.dumps(results)  # records are JSON-able
    text = format_table(results)
    assert "Cr-Co" in text and "-0.2411" in text and "FAILED" in text
    averaged = analyze_files(
        DUMP, frames=":", average_frames=True, counts=[12, 6], n_motif_random=5
    )
    assert len(averaged) == 1 and averaged[0]["frames_averaged"] == 2
    np.testing.assert_allclose(averaged[0]["alpha_frame_std"], 0.0, atol=1e-12)


def test_analyze_files_refuses_bad_options_before_reading():
    with pytest.raises(ValueError, match="unknown lattice 'fcx'"):
        analyze_files([DUMP, "missing.dump"], lattice="fcx")
    with pytest.raises(ValueError, match="unknown significance"):
        analyze_files([DUMP], significance="exact")
