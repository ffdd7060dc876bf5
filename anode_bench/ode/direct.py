"""`direct`: backpropagate through every operation of the solver ("discretize-then-optimize").

Exact gradient of the network that ran. Memory: the autograd graph of every stage of every
step, O(N·s·A) per block (A = activations of one f evaluation). On an adaptive solver the step
sizes stay in the graph too, so the gradient also differentiates the step-size controller and
the graphs of rejected attempts are kept, as naive backprop through torchdiffeq does.
"""
from __future__ import annotations

import torch

from .method import GradMethod, _record_forward
from .stepping import integrate


class Direct(GradMethod):
    name = "direct"

    def solve(self, func, z0, plan, info):
        z1, trajectory = integrate(func, z0, plan, differentiate_controller=torch.is_grad_enabled())
        _record_forward(info, func, trajectory)
        return z1
