"""The ODE core: Runge-Kutta solvers and the gradient methods compared by anode-bench."""
from .block import ODEBlock
from .method import SolveInfo
from .odeint import GRAD_METHODS, make_plan, odeint, solve, uniform_grid
from .stepping import MaxStepsError, NonFiniteStateError, SolvePlan
from .tableaus import SOLVERS, Tableau

__all__ = [
    "GRAD_METHODS",
    "MaxStepsError",
    "NonFiniteStateError",
    "ODEBlock",
    "SOLVERS",
    "SolveInfo",
    "SolvePlan",
    "Tableau",
    "make_plan",
    "odeint",
    "solve",
    "uniform_grid",
]
