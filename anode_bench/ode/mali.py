"""`mali`, the Memory-efficient ALF Integrator (Zhuang, Dvornek, Tatikonda & Duncan, ICLR 2021).

Runs with an invertible scheme, solver `alf` (alf.py): the forward keeps nothing of the trajectory but the end
pair (z_N, v_N) (and the RNG state of each step, a few KiB, for stochastic layers). Backward,
for n = N-1 .. 1: rebuild (z_n, v_n) from (z_{n+1}, v_{n+1}) with the closed-form inverse of
the ALF step (one graph-free evaluation), rebuild step n from (z_n, v_n) with a graph and
backpropagate (a_z, a_v) through it (one evaluation); step 0 is rebuilt from the stored input
z_0 through v_0 = f(t_0, z_0) (two evaluations, no inverse). The reconstruction is exact in
exact arithmetic ("reverse accurate"), so the gradient is `direct`'s through the ALF solve up to
the rounding of the inverse steps (amplified by |1 - 2η|^-1 per step for η < 1).
NFE: forward N + 1, backward 2N. Memory: O(|z|) states, constant in N, plus O(A) for one step's
graph: the memory of `adjoint` with the gradient of the network that ran.
"""
from __future__ import annotations

import torch

from .method import CheckpointMethod, GradientSum, vjp
from .stepping import restore_rng


class Mali(CheckpointMethod):
    name = "mali"
    record_rng = True

    def check_plan(self, plan):
        if not plan.tableau.invertible:
            raise ValueError(
                f"grad 'mali' inverts the asynchronous leapfrog step: it needs solver alf, not {plan.tableau.name!r}"
            )

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        ts, scheme, device = trajectory.ts, plan.tableau, z0.device
        rng = trajectory.rng_states  # [before v_0, at the start of step 1, 2, ...]
        grad_params = GradientSum(params)
        adj_z, adj_v = grad_z1, None  # dL/dv_N = 0: the last step is differentiated through z_out alone
        z, v = z1, trajectory.carry  # only ever read under no_grad (the inverse steps): no detach
        for n in reversed(range(1, len(ts) - 1)):
            h = ts[n + 1] - ts[n]
            restore_rng(rng[n], device)
            with torch.no_grad():
                z, v = scheme.inverse(func, ts[n], h, z, v)
            restore_rng(rng[n], device)
            z_in, v_in = z.requires_grad_(), v.requires_grad_()
            z_out, v_out, _ = scheme.step(func, ts[n], h, z_in, v_in)
            outputs, cotangents = _outputs(z_out, v_out, adj_z, adj_v)
            adj_z, adj_v, *step_grads = vjp(outputs, (z_in, v_in, *params), cotangents)
            grad_params.add(step_grads)  # the next inverse reads z, v under no_grad: no detach needed
        restore_rng(rng[0], device)
        z_in = z0.detach().requires_grad_()
        v_in = scheme.start(func, ts[0], z_in)
        z_out, v_out, _ = scheme.step(func, ts[0], ts[1] - ts[0], z_in, v_in)
        outputs, cotangents = _outputs(z_out, v_out, adj_z, adj_v)
        grad_z0, *step_grads = vjp(outputs, (z_in, *params), cotangents)
        grad_params.add(step_grads)
        return grad_z0, grad_params.total()


def _outputs(z_out, v_out, adj_z, adj_v):
    """(outputs, their cotangents) of a step for vjp, v_out left out while its cotangent is zero."""
    if adj_v is None:
        return z_out, adj_z
    return (z_out, v_out), (adj_z, adj_v)
