"""Butcher tableaus: the Runge-Kutta solvers are data, stepped by one function (`rk.rk_step`).

An explicit s-stage Runge-Kutta step from (t, z) with step dt:

    k_i    = f(t + c_i dt, z + dt * sum_{j<i} a_ij k_j),   i = 1..s
    z_next = z + dt * sum_i b_i k_i
    err    = dt * sum_i (b_i - b_low_i) k_i                (embedded pairs only)

`b` is the higher-order solution, which is the one propagated (local extrapolation).
`b_mid` (dopri5 only) gives a 4th-order value at the step's midpoint from the same stages,

    z(t + dt/2) ≈ z + dt * sum_i b_mid_i k_i,

the extra point the interpolated adjoint's quartic dense output needs (Shampine 1986).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .rk import rk_step


@dataclass(frozen=True)
class Tableau:
    """One Runge-Kutta method. Build it with `Tableau.make`, which checks the coefficients.

    A scheme (schemes.py): the state is z alone (`start` carries nothing), a step is `rk_step`.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row i holds a_i1..a_i(i-1): strictly lower triangular
    b: tuple[float, ...]
    order: int
    b_low: tuple[float, ...] | None = None  # embedded lower-order weights: adaptive if given
    low_order: int | None = None
    b_mid: tuple[float, ...] | None = None  # z(t + dt/2) ≈ z + dt·Σ b_mid_i k_i, 4th order: dense output

    @staticmethod
    def make(name, c, a, b, order, b_low=None, low_order=None, b_mid=None) -> "Tableau":
        stages = len(c)
        if any(w is not None and len(w) != stages for w in (a, b, b_low, b_mid)):
            raise ValueError(f"tableau {name}: c, a, b, b_low and b_mid must all have {stages} stages")
        for i, row in enumerate(a):
            if len(row) != i:
                raise ValueError(f"tableau {name}: row {i} of a must have {i} entries, has {len(row)}")
            if abs(sum(map(Fraction, row)) - Fraction(c[i])) > 1e-12:
                raise ValueError(f"tableau {name}: row {i} of a must sum to c[{i}]")
        if abs(sum(map(Fraction, b)) - 1) > 1e-12 or (b_low is not None and abs(sum(map(Fraction, b_low)) - 1) > 1e-12):
            raise ValueError(f"tableau {name}: b and b_low must sum to 1")
        if b_mid is not None and abs(sum(map(Fraction, b_mid)) - Fraction(1, 2)) > 1e-12:
            raise ValueError(f"tableau {name}: b_mid must sum to 1/2 (it steps to t + dt/2)")
        as_floats = lambda seq: tuple(float(x) for x in seq)  # noqa: E731
        return Tableau(
            name=name,
            c=as_floats(c),
            a=tuple(as_floats(row) for row in a),
            b=as_floats(b),
            order=order,
            b_low=None if b_low is None else as_floats(b_low),
            low_order=low_order,
            b_mid=None if b_mid is None else as_floats(b_mid),
        )

    runge_kutta = True  # steps z alone through stages k_i that a method can rebuild (rk_step)
    invertible = False  # no closed-form inverse step

    def configured(self, eta: float = 1.0) -> "Tableau":
        """The scheme with its options: a tableau has none (eta, alf's damping, does not apply)."""
        return self

    def start(self, func, t0, z):
        """What the scheme carries beside z from t0 on: nothing, for a Runge-Kutta method."""
        return None

    def step(self, func, t, dt, z, carry=None):
        """(z_next, None, stages k) of one step of the propagated (higher-order) solution."""
        z_next, _, k = rk_step(func, self, t, dt, z)
        return z_next, None, k

    @property
    def error_exponent(self) -> float:
        """-1 / (q + 1), q the lower order of the embedded pair: the controller's step factor is
        SAFETY * ratio ** error_exponent."""
        return -1.0 / (min(self.order, self.low_order) + 1)

    @property
    def adaptive(self) -> bool:
        return self.b_low is not None

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def solution_stages(self) -> int:
        """Stages needed for z_next alone: the error-only trailing stages are skipped on fixed grids."""
        return max(i for i, b_i in enumerate(self.b) if b_i != 0.0) + 1

    @property
    def b_err(self) -> tuple[float, ...]:
        return tuple(hi - lo for hi, lo in zip(self.b, self.b_low))

    @property
    def error_weight(self) -> float:
        """w, the first nonzero b_i - b_low_i: the error estimate is dt·w·Σ (b_i - b_low_i)/w k_i (rk.rk_step)."""
        return next(coeff for coeff in self.b_err if coeff != 0.0)

    @property
    def fsal(self) -> bool:
        """First Same As Last: the last stage is f(t + dt, z_next), so it is the next step's k_1."""
        return self.c[-1] == 1.0 and self.a[-1] == self.b[:-1] and self.b[-1] == 0.0


F = Fraction

EULER = Tableau.make("euler", c=[0], a=[[]], b=[1], order=1)
MIDPOINT = Tableau.make("midpoint", c=[0, F(1, 2)], a=[[], [F(1, 2)]], b=[0, 1], order=2)
HEUN = Tableau.make("heun", c=[0, 1], a=[[], [1]], b=[F(1, 2), F(1, 2)], order=2)
RK4 = Tableau.make(
    "rk4",
    c=[0, F(1, 2), F(1, 2), 1],
    a=[[], [F(1, 2)], [0, F(1, 2)], [0, 0, 1]],
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    order=4,
)
HEUN_EULER = Tableau.make(
    "heun_euler", c=[0, 1], a=[[], [1]], b=[F(1, 2), F(1, 2)], order=2, b_low=[1, 0], low_order=1
)
BOSH3 = Tableau.make(
    "bosh3",
    c=[0, F(1, 2), F(3, 4), 1],
    a=[[], [F(1, 2)], [0, F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]],
    b=[F(2, 9), F(1, 3), F(4, 9), 0],
    order=3,
    b_low=[F(7, 24), F(1, 4), F(1, 3), F(1, 8)],
    low_order=2,
)
DOPRI5 = Tableau.make(
    "dopri5",
    c=[0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    a=[
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
    ],
    b=[F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0],
    order=5,
    b_low=[F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)],
    low_order=4,
    # Shampine's midpoint weights (torchdiffeq's DPS_C_MID): z_mid has local error O(dt⁵). The 7th
    # stage is f(t + dt, z_next) (FSAL): on a grid, where it does not run, the interpolated adjoint
    # takes it from the next step's first stage.
    b_mid=[
        F(6025192743, 30085553152) / 2,
        0,
        F(51252292925, 65400821598) / 2,
        F(-2691868925, 45128329728) / 2,
        F(187940372067, 1594534317056) / 2,
        F(-1776094331, 19743644256) / 2,
        F(11237099, 235043384) / 2,
    ],
)

# The Runge-Kutta solvers. Every solver, `alf` included, is in schemes.SCHEMES.
SOLVERS: dict[str, Tableau] = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK4, HEUN_EULER, BOSH3, DOPRI5)}
