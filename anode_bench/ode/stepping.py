"""The one Runge-Kutta engine: a step, the step-size controller, and the solve loops.

Shapes: the state z is any floating tensor, [B, C, H, W] for image models; time is a Python
float (time and state dtypes are independent). Only when `direct` differentiates an adaptive
controller are t and dt 0-d tensors in the graph.

Host read-backs (each one synchronizes a CUDA device) all go through `_value`, which counts
them on the solve's Trajectory (SolveInfo.host_syncs). Fixed grids run without a single one (the
grid is Python floats; `check_finite` adds one at the end). Adaptive solves read back one number
per attempted step (the error ratio: accept or reject, and the next step size computed from it
on the host) plus two for the starting step; when `direct` differentiates the controller, dt
stays a tensor and each attempt reads the ratio and the next dt together, in one read-back, plus
one read of the starting step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .alf import Leapfrog, alf_start, alf_step
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
    host_syncs: int = 0  # host read-backs of tensor values during the solve (see _value)
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
    func, tableau: Tableau, t0: float, z0, f0, rtol, atol, span: float, differentiable=False, select=None,
    counter: "Trajectory | None" = None,
):
    """Hairer, Norsett & Wanner (1993) II.4 starting step; one evaluation of f.

    Returns |dt| as a 0-d tensor in the graph if `differentiable` (no host read-back), else as a
    float (two read-backs, counted on `counter`: the probe step h0, then the result).
    `select(x)`: the part of a state the norms look at (the seminorm adjoint); default all of it."""
    select = select or (lambda x: x)
    sign = _sign(span)
    scale = atol + rtol * select(z0).abs()
    d0, d1 = rms(select(z0) / scale), rms(select(f0) / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-5))
    h0 = h0.clamp_max(abs(span))
    h0_step = h0 if differentiable else _value(h0, counter)
    f1 = func(t0 + sign * h0_step, z0 + (sign * h0_step) * f0)
    d2 = rms(select(f1 - f0) / scale) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(
        d12 <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / d12.clamp_min(1e-15)) ** (1.0 / (tableau.order + 1)),
    )
    h = torch.minimum(100 * h0, h1).clamp_max(abs(span))
    return h if differentiable else _value(h, counter)


def _value(x, counter: "Trajectory | None") -> float:
    """The float value of a Python number or 0-d tensor. For a tensor that is a host read-back (a
    device sync on CUDA): the solve loops read tensor values through here only, and count each on
    `counter` (the solve's Trajectory)."""
    if not isinstance(x, torch.Tensor):
        return float(x)
    if counter is not None:
        counter.host_syncs += 1
    return float(x.detach())


def _values(xs, counter: "Trajectory | None") -> list[float]:
    """The float values of several 0-d tensors with one host read-back (exact: the tensors are
    stacked in their promoted dtype)."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    if counter is not None:
        counter.host_syncs += 1
    return torch.stack([x.detach().to(dtype) for x in xs]).tolist()


def step_factor(ratio: float, exponent: float, accepted: bool) -> float:
    """SAFETY * ratio ** exponent in [MIN_FACTOR, MAX_FACTOR] (at most 1 after a rejection), on the
    host from the ratio already read back. x ** -0.5 is computed as 1 / sqrt(x), as torch computes
    that power, so float64 solves take the same steps as the tensor formula (`_factor_tensor`)."""
    ratio = max(ratio, 1e-10)
    power = 1.0 / math.sqrt(ratio) if exponent == -0.5 else ratio**exponent
    return min(max(SAFETY * power, MIN_FACTOR), MAX_FACTOR if accepted else 1.0)


def _factor_tensor(ratio: torch.Tensor, exponent: float, accepted: bool) -> torch.Tensor:
    """step_factor in the autograd graph (direct differentiating the controller)."""
    return (SAFETY * ratio.clamp_min(1e-10) ** exponent).clamp(MIN_FACTOR, MAX_FACTOR if accepted else 1.0)


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
    on_step: Callable | None = None,
):
    """Solve dz/dt = func(t, z) from plan.t0 to plan.t1. Returns (z(t1), Trajectory).

    Runs under whatever grad mode the caller set. `plan.t1 < plan.t0` integrates backwards
    (the adjoint's reverse solve). `record_states` / `record_rng`: True keeps z_i / the RNG
    state at the start of every step, a set of step indices i keeps those only (revolve's
    snapshots). `norm_size`: adaptive error control (and the starting-step guess) looks at the
    first norm_size entries of the flattened state only (the seminorm adjoint); None: all of it.
    `on_step(t, t_next, z, z_next, k)` is called after every accepted Runge-Kutta step with the
    stages it evaluated (k[0] = f(t, z); the solution stages on a grid, all of the tableau's under
    error control): the interpolated adjoint samples its dense output there.
    A Leapfrog plan (solver alf) runs the asynchronous leapfrog loop instead of the RK one.
    """
    if isinstance(plan.tableau, Leapfrog):
        z1, trajectory = _integrate_alf(func, z0, plan, record_rng)
    elif plan.grid is not None:
        z1, trajectory = _integrate_grid(func, z0, plan, record_states, record_rng, on_step)
    else:
        z1, trajectory = _integrate_adaptive(
            func, z0, plan, record_states, record_rng, differentiate_controller, norm_size, on_step
        )
    if plan.check_finite and plan.grid is not None and not _value(torch.isfinite(z1).all(), trajectory):
        raise NonFiniteStateError(
            f"ODE state became non-finite during a {plan.tableau.name} solve from t={plan.t0} to t={plan.t1} "
            f"with {len(plan.grid) - 1} steps (a diverging network or too few steps)"
        )
    return z1, trajectory


def _keeps(record, i: int) -> bool:
    """record: True (every step), False, or a set of step indices."""
    return record is True or (record is not False and i in record)


def _integrate_grid(func, z, plan: SolvePlan, record_states, record_rng, on_step=None):
    trajectory = Trajectory(ts=list(plan.grid))
    for i, (t, t_next) in enumerate(zip(plan.grid[:-1], plan.grid[1:])):
        if _keeps(record_states, i):
            trajectory.states.append(z)
        if _keeps(record_rng, i):
            trajectory.rng_states.append(capture_rng(z.device))
        z_next, _, k = rk_step(func, plan.tableau, t, t_next - t, z)
        if on_step is not None:
            on_step(t, t_next, z, z_next, k)
        z, k = z_next, None  # drop this step's stages before the next step makes its own
    return z, trajectory


def _integrate_alf(func, z, plan: SolvePlan, record_rng):
    """Asynchronous leapfrog on the grid: v_0 = f(t0, z0), then one alf_step per interval.
    rng_states (if recorded): before v_0's evaluation, then at the start of every step."""
    trajectory = Trajectory(ts=list(plan.grid))
    if record_rng:
        trajectory.rng_states.append(capture_rng(z.device))
    v = alf_start(func, plan.grid[0], z)
    for t, t_next in zip(plan.grid[:-1], plan.grid[1:]):
        if record_rng:
            trajectory.rng_states.append(capture_rng(z.device))
        z, v = alf_step(func, plan.tableau, t, t_next - t, z, v)
    trajectory.velocity = v
    return z, trajectory


def _integrate_adaptive(
    func, z, plan: SolvePlan, record_states, record_rng, differentiate_controller, norm_size=None, on_step=None
):
    """Error-controlled solve. Rejected attempts reuse k1; FSAL tableaus reuse the last stage.

    With `differentiate_controller` the step sizes stay in the autograd graph (the `direct`
    method's "backprop through the solver", step-size search included); otherwise dt is a float.
    """
    tableau, t_end = plan.tableau, plan.t1
    direction = _sign(plan.t1 - plan.t0)
    exponent = -1.0 / (min(tableau.order, tableau.low_order) + 1)
    select = None if norm_size is None else (lambda x: x.reshape(-1)[:norm_size])
    trajectory = Trajectory(ts=[plan.t0])
    k1 = func(plan.t0, z)
    dt = initial_step(
        func, tableau, plan.t0, z, k1, plan.rtol, plan.atol, plan.t1 - plan.t0, differentiate_controller, select,
        counter=trajectory,
    )
    dt_val = _value(dt, trajectory)  # differentiating the controller: dt is a tensor, read once here
    t, t_val = plan.t0, plan.t0  # t: in the graph when differentiating the controller; t_val: its float value
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
        last = direction * (t_val + direction * abs(dt_val) - t_end) >= 0
        if differentiate_controller:
            step_dt = (t_end - t) if last else direction * dt
            t_next, t_next_val = t + step_dt, (t_end if last else t_val + direction * dt_val)
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
        if differentiate_controller:
            # the next dt for both outcomes, in the graph; read back with the ratio: one read-back
            next_dt = {ok: abs(step_dt) * _factor_tensor(ratio, exponent, ok) for ok in (True, False)}
            ratio_val, *next_vals = _values([ratio, next_dt[True], next_dt[False]], trajectory)
        else:
            ratio_val = _value(ratio, trajectory)  # the one host read-back per attempted step
        if ratio_val != ratio_val or ratio_val == float("inf"):
            raise NonFiniteStateError(
                f"ODE state became non-finite in a {tableau.name} step at t={t_val:.6g} "
                f"(dt={t_next_val - t_val:.3g})"
            )
        accepted = ratio_val <= 1.0
        if differentiate_controller:
            dt, dt_val = next_dt[accepted], next_vals[0 if accepted else 1]
        else:
            dt = dt_val = abs(step_dt) * step_factor(ratio_val, exponent, accepted)
        if not accepted:
            trajectory.n_rejected += 1
            k1, z_next, err, k = k[0], None, None, None  # free the attempt's stages before the next attempt
            continue
        step = len(trajectory.ts) - 1
        if _keeps(record_states, step):
            trajectory.states.append(z)
        if _keeps(record_rng, step):
            trajectory.rng_states.append(rng_state)
        if _keeps(record_rng, step + 1):
            rng_state = capture_rng(z.device)
        if on_step is not None:
            on_step(t_val, t_next_val, z, z_next, k)
        z, t, t_val = z_next, t_next, t_next_val
        trajectory.ts.append(t_next_val)
        k1 = k[-1] if tableau.fsal else None  # None: the next rk_step evaluates f(t, z)
        err = k = None  # free this step's stages before the next step makes its own
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
