"""The explicit Runge-Kutta step of a Butcher tableau (tableaus.py), the one every RK solve and
every method that rebuilds RK stages (aca, revolve, symplectic, interpolated) runs.

From (t, z) with step dt:

    k_i    = f(t + c_i dt, z + dt * sum_{j<i} a_ij k_j),   i = 1..s
    z_next = z + dt * sum_i b_i k_i
    err    = dt * sum_i (b_i - b_low_i) k_i                (embedded pairs only)
           = dt * w * e,   e = sum_i (b_i - b_low_i) / w k_i,   w the first nonzero b_i - b_low_i

rk_step returns e, the error estimate without its constant dt w (one op fewer than err, which the
controller applies to the norm's one number: controller.Controller). When every stage of an FSAL
pair runs (error control), the last stage's input is z_next itself, summed once.

z_next is always this sum of b_i k_i, never an algebraically equal one (heun_euler's z_low + dt w e
would save an op): a grid solve and every recompute of a step (aca, anode, the probe's reference)
must repeat the adaptive forward's value to the bit, or a ReLU near its kink sends the two apart.

Shapes: z and every k_i share one shape; t and dt are Python floats, or 0-d tensors when
`direct` differentiates an adaptive controller. A state may also be a `TensorTuple` (the adjoint's
[z, a, g_θ]), k_i then one of the same shapes: each sum is then one foreach op per term for all of
its tensors.

Each weighted sum costs one op per nonzero term (`combine`), and its backward one multiply per
distinct weight ratio: on a GPU every op is at least one kernel launch, and a step's combinations
are most of what the solver adds to f's own work.
"""
from __future__ import annotations

import torch


class TensorTuple(tuple):
    """A state made of several tensors of one dtype and device (the adjoint's [z, a, g_θ]), summed
    with torch._foreach_* ops: one op per term for all of them, no concatenation or split."""

    @property
    def dtype(self) -> torch.dtype:
        return self[0].dtype

    @property
    def device(self) -> torch.device:
        return self[0].device

    def numel(self) -> int:
        return sum(x.numel() for x in self)


def add_scaled(x, y, alpha: float):
    """x + alpha * y, for tensors or TensorTuples: one op."""
    if isinstance(x, TensorTuple):
        return TensorTuple(torch._foreach_add(x, y, alpha=alpha))
    return torch.add(x, y, alpha=alpha)


def in_dtype(x, dtype):
    if dtype is None or x.dtype == dtype:
        return x
    return TensorTuple(t.to(dtype) for t in x) if isinstance(x, TensorTuple) else x.to(dtype)


def combine(z: torch.Tensor | None, dt, coeffs, k: list[torch.Tensor], dtype=None) -> torch.Tensor:
    """z + dt * sum_j coeffs[j] k[j] (z None: the sum alone), skipping zero coefficients, summed in
    `dtype` (default z's: the state's dtype when f returns bf16 under autocast).

    A float dt: with w the most frequent coefficient, z + (dt w) * (sum_j coeffs[j]/w k_j), the sum
    started from a term of weight w: one op per term, as a fused multiply-add per term would be, and
    in backward one multiply by dt w plus one per term whose coefficient is not w (heun's b = (1/2,
    1/2): one, not two; rk4's: three, not four). A tensor dt (in the autograd graph): the
    float-weighted sum first, then one multiply-add by dt.
    """
    terms = [(coeff, k_j) for coeff, k_j in zip(coeffs, k) if coeff != 0.0]
    if not terms:
        return z
    dtype = dtype or (z.dtype if z is not None else None)
    if isinstance(dt, torch.Tensor):
        total = None
        for coeff, k_j in terms:
            k_j = k_j if total is not None or dtype is None else k_j.to(dtype)
            total = torch.mul(k_j, coeff) if total is None else torch.add(total, k_j, alpha=coeff)
        return total * dt if z is None else torch.addcmul(z, total, dt)
    if len(terms) == 1 and z is not None:
        coeff, k_j = terms[0]
        return add_scaled(z, k_j, dt * coeff)
    weights = [coeff for coeff, _ in terms]
    weight = max(weights, key=weights.count)
    pivot = weights.index(weight)
    total = in_dtype(terms[pivot][1], dtype)
    for j, (coeff, k_j) in enumerate(terms):
        if j != pivot:
            total = add_scaled(total, k_j, coeff / weight)
    if z is not None:
        return add_scaled(z, total, dt * weight)
    return TensorTuple(torch._foreach_mul(total, dt * weight)) if isinstance(total, TensorTuple) else total * (dt * weight)


def error_direction(tableau, k: list[torch.Tensor], dtype) -> torch.Tensor:
    """e = sum_i (b_i - b_low_i) / w k_i (w = tableau.error_weight), the error estimate err = dt w e
    without its constant, summed in `dtype` (the state's: f may return bf16 under autocast): one
    fused multiply-add per term after the first, whose weight is 1. Always a new tensor, never a
    stage itself (b and b_low both sum to 1, so they differ in two terms at least): the controller
    divides it in place."""
    weight = tableau.error_weight
    terms = [(coeff / weight, k_i) for coeff, k_i in zip(tableau.b_err, k) if coeff != 0.0]
    out = in_dtype(terms[0][1], dtype)
    for coeff, k_i in terms[1:]:
        out = add_scaled(out, k_i, coeff)
    return out


def rk_step(func, tableau, t, dt, z, k1=None, with_error=False):
    """One explicit RK step. Returns (z_next, e or None, stages k): e the error estimate without its
    constant dt w (`error_direction`). k1 = f(t, z) if already known."""
    stages = tableau.stages if with_error else tableau.solution_stages
    k = [func(t, z) if k1 is None else k1]
    z_stage = z
    for i in range(1, stages):
        z_stage = combine(z, dt, tableau.a[i], k)
        k.append(func(t + tableau.c[i] * dt, z_stage))
    if not with_error:
        return combine(z, dt, tableau.b, k), None, k
    err = error_direction(tableau, k, z.dtype)
    # FSAL: the last stage's input is combine(z, dt, b, k) already, the same ops on the same stages
    z_next = z_stage if tableau.fsal else combine(z, dt, tableau.b, k)
    return z_next, err, k
