"""The gradient methods, held to the claims of ANODE (Gholami et al. 2019) and ACA (Zhuang et al. 2020).

- anode and aca compute the exact gradient of the discrete network: equal to direct backprop.
- aca on an adaptive solver is exact for the grid of accepted steps.
- the continuous adjoint is only an approximation: it converges at the solver's order for a smooth
  f, and is far off for conv-BN-ReLU at small N_t.
- no method changes BatchNorm running statistics or the RNG differently from a plain forward.
"""

import copy

import pytest
import torch
from problems import TanhMLP, conv_problem, gradient, relative_error
from test_solvers import log_slope

from anode_bench.ode import GRAD_METHODS, SOLVERS, odeint
from anode_bench.ode.revolve import advances

FIXED = [name for name, tab in SOLVERS.items() if not tab.adaptive]
ADAPTIVE = [name for name, tab in SOLVERS.items() if tab.adaptive]
EXACT = ["anode", "aca"]
SOLVER_OF = {"mali": "alf"}  # mali runs solver alf only; the other methods run the RK solvers



@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("solver", FIXED)
@pytest.mark.parametrize("grad", EXACT)
def test_checkpoint_gradient_equals_direct_on_fixed_grids(grad, solver, steps):
    func, y0 = conv_problem()
    reference, _, ref_func = gradient(func, y0, "direct", solver=solver, steps=steps)
    result, _, result_func = gradient(func, y0, grad, solver=solver, steps=steps)
    assert relative_error(result, reference) <= 1e-10
    for ref_buffer, buffer in zip(ref_func.buffers(), result_func.buffers()):
        assert torch.equal(ref_buffer, buffer)


@pytest.mark.parametrize("solver", ADAPTIVE)
@pytest.mark.parametrize("grad", EXACT)
def test_checkpoint_gradient_on_adaptive_solver_equals_direct_on_accepted_grid(grad, solver):
    func, y0 = conv_problem()
    result, info, _ = gradient(func, y0, grad, solver=solver, rtol=1e-4, atol=1e-6)
    assert len(info.ts) > 2  # several accepted steps, so the grid matters
    reference, _, _ = gradient(func, y0, "direct", solver=solver, grid=info.ts)
    assert relative_error(result, reference) <= 1e-10


@pytest.mark.parametrize("grad", list(GRAD_METHODS))
def test_batchnorm_running_stats_after_a_step_do_not_depend_on_the_method(grad):
    func, y0 = conv_problem()
    solver = SOLVER_OF.get(grad, "rk4")
    _, _, ref_func = gradient(func, y0, "direct", solver=solver, steps=2)
    _, _, result_func = gradient(func, y0, grad, solver=solver, steps=2)
    for (name, ref_buffer), buffer in zip(ref_func.named_buffers(), result_func.buffers()):
        assert torch.equal(ref_buffer, buffer), name


@pytest.mark.parametrize("grad", EXACT)
def test_recompute_replays_the_forward_random_numbers(grad):
    func, y0 = conv_problem(dropout=0.3)
    reference, _, _ = gradient(func, y0, "direct", seed=7, solver="midpoint", steps=3)
    result, _, _ = gradient(func, y0, grad, seed=7, solver="midpoint", steps=3)
    assert relative_error(result, reference) <= 1e-10


@pytest.mark.parametrize("grad", list(GRAD_METHODS))
def test_backward_leaves_the_global_rng_where_the_forward_left_it(grad):
    func, y0 = conv_problem(dropout=0.3)
    solver = SOLVER_OF.get(grad, "rk4")
    gradient(func, y0, grad, seed=3, solver=solver, steps=2)
    after = torch.rand(4)
    gradient(func, y0, "direct", seed=3, solver=solver, steps=2)
    assert torch.equal(after, torch.rand(4))


@pytest.mark.parametrize("solver", FIXED)
def test_adjoint_converges_to_direct_at_least_at_the_solver_order_for_smooth_f(solver):
    """Observed slopes: euler 1, midpoint 2, rk4 4; heun 3 (the symmetric trapezoidal rule's
    reverse step matches its discrete adjoint one order better)."""
    func, y0 = TanhMLP().double(), torch.randn(5, 6, dtype=torch.float64)
    steps = [4, 8, 16, 32]
    errors = []
    for n in steps:
        reference, _, _ = gradient(func, y0, "direct", solver=solver, steps=n)
        result, _, _ = gradient(func, y0, "adjoint", solver=solver, steps=n)
        errors.append(relative_error(result, reference))
    assert -log_slope(steps, errors) > SOLVERS[solver].order - 0.3, errors


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_adjoint_gradient_is_far_from_exact_for_relu_batchnorm(solver):
    """Two-sided: our adjoint's gradient is torchdiffeq's odeint_adjoint's on the same problem and grid
    (the same discretization of the same adjoint ODE, so to rounding), and that gradient is far from
    the exact one. A wrong adjoint fails the first bound, an exact one the second. torchdiffeq's rk4
    is Kutta's 3/8 rule, so the shared solvers are euler and midpoint."""
    torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is not installed (pip install -e '.[compare]')")
    func, y0 = conv_problem()
    print(f"\nadjoint vs direct, f = conv-BN-ReLU-conv-BN (train mode), {solver}")
    print("N_t  relative error")
    for steps in [1, 2, 3, 4]:
        reference, _, _ = gradient(func, y0, "direct", solver=solver, steps=steps)
        result, _, _ = gradient(func, y0, "adjoint", solver=solver, steps=steps)
        theirs = torchdiffeq_adjoint_gradient(torchdiffeq, func, y0, solver, steps)
        error = relative_error(result, reference)
        print(f"{steps:>3}  {error:.3e}")
        assert relative_error(result, theirs) <= 1e-10
        assert error > 1e-3  # not a rounding difference: a different gradient


def torchdiffeq_adjoint_gradient(torchdiffeq, func, y0, solver, steps):
    """problems.gradient's [dL/dy0, dL/dθ...] through torchdiffeq.odeint_adjoint on a uniform grid."""
    func = copy.deepcopy(func)
    y0 = y0.clone().requires_grad_()
    t = torch.tensor([0.0, 1.0], dtype=y0.dtype)
    y1 = torchdiffeq.odeint_adjoint(func, y0, t, method=solver, options=dict(step_size=1.0 / steps))[-1]
    (y1 * torch.cos(y1)).sum().backward()
    return torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in func.parameters()])


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("solver", FIXED)
def test_nfe_on_fixed_grids_is_stages_times_steps(solver, steps):
    """forward s·N_t for every method; backward 0 for direct, s·N_t for adjoint, anode and aca,
    s·(T(N_t, K) + 1) for revolve (= s·N_t while N_t <= K + 1: T = N_t - 1), (2s - 1)·N_t for
    symplectic (s - 1 graph-free stage recomputes and s evaluations with a VJP per step);
    interpolated evaluates f(t1, z1) once more in the forward when a node lies inside the last step
    (with its default K = 8 for N_t <= 20). mali runs solver alf only; its NFE, and interpolated's
    for every K, are in test_grad_methods_extra.py."""
    func, y0 = conv_problem()
    stages = SOLVERS[solver].solution_stages
    backward = {
        "direct": 0,
        "revolve": stages * (advances(steps, GRAD_METHODS["revolve"].checkpoints) + 1),
        "symplectic": (2 * stages - 1) * steps,
    }
    for grad in [g for g in GRAD_METHODS if g not in SOLVER_OF]:
        _, info, _ = gradient(func, y0, grad, solver=solver, steps=steps)
        assert info.nfe_forward == stages * steps + (grad == "interpolated"), grad
        assert info.nfe_backward == backward.get(grad, stages * steps), grad


@pytest.mark.parametrize("solver", ADAPTIVE)
def test_nfe_on_adaptive_solvers_follows_the_controller(solver):
    """forward: 1 (initial-step probe) + one k1 per step (FSAL: reused) + (s-1) per attempt;
    aca/anode backward: s' per accepted step (s' = stages of the propagated solution)."""
    tab = SOLVERS[solver]
    func, y0 = conv_problem()
    for grad in EXACT:
        _, info, _ = gradient(func, y0, grad, solver=solver, rtol=1e-4, atol=1e-6)
        accepted = len(info.ts) - 1
        attempts = accepted + info.n_rejected
        k1_evaluations = 1 if tab.fsal else accepted
        assert info.nfe_forward == 1 + k1_evaluations + (tab.stages - 1) * attempts
        assert info.nfe_backward == tab.solution_stages * accepted


def test_dopri5_on_a_grid_takes_six_evaluations_per_step():
    func, y0 = conv_problem()
    _, info, _ = gradient(func, y0, "aca", solver="dopri5", grid=[0.0, 0.3, 0.7, 1.0])
    assert info.nfe_forward == 18 and info.nfe_backward == 18


@pytest.mark.parametrize("grad", list(GRAD_METHODS))
@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_the_callers_input_is_left_as_it_was(grad, solver):
    """A block input that needs no gradient (a fixed batch) stays so through two training steps: no method may
    mark it, or its .grad would fill up and an in-place op on it fail. The methods differentiate at their own
    leaves, some made from states they recorded (aca, interpolated's nodes: z0 among them at t0)."""
    solver = "alf" if grad == "mali" else solver
    args = dict(solver=solver, rtol=1e-4, atol=1e-6) if solver in ADAPTIVE else dict(solver=solver, steps=3)
    func, y0 = conv_problem()
    for _ in range(2):
        odeint(func, y0, grad=grad, **args).square().sum().backward()
        assert not y0.requires_grad and y0.grad is None and y0.grad_fn is None
    assert all(p.grad is not None for p in func.parameters())
    y0.mul_(2)  # in place on the caller's tensor, as a data pipeline may


@pytest.mark.parametrize("grad", list(GRAD_METHODS))
@pytest.mark.parametrize("solver", ["heun", "rk4", "dopri5"])
def test_every_methods_forward_returns_directs_state(grad, solver):
    """With grad enabled each method runs its own forward (no graph, checkpoints, RNG states, nodes):
    z(t1) must be direct's, to the bit on a grid; under error control direct keeps dt in the graph
    (a tensor formula for the step factor), so there the accepted times and states agree to rounding.
    Without grad every method takes the plain solve, so that case is checked too but proves little alone."""
    solver = "alf" if grad == "mali" else solver
    adaptive = solver in ADAPTIVE
    args = dict(solver=solver, rtol=1e-4, atol=1e-6) if adaptive else dict(solver=solver, steps=3)
    func, y0 = conv_problem()
    reference, ref_info = odeint(copy.deepcopy(func), y0.clone().requires_grad_(), grad="direct", return_info=True, **args)
    result, info = odeint(copy.deepcopy(func), y0.clone().requires_grad_(), grad=grad, return_info=True, **args)
    assert result.requires_grad
    if adaptive:
        # the step factor's power rounds differently in torch (direct's graph) and on the host (a few ulps),
        # and accepted times add up those differences: seen up to 4.8e-12 over 40 seeds; a different step is >1e-4
        assert len(info.ts) > 2 and info.ts == pytest.approx(ref_info.ts, rel=1e-10)
        torch.testing.assert_close(result.detach(), reference.detach(), rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(result.detach(), reference.detach())
    with torch.no_grad():
        plain = odeint(copy.deepcopy(func), y0, grad=grad, **args)
    torch.testing.assert_close(plain, reference.detach(), rtol=1e-12, atol=1e-12)


def test_direct_on_adaptive_solver_differentiates_the_step_size_controller():
    """Naive backprop through an adaptive solve includes d(step sizes)/dθ: for a smooth f that
    term is tiny, so direct and aca agree to about rtol, but not to rounding."""
    func, y0 = TanhMLP().double(), torch.randn(5, 6, dtype=torch.float64)
    naive, _, _ = gradient(func, y0, "direct", solver="bosh3", rtol=1e-4, atol=1e-6)
    exact_on_grid, _, _ = gradient(func, y0, "aca", solver="bosh3", rtol=1e-4, atol=1e-6)
    assert 1e-14 < relative_error(naive, exact_on_grid) < 1e-3


@pytest.mark.parametrize("solver", ADAPTIVE)
def test_direct_with_constant_step_sizes_is_acas_gradient_by_autograd(solver):
    """grad.step_sizes=constant takes direct's steps with float step sizes: the gradient of the
    accepted grid (aca's), to rounding, on the same steps. The default's step-size term is far above
    rounding on this problem, so the bound tells the two options apart."""
    func, y0 = conv_problem()
    exact_on_grid, info, _ = gradient(func, y0, "aca", solver=solver, rtol=1e-4, atol=1e-6)
    constant, constant_info, _ = gradient(func, y0, "direct", solver=solver, rtol=1e-4, atol=1e-6,
                                          grad_options={"step_sizes": "constant"})
    naive, _, _ = gradient(func, y0, "direct", solver=solver, rtol=1e-4, atol=1e-6)
    assert constant_info.ts == info.ts and constant_info.n_rejected == info.n_rejected
    assert relative_error(constant, exact_on_grid) <= 1e-10
    assert relative_error(naive, exact_on_grid) > 1e-6
