"""CHGNet energetics of random fcc/bcc/hcp solid solutions as phase evidence."""

from __future__ import annotations

import numpy as np
import pytest

from matflow.screening.phases import BCC, FCC, HCP, MP, OMEGA
from matflow.screening.sources.energetics import (
    EnergeticsSource,
    lattice_cell,
    site_counts,
    support,
)


def record(fcc: float, bcc: float, hcp: float, spread: float = 0.0) -> dict:
    """An ``energies`` record with the given mixing energies (meV/atom)."""
    lattices = {k: {"mixing_meV_per_atom": v, "spread_meV_per_atom": spread,
                    "energy_eV_per_atom": v / 1000}
                for k, v in (("FCC", fcc), ("BCC", bcc), ("HCP", hcp))}
    return {"lattices": lattices}


def test_clear_lowest_lattice_is_supported_with_ignorance_kept():
    source = EnergeticsSource()
    m, detail = source.mass_from_energies(record(-40.0, 10.0, 30.0))
    assert detail["supported_lattices"] == ["FCC"]
    assert m[FCC] == pytest.approx(support(50.0, 5.0, 30.0, 0.6))
    assert m[OMEGA] == pytest.approx(1 - m[FCC]) and m[OMEGA] >= 0.4
    assert m[MP] == 0  # negative mixing energy: no MP support


def test_tied_lattices_share_support_and_positive_mixing_supports_mp():
    source = EnergeticsSource()
    m, detail = source.mass_from_energies(record(20.0, 80.0, 22.0))
    assert detail["supported_lattices"] == ["FCC", "HCP"]
    assert m[FCC] == 0 and m[HCP] == 0 and m[FCC | HCP] > 0
    assert m[MP] > 0 and detail["conflict"] > 0
    assert m.sum() == pytest.approx(1.0) and m[0] == 0


def test_differences_within_noise_give_vacuous_mass():
    m, _ = EnergeticsSource(noise_meV=5.0).mass_from_energies(record(-3.0, -1.0, 0.0))
    assert m[OMEGA] == pytest.approx(1.0)
    # the realisation spread raises the noise floor
    m_noisy, _ = EnergeticsSource().mass_from_energies(record(-40.0, 10.0, 30.0, spread=40.0))
    m_clean, _ = EnergeticsSource().mass_from_energies(record(-40.0, 10.0, 30.0))
    assert m_noisy[FCC] < m_clean[FCC]


def test_supercells_and_counts():
    for lattice, max_atoms in (("FCC", 32), ("BCC", 32), ("HCP", 32), ("BCC", 8)):
        cell = lattice_cell(lattice, 12.0, max_atoms)
        assert len(cell) == max_atoms
        assert cell.get_volume() / len(cell) == pytest.approx(12.0)
    counts = site_counts({"Al": 0.1, "Co": 0.3, "Cr": 0.3, "Ni": 0.3}, 32)
    assert counts == {"Al": 3, "Co": 10, "Cr": 10, "Ni": 9}  # largest remainders 0.6 get the two
    assert site_counts({"Al": 0.01, "Ni": 0.99}, 8) == {"Al": 1, "Ni": 7}  # every element present
    with pytest.raises(ValueError, match="raise max_atoms"):
        site_counts({e: 0.2 for e in ("Co", "Cr", "Fe", "Mn", "Ni")}, 4)


def test_chgnet_on_tiny_cuni_cells_is_cached(tmp_path):
    source = EnergeticsSource(max_atoms=8, n_realisations=1, relax_steps=5, cache_dir=str(tmp_path))
    source.fit([{"Cu": 0.5, "Ni": 0.5}], ["FCC"])
    first = source.energies("CuNi")
    lat = first["lattices"]
    assert not first["cached"] and first["seconds"] > 0
    assert {v["n_sites"] for v in lat.values()} == {8}
    assert lat["BCC"]["mixing_meV_per_atom"] > lat["FCC"]["mixing_meV_per_atom"]
    assert first["references"]["Cu"]["structure"] in ("FCC", "HCP")
    m = source.masses([{"Cu": 0.5, "Ni": 0.5}])[0]
    assert m[BCC] == 0 and m[OMEGA] > 0.3 and m.sum() == pytest.approx(1.0)
    again = source.energies({"Ni": 0.5, "Cu": 0.5})
    assert again["cached"] and again["lattices"] == lat
    assert len(list(tmp_path.rglob("*.json"))) == 3  # Cu, Ni, CuNi


def test_elements_beyond_chgnet_are_vacuous(tmp_path):
    source = EnergeticsSource(cache_dir=str(tmp_path))
    m = source.masses([{"Cu": 0.5, "Cm": 0.5}])
    np.testing.assert_allclose(m[0, OMEGA], 1.0)
    assert "Cm" in source.explain({"Cu": 0.5, "Cm": 0.5})["note"]
    with pytest.raises(ValueError, match="max_support"):
        EnergeticsSource(max_support=1.0).fit([{"Cu": 0.5, "Ni": 0.5}], ["FCC"])


def test_one_failing_alloy_gets_vacuous_mass_and_a_reason(tmp_path, monkeypatch):
    source = EnergeticsSource(cache_dir=str(tmp_path))
    good = record(fcc=-40.0, bcc=10.0, hcp=5.0)

    def energies(composition):
        if "Fe" in composition:
            raise ValueError("FeNi FCC #0: relaxation ended with energy nan eV/atom")
        return good

    monkeypatch.setattr(source, "energies", energies)
    with pytest.warns(RuntimeWarning, match="CHGNet energetics failed for Fe0.5000Ni0.5000"):
        m = source.masses([{"Cu": 0.5, "Ni": 0.5}, {"Fe": 0.5, "Ni": 0.5}])
    assert m[0, FCC] > 0 and m[0, OMEGA] < 1
    np.testing.assert_allclose(m[1], np.eye(16)[OMEGA])
    assert "nan" in source.failures_["Fe0.5000Ni0.5000"]
    with pytest.warns(RuntimeWarning):
        assert "vacuous" in source.explain({"Fe": 0.5, "Ni": 0.5})["note"]
