"""MODNet's joint-learning feed-forward network in torch, and its training loop.

Layout (De Breuck et al. 2021, Fig. 1): a shared block -> one block per target group -> one block per
property -> one linear head per property with one output per sub-target (e.g. each temperature of
S(T)). Joint learning = the sum of per-property MSE losses with weights. Each block is seeded from its
position in the tree, so a property's path has the same initial weights whether or not other
properties are present: with zero loss weight on the others (and no dropout), a joint model reduces
exactly to the single-target one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["TargetSpec", "JointNet", "TrainResult", "train_network", "ACTIVATIONS"]

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class TargetSpec:
    """One property: ``n_outputs`` sub-targets (1 for a scalar, 160 for S(T) on 160 temperatures)."""

    name: str
    n_outputs: int = 1
    group: int = 0


def _block(n_in: int, widths: Sequence[int], act: str, dropout: float, seed: int) -> tuple[nn.Sequential, int]:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for w in widths:
        layers.append(nn.Linear(n_in, int(w)))
        layers.append(ACTIVATIONS[act]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = int(w)
    torch.random.set_rng_state(gen_state)
    return nn.Sequential(*layers), n_in


class JointNet(nn.Module):
    """Shared -> group -> property -> linear head(s); returns one tensor per property."""

    def __init__(self, n_in: int, targets: Sequence[TargetSpec],
                 widths: Sequence[Sequence[int]] = ((256,), (128,), (16,)),
                 act: str = "elu", dropout: float = 0.0, seed: int = 0):
        super().__init__()
        if len(widths) != 3:
            raise ValueError("widths needs three levels: shared, group, property")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.targets = list(targets)
        self.shared, n_shared = _block(n_in, widths[0], act, dropout, seed)
        groups = sorted({t.group for t in self.targets})
        self.group_index = {g: i for i, g in enumerate(groups)}
        self.groups = nn.ModuleList()
        n_group = n_shared
        for g in groups:
            block, n_group = _block(n_shared, widths[1], act, dropout, seed + 1000 * (g + 1))
            self.groups.append(block)
        self.props = nn.ModuleList()
        self.heads = nn.ModuleList()
        for p, spec in enumerate(self.targets):
            seed_p = seed + 1000 * (spec.group + 1) + 17 * (p + 1)
            block, n_prop = _block(n_group, widths[2], act, dropout, seed_p)
            self.props.append(block)
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(seed_p + 7)
            self.heads.append(nn.Linear(n_prop, spec.n_outputs))
            torch.random.set_rng_state(gen_state)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.shared(x)
        per_group = [block(h) for block in self.groups]
        return [head(prop(per_group[self.group_index[spec.group]]))
                for spec, prop, head in zip(self.targets, self.props, self.heads, strict=True)]


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    n_epochs: int


LOSSES = ("mse", "mae")


def _weighted_loss(outputs: list[torch.Tensor], y: torch.Tensor, slices: list[slice],
                   weights: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    total = outputs[0].new_zeros(())
    for out, sl, w in zip(outputs, slices, weights, strict=True):
        err = out - y[:, sl]
        total = total + w * (torch.mean(err.abs()) if loss == "mae" else torch.mean(err ** 2))
    return total


def train_network(net: JointNet, X: np.ndarray, Y: np.ndarray, *, X_val: np.ndarray | None = None,
                  Y_val: np.ndarray | None = None, loss_weights: Sequence[float] | None = None,
                  lr: float = 1e-3, batch_size: int = 64, epochs: int = 500, patience: int = 50,
                  weight_decay: float = 0.0, loss: str = "mse", seed: int = 0) -> TrainResult:
    """Adam on the weighted joint loss (MSE, or MAE when the benchmark metric is MAE); keeps the weights of the best validation epoch (early stopping).

    ``Y`` columns are the properties' sub-targets concatenated in ``net.targets`` order (already scaled).
    Without a validation set it trains for ``epochs`` and keeps the last weights.
    """
    sizes = [t.n_outputs for t in net.targets]
    bounds = np.cumsum([0, *sizes])
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if Y.shape[1] != bounds[-1]:
        raise ValueError(f"Y has {Y.shape[1]} columns, targets need {bounds[-1]}")
    w = torch.tensor(loss_weights if loss_weights is not None else [1.0] * len(sizes), dtype=torch.float32)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    Yt = torch.as_tensor(Y, dtype=torch.float32)
    has_val = X_val is not None and Y_val is not None and len(X_val) > 0
    if has_val:
        Xv = torch.as_tensor(X_val, dtype=torch.float32)
        Yv = torch.as_tensor(Y_val, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, patience // 3))
    gen = torch.Generator().manual_seed(seed)
    n = len(Xt)
    best_state, best_loss, best_epoch, epoch = None, math.inf, 0, 0
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad()
            batch_loss = _weighted_loss(net(Xt[idx]), Yt[idx], slices, w, loss)
            batch_loss.backward()
            opt.step()
        if not has_val:
            continue
        net.eval()
        with torch.no_grad():
            val = float(_weighted_loss(net(Xv), Yv, slices, w, loss))
        sched.step(val)
        if val < best_loss - 1e-7:
            best_loss, best_epoch = val, epoch
            best_state = copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(best_epoch=best_epoch if has_val else epoch,
                       best_val_loss=best_loss if has_val else float("nan"), n_epochs=epoch)


def members_to_tensors(nets: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """Ensemble members' weights as float32 tensors keyed ``net<i>.<param>`` (safetensors layout)."""
    return {f"net{i}.{key}": value.detach().to(torch.float32).contiguous()
            for i, net in enumerate(nets) for key, value in net.state_dict().items()}


def load_member(net: nn.Module, tensors: Mapping[str, torch.Tensor], index: int) -> nn.Module:
    """Load member ``index`` of ``members_to_tensors`` into ``net``; returned in float64 eval mode."""
    prefix = f"net{index}."
    net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return net.double().eval()
