"""Gradient error, its precision floor, NFE, peak memory and time of every gradient method on one
ODE-ResNet block.

The block is the models' own: f = conv-BN-ReLU-conv-BN-ReLU (anode_bench.models.blocks.ResidualBranch,
train mode), between an identity stem and a linear classifier (anode_bench.models.odenet.ODENet), so
the error is the probe's (anode_bench.metrics.gradient_error): dL/dθ against float64 `direct` on
the grid the method accepted, beside the floor (`direct` on that grid at the run's precision) and
the ratio of the two. For each solver, N_t (fixed solvers) or tolerance (adaptive) and method that
can run it.

    python scripts/gradcheck_ode.py                      # the README table
    python scripts/gradcheck_ode.py --precision fp64     # exact methods then agree to ~1e-16
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from anode_bench.build import PRECISIONS
from anode_bench.metrics import gradient_error, peak_memory_mib, set_tf32, timed_ms
from anode_bench.models.blocks import ConvSpec, ResidualBranch
from anode_bench.models.odenet import ODENet
from anode_bench.ode import GRAD_METHODS, SCHEMES, ODEBlock


def one_block_network(channels: int, num_classes: int = 10) -> ODENet:
    """[B, C, H, W] -> one ODE block of the ODE-ResNet's f -> global pool -> linear [B, num_classes]."""
    branch = ResidualBranch([ConvSpec(channels, channels, 3, padding=1), ConvSpec(channels, channels, 3, padding=1)])
    return ODENet(nn.Identity(), [[ODEBlock(branch)]], nn.Identity(), channels, num_classes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--steps", default="1,2,4,8", help="N_t values for fixed solvers")
    parser.add_argument("--solvers", default="euler,rk4,heun_euler", help=f"from {', '.join(SCHEMES)}")
    parser.add_argument("--rtol", type=float, default=1e-2, help="adaptive solvers (atol = rtol), the ACA paper's 1e-2")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timing: median of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tf32", action="store_true", help="TF32 convolutions (CUDA), as trainer.tf32=true; off by default")
    args = parser.parse_args()
    unknown = [s for s in args.solvers.split(",") if s not in SCHEMES]
    if unknown:
        parser.error(f"--solvers {unknown} unknown; choose from {', '.join(SCHEMES)}")

    torch.manual_seed(args.seed)
    set_tf32(args.tf32)  # torch's own default lets cuDNN run float32 convolutions in TF32
    precision, device = PRECISIONS[args.precision], torch.device(args.device)
    net = one_block_network(args.channels).to(device=device, dtype=precision.dtype).train()
    images = torch.randn(args.batch, args.channels, args.size, args.size, device=device, dtype=precision.dtype)
    labels = torch.randint(0, 10, (args.batch,), device=device)

    def forward_backward():
        with precision.autocast(device):
            loss = torch.nn.functional.cross_entropy(net(images), labels)
        loss.backward()

    print(f"one ODE block, f = conv-BN-ReLU-conv-BN-ReLU, {args.channels} channels, input {tuple(images.shape)}, "
          f"{args.precision}{' TF32' * args.tf32} on {device}; reference: float64 direct on the accepted grid; floor: direct there at "
          f"{args.precision}")
    print()
    print("| solver | N_t / rtol | grad | rel. error | floor | ÷ floor | NFE fwd | NFE bwd | peak MiB | time ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for solver in args.solvers.split(","):
        settings = [dict(rtol=args.rtol, atol=args.rtol)] if SCHEMES[solver].adaptive else [
            dict(steps=int(s)) for s in args.steps.split(",")
        ]
        for setting in settings:
            for grad in GRAD_METHODS:
                try:
                    net.configure_ode(solver=solver, grad=grad, grid=None, **setting)
                except ValueError:  # e.g. mali runs only on alf, aca not on alf
                    continue
                with precision.autocast(device):
                    errors = gradient_error(net, images, labels)
                forward_backward()  # allocates the parameters' .grad, so memory counts the step itself
                info = net.ode_blocks[0].last_info
                memory = peak_memory_mib(forward_backward, device)
                time_ms = statistics.median(timed_ms(forward_backward, device) for _ in range(args.repeats))
                net.zero_grad(set_to_none=True)
                label = setting.get("steps", f"rtol {args.rtol:g}")
                print(f"| {solver} | {label} | {grad} | {errors['grad_error/rel_l2']:.2e} | "
                      f"{errors['grad_error/floor_rel_l2']:.2e} | {errors['grad_error/floor_ratio']:.3g} | "
                      f"{info.nfe_forward} | {info.nfe_backward} | {memory:.1f} | {time_ms:.1f} |")


if __name__ == "__main__":
    main()
