"""The one gradient-method interface, and the autograd plumbing the checkpointing methods share.

A gradient method turns (func, z0, plan) into z(t1) with some rule for dL/dz0 and dL/dθ
(θ = the parameters of func that require grad). `direct` lets autograd record everything; the
others (`CheckpointMethod`) run the forward without a graph, keep what they need (a `Trajectory`),
and compute the gradient in `backward` of one shared autograd.Function.

Whatever a backward evaluates, running statistics and other buffers of func are restored
afterwards (a recompute must not update BatchNorm twice), and the global RNG is left as the
forward left it (`unobserved`, which also guards the interpolated adjoint's one extra forward
evaluation). A backward also runs under the autocast state of its forward (autograd calls it
outside the caller's `torch.autocast`): a recompute in float32 of a forward that ran in bfloat16
would differentiate another function.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch

from .stepping import SolvePlan, Trajectory, integrate


@dataclass
class SolveInfo:
    """What one solve cost. nfe_backward is filled in when backward has run.

    nfe_* count evaluations of f. A backward evaluation of anode, aca, the adjoint or the
    interpolated adjoint is followed by one vector-Jacobian product of it; revolve's advances,
    mali's inverse step and symplectic's stage recomputes run without a graph. `direct`'s
    backward evaluates nothing (VJPs of the recorded graph only).
    host_syncs* count host read-backs of tensor values by the solve loops (stepping._value):
    0 on fixed grids (1 with check_finite, the end-state check); adaptive: one per attempted
    step plus two for the starting-step guess (one when `direct` differentiates the controller).
    Each read-back synchronizes a CUDA device.
    """

    ts: list[float] = field(default_factory=list)
    nfe_forward: int = 0
    nfe_backward: int = 0
    n_rejected: int = 0
    n_rejected_backward: int = 0
    host_syncs: int = 0
    host_syncs_backward: int = 0


class CountedFunc:
    """Wraps f(t, z) and counts its calls."""

    def __init__(self, func):
        self.func = func
        self.calls = 0

    def __call__(self, t, z):
        self.calls += 1
        return self.func(t, z)


def trainable_parameters(func) -> tuple[torch.Tensor, ...]:
    return tuple(p for p in func.parameters() if p.requires_grad)


class GradMethod:
    """Base of every gradient method: `solve(func, z0, plan, info) -> z(t1)`.

    A method's options (`option_names`, defaults as class attributes, e.g. revolve's
    `checkpoints`) are set by `configured(**options)`, which returns a checked copy: the
    registry's instances keep the defaults.
    """

    name: str
    option_names: tuple[str, ...] = ()
    runge_kutta_only = False  # rebuilds Runge-Kutta stages itself (rk_step): needs a runge_kutta scheme

    def configured(self, **options) -> "GradMethod":
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            choices = ", ".join(self.option_names) if self.option_names else "none"
            raise ValueError(f"grad {self.name!r} has no option {', '.join(unknown)}; its options: {choices}")
        method = copy.copy(self)
        for key, value in options.items():
            setattr(method, key, value)
        method.check_options()
        return method

    def check_options(self) -> None:
        """Raise ValueError for a bad option value."""

    def check_plan(self, plan: SolvePlan) -> None:
        """Raise ValueError if this method cannot run `plan` (e.g. a solver it does not support)."""
        if self.runge_kutta_only and not plan.tableau.runge_kutta:
            raise ValueError(
                f"grad {self.name!r} steps a Runge-Kutta tableau, not solver {plan.tableau.name!r}; "
                f"use grad direct, adjoint, anode or mali with it"
            )

    def solve(self, func: CountedFunc, z0: torch.Tensor, plan: SolvePlan, info: SolveInfo) -> torch.Tensor:
        raise NotImplementedError


class CheckpointMethod(GradMethod):
    """A method that solves forward without a graph and computes gradients in its own backward.

    Subclasses set what the forward records (or override `record`) and implement `backward`.
    """

    record_states = False  # keep z at every accepted step (ACA)
    record_rng = False  # keep the RNG state of every step (recomputing methods)
    # backward takes the recorded states over and may drop each once done with it (revolve: K + 1
    # states in all); then the graph can be backpropagated once only (no retain_graph)
    releases_states = False

    def states_to_record(self, plan: SolvePlan):
        """Which states z_i the forward keeps: True (all), False, or a set of step indices i."""
        return self.record_states

    def rng_to_record(self, plan: SolvePlan):
        """At the start of which steps the forward keeps the RNG state: True, False or a set."""
        return self.record_rng

    def record(self, func, z0, plan: SolvePlan) -> tuple[torch.Tensor, Trajectory]:
        """The forward solve, without a graph: z(t1) and what backward needs (the Trajectory)."""
        return integrate(
            func, z0, plan, record_states=self.states_to_record(plan), record_rng=self.rng_to_record(plan)
        )

    def solve(self, func, z0, plan, info):
        params = trainable_parameters(func.func)
        if not torch.is_grad_enabled() or not (z0.requires_grad or params):
            z1, trajectory = integrate(func, z0, plan)
            _record_forward(info, func, trajectory)
            return z1
        return _CheckpointedSolve.apply(z0, self, func, plan, info, *params)

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        """Returns (dL/dz0, [dL/dθ for θ in params]), given dL/dz1."""
        raise NotImplementedError


def _record_forward(info: SolveInfo, func: CountedFunc, trajectory: Trajectory) -> None:
    info.ts = trajectory.ts
    info.n_rejected = trajectory.n_rejected
    info.nfe_forward = func.calls
    info.host_syncs = trajectory.host_syncs


AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def autocast_state(device_type: str) -> list[tuple[str, bool, torch.dtype, bool]]:
    """The autocast settings in force for CPU, CUDA and device_type: (device type, enabled, dtype,
    cache_enabled) each, what torch.utils.checkpoint keeps to re-run a forward in backward."""
    types = dict.fromkeys((*AUTOCAST_DEVICE_TYPES, device_type))
    cache = torch.is_autocast_cache_enabled()
    return [
        (t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t), cache)
        for t in types
        if torch.amp.is_autocast_available(t)
    ]


@contextlib.contextmanager
def autocast_as(state):
    """Enter exactly the autocast settings `autocast_state` captured (enabled or disabled)."""
    with contextlib.ExitStack() as stack:
        for device_type, enabled, dtype, cache in state:
            stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache))
        yield


@contextlib.contextmanager
def unobserved(func: CountedFunc, device: torch.device):
    """Evaluations of func that the network must not notice: its buffers (BatchNorm running
    statistics) are restored afterwards and the global RNG is left as it was."""
    buffers = list(func.func.buffers())
    with torch.no_grad():
        saved_buffers = clones(buffers)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, saved_buffers)


class _CheckpointedSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, method, func, plan, info, *params):
        z1, trajectory = method.record(func, z0, plan)
        _record_forward(info, func, trajectory)
        ctx.method, ctx.func, ctx.plan, ctx.info, ctx.params = method, func, plan, info, params
        ctx.rng_states = trajectory.rng_states
        ctx.ts = trajectory.ts
        ctx.autocast = autocast_state(z0.device.type)  # the backward re-enters it
        ctx.carry = trajectory.carry  # the scheme's carry at t1 (alf: v), made under no_grad: never an input or output
        if method.releases_states:  # held by ctx, not autograd, so backward can let each go; never z0 or z1
            ctx.states = trajectory.states
            ctx.save_for_backward(z0, z1)
        else:
            ctx.save_for_backward(z0, z1, *trajectory.states)
        return z1

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative (create_graph) is refused, not silently dropped
    def backward(ctx, grad_z1):
        z0, z1, *states = ctx.saved_tensors
        if ctx.method.releases_states:
            if ctx.states is None:
                raise RuntimeError(f"grad {ctx.method.name!r} freed its checkpoints in an earlier backward through "
                                   f"this graph: backpropagate through it once (no retain_graph), or use grad 'aca'")
            states, ctx.states = ctx.states, None
        trajectory = Trajectory(ts=ctx.ts, states=states, rng_states=ctx.rng_states, carry=ctx.carry)
        func, info = ctx.func, ctx.info
        calls_before = func.calls
        with torch.enable_grad(), autocast_as(ctx.autocast), unobserved(func, z0.device):
            grad_z0, grad_params = ctx.method.backward(
                func, ctx.params, ctx.plan, trajectory, z0, z1, grad_z1, info
            )
        info.nfe_backward += func.calls - calls_before
        return (grad_z0, None, None, None, None, *grad_params)


def clones(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the tensors, in one op where torch has `_foreach_clone`."""
    if not tensors:
        return []
    if hasattr(torch, "_foreach_clone"):
        return list(torch._foreach_clone(tensors))
    return [t.clone() for t in tensors]


class GradientSum:
    """The running sum of the parameter gradients of a method's steps (or stages): the first
    step's gradients become the sum (no zeros to add them to), each later one is added in one fused
    op. `total()` is the sum (zeros if nothing was added)."""

    def __init__(self, params):
        self.params, self.sum = params, None

    def add(self, grads) -> None:
        if self.sum is None:
            self.sum = list(grads)  # vjp's own new tensors: summed into in place from here on
        elif self.sum:
            torch._foreach_add_(self.sum, list(grads))

    def total(self) -> list[torch.Tensor]:
        return self.sum if self.sum is not None else [torch.zeros_like(p) for p in self.params]


def vjp(outputs, inputs, grad_outputs):
    """autograd.grad with zeros for inputs the outputs do not depend on."""
    grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
