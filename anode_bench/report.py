"""anode-report DIR [DIR ...]: turn the runs under run or multirun directories into tables, plots,
a comparison of gradient methods against a baseline, the papers' claims with a verdict each, and a
TensorBoard dashboard layout.

    anode-report outputs/multirun/2026-01-01/12-00-00
    anode-report outputs/multirun/A outputs/multirun/B --out outputs/AB --baseline discrete
    tensorboard --logdir outputs/multirun/2026-01-01/12-00-00    # CUSTOM SCALARS: methods side by side

A run is any directory under a DIR (the DIR included) that holds metrics.json; its
.hydra/config.yaml says what it was and its TensorBoard events hold the curves. A directory with a
config and events but no metrics.json stopped without finishing (a crash, or still going): it is
listed as incomplete. Writes into --out (default: the one DIR, or the DIRs' common parent):

  report.md            one row per run; one row per configuration (runs whose configs differ only
                       in trainer.seed and in settings that do not change the result: trainer.resume,
                       trainer.resume_override, trainer.device, trainer.threads, trainer.log_every,
                       trainer.keep_checkpoints, trainer.eval_batch_size, dataset.root,
                       dataset.download, hydra.*, and dataset.path's directory) with mean ± std over
                       seeds; the comparison against each --baseline; the claims; the plots
  report.csv           the per-run table; configurations.csv and comparison.csv the other two
  report.json          every table and plotted series, numbers as numbers
  accuracy.png         test accuracy (%) and training loss per epoch: mean over seeds, band min-max
  memory.png           peak memory against N_t (and rtol for adaptive solvers), from 0
  grad_error.png       mean gradient error against N_t / rtol, with the precision floor where logged
  grad_quality.png     the probe's error, cosine, floor and error / floor over training, per method
  *.anode-report       a TensorBoard event file holding the custom-scalars layout (a rerun replaces it)

Comparison: for each configuration M with a comparable baseline configuration B, M - B in mean
final test accuracy (percentage points) with a 95% Welch interval over seeds, and beside it the paired
interval over the seeds both ran (a seed fixes the initial weights and the batch order). B matches --baseline
(KEY=VALUE[,KEY=VALUE...]; grad, solver, model, dataset mean grad.name etc.; `discrete` is
grad=direct,solver=euler,solver.steps=1, the discrete residual network). M and B are comparable
when their configs agree on every key except grad.*, the seed, the non-result settings above and
what the baseline names (solver.* when it names the solver). Default: --baseline grad=direct.

Claims: each paper claim whose method and baseline configurations are both in the runs gets a
verdict from the 95% interval [lo, hi] of (method - baseline):
  claim "above" (method higher): reproduced if lo > 0, contradicted if hi < 0
  claim "below" (method lower):  reproduced if hi < 0, contradicted if lo > 0
  claim "equal" within ± m:      reproduced if -m <= lo and hi <= m, contradicted if lo > m or hi < -m
  otherwise "not reproduced at this budget" (the interval holds zero, or straddles the margin);
  fewer than 2 seeds on either side: no verdict ("needs >= 2 seeds").
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from anode_bench import tags
from anode_bench.stats import Difference, paired, welch

LAYOUT_SUFFIX = ".anode-report"
NOT_SWEPT = {"dataset.name", "dataset.path", "model.name", "solver.name", "solver.steps", "solver.rtol", "grad.name", "trainer.seed"}
# Settings that change where or how a run is logged or resumed, never its numbers: ignored when grouping
# seeds into configurations and when matching a method with its baseline. dataset.path counts by its file name.
NOT_RESULT = {"trainer.resume", "trainer.resume_override", "trainer.device", "trainer.threads", "trainer.log_every",
              "trainer.keep_checkpoints", "trainer.eval_batch_size", "dataset.root", "dataset.download"}
NOT_RESULT_PREFIXES = ("hydra.",)

# TensorBoard CUSTOM SCALARS: one multiline chart per tag (a regex over tags); every run is a line in it.
LAYOUT = tags.layout()


# ---------------------------------------------------------------------------------------- reading


@dataclass
class Run:
    """One run directory: its flattened resolved config, metrics.json and scalar curves."""

    path: Path
    name: str
    config: dict
    metrics: dict
    scalars: dict = field(default_factory=dict)  # tag -> [(step, value)]

    def get(self, key, default=None):
        return self.config.get(key, default)

    @property
    def adaptive(self) -> bool:
        return self.get("solver.steps") is None and self.get("solver.rtol") is not None

    @property
    def discretization(self) -> str:
        """N_t for fixed-step solvers, rtol (and atol where it differs) for adaptive ones."""
        if self.adaptive:
            rtol, atol = self.get("solver.rtol"), self.get("solver.atol")
            return f"rtol {rtol:g}" + (f", atol {atol:g}" if atol is not None and atol != rtol else "")
        steps = self.get("solver.steps")
        return "?" if steps is None else str(steps)

    @property
    def grad(self) -> str:
        grad = self.get("grad.name", "?")
        baseline = grad == "direct" and self.get("solver.name") == "euler" and self.get("solver.steps") == 1
        return "direct (discrete ResNet)" if baseline else grad

    @property
    def status(self) -> str:
        status = self.metrics.get("status", "incomplete")
        failure = self.metrics.get("failure")
        return f"{status}: {failure}" if failure else status

    @property
    def completed(self) -> bool:
        return self.metrics.get("status") == "completed"

    def result_key(self, free=lambda key: False) -> tuple:
        """The config as a hashable key, less the seed, the settings that cannot change a result (NOT_RESULT) and
        the keys `free` names; dataset.path by its file name, so one file read from two places is one dataset."""
        if not self.config:
            return ("path", str(self.path))  # no config: a configuration of its own
        items = []
        for key, value in self.config.items():
            if key == "trainer.seed" or not_result(key) or free(key):
                continue
            if key == "dataset.path" and isinstance(value, str):
                value = Path(value).name
            items.append((key, json.dumps(value, sort_keys=True, default=str)))
        return tuple(sorted(items))


def not_result(key: str) -> bool:
    return key in NOT_RESULT or key.startswith(NOT_RESULT_PREFIXES)


def flatten(tree, prefix="") -> dict:
    """{"a": {"b": 1}, "c": [1, 2], "d": {}} -> {"a.b": 1, "c": (1, 2)}: dotted keys, hashable leaves."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, (list, tuple)):
        return {prefix[:-1]: tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in tree)}
    return {prefix[:-1]: tree}


# Config groups renamed since a run may have been written: old prefix -> new prefix.
RENAMED_PREFIXES = {"grad_check.": "probe."}


def upgrade_config(config: dict, device: str | None) -> dict:
    """An older run's flattened config in today's names, so that it pools with today's runs of the
    same settings: renamed groups (RENAMED_PREFIXES) take their new names, and a run from before
    `trainer.tf32` existed that ran on the CPU (`device`: metrics.json's) gets tf32 = False (TF32 is
    a CUDA setting; on CUDA the old default was PyTorch's, so the key stays missing there and the
    run stays a configuration of its own)."""
    upgraded = {}
    for key, value in config.items():
        for old, new in RENAMED_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        upgraded[key] = value
    if config and "trainer.tf32" not in upgraded and str(device).startswith("cpu"):
        upgraded["trainer.tf32"] = False
    return upgraded


def read_config(run_dir: Path) -> dict:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(path)
    try:
        tree = OmegaConf.to_container(loaded, resolve=True)
    except Exception:  # an interpolation that only resolves inside Hydra (${hydra:...}): keep it as written
        tree = OmegaConf.to_container(loaded, resolve=False)
    return flatten(tree)


def read_scalars(run_dir: Path) -> dict:
    """Every scalar series of the run's TensorBoard events in run_dir (not its subdirectories)."""
    if not any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def run_name(run_dir: Path, root: Path) -> str:
    """The path relative to root ('.' for root itself), each Hydra job dir '3_grad=aca,...' cut to its number '3'."""
    relative = run_dir.relative_to(root)
    if relative == Path("."):
        return "."
    parts = [match.group(1) if (match := re.match(r"^(\d+)_", part)) else part for part in relative.parts]
    return "/".join(parts)


def natural(name: str) -> list:
    """'sweep/10' after 'sweep/9'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def common_root(roots: list[Path]) -> Path:
    """The one root, or the deepest directory holding every root (the default output directory and the names' base)."""
    resolved = [Path(r).resolve() for r in roots]
    return Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0]


def find_runs(roots, base: Path | None = None) -> list[Run]:
    """Every run under the roots (a path or a list): dirs holding metrics.json, and incomplete ones (config + events,
    no metrics). A directory reached from two roots is one run; names are relative to base (default: common_root)."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    base = Path(base).resolve() if base is not None else common_root(roots)
    dirs = set()
    for root in roots:
        root = root.resolve()
        dirs |= {p.parent for p in root.rglob("metrics.json")}
        for config in root.rglob(".hydra/config.yaml"):
            run_dir = config.parent.parent
            if run_dir not in dirs and any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
                dirs.add(run_dir)
    runs = []
    for run_dir in dirs:
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"status": "incomplete"}
        name = run_name(run_dir, base) if run_dir.is_relative_to(base) else str(run_dir)
        config = upgrade_config(read_config(run_dir), metrics.get("device"))
        runs.append(Run(run_dir, name, config, metrics, read_scalars(run_dir)))
    # job numbers repeat when several sweeps share one directory: such runs keep their whole names
    cut = [run.name for run in runs]
    for run in runs:
        if cut.count(run.name) > 1:
            run.name = str(run.path.relative_to(base)) if run.path.is_relative_to(base) else str(run.path)
    return sorted(runs, key=lambda run: natural(run.name))


# ------------------------------------------------------------------------------------ aggregation


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys, beyond the table's own columns and the settings that cannot change a result, that take two or
    more values across the runs.

    The model's architecture overrides and the dataset file are part of the model and dataset columns.
    A key that some runs lack counts as differing only between runs of the same group option
    (e.g. +model.arch.widths on one of two resnet_tiny runs): an adaptive solver's rtol or the
    adjoint's own options are no news beside the solver and grad columns.
    """
    swept = []
    keys = {k for run in runs for k in run.config if not k.startswith("model.arch.") and not not_result(k)}
    for key in sorted(keys - NOT_SWEPT):
        group = key.split(".")[0]
        present = {json.dumps(run.config[key], default=str) for run in runs if key in run.config}
        options: dict[str, set] = {}
        for run in runs:
            options.setdefault(json.dumps(run.get(f"{group}.name"), default=str), set()).add(key in run.config)
        if len(present) > 1 or any(len(has) > 1 for has in options.values()):
            swept.append(key)
    return swept


def show(value) -> str:
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def other(run: Run, keys: list[str]) -> str:
    return ", ".join(f"{k}={show(run.get(k))}" for k in keys if k in run.config)


def group_by_seed(runs: list[Run]) -> list[list[Run]]:
    """Runs whose resolved configs are equal except for trainer.seed and NOT_RESULT, in first-seen order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.result_key(), []).append(run)
    return list(groups.values())


def number(value) -> float | None:
    """A finite int or float as float; None for None, bools, strings, nan and inf."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def finite(values) -> list[float]:
    return [v for v in map(number, values) if v is not None]


def mean_std(values) -> tuple[float | None, float | None]:
    values = finite(values)
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt(value, spec: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if number(value) is None:
        return "—" if value is None or isinstance(value, float) else str(value)
    return format(value, spec)


@dataclass(frozen=True)
class Column:
    """A metric column: its title, the metrics.json key it reads, its markdown format and scale (accuracy -> %);
    `optional` columns appear only when some run logged the key (runs from before it existed lack it)."""

    title: str
    key: str
    spec: str
    scale: float = 1.0
    optional: bool = False


METRIC_COLUMNS = [
    Column("final acc %", tags.TEST_ACC, ".2f", 100.0),
    Column("best acc %", tags.BEST_ACC, ".2f", 100.0),
    Column("grad error", tags.mean_key(tags.GRAD_REL_L2), ".2e"),
    Column("floor", tags.mean_key(tags.GRAD_FLOOR), ".2e", optional=True),
    Column("error / floor", tags.mean_key(tags.GRAD_FLOOR_RATIO), ".3g", optional=True),
    Column("peak MiB", tags.PEAK_MIB, ".1f"),
    Column("step ms", tags.STEP_MS, ".1f"),
    Column("NFE fwd", tags.NFE_FORWARD, ".0f"),
    Column("NFE bwd", tags.NFE_BACKWARD, ".0f"),
    Column("wall s", tags.WALL_S, ".0f", optional=True),
]


def columns_for(runs: list[Run]) -> list[Column]:
    return [c for c in METRIC_COLUMNS if not c.optional or any(c.key in r.metrics for r in runs)]


def metric(run: Run, column: Column) -> float | None:
    value = number(run.metrics.get(column.key))
    return None if value is None else value * column.scale


def describe(run: Run) -> dict:
    """The table's configuration columns; the model with its architecture overrides, the dataset with its file."""
    arch = ", ".join(f"{k.split('.', 2)[2]}={show(v)}" for k, v in run.config.items() if k.startswith("model.arch."))
    path = run.get("dataset.path")
    return {
        "dataset": run.get("dataset.name", "?") + (f" ({Path(path).name})" if path else ""),
        "model": run.get("model.name", "?") + (f" ({arch})" if arch else ""),
        "solver": run.get("solver.name", "?"), "N_t / rtol": run.discretization, "grad": run.grad,
    }


def run_rows(runs: list[Run], keys: list[str]) -> list[dict]:
    """One row per run; numbers stay numbers (None where the run has none), accuracy in %."""
    columns = columns_for(runs)
    tf32 = any("tf32" in r.metrics for r in runs)
    rows = []
    for run in runs:
        row = {"run": run.name, **describe(run)}
        if keys:
            row["other"] = other(run, keys)
        row["seed"] = run.get("trainer.seed")
        row["epochs"] = run.metrics.get("epochs")
        for column in columns:
            row[column.title] = metric(run, column)
        if tf32:
            row["tf32"] = run.metrics.get("tf32")
        row["status"] = run.status
        rows.append(row)
    return rows


def configuration_rows(groups: list[list[Run]], keys: list[str]) -> list[dict]:
    """One row per configuration: each metric's mean over the seeds that logged it and its sample std
    (`<title> std`, None below 2 values); diverged runs log no accuracy, so they leave the accuracy means."""
    columns = columns_for([r for g in groups for r in g])
    rows = []
    for group in groups:
        first = group[0]
        row = describe(first)
        if keys:
            row["other"] = other(first, keys)
        row["seeds"] = [r.get("trainer.seed") for r in group]
        row["n"] = len(group)
        for column in columns:
            row[column.title], row[f"{column.title} std"] = mean_std(metric(r, column) for r in group)
        row["diverged"] = sum(r.metrics.get("status") == "diverged" for r in group)
        row["incomplete"] = sum(r.metrics.get("status", "incomplete") == "incomplete" for r in group)
        rows.append(row)
    return rows


SPECS = {c.title: c.spec for c in METRIC_COLUMNS} | {"epochs": "d", "seed": "d"}


def run_cells(row: dict) -> dict:
    return {k: fmt(v, SPECS.get(k, "g")) if k in SPECS or v is None or isinstance(v, bool) else str(v) for k, v in row.items()}


def configuration_cells(row: dict) -> dict:
    """A configuration row as markdown cells: 'mean ± std', the seeds with n, diverged as 'k/n'."""
    cells = {}
    for key, value in row.items():
        if key.endswith(" std") or key in ("n", "incomplete"):
            continue
        if key == "seeds":
            cells[key] = ", ".join("—" if s is None else str(s) for s in value) + f" (n={row['n']})"
        elif key == "diverged":
            cells[key] = f"{value}/{row['n']}" + (f" ({row['incomplete']} incomplete)" if row["incomplete"] else "")
        elif key in SPECS:
            std = row.get(f"{key} std")
            cells[key] = fmt(value, SPECS[key]) + (f" ± {fmt(std, SPECS[key])}" if std else "")
        else:
            cells[key] = str(value)
    return cells


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    columns = list(rows[0])
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(escape(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    """rows as CSV: numbers as written by repr (full precision), None as an empty cell, lists joined by ';'."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: "" if v is None else ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(row.get(k)) for k in columns})


# ------------------------------------------------------------------------------------- comparison

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
    difference = welch(a, b) if a and b else None
    row.update({"difference": difference and difference.diff, "CI low": difference and difference.low,
                "CI high": difference and difference.high, "df": difference and difference.df})
    by_seed, base_by_seed = accuracy_by_seed(group), accuracy_by_seed(base)
    shared = [(by_seed[s], base_by_seed[s]) for s in sorted(set(by_seed) & set(base_by_seed), key=str)]
    same_seed = paired(shared) if shared else None
    row.update({"pairs": len(shared), "paired difference": same_seed and same_seed.diff,
                "paired CI low": same_seed and same_seed.low, "paired CI high": same_seed and same_seed.high})
    return row, difference


def comparison_rows(groups, runs, keys, baseline: dict[str, str]) -> list[dict]:
    """Each configuration's mean final accuracy minus its comparable baseline's, in points, with the 95% Welch interval."""
    rows = []
    for group, base in pairs(groups, baseline):
        row, difference = difference_row(group, base, runs, keys)
        row["note"] = "" if difference and difference.low is not None else "needs >= 2 seeds on each side for an interval"
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Claim:
    """One accuracy claim of a paper: configurations whose model.name matches `model` (a regex) and `method`, against
    comparable ones matching `baseline`. kind: 'above' / 'below' (method higher / lower than the baseline) or
    'equal' (within ± margin points); paper_diff: the paper's method - baseline in points."""

    paper: str
    network: str
    model: str
    method: str
    baseline: str
    kind: str
    paper_diff: float
    paper_text: str
    margin: float = 0.0


# ANODE: the authors' repository's table (average over runs), baseline = the same network as a discrete ResNet,
# trained 350 epochs. "Equal" claims use a 1-point margin: ANODE's table puts ANODE 0.35-0.99 points above its
# baseline, about the baseline's own min-max spread (0.3-0.9 points).
CLAIMS = [
    *[Claim("ANODE", net, pattern, "grad=adjoint", "discrete", "below", adjoint - base,
            f"adjoint {adjoint:.2f} vs baseline {base:.2f}")
      for net, pattern, base, adjoint, _ in (("AlexNet", r"alexnet", 87.03, 75.67, 88.02),
                                             ("ResNet-4", r"resnet_?4(?!\d)", 76.95, 47.37, 77.30),
                                             ("ResNet-10", r"resnet_?10(?!\d)", 88.10, 67.94, 88.60))],
    *[Claim("ANODE", net, pattern, "grad=anode", "discrete", "equal", anode - base,
            f"ANODE {anode:.2f} vs baseline {base:.2f}", margin=1.0)
      for net, pattern, base, _, anode in (("AlexNet", r"alexnet", 87.03, 75.67, 88.02),
                                           ("ResNet-4", r"resnet_?4(?!\d)", 76.95, 47.37, 77.30),
                                           ("ResNet-10", r"resnet_?10(?!\d)", 88.10, 67.94, 88.60))],
    Claim("ANODE", "SqNxt-23", r"sqnxt23", "grad=anode", "grad=adjoint", "above", 89.0 - 50.0,
          "ANODE ≈89 vs adjoint ≈50 after 350 epochs (≈75 vs 45-70 from epoch 30)"),
    Claim("ACA", "ODE-ResNet-18", r"resnet18_aca", "grad=aca", "grad=adjoint", "above", 93.0 - 90.0,
          "ACA ≈93 vs adjoint ≈90 after 90 epochs"),
    Claim("ACA", "ODE-ResNet-18", r"resnet18_aca", "grad=aca", "grad=direct", "above", 93.0 - 90.0,
          "ACA ≈93 vs naive backpropagation ≈90 after 90 epochs"),
    Claim("ACA", "ODE-ResNet-18", r"resnet18_aca", "grad=aca", "discrete", "above", 94.15 - 92.2,
          "ODE-ResNet-18 with ACA ≈94.15 vs discrete ResNet-18 ≈92.2 (median of 10 runs)"),
]

REPRODUCED, NOT_AT_BUDGET, CONTRADICTED, NEEDS_SEEDS = (
    "reproduced", "not reproduced at this budget", "contradicted", "no verdict: needs >= 2 seeds")


def verdict(kind: str, low: float | None, high: float | None, margin: float = 0.0) -> str:
    """The verdict on a claim from the interval [low, high] of method - baseline (the module docstring's rules):
    a claim is reproduced only when the whole interval lies on the paper's side, contradicted only when the whole
    interval lies on the other side, and anything in between is 'not reproduced at this budget'."""
    if low is None or high is None:
        return NEEDS_SEEDS
    if kind == "above":
        return REPRODUCED if low > 0 else CONTRADICTED if high < 0 else NOT_AT_BUDGET
    if kind == "below":
        return REPRODUCED if high < 0 else CONTRADICTED if low > 0 else NOT_AT_BUDGET
    if kind == "equal":
        return REPRODUCED if -margin <= low and high <= margin else CONTRADICTED if low > margin or high < -margin else NOT_AT_BUDGET
    raise ValueError(f"claim kind {kind!r}: one of above, below, equal")


def claim_rows(groups, runs, keys, claims=CLAIMS) -> list[dict]:
    """One row per claim and matching (method, baseline) pair in the runs; claims the runs do not test are left out."""
    rows = []
    for claim in claims:
        candidates = [g for g in groups if re.search(claim.model, str(g[0].get("model.name", "")), re.IGNORECASE)]
        for group, base in pairs(candidates, parse_selector(claim.baseline), parse_selector(claim.method)):
            row, _ = difference_row(group, base, runs, keys)
            expectation = {"above": "method > baseline", "below": "method < baseline",
                           "equal": f"|method - baseline| <= {claim.margin:g}"}[claim.kind]
            low, high = row["CI low"], row["CI high"]
            rows.append({"paper": claim.paper, "network": claim.network, "claim": expectation,
                         "paper's figure": claim.paper_text, "paper diff": claim.paper_diff, **row,
                         "paper diff in CI": None if low is None else low <= claim.paper_diff <= high,
                         "verdict": verdict(claim.kind, low, high, claim.margin)})
    return rows


# ----------------------------------------------------------------------------------------- plots


def series_label(run: Run, runs: list[Run], keys: list[str], with_discretization: bool) -> str:
    """The parts of a run's configuration that tell it apart from the others (always its grad): a short name made
    of what differs, never the override string of its directory."""
    varies = lambda column: len({describe(r)[column] for r in runs}) > 1  # noqa: E731
    parts = [run.grad if with_discretization else run.get("grad.name", "?")]
    solver = run.get("solver.name", "?")
    if with_discretization:
        solver += f" N_t={run.discretization}" if not run.adaptive else f" {run.discretization}"
    if with_discretization or varies("solver"):
        parts.append(solver)
    parts += [describe(run)[column] for column in ("model", "dataset") if varies(column)]
    extra = other(run, keys)
    return ", ".join(str(p) for p in parts) + (f" ({extra})" if extra else "")


def epoch_curve(group: list[Run], tag: str, scale: float = 1.0) -> dict | None:
    """Per step of a tag across a group's seeds: mean, sample std (0 below 2 seeds), min, max and the seed count.
    A step a run logged twice (a resumed run repeating an epoch) counts once, with its last value."""
    by_step: dict[int, list[float]] = {}
    for run in group:
        last = {step: value for step, value in run.scalars.get(tag, []) if number(value) is not None}
        for step, value in last.items():
            by_step.setdefault(step, []).append(value * scale)
    if not by_step:
        return None
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return {"x": steps, "y": [m for m, _ in stats], "std": [s or 0.0 for _, s in stats],
            "min": [min(by_step[s]) for s in steps], "max": [max(by_step[s]) for s in steps],
            "n": [len(by_step[s]) for s in steps]}


def versus_discretization(groups: list[list[Run]], runs: list[Run], keys: list[str], metric: str) -> dict:
    """{"N_t": {label: {x, y, std}}, "rtol": {...}}: the metric's mean over seeds against N_t or rtol."""
    panels: dict[str, dict] = {"N_t": {}, "rtol": {}}
    for group in groups:
        first = group[0]
        mean, std = mean_std(r.metrics.get(metric) for r in group)
        x = first.get("solver.rtol") if first.adaptive else first.get("solver.steps")
        if mean is None or x is None:
            continue
        series = panels["rtol" if first.adaptive else "N_t"].setdefault(
            series_label(first, runs, keys, with_discretization=False), {"x": [], "y": [], "std": []})
        series["x"].append(x)
        series["y"].append(mean)
        series["std"].append(std or 0.0)
    for panel in panels.values():
        for series in panel.values():
            order = sorted(range(len(series["x"])), key=series["x"].__getitem__)
            for k in ("x", "y", "std"):
                series[k] = [series[k][i] for i in order]
    return {name: panel for name, panel in panels.items() if panel}


def identical_series(panels: dict) -> list[str]:
    """'<panel>: A is identical to B' for every series whose points equal an earlier one's (it hides under it)."""
    notes = []
    for panel, series in panels.items():
        seen: dict[tuple, str] = {}
        for label, s in series.items():
            points = (tuple(s["x"]), tuple(s["y"]))
            if points in seen:
                notes.append(f"{panel}: `{label}` is identical to `{seen[points]}`")
            else:
                seen[points] = label
    return notes


LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def styles(labels) -> dict:
    """A colour, line style and marker per label, the same in every panel of a figure, so that lines lying on top of
    each other stay distinguishable (a dashed line over a solid one, different markers)."""
    import matplotlib.pyplot as plt

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: {"color": colours[i % len(colours)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                    "marker": MARKERS[i % len(MARKERS)]} for i, label in enumerate(dict.fromkeys(labels))}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(panels: int, legend_entries: int):
    """A constrained-layout figure, one axis per panel (two per row), room below for a legend outside the data;
    returns (pyplot, figure, the axes in reading order)."""
    plt = _pyplot()
    columns, rows = min(panels, 2), math.ceil(panels / 2)
    height = 4.2 * rows + 0.22 * math.ceil(legend_entries / 2)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, height), squeeze=False, layout="constrained")
    for ax in axes.flat[panels:]:
        ax.remove()
    return plt, fig, list(axes.flat[:panels])


def finish(plt, fig, axes, path: Path) -> None:
    """One legend for the figure, below the axes (entries gathered from every panel, once each)."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2 if len(handles) > 1 else 1,
                   fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def integer_epochs(ax, xs) -> None:
    """Epoch ticks at integers only: every epoch when there are few, else an integer locator; one epoch is centred."""
    from matplotlib.ticker import MaxNLocator

    xs = sorted(set(xs))
    if xs and len(xs) <= 12:
        ax.set_xticks(xs)
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(path: Path, panels: dict, titles: dict, xlabel: str = "epoch") -> None:
    """One axis per panel; each series its mean over seeds with a min-max band; titles: tag -> (title, ylabel, log)."""
    labels = [label for series in panels.values() for label in series]
    plt, fig, axes = figure(len(panels), len(set(labels)))
    style = styles(labels)
    for ax, (tag, series) in zip(axes, panels.items()):
        title, ylabel, log, _ = titles[tag]
        for label, s in series.items():
            ax.plot(s["x"], s["y"], markersize=4, markevery=max(1, len(s["x"]) // 15), label=label, **style[label])
            if any(lo != hi for lo, hi in zip(s["min"], s["max"])):
                ax.fill_between(s["x"], s["min"], s["max"], color=style[label]["color"], alpha=0.15, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if xlabel == "epoch":
            integer_epochs(ax, [x for s in series.values() for x in s["x"]])
        ax.set_ylabel(ylabel)
        if log and series and all(y > 0 for s in series.values() for y in s["y"]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no run logged this", ha="center", va="center", transform=ax.transAxes)
    finish(plt, fig, axes, path)


def plot_versus(path: Path, panels: dict, ylabel: str, title: str, logy: bool, dashed: dict | None = None) -> None:
    """The metric against N_t (log2 axis) and, for adaptive solvers, against rtol (log axis); a linear y axis starts
    at 0. dashed: a second metric per panel and label (the precision floor beside the error), drawn dashed."""
    names = list(panels) or ["N_t"]
    labels = [label for series in panels.values() for label in series]
    plt, fig, axes = figure(len(names), 2 * len(set(labels)) if dashed else len(set(labels)))
    style = styles(labels)
    for ax, name in zip(axes, names):
        series = panels.get(name, {})
        for label, s in series.items():
            look = dict(style[label])
            if any(s["std"]):
                ax.errorbar(s["x"], s["y"], yerr=s["std"], capsize=3, label=label, **look)
            else:
                ax.plot(s["x"], s["y"], label=label, **look)
            extra = (dashed or {}).get(name, {}).get(label)
            if extra:
                ax.plot(extra["x"], extra["y"], label=f"{label}: floor", color=look["color"], linestyle=(0, (1, 1)),
                        marker="x", linewidth=1)
        if name == "N_t":
            ax.set_xscale("log", base=2)
            ticks = sorted({x for s in series.values() for x in s["x"]})
            if ticks:
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
            ax.set_xlabel("N_t (steps per ODE block)")
        else:
            ax.set_xscale("log")
            ax.set_xlabel("rtol (adaptive solvers)")
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if not series:
            ax.text(0.5, 0.5, "no run measured this", ha="center", va="center", transform=ax.transAxes)
    finish(plt, fig, axes, path)


# ---------------------------------------------------------------------------------------- writing


def write_layout(root: Path) -> None:
    """The custom-scalars layout, in an event file of its own in root (an earlier one is replaced)."""
    from torch.utils.tensorboard import SummaryWriter

    for old in root.glob(f"events.out.tfevents.*{LAYOUT_SUFFIX}"):
        old.unlink()
    writer = SummaryWriter(str(root), filename_suffix=LAYOUT_SUFFIX)
    writer.add_custom_scalars(LAYOUT)
    writer.close()


# tag -> (title, y label, log scale, scale): the per-epoch curves, and the probe's over training
CURVES = {tags.TEST_ACC: ("test accuracy", "accuracy (%)", False, 100.0),
          tags.TRAIN_EPOCH_LOSS: ("training loss", "cross-entropy", False, 1.0)}
QUALITY = {tags.GRAD_REL_L2: ("relative L2 error vs float64", "rel. L2 error", True, 1.0),
           tags.GRAD_COSINE: ("cosine vs float64", "cosine", False, 1.0),
           tags.GRAD_FLOOR: ("precision floor (same-precision direct)", "rel. L2 error", True, 1.0),
           tags.GRAD_FLOOR_RATIO: ("error / floor (1 = rounding)", "ratio", True, 1.0)}


def curves_of(groups, runs, keys, tags: dict) -> dict:
    curves = {}
    for tag, (*_, scale) in tags.items():
        curves[tag] = {}
        for group in groups:
            curve = epoch_curve(group, tag, scale)
            if curve:
                curves[tag][series_label(group[0], runs, keys, with_discretization=True)] = curve
    return curves


def interval(row: dict, prefix: str = "") -> str:
    low, high = row[f"{prefix}CI low"], row[f"{prefix}CI high"]
    return "—" if low is None else f"[{low:+.2f}, {high:+.2f}]"


def section_comparison(baseline_text: str, rows: list[dict]) -> list[str]:
    cells = [{"method": r["method"], "baseline": r["baseline"], "n": f"{r['n method']} vs {r['n baseline']}",
              "method acc %": fmt(r["method acc %"], ".2f"), "baseline acc %": fmt(r["baseline acc %"], ".2f"),
              "difference (points)": fmt(r["difference"], "+.2f"),
              "95% CI": interval(r),
              "Welch df": fmt(r["df"], ".1f"), "same seeds: pairs": r["pairs"],
              "paired difference": fmt(r["paired difference"], "+.2f"), "paired 95% CI": interval(r, "paired "),
              "note": r["note"]} for r in rows]
    return [f"### Against `{baseline_text}`", "",
            markdown_table(cells) if rows else f"(no configuration has a comparable `{baseline_text}` baseline: "
            "pass `--baseline KEY=VALUE` naming one the runs hold)\n"]


def section_claims(rows: list[dict]) -> list[str]:
    cells = [{"paper": r["paper"], "network": r["network"], "claim": r["claim"], "paper's figure": r["paper's figure"],
              "paper diff": f"{r['paper diff']:+.2f}", "method": r["method"], "baseline": r["baseline"],
              "n": f"{r['n method']} vs {r['n baseline']}", "ours (points)": fmt(r["difference"], "+.2f"),
              "95% CI": interval(r),
              "paper's diff in CI": fmt(r["paper diff in CI"], ""), "verdict": r["verdict"],
              "paired 95% CI (pairs)": interval(r, "paired ") + f" ({r['pairs']})"} for r in rows]
    return [markdown_table(cells) if rows else "(the runs test none of the claims: no matching method and baseline "
            "configurations)\n"]


def report(roots, out: Path | None = None, baselines=None) -> dict:
    """Read every run under roots (a directory or a list), write report.md, the CSVs, report.json, the plots and
    the layout into out (default: the one root, or the roots' common parent); return report.json's content.
    baselines: --baseline selectors (parse_selector); a key no run's config has is refused. None: grad=direct."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
    base = common_root(roots)
    out_given = out  # as the user wrote it, for the report's "Regenerate with" line
    out = Path(out).resolve() if out is not None else base
    given = tuple(baselines or ())
    baselines = given or ("grad=direct",)
    selectors = {text: parse_selector(text) for text in baselines}
    runs = find_runs(roots, base)
    if not runs:
        raise FileNotFoundError(f"no run under {', '.join(map(str, roots))}: a run directory holds metrics.json "
                                "(or .hydra/config.yaml and events)")
    known = {k for run in runs for k in run.config}
    for text, selector in selectors.items() if given else ():
        unknown = [k for k in selector if k not in known]
        if unknown:
            raise SelectorError(f"--baseline {text}: no run's config has {', '.join(unknown)} "
                                f"(groups: {', '.join(GROUPS)}; or a dotted key such as solver.steps)")
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(runs)
    groups = group_by_seed(runs)
    rows, config_rows = run_rows(runs, keys), configuration_rows(groups, keys)
    comparisons = {text: comparison_rows(groups, runs, keys, selector) for text, selector in selectors.items()}
    claims = claim_rows(groups, runs, keys)

    curves = curves_of(groups, runs, keys, CURVES)
    quality = {tag: series for tag, series in curves_of(groups, runs, keys, QUALITY).items() if series}
    memory = versus_discretization(groups, runs, keys, tags.PEAK_MIB)
    error = versus_discretization(groups, runs, keys, tags.mean_key(tags.GRAD_REL_L2))
    floor = versus_discretization(groups, runs, keys, tags.mean_key(tags.GRAD_FLOOR))
    plot_curves(out / "accuracy.png", curves, CURVES)
    plot_versus(out / "memory.png", memory, "peak memory (MiB)", "peak memory per training step", logy=False)
    plot_versus(out / "grad_error.png", error, "relative L2 gradient error (mean)", "gradient error vs float64 reference",
                logy=True, dashed=floor)
    plots = ["accuracy.png", "memory.png", "grad_error.png"]
    if quality:
        plot_curves(out / "grad_quality.png", quality, QUALITY, xlabel="training step (as logged)")
        plots.append("grad_quality.png")
    write_layout(out)
    identical = identical_series({f"accuracy.png, {CURVES[t][0]}": s for t, s in curves.items()}
                                 | {f"grad_quality.png, {QUALITY[t][0]}": s for t, s in quality.items()}
                                 | {f"memory.png, against {p}": s for p, s in memory.items()}
                                 | {f"grad_error.png, against {p}": s for p, s in error.items()})

    devices = sorted({str(r.metrics.get("device")) for r in runs if r.metrics.get("device")})
    # grad_check: the probe group's name in runs from before it was called probe
    references = sorted({f"{r.get('probe.reference', r.get('grad_check.reference'))}" for r in runs
                         if r.get("probe.reference", r.get("grad_check.reference"))})
    diverged = sum(r.metrics.get("status") == "diverged" for r in runs)
    shown = out_given if out_given is not None else base  # the output directory as the command named it
    sources = " ".join(str(r) for r in roots) + (f" --out {shown}" if out != base else "")
    floors = any(tags.mean_key(tags.GRAD_FLOOR) in r.metrics for r in runs)
    text = [
        f"# Report: {base.name or base}",
        "",
        f"{len(runs)} runs in {len(groups)} configurations ({diverged} diverged), device {', '.join(devices) or '?'}. "
        f"Regenerate with `anode-report {sources}"
        + "".join(f" --baseline {b}" for b in given)
        + f"`; open the dashboards with `tensorboard --logdir {shown}` (CUSTOM SCALARS: every run as a line in one "
        "chart per tag).",
        "",
        "Accuracy in %; grad error: mean relative L2 error of the gradient against float64 `direct` "
        f"(probe.reference = {', '.join(references) or '?'}) over the run's probes; "
        + ("floor: the same measure for `direct` at the run's own precision on the same grid (what the arithmetic "
           "alone costs); error / floor: 1 means the method is at the rounding level; " if floors else "")
        + "peak MiB: the largest training-step peak (CUDA allocator, or on the CPU the allocations at probe steps "
        "plus parameters, gradients and optimizer state); step ms: mean over log windows; NFE: f evaluations of the "
        "last training step summed over ODE blocks. `direct (discrete ResNet)` is euler N_t = 1 with `direct`: "
        "exactly the discrete residual network." + (f" Other settings that differ between runs: {', '.join(keys)}." if keys else ""),
        "",
        "## Runs",
        "",
        markdown_table([run_cells(r) for r in rows]),
        "## Per configuration (mean ± std over seeds)",
        "",
        "Runs whose resolved configs differ only in trainer.seed and in settings that cannot change a result "
        "(resume, device, threads, logging, dataset location); ± is the sample standard deviation (n >= 2); "
        "diverged runs are left out of the accuracy means.",
        "",
        markdown_table([configuration_cells(r) for r in config_rows]),
        "## Comparison with a baseline",
        "",
        "Mean final test accuracy of each configuration minus its baseline's, in percentage points, with the 95% Welch "
        "interval over seeds (df by Welch-Satterthwaite). A baseline is comparable when the two configs differ only "
        "in grad, the seed and what the baseline names. Paired: the same difference seed by seed over the seeds both "
        "ran, with its t interval (n - 1 df); a seed fixes the initial weights and the batch order, so this interval "
        "leaves out the seed-to-seed spread that the two sides share.",
        "",
        *[line for text_, rows_ in comparisons.items() for line in section_comparison(text_, rows_)],
        "## Claims",
        "",
        "Each paper claim the runs test: reproduced when the whole 95% interval lies on the paper's side (for 'equal', "
        "inside ± the margin), contradicted when it lies wholly on the other side (outside the margin), otherwise not "
        "reproduced at this budget; no verdict below 2 seeds on either side. Verdicts use the Welch interval; the "
        "paired one beside it leaves out the spread the seeds share: narrower where the per-seed differences agree, "
        "wider (n - 1 df) where they do not.",
        "",
        *section_claims(claims),
        "## Plots",
        "",
        "Accuracy curves: the mean over seeds, the band from the lowest to the highest seed.",
        *[f"- {note}" for note in identical],
        "",
        *[line for name in plots for line in (f"![{name[:-4]}]({name})", "")],
        "## Run directories",
        "",
        *[f"- {run.name}: `{os.path.relpath(run.path, out)}`" for run in runs],
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    write_csv(out / "report.csv", rows)
    write_csv(out / "configurations.csv", config_rows)
    write_csv(out / "comparison.csv", [{"baseline selector": t, **r} for t, rs in comparisons.items() for r in rs])
    content = {
        "runs": rows,
        "configurations": config_rows,
        "comparisons": comparisons,
        "claims": claims,
        "plots": {"accuracy.png": curves, "memory.png": memory, "grad_error.png": error, "grad_error.png floor": floor,
                  "grad_quality.png": quality},
        "identical": identical,
        "layout": LAYOUT,
    }
    (out / "report.json").write_text(json.dumps(content, indent=2))
    return content


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="anode-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="run directories or multirun (sweep) directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: the one DIR, or the DIRs' common parent)")
    parser.add_argument("--baseline", action="append", default=None, metavar="KEY=VALUE[,KEY=VALUE...]",
                        help="baseline configuration to compare every comparable configuration with; repeatable; "
                             "'discrete' = grad=direct,solver=euler,solver.steps=1 (default: grad=direct)")
    args = parser.parse_args(argv)
    try:
        content = report(args.dirs, args.out, args.baseline)
    except (FileNotFoundError, SelectorError) as error:
        sys.exit(f"anode-report: {error}")
    out = args.out or common_root(args.dirs)
    print(f"anode-report: {len(content['runs'])} runs -> {out / 'report.md'}, report.csv, report.json, plots")


if __name__ == "__main__":
    main()
