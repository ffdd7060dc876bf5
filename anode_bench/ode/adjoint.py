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

from .method import CheckpointMethod, vjp
from .stepping import integrate


NORMS = ("full", "seminorm")


class Adjoint(CheckpointMethod):
    name = "adjoint"
    option_names = ("norm",)
    norm = "full"

    def check_options(self):
        if self.norm not in NORMS:
            raise ValueError(f"grad.norm {self.norm!r} unknown; choose from {', '.join(NORMS)}")

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        shape, size = z1.shape, z1.numel()
        param_sizes = [p.numel() for p in params]
        # The augmented state [z, a, g_θ] is one tensor, held in at least float32 (and in the widest
        # dtype of z, a and θ): under bfloat16 autocast a bf16 block input would otherwise make the
        # adjoint a(t) and the gradient accumulator g_θ bf16 too. f still sees z in its forward dtype.
        dtype = torch.float32
        for d in (z1.dtype, grad_z1.dtype, *(p.dtype for p in params)):
            dtype = torch.promote_types(dtype, d)

        def augmented(t, state):
            z = state[:size].view(shape).detach().to(z1.dtype).requires_grad_()
            adj = state[size : 2 * size].view(shape)
            f = func(t, z)
            grad_z, *grad_params = vjp(f, (z, *params), adj.to(f.dtype))
            return torch.cat(
                [f.detach().reshape(-1), -grad_z.reshape(-1), *(-g.reshape(-1) for g in grad_params)]
            ).to(dtype)

        reverse = dataclasses.replace(
            plan, t0=plan.t1, t1=plan.t0, grid=None if plan.grid is None else tuple(reversed(plan.grid))
        )
        start = torch.cat(
            [z1.detach().reshape(-1).to(dtype), grad_z1.reshape(-1).to(dtype), z1.new_zeros(sum(param_sizes), dtype=dtype)]
        )
        norm_size = 2 * size if self.norm == "seminorm" else None
        end, trajectory_back = integrate(augmented, start, reverse, norm_size=norm_size)
        info.n_rejected_backward += trajectory_back.n_rejected
        info.host_syncs_backward += trajectory_back.host_syncs
        grad_z0 = end[size : 2 * size].view(shape).to(z0.dtype)
        flat_params = end[2 * size :].split(param_sizes)
        return grad_z0, [g.view_as(p).to(p.dtype) for g, p in zip(flat_params, params)]
