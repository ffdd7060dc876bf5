"""Gradient error, NFE, peak memory and time of every gradient method on one ODE-ResNet block.

f = conv-BN-ReLU-conv-BN (train mode), as in an ODE-ResNet stage. For each solver, N_t (fixed
solvers) or tolerance (adaptive) and method, the block runs in --dtype and its gradient w.r.t.
the input and every parameter is compared with float64 `direct` backprop on the same
discretization (for adaptive solvers: on the grid of steps the method accepted).

    python scripts/gradcheck_ode.py                      # the README table
    python scripts/gradcheck_ode.py --dtype float64      # exact methods then agree to ~1e-16
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn

from anode_bench.metrics import peak_memory_mib, timed_ms
from anode_bench.ode import GRAD_METHODS, SCHEMES, get_scheme, make_plan, odeint


class ResidualBranch(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, t, z):
        return self.net(z)


def copies(func, x, dtype, device):
    """A fresh copy of the block and its input, so that every run starts from the same state."""
    return copy.deepcopy(func).to(device=device, dtype=dtype), x.to(device=device, dtype=dtype).clone().requires_grad_()


def forward_backward(func, z, grad, solve_args):
    y, info = odeint(func, z, grad=grad, return_info=True, **solve_args)
    y.square().sum().backward()
    return info


def gradient(func, x, dtype, device, grad, solve_args):
    func, z = copies(func, x, dtype, device)
    info = forward_backward(func, z, grad, solve_args)
    flat = torch.cat([z.grad.reshape(-1)] + [p.grad.reshape(-1) for p in func.parameters()])
    return flat.double().cpu(), info


def measure(func, x, dtype, device, grad, solve_args, repeats):
    """Peak MiB and median ms of one forward+backward (parameter gradients already allocated)."""
    block, z = copies(func, x, dtype, device)
    forward_backward(block, z, grad, solve_args)
    work = lambda: forward_backward(block, z, grad, solve_args)  # noqa: E731
    memory = peak_memory_mib(work, device)
    return memory, statistics.median(timed_ms(work, device) for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--steps", default="1,2,4,8", help="N_t values for fixed solvers")
    parser.add_argument("--solvers", default="euler,rk4,heun_euler", help=f"from {', '.join(SCHEMES)}")
    parser.add_argument("--rtol", type=float, default=1e-2, help="adaptive solvers (atol = rtol), the ACA paper's 1e-2")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timing: median of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    func = ResidualBranch(args.channels).train()
    x = torch.randn(args.batch, args.channels, args.size, args.size, dtype=torch.float64)

    print(f"block f = conv-BN-ReLU-conv-BN, {args.channels} channels, input {tuple(x.shape)}, {args.dtype} on {device}, "
          f"reference: float64 direct on the same grid")
    print()
    print("| solver | N_t / rtol | grad | rel. error | NFE fwd | NFE bwd | peak MiB | time ms |")
    print("|---|---|---|---|---|---|---|---|")
    for solver in args.solvers.split(","):
        settings = [dict(rtol=args.rtol, atol=args.rtol)] if get_scheme(solver).adaptive else [
            dict(steps=int(s)) for s in args.steps.split(",")
        ]
        for setting in settings:
            solve_args = dict(solver=solver, **setting)
            for grad, method in GRAD_METHODS.items():
                try:
                    method.check_plan(make_plan(**solve_args))
                except ValueError:  # e.g. mali runs only on alf, aca not on alf
                    continue
                result, info = gradient(func, x, dtype, device, grad, solve_args)
                grid_args = dict(solver=solver, grid=info.ts)
                reference, _ = gradient(func, x, torch.float64, device, "direct", grid_args)
                error = float((result - reference).norm() / reference.norm())
                memory, time_ms = measure(func, x, dtype, device, grad, solve_args, args.repeats)
                label = setting.get("steps", f"rtol {args.rtol:g}")
                print(f"| {solver} | {label} | {grad} | {error:.2e} | {info.nfe_forward} | {info.nfe_backward} "
                      f"| {memory:.1f} | {time_ms:.1f} |")


if __name__ == "__main__":
    main()
