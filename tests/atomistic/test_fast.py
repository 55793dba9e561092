"""The fast CHGNet calculator must reproduce stock CHGNet (energies, forces, stress, magmoms)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms


def _stock(atoms, stock_calc):
    a = atoms.copy()
    a.calc = stock_calc
    return (a.get_potential_energy(), a.get_forces(), a.get_stress(), a.get_magnetic_moments())


def test_fast_matches_stock_chgnet(crconi16, stock_calc, chgnet_model):
    from matflow.atomistic.fast import FastCHGNetCalculator

    e_ref, f_ref, s_ref, m_ref = _stock(crconi16, stock_calc)
    a = crconi16.copy()
    a.calc = FastCHGNetCalculator(chgnet_model)
    assert abs(a.get_potential_energy() - e_ref) / len(a) < 1e-5
    assert np.abs(a.get_forces() - f_ref).max() < 1e-5
    assert np.abs(a.get_stress() - s_ref).max() < 1e-6  # eV/Å³ (1.6e-4 GPa)
    assert np.abs(a.get_magnetic_moments() - m_ref).max() < 1e-5
    assert np.abs(f_ref).max() > 0.1  # the comparison is not trivially between zeros


def test_skin_reuse_is_exact_and_rebuilds_when_needed(crconi16, chgnet_model):
    from matflow.atomistic.fast import FastCHGNetCalculator

    reuse = FastCHGNetCalculator(chgnet_model, skin=1.0)
    fresh = FastCHGNetCalculator(chgnet_model, skin=0.0)
    a, b = crconi16.copy(), crconi16.copy()
    a.calc, b.calc = reuse, fresh
    rng = np.random.default_rng(0)
    for _ in range(4):  # small moves: neighbour list reused, results identical to a fresh search
        step = rng.normal(0, 0.04, a.positions.shape)
        a.positions += step
        b.positions += step
        assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-6
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-6
    assert reuse.n_neighbour_builds == 1
    assert fresh.n_neighbour_builds == 4
    reuse.calc_many([a.copy()])  # one-off batch lists must not replace the skinned MD list
    assert reuse._cache.skin == 1.0 and reuse.n_neighbour_builds == 1
    a.positions[0] += 0.6  # beyond skin/2: must rebuild
    b.positions[0] += 0.6
    assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-6
    assert reuse.n_neighbour_builds == 2


def test_batch_and_energy_only_agree_with_single(crconi16, cu4, fast_calc, stock_calc):
    structs = [crconi16, cu4.repeat((2, 1, 1))]
    structs[1].positions += np.random.default_rng(1).normal(0, 0.05, structs[1].positions.shape)
    batch = fast_calc.calc_many(structs, batch_size=2)
    for atoms, res in zip(structs, batch, strict=True):
        e_ref, f_ref, s_ref, _ = _stock(atoms, stock_calc)
        assert abs(res["energy"] - e_ref) / len(atoms) < 1e-5
        assert np.abs(res["forces"] - f_ref).max() < 1e-5
        assert res["stress"].shape == (3, 3)
    energies = fast_calc.energy_only(structs)
    np.testing.assert_allclose(energies, [r["energy"] for r in batch], atol=1e-4)


def test_lazy_energy_skips_gradients(crconi16, chgnet_model):
    from matflow.atomistic.fast import FastCHGNetCalculator

    a = crconi16.copy()
    a.calc = FastCHGNetCalculator(chgnet_model, lazy_energy=True)
    e = a.get_potential_energy()
    assert "forces" not in a.calc.results
    assert np.isfinite(e)


def test_unsupported_element_is_named(fast_calc):
    from matflow.atomistic.fast import UnsupportedElementError

    atoms = Atoms("Fm2", positions=[[0, 0, 0], [1.6, 1.6, 1.6]], cell=[3.2] * 3, pbc=True)
    atoms.calc = fast_calc
    with pytest.raises(UnsupportedElementError, match="Fm"):
        atoms.get_potential_energy()


def test_isolated_atoms_raise(fast_calc):
    from matflow.atomistic.fast import IsolatedAtomError

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[30, 30, 30], pbc=True)
    atoms.positions[1] = [15, 15, 15]
    atoms.calc = fast_calc
    with pytest.raises(IsolatedAtomError, match="no neighbour"):
        atoms.get_forces()


def test_vectorised_graph_holds_chgnet_bonds_and_angles(chgnet_model, fast_calc, cu4, crconi16):
    """Same directed edges, same undirected pairing and the same angle set as CHGNet's converter,
    including a one-atom cell whose bonds all join an atom to its own images."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    for atoms in (bulk("Cu", "fcc", a=3.61), cu4, crconi16, bulk("Si", "diamond", a=5.43)):
        ref = chgnet_model.graph_converter(AseAtomsAdaptor.get_structure(atoms))
        ours = fast_calc.graph(atoms, reuse=False)

        def edges(g):
            pairs, images = g.atom_graph.numpy(), g.neighbor_image.numpy().astype(int)
            return [(int(p[0]), int(p[1]), *map(int, img)) for p, img in zip(pairs, images, strict=True)]

        def angles(g, ids):
            return sorted((ids[int(r[2])], ids[int(r[4])]) for r in g.bond_graph.numpy())

        def undirected(g, ids):
            d2u = g.directed2undirected.numpy()
            groups: dict[int, set] = {}
            for k, u in enumerate(d2u):
                groups.setdefault(int(u), set()).add(ids[k])
            return sorted(tuple(sorted(v)) for v in groups.values())

        ref_ids, our_ids = edges(ref), edges(ours)
        assert sorted(ref_ids) == sorted(our_ids)
        assert angles(ref, ref_ids) == angles(ours, our_ids)
        assert undirected(ref, ref_ids) == undirected(ours, our_ids)
        u2d = ours.undirected2directed.numpy()
        assert (ours.directed2undirected.numpy()[u2d] == np.arange(len(u2d))).all()
