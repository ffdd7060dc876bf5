"""The one Runge-Kutta engine: a step, the step-size controller, and the solve loops.

Shapes: the state z is any floating tensor, [B, C, H, W] for image models; time is a Python
float (time and state dtypes are independent). Only when `direct` differentiates an adaptive
controller are t and dt 0-d tensors in the graph.

Fixed grids run without a single host round-trip (the grid is Python floats). Adaptive solves
read the error ratio back once per attempted step, to accept or reject it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .alf import Leapfrog, alf_step
from .tableaus import Tableau

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0


class NonFiniteStateError(ArithmeticError):
    """The ODE state became NaN or infinite (a diverging network or a too-large step)."""


class MaxStepsError(RuntimeError):
    """An adaptive solve needed more than max_steps attempted steps."""


@dataclass(frozen=True)
class SolvePlan:
    """What to integrate over: a fixed grid of times, or adaptive control from t0 to t1."""

    tableau: Tableau | Leapfrog  # a Leapfrog (solver alf) only with a grid
    t0: float
    t1: float
    grid: tuple[float, ...] | None  # None: adaptive control with rtol/atol
    rtol: float = 1e-3
    atol: float = 1e-4
    max_steps: int = 10000
    check_finite: bool = True


@dataclass
class Trajectory:
    """The accepted steps of one solve: ts[0] = t0 .. ts[N] = t1; what a checkpoint method keeps."""

    ts: list[float]
    states: list[torch.Tensor] = field(default_factory=list)  # z(ts[i]) for i < N, if recorded
    rng_states: list = field(default_factory=list)  # RNG state at the start of each step, if recorded
    n_rejected: int = 0
    velocity: torch.Tensor | None = None  # alf: v at t1 (mali rebuilds the trajectory from (z, v) at t1)


def combine(z: torch.Tensor, dt, coeffs, k: list[torch.Tensor]) -> torch.Tensor:
    """z + dt * sum_j coeffs[j] k[j], skipping zero coefficients."""
    out = z
    for coeff, k_j in zip(coeffs, k):
        if coeff != 0.0:
            out = out + (dt * coeff) * k_j
    return out


def rk_step(func, tableau: Tableau, t, dt, z, k1=None, with_error=False):
    """One explicit RK step. Returns (z_next, err or None, stages k). k1 = f(t, z) if already known."""
    stages = tableau.stages if with_error else tableau.solution_stages
    k = [func(t, z) if k1 is None else k1]
    for i in range(1, stages):
        k.append(func(t + tableau.c[i] * dt, combine(z, dt, tableau.a[i], k)))
    z_next = combine(z, dt, tableau.b, k)
    err = combine(torch.zeros_like(z), dt, tableau.b_err, k) if with_error else None
    return z_next, err, k


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


def error_ratio(err, z, z_next, rtol, atol) -> torch.Tensor:
    """RMS of err / (atol + rtol * max(|z|, |z_next|)); a step is accepted when this is <= 1."""
    scale = atol + rtol * torch.maximum(z.abs(), z_next.abs())
    return rms(err / scale)


def initial_step(
    func, tableau: Tableau, t0: float, z0, f0, rtol, atol, span: float, differentiable=False, select=None
):
    """Hairer, Norsett & Wanner (1993) II.4 starting step; one evaluation of f.

    Returns |dt| as a 0-d tensor in the graph if `differentiable`, else as a float.
    `select(x)`: the part of a state the norms look at (the seminorm adjoint); default all of it."""
    select = select or (lambda x: x)
    sign = _sign(span)
    scale = atol + rtol * select(z0).abs()
    d0, d1 = rms(select(z0) / scale), rms(select(f0) / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-5))
    h0 = h0.clamp_max(abs(span))
    h0_step = h0 if differentiable else _value(h0)
    f1 = func(t0 + sign * h0_step, z0 + (sign * h0_step) * f0)
    d2 = rms(select(f1 - f0) / scale) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(
        d12 <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / d12.clamp_min(1e-15)) ** (1.0 / (tableau.order + 1)),
    )
    h = torch.minimum(100 * h0, h1).clamp_max(abs(span))
    return h if differentiable else _value(h)


def _value(x) -> float:
    """The float value of a Python number or 0-d tensor (a host read-back for a tensor)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _sign(x: float) -> float:
    return 1.0 if x >= 0 else -1.0


def integrate(
    func: Callable,
    z0: torch.Tensor,
    plan: SolvePlan,
    *,
    record_states: bool = False,
    record_rng: bool = False,
    differentiate_controller: bool = False,
    norm_size: int | None = None,
):
    """Solve dz/dt = func(t, z) from plan.t0 to plan.t1. Returns (z(t1), Trajectory).

    Runs under whatever grad mode the caller set. `plan.t1 < plan.t0` integrates backwards
    (the adjoint's reverse solve). `record_states` / `record_rng`: True keeps z_i / the RNG
    state at the start of every step, a set of step indices i keeps those only (revolve's
    snapshots). `norm_size`: adaptive error control (and the starting-step guess) looks at the
    first norm_size entries of the flattened state only (the seminorm adjoint); None: all of it.
    A Leapfrog plan (solver alf) runs the asynchronous leapfrog loop instead of the RK one.
    """
    if isinstance(plan.tableau, Leapfrog):
        z1, trajectory = _integrate_alf(func, z0, plan, record_rng)
    elif plan.grid is not None:
        z1, trajectory = _integrate_grid(func, z0, plan, record_states, record_rng)
    else:
        z1, trajectory = _integrate_adaptive(
            func, z0, plan, record_states, record_rng, differentiate_controller, norm_size
        )
    if plan.check_finite and plan.grid is not None and not torch.isfinite(z1).all():
        raise NonFiniteStateError(
            f"ODE state became non-finite during a {plan.tableau.name} solve from t={plan.t0} to t={plan.t1} "
            f"with {len(plan.grid) - 1} steps (a diverging network or too few steps)"
        )
    return z1, trajectory


def _keeps(record, i: int) -> bool:
    """record: True (every step), False, or a set of step indices."""
    return record is True or (record is not False and i in record)


def _integrate_grid(func, z, plan: SolvePlan, record_states, record_rng):
    trajectory = Trajectory(ts=list(plan.grid))
    for i, (t, t_next) in enumerate(zip(plan.grid[:-1], plan.grid[1:])):
        if _keeps(record_states, i):
            trajectory.states.append(z)
        if _keeps(record_rng, i):
            trajectory.rng_states.append(capture_rng(z.device))
        z, _, _ = rk_step(func, plan.tableau, t, t_next - t, z)
    return z, trajectory


def _integrate_alf(func, z, plan: SolvePlan, record_rng):
    """Asynchronous leapfrog on the grid: v_0 = f(t0, z0), then one alf_step per interval.
    rng_states (if recorded): before v_0's evaluation, then at the start of every step."""
    trajectory = Trajectory(ts=list(plan.grid))
    if record_rng:
        trajectory.rng_states.append(capture_rng(z.device))
    v = func(plan.grid[0], z)
    for t, t_next in zip(plan.grid[:-1], plan.grid[1:]):
        if record_rng:
            trajectory.rng_states.append(capture_rng(z.device))
        z, v = alf_step(func, plan.tableau, t, t_next - t, z, v)
    trajectory.velocity = v
    return z, trajectory


def _integrate_adaptive(
    func, z, plan: SolvePlan, record_states, record_rng, differentiate_controller, norm_size=None
):
    """Error-controlled solve. Rejected attempts reuse k1; FSAL tableaus reuse the last stage.

    With `differentiate_controller` the step sizes stay in the autograd graph (the `direct`
    method's "backprop through the solver", step-size search included); otherwise dt is a float.
    """
    tableau, t_end = plan.tableau, plan.t1
    direction = _sign(plan.t1 - plan.t0)
    exponent = -1.0 / (min(tableau.order, tableau.low_order) + 1)
    select = None if norm_size is None else (lambda x: x.reshape(-1)[:norm_size])
    k1 = func(plan.t0, z)
    dt = initial_step(
        func, tableau, plan.t0, z, k1, plan.rtol, plan.atol, plan.t1 - plan.t0, differentiate_controller, select
    )
    t, t_val = plan.t0, plan.t0  # t: in the graph when differentiating the controller; t_val: its float value
    trajectory = Trajectory(ts=[plan.t0])
    attempts = 0
    rng_state = capture_rng(z.device) if _keeps(record_rng, 0) else None
    while direction * (t_end - t_val) > 0:
        if attempts >= plan.max_steps:
            raise MaxStepsError(
                f"{tableau.name} needed more than max_steps={plan.max_steps} attempted steps "
                f"({len(trajectory.ts) - 1} accepted, {trajectory.n_rejected} rejected) and stopped at t={t_val:.6g} "
                f"of [{plan.t0}, {plan.t1}]; raise max_steps or loosen rtol={plan.rtol}, atol={plan.atol}"
            )
        attempts += 1
        last = direction * (t_val + direction * abs(_value(dt)) - t_end) >= 0
        if differentiate_controller:
            step_dt = (t_end - t) if last else direction * dt
            t_next, t_next_val = t + step_dt, (t_end if last else t_val + _value(step_dt))
        else:
            t_next_val = t_end if last else t_val + direction * dt
            t_next = t_next_val
            step_dt = t_next_val - t_val
        if t_next_val == t_val:
            raise MaxStepsError(f"{tableau.name}: step size underflow at t={t_val:.17g}; the ODE is too stiff for rtol={plan.rtol}, atol={plan.atol}")
        z_next, err, k = rk_step(func, tableau, t, step_dt, z, k1=k1, with_error=True)
        if select is None:
            ratio = error_ratio(err, z, z_next, plan.rtol, plan.atol)
        else:
            ratio = error_ratio(select(err), select(z), select(z_next), plan.rtol, plan.atol)
        ratio_val = _value(ratio)  # the one host read-back per attempted step
        if ratio_val != ratio_val or ratio_val == float("inf"):
            raise NonFiniteStateError(
                f"ODE state became non-finite in a {tableau.name} step at t={t_val:.6g} (dt={_value(step_dt):.3g})"
            )
        accepted = ratio_val <= 1.0
        factor = (SAFETY * ratio.clamp_min(1e-10) ** exponent).clamp(MIN_FACTOR, MAX_FACTOR if accepted else 1.0)
        dt = abs(step_dt) * factor if differentiate_controller else abs(step_dt) * _value(factor)
        if not accepted:
            trajectory.n_rejected += 1
            k1 = k[0]
            continue
        step = len(trajectory.ts) - 1
        if _keeps(record_states, step):
            trajectory.states.append(z)
        if _keeps(record_rng, step):
            trajectory.rng_states.append(rng_state)
        if _keeps(record_rng, step + 1):
            rng_state = capture_rng(z.device)
        z, t, t_val = z_next, t_next, t_next_val
        trajectory.ts.append(t_next_val)
        k1 = k[-1] if tableau.fsal else None  # None: the next rk_step evaluates f(t, z)
    return z, trajectory


def capture_rng(device: torch.device):
    """The RNG state a recompute must restore so stochastic layers draw the same numbers."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def restore_rng(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
