"""`symplectic`, the symplectic adjoint (Matsubara, Miyatake & Yaguchi, NeurIPS 2021).

Forward: solve without a graph; keep z_n, t_n of every accepted step (as `aca`). Backward, for
n = N-1 .. 0: recompute the stage values of step n from z_n without a graph, then integrate the
adjoint over that step with the partitioned Runge-Kutta scheme that makes the pair (RK step,
adjoint step) symplectic; that adjoint step is exactly the transpose of the RK step, so the
gradient is exact for the discrete solve (== `direct` on fixed grids, and on the accepted grid
of an adaptive solver). Each stage's vector-Jacobian product needs one f evaluation with a graph,
one stage at a time, so the graph of a whole step (`aca`'s s·A) is never held.

The step: X_i = z_n + h Σ_{j<i} a_ij k_j, k_i = f(t_n + c_i h, X_i), z_{n+1} = z_n + h Σ_i b_i k_i.
Its adjoint, from λ_{n+1} = dL/dz_{n+1}, stages i = s .. 1 (J_i = ∂f/∂z, P_i = ∂f/∂θ at X_i):

    κ_i = h (b_i λ_{n+1} + Σ_{j>i} a_ji ℓ_j)      (κ_i = dL/dk_i)
    ℓ_i = J_iᵀ κ_i                                 (ℓ_i = dL/dX_i)
    λ_n = λ_{n+1} + Σ_i ℓ_i,   dL/dθ += Σ_i P_iᵀ κ_i.

For b_i ≠ 0 this is Matsubara et al.'s scheme written in Λ_i = κ_i / (h b_i): Λ_i = λ_n -
h Σ_j (b_j - b_j a_ji / b_i) J_jᵀ Λ_j, the partitioned-RK adjoint with weights b and
coefficients A_ij = b_j - b_j a_ji / b_i (Sanz-Serna 2016). That form divides by b_i, so stages
with b_i = 0 (midpoint's first, dopri5's second) need the special treatment of their paper; the
κ form above is the same scheme multiplied through by h b_i and needs none: every tableau here
(fixed and adaptive) is supported, b_i = 0 stages included.

Cost per step: s - 1 graph-free evaluations (the stages X_1..X_s need k_1..k_{s-1}) plus s
evaluations with a VJP. NFE backward = (2s - 1)·N (s = stages of the propagated solution:
euler 1, midpoint/heun 3, rk4 7, dopri5 on a grid 11 per step).
Memory: O(N·|z|) (the step checkpoints) + O(s·|z|) (k_i and ℓ_i of one step) + O(A) (one f graph),
Matsubara's O(N + s) against `aca`'s O(N·|z|) + O(s·A).
"""
from __future__ import annotations

import torch

from .method import CheckpointMethod, GradientSum, vjp
from .rk import combine
from .stepping import capture_rng, restore_rng


class Symplectic(CheckpointMethod):
    name = "symplectic"
    runge_kutta_only = True
    record_states = True
    record_rng = True

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        ts, tableau = trajectory.ts, plan.tableau
        stages = tableau.solution_stages
        adj = grad_z1
        grad_params = GradientSum(params)
        for n in reversed(range(len(ts) - 1)):
            t, h, z = ts[n], ts[n + 1] - ts[n], trajectory.states[n].detach()
            restore_rng(trajectory.rng_states[n], z0.device)
            k, stage_rng = [], []
            with torch.no_grad():
                for i in range(stages - 1):
                    stage_rng.append(capture_rng(z0.device))
                    stage = func(t + tableau.c[i] * h, combine(z, h, tableau.a[i], k))
                    # under no_grad only an f that returns a parameter itself (`return self.c`) gives a stage
                    # that requires grad; it would carry its graph into x below (checked here: no op otherwise)
                    k.append(stage.detach() if stage.requires_grad else stage)
            stage_rng.append(capture_rng(z0.device))
            ell = [None] * stages
            for i in reversed(range(stages)):
                kappa = h * tableau.b[i] * adj
                for j in range(i + 1, stages):
                    if tableau.a[j][i] != 0.0:
                        kappa = torch.add(kappa, ell[j], alpha=h * tableau.a[j][i])
                # of z (detached) and k (no graph): a leaf to differentiate at; z itself at the first stage, last here
                x = combine(z, h, tableau.a[i], k[:i]).requires_grad_()
                restore_rng(stage_rng[i], z0.device)
                ell[i], *stage_grads = vjp(func(t + tableau.c[i] * h, x), (x, *params), kappa)
                grad_params.add(stage_grads)
            total = ell[0]
            for ell_i in ell[1:]:
                total = total + ell_i
            adj = adj + total  # the sum of the ℓ_i first, as sum(ell) (without its 0 +)
        return adj, grad_params.total()
