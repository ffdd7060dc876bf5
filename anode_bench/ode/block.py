"""`ODEBlock`: an nn.Module that replaces a residual block z + f(z) by z(t1) of dz/dt = f(t, z)."""
from __future__ import annotations

import torch
from torch import nn

from .method import SolveInfo
from .odeint import get_grad_method, make_plan, solve
from .tableaus import get_tableau


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
    ):
        super().__init__()
        self.func = func
        self.last_info = SolveInfo()
        self.settings = {}
        self.configure(
            solver=solver, steps=steps, grad=grad, t0=t0, t1=t1, rtol=rtol, atol=atol, max_steps=max_steps, check_finite=check_finite
        )

    def configure(self, **changes) -> "ODEBlock":
        """Change solve settings (solver, steps, grad, t0, t1, rtol, atol, max_steps, check_finite, grid).

        An adaptive solver or an explicit grid ignores `steps` here (the block keeps it for when a
        fixed solver on a uniform grid returns); `grid=None` goes back to steps or tolerances.
        """
        unknown = set(changes) - {"solver", "steps", "grad", "t0", "t1", "rtol", "atol", "max_steps", "check_finite", "grid"}
        if unknown:
            raise ValueError(f"unknown ODEBlock settings {sorted(unknown)}")
        settings = {"grid": None, **self.settings, **changes}
        get_grad_method(settings["grad"])
        plan_args = {k: v for k, v in settings.items() if k != "grad"}
        if plan_args["grid"] is not None or get_tableau(settings["solver"]).adaptive:
            plan_args["steps"] = None
        self.plan = make_plan(**plan_args)
        self.settings = settings
        return self

    @property
    def grad(self) -> str:
        return self.settings["grad"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z1, self.last_info = solve(self.func, z, self.plan, self.grad)
        return z1

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items() if k != "check_finite" and not (k == "grid" and v is None))
