"""Aggregation: the keys a set of runs varies, seeds grouped into configurations, the per-run and
per-configuration rows with mean ± std over seeds, a short label per configuration, and the
markdown and CSV forms of the tables."""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from anode_bench import tags

from .runs import Run, not_result, number

NOT_SWEPT = {"dataset.name", "dataset.path", "model.name", "solver.name", "solver.steps", "solver.rtol", "grad.name", "trainer.seed"}


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
    accuracy: bool = False  # a result of the finished training: its mean takes completed runs only


METRIC_COLUMNS = [
    Column("final acc %", tags.TEST_ACC, ".2f", 100.0, accuracy=True),
    Column("best acc %", tags.BEST_ACC, ".2f", 100.0, accuracy=True),
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


def mixed_timing(groups: list[list[Run]], runs: list[Run], keys: list[str]) -> list[str]:
    """'<configuration>: cpu, threads 1; cpu, threads 1 then 2' for each configuration whose runs' times were not all
    measured under one device and thread count (a run resumed on another counts): its step ms and wall s mean
    pools them, and set beside another configuration's they compare the settings as much as the methods."""
    notes = []
    for group in groups:
        settings = list(dict.fromkeys(r.timed_under for r in group))
        if len(settings) > 1 or " then " in settings[0]:
            notes.append(f"{series_label(group[0], runs, keys, True)}: {'; '.join(settings)}")
    return notes


def run_rows(runs: list[Run], keys: list[str]) -> list[dict]:
    """One row per run; numbers stay numbers (None where the run has none), accuracy in %."""
    columns = columns_for(runs)
    tf32 = any("tf32" in r.metrics for r in runs)
    rows = []
    for run in runs:
        row = {"run": run.name, **describe(run)}
        if keys:
            row["other"] = other(run, keys)
        row["seed"] = run.seed
        row["epochs"] = run.metrics.get("epochs", run.epochs_logged)
        for column in columns:
            row[column.title] = metric(run, column)
        if tf32:
            row["tf32"] = run.metrics.get("tf32")
        row["status"] = run.status
        rows.append(row)
    return rows


def configuration_rows(groups: list[list[Run]], keys: list[str]) -> list[dict]:
    """One row per configuration: each metric's mean over the seeds that logged it, its sample std
    (`<title> std`, None below 2 values) and how many runs gave it (`<title> n`). The accuracy means
    take completed runs only, as the comparison does: a run that diverged or stopped after some
    epochs logged the accuracy of its last one. A run that trained under more than one
    configuration (Run.mixed) counts in no column."""
    columns = columns_for([r for g in groups for r in g])
    rows = []
    for group in groups:
        first = group[0]
        row = describe(first)
        if keys:
            row["other"] = other(first, keys)
        row["seeds"] = sorted((r.seed for r in group), key=lambda s: (s is None, s or 0))  # not path order: 0_seed=0, 0_seed=5, 1_...
        row["n"] = len(group)
        for column in columns:
            counted = [r for r in group if (r.completed if column.accuracy else not r.mixed)]
            values = finite(metric(r, column) for r in counted)
            row[column.title], row[f"{column.title} std"] = mean_std(values)
            row[f"{column.title} n"] = len(values)
        row["diverged"] = sum(r.diverged for r in group)
        row["incomplete"] = sum(not r.completed and not r.diverged for r in group)  # unfinished, or resumed with changes
        rows.append(row)
    return rows


SPECS = {c.title: c.spec for c in METRIC_COLUMNS} | {"epochs": "d", "seed": "d"}


def run_cells(row: dict) -> dict:
    return {k: fmt(v, SPECS.get(k, "g")) if k in SPECS or v is None or isinstance(v, bool) else str(v) for k, v in row.items()}


def configuration_cells(row: dict) -> dict:
    """A configuration row as markdown cells: 'mean ± std', the seeds with n, diverged as 'k/n'."""
    cells = {}
    for key, value in row.items():
        if key.endswith((" std", " n")) or key in ("n", "incomplete"):
            continue
        if key == "seeds":
            cells[key] = ", ".join("—" if s is None else str(s) for s in value) + f" (n={row['n']})"
        elif key == "diverged":
            cells[key] = f"{value}/{row['n']}" + (f" ({row['incomplete']} incomplete)" if row["incomplete"] else "")
        elif key in SPECS:
            std = row.get(f"{key} std")
            cells[key] = fmt(value, SPECS[key]) + (f" ± {fmt(std, SPECS[key])}" if std is not None else "")
            if 0 < row.get(f"{key} n", row["n"]) < row["n"]:  # fewer seeds logged it (an older run, a diverged one)
                cells[key] += f" (n={row[f'{key} n']})"
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
