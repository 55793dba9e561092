"""The pipeline's predict step speaks to both kinds of registered model: MODNet-style regressors and
the phonon-DOS model (svib), in the same row layout."""

from __future__ import annotations

import math

from pymatgen.core import Lattice, Structure

from matflow.pipeline.steps import predict_structure


def test_dos_model_rows_have_the_regressors_layout():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    dos_rows = predict_structure(nacl, "svib", source="nacl")
    cv_rows = predict_structure(nacl, "alexandria_cv300", source="nacl")
    assert [r["target"] for r in dos_rows] == ["S_vib_305K", "Cv_305K"]
    assert set(dos_rows[0]) == set(cv_rows[0])
    for row in dos_rows:
        assert row["model"] == "svib" and row["unit"] == "J/K/mol-atom"
        assert row["lower"] < row["value"] < row["upper"] and math.isfinite(row["value"])
    # harmonic Cv per mole of atoms cannot exceed the classical 3R
    assert 0 < dos_rows[1]["value"] <= 3 * 8.314462618 + 1e-9
