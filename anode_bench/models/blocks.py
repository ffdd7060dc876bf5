"""The parts both model families are made of: conv-BN-ReLU units, the ODE right-hand side f built
from them, and the discrete transition block that opens every stage.

Both papers' code builds every residual branch as a chain of conv -> BatchNorm -> ReLU units
(amirgholami/anode `models/resnet.py`, `models/sqnxt.py`; juntang-zhuang/torch_ACA
`cifar_classification/models/` holds the same two files). A family is therefore a list of
`ConvSpec`s for its branch; this module turns such a list into modules.

Shapes: images and states are [B, C, H, W]; t is a Python float (or a 0-d tensor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of a branch: nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias)."""

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    bias: bool = False

    def __post_init__(self):
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(
                f"a convolution needs >= 1 channel on each side, got {self.in_channels} -> {self.out_channels}; "
                "the widths (or the width multiplier) are too small"
            )


class ConvUnit(nn.Module):
    """z [B, C_in, H, W] -> relu(BN(conv([z, t]))) [B, C_out, H/stride, W/stride].

    With `time_channel`, t enters as one extra input channel filled with t (Chen et al. 2018's
    ConcatConv2d); otherwise t is ignored. `relu=False` leaves out the final ReLU.
    """

    def __init__(self, spec: ConvSpec, *, relu: bool = True, time_channel: bool = False):
        super().__init__()
        self.time_channel = time_channel
        self.relu = relu
        self.conv = nn.Conv2d(
            spec.in_channels + int(time_channel),
            spec.out_channels,
            spec.kernel_size,
            spec.stride,
            spec.padding,
            bias=spec.bias,
        )
        self.bn = nn.BatchNorm2d(spec.out_channels)

    def forward(self, z: torch.Tensor, t=None) -> torch.Tensor:
        if self.time_channel:
            z = torch.cat([z, torch.ones_like(z[:, :1]) * t], dim=1)
        z = self.bn(self.conv(z))
        return F.relu(z) if self.relu else z


class ResidualBranch(nn.Module):
    """f(t, z) of an ODE block, dz/dt = f(t, z; θ): a chain of ConvUnits, each ending in ReLU.

    z [B, C, H, W] -> [B, C, H, W]. The final ReLU is in both papers' ODE functions (BasicBlock2);
    the discrete z + f(z) of such an f is the papers' "ResNet" baseline. Cost: one f evaluation =
    one pass through the chain; the ODE block evaluates it s·N_t times per forward.
    """

    def __init__(self, specs: Sequence[ConvSpec], *, time_channel: bool = False):
        super().__init__()
        if specs[0].in_channels != specs[-1].out_channels or any(s.stride != 1 for s in specs):
            raise ValueError("an ODE function must keep the state's shape: same channels in and out, stride 1")
        self.units = nn.ModuleList(ConvUnit(spec, time_channel=time_channel) for spec in specs)

    def forward(self, t, z: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            z = unit(z, t)
        return z


class TransitionBlock(nn.Module):
    """x [B, C_in, H, W] -> relu(branch(x) + shortcut(x)) [B, C_out, H/s, W/s]: a discrete residual block.

    The first block of every stage stays discrete, as in both papers' code: it changes the
    resolution (stride s) and/or the width, so it is no ODE z' = f(z). (Stage 1 of ResNet-18
    changes neither and is still discrete there, and here.)
    """

    def __init__(self, branch: Sequence[ConvUnit], shortcut: nn.Module):
        super().__init__()
        self.branch = nn.Sequential(*branch)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


def paper_init(module: nn.Module) -> None:
    """The papers' `conv_init` (ANODE and ACA train.py), for `model.apply`.

    Convolutions with a bias (all of SqueezeNext's): Xavier-uniform weights with gain sqrt(2),
    zero bias. Convolutions without one (ResNet's), BatchNorm (weight 1, bias 0) and the final
    Linear keep PyTorch's default initialization, as there.
    """
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        nn.init.xavier_uniform_(module.weight, gain=math.sqrt(2))
        nn.init.zeros_(module.bias)
