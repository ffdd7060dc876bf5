"""`revolve`: binomial checkpointing (Griewank 1992; Griewank & Walther 2000, "revolve").

The backward visits the N steps in reverse order and rebuilds each once with a graph from its
start state z_i (as `aca`), but instead of storing all N states it works with a budget of K
snapshots (`checkpoints`, z(t0) counted among them) and recomputes the other states by
advancing (graph-free steps) from the nearest snapshot, on the schedule with the fewest
advances. Exact: every step is the forward's step from the same state, so the gradient equals
`direct` on fixed grids (and `direct` on the accepted grid for adaptive solvers).

The fewest advances for N steps and K snapshots (Griewank's theorem) is

    T(N, K) = r·N - C(K + r, r - 1),   r = the least integer with C(K + r, K) >= N

(r: the repetition number, how often the most-recomputed step is advanced; C = binomial).
An optimal schedule splits a segment of l steps with s snapshots at
m = min(C(s + r - 1, s), l - C(s + r - 2, s - 1)) (r of that segment): advance m steps, store a
snapshot, reverse the right part with s - 1 snapshots, then the left part with s (`split`).
K snapshots with r repetitions reverse up to C(K + r, K) steps at about r advances per step
(K = r = 5: N = 252), so K and r of order log N give O(log N) memory for O(N log N) work.
K >= N - 1 is every state the sweep passes: T = N - 1, the cost of `aca`.

Fixed grids: the forward sweep is the schedule's first advances, so the forward keeps the
schedule's snapshots (at most K - 1 states after z(t0)) plus z_{N-1}, the sweep's working state
at the last step; the backward then advances T(N, K) - (N - 1) steps:
NFE backward = s·(T(N, K) + 1) (s = stages of the propagated solution).
Adaptive solvers: N is unknown until the forward ends, so the forward keeps only z(t0) and the
accepted times; the backward runs the whole schedule, sweep included, on that grid:
NFE backward = s'·(T(N, K) + N).

Memory: O(K·|z|) + O(s·A) (one step's graph at a time), at most K + 1 states whatever N: the
forward keeps z(t0), K - 1 snapshots and z_{N-1}; the backward takes them over
(`releases_states`), drops z_{N-1} after its step and each snapshot once the schedule is past it,
so it never holds more than its K snapshots and the working state. (The price: the graph can be
backpropagated once only; a second backward, retain_graph, is refused.) The RNG state is kept at
snapshots only: steps advanced in order from a snapshot draw the forward's random numbers again,
so stochastic layers are replayed exactly on fixed grids.
"""
from __future__ import annotations

from functools import lru_cache
from math import comb

import torch

from .method import CheckpointMethod, GradientSum, vjp
from .rk import rk_step
from .stepping import capture_rng, restore_rng


def _beta(s: int, r: int) -> int:
    """C(s + r, s): the most steps s snapshots reverse with repetition number r (0 for r < 0)."""
    return comb(s + r, s) if r >= 0 else 0


@lru_cache(maxsize=None)
def repetitions(steps: int, snapshots: int) -> int:
    """r: the least integer with C(snapshots + r, snapshots) >= steps."""
    r = 0
    while _beta(snapshots, r) < steps:
        r += 1
    return r


def advances(steps: int, snapshots: int) -> int:
    """T(N, K): the fewest graph-free steps that let N steps be reversed with K snapshots."""
    if steps < 1 or snapshots < 1:
        raise ValueError(f"need steps >= 1 and snapshots >= 1, got {steps}, {snapshots}")
    r = repetitions(steps, snapshots)
    return r * steps - _beta(snapshots + 1, r - 1)


def split(steps: int, snapshots: int) -> int:
    """An optimal first snapshot position m (1 <= m < steps) for steps >= 2 and snapshots >= 2."""
    r = repetitions(steps, snapshots)
    m = min(_beta(snapshots, r - 1), steps - _beta(snapshots - 1, r - 1))
    return max(1, min(steps - 1, m))


def sweep_snapshots(steps: int, snapshots: int) -> list[int]:
    """Indices i >= 1 of the states the forward sweep keeps: the schedule's first snapshots and,
    unless it is one of them, z_{N-1} (the working state when the backward starts)."""
    kept, start, free = [], 0, snapshots - 1
    while steps - start > 1 and free > 0:
        start += split(steps - start, free + 1)
        kept.append(start)
        free -= 1
    if steps - start > 1:
        kept.append(steps - 1)
    return kept


class Revolve(CheckpointMethod):
    name = "revolve"
    runge_kutta_only = True
    option_names = ("checkpoints",)
    checkpoints = 4
    record_rng = True
    releases_states = True

    def check_options(self):
        k = self.checkpoints
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"grad.checkpoints must be an integer >= 1 (snapshots, z(t0) included), got {k!r}")

    def states_to_record(self, plan):
        if plan.grid is None:
            return False
        return set(sweep_snapshots(len(plan.grid) - 1, self.checkpoints))

    def rng_to_record(self, plan):
        """Only at snapshots: steps advanced in order from a snapshot replay its random numbers."""
        return {0} | (self.states_to_record(plan) or set())

    def backward(self, func, params, plan, trajectory, z0, z1, grad_z1, info):
        ts, tableau, device = trajectory.ts, plan.tableau, z0.device
        steps = len(ts) - 1
        kept = [0] + (sweep_snapshots(steps, self.checkpoints) if plan.grid is not None else [])
        snapshots = dict(zip(kept, zip([z0.detach(), *trajectory.states], trajectory.rng_states)))
        trajectory.states.clear()  # each snapshot goes once the schedule is done with it
        grad_params = GradientSum(params)

        def advance(a, j):
            """z_j by graph-free steps from the snapshot z_a (a <= j), the RNG left at step j's start."""
            z, rng = snapshots[j] if j in snapshots else snapshots[a]
            restore_rng(rng, device)
            with torch.no_grad():
                for n in range(a, j) if j not in snapshots else ():
                    z, _, _ = rk_step(func, tableau, ts[n], ts[n + 1] - ts[n], z)
            return z

        def reverse_step(z, n, adj):
            z = z.detach().requires_grad_()
            z_next, _, _ = rk_step(func, tableau, ts[n], ts[n + 1] - ts[n], z)
            adj, *step_grads = vjp(z_next, (z, *params), adj)
            grad_params.add(step_grads)
            return adj

        def reverse(a, b, free, adj):
            """Reverse steps b-1 .. a from the snapshot z_a, with `free` snapshot slots besides z_a's."""
            while b - a > 1 and free > 0:
                m = a + split(b - a, free + 1)
                z_m = advance(a, m)
                snapshots[m] = (z_m, capture_rng(device))
                adj = reverse(m, b, free - 1, adj)
                del snapshots[m]
                b = m  # then the left part, with the same slots
            for n in reversed(range(a, b)):
                adj = reverse_step(advance(a, n), n, adj)
                if n != a:
                    snapshots.pop(n, None)  # the forward's z_{N-1}, the sweep's working state, is used once
            return adj

        grad_z0 = reverse(0, steps, self.checkpoints - 1, grad_z1)
        return grad_z0, grad_params.total()
