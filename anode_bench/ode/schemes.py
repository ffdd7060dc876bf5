"""The one registry of solvers: every scheme anode-bench steps, behind one interface.

A scheme is a Butcher tableau (tableaus.py: euler .. dopri5) or the asynchronous leapfrog
(alf.py). The solve loops (stepping.py) and the gradient methods see only this interface:

    name, order            the solver's name and its order of convergence
    adaptive               has an embedded error estimate (error control from rtol/atol)
    runge_kutta            the state is z alone, a step is Butcher stages k_i (rk.rk_step) that a
                           method can rebuild one by one (aca, revolve, symplectic, interpolated)
    invertible             `inverse` undoes `step` in closed form (mali)
    configured(eta)        the scheme with its options checked (eta: alf's damping; the tableaus
                           have none and return themselves)
    start(func, t0, z)     what the scheme carries beside z from t0 (alf: v_0 = f(t0, z0); a
                           tableau: None)
    step(func, t, dt, z, carry) -> (z_next, carry_next, stages or None)

Adaptive schemes (tableaus with b_low) also give `error_exponent`, `fsal` and the error term of
rk_step(..., with_error=True) to the controller (controller.py).
"""
from __future__ import annotations

from typing import Union

from .alf import ALF, Leapfrog
from .tableaus import SOLVERS, Tableau

Scheme = Union[Tableau, Leapfrog]

SCHEMES: dict[str, Scheme] = {**SOLVERS, ALF.name: ALF}


def get_scheme(solver: str) -> Scheme:
    """The scheme named `solver` (alf with its default damping)."""
    if solver not in SCHEMES:
        raise ValueError(f"solver {solver!r} unknown; choose from {', '.join(SCHEMES)}")
    return SCHEMES[solver]
