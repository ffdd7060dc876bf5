"""The step-size controller of an adaptive solve, apart from the step (the split torchode makes):
the starting step, the error ratio, and the factor the next step size is scaled by.

A step of an embedded pair with error estimate err (rk.rk_step) from z to z_next is accepted when

    ratio = RMS( err / (atol + rtol * max(|z|, |z_next|)) ) <= 1,

and the next attempt's step is |dt| * clamp(SAFETY * ratio ** (-1 / (q + 1)), MIN_FACTOR, MAX_FACTOR)
(at most 1 after a rejection; q the pair's lower order). The controller decides on the host: one
read-back of the ratio per attempt. When `direct` differentiates the controller, the next step
size of both outcomes is also computed in the autograd graph and read back with the ratio, in the
same single read-back.

Host read-backs (each one synchronizes a CUDA device) all go through `_value` / `_values`, which
count them on the solve's Trajectory (SolveInfo.host_syncs).
"""
from __future__ import annotations

import math

import torch

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0


def rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x^2)), as ‖x‖₂ / sqrt(n): one reduction."""
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def error_ratio(err, z, z_next, rtol, atol) -> torch.Tensor:
    """RMS of err / (atol + rtol * max(|z|, |z_next|)); a step is accepted when this is <= 1.

    Computed as ‖err / (sqrt(n) (atol + rtol m))‖₂, m = max(|z|, |z_next|), the sqrt(n) folded into
    the scale's two in-place ops: seven ops, one reduction."""
    root_n = math.sqrt(err.numel())
    scale = torch.maximum(z.abs(), z_next.abs()).mul_(rtol * root_n).add_(atol * root_n)
    return torch.linalg.vector_norm(err / scale)


def initial_step(
    func, tableau, t0: float, z0, f0, rtol, atol, span: float, differentiable=False, select=None, counter=None,
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


class Controller:
    """The controller of one adaptive solve: rtol, atol, the pair's exponent, the part of the state
    the norms look at (`norm_size`: the first entries of the flattened state, the seminorm
    adjoint; None: all of it), and whether the step sizes stay in the autograd graph.

    Step sizes are floats the loop decides with; with `differentiable`, each comes with its 0-d
    tensor in the graph (None otherwise)."""

    def __init__(self, tableau, rtol: float, atol: float, norm_size: int | None = None, differentiable=False):
        self.tableau, self.rtol, self.atol, self.differentiable = tableau, rtol, atol, differentiable
        self.exponent = tableau.error_exponent
        self.select = None if norm_size is None else (lambda x: x.reshape(-1)[:norm_size])

    def initial(self, func, t0: float, z0, f0, span: float, counter) -> tuple[float, torch.Tensor | None]:
        """(|dt|, its graph tensor or None) of the first attempt: initial_step, one evaluation of f."""
        dt = initial_step(func, self.tableau, t0, z0, f0, self.rtol, self.atol, span, self.differentiable,
                          self.select, counter=counter)
        return (_value(dt, counter), dt) if self.differentiable else (dt, None)

    def ratio(self, err, z, z_next) -> torch.Tensor:
        if self.select is None:
            return error_ratio(err, z, z_next, self.rtol, self.atol)
        return error_ratio(self.select(err), self.select(z), self.select(z_next), self.rtol, self.atol)

    def decide(self, err, z, z_next, step_dt, counter) -> tuple[float, dict]:
        """(ratio, {accepted: (|dt| of the next attempt, its graph tensor or None)}), with one host
        read-back. step_dt: this attempt's signed step, a float, or a 0-d tensor in the graph."""
        ratio = self.ratio(err, z, z_next)
        if self.differentiable:
            graph = {ok: abs(step_dt) * _factor_tensor(ratio, self.exponent, ok) for ok in (True, False)}
            ratio_value, on_accept, on_reject = _values([ratio, graph[True], graph[False]], counter)
            return ratio_value, {True: (on_accept, graph[True]), False: (on_reject, graph[False])}
        ratio_value = _value(ratio, counter)  # the one host read-back per attempted step
        return ratio_value, {ok: (abs(step_dt) * step_factor(ratio_value, self.exponent, ok), None) for ok in (True, False)}


def _sign(x: float) -> float:
    return 1.0 if x >= 0 else -1.0


def _value(x, counter) -> float:
    """The float value of a Python number or 0-d tensor. For a tensor that is a host read-back (a
    device sync on CUDA): the solve loops read tensor values through here only, and count each on
    `counter` (the solve's Trajectory, or None)."""
    if not isinstance(x, torch.Tensor):
        return float(x)
    if counter is not None:
        counter.host_syncs += 1
    return x.item()


def _values(xs, counter) -> list[float]:
    """The float values of several 0-d tensors with one host read-back (exact: the tensors are
    stacked in their promoted dtype)."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    if counter is not None:
        counter.host_syncs += 1
    return torch.stack([x.detach().to(dtype) for x in xs]).tolist()
