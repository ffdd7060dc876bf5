"""Student t quantiles, Welch's interval for a difference of two means and the paired interval, in plain math.

anode-report compares a method's mean final accuracy over seeds with a baseline's. The seeds of
the two configurations are independent samples with possibly different variances, so the
interval is Welch's:

    d  = mean(a) - mean(b)
    se = sqrt(s_a^2 / n_a + s_b^2 / n_b)                       (s: sample std, n - 1 in the denominator)
    df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))    (Welch-Satterthwaite)
    CI = d ± t_{(1 + level) / 2}(df) · se

Runs of one seed share more than the seed, though: anode-train seeds the weights' initialization
and the batch order from it, so a method and its baseline at the same seed start from the same
weights and see the same batches (when their parameters agree). The paired interval takes that
out of the spread: with d_i = a_i - b_i over the n seeds both sides ran,

    CI = mean(d) ± t_{(1 + level) / 2}(n - 1) · s_d / sqrt(n).

Welch's df is not an integer, so the quantile comes from the t distribution's CDF through the regularized
incomplete beta function, F(t) = 1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 for t >= 0, inverted
by bisection. No dependency beyond `math`: scipy is not one of the project's.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the continued fraction of I_x(a, b) (Numerical Recipes' betacf); converges for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for 0 <= x <= 1, a, b > 0; the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) keeps the continued fraction convergent."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x={x} must lie in [0, 1]")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom (df = inf: the standard normal)."""
    if df <= 0:
        raise ValueError(f"df={df} must be positive")
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """t with P(T <= t) = p, by bisection on t_cdf to 1e-12 relative (the CDF is monotone, so this cannot miss)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must lie strictly between 0 and 1")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    high = 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    low = 0.0
    while high - low > 1e-12 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its Welch interval; low, high, df and se are None when a side has fewer than 2 values."""

    diff: float
    low: float | None
    high: float | None
    df: float | None
    se: float | None
    n_a: int
    n_b: int
    level: float


def welch(a: list[float], b: list[float], level: float = 0.95) -> Difference:
    """mean(a) - mean(b) and its `level` Welch interval (module docstring). Needs n >= 1 on each side for the
    difference and n >= 2 on each side for the interval. Both sample variances zero (every seed agreeing to the
    last digit) gives se = 0 and a zero-width interval, with the pooled df = n_a + n_b - 2."""
    if not a or not b:
        raise ValueError("both samples need at least one value")
    diff = statistics.fmean(a) - statistics.fmean(b)
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        return Difference(diff, None, None, None, None, n_a, n_b, level)
    va, vb = statistics.variance(a) / n_a, statistics.variance(b) / n_b
    se = math.sqrt(va + vb)
    df = float(n_a + n_b - 2) if se == 0 else (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    half = t_quantile((1.0 + level) / 2.0, df) * se
    return Difference(diff, diff - half, diff + half, df, se, n_a, n_b, level)


def paired(pairs: list[tuple[float, float]], level: float = 0.95) -> Difference:
    """mean(a_i - b_i) over the pairs and its `level` t interval with n - 1 df (module docstring). Needs one pair
    for the difference and two for the interval; differences that all agree give a zero-width interval."""
    if not pairs:
        raise ValueError("the paired interval needs at least one pair")
    differences = [a - b for a, b in pairs]
    n = len(differences)
    diff = statistics.fmean(differences)
    if n < 2:
        return Difference(diff, None, None, None, None, n, n, level)
    se = statistics.stdev(differences) / math.sqrt(n)
    half = t_quantile((1.0 + level) / 2.0, n - 1) * se
    return Difference(diff, diff - half, diff + half, float(n - 1), se, n, n, level)
