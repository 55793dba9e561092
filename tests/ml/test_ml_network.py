"""Joint-learning network: layout, joint learning reducing to single-target, temperature functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matflow.ml.estimator import MODNetRegressor
from matflow.ml.network import JointNet, TargetSpec, train_network


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-0.5, 0.5, size=(n, 4))
    a = np.sin(3 * X[:, 0]) + X[:, 1]
    b = X[:, 2] ** 2 - X[:, 3]
    return X, a, b


def test_layout_shared_group_property_heads():
    targets = [TargetSpec("S", 7, group=0), TargetSpec("Cv", 7, group=0), TargetSpec("gap", 1, group=1)]
    net = JointNet(5, targets, widths=((16,), (8,), (4,)))
    assert len(net.groups) == 2 and len(net.props) == 3 and len(net.heads) == 3
    out = net(torch.zeros(3, 5))
    assert [tuple(o.shape) for o in out] == [(3, 7), (3, 7), (3, 1)]
    with pytest.raises(ValueError, match="three levels"):
        JointNet(5, targets, widths=((16,), (8,)))


def test_joint_learning_with_zero_weight_reduces_to_single_target():
    X, a, b = _data()
    Y2 = np.column_stack([a, b]).astype(np.float32)
    single = JointNet(4, [TargetSpec("a")], ((16,), (8,), (4,)), seed=3)
    joint = JointNet(4, [TargetSpec("a"), TargetSpec("b")], ((16,), (8,), (4,)), seed=3)
    kw = dict(X_val=X[:30], lr=3e-3, batch_size=16, epochs=25, patience=5, seed=3)
    train_network(single, X[30:], Y2[30:, :1], Y_val=Y2[:30, :1], **kw)
    train_network(joint, X[30:], Y2[30:], Y_val=Y2[:30], loss_weights=[1.0, 0.0], **kw)
    xt = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(single(xt)[0], joint(xt)[0])
    # with weight on b as well the shared layers change, so the a-predictions differ
    both = JointNet(4, [TargetSpec("a"), TargetSpec("b")], ((16,), (8,), (4,)), seed=3)
    train_network(both, X[30:], Y2[30:], Y_val=Y2[:30], loss_weights=[1.0, 1.0], **kw)
    with torch.no_grad():
        assert not torch.equal(single(xt)[0], both(xt)[0])


def test_estimator_joint_targets_reduce_to_single_target():
    X, a, b = _data()
    cfg = dict(n_features=None, widths=((16,), (8,), (4,)), epochs=20, patience=5, n_estimators=2,
               calib_fraction=0.2, random_state=1)
    single = MODNetRegressor(**cfg).fit(X, a)
    joint = MODNetRegressor(targets=(("a", 1, 0), ("b", 1, 0)), loss_weights=(1.0, 0.0), **cfg)
    joint.fit(X, np.column_stack([a, b]))
    np.testing.assert_allclose(single.predict(X), joint.predict(X)[:, 0], rtol=1e-12, atol=1e-12)
    assert joint.predict(X).shape == (len(X), 2)


def test_temperature_function_is_one_multi_output_target():
    rng = np.random.default_rng(0)
    T = np.linspace(10, 800, 12)
    theta = rng.uniform(100, 600, size=40)  # a Debye-like scale per "material"
    X = np.column_stack([theta / 600, rng.normal(size=40)])
    Y = 3 * 8.314 * (T[None, :] / theta[:, None]) ** 2 / (1 + (T[None, :] / theta[:, None]) ** 2)
    est = MODNetRegressor(n_features=None, widths=((32,), (32,), (16,)), epochs=400, patience=400,
                          batch_size=8, lr=3e-3, n_estimators=1, calib_fraction=0.0, val_fraction=0.0)
    est.fit(X, Y)
    assert len(est.nets_[0].heads) == 1 and est.nets_[0].heads[0].out_features == len(T)
    pred = est.predict(X)
    assert pred.shape == Y.shape
    assert np.mean(np.abs(pred - Y)) < 0.05 * np.mean(np.abs(Y - Y.mean(axis=0)))
