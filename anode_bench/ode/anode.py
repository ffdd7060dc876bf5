"""`anode` (Gholami, Keutzer & Biros 2019): checkpoint the block input, recompute in backward.

Forward: solve without a graph and keep only z(t0) (and the accepted times, for adaptive
solvers). Backward: re-run the block's forward on the same grid with a graph, replaying the
forward's random numbers, and backpropagate through it. Exact gradient of the discrete network
(equal to `direct` on fixed grids). Memory: O(|z|) per block, plus O(N·s·A) for the one block
being recomputed. NFE backward = s·N (s = stages of the propagated solution: rk4 4·N_t).
"""
from __future__ import annotations

import dataclasses

from .method import CheckpointMethod, vjp
from .stepping import integrate, restore_rng


class Anode(CheckpointMethod):
    name = "anode"
    record_rng = {0}  # the recompute replays from the block input: only the first step's RNG state is needed

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        # the forward's grid, without check_finite: the forward checked these very states already
        on_grid = dataclasses.replace(plan, grid=tuple(trajectory.ts), check_finite=False)
        restore_rng(trajectory.rng_states[0], z0.device)
        z = z0.detach().requires_grad_()
        z1_again, recompute = integrate(func, z, on_grid)
        info.host_syncs_backward += recompute.host_syncs  # 0: a grid solve reads nothing back
        grad_z0, *grad_params = vjp(z1_again, (z, *params), grad_z1)
        return grad_z0, grad_params
