"""Where a training step's time goes: torch.profiler over N training steps of an experiment's
model, solver and grad on synthetic CIFAR-shaped images, and the aten ops per step by part.

    python scripts/profile_step.py experiment=aca_cifar10 --device cuda            # 20 steps, the experiment's batch
    python scripts/profile_step.py experiment=anode_cifar10 --device cuda
    python scripts/profile_step.py experiment=aca_cifar10 --batch 2 --steps 2 +model.arch.widths=[4,8,16,32] +model.arch.stem_width=4

Arguments after the options are anode-train overrides (the same config groups). It prints:
- wall ms per step (synchronized), and on CUDA the GPU-busy fraction: the union of kernel
  intervals over the profiled wall time (well under 1: the GPU waits for the host);
- kernel ms per step against host ms per step in top-level aten ops (their CPU time: dispatch,
  launch and, on the CPU, the compute itself), and the top-level aten ops per step;
- host syncs per step: aten::_local_scalar_dense calls (a tensor read back to the host: .item(),
  float(), the adaptive controller's ratio) and cudaStreamSynchronize / cudaDeviceSynchronize;
- the top kernels by device time (on the CPU: the top ops by CPU time);
- the aten ops of one step split into f's, the solver's and the rest (bench_methods.OpCounter).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from bench_methods import count_ops
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from anode_bench.build import PRECISIONS, make_model, with_layout_and_compile
from anode_bench.config import CONFIG_DIR
from anode_bench.metrics import set_tf32

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_ms(intervals) -> float:
    """The length of the union of (start, end) intervals (µs in, ms out)."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + (end - start), end
        elif end > reach:
            total, reach = total + (end - reach), end
    return total / 1e3


def called_by_an_op(event) -> bool:
    """Whether an aten op runs inside another (its own decomposition); autograd nodes and Python
    frames above it do not count, so a backward's ops are top-level like the forward's."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="training steps profiled")
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling (allocator, cuDNN autotune)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: the config's trainer.batch_size)")
    parser.add_argument("--top", type=int, default=12, help="kernels (ops on the CPU) listed")
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option {bad[0]}; anode-train overrides are KEY=VALUE")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}")
    device = torch.device(args.device)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"trainer.device={device.type}"])
    trainer = cfg.trainer
    batch = args.batch or trainer.batch_size
    torch.manual_seed(trainer.seed)
    memory_format = torch.channels_last if trainer.get("channels_last") else torch.contiguous_format
    precision = trainer.get("precision", "fp32")
    dtype = PRECISIONS[precision].dtype  # fp64 runs in float64, bf16 in float32 under autocast, as anode-train
    set_tf32(trainer.tf32)
    model = with_layout_and_compile(make_model(cfg, device).to(dtype), memory_format, trainer.get("compile", False))
    optimizer = torch.optim.SGD(model.parameters(), lr=trainer.lr, momentum=trainer.momentum,
                                weight_decay=trainer.weight_decay)
    images = torch.randn(batch, 3, 32, 32, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    labels = torch.randint(0, cfg.dataset.num_classes, (batch,), device=device)

    def step():
        with PRECISIONS[precision].autocast(device):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    solver = cfg.solver.name + (f" N_t {cfg.solver.steps}" if cfg.solver.get("steps") else f" rtol {cfg.solver.get('rtol')}")
    print(f"### {cfg.model.name}, {solver}, grad {cfg.grad.name}, batch {batch}, {precision}{' TF32' * trainer.tf32}, {device}, "
          f"{args.steps} steps, torch {torch.__version__}")
    for _ in range(args.warmup):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3
    events = prof.events()
    on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = [e for e in on_device if not e.name.startswith(("Memcpy", "Memset"))]  # launches; copies count as busy
    top_level = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith("aten::")
                 and not called_by_an_op(e)]
    host_ms = sum(e.cpu_time_total for e in top_level) / 1e3
    reads = sum(e.name == "aten::_local_scalar_dense" for e in events)
    syncs = sum(e.name in SYNC_CALLS for e in events) - (device.type == "cuda")  # less the one that closes the window
    per = args.steps
    print(f"\n- wall: {wall_ms / per:.2f} ms/step")
    if on_device:
        kernel_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
        print(f"- GPU busy: {busy_ms((e.time_range.start, e.time_range.end) for e in on_device) / wall_ms:.1%} of the wall "
              f"time (kernels and copies); kernels {kernel_ms / per:.2f} ms/step ({len(kernels) / per:,.0f} launches/step, "
              f"{(len(on_device) - len(kernels)) / per:,.0f} copies and memsets/step)")
    else:
        print("- GPU busy: no GPU (the CPU runs the kernels inside the ops' host time)")
    print(f"- host, in top-level aten ops: {host_ms / per:.2f} ms/step, {len(top_level) / per:,.0f} ops/step")
    print(f"- host syncs: {reads / per:.1f} read-backs (_local_scalar_dense)/step, {syncs / per:.1f} stream/device syncs/step "
          f"(a read-back by .tolist(), as the adaptive controller's, shows as a stream sync only)")
    sort = "self_device_time_total" if on_device else "self_cpu_time_total"
    print(f"\ntop {'kernels' if on_device else 'ops'} over {per} steps, by {sort}:\n")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=60))
    counter = count_ops(step, model)
    totals = counter.totals()
    print(f"aten ops in one step (dispatch level): {totals['total']:,} = f {totals['f']:,} + solver {totals['solver']:,} "
          f"+ rest {totals['rest']:,} (network outside the ODE blocks, loss, optimizer); solver / f = "
          f"{totals['solver'] / max(totals['f'], 1):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
