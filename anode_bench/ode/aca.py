"""`aca`, Adaptive Checkpoint Adjoint (Zhuang et al. 2020): keep every accepted state, backprop step by step.

Forward: solve without a graph; keep z_i and t_i of each accepted step (the step-size search is
discarded). Backward, for i = N-1 .. 0: rebuild step i with a graph from z_i, then
a_i = a_{i+1}ᵀ ∂z_{i+1}/∂z_i and g += a_{i+1}ᵀ ∂z_{i+1}/∂θ. Exact for the accepted grid (step
sizes are constants), equal to `direct` on that grid. Memory: O(N·|z|) + O(s·A).
NFE backward = s·N (s = stages of the propagated solution; dopri5: 6 per accepted step).
"""
from __future__ import annotations

from .method import CheckpointMethod, GradientSum, vjp
from .rk import rk_step
from .stepping import restore_rng


class ACA(CheckpointMethod):
    name = "aca"
    runge_kutta_only = True
    record_states = True
    record_rng = True

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        ts = trajectory.ts
        adj = grad_z1
        grad_params = GradientSum(params)
        for i in reversed(range(len(ts) - 1)):
            restore_rng(trajectory.rng_states[i], z0.device)
            # z_i, i >= 1, was made under no_grad: a leaf already. z_0 is the block's input, in the caller's graph
            z = (trajectory.states[i] if i else z0.detach()).requires_grad_()
            z_next, _, _ = rk_step(func, plan.tableau, ts[i], ts[i + 1] - ts[i], z)
            adj, *step_grads = vjp(z_next, (z, *params), adj)
            grad_params.add(step_grads)
        return adj, grad_params.total()
