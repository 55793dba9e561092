from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from matflow.generate.model import CDVAE
from matflow.generate.sample import (
    CDVAESamplingError,
    composition_counts,
    generate,
    reconstruct,
    write_cifs,
)


def test_composition_counts_sum_to_the_atom_count():
    counts = composition_counts(np.array([0.2, 0.2, 0.6, 0.0]), 5)
    assert counts.tolist() == [1, 1, 3, 0]
    assert composition_counts(np.array([0.5, 0.5]), 3).sum() == 3


def test_generate_returns_well_formed_structures(tiny_config, scaler):
    torch.manual_seed(0)
    model = CDVAE(tiny_config)
    structures = generate(model, scaler, 3, batch_size=2, seed=1, show_progress=False)
    assert len(structures) == 3
    for structure in structures:
        assert isinstance(structure, Structure)
        assert 1 <= len(structure) <= tiny_config.max_atoms
        assert np.all((structure.frac_coords >= 0) & (structure.frac_coords <= 1))
        assert structure.volume > 0
    again = generate(model, scaler, 3, batch_size=2, seed=1, show_progress=False)
    assert all(a == b for a, b in zip(structures, again, strict=True))


def test_reconstruct_with_teacher_forcing_keeps_cell_and_size(tiny_config, perov_set, scaler):
    torch.manual_seed(0)
    model = CDVAE(tiny_config)
    true = perov_set.structures[:2]
    out = reconstruct(model, scaler, true, teacher_forcing=True, show_progress=False)
    for pred, ref in zip(out, true, strict=True):
        assert len(pred) == len(ref)
        assert np.allclose(pred.lattice.matrix, ref.lattice.matrix, atol=1e-5)


def test_bad_sampling_arguments_are_named(tiny_config, scaler):
    model = CDVAE(tiny_config)
    with pytest.raises(CDVAESamplingError, match="num_samples=0"):
        generate(model, scaler, 0, show_progress=False)
    with pytest.raises(CDVAESamplingError, match="n_step_each=0"):
        generate(model, scaler, 1, n_step_each=0, show_progress=False)


def test_write_cifs_round_trip(tmp_path, perov_set):
    paths = write_cifs(perov_set.structures[:2], tmp_path / "cifs")
    assert [p.name for p in paths] == ["cdvae_0000.cif", "cdvae_0001.cif"]
    again = Structure.from_file(paths[0])
    assert again.composition == perov_set.structures[0].composition
    (tmp_path / "file").write_text("")
    with pytest.raises(CDVAESamplingError, match="not a directory"):
        write_cifs(perov_set.structures[:1], tmp_path / "file")
