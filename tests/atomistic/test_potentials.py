"""Universal-potential choice: names, offline loading, batched energies, provenance."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from matflow.atomistic.potentials import (
    UnknownPotentialError,
    available_potentials,
    canonical_name,
    load_potential,
)


def test_available_names_and_aliases():
    names = available_potentials()
    assert names[0] == "chgnet" and "sevenn-0" in names
    assert canonical_name("SevenN:7net-0") == "sevenn-0"
    assert canonical_name("sevenn:l3i5") == "sevenn-l3i5"


def test_unknown_name_lists_available():
    with pytest.raises(UnknownPotentialError, match=r"'mace-mp'.*available: chgnet, sevenn-0"):
        load_potential("mace-mp")
    with pytest.raises(ValueError, match="sevenn-omat"):
        load_potential("sevenn-omat")  # would need a download: not offered


def test_chgnet_energies_match_its_calculator(crconi16, cu4):
    pot = load_potential("chgnet")
    assert load_potential() is pot  # loaded once per process
    energies = pot.energies([crconi16, cu4])
    for atoms, e in zip((crconi16, cu4), energies, strict=True):
        work = atoms.copy()
        work.calc = pot.calculator()
        assert e == pytest.approx(work.get_potential_energy(), abs=1e-4)
    prov = pot.provenance()
    assert prov["model"] == "CHGNet 0.3.0" and len(prov["weights_sha256"]) == 64


def test_sevenn_loads_offline_and_gives_energies(monkeypatch, cu4):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("loading a potential tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pot = load_potential("sevenn:7net-0")
    assert pot.name == "sevenn-0"
    cell = bulk("Ni", "fcc", a=3.52, cubic=True)
    e_ni, e_cu = pot.energies([cell, cu4])
    # cohesive energies: about -5.5 eV/atom (Ni) and -4.1 eV/atom (Cu) in PBE (MPtrj reference)
    assert -6.5 < e_ni / 4 < -4.5 and -5.0 < e_cu / 4 < -3.0
    assert pot.provenance()["package"] == "sevenn"
    forces = pot.calculator().get_forces(cell)
    assert np.abs(forces).max() < 1e-3  # ideal fcc: forces vanish by symmetry
