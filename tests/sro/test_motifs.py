"""Chemical motifs, their KL divergence against randomness, the SRO length scale and the plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matflow.sro.lattice import ideal_supercell, shell_neighbours
from matflow.sro.motifs import (
    motif_distribution,
    motif_kl,
    random_motif_distribution,
    sro_length_scale,
)
from matflow.sro.plots import plot_alpha_vs_shell, plot_alpha_vs_temperature, plot_motifs
from matflow.sro.warren_cowley import WarrenCowley, types_and_species, warren_cowley

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def l12_types(size: int = 3, a: float = 3.75):
    atoms = ideal_supercell("fcc", a, size)
    corner = np.all(np.isclose(np.mod(atoms.positions / a + 1e-9, 1.0), 0.0, atol=1e-6), axis=1)
    return atoms, corner.astype(np.intp)  # 0 = Cu, 1 = Au


def random_types(n: int, conc=(0.5, 0.3, 0.2), seed: int = 5):
    counts = np.round(np.asarray(conc) * n).astype(int)
    counts[0] += n - counts.sum()
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(conc)), counts))


def test_l12_motifs_are_exactly_two():
    atoms, types = l12_types()
    nb = shell_neighbours(atoms, lattice="fcc")
    motifs = motif_distribution(types, nb, 2)
    n = len(atoms)
    assert motifs == {(0, (8, 4)): 3 * n // 4, (1, (12, 0)): n // 4}


def test_random_motif_distribution_is_multinomial():
    probs = random_motif_distribution([0.25, 0.75], 2)
    # centre c × multinomial over two neighbours
    assert probs[(0, (2, 0))] == pytest.approx(0.25 * 0.25**2)
    assert probs[(0, (1, 1))] == pytest.approx(0.25 * 2 * 0.25 * 0.75)
    assert probs[(1, (0, 2))] == pytest.approx(0.75 * 0.75**2)
    assert sum(random_motif_distribution([0.5, 0.3, 0.2], 12).values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        random_motif_distribution([0.5, 0.6], 12)


def test_motif_kl_random_near_baseline_and_l12_far_above():
    atoms = ideal_supercell("fcc", 3.6, 5)
    nb = shell_neighbours(atoms, lattice="fcc")
    rnd = motif_kl(random_types(len(atoms)), nb, 3, n_random=30, seed=1)
    assert rnd.baseline_std_bits > 0
    assert abs(rnd.excess_sigma) < 3
    assert rnd.kl_bits == pytest.approx(rnd.baseline_mean_bits, abs=4 * rnd.baseline_std_bits)

    l12_atoms, l12 = l12_types()
    nb12 = shell_neighbours(l12_atoms, lattice="fcc")
    ordered = motif_kl(l12, nb12, 2, n_random=30, seed=1, species=("Cu", "Au"))
    assert ordered.exceeds_baseline
    assert ordered.kl_bits > 10 * ordered.baseline_mean_bits
    # Exact: KL = sum_p p log2(p/q) over the two motifs.
    q_cu = 0.75 * math.comb(12, 4) * 0.75**8 * 0.25**4
    q_au = 0.25 * 0.75**12
    expected = 0.75 * math.log2(0.75 / q_cu) + 0.25 * math.log2(0.25 / q_au)
    assert ordered.kl_bits == pytest.approx(expected, rel=1e-9)
    top = ordered.top(2)
    assert {t["motif"] for t in top} >= {"Cu: Cu×8 Au×4"}
    assert ordered.to_dict()["exceeds_baseline"] is True


def test_length_scale_random_cell_says_no_decay():
    atoms = ideal_supercell("fcc", 3.6, 5)
    types = random_types(len(atoms))
    nb = shell_neighbours(atoms, lattice="fcc", n_shells=3)
    result = sro_length_scale(warren_cowley(types, nb))
    assert result["status"] == "no_decay"
    assert result["decay_length_A"] is None
    assert "random" in result["reason"]


def _synthetic_wc(radii, rms, noise=1e-4):
    """Binary equiatomic α with a chosen rms per shell: α_AB = -α_AA = -rms (weights 1/4 each)."""
    n = len(radii)
    alpha = np.zeros((n, 2, 2))
    for m, value in enumerate(rms):
        alpha[m] = [[value, -value], [-value, value]]
    std = np.full_like(alpha, noise)
    band = np.stack([-1.96 * std, 1.96 * std], axis=-1)
    return WarrenCowley(
        ("A", "B"),
        np.array([0.5, 0.5]),
        alpha,
        np.asarray(radii),
        [12] * n,
        alpha / noise,
        band,
        4000,
        "analytic",
        np.zeros_like(alpha),
        std,
    )


def test_length_scale_fits_exponential_decay():
    radii = np.array([2.5, 3.6, 4.4, 5.1])
    xi = 1.7
    result = sro_length_scale(_synthetic_wc(radii, 0.3 * np.exp(-radii / xi)))
    assert result["status"] == "fitted"
    assert result["decay_length_A"] == pytest.approx(xi, rel=1e-9)
    assert result["amplitude"] == pytest.approx(0.3, rel=1e-9)
    # Order confined to shell 1: only an upper bound on the length.
    short = sro_length_scale(_synthetic_wc(radii[:2], [0.3, 0.0]))
    assert short["status"] == "short" and short["decay_length_A"] is None
    assert 0 < short["decay_length_upper_bound_A"] < 1.1


def test_plots_write_png_files(tmp_path):
    atoms, types = l12_types(size=2)
    atoms.set_chemical_symbols(np.where(types == 1, "Au", "Cu"))
    nb = shell_neighbours(atoms, lattice="fcc")
    wc = warren_cowley(atoms, nb)
    codes, names = types_and_species(atoms)
    stats = motif_kl(codes, nb, len(names), n_random=5, species=names)
    records = [
        {"temperature": t, "warren_cowley": wc if t < 500 else wc.to_dict()}
        for t in (300.0, 600.0, 900.0)
    ]
    paths = [
        plot_alpha_vs_temperature(records, tmp_path / "t.png"),
        plot_alpha_vs_shell(wc, tmp_path / "shell.png"),
        plot_motifs(stats, tmp_path / "motifs.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motifs.png", "shell.png", "t.png"]
    with pytest.raises(ValueError, match="temperature"):
        plot_alpha_vs_temperature([{"warren_cowley": wc}], tmp_path / "x.png")
