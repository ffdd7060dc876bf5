"""The adaptive step-size controller, checked step by step against a reference written here.

The reference is the textbook controller (Hairer, Norsett & Wanner 1993, II.4), the one
torchdiffeq also implements, re-derived in plain Python floats on y' = A y:

    scale  = atol + rtol * max(|y_n|, |y_n+1|)           (elementwise)
    ratio  = rms(err / scale),   accepted iff ratio <= 1
    dt_new = dt * clamp(0.9 * ratio ** (-1 / (q + 1)), 0.2, 10 if accepted else 1)

with q the LOWER order of the embedded pair (the error estimate is O(h^(q+1))), and the
starting step of II.4 with the propagated order p. The accepted times and the number of
rejections of `odeint` must equal the reference's to rounding; a wrong tolerance scale or a
wrong exponent moves every step. The cases put atol and rtol each in charge, so that swapping
one for the other cannot pass. torchdiffeq is not the reference here because it keeps dt
(factor 1) after an accepted step whose ratio asks for a smaller one and steps past t1 to
interpolate, so its step sequence legitimately differs after the first few steps.
"""
import math

import pytest
import torch

from anode_bench.ode import SOLVERS, odeint

# (propagated order p, embedded lower order q): the literature's values, not read from the tableaus
ORDERS = {"heun_euler": (2, 1), "bosh3": (3, 2), "dopri5": (5, 4)}
A = [[-0.6, 1.3, 0.0], [-1.1, -0.2, 0.4], [0.3, 0.0, -1.7]]
Y0 = [[1.0, -0.5, 0.8], [0.2, 0.9, -1.3]]
CASES = {  # name: (y0 scale, rtol, atol)
    "rtol_in_charge": (1.0, 1e-4, 1e-12),  # atol + rtol |y| ~ rtol |y|
    "atol_in_charge": (1e-3, 1e-10, 1e-8),  # |y| ~ 1e-3: rtol |y| ~ 1e-13, atol sets the scale
    "both": (1.0, 1e-6, 1e-6),
}


def f_ref(y):
    return [[sum(A[i][j] * row[j] for j in range(3)) for i in range(3)] for row in y]


def axpy(y, h, coeffs, ks):
    """y + h * sum_j coeffs[j] k_j, on lists of lists."""
    out = [row[:] for row in y]
    for c, k in zip(coeffs, ks):
        for r in range(len(out)):
            for i in range(3):
                out[r][i] += h * c * k[r][i]
    return out


def rms(xs):
    flat = [x for row in xs for x in row]
    return math.sqrt(sum(x * x for x in flat) / len(flat))


def reference_solve(solver, y0, rtol, atol, t1=1.0):
    """(accepted times, rejections) of the textbook controller; float64 throughout."""
    tab, (p, q) = SOLVERS[solver], ORDERS[solver]
    f0 = f_ref(y0)
    scale0 = [[atol + rtol * abs(v) for v in row] for row in y0]
    d0 = rms([[v / s for v, s in zip(r, sr)] for r, sr in zip(y0, scale0)])
    d1 = rms([[v / s for v, s in zip(r, sr)] for r, sr in zip(f0, scale0)])
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, t1)
    f1 = f_ref(axpy(y0, h0, [1.0], [f0]))
    d2 = rms([[(a - b) / s for a, b, s in zip(ra, rb, sr)] for ra, rb, sr in zip(f1, f0, scale0)]) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / (p + 1))
    dt = min(100 * h0, h1, t1)
    t, y, ts, rejected = 0.0, y0, [0.0], 0
    while t < t1:
        t_next = t1 if t + dt >= t1 else t + dt
        h = t_next - t
        ks = []
        for i in range(tab.stages):
            ks.append(f_ref(axpy(y, h, tab.a[i], ks)))
        y_next = axpy(y, h, tab.b, ks)
        err = axpy([[0.0] * 3 for _ in y], h, [b - lo for b, lo in zip(tab.b, tab.b_low)], ks)
        scale = [[atol + rtol * max(abs(a), abs(b)) for a, b in zip(ra, rb)] for ra, rb in zip(y, y_next)]
        ratio = rms([[e / s for e, s in zip(re, rs)] for re, rs in zip(err, scale)])
        accepted = ratio <= 1.0
        dt = h * min(max(0.9 * max(ratio, 1e-10) ** (-1.0 / (q + 1)), 0.2), 10.0 if accepted else 1.0)
        if accepted:
            t, y = t_next, y_next
            ts.append(t)
        else:
            rejected += 1
        assert len(ts) + rejected < 20000, "reference runaway"
    return ts, rejected


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor(A, dtype=torch.float64))

    def forward(self, t, y):
        return y @ self.A.T


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("solver", list(ORDERS))
@pytest.mark.parametrize("grad", ["direct", "aca"])  # direct: dt in the autograd graph; aca: dt a float
def test_accepted_steps_equal_the_textbook_controllers(solver, case, grad):
    size, rtol, atol = CASES[case]
    y0_list = [[v * size for v in row] for row in Y0]
    ts_ref, rejected_ref = reference_solve(solver, y0_list, rtol, atol)
    y0 = torch.tensor(y0_list, dtype=torch.float64, requires_grad=True)
    y1, info = odeint(Linear(), y0, solver=solver, rtol=rtol, atol=atol, grad=grad, return_info=True,
                      max_steps=20000)
    y1.sum().backward()  # the controller runs in the forward; backward just has to go through
    assert len(info.ts) > 4, "too few steps to tell controllers apart"
    assert (len(info.ts), info.n_rejected) == (len(ts_ref), rejected_ref), (len(info.ts), len(ts_ref))
    assert info.ts == pytest.approx(ts_ref, rel=1e-9, abs=1e-12)


def test_the_cases_reject_steps_and_put_atol_in_charge():
    """The cases exercise what the controller test needs: some rejections somewhere (the factor's
    upper bound of 1 after a rejection), and a different step sequence when atol's role is given
    to rtol (what a tolerance-scale bug would do) where the two differ."""
    assert sum(reference_solve(s, [[v * c[0] for v in row] for row in Y0], c[1], c[2])[1]
               for s in ORDERS for c in CASES.values()) > 0
    for size, rtol, atol in (CASES[name] for name in ("rtol_in_charge", "atol_in_charge")):
        y0 = [[v * size for v in row] for row in Y0]
        assert reference_solve("heun_euler", y0, rtol, atol)[0] != reference_solve("heun_euler", y0, rtol, rtol)[0]
