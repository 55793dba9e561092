"""Featurization: presets, structure-hash keys, cache, parallel equality and the NaN/inf policy."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure

from matflow.featurize import (
    PRESETS,
    FeatureCache,
    FeatureCleaner,
    featurize_compositions,
    featurize_files,
    featurize_structures,
    get_preset,
)
from matflow.featurize import runner as runner_module
from matflow.structures import structure_hash

DATA = Path(__file__).parent / "data"


@pytest.fixture
def cache(tmp_path) -> FeatureCache:
    return FeatureCache(tmp_path / "features.sqlite")


def test_structure_hash_is_stable_under_site_order_and_noise(nacl):
    shuffled = Structure(nacl.lattice, list(reversed(nacl.species)), list(reversed(nacl.frac_coords)))
    noisy = nacl.copy()
    noisy.translate_sites([0], [1e-9, 0, 0])
    assert structure_hash(nacl) == structure_hash(shuffled) == structure_hash(noisy)
    moved = nacl.copy()
    moved.translate_sites([0], [0.01, 0, 0])
    assert structure_hash(moved) != structure_hash(nacl)


def test_structure_preset_values(nacl, cache):
    result = featurize_structures([nacl], "structure", cache=cache)
    row = result.table.iloc[0]
    assert row["status"] == "ok"
    assert row.name == structure_hash(nacl)
    assert row["density|density"] == pytest.approx(nacl.density, rel=1e-6)
    assert row["symmetry|spacegroup_num"] == 225
    assert row["stoichiometry|0-norm"] == 2
    assert result.n_features == len(get_preset("structure").feature_labels())
    assert not np.isinf(result.features().to_numpy()).any()


def _yang_delta(radius_weights: dict[float, float]) -> float:
    """Yang and Zhang's atomic size difference δ from {radius: amount}."""
    total = sum(radius_weights.values())
    mean = sum(r * w for r, w in radius_weights.items()) / total
    return math.sqrt(sum(w / total * (1 - r / mean) ** 2 for r, w in radius_weights.items()))


def test_alloy_descriptors_only_for_metals(cache):
    result = featurize_compositions(["CoCrFeNi", "NaCl"], cache=cache)
    table = result.table.set_index("source")
    # Yang's δ = sqrt(Σ c_i (1 - r_i / r̄)²) with Miracle's radii Co 125, Cr 130, Fe 125, Ni 126 pm
    assert table.loc["CoCrFeNi", "yang|Yang delta"] == pytest.approx(_yang_delta({125: 2, 130: 1, 126: 1}),
                                                                     rel=1e-9)
    assert _yang_delta({125: 2, 130: 1, 126: 1}) == pytest.approx(0.016297, abs=1e-6)
    assert math.isnan(table.loc["NaCl", "yang|Yang delta"])
    assert math.isnan(table.loc["NaCl", "miedema|Miedema_deltaH_inter"])
    assert np.isfinite(table.loc["NaCl", "magpie|MagpieData mean Number"])


def test_cache_makes_rerun_do_no_work(nacl, cocrfeni, cache, monkeypatch):
    first = featurize_structures([nacl, cocrfeni], "structure", cache=cache)
    assert (first.n_computed, first.n_cached) == (2, 0)

    def must_not_run(*args, **kwargs):
        raise AssertionError("featurizer ran on a cached structure")

    monkeypatch.setattr(runner_module, "_featurize_one", must_not_run)
    second = featurize_structures([nacl, cocrfeni], "structure", cache=cache)
    assert (second.n_computed, second.n_cached) == (0, 2)
    pd.testing.assert_frame_equal(first.table, second.table)


def test_interrupted_run_keeps_the_rows_it_computed(nacl, cocrfeni, cache, monkeypatch):
    structures = [nacl, cocrfeni, nacl.copy().scale_lattice(nacl.volume * 1.1)]
    real = runner_module._featurize_one
    calls = []

    def stop_at_third(obj, built):
        calls.append(obj)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a user's Ctrl-C, or a scheduler killing the job
        return real(obj, built)

    monkeypatch.setattr(runner_module, "_featurize_one", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        featurize_structures(structures, "composition", cache=cache)
    monkeypatch.setattr(runner_module, "_featurize_one", real)
    rerun = featurize_structures(structures, "composition", cache=cache)
    assert (rerun.n_computed, rerun.n_cached) == (1, 2)


def test_parallel_matches_serial(nacl, cocrfeni, tmp_path):
    structures = [nacl, cocrfeni, nacl.copy().scale_lattice(nacl.volume * 1.1)]
    serial = featurize_structures(structures, "structure", n_jobs=1, use_cache=False)
    parallel = featurize_structures(structures, "structure", n_jobs=2, use_cache=False)
    pd.testing.assert_frame_equal(serial.table, parallel.table)


def test_failing_featurizer_is_reported_not_fatal(nacl, cache, monkeypatch):
    from matminer.featurizers.structure import DensityFeatures

    def boom(self, s):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(DensityFeatures, "featurize", boom)
    result = featurize_structures([nacl], "structure", use_cache=False)
    row = result.table.iloc[0]
    assert row["status"] == "ok"
    assert "density: synthetic failure" in row["errors"]
    assert math.isnan(row["density|density"])
    assert np.isfinite(row["symmetry|spacegroup_num"])


def test_inf_becomes_nan(nacl, monkeypatch):
    from matminer.featurizers.structure import DensityFeatures

    monkeypatch.setattr(DensityFeatures, "featurize", lambda self, s: [math.inf, -math.inf, 1.0])
    result = featurize_structures([nacl], "structure", use_cache=False)
    values = result.table.iloc[0][["density|density", "density|vpa", "density|packing fraction"]]
    assert values.isna().tolist() == [True, True, False]


def test_files_batch_lists_failures_in_table(tmp_path, cache):
    for name in ["NaCl.cif", "POSCAR_Si"]:
        shutil.copy(DATA / "good" / name, tmp_path / name)
    shutil.copy(DATA / "bad" / "overlapping_atoms.cif", tmp_path / "overlapping_atoms.cif")
    result = featurize_files([tmp_path], "structure", cache=cache)
    assert result.n_ok == 2
    failed = result.table[result.table["status"] == "failed"]
    assert len(failed) == 1
    assert failed["source"].iloc[0].endswith("overlapping_atoms.cif")
    assert "atoms too close" in failed["errors"].iloc[0]
    out = result.write(tmp_path / "t.parquet")
    back = pd.read_parquet(out)
    assert back.index.name == "structure_hash"
    assert len(back) == 3


def test_composition_preset_accepts_disorder(cache):
    disordered = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}] * 4,
                           [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    assert featurize_structures([disordered], "composition", cache=cache).n_ok == 1
    failed = featurize_structures([disordered], "structure", cache=cache)
    assert failed.n_ok == 0 and "partial occupancy" in failed.table["errors"].iloc[0]


def test_bad_compositions_are_listed(cache):
    result = featurize_compositions(["FeNi", "Xx2O", ""], cache=cache)
    assert result.n_ok == 1
    assert [f.source for f in result.failures] == ["Xx2O", ""]
    assert result.failures[0].reason.startswith("invalid composition (unknown element symbol(s) Xx")
    assert result.failures[1].reason.startswith("invalid composition (")


def test_feature_cleaner_policy():
    train = pd.DataFrame({"a": [1.0, np.nan, 3.0], "const": [2.0, 2.0, 2.0], "empty": [np.nan] * 3,
                          "b": [np.inf, 1.0, 2.0]})
    cleaner = FeatureCleaner().fit(train)
    assert list(cleaner.get_feature_names_out()) == ["a", "b"]
    out = cleaner.transform(pd.DataFrame({"a": [np.nan], "const": [5.0], "empty": [1.0], "b": [-np.inf]}))
    np.testing.assert_allclose(out, [[2.0, 1.5]])


def test_presets_have_unique_labels():
    for preset in PRESETS.values():
        labels = preset.feature_labels()
        assert len(labels) == len(set(labels)), preset.name


def test_composition_object_input(cache):
    result = featurize_compositions([Composition("Al0.5CoCrFeNi")], cache=cache)
    assert result.n_ok == 1
    row = result.table.iloc[0]
    assert row["stoichiometry|0-norm"] == 5
    # fraction-weighted mean atomic number: (0.5 x 13 + 27 + 24 + 26 + 28) / 4.5
    assert row["magpie|MagpieData mean Number"] == pytest.approx(111.5 / 4.5, rel=1e-12)
    assert row["yang|Yang delta"] == pytest.approx(_yang_delta({141: 0.5, 125: 2, 130: 1, 126: 1}), rel=1e-9)
