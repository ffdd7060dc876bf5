"""`ODENet`: the layout both families share, and the ODE-block interface every model exposes.

    x [B, 3, 32, 32] -> stem -> stage 1 .. stage S -> head -> global average pool -> linear -> [B, classes]

Each stage is one discrete `TransitionBlock` followed by blocks-1 `ODEBlock`s, dz/dt = f(t, z; θ)
with f a `ResidualBranch`. Every ODE block takes its solve settings (ODEBlock.configure's keywords:
solver, steps, grad, t0, t1, rtol, atol, ...) from one `ode` mapping; `configure_ode` changes them all.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ode import ODEBlock
from .blocks import ResidualBranch, paper_init


def ode_block(func: ResidualBranch, ode: Mapping | None) -> ODEBlock:
    """An ODEBlock for f = func with the settings in `ode` (ODEBlock's defaults for the rest)."""
    return ODEBlock(func).configure(**dict(ode or {}))


def check_stages(widths: Sequence[int], blocks: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Stage widths and blocks per stage as tuples; one of each per stage, blocks >= 1."""
    widths, blocks = tuple(widths), tuple(blocks)
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"need one width per stage and one block count per stage, got widths={widths}, blocks={blocks}")
    if any(n < 1 for n in blocks):
        raise ValueError(f"every stage needs >= 1 block (its transition), got blocks={blocks}")
    return widths, blocks


class ODENet(nn.Module):
    """x [B, 3, H, W] -> logits [B, num_classes]; see the module docstring for the layout.

    The papers pool with avg_pool2d(·, 4) on the final 4x4 map of a 32x32 input; the global
    average pool here is the same there and also accepts other input sizes.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[Sequence[nn.Module]], head: nn.Module, features: int, num_classes: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.stem = stem
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.head = head
        self.linear = nn.Linear(features, num_classes)
        self.apply(paper_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # torch 2.14.1 on CPU: the backward of a stride-2 1x1 convolution on a channels-last input
            # with few channels (resnet_tiny's 4 -> 8 projection) corrupts the heap or hangs. A channels-last
            # input (e.g. an HWC image batch permuted to NCHW) would carry that layout through the whole net.
            x = x.contiguous()
        z = self.stem(x)
        for stage in self.stages:
            z = stage(z)
        return self.classify(z)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Features of the last stage [B, C, h, w] -> logits [B, num_classes]."""
        z = F.adaptive_avg_pool2d(self.head(z), 1).flatten(1)
        return self.linear(z)

    @property
    def ode_blocks(self) -> list[ODEBlock]:
        """The ODE blocks in forward order (for per-block gradient error and NFE)."""
        return [m for m in self.modules() if isinstance(m, ODEBlock)]

    def configure_ode(self, **changes) -> "ODENet":
        """Change the solve settings of every ODE block (ODEBlock.configure's keywords)."""
        for block in self.ode_blocks:
            block.configure(**changes)
        return self

    def nfe(self) -> dict[str, int]:
        """f evaluations of the last forward (and of its backward, once run), rejected adaptive steps
        (forward and reverse solves) and host read-backs inside the solves (0 on fixed grids), summed
        over blocks."""
        infos = [block.last_info for block in self.ode_blocks]
        return dict(forward=sum(i.nfe_forward for i in infos), backward=sum(i.nfe_backward for i in infos),
                    rejected=sum(i.n_rejected + i.n_rejected_backward for i in infos),
                    host_syncs=sum(i.host_syncs + i.host_syncs_backward for i in infos))
