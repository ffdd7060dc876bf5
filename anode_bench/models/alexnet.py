"""AlexNet (Krizhevsky et al. 2012) for 32x32 images, with its one shape-keeping convolution as an
ODE block, as ANODE's small-network comparison names it ("AlexNet").

    conv5x5(3 -> 64w) - BN - ReLU - maxpool 2                                [B, 64w, 16, 16]
    conv5x5(64w -> 192w) - BN - ReLU - maxpool 2                             [B, 192w, 8, 8]
    conv3x3(192w -> 384w) - BN - ReLU                                        [B, 384w, 8, 8]
    conv3x3(384w -> 256w) - BN - ReLU                                        [B, 256w, 8, 8]
    ODE block, f(t, z) = ReLU(BN(conv3x3(256w -> 256w)(z)))                   [B, 256w, 8, 8]
    maxpool 2 - global average pool - Linear(256w -> classes)

AlexNet's five convolutions with its channel counts 64-192-384-256-256 (w = 1); the fifth is the only
one whose input and output shapes agree, so it is the one that can be an ODE z' = f(z) (a residual
z + f(z) with `solver=euler, steps=1, grad=direct`: the baseline). The assumptions behind this layout
(3x3 / 5x5 kernels for 32x32 inputs, BatchNorm, a pooled linear head in place of the 4096-wide fully
connected layers) are in `registry.py`. Convolutions have no bias (BatchNorm follows).
Time: ignored unless `time_channel=True`.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from .blocks import ConvSpec, ConvUnit, ResidualBranch
from .odenet import ODENet, ode_block


class AlexNet(ODENet):
    """x [B, 3, 32, 32] -> logits [B, num_classes]. width: the width multiplier w (channels int(w * c))."""

    def __init__(self, num_classes: int = 10, ode: Mapping | None = None, *, width: float = 1.0, time_channel: bool = False):
        c1, c2, c3, c4 = (int(width * c) for c in (64, 192, 384, 256))
        stem = nn.Sequential(ConvUnit(ConvSpec(3, c1, 5, 1, 2)), nn.MaxPool2d(2))
        features = [
            ConvUnit(ConvSpec(c1, c2, 5, 1, 2)),
            nn.MaxPool2d(2),
            ConvUnit(ConvSpec(c2, c3, 3, 1, 1)),
            ConvUnit(ConvSpec(c3, c4, 3, 1, 1)),
            ode_block(ResidualBranch([ConvSpec(c4, c4, 3, 1, 1)], time_channel=time_channel), ode),
        ]
        super().__init__(stem, [features], nn.MaxPool2d(2), c4, num_classes)
