"""Bad input ends in one clear error that names what is allowed."""
import pytest
import torch
from problems import ConvBNReLU, random_linear_ode

from anode_bench.ode import MaxStepsError, NonFiniteStateError, ODEBlock, odeint

Y0 = torch.ones(2, 4, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(solver="rk5", steps=2), "solver 'rk5' unknown; choose from euler, midpoint, heun, rk4, heun_euler, bosh3, dopri5"),
        (dict(grad="acaa", steps=2), "grad 'acaa' unknown; choose from direct, adjoint, anode, aca"),
        (dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(steps=2.5), "steps must be an integer >= 1, got 2.5"),
        (dict(), "fixed-step solver 'rk4' needs steps"),
        (dict(solver="dopri5", steps=4), "solver 'dopri5' is adaptive: it takes rtol/atol, not steps=4"),
        (dict(solver="dopri5", rtol=0.0), "rtol and atol must be > 0"),
        (dict(solver="bosh3", atol=-1e-6), "rtol and atol must be > 0"),
        (dict(steps=2, t0=1.0, t1=1.0), "need finite t0 < t1"),
        (dict(grid=[0.0, 0.6, 0.4, 1.0]), "grid must be a strictly increasing sequence"),
        (dict(grid=[0.0, 0.5]), "grid must run from t0=0.0 to t1=1.0"),
        (dict(grid=[0.0, 1.0], steps=3), "give either steps or grid, not both"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    with pytest.raises(ValueError) as error:
        odeint(random_linear_ode(), Y0, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_adaptive_solve_past_max_steps_stops_with_a_clear_error():
    with pytest.raises(MaxStepsError, match="needed more than max_steps=3 attempted steps"):
        odeint(random_linear_ode(), Y0, solver="dopri5", rtol=1e-12, atol=1e-14, max_steps=3)


class Blowup(torch.nn.Module):
    def forward(self, t, y):
        return y**2


@pytest.mark.parametrize("solver, steps", [("euler", 4), ("dopri5", None)])
def test_non_finite_state_is_an_error_not_a_nan(solver, steps):
    with pytest.raises(NonFiniteStateError, match="non-finite"):
        odeint(Blowup(), torch.full((2,), 1e200, dtype=torch.float64), solver=solver, steps=steps)


def test_integer_state_is_refused():
    with pytest.raises(ValueError, match="y0 must be a floating-point tensor"):
        odeint(random_linear_ode(), torch.ones(2, 4, dtype=torch.long), steps=1)


def test_ode_block_checks_settings_at_construction():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ODEBlock(ConvBNReLU(), solver="rk4", steps=-1)
    block = ODEBlock(ConvBNReLU(), solver="rk4", steps=2)
    with pytest.raises(ValueError, match="grad 'naive' unknown"):
        block.configure(grad="naive")
    assert block.grad == "direct"  # a refused change leaves the block as it was
