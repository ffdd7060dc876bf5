"""Each method against a named baseline: the --baseline selectors, which configurations are
comparable, and the difference in mean final test accuracy with its Welch and paired intervals."""
from __future__ import annotations

import statistics

from anode_bench import tags
from anode_bench.stats import Difference, paired, welch

from .runs import Run
from .tables import finite, number, series_label, show

GROUPS = ("grad", "solver", "model", "dataset", "trainer", "probe")
SHORTHANDS = {"discrete": "grad=direct,solver=euler,solver.steps=1"}


class SelectorError(ValueError):
    """A --baseline that names no config key, or is not KEY=VALUE."""


def parse_selector(text: str) -> dict[str, str]:
    """'grad=direct,solver.steps=1' -> {'grad.name': 'direct', 'solver.steps': '1'}; a bare group name means its
    option (grad -> grad.name); 'discrete' is the discrete residual network (euler, N_t = 1, direct)."""
    text = SHORTHANDS.get(text.strip(), text)
    selector = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise SelectorError(f"baseline {text!r}: each part must be KEY=VALUE (e.g. grad=direct or "
                                f"grad=direct,solver=euler,solver.steps=1), or one of: {', '.join(SHORTHANDS)}")
        selector[f"{key}.name" if key in GROUPS else key] = value
    return selector


def same_value(value, wanted: str) -> bool:
    """A config value against a selector's text: numerically where both are numbers (1e-2 == 0.01), else as text."""
    try:
        return not isinstance(value, bool) and float(value) == float(wanted)
    except (TypeError, ValueError):
        return show(value) == wanted or str(value).lower() == wanted.lower()


def matches(run: Run, selector: dict[str, str]) -> bool:
    return all(key in run.config and same_value(run.config[key], value) for key, value in selector.items())


def free_keys(*selectors: dict[str, str]):
    """Keys a method and its baseline may differ in: grad.*, and what the selectors name (a group's whole subtree
    where they name its option: solver=euler frees solver.steps, solver.rtol, ...)."""
    prefixes = {"grad."} | {k.split(".")[0] + "." for s in selectors for k in s if k.endswith(".name")}
    names = {k for s in selectors for k in s}
    return lambda key: key in names or key.startswith(tuple(prefixes))


def accuracies(group: list[Run]) -> list[float]:
    """Final test accuracy in % of the group's completed runs (diverged and unfinished ones have none)."""
    return finite(100.0 * r.metrics[tags.TEST_ACC] for r in group if r.completed and number(r.metrics.get(tags.TEST_ACC)) is not None)


SEED_TWICE = "no interval: "  # how a row refused for a repeated seed begins its note (claims.py reads it)


def repeated_seeds(group: list[Run]) -> list:
    """Seeds that more than one of the group's completed runs trained with (one run passed twice, from two
    sweep dirs, or a seed run again): counted twice they would narrow Welch's interval, so it is refused."""
    seeds = [r.get("trainer.seed") for r in group if r.completed and number(r.metrics.get(tags.TEST_ACC)) is not None]
    return sorted({s for s in seeds if s is not None and seeds.count(s) > 1}, key=str)


def accuracy_by_seed(group: list[Run]) -> dict:
    """{seed: final test accuracy in %} of the group's completed runs (as `accuracies`) whose seed no other of them
    shares; a run without a seed (trainer.seed null: a random one) pairs with nothing."""
    done = [r for r in group if r.completed and number(r.metrics.get(tags.TEST_ACC)) is not None]
    seeds = [r.get("trainer.seed") for r in done]
    return {seed: 100.0 * r.metrics[tags.TEST_ACC] for seed, r in zip(seeds, done) if seed is not None and seeds.count(seed) == 1}


def pairs(groups: list[list[Run]], baseline: dict[str, str], method: dict[str, str] | None = None):
    """(method group, baseline group): every configuration not matching the baseline selector (and matching the
    method selector, if given), with every baseline configuration comparable to it (free_keys)."""
    free = free_keys(baseline, method or {})
    bases = [g for g in groups if matches(g[0], baseline)]
    for group in groups:
        if matches(group[0], baseline) or (method is not None and not matches(group[0], method)):
            continue
        for base in bases:
            if base[0].result_key(free) == group[0].result_key(free):
                yield group, base


def difference_row(group: list[Run], base: list[Run], runs: list[Run], keys: list[str]) -> tuple[dict, Difference | None]:
    a, b = accuracies(group), accuracies(base)
    label = lambda g: series_label(g[0], runs, keys, with_discretization=True)  # noqa: E731
    row = {"method": label(group), "baseline": label(base), "n method": len(a), "n baseline": len(b),
           "method acc %": statistics.fmean(a) if a else None, "baseline acc %": statistics.fmean(b) if b else None}
    repeated = [(label(g), seed) for g in (group, base) for seed in repeated_seeds(g)]
    difference = welch(a, b) if a and b and not repeated else None
    row.update({"difference": difference and difference.diff, "CI low": difference and difference.low,
                "CI high": difference and difference.high, "df": difference and difference.df})
    by_seed, base_by_seed = accuracy_by_seed(group), accuracy_by_seed(base)
    shared = [(by_seed[s], base_by_seed[s]) for s in sorted(set(by_seed) & set(base_by_seed), key=str)]
    same_seed = paired(shared) if shared else None
    row.update({"pairs": len(shared), "paired difference": same_seed and same_seed.diff,
                "paired CI low": same_seed and same_seed.low, "paired CI high": same_seed and same_seed.high})
    if repeated:
        twice = "; ".join(f"seed {seed} of {name}" for name, seed in repeated)
        row["note"] = f"{SEED_TWICE}{twice} finished twice (a run passed twice?); pass each run once"
    elif difference is None or difference.low is None:
        row["note"] = "needs >= 2 seeds on each side for an interval"
    else:
        row["note"] = ""
    return row, difference


def comparison_rows(groups, runs, keys, baseline: dict[str, str]) -> list[dict]:
    """Each configuration's mean final accuracy minus its comparable baseline's, in points, with the 95% Welch interval."""
    rows = []
    for group, base in pairs(groups, baseline):
        row, _ = difference_row(group, base, runs, keys)
        rows.append(row)
    return rows
