"""Cross-check against torchdiffeq (Chen et al.'s reference implementation) where it is installed:
the same solver on the same grid is the same numerical method, so in float64 the states agree to
rounding, and so do the gradients: `direct` against backprop through torchdiffeq.odeint, and our
`adjoint` against torchdiffeq.odeint_adjoint (both discretize the augmented adjoint ODE with the
forward solver on the reversed grid). torchdiffeq's "rk4" is Kutta's 3/8 rule, not the classical
tableau ours is, so only euler and midpoint share a method; the adaptive solvers share the
controller but torchdiffeq interpolates at t1 instead of clipping the last step, so they agree to
the tolerance only.
"""
import copy

import pytest
import torch
from problems import TanhMLP, conv_problem

from anode_bench.ode import odeint

torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is not installed (pip install -e '.[compare]')")

T = torch.tensor([0.0, 1.0], dtype=torch.float64)


def loss(y1):
    return (y1 * torch.cos(y1)).sum()


def gradients(solve, func, y0):
    """(y1, [dL/dy0, dL/dθ...]) of loss(solve(copy of func, y0))."""
    func = copy.deepcopy(func)
    y0 = y0.clone().requires_grad_()
    y1 = solve(func, y0)
    loss(y1).backward()
    return y1.detach(), torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in func.parameters()])


def problems():
    torch.manual_seed(torch.seed())
    yield "tanh_mlp", TanhMLP().double(), torch.randn(5, 6, dtype=torch.float64)
    yield "conv_bn_relu", *conv_problem()


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("ours, theirs", [("direct", "odeint"), ("adjoint", "odeint_adjoint")])
def test_the_same_fixed_grid_method_gives_the_same_state_and_gradient(solver, steps, ours, theirs):
    reference = getattr(torchdiffeq, theirs)
    for name, func, y0 in problems():
        y1, grads = gradients(lambda f, y: odeint(f, y, solver=solver, steps=steps, grad=ours), func, y0)
        options = dict(step_size=1.0 / steps)
        y1_ref, grads_ref = gradients(lambda f, y: reference(f, y, T, method=solver, options=options)[-1], func, y0)  # noqa: B023
        torch.testing.assert_close(y1, y1_ref, rtol=0, atol=1e-12, msg=name)
        assert (grads - grads_ref).norm() <= 1e-10 * grads_ref.norm(), name


@pytest.mark.parametrize("solver, theirs", [("heun_euler", "adaptive_heun"), ("bosh3", "bosh3"), ("dopri5", "dopri5")])
def test_the_adaptive_solvers_meet_the_tolerance_at_least_as_well_as_torchdiffeq(solver, theirs):
    """Measured (max error against dopri5 at 1e-12, rtol = atol = 1e-6): heun_euler 1.0e-6 vs
    torchdiffeq's 2.3e-6, bosh3 2.3e-6 vs 3.8e-4 (its t1 comes from a low-order interpolant),
    dopri5 3.0e-7 vs 7.5e-6."""
    func, y0 = TanhMLP().double(), torch.randn(5, 6, dtype=torch.float64)
    tolerance = 1e-6
    with torch.no_grad():
        exact = odeint(func, y0, solver="dopri5", rtol=1e-12, atol=1e-12)
        ours = odeint(func, y0, solver=solver, rtol=tolerance, atol=tolerance)
        reference = torchdiffeq.odeint(func, y0, T, method=theirs, rtol=tolerance, atol=tolerance)[-1]
    ours_error, their_error = (ours - exact).abs().max(), (reference - exact).abs().max()
    assert ours_error < 10 * tolerance
    assert ours_error <= 2 * their_error
