"""`direct`: backpropagate through every operation of the solver ("discretize-then-optimize").

Exact gradient of the network that ran. Memory: the autograd graph of every stage of every
step, O(N·s·A) per block (A = activations of one f evaluation). On an adaptive solver the step
sizes stay in the graph too, so the gradient also differentiates the step-size controller and
the graphs of rejected attempts are kept, as naive backprop through torchdiffeq does.

Option `step_sizes`: `differentiated` (the default, naive backprop as above) or `constant`: the
steps are taken with float step sizes, outside the graph, so the gradient is that of the accepted
grid, aca's, computed by autograd; its graph holds the accepted steps only, O(N·s·A), since nothing
refers to a rejected attempt's. On a fixed grid the two options are the same.
"""
from __future__ import annotations

import torch

from .method import GradMethod, _record_forward
from .stepping import integrate

STEP_SIZES = ("differentiated", "constant")


class Direct(GradMethod):
    name = "direct"
    option_names = ("step_sizes",)
    step_sizes = "differentiated"

    def check_options(self):
        if self.step_sizes not in STEP_SIZES:
            raise ValueError(f"grad.step_sizes {self.step_sizes!r} unknown; choose from {', '.join(STEP_SIZES)}")

    def solve(self, func, z0, plan, info):
        differentiate = self.step_sizes == "differentiated" and torch.is_grad_enabled()
        z1, trajectory = integrate(func, z0, plan, differentiate_controller=differentiate)
        _record_forward(info, func, trajectory)
        return z1
