"""Exactness with an f that depends on time.

Every method that recomputes the forward (anode, aca, revolve, symplectic, mali) evaluates f at
stage times it computes itself: t_n + c_i h on a Runge-Kutta step, the leapfrog's times for mali.
With an f that ignores t, a wrong stage time (t_n + c_i, t_n + c_i h measured from 0, a stale
t_n) changes nothing, so these tests use f(t, z) = cos(ω t) g(z) + β t² z with g conv-BN-ReLU,
ω and β learned, on [0.3, 1.1] (t0 != 0 and t1 - t0 != 1, so h, t - t0 and t are all
different numbers). The discrete gradient is then a function of every stage time, and each
method must equal `direct` on the same grid to 1e-10 in float64, as with an autonomous f.
"""
import copy

import pytest
import torch
from problems import ConvBNReLU, gradient, relative_error

from anode_bench.ode import SOLVERS, odeint

FIXED = [name for name, tab in SOLVERS.items() if not tab.adaptive]
ADAPTIVE = [name for name, tab in SOLVERS.items() if tab.adaptive]
RK_EXACT = [("anode", {}), ("aca", {}), ("revolve", {"checkpoints": 1}), ("revolve", {"checkpoints": 2}),
            ("symplectic", {})]
RK_IDS = ["anode", "aca", "revolve-K1", "revolve-K2", "symplectic"]
CONSTANT_STEP_SIZES = ("direct", {"step_sizes": "constant"})  # the accepted grid's gradient by autograd
SPAN = dict(t0=0.3, t1=1.1)


class TimeDependent(torch.nn.Module):
    """f(t, z) = cos(ω t) g(z) + β t² z, g = conv-BN-ReLU-conv-BN; t a float or a 0-d tensor."""

    def __init__(self):
        super().__init__()
        self.g = ConvBNReLU(channels=4)
        self.omega = torch.nn.Parameter(torch.tensor(2.5))
        self.beta = torch.nn.Parameter(torch.tensor(-0.7))

    def forward(self, t, z):
        return torch.cos(self.omega * t) * self.g(t, z) + (self.beta * t**2) * z


def problem():
    return TimeDependent().double().train(), torch.randn(3, 4, 6, 6, dtype=torch.float64)


def test_the_problem_depends_on_time():
    """Shifting every stage time by the same amount changes the gradient (else nothing here can fail)."""
    func, y0 = problem()
    at_t0, _, _ = gradient(func, y0, "direct", solver="rk4", steps=3, **SPAN)
    shifted, _, _ = gradient(func, y0, "direct", solver="rk4", steps=3, t0=0.0, t1=0.8)
    assert relative_error(shifted, at_t0) > 1e-2


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("solver", FIXED)
@pytest.mark.parametrize("grad, options", RK_EXACT, ids=RK_IDS)
def test_gradient_equals_direct_on_fixed_grids(grad, options, solver, steps):
    func, y0 = problem()
    reference, _, _ = gradient(func, y0, "direct", solver=solver, steps=steps, **SPAN)
    result, _, _ = gradient(func, y0, grad, solver=solver, steps=steps, grad_options=options, **SPAN)
    assert relative_error(result, reference) <= 1e-10


@pytest.mark.parametrize("solver", ADAPTIVE)
@pytest.mark.parametrize("grad, options", [*RK_EXACT[:2], *RK_EXACT[3:], CONSTANT_STEP_SIZES],
                         ids=[*RK_IDS[:2], *RK_IDS[3:], "direct-constant-step-sizes"])  # revolve K=1: O(N^2)
def test_gradient_on_adaptive_solvers_equals_direct_on_the_accepted_grid(grad, options, solver):
    func, y0 = problem()
    result, info, _ = gradient(func, y0, grad, solver=solver, rtol=1e-4, atol=1e-6, grad_options=options, **SPAN)
    assert len(info.ts) > 3  # several steps of different sizes, so every stage time matters
    reference, _, _ = gradient(func, y0, "direct", solver=solver, grid=info.ts, **SPAN)
    assert relative_error(result, reference) <= 1e-10


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("eta", [1.0, 0.8])
def test_mali_equals_direct_through_alf(steps, eta):
    func, y0 = problem()
    reference, _, _ = gradient(func, y0, "direct", solver="alf", steps=steps, eta=eta, **SPAN)
    result, _, _ = gradient(func, y0, "mali", solver="alf", steps=steps, eta=eta, **SPAN)
    assert relative_error(result, reference) <= 1e-10


@pytest.mark.parametrize("solver", ["midpoint", "rk4", "dopri5"])
def test_every_method_evaluates_f_at_the_forward_solves_times(solver):
    """The times f sees in a checkpoint method's backward are the forward's stage times, no others."""
    func, y0 = problem()
    seen = {"forward": set(), "backward": set()}
    phase = ["forward"]

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = func

        def forward(self, t, z):
            seen[phase[0]].add(round(float(t), 12))
            return self.inner(t, z)

    for grad in ("anode", "aca", "revolve", "symplectic"):
        seen["forward"].clear(), seen["backward"].clear()
        phase[0] = "forward"
        y = y0.clone().requires_grad_()
        y1 = odeint(Recording(), y, solver=solver, grid=[0.3, 0.5, 0.8, 1.1], t0=0.3, t1=1.1, grad=grad)
        phase[0] = "backward"
        y1.sum().backward()
        assert seen["backward"] and seen["backward"] <= seen["forward"], (grad, seen["backward"] - seen["forward"])


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_adjoint_equals_torchdiffeqs_odeint_adjoint(solver, steps):
    """The adjoint solves its own reverse ODE, at times it computes from t1 back to t0: with this f
    it must still be torchdiffeq's odeint_adjoint on the same grid (the same discretization of the
    same adjoint ODE; euler and midpoint are the solvers the two libraries share)."""
    torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is not installed (pip install -e '.[compare]')")
    func, y0 = problem()
    result, _, _ = gradient(func, y0, "adjoint", solver=solver, steps=steps, **SPAN)
    theirs = copy.deepcopy(func)
    y = y0.clone().requires_grad_()
    t = torch.tensor([SPAN["t0"], SPAN["t1"]], dtype=torch.float64)
    y1 = torchdiffeq.odeint_adjoint(theirs, y, t, method=solver, options=dict(step_size=(t[1] - t[0]).item() / steps))[-1]
    (y1 * torch.cos(y1)).sum().backward()  # problems.gradient's loss
    reference = torch.cat([y.grad.reshape(-1)] + [p.grad.reshape(-1) for p in theirs.parameters()])
    assert relative_error(result, reference) <= 1e-10
