"""The step-size controller of an adaptive solve, apart from the step (the split torchode makes):
the starting step, the error ratio, and the factor the next step size is scaled by.

A step of an embedded pair with error estimate err (rk.rk_step) from z to z_next is accepted when

    ratio = RMS( err / (atol + rtol * max(|z|, |z_next|)) ) <= 1,

and the next attempt's step is |dt| * clamp(SAFETY * ratio ** (-1 / (q + 1)), MIN_FACTOR, MAX_FACTOR)
(at most 1 after a rejection; q the pair's lower order). The controller decides on the host: one
read-back of the ratio per attempt. When `direct` differentiates the controller, the next step
size of both outcomes is also computed in the autograd graph (one power of the ratio, clamped for
each) and read back with the ratio, in the same single read-back: the loop's float step sizes are
the graph's values.

Host read-backs (each one synchronizes a CUDA device) all go through `_value` / `_values`, which
count them on the solve's Trajectory (SolveInfo.host_syncs).
"""
from __future__ import annotations

import math

import torch

from .rk import TensorTuple, add_scaled

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0


def rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x^2)), as ‖x‖₂ / sqrt(n): one reduction."""
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def initial_step(
    func, tableau, t0: float, z0, f0, rtol, atol, span: float, differentiable=False, select=None, counter=None,
):
    """Hairer, Norsett & Wanner (1993) II.4 starting step; one evaluation of f.

    Returns |dt| as a 0-d tensor in the graph if `differentiable` (no host read-back), else as a
    float (two read-backs, counted on `counter`: the probe step h0, then the result).
    `select(x)`: the part of a state the norms look at (the seminorm adjoint); default all of it.
    The controller runs the float case with fewer ops (`Controller.initial`): same formula."""
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
    return _clamp_factor(_power(ratio, exponent), accepted)


def _power(ratio: torch.Tensor, exponent: float) -> torch.Tensor:
    return SAFETY * ratio.clamp_min(1e-10) ** exponent


def _clamp_factor(power: torch.Tensor, accepted: bool) -> torch.Tensor:
    return power.clamp(MIN_FACTOR, MAX_FACTOR if accepted else 1.0)


class Controller:
    """The controller of one adaptive solve: rtol, atol, the pair's exponent, the part of the state
    the norms look at (`norm_size`: the first entries of the flattened state, the seminorm
    adjoint; None: all of it), and whether the step sizes stay in the autograd graph.

    Step sizes are floats the loop decides with; with `differentiable`, each comes with its 0-d
    tensor in the graph (None otherwise).

    The tensor work is the formula with its constants taken out: with u = |z| + atol/rtol,

        ratio = RMS(err / (atol + rtol max(|z|, |z_next|))) = ‖e / max(u, u_next)‖₂ · |dt w| / (rtol sqrt(n)),

    e = Σ_i (b_i - b_low_i)/w k_i the error estimate without its dt w (rk.rk_step), so the constant
    factor is one float multiply on the host after the read-back (one graph op on a 0-d tensor when
    the controller is differentiated). u_next of an accepted step is the next attempt's u: each
    attempt computes |z_next| + atol/rtol, max, divide and norm (five ops), the starting step shares
    u(z0) with the first attempt.
    """

    def __init__(self, tableau, rtol: float, atol: float, norm_size: int | None = None, differentiable=False):
        self.tableau, self.rtol, self.atol, self.differentiable = tableau, rtol, atol, differentiable
        self.exponent = tableau.error_exponent
        self.norm_size = norm_size
        self.offset = atol / rtol
        self.error_weight = abs(tableau.error_weight) if tableau.adaptive else None
        self.known = ()  # (state, its u) pairs of the last attempt: z and z_next

    def select(self, x):
        """The part of a state the norms look at: the first norm_size entries of the flattened
        state; of a TensorTuple, the leading tensors that hold them (no op)."""
        if self.norm_size is None:
            return x
        if not isinstance(x, TensorTuple):
            return x.reshape(-1)[: self.norm_size]
        count, size = 0, 0
        while size < self.norm_size:
            size, count = size + x[count].numel(), count + 1
        if size != self.norm_size:
            raise ValueError(f"norm_size {self.norm_size} does not end at a tensor of the state tuple")
        return TensorTuple(x[:count])

    def scale(self, z):
        """u = |z| + atol/rtol over the part the norms look at, for the z of the last attempt reused."""
        for state, u in self.known:
            if state is z:
                return u
        z = self.select(z)
        if isinstance(z, TensorTuple):
            u = torch._foreach_abs(z)
            torch._foreach_add_(u, self.offset)
            return TensorTuple(u)
        return z.abs().add_(self.offset)

    def norms(self, x, u, in_place=False) -> list[torch.Tensor]:
        """‖x / u‖₂ over the selected part of x: one 0-d tensor, or one per tensor of a TensorTuple
        (their root sum of squares is the norm, taken on the host after the read-back: `_hypot`).
        in_place: divide x itself (a temporary of the caller's: one state-sized tensor less at the peak)."""
        if not in_place:
            return self.norms_of(self.quotient(x, u))
        x = self.select(x)
        if isinstance(x, TensorTuple):
            torch._foreach_div_(x, u)
        else:
            x.div_(u)
        return self.norms_of(x)

    def quotient(self, x, u):
        """x / u over the selected part of x: a new tensor (a TensorTuple of them)."""
        x = self.select(x)
        return TensorTuple(torch._foreach_div(x, u)) if isinstance(x, TensorTuple) else x / u

    def norms_of(self, q) -> list[torch.Tensor]:
        """‖q‖₂ of a quotient: one 0-d tensor, or one per tensor of a TensorTuple."""
        return list(torch._foreach_norm(q)) if isinstance(q, TensorTuple) else [torch.linalg.vector_norm(q)]

    def initial(self, func, t0: float, z0, f0, span: float, counter) -> tuple[float, torch.Tensor | None]:
        """(|dt|, its graph tensor or None) of the first attempt: initial_step, one evaluation of f."""
        if self.differentiable:
            dt = initial_step(func, self.tableau, t0, z0, f0, self.rtol, self.atol, span, True, self.select,
                              counter=counter)
            return _value(dt, counter), dt
        # initial_step's formula with the norms' constants on the host: two read-backs, d0 and d1 together, then d2
        u0 = self.scale(z0)
        self.known = ((z0, u0),)
        unit = 1.0 / (self.rtol * math.sqrt(u0.numel()))  # ‖x / u‖ · unit = RMS(x / (atol + rtol |z0|))
        q0 = self.quotient(f0, u0)  # kept: d2's difference is then one op, f0/u0 - f1/u0, in place
        parts = self.norms(z0, u0) + self.norms_of(q0)
        values = _values(parts, counter)
        d0, d1 = unit * _hypot(values[: len(parts) // 2]), unit * _hypot(values[len(parts) // 2 :])
        sign = _sign(span)
        h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / max(d1, 1e-5), abs(span))
        f1 = self.select(func(t0 + sign * h0, add_scaled(z0, f0, sign * h0)))
        if isinstance(q0, TensorTuple):
            torch._foreach_addcdiv_(q0, f1, u0, value=-1.0)
        else:
            q0.addcdiv_(f1, u0, value=-1.0)
        d2 = unit * _read_norm(self.norms_of(q0), counter) / h0  # ‖(f1 - f0) / u0‖: the sign does not matter
        d12 = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if d12 <= 1e-15 else (0.01 / d12) ** (1.0 / (self.tableau.order + 1))
        return min(100 * h0, h1, abs(span)), None

    def decide(self, err, z, z_next, step_dt, counter) -> tuple[float, callable]:
        """(ratio, next_dt) with one host read-back; next_dt(accepted) is (|dt| of the next attempt,
        its graph tensor or None). err: rk_step's error estimate without its dt w; step_dt: this
        attempt's signed step, a float, or a 0-d tensor in the graph."""
        u, u_next = self.scale(z), self.scale(z_next)
        self.known = ((z, u), (z_next, u_next))
        largest = TensorTuple(torch._foreach_maximum(u, u_next)) if isinstance(u, TensorTuple) else torch.maximum(u, u_next)
        # err is the attempt's own temporary; not in the graph, where the in-place divide costs a backward op
        norms = self.norms(err, largest, in_place=not self.differentiable)
        constant = self.error_weight / (self.rtol * math.sqrt(u.numel()))
        if self.differentiable:
            (norm,) = norms  # a tensor state: direct differentiates the controller of its own solve only
            abs_dt = abs(step_dt)
            ratio = norm * (abs_dt * constant)
            power = _power(ratio, self.exponent)  # shared by both outcomes, each then clamped (_factor_tensor)
            graph = {ok: abs_dt * _clamp_factor(power, ok) for ok in (True, False)}
            ratio_value, on_accept, on_reject = _values([ratio, graph[True], graph[False]], counter)
            outcomes = {True: (on_accept, graph[True]), False: (on_reject, graph[False])}
        else:
            ratio_value = _read_norm(norms, counter) * (abs(step_dt) * constant)  # the one host read-back per attempted step
            outcomes = {ok: (abs(step_dt) * step_factor(ratio_value, self.exponent, ok), None) for ok in (True, False)}

        def next_dt(accepted: bool):
            self.known = ((z_next, u_next),) if accepted else ((z, u),)  # the state the next attempt starts from
            return outcomes[accepted]

        return ratio_value, next_dt


def _hypot(values: list[float]) -> float:
    return values[0] if len(values) == 1 else math.hypot(*values)


def _read_norm(parts: list[torch.Tensor], counter) -> float:
    """The norm whose parts `Controller.norms` gave, with one host read-back."""
    return _value(parts[0], counter) if len(parts) == 1 else _hypot(_values(parts, counter))


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
    stacked in their promoted dtype, outside the graph)."""
    if counter is not None:
        counter.host_syncs += 1
    dtype = xs[0].dtype
    for x in xs[1:]:
        if x.dtype != dtype:
            dtype = torch.promote_types(dtype, x.dtype)
    with torch.no_grad():
        return torch.stack([x.to(dtype) for x in xs]).tolist()
