"""Solvers: the tableaus are right, each method converges at its order, adaptive control works."""
import math

import pytest
import torch
from problems import random_linear_ode

from anode_bench.ode import SOLVERS, odeint

FIXED = [name for name, tab in SOLVERS.items() if not tab.adaptive]
ADAPTIVE = [name for name, tab in SOLVERS.items() if tab.adaptive]


def log_slope(xs, ys):
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_tableau_is_consistent(solver):
    tab = SOLVERS[solver]
    assert math.isclose(sum(tab.b), 1.0, abs_tol=1e-14)
    for c_i, row in zip(tab.c, tab.a):
        assert math.isclose(sum(row), c_i, abs_tol=1e-14)
    if tab.adaptive:
        assert math.isclose(sum(tab.b_low), 1.0, abs_tol=1e-14)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_stages_evaluate_f_at_tableau_nodes(solver):
    tab, times = SOLVERS[solver], []

    class Recorder(torch.nn.Module):
        def forward(self, t, y):
            times.append(t)
            return -y

    odeint(Recorder(), torch.ones(2, dtype=torch.float64), solver=solver, t1=0.5, grid=[0.0, 0.5])
    assert times == pytest.approx([0.5 * c for c in tab.c[: tab.solution_stages]], abs=1e-15)


@pytest.mark.parametrize("solver", FIXED)
def test_fixed_solver_converges_at_its_order(solver):
    ode = random_linear_ode()
    y0 = torch.randn(3, 4, dtype=torch.float64)
    exact = ode.exact(y0, 0.0, 1.0)
    steps = [8, 16, 32, 64]
    errors = [float((odeint(ode, y0, solver=solver, steps=n) - exact).norm()) for n in steps]
    assert abs(-log_slope(steps, errors) - SOLVERS[solver].order) < 0.3, errors


@pytest.mark.parametrize("solver", ADAPTIVE)
def test_adaptive_solver_error_falls_with_rtol_and_stays_within_it(solver):
    ode = random_linear_ode()
    y0 = torch.randn(3, 4, dtype=torch.float64)
    exact = ode.exact(y0, 0.0, 1.0)
    errors = []
    for rtol in (1e-3, 1e-5, 1e-7):
        y1 = odeint(ode, y0, solver=solver, rtol=rtol, atol=rtol / 100, max_steps=100000)
        error = float((y1 - exact).abs().max() / exact.abs().max())
        assert error < 100 * rtol, (rtol, error)
        errors.append(error)
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("solver", ADAPTIVE)
def test_adaptive_grid_propagates_the_higher_order_solution(solver):
    ode = random_linear_ode()
    y0 = torch.randn(3, 4, dtype=torch.float64)
    exact = ode.exact(y0, 0.0, 1.0)
    steps = [8, 16, 32, 64]
    grids = [[i / n for i in range(n + 1)] for n in steps]
    errors = [float((odeint(ode, y0, solver=solver, grid=g) - exact).norm()) for g in grids]
    assert abs(-log_slope(steps, errors) - SOLVERS[solver].order) < 0.3, errors


def test_accepted_times_start_at_t0_and_end_at_t1():
    ode = random_linear_ode()
    _, info = odeint(ode, torch.randn(2, 4, dtype=torch.float64), t0=0.25, t1=2.0, solver="bosh3", return_info=True)
    assert info.ts[0] == 0.25 and info.ts[-1] == 2.0
    assert all(b > a for a, b in zip(info.ts, info.ts[1:]))


def test_uniform_grid_has_steps_plus_one_times():
    ode = random_linear_ode()
    _, info = odeint(ode, torch.randn(2, 4, dtype=torch.float64), t1=3.0, solver="euler", steps=7, return_info=True)
    assert len(info.ts) == 8 and info.ts[0] == 0.0 and info.ts[-1] == 3.0


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri5"])
def test_runs_in_float32_and_keeps_dtype(solver):
    ode = random_linear_ode(dtype=torch.float32)
    y0 = torch.randn(2, 4)
    steps = None if SOLVERS[solver].adaptive else 4
    assert odeint(ode, y0, solver=solver, steps=steps).dtype == torch.float32
