"""The explicit Runge-Kutta step of a Butcher tableau (tableaus.py), the one every RK solve and
every method that rebuilds RK stages (aca, revolve, symplectic, interpolated) runs.

From (t, z) with step dt:

    k_i    = f(t + c_i dt, z + dt * sum_{j<i} a_ij k_j),   i = 1..s
    z_next = z + dt * sum_i b_i k_i
    err    = dt * sum_i (b_i - b_low_i) k_i                (embedded pairs only)

Shapes: z and every k_i share one shape; t and dt are Python floats, or 0-d tensors when
`direct` differentiates an adaptive controller.
"""
from __future__ import annotations

import torch


def combine(z: torch.Tensor, dt, coeffs, k: list[torch.Tensor]) -> torch.Tensor:
    """z + dt * sum_j coeffs[j] k[j], skipping zero coefficients."""
    out = z
    for coeff, k_j in zip(coeffs, k):
        if coeff != 0.0:
            out = out + (dt * coeff) * k_j
    return out


def rk_step(func, tableau, t, dt, z, k1=None, with_error=False):
    """One explicit RK step. Returns (z_next, err or None, stages k). k1 = f(t, z) if already known."""
    stages = tableau.stages if with_error else tableau.solution_stages
    k = [func(t, z) if k1 is None else k1]
    for i in range(1, stages):
        k.append(func(t + tableau.c[i] * dt, combine(z, dt, tableau.a[i], k)))
    z_next = combine(z, dt, tableau.b, k)
    err = combine(torch.zeros_like(z), dt, tableau.b_err, k) if with_error else None
    return z_next, err, k
