"""ODE-ResNet for 32x32 images: ResNet-18 (He et al. 2016, CIFAR layout) with ODE blocks, as in
ANODE (Gholami et al. 2019) and ACA (Zhuang et al. 2020).

Source: juntang-zhuang/torch_ACA `cifar_classification/models/resnet.py`, which is ANODE's
`models/resnet.py` (amirgholami/anode) without its learning-rate schedule (ANODE's file was read
through a public copy that carries ANODE's 150/250-epoch schedule; the network code is identical).
`ResNet18(ODEBlock)` there has 11,173,962 parameters for 10 classes, and so does the preset here.

    stem   conv3x3(3 -> 64) - BN - ReLU                                      [B, 64, 32, 32]
    stage  TransitionBlock(stride 1 in stage 1, else 2), then blocks-1 ODE blocks of
           f(t, z) = ReLU(BN(conv3x3(ReLU(BN(conv3x3(z))))))                 widths 64, 128, 256, 512
    head   global average pool (4x4) - Linear(512 -> classes)

The transition block is the ResNet BasicBlock, ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)),
with a conv1x1-BN projection shortcut where the shape changes. Its convolutions have no bias.
Time: ignored, as in both papers (BasicBlock2.forward(t, x) never reads t); `time_channel=True`
concatenates it as a channel before each convolution of f.

Note the ODE function ends in a ReLU (BasicBlock2 in the papers), so the discrete network that
`solver=euler, steps=1` gives, z + f(z), places that ReLU before the addition where a standard
ResNet BasicBlock places it after; parameter count and everything else are the same.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from .blocks import ConvSpec, ConvUnit, ResidualBranch, TransitionBlock
from .odenet import ODENet, check_stages, ode_block


def basic_specs(c_in: int, c_out: int, stride: int = 1) -> list[ConvSpec]:
    """The two 3x3 convolutions of a ResNet basic block (bias-free: BatchNorm follows)."""
    return [ConvSpec(c_in, c_out, 3, stride, 1), ConvSpec(c_out, c_out, 3, 1, 1)]


def basic_transition(c_in: int, c_out: int, stride: int) -> TransitionBlock:
    """[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]: the BasicBlock of He et al. (2016)."""
    first, second = basic_specs(c_in, c_out, stride)
    needs_projection = stride != 1 or c_in != c_out
    shortcut = ConvUnit(ConvSpec(c_in, c_out, 1, stride), relu=False) if needs_projection else nn.Identity()
    return TransitionBlock([ConvUnit(first), ConvUnit(second, relu=False)], shortcut)


class ODEResNet(ODENet):
    """x [B, 3, 32, 32] -> logits [B, num_classes]. Defaults: the papers' ResNet-18 with 4 ODE blocks.

    widths: channels of each stage; blocks: residual blocks per stage (1 transition + blocks-1
    ODE blocks); stem_width: channels of the stem convolution. `ode`: ODEBlock settings.
    """

    def __init__(
        self,
        num_classes: int = 10,
        ode: Mapping | None = None,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem_width: int = 64,
        time_channel: bool = False,
    ):
        widths, blocks = check_stages(widths, blocks)
        stem = ConvUnit(ConvSpec(3, stem_width, 3, 1, 1))
        stages, c_in = [], stem_width
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            transition = basic_transition(c_in, width, stride=1 if i == 0 else 2)
            odes = [ode_block(ResidualBranch(basic_specs(width, width), time_channel=time_channel), ode) for _ in range(n_blocks - 1)]
            stages.append([transition, *odes])
            c_in = width
        super().__init__(stem, stages, nn.Identity(), widths[-1], num_classes)

