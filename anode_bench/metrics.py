"""Measurements: peak memory of a piece of work on CPU or CUDA, and device-synchronized time.

CPU: there is no allocator to query, but the PyTorch profiler with profile_memory=True records
every allocation and free; the running sum of their sizes, maximised over the window, is the
peak memory the work allocated on top of what already existed (activations, graph, gradients).
CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus what was resident.
The profiler's native libraries write their own chatter straight to file descriptor 2 on every
window (kineto's `USDT ... profiler_start/stop`, `gpuGetDeviceCount failed` on a machine without
a GPU, c10's `Memory block of unknown size` for a tensor freed in the window that was made before
it); `profiler_quiet` holds those lines back and passes every other line through.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import sys
import tempfile
import time
from typing import Callable

import torch

from . import tags
from .ode.method import autocast_as, autocast_state

MIB = 2**20
PROFILER_CHATTER = re.compile(
    r"^USDT:.*\] profiler_(start|stop)$|^ERROR:.*\] gpuGetDeviceCount failed with code \d+$"
    r"|^\[W.*CPUAllocator\.cpp:\d+\] Memory block of unknown size was allocated before the profiling started"
)


@contextlib.contextmanager
def profiler_quiet():
    """Native stderr (fd 2) goes to a temporary file for the block; afterwards its lines, less the
    profiler's own (PROFILER_CHATTER), are written back to fd 2 in order, so a real warning raised
    inside the block still reaches the console, only later."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not PROFILER_CHATTER.match(line.rstrip("\n"))]
            if kept:
                os.write(2, "".join(kept).encode())


def peak_memory_mib(work: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Peak MiB allocated by `work()` above what was allocated when it started."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        resident = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        work()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - resident) / MIB
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profiler_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    events = [
        e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak / MIB


def timed_ms(work: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall time of `work()` in ms, synchronized on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _model_gradient(model, images, labels):
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    return dict(zip(names, torch.autograd.grad(loss, params)))


def _compare(grads: dict, reference: dict, names) -> tuple[float, float]:
    g = torch.cat([grads[n].reshape(-1).double() for n in names])
    r = torch.cat([reference[n].reshape(-1).double() for n in names])
    rel = (g - r).norm() / r.norm().clamp_min(1e-300)
    cosine = torch.nn.functional.cosine_similarity(g, r, dim=0)
    return float(rel), float(cosine)


def gradient_error(model, images, labels, *, reference: str = "discrete", fine_factor: int = 8,
                   cache: dict | None = None) -> dict[str, float]:
    """Error of the model's gradient (its own grad method and dtype) against float64 `direct`, and
    the precision floor that error is to be read against.

    g = dL/dθ of cross-entropy on (images, labels) as the model computes it; g_ref the same
    from a float64 copy whose ODE blocks use `direct` on the grid each block just accepted
    (`reference="discrete"`: is this the gradient of the network that ran?) or rk4 at
    fine_factor times as many steps (`"fine"`: the gradient of the continuous ODE).
    The floor g_floor: `direct` on the grid each block accepted, at the model's own precision
    (its dtype, under the caller's autocast and the process's TF32 switches, as it trains): exact
    backprop of the network that ran, so ‖g_floor − g_ref‖ / ‖g_ref‖ (reference "discrete") is
    what the arithmetic alone costs; with "fine" it adds this grid's discretization error, the
    least any method on this grid can reach. floor_ratio = rel_l2 / floor_rel_l2: the method's
    error in units of the floor (≈ 1: indistinguishable from rounding; ≫ 1: the method's own).
    A float64 model's floor is the reference itself (0): its ratio is nan, undefined.

    BatchNorm stays in train mode. The model, its buffers and the RNG are left untouched (the
    work runs on copies, all from the same RNG state). Autocast: g and g_floor are computed under
    whatever autocast the caller holds (as the model trains, e.g. bfloat16), g_ref always with
    autocast disabled, in float64 (TF32 never applies to float64). Returns grad_error/rel_l2,
    grad_error/floor_rel_l2, grad_error/floor_ratio, grad_error/cosine and grad_error/block_<i>
    (relative L2 over ODE block i's parameters).

    `cache`: a dict kept by the caller across calls with the same weights and batch (anode-gradcheck
    compares every gradient method against one reference): g_ref is reused when the reference kind,
    fine_factor and every block's solver and accepted grid are the same as an earlier call's, and
    g_floor when the solver, grids, model dtype, autocast state and TF32 switches are.
    """
    if reference not in ("discrete", "fine"):
        raise ValueError(f"probe.reference {reference!r} unknown; choose from discrete, fine")
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        rng = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]
        probe = copy.deepcopy(model)
        grads = _model_gradient(probe, images, labels)
        grids = tuple((block.settings["solver"], tuple(block.last_info.ts)) for block in probe.ode_blocks)
        key = (reference, fine_factor, grids)
        if cache is not None and key in cache:
            reference_grads = cache[key]
        else:
            reference_grads = _reference_gradient(model, probe, images, labels, reference, fine_factor, rng, devices)
            if cache is not None:
                cache[key] = reference_grads
        floor_key = ("floor", grids, images.dtype, tuple(autocast_state(images.device.type)), tf32_state())
        if cache is not None and floor_key in cache:
            floor_grads = cache[floor_key]
        else:
            floor_grads = _floor_gradient(model, probe, images, labels, rng, devices)
            if cache is not None:
                cache[floor_key] = floor_grads
    rel, cosine = _compare(grads, reference_grads, list(grads))
    floor = _compare(floor_grads, reference_grads, list(grads))[0]
    ratio = rel / floor if floor > 0 else math.nan
    result = {tags.GRAD_REL_L2: rel, tags.GRAD_FLOOR: floor, tags.GRAD_FLOOR_RATIO: ratio, tags.GRAD_COSINE: cosine}
    block_names = _ode_block_prefixes(model)
    for i, prefix in enumerate(block_names):
        names = [n for n in grads if n.startswith(prefix)]
        if names:
            result[tags.block_tag(i)] = _compare(grads, reference_grads, names)[0]
    return result


def tf32_state() -> tuple[bool, bool]:
    """(cuDNN convolutions, CUDA matmuls) may use TF32: the switches anode-train's trainer.tf32 sets."""
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 cuDNN convolutions and CUDA matmuls on (Ampere and later) or off (IEEE float32).
    Float64 never runs in TF32, and the CPU ignores both switches."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def _restore_rng(rng, devices) -> None:
    torch.set_rng_state(rng[0])
    for d, state in zip(devices, rng[1]):
        torch.cuda.set_rng_state(state, d)


def _floor_gradient(model, probe, images, labels, rng, devices) -> dict:
    """`direct` gradient of a copy of model on the grids the probe accepted, at the model's own
    dtype, under the caller's autocast and TF32 switches."""
    floor = copy.deepcopy(model)
    for block, probe_block in zip(floor.ode_blocks, probe.ode_blocks):
        block.configure(grad="direct", grid=probe_block.last_info.ts)
    _restore_rng(rng, devices)
    return _model_gradient(floor, images, labels)


def _reference_gradient(model, probe, images, labels, reference, fine_factor, rng, devices) -> dict:
    """float64 `direct` gradient of a copy of model on the grids the probe accepted (or rk4, fine)."""
    exact = copy.deepcopy(model).double()
    for block, probe_block in zip(exact.ode_blocks, probe.ode_blocks):
        grid = probe_block.last_info.ts
        if reference == "discrete":
            block.configure(grad="direct", grid=grid)
        else:
            block.configure(grad="direct", solver="rk4", grid=None, steps=fine_factor * (len(grid) - 1))
    _restore_rng(rng, devices)
    with _autocast_disabled(images.device.type):
        return _model_gradient(exact, images.double(), labels)


def _autocast_disabled(device_type: str):
    """Autocast off for CPU, CUDA and device_type, whatever the caller enabled: the reference is
    float64 for real (autocast leaves float64 operands alone today, but nothing in the reference
    should depend on that, nor on a float32 tensor reaching it)."""
    return autocast_as([(kind, False, dtype, cache) for kind, _, dtype, cache in autocast_state(device_type)])


def _ode_block_prefixes(model) -> list[str]:
    by_module = {id(m): name for name, m in model.named_modules()}
    return [by_module[id(block)] + "." for block in model.ode_blocks]
