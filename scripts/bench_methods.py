"""Images/s and peak memory of a training step per gradient method and N_t, with the ratio to
`direct` at the same N_t; and, where torchdiffeq is installed, the same ODE block through
torchdiffeq's odeint / odeint_adjoint as the ratio anode-bench / torchdiffeq.

    python scripts/bench_methods.py                                   # CPU, resnet_tiny at 32 channels
    python scripts/bench_methods.py --device cuda --model resnet18_aca --batch 128
    python scripts/bench_methods.py --device cuda --precision bf16 --channels-last --compile   # trainer.* speed options

Targets (issue 8): anode and aca step time <= 1.4x direct's; aca activation memory at N_t = 8
<= 0.3x direct's; each method at least as fast as its torchdiffeq counterpart.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from anode_bench.metrics import peak_memory_mib, timed_ms
from anode_bench.models import build_model
from anode_bench.ode import GRAD_METHODS, odeint
from anode_bench.build import PRECISIONS, with_layout_and_compile


def step_fn(model, images, labels, optimizer, precision):
    def step():
        with PRECISIONS[precision].autocast(images.device):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(step, device, repeats, warmup):
    for _ in range(warmup):  # gradients and optimizer state exist from here on; compiled code too
        step()
    memory = peak_memory_mib(step, device)
    time_ms = statistics.median(timed_ms(step, device) for _ in range(repeats))
    return memory, time_ms


def bench_models(args, device):
    options = [f"precision {args.precision}"] + ["channels_last"] * args.channels_last + ["compile"] * args.compile
    print(f"### {args.model}, batch {args.batch}, solver {args.solver}, {device}, {', '.join(options)}\n")
    print("| N_t | grad | img/s | time / direct | activation MiB | memory / direct | NFE fwd | NFE bwd |")
    print("|---|---|---|---|---|---|---|---|")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    images = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    for steps in args.steps:
        baseline = None
        for grad in args.grads:
            torch.manual_seed(0)
            model = build_model(args.model, 10, dict(solver=args.solver, steps=steps, grad=grad, check_finite=False),
                                **args.arch).to(device)
            model = with_layout_and_compile(model, memory_format, args.compile)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            step = step_fn(model, images, labels, optimizer, args.precision)
            memory, time_ms = measure(step, device, args.repeats, warmup=3 if args.compile else 1)
            baseline = baseline or (memory, time_ms)
            nfe = model.nfe()
            print(f"| {steps} | {grad} | {args.batch / time_ms * 1e3:,.0f} | {time_ms / baseline[1]:.2f} | {memory:.1f} "
                  f"| {memory / baseline[0]:.2f} | {nfe['forward']} | {nfe['backward']} |")


def bench_torchdiffeq(args, device):
    try:
        import torchdiffeq
    except ImportError:
        print("\ntorchdiffeq is not installed: no comparison (pip install torchdiffeq)")
        return
    from anode_bench.models.blocks import ConvSpec, ResidualBranch

    channels = 32
    func = ResidualBranch([ConvSpec(channels, channels, 3, padding=1), ConvSpec(channels, channels, 3, padding=1)]).to(device)
    z0 = torch.randn(args.batch, channels, 16, 16, device=device, requires_grad=True)
    t = torch.tensor([0.0, 1.0], device=device)
    print(f"\n### one ODE block (f = 2x conv-BN-ReLU, {channels} channels, 16x16, batch {args.batch}), rk4, {device}\n")
    print("| N_t | anode-bench grad | torchdiffeq | time ratio (anode-bench / torchdiffeq) |")
    print("|---|---|---|---|")
    pairs = [("direct", torchdiffeq.odeint, "odeint"), ("adjoint", torchdiffeq.odeint_adjoint, "odeint_adjoint")]
    for steps in args.steps:
        for grad, solve, name in pairs:
            ours = lambda: odeint(func, z0, solver="rk4", steps=steps, grad=grad, check_finite=False).sum().backward()  # noqa: E731
            theirs = lambda: solve(func, z0, t, method="rk4", options=dict(step_size=1.0 / steps))[-1].sum().backward()  # noqa: E731
            ours()
            theirs()
            ours_ms = statistics.median(timed_ms(ours, device) for _ in range(args.repeats))
            theirs_ms = statistics.median(timed_ms(theirs, device) for _ in range(args.repeats))
            print(f"| {steps} | {grad} | {name} | {ours_ms / theirs_ms:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet_tiny")
    parser.add_argument("--widths", default="32,64,128,256", help="stage widths for the model ('' keeps the preset's)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--solver", default="rk4")
    parser.add_argument("--steps", default="1,2,4,8")
    parser.add_argument("--grads", default="direct,adjoint,anode,aca", help=f"from {', '.join(GRAD_METHODS)}; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, as trainer.precision=bf16")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights, as trainer.channels_last=true (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile of each block's f, as trainer.compile=true")
    parser.add_argument("--skip-torchdiffeq", action="store_true", help="only the per-method table")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    args.grads = args.grads.split(",")
    widths = [int(w) for w in args.widths.split(",")] if args.widths else None
    args.arch = dict(widths=widths, stem_width=widths[0]) if widths else {}
    device = torch.device(args.device)
    unknown = [grad for grad in args.grads if grad not in GRAD_METHODS]
    if unknown:
        parser.error(f"--grads {','.join(unknown)} unknown; choose from {', '.join(GRAD_METHODS)}")
    if min(args.steps) < 1:
        parser.error(f"--steps must be integers >= 1, got {args.steps}")
    if args.channels_last and device.type != "cuda":
        parser.error("--channels-last is a CUDA option (torch 2.14.1's CPU channels-last backward of a stride-2 1x1 convolution crashes)")
    bench_models(args, device)
    if not args.skip_torchdiffeq:
        bench_torchdiffeq(args, device)


if __name__ == "__main__":
    main()
