"""`interpolated` adjoint (Daulbaev et al. 2020): the adjoint equations with z(t) interpolated from
the forward pass instead of integrated backwards.

Forward: solve without a graph and keep z at K Chebyshev-Lobatto nodes of [t0, t1],

    τ_j = (t0 + t1)/2 - (t1 - t0)/2 · cos(π j / (K - 1)),   j = 0 .. K-1   (τ_0 = t0, τ_K-1 = t1),

each sampled from the accepted step that holds it by that step's dense output (`NodeSampler`).
Backward: integrate only

    da/dt = -aᵀ ∂f/∂z,   dg/dt = -aᵀ ∂f/∂θ,   a(t1) = dL/dz1,  g(t1) = 0,

from t1 to t0 with the same solver and grid (or tolerances), where z(t) is the barycentric
Lagrange interpolant through the K nodes (`lagrange_at`). The reverse solve no longer
reconstructs z, so it cannot drift from the forward trajectory (the adjoint's instability on
ReLU/BatchNorm networks); what remains is the interpolation error, small when z(t) is smooth,
and the continuous-vs-discrete gap of every adjoint: an approximation, not the discrete gradient.

The dense output is dopri5's own (`quartic`: through z, z_mid, z_next with both end slopes, z_mid
from the tableau's midpoint weights b_mid, local error O(h⁵)) and cubic Hermite (`hermite`, O(h⁴))
for every other tableau. Beyond the stages that ran both need f at the step's ends only (dopri5's
seventh stage, which a grid skips, is f at the end), so they cost the same evaluations. Where an
adaptive solver takes a few long steps the dense output, not K, can set the floor: dopri5 at rtol
1e-5 (2-3 steps on a tanh MLP, K = 12) was 4e-6..1.3e-4 from the continuous gradient with cubic
Hermite, 5..155 times the adjoint's error; with the quartic 6e-8..8e-6, 0.5..1.8 times the
adjoint's (500 seeds), the same for K = 16 or 24: the solve's tolerance, not the interpolation.

Memory O(K·|z|) + O(s·A), independent of N_t. NFE forward s·N_t, plus one evaluation f(t1, z1)
when a node lies inside the last step (the end slope; FSAL tableaus under error control have it
already); backward s·N_t on fixed grids, as the adjoint. Options: `nodes` = K >= 2 and
the adjoint's `norm` (full: [a, g_θ]; seminorm: a only, in the adaptive reverse error norm).
"""
from __future__ import annotations

import math

import torch

from .adjoint import Adjoint, reverse_dtype, solve_backwards
from .method import unobserved
from .rk import combine
from .stepping import integrate


def chebyshev_lobatto(t0: float, t1: float, nodes: int) -> list[float]:
    """K Chebyshev-Lobatto points of [t0, t1] in increasing order, t0 and t1 exactly."""
    middle, half = (t0 + t1) / 2, (t1 - t0) / 2
    inner = [middle - half * math.cos(math.pi * j / (nodes - 1)) for j in range(1, nodes - 1)]
    return [t0, *inner, t1]


def lagrange_at(t: float, times: list[float], values: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """The polynomial of degree K-1 through (times[j], values[j]) at t, in barycentric form with
    the Chebyshev-Lobatto weights w_j = (-1)^j (halved at both ends):

        p(t) = Σ_j w_j/(t - τ_j) · z_j / Σ_j w_j/(t - τ_j),   p(τ_j) = z_j exactly.

    values: K tensors of one shape (z's); the sum accumulates in `dtype` (default the values'), so
    bfloat16 nodes are rounded once, not K times. Stable for these nodes (Berrut & Trefethen 2004);
    the weights hold for the Lobatto points only.
    """
    dtype = dtype or values[0].dtype
    for time, value in zip(times, values):
        if t == time:
            return value.to(dtype)
    last = len(times) - 1
    weights = [(-1) ** j * (0.5 if j in (0, last) else 1.0) / (t - time) for j, time in enumerate(times)]
    total = sum(weights)
    out = values[0].to(dtype) * (weights[0] / total)
    for weight, value in zip(weights[1:], values[1:]):
        out.add_(value.to(dtype), alpha=weight / total)
    return out


def hermite(s: float, h: float, z, f, z_next, f_next) -> torch.Tensor:
    """Cubic Hermite interpolation at s = (τ - t)/h in [0, 1] between (z, f) at t and (z_next, f_next)
    at t + h: exact for cubics, error O(h⁴)."""
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return z * h00 + f * (h * h10) + z_next * h01 + f_next * (h * h11)


def quartic(s: float, h: float, z, f, z_mid, z_next, f_next) -> torch.Tensor:
    """The quartic p on [t, t + h] with p = z, p' = f at t, p = z_mid at t + h/2 and p = z_next,
    p' = f_next at t + h, at s = (τ - t)/h in [0, 1] (torchdiffeq's `_interp_fit`). It is the cubic
    Hermite H plus the quartic bubble that vanishes with its slope at both ends:

        p(s) = H(s) + 16 s²(1 - s)² · (z_mid - H(1/2)),

    exact for quartics. With z_mid of local error O(h⁵) (dopri5's b_mid) its error is O(h⁵), one
    order above `hermite`'s. Summed here as z·q_0 + h f·q_1 + z_mid·q_m + z_next·q_2 + h f_next·q_3.
    """
    s2, s3, s4 = s * s, s**3, s**4
    q0, q1 = -8 * s4 + 18 * s3 - 11 * s2 + 1, -2 * s4 + 5 * s3 - 4 * s2 + s
    qm = 16 * s2 * (1 - s) ** 2
    q2, q3 = -8 * s4 + 14 * s3 - 5 * s2, 2 * s4 - 3 * s3 + s2
    return z * q0 + f * (h * q1) + z_mid * qm + z_next * q2 + f_next * (h * q3)


class NodeSampler:
    """Collects z(τ_j) from the accepted steps of a forward solve (integrate's `on_step`).

    A node inside step [t, t_next] is the step's dense output: `quartic` where the tableau has
    midpoint weights b_mid (dopri5), else `hermite`, with f(t, z) the step's first stage and
    f(t_next, z_next) the next step's first stage (so a step waits for its successor), for the last
    step the FSAL stage or one more evaluation in `finish` (which leaves BatchNorm statistics and
    the RNG untouched). z_mid = z + h·Σ b_mid_i k_i is summed when the step is accepted, over the
    stages that ran; a FSAL tableau's last stage, f(t_next, z_next), which does not run on a grid,
    is f_next itself and is added with it. A node on a step's end is that state itself, not a copy.
    Between steps the sampler keeps the pending step's z, z_next, f, z_mid and f_next, not its stages.
    """

    def __init__(self, times: list[float], tableau):
        self.times = times
        self.tableau = tableau
        self.values: list[torch.Tensor | None] = [None] * len(times)
        self.pending = None  # the step waiting for its end slope: see `pend`

    def __call__(self, t, t_next, z, z_next, k):
        if self.pending is not None:
            self.sample(*self.pending[:-1], f_next=k[0])  # k[0] = f(t, z) of this step: the pending one's end slope
            self.pending = None
        if not any(t < time < t_next for time in self.times):  # at most the ends: no slopes needed, keep nothing
            self.sample(t, t_next, z, z_next, None, None)
            return
        self.pending = self.pend(t, t_next, z, z_next, k)

    def pend(self, t, t_next, z, z_next, k):
        """The step to keep: (t, t_next, z, z_next, f, midpoint, f_next or None). midpoint: None for
        Hermite (no b_mid, or a stage it weights did not run and is not f_next), else (z + h·Σ b_mid_i k_i
        over the stages that ran, h·b_mid_s if the last stage, f_next, did not run, else 0)."""
        tableau = self.tableau
        all_ran = len(k) == tableau.stages
        f_next = k[-1] if tableau.fsal and all_ran else None  # all stages ran: k[-1] = f(t_next, z_next)
        weights, midpoint = tableau.b_mid, None
        if weights is not None:
            missing = [i for i in range(len(k), tableau.stages) if weights[i] != 0.0]
            if not missing or (missing == [tableau.stages - 1] and tableau.fsal):
                midpoint = (combine(z, t_next - t, weights, k), (t_next - t) * weights[-1] if missing else 0.0)
        return t, t_next, z, z_next, k[0], midpoint, f_next

    def finish(self, func) -> list[torch.Tensor]:
        if self.pending is None:
            return self.values
        t, t_next, z, z_next, f, midpoint, f_next = self.pending
        self.pending = None
        if f_next is None:
            with unobserved(func, z_next.device):  # not a step of the network: BatchNorm and dropout must not see it
                f_next = func(t_next, z_next)
        self.sample(t, t_next, z, z_next, f, midpoint, f_next)
        return self.values

    def sample(self, t, t_next, z, z_next, f, midpoint, f_next=None) -> None:
        z_mid = None
        for j, time in enumerate(self.times):
            if self.values[j] is not None or not t <= time <= t_next:
                continue
            if time == t:
                self.values[j] = z
            elif time == t_next:
                self.values[j] = z_next
            elif midpoint is None:
                self.values[j] = hermite((time - t) / (t_next - t), t_next - t, z, f, z_next, f_next)
            else:
                if z_mid is None:
                    partial, weight = midpoint
                    z_mid = partial + weight * f_next if weight != 0.0 else partial
                self.values[j] = quartic((time - t) / (t_next - t), t_next - t, z, f, z_mid, z_next, f_next)


class Interpolated(Adjoint):
    name = "interpolated"
    option_names = ("nodes", "norm")
    runge_kutta_only = True  # the dense output reads Runge-Kutta stages
    nodes = 8

    def check_options(self):
        super().check_options()
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 2:
            raise ValueError(f"grad.nodes must be an integer >= 2 (Chebyshev nodes, t0 and t1 included), got {self.nodes}")

    def record(self, func, z0, plan):
        sampler = NodeSampler(chebyshev_lobatto(plan.t0, plan.t1, self.nodes), plan.tableau)
        z1, trajectory = integrate(func, z0, plan, on_step=sampler)
        trajectory.states = sampler.finish(func)
        return z1, trajectory

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        times = chebyshev_lobatto(plan.t0, plan.t1, self.nodes)
        # z_at's values must be outside any graph and never the caller's tensors, which the end nodes are (z0, the
        # block input, and z1, the output); the forward made the inner ones under no_grad
        first, *inner, last = trajectory.states
        nodes = [first.detach(), *inner, last.detach()]
        dtype = reverse_dtype(z1, grad_z1, params)

        def z_at(t):
            return lagrange_at(float(t), times, nodes, dtype).to(z1.dtype)

        return solve_backwards(func, params, plan, z0, z1, grad_z1, info, norm=self.norm, z_at=z_at)
