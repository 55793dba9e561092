"""Screening of generated crystals: de-duplication, hull proxy, failures kept per sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matflow.generate import screen


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a: float = 4.12) -> Structure:
    return Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_deduplicate_supercell_and_translation_are_duplicates():
    base = rocksalt()
    supercell = base * (2, 1, 1)
    shifted = base.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.13, 0.21, 0.07])
    other_lattice = rocksalt(7.0)  # 24 % larger: beyond ltol=0.2 without volume scaling
    out = screen.deduplicate([base, supercell, shifted, other_lattice, None, cscl()])
    assert [r["duplicate_of"] for r in out] == [None, 0, 0, None, None, None]
    assert out[4]["novel"] is None


def test_deduplicate_flags_reference_matches_as_not_novel():
    out = screen.deduplicate([rocksalt(5.7), cscl()], references=[cscl(4.1), rocksalt(5.64)],
                             reference_ids=["ref-cscl", "ref-nacl"])
    assert out[0]["reference_match"] == "ref-nacl" and out[0]["novel"] is False
    assert out[1]["reference_match"] == "ref-cscl" and out[1]["novel"] is False
    novel = screen.deduplicate([rocksalt(5.64)], references=[cscl()])
    assert novel[0]["novel"] is True and novel[0]["reference_match"] is None
    with pytest.raises(ValueError, match="reference_ids"):
        screen.deduplicate([cscl()], references=[cscl()], reference_ids=["a", "b"])


def test_dataset_references_filter_by_formula():
    ids, structures = screen.dataset_references("perov_5", formulas=["LaScO3"])
    assert ids and all(s.composition.reduced_formula == "LaScO3" for s in structures)
    assert all(i.split(":")[0] in ("val", "test") for i in ids)


def test_hull_proxy_reference_on_hull_and_compressed_copy_above(tmp_path):
    from pymatgen.io.ase import AseAtomsAdaptor

    from matflow.atomistic.potentials import load_potential

    ref = screen.elemental_reference("Cu", cache_dir=tmp_path, max_steps=60)
    assert (tmp_path / "hull_references" / "chgnet").is_dir()
    assert screen.elemental_reference("Cu", cache_dir=tmp_path, max_steps=60) == ref  # from cache
    relaxed = Structure.from_dict(ref["structure"])
    compressed = relaxed.copy()
    compressed.scale_lattice(relaxed.volume * 0.8)
    atoms = AseAtomsAdaptor.get_atoms(compressed)
    atoms.calc = load_potential("chgnet").calculator()
    e_compressed = float(atoms.get_potential_energy())
    hull = screen.hull_proxy([("ref", relaxed, ref["energy_eV_per_atom"] * len(relaxed)),
                              ("compressed", compressed, e_compressed)],
                             cache_dir=tmp_path, reference_max_steps=60)
    assert hull["ref"]["e_above_hull_eV_per_atom"] == pytest.approx(0.0, abs=1e-6)
    assert hull["compressed"]["e_above_hull_eV_per_atom"] > 0.01
    assert hull["compressed"]["hull_reason"] is None


def test_bad_sample_is_recorded_failure_others_finish(tmp_path):
    good = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    overlapping = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.05, 0, 0]])
    table = screen.screen_generated([good, overlapping, good.copy()], outdir=tmp_path / "out",
                                    max_steps=5, models=(), cache_dir=tmp_path / "cache",
                                    reference_max_steps=60)
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert "too close" in table.at[1, "reason"]
    assert not table.at[1, "structurally_valid"] and table.at[0, "structurally_valid"]
    assert math.isnan(table.at[1, "energy_eV_per_atom"])
    assert table.at[2, "duplicate_of"] == 0
    assert table.at[0, "rank"] == 1 and table["rank"].isna().tolist() == [False, True, True]
    assert np.isfinite(table.at[0, "e_above_hull_eV_per_atom"])
    assert (tmp_path / "out" / "screen.csv").is_file() and (tmp_path / "out" / "screen.parquet").is_file()
    cifs = sorted(p.name for p in (tmp_path / "out" / "relaxed").iterdir())
    assert cifs == ["cdvae_0000.cif"]  # the failure and the duplicate get no CIF


def test_relax_sample_non_finite_and_missing_model():
    bad = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]).as_dict()
    bad["sites"][0]["abc"] = [float("nan"), 0.0, 0.0]
    record = screen.relax_sample(bad, max_steps=2)
    assert record["ok"] is False and record["reason"]
    names, skipped = screen.available_models(("no_such_model",))
    assert names == [] and "no_such_model" in skipped


def test_cli_generate_relax_writes_screen_table(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from matflow.cli import app

    out = tmp_path / "gen"
    result = CliRunner().invoke(app, ["generate", "-n", "2", "--steps-per-level", "1", "-o",
                                      str(out), "--seed", "3", "--relax", "--max-steps", "8"])
    assert result.exit_code == 0, result.output
    assert (out / "generated.csv").is_file() and "relaxed" in result.stdout
    table = pd.read_csv(out / "screen.csv")
    assert list(table["id"]) == ["cdvae_0000", "cdvae_0001"] and len(table) == 2
    for column in ("formula", "structurally_valid", "compositionally_valid", "duplicate_of",
                   "novel", "energy_eV_per_atom", "e_above_hull_eV_per_atom", "status", "reason"):
        assert column in table.columns
    ok = table[table["status"] == "ok"]
    assert len(ok) >= 1 and ok["energy_eV_per_atom"].notna().all()
    assert any(c.startswith("matbench_phonons:") for c in table.columns)
    bad = CliRunner().invoke(app, ["generate", "-n", "1", "-o", str(tmp_path / "x"), "--relax",
                                   "--potential", "nope"])
    assert bad.exit_code == 2 and "--potential" in bad.output


def test_elemental_reference_molecules_and_elements_without_ase_crystal(tmp_path):
    oxygen = screen.elemental_reference("O", cache_dir=tmp_path, max_steps=20)
    sulfur = screen.elemental_reference("S", cache_dir=tmp_path, max_steps=20)
    assert oxygen["reference"] == "dimer in box" and len(oxygen["structure"]["sites"]) == 2
    assert sulfur["reference"].endswith("prototype")
    assert math.isfinite(oxygen["energy_eV_per_atom"]) and math.isfinite(sulfur["energy_eV_per_atom"])
