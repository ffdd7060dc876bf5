"""The ODE core: Runge-Kutta solvers and the gradient methods compared by anode-bench."""
from .block import ODEBlock
from .method import SolveInfo
from .odeint import GRAD_METHODS, make_plan, odeint, solve, uniform_grid
from .schemes import SCHEMES, get_scheme
from .stepping import MaxStepsError, NonFiniteStateError, SolvePlan
from .tableaus import SOLVERS, Tableau

__all__ = [
    "GRAD_METHODS",
    "MaxStepsError",
    "NonFiniteStateError",
    "ODEBlock",
    "SCHEMES",
    "SOLVERS",
    "SolveInfo",
    "SolvePlan",
    "Tableau",
    "get_scheme",
    "make_plan",
    "odeint",
    "solve",
    "uniform_grid",
]
