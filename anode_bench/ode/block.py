"""`ODEBlock`: an nn.Module that replaces a residual block z + f(z) by z(t1) of dz/dt = f(t, z)."""
from __future__ import annotations

import torch
from torch import nn

from .method import SolveInfo
from .odeint import get_grad_method, make_plan, solve
from .schemes import get_scheme


class ODEBlock(nn.Module):
    """z(t0) = input, returns z(t1) of dz/dt = func(t, z; θ). Input and output: the same shape.

    The solve settings are checked at construction (and by `configure`). After each forward,
    `last_info` holds that solve's SolveInfo; its nfe_backward is filled in by backward.
    Cost per block: forward NFE = s·N_t for a fixed solver with s propagating stages.
    """

    def __init__(
        self,
        func: nn.Module,
        *,
        solver: str = "rk4",
        steps: int | None = 1,
        grad: str = "direct",
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float = 1e-3,
        atol: float = 1e-4,
        max_steps: int = 10000,
        check_finite: bool = True,
        grad_options: dict | None = None,
        eta: float = 1.0,
    ):
        super().__init__()
        self.func = func
        self.last_info = SolveInfo()
        self.settings = {}
        self.configure(
            solver=solver, steps=steps, grad=grad, t0=t0, t1=t1, rtol=rtol, atol=atol, max_steps=max_steps,
            check_finite=check_finite, grad_options=grad_options, eta=eta,
        )

    def configure(self, **changes) -> "ODEBlock":
        """Change solve settings (solver, steps, grad, grad_options, t0, t1, rtol, atol, max_steps,
        check_finite, grid, eta: the damping of solver alf).

        An adaptive solver or an explicit grid ignores `steps` here (the block keeps it for when a
        fixed solver on a uniform grid returns); `grid=None` goes back to steps or tolerances.
        `grad_options` belong to the grad they came with: a new `grad` without them gets that
        method's defaults.
        """
        unknown = set(changes) - {
            "solver", "steps", "grad", "grad_options", "t0", "t1", "rtol", "atol", "max_steps", "check_finite", "grid",
            "eta",
        }
        if unknown:
            raise ValueError(f"unknown ODEBlock settings {sorted(unknown)}")
        if "grad" in changes and "grad_options" not in changes:
            changes["grad_options"] = None
        settings = {**self.settings, **changes}
        settings.setdefault("grid", None)
        settings["grad_options"] = dict(settings.get("grad_options") or {})
        method = get_grad_method(settings["grad"], settings["grad_options"])
        plan_args = {k: v for k, v in settings.items() if k not in ("grad", "grad_options")}
        if plan_args["grid"] is not None or get_scheme(settings["solver"]).adaptive:
            plan_args["steps"] = None
        plan = make_plan(**plan_args)
        method.check_plan(plan)
        self.plan, self.method, self.settings = plan, method, settings
        return self

    @property
    def grad(self) -> str:
        return self.settings["grad"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z1, self.last_info = solve(self.func, z, self.plan, self.method)
        return z1

    def extra_repr(self) -> str:
        hidden = {"check_finite"} | {k for k in ("grid", "grad_options") if not self.settings[k]}
        if self.settings["solver"] != "alf":
            hidden.add("eta")  # the damping of solver alf only
        return ", ".join(f"{k}={v}" for k, v in self.settings.items() if k not in hidden)
