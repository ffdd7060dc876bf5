"""The solve loops: a fixed grid for every scheme, and the error-controlled loop of an adaptive one.

Shapes: the state z is any floating tensor, [B, C, H, W] for image models, or a TensorTuple of
them (rk.py; the adjoint's reverse state, on Runge-Kutta tableaus); time is a Python float (time
and state dtypes are independent). Only when `direct` differentiates an adaptive
controller are t and dt 0-d tensors in the graph.

The loops step a scheme (schemes.py) through its interface only, and leave step-size decisions to
the controller (controller.py). Host read-backs: fixed grids run without a single one (the grid
is Python floats; `check_finite` adds one at the end). Adaptive solves read back one number per
attempted step (the error ratio, with the next step size when `direct` differentiates the
controller) plus two for the starting step (one when differentiating the controller).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .controller import Controller, _sign, _value
from .rk import TensorTuple, rk_step
from .schemes import Scheme


class NonFiniteStateError(ArithmeticError):
    """The ODE state became NaN or infinite (a diverging network or a too-large step)."""


class MaxStepsError(RuntimeError):
    """An adaptive solve needed more than max_steps attempted steps."""


@dataclass(frozen=True)
class SolvePlan:
    """What to integrate over: a fixed grid of times, or adaptive control from t0 to t1."""

    tableau: Scheme  # a Butcher tableau or alf (schemes.py); a non-adaptive scheme only with a grid
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
    carry: torch.Tensor | None = None  # what the scheme carries beside z, at t1 (alf: v; mali starts from (z, v) there)


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
    rng_states[0] is the RNG state before the first step's evaluations of f (on a grid the solve's
    first; under error control after k1 and the starting-step probe, which a replay on the accepted
    grid does not repeat: adaptive solves assume a deterministic f); a grid also keeps it at the
    start of step i >= 1 (those asked for), and records the scheme's carry at t1.
    """
    if plan.grid is not None:
        z1, trajectory = _integrate_grid(func, z0, plan, record_states, record_rng, on_step)
    else:
        z1, trajectory = _integrate_adaptive(
            func, z0, plan, record_states, record_rng, differentiate_controller, norm_size, on_step
        )
    if plan.check_finite and plan.grid is not None and not _value(_all_finite(z1), trajectory):
        raise NonFiniteStateError(
            f"ODE state became non-finite during a {plan.tableau.name} solve from t={plan.t0} to t={plan.t1} "
            f"with {len(plan.grid) - 1} steps (a diverging network or too few steps)"
        )
    return z1, trajectory


def _all_finite(z) -> torch.Tensor:
    """A 0-d bool tensor: every entry of the state (a tensor or a TensorTuple) is finite."""
    if isinstance(z, TensorTuple):
        return torch.stack([torch.isfinite(x).all() for x in z]).all()
    return torch.isfinite(z).all()


def _keeps(record, i: int) -> bool:
    """record: True (every step), False, or a set of step indices."""
    return record is True or (record is not False and i in record)


def _integrate_grid(func, z, plan: SolvePlan, record_states, record_rng, on_step=None):
    """Step the scheme along the grid; what it carries beside z (alf's v) goes along."""
    scheme, trajectory = plan.tableau, Trajectory(ts=list(plan.grid))
    if _keeps(record_rng, 0):
        trajectory.rng_states.append(capture_rng(z.device))
    carry = scheme.start(func, plan.grid[0], z)
    for i, (t, t_next) in enumerate(zip(plan.grid[:-1], plan.grid[1:])):
        if _keeps(record_states, i):
            trajectory.states.append(z)
        if i > 0 and _keeps(record_rng, i):
            trajectory.rng_states.append(capture_rng(z.device))
        z_next, carry, k = scheme.step(func, t, t_next - t, z, carry)
        if on_step is not None:
            on_step(t, t_next, z, z_next, k)
        z, k = z_next, None  # drop this step's stages before the next step makes its own
    trajectory.carry = carry
    return z, trajectory


def _integrate_adaptive(
    func, z, plan: SolvePlan, record_states, record_rng, differentiate_controller, norm_size=None, on_step=None
):
    """Error-controlled solve. Rejected attempts reuse k1; FSAL tableaus reuse the last stage.

    t and dt are floats, which the loop decides with. With `differentiate_controller` (the `direct`
    method's "backprop through the solver", step-size search included) t_graph and dt_graph carry
    the same values in the autograd graph, and the steps are taken with them.
    """
    tableau, t_end = plan.tableau, plan.t1
    direction = _sign(plan.t1 - plan.t0)
    controller = Controller(tableau, plan.rtol, plan.atol, norm_size, differentiate_controller)
    trajectory = Trajectory(ts=[plan.t0])
    k1 = func(plan.t0, z)
    dt, dt_graph = controller.initial(func, plan.t0, z, k1, plan.t1 - plan.t0, trajectory)
    t, t_graph = plan.t0, plan.t0
    attempts = 0
    rng_state = capture_rng(z.device) if _keeps(record_rng, 0) else None
    while direction * (t_end - t) > 0:
        if attempts >= plan.max_steps:
            raise MaxStepsError(
                f"{tableau.name} needed more than max_steps={plan.max_steps} attempted steps "
                f"({len(trajectory.ts) - 1} accepted, {trajectory.n_rejected} rejected) and stopped at t={t:.6g} "
                f"of [{plan.t0}, {plan.t1}]; raise max_steps or loosen rtol={plan.rtol}, atol={plan.atol}"
            )
        attempts += 1
        last = direction * (t + direction * abs(dt) - t_end) >= 0
        t_next = t_end if last else t + direction * dt
        if t_next == t:
            raise MaxStepsError(f"{tableau.name}: step size underflow at t={t:.17g}; the ODE is too stiff for "
                                f"rtol={plan.rtol}, atol={plan.atol}")
        if differentiate_controller:
            t_step, step_dt = t_graph, ((t_end - t_graph) if last else direction * dt_graph)
        else:
            t_step, step_dt = t, t_next - t
        z_next, err, k = rk_step(func, tableau, t_step, step_dt, z, k1=k1, with_error=True)
        ratio, next_dt = controller.decide(err, z, z_next, step_dt, trajectory)
        if ratio != ratio or ratio == float("inf"):
            raise NonFiniteStateError(
                f"ODE state became non-finite in a {tableau.name} step at t={t:.6g} (dt={t_next - t:.3g})"
            )
        accepted = ratio <= 1.0
        dt, dt_graph = next_dt(accepted)
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
            on_step(t, t_next, z, z_next, k)
        if differentiate_controller:
            t_graph = t_graph + step_dt
        z, t = z_next, t_next
        trajectory.ts.append(t_next)
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
