"""ANODE's small ResNets (ResNet-4, ResNet-10): a convolutional stem, then stages of ODE blocks joined
by strided convolutions, for 32x32 images.

    stem   conv3x3(3 -> w_1) - BN - ReLU                                     [B, w_1, 32, 32]
    stage  s > 1: conv3x3(w_{s-1} -> w_s, stride 2) - BN - ReLU              [B, w_s, H/2, W/2]
           then blocks_s ODE blocks of f(t, z) = ReLU(BN(conv3x3(ReLU(BN(conv3x3(z))))))
    head   global average pool - Linear(w_S -> classes)

Depth counts weighted layers as He et al. (2016) do: 1 (stem) + 2·Σ blocks + (S - 1) + 1 (linear).
With one block per stage that is 3S + 1: S = 1 gives ResNet-4, S = 3 gives ResNet-10.
f is the ODE function of `resnet.py` (both papers' BasicBlock2, ending in its ReLU); with
`solver=euler, steps=1, grad=direct` each ODE block is the residual block z + f(z) and the model is
the discrete ResNet-4 / ResNet-10 of the baseline column. Convolutions have no bias (BatchNorm
follows). Time: ignored unless `time_channel=True`. The assumptions behind this layout are in
`registry.py`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from .blocks import ConvSpec, ConvUnit, ResidualBranch
from .odenet import ODENet, check_stages, ode_block
from .resnet import basic_specs


class SmallResNet(ODENet):
    """x [B, 3, 32, 32] -> logits [B, num_classes]. Defaults: ResNet-10 (widths 16-32-64, 3 ODE blocks).

    widths: channels of each stage; blocks: ODE blocks per stage (>= 1: a stage is its ODE blocks,
    after the strided convolution that opens every stage but the first). `ode`: ODEBlock settings.
    """

    def __init__(
        self,
        num_classes: int = 10,
        ode: Mapping | None = None,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
        time_channel: bool = False,
    ):
        widths, blocks = check_stages(widths, blocks)
        stem = ConvUnit(ConvSpec(3, widths[0], 3, 1, 1))
        stages, c_in = [], widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            down = [ConvUnit(ConvSpec(c_in, width, 3, 2, 1))] if i > 0 else []
            odes = [ode_block(ResidualBranch(basic_specs(width, width), time_channel=time_channel), ode) for _ in range(n_blocks)]
            stages.append([*down, *odes])
            c_in = width
        super().__init__(stem, stages, nn.Identity(), widths[-1], num_classes)
