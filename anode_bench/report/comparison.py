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
    option (grad -> grad.name); 'discrete' is the discrete residual network (euler, N_t = 1, direct); any other
    bare word is a gradient method ('anode' -> grad=anode)."""
    text = SHORTHANDS.get(text.strip(), text)
    if text.strip() and "=" not in text and "," not in text:
        return {"grad.name": text.strip()}
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
    """A config value against a selector's text: numerically where both are numbers (1e-2 == 0.01), a boolean as
    true/false/1/0, null as null/none, else as text."""
    if value is None:
        return wanted.lower() in ("null", "none")
    if isinstance(value, bool):
        return wanted.lower() in (("true", "1") if value else ("false", "0"))
    try:
        return float(value) == float(wanted)
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


NO_INTERVAL = "no interval: "  # how a row whose interval is refused begins its note (claims give no verdict)


def repeated_seeds(group: list[Run]) -> list:
    """Seeds that more than one of the group's completed runs trained with (one run passed twice, from two
    sweep dirs, or a seed run again): counted twice they would narrow Welch's interval, so it is refused."""
    seeds = [r.seed for r in group if r.completed and number(r.metrics.get(tags.TEST_ACC)) is not None]
    return sorted({s for s in seeds if s is not None and seeds.count(s) > 1}, key=str)


def left_out(group: list[Run]) -> dict[str, list]:
    """{'diverged': seeds, 'unfinished': seeds, 'resumed with another config': seeds}: the group's runs that give
    no final accuracy, by why. A seed lost to divergence is a result of the method, so a claim gets no verdict
    without it; an unfinished one (still running, stopped, or its metrics.json from before a resume) is only absent."""
    reasons = {"diverged": [], "unfinished": [], "resumed with another config": []}
    for run in group:
        if run.mixed:
            reasons["resumed with another config"].append(run.seed)
        elif run.diverged:
            reasons["diverged"].append(run.seed)
        elif not run.completed:
            reasons["unfinished"].append(run.seed)
    return {why: seeds for why, seeds in reasons.items() if seeds}


def left_out_text(name: str, group: list[Run]) -> str:
    """'anode, euler N_t=2: seed 2 diverged, seeds 3, 4 unfinished' ('' when every run finished)."""
    parts = [f"{'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))} {why}"
             for why, seeds in left_out(group).items()]
    return f"{name}: {', '.join(parts)}" if parts else ""


def accuracy_by_seed(group: list[Run]) -> dict:
    """{seed: final test accuracy in %} of the group's completed runs (as `accuracies`) whose seed no other of them
    shares; a run without a known seed (trainer.seed null, from before metrics.json recorded the drawn one) pairs
    with nothing."""
    done = [r for r in group if r.completed and number(r.metrics.get(tags.TEST_ACC)) is not None]
    seeds = [r.seed for r in done]
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


def no_spread(difference: Difference) -> bool:
    """An interval of zero width, up to rounding: differences that agree to the last digits (accuracies exactly
    one point apart at every seed leave an se of 1e-15 after subtraction, not 0)."""
    return difference.se is not None and difference.se <= 1e-9 * max(1.0, abs(difference.diff))


def difference_row(group: list[Run], base: list[Run], runs: list[Run], keys: list[str]) -> tuple[dict, Difference | None]:
    """The comparison's row: both means, the Welch and paired intervals, and a note. The interval is refused (None,
    the note saying why, beginning NO_INTERVAL) when a seed counts twice, when a side lost a seed to divergence (the
    survivors alone would flatter it), and when neither side varies over seeds (a zero-width interval would claim
    a certainty that two or three agreeing numbers do not give)."""
    a, b = accuracies(group), accuracies(base)
    label = lambda g: series_label(g[0], runs, keys, with_discretization=True)  # noqa: E731
    row = {"method": label(group), "baseline": label(base), "n method": len(a), "n baseline": len(b),
           "method acc %": statistics.fmean(a) if a else None, "baseline acc %": statistics.fmean(b) if b else None}
    repeated = [(label(g), seed) for g in (group, base) for seed in repeated_seeds(g)]
    diverged = [label(g) for g in (group, base) if "diverged" in left_out(g)]
    absent = "; ".join(text for g in (group, base) if (text := left_out_text(label(g), g)))
    difference = welch(a, b) if a and b else None
    by_seed, base_by_seed = accuracy_by_seed(group), accuracy_by_seed(base)
    shared = [(by_seed[s], base_by_seed[s]) for s in sorted(set(by_seed) & set(base_by_seed), key=str)]
    same_seed = paired(shared) if shared else None
    if repeated:
        twice = "; ".join(f"seed {seed} of {name}" for name, seed in repeated)
        refusal = f"{twice} finished twice (a run passed twice?); pass each run once"
    elif diverged:
        refusal = f"{' and '.join(diverged)} lost seeds to divergence ({absent}); the rest alone would flatter it"
    elif difference is not None and no_spread(difference):
        refusal = "every seed gave the same accuracy on each side: no spread to size an interval with"
    else:
        refusal = ""
    if refusal:
        difference = None if difference is None else Difference(difference.diff, None, None, None, None, difference.n_a,
                                                                difference.n_b, difference.level)
    row.update({"difference": difference and difference.diff, "CI low": difference and difference.low,
                "CI high": difference and difference.high, "df": difference and difference.df})
    if same_seed is not None and (refusal or no_spread(same_seed)):
        same_seed = Difference(same_seed.diff, None, None, None, None, same_seed.n_a, same_seed.n_b, same_seed.level)
    row.update({"pairs": len(shared), "paired difference": same_seed and same_seed.diff,
                "paired CI low": same_seed and same_seed.low, "paired CI high": same_seed and same_seed.high})
    if refusal:
        row["note"] = NO_INTERVAL + refusal
    elif difference is None or difference.low is None:
        row["note"] = "needs >= 2 seeds on each side for an interval" + (f" ({absent})" if absent else "")
    else:
        row["note"] = f"left out: {absent}" if absent else ""
    return row, difference


def unmatched(groups: list[list[Run]], baseline: dict[str, str], runs: list[Run], keys: list[str],
              baselines: tuple[dict[str, str], ...] = ()) -> list[str]:
    """The configurations that have no comparable baseline configuration, each with the keys where it differs from
    the nearest baseline: a comparison that silently leaves a method out would read as though the method had not
    run. Not listed: the baselines themselves (this selector's and any of `baselines`, the report's others), and
    anything at all when no run matches the selector (the comparison says so)."""
    free = free_keys(baseline)
    bases = [g for g in groups if matches(g[0], baseline) and g[0].config]
    paired_groups = {id(group) for group, _ in pairs(groups, baseline)}
    lines = []
    for group in groups if bases else ():
        if id(group) in paired_groups or any(matches(group[0], s) for s in (baseline, *baselines)):
            continue
        name = series_label(group[0], runs, keys, with_discretization=True)
        if not group[0].config:
            lines.append(f"{name}: no .hydra/config.yaml to compare")
            continue
        mine = dict(group[0].result_key(free))
        differences = min(([key for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key)]
                           for theirs in (dict(base[0].result_key(free)) for base in bases)), key=len)
        lines.append(f"{name}: differs from the nearest baseline in {', '.join(differences)}")
    return lines


def comparison_rows(groups, runs, keys, baseline: dict[str, str]) -> list[dict]:
    """Each configuration's mean final accuracy minus its comparable baseline's, in points, with the 95% Welch interval."""
    rows = []
    for group, base in pairs(groups, baseline):
        row, _ = difference_row(group, base, runs, keys)
        rows.append(row)
    return rows
