"""Test problems: closed-form linear ODEs and the networks f the papers integrate."""
from __future__ import annotations

import copy

import torch
from torch import nn

from anode_bench.ode import odeint


class LinearODE(nn.Module):
    """dy/dt = A y with y(t) = expm(A t) y0: the closed form every solver's order is checked on."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, y):
        return y @ self.A.T

    def exact(self, y0, t0, t1):
        return y0 @ torch.linalg.matrix_exp(self.A.detach() * (t1 - t0)).T


def random_linear_ode(dim=4, dtype=torch.float64) -> LinearODE:
    """A random A with a spectrum of size about 1 (no stiffness, no blow-up on [0, 1])."""
    A = torch.randn(dim, dim, dtype=dtype) / dim**0.5
    return LinearODE(A)


class ConvBNReLU(nn.Module):
    """f = conv-BN-ReLU-conv-BN, the residual branch of an ODE-ResNet block (time ignored)."""

    def __init__(self, channels=4, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, t, z):
        return self.net(z)


class TanhMLP(nn.Module):
    """A smooth f (tanh, no BatchNorm), time as an input: the adjoint's favourable case."""

    def __init__(self, dim=6, hidden=16):
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden)
        self.l2 = nn.Linear(hidden, dim)

    def forward(self, t, z):
        t_column = torch.ones_like(z[:, :1]) * t
        return self.l2(torch.tanh(self.l1(torch.cat([z, t_column], dim=1))))


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm())


def gradient(func, y0, grad, seed=0, **solve_args):
    """Flattened [dL/dy0, dL/dθ...] for L = sum(y1 * cos(y1)) on a copy of func; plus info and the copy."""
    func = copy.deepcopy(func)
    y0 = y0.clone().requires_grad_()
    torch.manual_seed(seed)
    y1, info = odeint(func, y0, grad=grad, return_info=True, **solve_args)
    (y1 * torch.cos(y1)).sum().backward()
    flat = torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in func.parameters()])
    return flat, info, func


def conv_problem(dropout=0.0):
    return ConvBNReLU(channels=4, dropout=dropout).double().train(), torch.randn(3, 4, 6, 6, dtype=torch.float64)
