"""PyTorch eager on the CPU, intra-op threads set to the cores this process may use.

The usual loop: `zero_grad`, forward, `loss.backward()`, `optimizer.step()`, with
`torch.optim.Adam` (the implementation is picked in `ADAM_OPTIONS`, see there) and the
same models as `nn.Module`s in torch's layouts (NCHW, `nn.Linear`'s `(out, in)` weights).
SAME padding of a strided convolution is asymmetric (one more row and column at the end),
which `nn.Conv2d` cannot express: layers whose padding is symmetric use the conv's own
`padding`, the others an explicit `F.pad` first. BatchNorm is `nn.BatchNorm2d` with zoo's
epsilon and momentum (torch counts momentum the other way: `1 - 0.99`); its running
variance is unbiased where zoo's is biased, which only matters for inference. The GRU cell,
which `nn.GRU` defines with other equations than zoo's, is written out over the time steps.
"""

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _workloads as W
from ._base import PerStep

# Torch's default Adam on CPU is its per-parameter ("for-loop") implementation; the fused
# kernel, supported on CPU since 2.4, is its fastest documented option, so it is used here:
# a contender at its best, not its default.
ADAM_OPTIONS: dict[str, Any] = {"fused": True}


def cores() -> int:
    """The number of CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _linear(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


class MLP(nn.Module):
    def __init__(self, w: W.MLPWeights):
        super().__init__()
        self.layers = nn.ModuleList(_linear(k, b) for k, b in w.layers)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def _same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """SAME padding (before, after) of one spatial axis, as XLA computes it."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvNet(nn.Module):
    def __init__(self, w: W.ConvNetWeights, image_size: int = 28):
        super().__init__()
        self.convs = nn.ModuleList()
        self.pads: list[tuple[int, int, int, int] | None] = []
        size = image_size
        for (k, b), s in zip(w.convs, w.strides):
            lo, hi = _same(size, k.shape[2], s)
            conv = nn.Conv2d(k.shape[1], k.shape[0], k.shape[2], stride=s, padding=lo)
            if lo != hi:
                conv.padding = (0, 0)
                self.pads.append((lo, hi, lo, hi))
            else:
                self.pads.append(None)
            assert conv.bias is not None
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(k))
                conv.bias.copy_(torch.from_numpy(b))
            self.convs.append(conv)
            size = math.ceil(size / s)
        self.has_norm = tuple(n is not None for n in w.norms)
        self.norms = nn.ModuleList()
        for n in w.norms:
            if n is None:
                continue
            bn = nn.BatchNorm2d(n[0].shape[0], eps=w.bn_eps, momentum=1 - w.bn_momentum)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(n[0]))
                bn.bias.copy_(torch.from_numpy(n[1]))
            self.norms.append(bn)
        self.head = _linear(*w.head)

    def forward(self, x):
        x = x.unsqueeze(1)
        norms = iter(self.norms)
        for conv, pad, has_norm in zip(self.convs, self.pads, self.has_norm):
            x = conv(x if pad is None else F.pad(x, pad))
            if has_norm:
                x = next(norms)(x)
            x = F.relu(x)
        return self.head(x.flatten(1))


class GRU(nn.Module):
    def __init__(self, w: W.GRUWeights):
        super().__init__()
        self.embed = _linear(*w.embed)
        self.weight_ih = nn.Parameter(torch.from_numpy(w.weight_ih.copy()))
        self.weight_hh = nn.Parameter(torch.from_numpy(w.weight_hh.copy()))
        self.bias = nn.Parameter(torch.from_numpy(w.bias.copy()))
        self.h0 = nn.Parameter(torch.from_numpy(w.h0.copy()))
        self.readout = _linear(*w.readout)

    def forward(self, xs):
        xw = F.linear(F.relu(self.embed(xs)), self.weight_ih, self.bias)  # every step at once
        n = self.h0.shape[0]
        u_zr, u_h = self.weight_hh[: 2 * n], self.weight_hh[2 * n :]
        h = self.h0.expand(xs.shape[0], n)
        hs = []
        for t in range(xs.shape[1]):
            xw_t = xw[:, t]
            zr = torch.sigmoid(xw_t[:, : 2 * n] + F.linear(h, u_zr))
            z, r = zr[:, :n], zr[:, n:]
            c = torch.tanh(xw_t[:, 2 * n :] + F.linear(r * h, u_h))
            h = z * h + (1 - z) * c
            hs.append(h)
        return self.readout(torch.stack(hs, dim=1))


class TorchEager(PerStep):
    """PyTorch eager, CPU, `torch.set_num_threads(cores())` (see the module docstring)."""

    key = "torch"
    label = "PyTorch eager"

    def __init__(self, workload: W.Workload, weights: W.Weights):
        torch.set_num_threads(cores())
        self.label = f"PyTorch eager ({torch.get_num_threads()} threads)"
        if isinstance(weights, W.MLPWeights):
            self.model: nn.Module = MLP(weights)
        elif isinstance(weights, W.ConvNetWeights):
            self.model = ConvNet(weights)
        else:
            self.model = GRU(weights)
        self.model.train()
        self.classify = not isinstance(weights, W.GRUWeights)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=workload.learning_rate, **ADAM_OPTIONS
        )

    def to_device(self, batch: W.Batch):
        if self.classify:
            # cross_entropy wants int64 class indices.
            return torch.from_numpy(batch["image"]), torch.from_numpy(batch["label"]).long()
        return torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"])

    def epoch_input(self, batch: W.Batch):
        return self.to_device(batch)

    def step(self, batch) -> torch.Tensor:
        x, y = batch
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(x)
        loss = F.cross_entropy(out, y) if self.classify else F.mse_loss(out, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def sync(self) -> None:
        pass  # eager CPU kernels have finished when they return
