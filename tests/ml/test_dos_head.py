"""The phonon-DOS head: normalised non-negative output, masked partial-label loss, registry round trip,
and learning an Einstein-solid family from Cv(300 K) and DOS labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matflow.atomistic.thermo import FrequencyGrid, dos_grid, harmonic_thermo
from matflow.ml.dos import (
    CALIBRATION_TEMPERATURES_K,
    DOSHeadRegressor,
    DOSNet,
    coarse_to_fine,
    loss_terms,
    prepare_targets,
    stretch_dos,
)
from matflow.ml.registry import load
from matflow.ml.svib import load_potential_labels, save_dos_model

GRID = FrequencyGrid()
CURVE_T = (100.0, 300.0, 600.0)


def _einstein_family(n: int, seed: int = 0):
    """Features x in [0, 1]^3; material i is an Einstein solid at nu = 2 + 12 x0 THz (x1, x2 noise)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, 3))
    nu = 2.0 + 12.0 * X[:, 0]
    dos = np.stack([dos_grid([v], [3.0], GRID) for v in nu])
    return X, nu, dos


def _einstein(nu: np.ndarray, temps) -> dict:
    return harmonic_thermo(GRID.centres_THz, np.stack([dos_grid([v], [3.0], GRID) * GRID.bin_THz for v in nu]),
                           temps)


@pytest.mark.parametrize("scale", [0.0, 1.0, 30.0, 1e3])
def test_dos_output_is_normalised_and_non_negative(scale):
    net = DOSNet(7, (16, 16), 240, seed=3).double()
    x = torch.as_tensor(np.random.default_rng(int(scale)).normal(scale=scale + 1e-3, size=(25, 7)))
    with torch.no_grad():
        dos = coarse_to_fine(net(x).exp(), 5)
    assert dos.shape == (25, GRID.n_bins)
    assert torch.all(dos >= 0)
    np.testing.assert_allclose(dos.sum(-1).numpy() * GRID.bin_THz, 3.0, rtol=1e-10)


def _batch_labels(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    y = prepare_targets({"cv300": rng.uniform(15, 25, n), "peak_THz": rng.uniform(3, 20, n),
                         "S_pot": rng.uniform(5, 40, (n, len(CURVE_T))),
                         "dos_pot": np.stack([dos_grid([v], [3.0], GRID) for v in rng.uniform(2, 15, n)])},
                        n, len(CURVE_T))
    return {k: torch.as_tensor(v) for k, v in y.items()}


def _terms(log_p, labels):
    scales = {k: torch.tensor(2.0) for k in ("cv300", "peak_THz", "S_dft", "Cv_dft", "S_pot", "Cv_pot", "dos_pot")}
    return loss_terms(log_p, labels, scales, factor=5, bin_THz=0.5, curve_T=CURVE_T, peak_alpha=0.02,
                      peak_coef=(1.04, -0.87))


@torch.no_grad()
def test_a_material_without_a_label_leaves_that_term_unchanged():
    rng = np.random.default_rng(0)
    net = DOSNet(4, (8,), 240, seed=1).double()
    x = torch.as_tensor(rng.normal(size=(6, 4)))
    labels = _batch_labels(6, rng)
    base = _terms(net(x), labels)
    # a seventh material with no label at all: every term and count stays
    x7 = torch.cat([x, torch.as_tensor(rng.normal(size=(1, 4)))])
    blank = {k: torch.cat([v, torch.full((1, *v.shape[1:]), float("nan"), dtype=v.dtype)]) for k, v in labels.items()}
    with_blank = _terms(net(x7), blank)
    for key, (value, count) in base.items():
        assert with_blank[key][1] == count
        assert float(with_blank[key][0]) == pytest.approx(float(value), rel=1e-12, abs=1e-15)
    # the same material with a Cv(300 K) label changes that term only
    labelled = {k: v.clone() for k, v in blank.items()}
    labelled["cv300"][-1] = 5.0
    changed = _terms(net(x7), labelled)
    assert changed["cv300"][1] == base["cv300"][1] + 1
    assert float(changed["cv300"][0]) != pytest.approx(float(base["cv300"][0]))
    assert float(changed["peak_THz"][0]) == pytest.approx(float(base["peak_THz"][0]), rel=1e-12)
    # terms nobody has a label for contribute exactly 0 with count 0
    assert float(base["S_dft"][0]) == 0.0 and base["S_dft"][1] == 0


def test_gradient_of_a_masked_row_is_zero():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(3, 4)))
    net = DOSNet(4, (8,), 240, seed=2).double()
    labels = _batch_labels(3, rng)
    labels = {k: v.clone() for k, v in labels.items()}
    for v in labels.values():
        v[2] = float("nan")
    xg = x.clone().requires_grad_(True)
    total = sum(value for value, count in _terms(net(xg), labels).values() if count)
    total.backward()
    assert torch.all(xg.grad[2] == 0) and torch.any(xg.grad[0] != 0)


def test_prepare_targets_names_bad_terms():
    with pytest.raises(ValueError, match="unknown label term"):
        prepare_targets({"cv_300": np.zeros(3)}, 3, 2)
    with pytest.raises(ValueError, match="'cv300': shape"):
        prepare_targets({"cv300": np.zeros(4)}, 3, 2)
    with pytest.raises(ValueError, match="no material carries any label"):
        DOSHeadRegressor(n_estimators=1, epochs=1).fit(np.zeros((4, 2)), {"cv300": np.full(4, np.nan)})


@pytest.fixture(scope="module")
def einstein_fit():
    X, nu, dos = _einstein_family(160)
    train, test = np.arange(120), np.arange(120, 160)
    cv300 = _einstein(nu, [300.0])["Cv_J_per_K_mol_atom"][:, 0]
    y = {"cv300": np.where(np.arange(160) % 2 == 0, cv300, np.nan), "dos_pot": dos}
    y = {k: v[train] for k, v in y.items()}
    est = DOSHeadRegressor(hidden=(32, 32), epochs=150, patience=40, lr=5e-3, batch_size=32, n_estimators=2,
                           potential_weight=1.0, random_state=0).fit(X[train], y)
    return est, X, nu, train, test


def test_fit_recovers_an_einstein_family(einstein_fit):
    est, X, nu, _, test = einstein_fit
    truth = _einstein(nu[test], [300.0, 305.0])
    pred = est.predict_thermo(X[test], [300.0, 305.0])
    cv_mae = np.abs(pred.Cv[:, 0] - truth["Cv_J_per_K_mol_atom"][:, 0]).mean()
    s_mae = np.abs(pred.S[:, 1] - truth["S_J_per_K_mol_atom"][:, 1]).mean()
    spread = np.abs(truth["S_J_per_K_mol_atom"][:, 1] - truth["S_J_per_K_mol_atom"][:, 1].mean()).mean()
    assert cv_mae < 0.5  # Cv(300 K) spans ~8 J/K/mol over the family
    assert s_mae < 0.25 * spread  # S(305 K) was never a label: it follows from the learned DOS
    mean_nu = (est.predict_dos(X[test]) * GRID.bin_THz * GRID.centres_THz).sum(-1) / 3.0
    assert np.abs(mean_nu - nu[test]).mean() < 1.0


def test_thermo_of_a_prediction_is_consistent(einstein_fit):
    est, X, *_ = einstein_fit
    temps = np.array([300.0, 301.0, 302.0, 5000.0])
    pred = est.predict_thermo(X[:5], temps)
    np.testing.assert_allclose(pred.F, pred.U - temps * pred.S / 1000.0, atol=1e-9)
    dF = (pred.F[:, 2] - pred.F[:, 0]) / 2.0 * 1000.0  # J per K
    np.testing.assert_allclose(-dF, pred.S[:, 1], rtol=1e-4)
    np.testing.assert_allclose(pred.Cv[:, 3], 3 * 8.314462618, rtol=2e-3)
    np.testing.assert_array_equal(pred.dos, est.predict_dos(X[:5]))  # the DOS the functions come from


def test_save_load_round_trip_reproduces_predictions(einstein_fit, tmp_path):
    est, X, *_ = einstein_fit
    names = ["x0", "x1", "x2"]
    folder = save_dos_model(est, tmp_path / "svib_tiny" / "v1", name="svib_tiny", version="v1",
                            feature_names=names, label_sources={"summary": ["synthetic Einstein solids"]})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "matflow-dos" and "synthetic Einstein solids" in (folder / "README.md").read_text()
    loaded = load("svib_tiny", root=tmp_path)
    assert loaded.manifest["weights"]["sha256"] == manifest["weights"]["sha256"]
    a, b = est.predict_thermo(X[:7], [50.0, 305.0, 900.0]), loaded.estimator.predict_thermo(X[:7], [50.0, 305.0, 900.0])
    np.testing.assert_allclose(a.S, b.S, rtol=1e-5)
    np.testing.assert_allclose(a.S_upper, b.S_upper, rtol=1e-5)
    np.testing.assert_allclose(est.predict_dos(X[:7]), loaded.estimator.predict_dos(X[:7]), rtol=1e-4, atol=1e-7)
    assert np.isnan(b.S_upper[:, 2]).all()  # 900 K is outside the calibrated 5-800 K


def test_a_corrupt_dos_model_is_refused(einstein_fit, tmp_path):
    est, *_ = einstein_fit
    folder = save_dos_model(est, tmp_path / "svib_tiny" / "v1", name="svib_tiny", version="v1",
                            feature_names=["x0", "x1", "x2"], label_sources={})
    blob = (folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(blob[:-10])
    with pytest.raises(ValueError, match="sha256"):
        load("svib_tiny", "v1", root=tmp_path)


def test_interval_is_calibrated_on_out_of_fold_rows():
    X, nu, dos = _einstein_family(60, seed=4)
    th = _einstein(nu, CALIBRATION_TEMPERATURES_K)
    y = {"dos_pot": dos, "S_cal": th["S_J_per_K_mol_atom"], "Cv_cal": th["Cv_J_per_K_mol_atom"]}
    est = DOSHeadRegressor(hidden=(16,), epochs=20, n_estimators=3, min_calibration=20).fit(X, y)
    assert est.calibrated_ and est.n_calibration_ == 36  # 5 folds of 12 rows, 3 of them skipped by a member
    assert np.all(np.isfinite(est.q_S_)) and np.all(est.q_S_ >= 0)
    pred = est.predict_thermo(X[:3], [305.0])
    assert np.all(pred.S_lower <= pred.S) and np.all(pred.S <= pred.S_upper)


def test_potential_labels_of_an_empty_folder(tmp_path):
    table, snap = load_potential_labels(tmp_path)
    assert table.empty and snap["potential"] is None and snap["counts"] == {}


def test_potential_stretch_moves_the_potential_dos_onto_the_dft_peaks():
    X, nu, dos = _einstein_family(40, seed=5)
    y = {"dos_pot": dos, "peak_THz": 1.2 * nu}  # DFT 20 % stiffer than the "potential"
    est = DOSHeadRegressor(hidden=(8,), epochs=2, n_estimators=1).fit(X, y)
    assert est.stretch_ == pytest.approx(1.2, abs=0.03)
    stretched = DOSHeadRegressor._stretched(prepare_targets(y, 40, len(CURVE_T)), 1.2)
    mean_nu = (stretched["dos_pot"] * GRID.bin_THz * GRID.centres_THz).sum(-1) / 3.0
    np.testing.assert_allclose(mean_nu, 1.2 * nu, atol=0.1)
    np.testing.assert_allclose(stretched["dos_pot"].sum(-1) * GRID.bin_THz, 3.0, rtol=1e-9)
    np.testing.assert_allclose(stretch_dos(dos, 1.2), stretched["dos_pot"])  # one definition of the stretch
    einstein_S = harmonic_thermo(GRID.centres_THz, stretch_dos(dos[:1], 2.0) * GRID.bin_THz, [300.0])
    assert einstein_S["S_J_per_K_mol_atom"][0, 0] < harmonic_thermo(
        GRID.centres_THz, dos[:1] * GRID.bin_THz, [300.0])["S_J_per_K_mol_atom"][0, 0]  # stiffer: less entropy
    assert DOSHeadRegressor(hidden=(8,), epochs=2, n_estimators=1, potential_stretch=1.0).fit(X, y).stretch_ == 1.0
    with pytest.raises(ValueError, match="potential_stretch"):
        DOSHeadRegressor(n_estimators=1, epochs=1, potential_stretch=5.0).fit(X, y)


def test_estimator_follows_the_sklearn_parameter_rules():
    from sklearn.base import clone

    est = DOSHeadRegressor(hidden=(8, 4), potential_weight=0.1, bin_THz=1.0)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "nets_")
    with pytest.raises(ValueError, match="bin_THz"):
        DOSHeadRegressor(bin_THz=0.25, n_estimators=1, epochs=1).fit(np.zeros((4, 2)), {"cv300": np.ones(4)})


def test_a_row_far_from_the_training_data_gets_no_interval(einstein_fit, tmp_path):
    est, X, _, train, test = einstein_fit
    far = X[test[:2]] + 50.0 * (X[train].max(axis=0) - X[train].min(axis=0))
    pred = est.predict_thermo(np.vstack([X[train[:3]], far]), [305.0])
    assert pred.in_domain is not None and pred.in_domain[:3].all() and not pred.in_domain[3:].any()
    assert np.isfinite(pred.S_upper[:3]).all() and np.isnan(pred.S_upper[3:]).all()
    assert np.isnan(pred.Cv_lower[3:]).all() and np.isfinite(pred.S[3:]).all()  # the value itself stays
    assert pred.ad_distance[3:].min() > 10 * pred.ad_distance[:3].max()
    folder = save_dos_model(est, tmp_path / "svib_ad" / "v1", name="svib_ad", version="v1",
                            feature_names=["x0", "x1", "x2"], label_sources={})
    loaded = load("svib_ad", root=tmp_path).estimator
    again = loaded.predict_thermo(np.vstack([X[train[:3]], far]), [305.0])
    np.testing.assert_array_equal(again.in_domain, pred.in_domain)
    np.testing.assert_allclose(again.ad_distance, pred.ad_distance, rtol=1e-5)
    tensors, meta = est.get_state()  # a model saved before the domain existed loads without one
    tensors.pop("domain.X")
    old = DOSHeadRegressor.from_state(tensors, {**meta, "ad_threshold": None})
    legacy = old.predict_thermo(far, [305.0])
    assert legacy.in_domain is None and np.isfinite(legacy.S_upper).all()
    assert folder.exists()


def test_last_peak_readout_is_chosen_on_out_of_fold_rows(tmp_path):
    X, nu, dos = _einstein_family(60, seed=5)
    y = {"dos_pot": dos, "peak_THz": nu}
    est = DOSHeadRegressor(hidden=(16,), epochs=20, n_estimators=3, min_calibration=20).fit(X, y)
    readout = est.peak_readout_
    assert readout["n_rows"] == 36  # 5 folds of 12 rows, 3 of them skipped by a member
    maes = [c["oof_mae_THz"] for c in readout["candidates"]]
    assert len(maes) == 21 and readout["oof_mae_THz"] == min(maes)
    default = next(c for c in readout["candidates"]
                   if c["method"] == "find_peaks" and c["smear_THz"] == 0.2 and c["min_rel_height"] == 0.05)
    assert readout["oof_mae_THz"] <= default["oof_mae_THz"]
    peaks = est.predict_last_peak(X[:6])
    assert set(peaks) == {"find_peaks_THz", "proxy_THz", "readout_THz"}
    if readout["method"] == "proxy":
        np.testing.assert_array_equal(peaks["readout_THz"], peaks["proxy_THz"])
    folder = save_dos_model(est, tmp_path / "svib_pk" / "v1", name="svib_pk", version="v1",
                            feature_names=["x0", "x1", "x2"], label_sources={})
    loaded = load("svib_pk", root=tmp_path).estimator
    assert loaded.peak_readout_ == json.loads(json.dumps(readout))
    np.testing.assert_allclose(loaded.predict_last_peak(X[:6])["readout_THz"], peaks["readout_THz"], rtol=1e-4)
    assert folder.is_dir()


def test_too_few_peak_rows_keep_the_mesh_dos_readout():
    X, nu, dos = _einstein_family(30, seed=6)
    y = {"dos_pot": dos, "peak_THz": np.where(np.arange(30) < 5, nu, np.nan)}
    est = DOSHeadRegressor(hidden=(16,), epochs=5, n_estimators=3, min_calibration=20).fit(X, y)
    assert est.peak_readout_["method"] == "find_peaks" and est.peak_readout_["n_rows"] == 0
    assert est.peak_readout_["smear_THz"] == 0.2 and est.peak_readout_["min_rel_height"] == 0.05


def test_nmi_feature_selection_keeps_the_informative_feature(tmp_path):
    """With n_features, the DOS head keeps that many columns chosen by NMI on the labelled rows; the
    one feature that sets the Einstein frequency is among them, and the selection survives a save."""
    X3, nu, dos = _einstein_family(160, seed=4)
    noise = np.random.default_rng(5).uniform(size=(160, 9))
    X = np.hstack([noise[:, :4], X3[:, :1], noise[:, 4:]])  # the informative column is column 4
    cv300 = _einstein(nu, [300.0])["Cv_J_per_K_mol_atom"][:, 0]
    y = {"cv300": cv300[:120], "dos_pot": dos[:120]}
    est = DOSHeadRegressor(hidden=(32, 32), epochs=120, patience=40, lr=5e-3, batch_size=32, n_estimators=2,
                           potential_weight=1.0, random_state=0, n_features=3).fit(X[:120], y)
    assert len(est.keep_idx_) == 3 and 4 in est.keep_idx_
    assert est.feature_selection_["labels"]["cv300"]["n_rows"] == 120
    pred = est.predict_thermo(X[120:], [300.0])
    assert np.abs(pred.Cv[:, 0] - cv300[120:]).mean() < 0.8  # Cv(300 K) spans ~8 J/K/mol over the family
    folder = save_dos_model(est, tmp_path / "svib_sel" / "v1", name="svib_sel", version="v1",
                            feature_names=[f"f{i}" for i in range(X.shape[1])], label_sources={})
    loaded = load("svib_sel", root=tmp_path).estimator
    np.testing.assert_array_equal(loaded.keep_idx_, est.keep_idx_)
    np.testing.assert_allclose(loaded.predict_dos(X[120:125]), est.predict_dos(X[120:125]), rtol=1e-4, atol=1e-7)
    assert "cross_nmi" not in json.loads((folder / "manifest.json").read_text())["estimator"]["params"]


def test_a_cross_nmi_of_the_wrong_shape_is_refused():
    X, nu, dos = _einstein_family(40)
    with pytest.raises(ValueError, match="cross_nmi has shape"):
        DOSHeadRegressor(n_estimators=1, epochs=1, n_features=2, cross_nmi=np.eye(5)).fit(
            X, {"cv300": _einstein(nu, [300.0])["Cv_J_per_K_mol_atom"][:, 0]})
