"""Measurements: peak memory of a piece of work on CPU or CUDA, and device-synchronized time.

CPU: there is no allocator to query, but the PyTorch profiler with profile_memory=True records
every allocation and free; the running sum of their sizes, maximised over the window, is the
peak memory the work allocated on top of what already existed (activations, graph, gradients).
CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus what was resident.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

MIB = 2**20


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

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
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
