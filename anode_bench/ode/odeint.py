"""`odeint`: the public entry point, with every input checked before anything runs.

Argument rules (each violation is one ValueError that names the allowed values):
- A fixed-step solver (euler, midpoint, heun, rk4) needs `steps` = N_t >= 1 or an explicit
  `grid`; h = (t1 - t0) / N_t. rtol/atol do not apply to it and are ignored.
- An adaptive solver (heun_euler, bosh3, dopri5) is controlled by rtol, atol > 0 and
  max_steps; giving it `steps` is an error (there is no N_t to set). Given a `grid`, it takes
  one step of its propagating (higher-order) solution per interval, with no error control.
- `grid` is a strictly increasing sequence of times from t0 to t1; with a grid, `steps` must
  be None.
- `alf` (asynchronous leapfrog, alf.py) is a fixed-step solver with a damping `eta` in (0, 1],
  eta != 0.5; eta is ignored by every other solver. It runs with grad direct, adjoint, anode and
  mali; aca, revolve, symplectic and interpolated rebuild Runge-Kutta stages and refuse it (as
  mali refuses every scheme without a closed-form inverse step).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .aca import ACA
from .adjoint import Adjoint
from .anode import Anode
from .direct import Direct
from .interpolated import Interpolated
from .mali import Mali
from .method import CountedFunc, GradMethod, SolveInfo
from .revolve import Revolve
from .schemes import SCHEMES, get_scheme
from .stepping import SolvePlan
from .symplectic import Symplectic

GRAD_METHODS: dict[str, GradMethod] = {
    m.name: m for m in (Direct(), Adjoint(), Anode(), ACA(), Revolve(), Symplectic(), Mali(), Interpolated())
}


def get_grad_method(grad: str | GradMethod, options: dict | None = None) -> GradMethod:
    """The named method with its options set (and checked); a GradMethod is returned as it is.

    Options are a method's own settings (adjoint: norm; revolve: checkpoints), kept apart
    from the solve plan because they change how the gradient is computed, not what is solved.
    """
    if isinstance(grad, GradMethod):
        if options:
            raise ValueError("give grad options with a grad name, not with a configured method")
        return grad
    if grad not in GRAD_METHODS:
        raise ValueError(f"grad {grad!r} unknown; choose from {', '.join(GRAD_METHODS)}")
    return GRAD_METHODS[grad].configured(**(options or {}))


def uniform_grid(t0: float, t1: float, steps: int) -> tuple[float, ...]:
    """N_t + 1 equally spaced times, t0 first and t1 last exactly."""
    return tuple(t0 + (t1 - t0) * i / steps for i in range(steps)) + (t1,)


def make_plan(
    solver: str = "rk4",
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int | None = None,
    grid: Sequence[float] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    max_steps: int = 10000,
    check_finite: bool = True,
    eta: float = 1.0,
) -> SolvePlan:
    """Validate the solver arguments and turn them into a SolvePlan."""
    scheme = get_scheme(solver).configured(eta=eta)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ValueError(f"need finite t0 < t1, got t0={t0}, t1={t1}")
    if grid is not None:
        if steps is not None:
            raise ValueError("give either steps or grid, not both")
        grid = tuple(float(t) for t in grid)
        if len(grid) < 2 or any(b <= a for a, b in zip(grid, grid[1:])):
            raise ValueError(f"grid must be a strictly increasing sequence of at least 2 times, got {grid}")
        if grid[0] != t0 or grid[-1] != t1:
            raise ValueError(f"grid must run from t0={t0} to t1={t1}, got {grid[0]} .. {grid[-1]}")
    elif scheme.adaptive:
        if steps is not None:
            raise ValueError(
                f"solver {solver!r} is adaptive: it takes rtol/atol, not steps={steps}; "
                f"use a fixed-step solver ({', '.join(n for n, s in SCHEMES.items() if not s.adaptive)}) or a grid"
            )
    else:
        if steps is None:
            raise ValueError(f"fixed-step solver {solver!r} needs steps (N_t, an integer >= 1) or a grid")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        grid = uniform_grid(t0, t1, steps)
    if scheme.adaptive and grid is None:
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    return SolvePlan(scheme, t0, t1, grid, float(rtol), float(atol), max_steps, check_finite)


def solve(
    func, y0: torch.Tensor, plan: SolvePlan, grad: str | GradMethod = "direct", grad_options: dict | None = None
) -> tuple[torch.Tensor, SolveInfo]:
    """Integrate a validated plan with a gradient method (a name plus options, or a configured
    GradMethod). Returns (y(t1), info)."""
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise ValueError(f"y0 must be a floating-point tensor, got {type(y0).__name__}")
    method = get_grad_method(grad, grad_options)
    method.check_plan(plan)
    info = SolveInfo()
    y1 = method.solve(CountedFunc(func), y0, plan, info)
    return y1, info


def odeint(
    func: torch.nn.Module,
    y0: torch.Tensor,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    solver: str = "rk4",
    steps: int | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    grad: str = "direct",
    grid: Sequence[float] | None = None,
    max_steps: int = 10000,
    return_info: bool = False,
    check_finite: bool = True,
    grad_options: dict | None = None,
    eta: float = 1.0,
):
    """Solve dy/dt = func(t, y) from t0 to t1 and return y(t1), or (y(t1), SolveInfo).

    func(t, y) -> dy/dt with y's shape; t is a Python float (a 0-d tensor only when `direct`
    differentiates an adaptive controller). Gradients reach y0 and every parameter of func
    that requires grad; func must not close over other tensors that require grad.
    `check_finite` makes a fixed-grid solve check its end state once (one host sync) and
    raise NonFiniteStateError; adaptive solves always check, at no extra cost.
    `grad_options`: the gradient method's own settings, e.g. {"checkpoints": 3} for revolve,
    {"norm": "seminorm"} for adjoint. `eta`: the damping of solver alf.
    """
    method = get_grad_method(grad, grad_options)
    plan = make_plan(
        solver, t0=t0, t1=t1, steps=steps, grid=grid, rtol=rtol, atol=atol, max_steps=max_steps,
        check_finite=check_finite, eta=eta,
    )
    y1, info = solve(func, y0, plan, method)
    return (y1, info) if return_info else y1
