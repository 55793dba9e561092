from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from matflow.generate.data import (
    CDVAEDataError,
    LatticeScaler,
    read_cdvae_csv,
    structure_to_data,
)
from matflow.generate.graph import edge_vectors, periodic_radius_graph, wrapped_frac_diff


def test_bad_rows_are_reported_not_fatal(tmp_path, perov_csv):
    with gzip.open(perov_csv, "rt") as handle:
        table = pd.read_csv(handle, nrows=3)
    table.loc[1, "cif"] = "data_broken\n_cell_length_a 1\n"
    table.loc[2, "heat_ref"] = float("nan")
    path = tmp_path / "mixed.csv"
    table.to_csv(path, index=False)
    crystals = read_cdvae_csv(path, property_column="heat_ref")
    assert len(crystals) == 1
    assert [row for row, _ in crystals.rejected] == [1, 2]
    assert "heat_ref is not finite" in crystals.rejected[1][1]


def test_missing_column_and_file_are_named(tmp_path):
    with pytest.raises(CDVAEDataError, match="not found"):
        read_cdvae_csv(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CDVAEDataError, match="no 'cif' column"):
        read_cdvae_csv(tmp_path / "x.csv")


def test_data_fields_and_scaler_round_trip(perov_set, scaler):
    structure = perov_set.structures[0]
    data = structure_to_data(structure, scaler, float(perov_set.properties[0]))
    assert data.frac_coords.shape == (5, 3) and data.lattice.shape == (1, 3, 3)
    assert data.atom_types.tolist() == list(structure.atomic_numbers)
    lattice = scaler.inverse_transform(data.lattice_norm[0].numpy(), len(structure))
    assert np.allclose(lattice.abc, structure.lattice.abc, atol=1e-4)
    again = LatticeScaler.from_dict(scaler.to_dict())
    assert np.allclose(again.transform(structure), scaler.transform(structure))


def test_wrapped_difference_is_shortest():
    diff = wrapped_frac_diff(torch.tensor([[0.95, 0.1, 0.5]]), torch.tensor([[0.05, 0.9, 0.5]]))
    assert torch.allclose(diff, torch.tensor([[-0.1, 0.2, 0.0]]), atol=1e-6)


def test_periodic_graph_matches_pymatgen_neighbours():
    structure = Structure(Lattice.from_parameters(3.1, 3.4, 3.9, 80, 95, 105), ["Na", "Cl"],
                         [[0.0, 0.0, 0.0], [0.4, 0.6, 0.5]])
    cutoff = 4.5
    frac = torch.tensor(structure.frac_coords, dtype=torch.float64)
    lattice = torch.tensor(structure.lattice.matrix).unsqueeze(0)
    edge_index, shifts = periodic_radius_graph(frac, lattice, torch.tensor([2]), cutoff, 1000)
    vectors = edge_vectors(frac, lattice, torch.zeros(2, dtype=torch.long), edge_index, shifts)
    ours = sorted(np.round(vectors.norm(dim=1).numpy(), 6))
    reference = sorted(round(n.nn_distance, 6) for site in structure.get_all_neighbors(cutoff)
                       for n in site)
    assert ours == reference


def test_max_neighbors_keeps_ties_and_caps():
    structure = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    frac = torch.tensor(structure.frac_coords, dtype=torch.float32)
    lattice = torch.tensor(structure.lattice.matrix, dtype=torch.float32).unsqueeze(0)
    edge_index, _ = periodic_radius_graph(frac, lattice, torch.tensor([1]), 4.4, 2)
    assert edge_index.shape[1] == 6  # six equal nearest images are all kept
    with pytest.raises(ValueError, match="num_atoms sums to 3"):
        periodic_radius_graph(frac, lattice, torch.tensor([3]), 4.4, 2)


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.floats(2.5, 6.0), min_size=3, max_size=3),
       angles=st.lists(st.floats(70.0, 110.0), min_size=3, max_size=3),
       coords=st.lists(st.lists(st.floats(-1.5, 2.5), min_size=3, max_size=3), min_size=1,
                       max_size=4))
def test_graph_distances_agree_with_pymatgen_on_random_cells(lengths, angles, coords):
    lattice = Lattice.from_parameters(*lengths, *angles)
    structure = Structure(lattice, ["C"] * len(coords), coords)
    cutoff = 4.0
    frac = torch.tensor(coords, dtype=torch.float64)  # deliberately not wrapped into [0, 1)
    cell = torch.tensor(lattice.matrix).unsqueeze(0)
    edge_index, shifts = periodic_radius_graph(frac, cell, torch.tensor([len(coords)]), cutoff,
                                               10_000)
    vectors = edge_vectors(frac, cell, torch.zeros(len(coords), dtype=torch.long), edge_index,
                           shifts)
    ours = np.sort(vectors.norm(dim=1).numpy())
    reference = np.sort([n.nn_distance for site in structure.get_all_neighbors(cutoff)
                         for n in site])
    # pairs within float noise of the cutoff, or of zero, may be counted by one side only
    ours = ours[(ours < cutoff - 1e-6) & (ours > 1e-6)]
    reference = reference[(reference < cutoff - 1e-6) & (reference > 1e-6)]
    assert np.allclose(ours, reference, atol=1e-6)


def test_unsupported_element_is_rejected():
    from matflow.generate.data import validate_structure

    structure = Structure(Lattice.cubic(4.0), ["Md"], [[0, 0, 0]])  # Z = 101
    with pytest.raises(CDVAEDataError, match="Z=101"):
        validate_structure(structure)
