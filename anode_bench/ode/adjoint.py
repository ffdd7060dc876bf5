"""`adjoint` (Chen et al. 2018): solve the augmented ODE backwards ("optimize-then-discretize").

With a(t) = dL/dz(t) and g(t) the running parameter gradient, integrate from t1 back to t0

    dz/dt = f(t, z),   da/dt = -aᵀ ∂f/∂z,   dg/dt = -aᵀ ∂f/∂θ,
    z(t1) = forward output,  a(t1) = dL/dz1,  g(t1) = 0,

with the same solver and the same N_t (reversed grid) or the same tolerances; then
dL/dz0 = a(t0) and dL/dθ = g(t0). z(t) is reconstructed by the reverse solve, not stored, so it
drifts from the forward trajectory (and BatchNorm in train mode sees other batches): the
gradient approximates the continuous one, not the network that ran. Memory O(s·A), constant in N.
NFE backward: s·N_t on fixed grids (one f evaluation plus its VJP per augmented evaluation).

Option `norm` (the adaptive reverse solve's error norm; no effect on a grid, where no error is
controlled): `full`, the RMS over the whole augmented state [z, a, g_θ]; `seminorm` (Kidger,
Chen & Lyons 2021), the RMS over [z, a] only. g_θ never feeds back into the dynamics, so its
local error does not propagate and need not limit the step: the seminorm accepts larger reverse
steps, fewer backward evaluations, for the same forward solve.
"""
from __future__ import annotations

import dataclasses

import torch

from .method import CheckpointMethod, clones, vjp
from .rk import TensorTuple
from .stepping import SolvePlan, integrate

NORMS = ("full", "seminorm")


def reversed_plan(plan: SolvePlan) -> SolvePlan:
    """The same solve from t1 back to t0: the grid reversed, or the same tolerances."""
    grid = None if plan.grid is None else tuple(reversed(plan.grid))
    return dataclasses.replace(plan, t0=plan.t1, t1=plan.t0, grid=grid)


def reverse_dtype(z1: torch.Tensor, grad_z1: torch.Tensor, params) -> torch.dtype:
    """The dtype of a reverse solve's state [.., a, g_θ]: at least float32, and the widest of z, a
    and θ. Under bfloat16 autocast a bf16 block input would otherwise make the adjoint a(t) and the
    gradient accumulator g_θ bf16 too; f still sees z in its forward dtype."""
    dtype = torch.float32
    for d in {z1.dtype, grad_z1.dtype, *(p.dtype for p in params)}:  # each distinct dtype once:
        if d != dtype:  # torch.promote_types goes through the dispatcher (OpCounter counts it per call)
            dtype = torch.promote_types(dtype, d)
    return dtype


def zeros_like_all(tensors, dtype: torch.dtype) -> list[torch.Tensor]:
    """Zeros shaped like each tensor, in `dtype`: two ops for all of them where the dtypes agree."""
    if all(t.dtype == dtype for t in tensors):
        with torch.no_grad():
            zeros = clones(list(tensors))
            if zeros:
                torch._foreach_zero_(zeros)
        return zeros
    return [torch.zeros_like(t, dtype=dtype) for t in tensors]


class Adjoint(CheckpointMethod):
    name = "adjoint"
    option_names = ("norm",)
    norm = "full"

    def check_options(self):
        if self.norm not in NORMS:
            raise ValueError(f"grad.norm {self.norm!r} unknown; choose from {', '.join(NORMS)}")

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        return solve_backwards(func, params, plan, z0, z1, grad_z1, info, norm=self.norm)


def solve_backwards(func, params, plan, z0, z1, grad_z1, info, *, norm: str, z_at=None):
    """Integrate a(t) and g_θ(t) from t1 back to t0; returns (a(t0), [g_θ(t0) per parameter]).

    z(t) is carried in the reverse state [z, a, g_θ] and integrated backwards from z1 (Chen et al.),
    or, given `z_at(t)`, read from that (the interpolated adjoint) with [a, g_θ] as the state; z_at
    must return a tensor outside any graph, which the evaluation marks to differentiate at.
    One f evaluation and its VJP per reverse evaluation. norm `seminorm` leaves g_θ out of the
    adaptive error norm (and the starting-step guess); `full` looks at the whole state.

    The state is a TensorTuple (rk.py) of z, a and one tensor per parameter, each in its own shape:
    the solver sums it with one foreach op per stage term, and an evaluation neither concatenates
    nor splits it.
    """
    carried = z_at is None
    dtype = reverse_dtype(z1, grad_z1, params)
    a_index = 1 if carried else 0  # a's place in the state

    def augmented(t, state):
        z = state[0].to(z1.dtype) if carried else z_at(t)  # a leaf: made under the reverse solve's no_grad
        with torch.enable_grad():
            f = func(t, z.requires_grad_())
            # -aᵀ ∂f/∂z and -aᵀ ∂f/∂θ as one VJP with -a: negation is exact, so one op instead of one per tensor
            neg_grads = vjp(f, (z, *params), (-state[a_index]).to(f.dtype))
        # detached although the solver sums it under no_grad: f's graph would otherwise live on with the
        # stage, holding what the VJP did not free (more activation memory: README, aten ops per step)
        carried_f = [f.detach()] if carried else []
        return TensorTuple(x.to(dtype) for x in (*carried_f, *neg_grads))

    carried_z1 = [z1.detach().to(dtype)] if carried else []
    start = TensorTuple([*carried_z1, grad_z1.to(dtype), *zeros_like_all(params, dtype)])
    norm_size = (a_index + 1) * z1.numel() if norm == "seminorm" else None
    with torch.no_grad():  # the sums make no graph, so an evaluation differentiates at z itself, no detach
        end, trajectory_back = integrate(augmented, start, reversed_plan(plan), norm_size=norm_size)
    info.n_rejected_backward += trajectory_back.n_rejected
    info.host_syncs_backward += trajectory_back.host_syncs
    grad_z0 = end[a_index].to(z0.dtype)
    return grad_z0, [g.to(p.dtype) for g, p in zip(end[a_index + 1 :], params)]
