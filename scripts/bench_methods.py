"""Images/s and peak memory of a training step per gradient method and N_t, with the ratio to
`direct` at the same N_t; and, where torchdiffeq is installed, the same ODE block through
torchdiffeq's odeint / odeint_adjoint as the ratio anode-bench / torchdiffeq. Each row also counts
the aten ops of one training step (OpCounter: each is at least one kernel launch on a GPU) and
splits them into f's own and the solver's (the rest: the network outside the ODE blocks, the loss
and the optimizer); not under --compile.

    python scripts/bench_methods.py                                   # CPU, resnet_tiny at 32 channels
    python scripts/bench_methods.py --device cuda --model resnet18_aca --batch 128
    python scripts/bench_methods.py --device cuda --precision bf16 --channels-last --compile   # trainer.* speed options

Targets: anode and aca step time <= 1.4x direct's; aca activation memory at N_t = 8 <= 0.3x
direct's; each method at least as fast as its torchdiffeq counterpart.
"""
from __future__ import annotations

import argparse
import statistics
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from anode_bench.build import PRECISIONS, with_layout_and_compile
from anode_bench.metrics import peak_memory_mib, set_tf32, timed_ms
from anode_bench.models import build_model
from anode_bench.ode import GRAD_METHODS, ODEBlock, odeint
from anode_bench.trainer import resident_mib


def step_fn(model, images, labels, optimizer, precision):
    def step():
        with PRECISIONS[precision].autocast(images.device):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


class OpCounter(TorchDispatchMode):
    """Counts the aten ops one training step dispatches (below autograd: each is at least one kernel
    launch on a GPU), split by who asked for them:

    - `f`: inside an ODE block's f (forward, recompute), or in backward an autograd node that an
      evaluation of f created (its convolutions', BatchNorms' and ReLUs' backward);
    - `solver`: the rest of an ODE block (stage combinations, error norms, the gradient method's
      bookkeeping), in forward and in backward;
    - `rest`: the network outside the ODE blocks, the loss and the optimizer.

    Who created a backward node is read from autograd's sequence numbers: nodes are numbered in
    creation order per thread, so the nodes of one evaluation of f are those numbered between the
    probes taken as it starts and ends. The probes themselves are not counted.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.counts: Counter = Counter()  # (part, op name) -> calls
        self.spans = {"f": [], "solver": []}  # (first, last) sequence numbers of the nodes each created
        self.depth = {"f": 0, "solver": 0}
        self.paused = 0
        self.probe = torch.zeros((), requires_grad=True)
        self.handles = []
        for block in (m for m in model.modules() if isinstance(m, ODEBlock)):
            self.watch(block.func, "f")
            self.watch(block, "solver")

    def sequence_number(self) -> int:
        self.paused += 1
        with torch.enable_grad():
            number = (self.probe * 1).grad_fn._sequence_nr()
        self.paused -= 1
        return number

    def watch(self, module, part):
        starts = []

        def enter(*_):
            self.depth[part] += 1
            starts.append(self.sequence_number())

        def leave(_module, _inputs, output):
            self.depth[part] -= 1
            self.spans[part].append((starts.pop(), self.sequence_number()))
            if part == "solver" and output.grad_fn is not None:  # a checkpointing method's own backward
                output.grad_fn.register_prehook(lambda grads: enter())
                output.grad_fn.register_hook(lambda grads_in, grads_out: self.depth.__setitem__(part, self.depth[part] - 1))

        self.handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    def part(self) -> str:
        node = torch._C._current_autograd_node()
        number = None if node is None else node._sequence_nr()
        for part in ("f", "solver"):
            if self.depth[part] or (number is not None and any(a < number < b for a, b in self.spans[part])):
                return part
        return "rest"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            self.counts[self.part(), func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    def totals(self) -> dict[str, int]:
        out = Counter()
        for (part, _), calls in self.counts.items():
            out[part] += calls
        return {"total": sum(out.values()), **{part: out[part] for part in ("f", "solver", "rest")}}

    def close(self):
        for handle in self.handles:
            handle.remove()


def count_ops(step, model) -> OpCounter:
    """The ops of one call of `step()` (a training step of `model`), by part (OpCounter). Backward runs in
    this thread: on CUDA autograd would run it in the device's worker thread, whose nodes are numbered on
    another counter than the forward's, and the split by sequence number would mix them up."""
    counter = OpCounter(model)
    try:
        with counter, torch.autograd.set_multithreading_enabled(False):
            step()
    finally:
        counter.close()
    return counter


def measure(step, model, optimizer, device, repeats, warmup):
    """(activation MiB, median ms) of `step`: its peak above what was resident before it (parameters, the
    last step's gradients, optimizer state), as anode-train's memory/activation_mib."""
    for _ in range(warmup):  # gradients and optimizer state exist from here on; compiled code too
        step()
    resident = resident_mib(model, optimizer)
    optimizer.zero_grad(set_to_none=True)  # before the profile (CPU), which cannot see a free of what it did not see allocated
    memory = resident_mib(model, optimizer) + peak_memory_mib(step, device) - resident
    time_ms = statistics.median(timed_ms(step, device) for _ in range(repeats))
    return memory, time_ms


def bench_models(args, device):
    options = [f"precision {args.precision}"] + ["TF32"] * args.tf32 + ["channels_last"] * args.channels_last + ["compile"] * args.compile
    print(f"### {args.model}, batch {args.batch}, solver {args.solver}, {device}, {', '.join(options)}\n")
    base = args.grads[0]
    print(f"| N_t | grad | img/s | time / {base} | activation MiB | memory / {base} | NFE fwd | NFE bwd "
          "| aten ops/step | f's | solver's | solver / f |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    images = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    for steps in args.steps:
        baseline = None
        for grad in args.grads:
            torch.manual_seed(0)
            ode = dict(solver=args.solver, steps=steps, grad=grad, check_finite=False, rtol=args.rtol, atol=args.rtol)
            model = build_model(args.model, 10, ode, **args.arch).to(device)
            model = with_layout_and_compile(model, memory_format, args.compile)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            step = step_fn(model, images, labels, optimizer, args.precision)
            memory, time_ms = measure(step, model, optimizer, device, args.repeats, warmup=3 if args.compile else 1)
            baseline = baseline or (memory, time_ms)
            nfe = model.nfe()
            if args.compile:  # counting dispatches under dynamo would count (and recompile) another program
                ops = "— | — | — | —"
            else:
                parts = count_ops(step, model).totals()
                ops = f"{parts['total']:,} | {parts['f']:,} | {parts['solver']:,} | {parts['solver'] / max(parts['f'], 1):.2f}"
            print(f"| {steps} | {grad} | {args.batch / time_ms * 1e3:,.0f} | {time_ms / baseline[1]:.2f} | {memory:.1f} "
                  f"| {memory / baseline[0]:.2f} | {nfe['forward']} | {nfe['backward']} | {ops} |")


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
    print(f"\n### one ODE block (f = 2x conv-BN-ReLU, {channels} channels, 16x16, batch {args.batch}), rk4, {device}, "
          f"fp32{' TF32' * args.tf32}, eager (--precision, --channels-last and --compile apply to the table above)\n")
    print("| N_t | anode-bench grad | torchdiffeq | time ratio (anode-bench / torchdiffeq) |")
    print("|---|---|---|---|")
    pairs = [("direct", torchdiffeq.odeint, "odeint"), ("adjoint", torchdiffeq.odeint_adjoint, "odeint_adjoint")]
    for steps in args.steps:
        for grad, solve, name in pairs:
            # called within this iteration only, so binding the loop variables late is fine
            ours = lambda: odeint(func, z0, solver="rk4", steps=steps, grad=grad, check_finite=False).sum().backward()  # noqa: E731, B023
            theirs = lambda: solve(func, z0, t, method="rk4", options=dict(step_size=1.0 / steps))[-1].sum().backward()  # noqa: E731, B023
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
    parser.add_argument("--steps", default="1,2,4,8", help="N_t values (an adaptive solver: one row per grad, any one value)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="an adaptive solver's rtol = atol")
    parser.add_argument("--grads", default="direct,adjoint,anode,aca", help=f"from {', '.join(GRAD_METHODS)}; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, as trainer.precision=bf16")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights, as trainer.channels_last=true (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile of each block's f, as trainer.compile=true")
    parser.add_argument("--skip-torchdiffeq", action="store_true", help="only the per-method table")
    parser.add_argument("--tf32", action="store_true", help="TF32 convolutions and matmuls (CUDA), as trainer.tf32=true; "
                        "off by default, as anode-train")
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
    set_tf32(args.tf32)  # torch's own default lets cuDNN run float32 convolutions in TF32
    bench_models(args, device)
    if not args.skip_torchdiffeq:
        bench_torchdiffeq(args, device)


if __name__ == "__main__":
    main()
