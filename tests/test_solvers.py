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


def rooted_trees(order):
    """Every rooted tree with `order` nodes, as a sorted tuple of its subtrees (the leaf is ())."""
    if order == 1:
        return [()]
    trees = set()

    def forests(n, smallest):  # multisets of trees with n nodes in all, in non-decreasing order
        if n == 0:
            yield ()
            return
        for size in range(1, n + 1):
            for tree in rooted_trees(size):
                if (size, tree) >= smallest:
                    for rest in forests(n - size, (size, tree)):
                        yield (tree, *rest)

    for forest in forests(order - 1, (0, ())):
        trees.add(tuple(sorted(forest)))
    return sorted(trees)


def size(tree):
    return 1 + sum(size(child) for child in tree)


def density(tree):
    """gamma(tree) = |tree| * product of the children's densities."""
    return size(tree) * math.prod(density(child) for child in tree)


def elementary_weights(tab, tree):
    """Phi_i(tree) for every stage i: the product over children of sum_j a_ij Phi_j(child)."""
    result = [1.0] * tab.stages
    for child in tree:
        phi = elementary_weights(tab, child)
        result = [r * sum(a_ij * p for a_ij, p in zip(row, phi)) for r, row in zip(result, tab.a)]
    return result


def order_of(tab, weights, up_to=6):
    """The largest p with sum_i w_i Phi_i(t) = 1 / gamma(t) for every tree t of at most p nodes
    (Butcher's order conditions: 1, 1, 2, 4, 9, 20 trees of order 1..6)."""
    for p in range(1, up_to + 1):
        for tree in rooted_trees(p):
            if abs(sum(w * phi for w, phi in zip(weights, elementary_weights(tab, tree))) - 1 / density(tree)) > 1e-12:
                return p - 1
    return up_to


def test_the_tree_count_is_butchers():
    assert [len(rooted_trees(p)) for p in range(1, 7)] == [1, 1, 2, 4, 9, 20]


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_tableau_satisfies_the_order_conditions_of_its_stated_orders_and_no_more(solver):
    """Butcher's order conditions, which construction does not check: b meets them up to `order`
    and fails one of order + 1; b_low likewise at `low_order` (the controller's exponent is built on
    it). A mislabelled order or a mistyped coefficient fails here, not only in a convergence fit."""
    tab = SOLVERS[solver]
    assert order_of(tab, tab.b) == tab.order
    if tab.adaptive:
        assert order_of(tab, tab.b_low) == tab.low_order < tab.order


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
    """A float32 solve stays float32 and is the float64 solve to float32 rounding (on the same grid)."""
    ode = random_linear_ode(dtype=torch.float32)
    y0 = torch.randn(2, 4)
    steps = None if SOLVERS[solver].adaptive else 4
    y1, info = odeint(ode, y0, solver=solver, steps=steps, return_info=True)
    assert y1.dtype == torch.float32
    exact = odeint(ode.double(), y0.double(), solver=solver, grid=info.ts)
    torch.testing.assert_close(y1.double(), exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", ADAPTIVE)
def test_an_adaptive_solve_is_repeated_to_the_bit_on_its_accepted_grid(solver):
    """aca and anode rebuild the adaptive forward's steps on its accepted grid, and the probe's floor
    and reference run there: the step under error control (all stages, the error, FSAL reuse) must
    give the grid step's z_next to the bit, or a ReLU near its kink parts forward from recompute.
    In float32, on a time-dependent nonlinear f, where rounding differences would show."""
    torch.manual_seed(0)
    weight = torch.randn(16, 16) / 4

    def func(t, z):
        return torch.tanh(z @ weight + math.sin(3 * t))

    z0 = torch.randn(8, 16)
    z1, info = odeint(func, z0, solver=solver, rtol=1e-5, atol=1e-6, return_info=True)
    assert len(info.ts) > 4
    assert torch.equal(odeint(func, z0, solver=solver, grid=info.ts), z1)
