"""`alf`: the asynchronous leapfrog integrator of MALI (Zhuang, Dvornek, Tatikonda & Duncan, ICLR 2021).

Not a Runge-Kutta method: the state is the pair (z, v), v an estimate of dz/dt, started at
v_0 = f(t_0, z_0). One step from (t, z, v) with step h and damping η:

    z_half = z + (h/2) v
    u      = f(t + h/2, z_half)
    v_next = v + 2η (u - v)
    z_next = z_half + (h/2) v_next

η = 1 is the undamped ALF (v_next = 2u - v), second order; η < 1 damps the v oscillation.
The step is invertible in closed form for η ≠ 1/2, with one evaluation of f:

    z_half = z_next - (h/2) v_next,   u = f(t + h/2, z_half),
    v = (v_next - 2η u) / (1 - 2η),   z = z_half - (h/2) v,

which is what lets `mali` rebuild the trajectory backwards instead of storing it.
NFE: N + 1 for N steps (one per step, plus v_0). Fixed grids only (steps = N_t or a grid).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .rk import TensorTuple, add_scaled, in_dtype


@dataclass(frozen=True)
class Leapfrog:
    """The ALF scheme (schemes.py), the counterpart of a Tableau; `eta` is the damping η. It carries
    the velocity v beside z: `start` gives v_0, `step` and `inverse` map (z, v) forward and back."""

    name: str = "alf"
    order: int = 2
    eta: float = 1.0
    adaptive: bool = False  # no error estimate: grids only
    runge_kutta = False  # the state is (z, v), not z through Butcher stages
    invertible = True  # `inverse` undoes `step` in closed form (what mali needs)

    def configured(self, eta: float = 1.0) -> "Leapfrog":
        """The scheme with damping eta, checked."""
        return dataclasses.replace(self, eta=eta).check()

    def start(self, func, t0, z):
        return alf_start(func, t0, z)

    def step(self, func, t, dt, z, carry):
        """(z_next, v_next, [u]) of one ALF step from (t, z, v = carry)."""
        z_next, v_next = alf_step(func, self, t, dt, z, carry)
        return z_next, v_next, None

    def inverse(self, func, t, dt, z_next, carry_next):
        """(z, v) with step(t, dt, z, v) = (z_next, v_next, _), up to rounding."""
        return alf_inverse(func, self, t, dt, z_next, carry_next)

    def check(self) -> "Leapfrog":
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (0 < eta <= 1) or eta == 0.5:
            raise ValueError(f"solver alf got eta={eta!r}; its damping must lie in (0, 1] and not be 0.5 (the step is not "
                             f"invertible there)")
        return self


ALF = Leapfrog()


def alf_start(func, t0, z):
    """v_0 = f(t0, z0), held in the state's dtype at least: under bfloat16 autocast f returns bf16,
    and a bf16 velocity would round every step (and mali's inverse) to bf16. Exact otherwise."""
    v = func(t0, z)
    return in_dtype(v, v.dtype if v.dtype == z.dtype else torch.promote_types(v.dtype, z.dtype))


def alf_step(func, scheme: Leapfrog, t, h, z, v):
    """(z_next, v_next) of one ALF step from (t, z, v); one evaluation of f. Three ops besides f:
    two fused multiply-adds (torch.add with alpha) and v_next as one torch.lerp (foreach ops for a
    TensorTuple state)."""
    z_half = add_scaled(z, v, h / 2)
    u = func(t + h / 2, z_half)
    v_next = lerp(v, u, 2 * scheme.eta)  # v + 2η (u - v)
    return add_scaled(z_half, v_next, h / 2), v_next


def lerp(v, u, weight: float):
    """v + weight (u - v) in one op (torch.lerp; foreach for a TensorTuple), in the wider dtype of the
    two (under bf16 autocast f returns bf16 while v is float32; lerp wants one dtype: one more op)."""
    if v.dtype != u.dtype:
        dtype = torch.promote_types(v.dtype, u.dtype)
        v, u = in_dtype(v, dtype), in_dtype(u, dtype)
    if isinstance(v, TensorTuple):
        return TensorTuple(torch._foreach_lerp(v, u, weight))
    return torch.lerp(v, u, weight)


def alf_inverse(func, scheme: Leapfrog, t, h, z_next, v_next):
    """(z, v) with alf_step(t, h, z, v) = (z_next, v_next), up to rounding; one evaluation of f."""
    z_half = torch.add(z_next, v_next, alpha=-h / 2)
    u = func(t + h / 2, z_half)
    v = lerp(u, v_next, 1 / (1 - 2 * scheme.eta))  # (v_next - 2η u) / (1 - 2η) = u + (v_next - u) / (1 - 2η)
    return torch.add(z_half, v, alpha=-h / 2), v
