"""SqueezeNext (Gholami et al. 2018) for 32x32 images, with ODE blocks in place of its
non-transition blocks, as ANODE (Gholami et al. 2019) trained it.

Source: `models/sqnxt.py` of amirgholami/anode (also juntang-zhuang/torch_ACA
`cifar_classification/models/sqnxt.py`). Its `SqNxt_23_1x` is SqueezeNext(width 1.0, blocks
[2, 2, 2, 2]): 461,466 parameters for 10 classes, and so does the preset here. The name is
the code's; the SqNxt-23 of the SqueezeNext paper (ImageNet) has blocks [6, 6, 8, 1].

    stem   conv3x3(3 -> 64w) - BN - ReLU                                     [B, 64w, 32, 32]
    stage  transition (stride 1 in stage 1, else 2), then blocks-1 ODE blocks   widths 32w, 64w, 128w, 256w
    head   conv1x1(256w -> 128w) - BN - ReLU, global average pool, Linear(128w -> classes)

A SqueezeNext block of input width C and reduction r is five conv-BN-ReLU units,
1x1 (C -> rC), 1x1 (rC -> rC/2), 1x3 (rC/2 -> rC), 3x1 (rC -> rC), 1x1 (rC -> C_out), every
convolution with a bias. r = 1 in a stride-2 transition, 1/4 where the width shrinks (stage 1:
64w -> 32w), 1/2 otherwise, and in every ODE function f(t, z) (C_out = C).
The transition is ReLU(block(x) + ReLU(shortcut(x))), shortcut = conv1x1-BN where the shape
changes, else identity (then the inner ReLU is a no-op: x is already >= 0).
Time: ignored, as in the paper's code; `time_channel=True` concatenates it as a channel before
each convolution of f. Initialization: Xavier-uniform, gain sqrt(2), zero bias (`paper_init`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from .blocks import ConvSpec, ConvUnit, ResidualBranch, TransitionBlock
from .odenet import ODENet, check_stages, ode_block


def sqnxt_specs(c_in: int, c_out: int, stride: int, reduction: float) -> list[ConvSpec]:
    """The five convolutions of a SqueezeNext block (channel counts truncated as in the source)."""
    squeeze, half = int(c_in * reduction), int(c_in * reduction * 0.5)
    return [
        ConvSpec(c_in, squeeze, 1, stride, 0, bias=True),
        ConvSpec(squeeze, half, 1, 1, 0, bias=True),
        ConvSpec(half, squeeze, (1, 3), 1, (0, 1), bias=True),
        ConvSpec(squeeze, squeeze, (3, 1), 1, (1, 0), bias=True),
        ConvSpec(squeeze, c_out, 1, 1, 0, bias=True),
    ]


def sqnxt_transition(c_in: int, c_out: int, stride: int) -> TransitionBlock:
    """[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]: the SqueezeNext block with its shortcut."""
    reduction = 1.0 if stride != 1 else 0.25 if c_in > c_out else 0.5
    branch = [ConvUnit(spec) for spec in sqnxt_specs(c_in, c_out, stride, reduction)]
    needs_projection = stride != 1 or c_in != c_out
    shortcut = ConvUnit(ConvSpec(c_in, c_out, 1, stride, 0, bias=True)) if needs_projection else nn.ReLU()
    return TransitionBlock(branch, shortcut)


class SqueezeNext(ODENet):
    """x [B, 3, 32, 32] -> logits [B, num_classes]. Defaults: ANODE's SqNxt-23 1x with 4 ODE blocks.

    width: the width multiplier w (channel counts int(w * c)); widths: stage channels at w = 1;
    blocks: blocks per stage (1 transition + blocks-1 ODE blocks); stem_width, head_width: the
    first and last convolutions' channels at w = 1. `ode`: ODEBlock settings.
    """

    def __init__(
        self,
        num_classes: int = 10,
        ode: Mapping | None = None,
        *,
        width: float = 1.0,
        blocks: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (32, 64, 128, 256),
        stem_width: int = 64,
        head_width: int = 128,
        time_channel: bool = False,
    ):
        widths, blocks = check_stages(widths, blocks)
        widths = tuple(int(width * c) for c in widths)
        stem_width, head_width = int(width * stem_width), int(width * head_width)
        stem = ConvUnit(ConvSpec(3, stem_width, 3, 1, 1, bias=True))
        stages, c_in = [], stem_width
        for i, (c_out, n_blocks) in enumerate(zip(widths, blocks)):
            transition = sqnxt_transition(c_in, c_out, stride=1 if i == 0 else 2)
            odes = [
                ode_block(ResidualBranch(sqnxt_specs(c_out, c_out, 1, 0.5), time_channel=time_channel), ode)
                for _ in range(n_blocks - 1)
            ]
            stages.append([transition, *odes])
            c_in = c_out
        head = ConvUnit(ConvSpec(widths[-1], head_width, 1, 1, 0, bias=True))
        super().__init__(stem, stages, head, head_width, num_classes)
