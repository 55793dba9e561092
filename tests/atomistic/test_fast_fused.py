"""The fused message-passing layers of FastCHGNetCalculator give stock CHGNet's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk


def _props(atoms, calc):
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy(), a.get_forces(), a.get_stress(), a.get_magnetic_moments()


def _assert_close(res, ref, n_atoms):
    (e, f, s, m), (e_ref, f_ref, s_ref, m_ref) = res, ref
    assert abs(e - e_ref) / n_atoms < 1e-5
    assert np.abs(f - f_ref).max() < 1e-5
    assert np.abs(s - s_ref).max() < 1e-6
    assert np.abs(m - m_ref).max() < 1e-5


def _cells():
    one_atom = bulk("Cu", "fcc", a=3.61)  # every bond joins the atom to its own images
    no_angles = bulk("Cu", "fcc", a=4.5, cubic=True)  # nearest neighbours 3.18 Å > 3 Å bond cutoff
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    nacl.positions += np.random.default_rng(2).normal(0, 0.08, nacl.positions.shape)
    return {"one_atom": one_atom, "no_angles": no_angles, "nacl": nacl}


@pytest.mark.parametrize("name", ["one_atom", "no_angles", "nacl"])
def test_fused_matches_stock_on_edge_cases(name, chgnet_model, stock_calc):
    from matflow.atomistic.fast import FastCHGNetCalculator

    atoms = _cells()[name]
    ref = _props(atoms, stock_calc)
    fused = FastCHGNetCalculator(chgnet_model)
    _assert_close(_props(atoms, fused), ref, len(atoms))
    assert fused._fused_model() is not None  # the fused layers, not the fallback, were compared


def test_fused_and_unfused_agree_on_a_batch(crconi16, cu4, chgnet_model):
    from matflow.atomistic.fast import FastCHGNetCalculator

    structs = [crconi16, cu4.repeat((2, 1, 1)), _cells()["nacl"]]
    structs[1].positions += np.random.default_rng(1).normal(0, 0.05, structs[1].positions.shape)
    fused = FastCHGNetCalculator(chgnet_model).calc_many(structs, batch_size=3)
    plain = FastCHGNetCalculator(chgnet_model, fused=False).calc_many(structs, batch_size=3)
    for a, b, atoms in zip(fused, plain, structs, strict=True):
        assert abs(a["energy"] - b["energy"]) / len(atoms) < 1e-5
        assert np.abs(a["forces"] - b["forces"]).max() < 1e-5
        assert np.abs(a["stress"] - b["stress"]).max() < 1e-6
        assert np.abs(a["magmoms"] - b["magmoms"]).max() < 1e-5
    feats = FastCHGNetCalculator(chgnet_model).crystal_features(structs)
    feats_plain = FastCHGNetCalculator(chgnet_model, fused=False).crystal_features(structs)
    np.testing.assert_allclose(feats, feats_plain, atol=1e-5)
    energies = FastCHGNetCalculator(chgnet_model).energy_only(structs)
    np.testing.assert_allclose(energies, [r["energy"] for r in plain], atol=1e-4)


def test_unsupported_layout_falls_back_to_stock_forward(crconi16, chgnet_model, stock_calc,
                                                        monkeypatch):
    import matflow.atomistic.fast as fast

    def refuse(self, model):
        raise fast._UnsupportedLayout("test layout")

    monkeypatch.setattr(fast._FusedCHGNet, "__init__", refuse)
    calc = fast.FastCHGNetCalculator(chgnet_model)
    with pytest.warns(UserWarning, match="not fused"):
        res = _props(crconi16, calc)
    assert calc._fused_model() is None
    _assert_close(res, _props(crconi16, stock_calc), len(crconi16))


def test_first_linear_refuses_unknown_layers():
    import torch

    from matflow.atomistic.fast import _first_linear, _UnsupportedLayout

    class Wrapped(torch.nn.Module):
        def __init__(self, *layers):
            super().__init__()
            self.layers = torch.nn.Sequential(*layers)

    linear, rest = _first_linear(Wrapped(torch.nn.Dropout(0.0), torch.nn.Linear(4, 2), torch.nn.SiLU()))
    assert linear.in_features == 4 and len(rest) == 1
    with pytest.raises(_UnsupportedLayout):
        _first_linear(Wrapped(torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)))
    with pytest.raises(_UnsupportedLayout):
        _first_linear(Wrapped(torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)))
