"""anode-report DIR: turn the runs under a run or multirun directory into tables, plots and a
TensorBoard dashboard layout.

    anode-report outputs/multirun/2026-01-01/12-00-00
    tensorboard --logdir outputs/multirun/2026-01-01/12-00-00    # CUSTOM SCALARS tab: methods side by side

A run is any directory under DIR (DIR included) that holds `metrics.json`; its `.hydra/config.yaml`
says what it was and its TensorBoard events hold the curves. A directory with a config and events
but no metrics.json is a run that stopped without finishing (a crash, or one still going): it is
listed as `incomplete`. Writes into DIR:

- `report.md`: one row per run (dataset, model, solver, N_t or rtol, grad, seed -> final and best
  test accuracy, mean gradient error, peak memory, step time, NFE, status), then one row per
  configuration with mean ± std over seeds (runs whose resolved configs differ only in
  trainer.seed), then the plots.
- `accuracy.png` (test accuracy and training loss per epoch, one line per configuration: the mean
  over seeds, shaded ± std), `memory.png` (peak memory vs N_t) and `grad_error.png` (mean
  gradient error vs N_t, log scale); adaptive solvers, which have no N_t, get a panel against rtol.
- `report.json`: the same rows and every plotted series, for scripts and tests.
- a TensorBoard event file (`*.anode-report`) holding a custom-scalars layout: one chart per tag
  with every run as a line. A rerun replaces it.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

LAYOUT_SUFFIX = ".anode-report"
NOT_SWEPT = {"dataset.name", "dataset.path", "model.name", "solver.name", "solver.steps", "solver.rtol", "grad.name", "trainer.seed"}

# TensorBoard CUSTOM SCALARS: one multiline chart per tag (a regex over tags); every run is a line in it.
LAYOUT = {
    "accuracy": {
        "test accuracy": ["Multiline", [r"^test/acc$"]],
        "test loss": ["Multiline", [r"^test/loss$"]],
        "train accuracy": ["Multiline", [r"^train/acc$"]],
        "train loss (per log window)": ["Multiline", [r"^train/loss$"]],
    },
    "gradient error": {
        "relative L2 error vs float64 reference": ["Multiline", [r"^grad_error/rel_l2$"]],
        "cosine vs float64 reference": ["Multiline", [r"^grad_error/cosine$"]],
        "per ODE block": ["Multiline", [r"^grad_error/block_\d+$"]],
    },
    "memory": {
        "peak MiB": ["Multiline", [r"^memory/peak_mib$"]],
        "activation MiB": ["Multiline", [r"^memory/activation_mib$"]],
    },
    "cost": {
        "step ms": ["Multiline", [r"^time/step_ms$"]],
        "epoch s": ["Multiline", [r"^time/epoch_s$"]],
        "images per s": ["Multiline", [r"^throughput/img_s$"]],
        "NFE forward": ["Multiline", [r"^nfe/forward$"]],
        "NFE backward": ["Multiline", [r"^nfe/backward$"]],
        "NFE rejected": ["Multiline", [r"^nfe/rejected$"]],
        "host syncs in solves": ["Multiline", [r"^nfe/host_syncs$"]],
    },
}


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
    """The path relative to root ('.' for root itself), with a Hydra job dir '3_grad=aca,...' cut to '3'."""
    relative = run_dir.relative_to(root)
    match = re.match(r"^(\d+)_", run_dir.name)
    if not match:
        return str(relative)
    return match.group(1) if relative.parent == Path(".") else f"{relative.parent}/{match.group(1)}"


def natural(name: str) -> list:
    """'sweep/10' after 'sweep/9'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def find_runs(root: Path) -> list[Run]:
    """Every run under root: dirs holding metrics.json, and incomplete ones (config + events, no metrics)."""
    root = Path(root)
    dirs = {p.parent for p in root.rglob("metrics.json")}
    for config in root.rglob(".hydra/config.yaml"):
        run_dir = config.parent.parent
        if run_dir not in dirs and any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
            dirs.add(run_dir)
    runs = []
    for run_dir in dirs:
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"status": "incomplete"}
        runs.append(Run(run_dir, run_name(run_dir, root), read_config(run_dir), metrics, read_scalars(run_dir)))

    return sorted(runs, key=lambda run: natural(run.name))


# ------------------------------------------------------------------------------------ aggregation


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys, beyond the table's own columns, that take two or more values across the runs.

    The model's architecture overrides and the dataset file are part of the model and dataset columns.
    A key that some runs lack counts as differing only between runs of the same group option
    (e.g. +model.arch.widths on one of two resnet_tiny runs): an adaptive solver's rtol or the
    adjoint's own options are no news beside the solver and grad columns.
    """
    swept = []
    for key in sorted({k for run in runs for k in run.config if not k.startswith("model.arch.")} - NOT_SWEPT):
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
    """Runs whose resolved configs are equal except for trainer.seed, in first-seen order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = tuple(sorted((k, json.dumps(v, default=str)) for k, v in run.config.items() if k != "trainer.seed"))
        if not run.config:
            key = ("path", str(run.path))  # no config: a configuration of its own
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_std(values) -> tuple[float | None, float | None]:
    values = finite(values)
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt(value, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value * scale, spec)


def fmt_ms(values, spec: str, scale: float = 1.0) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return fmt(mean, spec, scale) + (f" ± {fmt(std, spec, scale)}" if std else "")


# (column, metrics.json key, format, scale)
METRIC_COLUMNS = [
    ("final acc %", "test/acc", ".2f", 100.0),
    ("best acc %", "test/best_acc", ".2f", 100.0),
    ("grad error", "grad_error/rel_l2_mean", ".2e", 1.0),
    ("peak MiB", "memory/peak_mib", ".1f", 1.0),
    ("step ms", "time/step_ms", ".1f", 1.0),
    ("NFE fwd", "nfe/forward", ".0f", 1.0),
    ("NFE bwd", "nfe/backward", ".0f", 1.0),
]


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
    rows = []
    for run in runs:
        row = {"run": run.name, **describe(run)}
        if keys:
            row["other"] = other(run, keys)
        row["seed"] = str(run.get("trainer.seed", "—"))
        row["epochs"] = str(run.metrics.get("epochs", "—"))
        for column, key, spec, scale in METRIC_COLUMNS:
            row[column] = fmt(run.metrics.get(key), spec, scale)
        row["status"] = run.status
        rows.append(row)
    return rows


def configuration_rows(groups: list[list[Run]], keys: list[str]) -> list[dict]:
    rows = []
    for group in groups:
        first = group[0]
        row = describe(first)
        if keys:
            row["other"] = other(first, keys)
        row["seeds"] = ", ".join(str(r.get("trainer.seed", "—")) for r in group) + f" (n={len(group)})"
        for column, key, spec, scale in METRIC_COLUMNS:
            row[column] = fmt_ms((r.metrics.get(key) for r in group), spec, scale)
        diverged = sum(r.metrics.get("status") == "diverged" for r in group)
        incomplete = sum(r.metrics.get("status", "incomplete") == "incomplete" for r in group)
        row["diverged"] = f"{diverged}/{len(group)}" + (f" ({incomplete} incomplete)" if incomplete else "")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    columns = list(rows[0])
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(escape(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- plots


def series_label(run: Run, runs: list[Run], keys: list[str], with_discretization: bool) -> str:
    """The parts of a run's configuration that tell it apart from the others (always its grad)."""
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


def epoch_curve(group: list[Run], tag: str) -> dict | None:
    """Mean (and std over seeds, where there are several) of a per-epoch tag across a group."""
    by_step: dict[int, list[float]] = {}
    for run in group:
        for step, value in run.scalars.get(tag, []):
            by_step.setdefault(step, []).append(value)
    if not by_step:
        return None
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return {"x": steps, "y": [m for m, _ in stats], "std": [s or 0.0 for _, s in stats], "n": [len(by_step[s]) for s in steps]}


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, panels: dict, titles: dict) -> None:
    """One axis per panel; each series a line with a ± std band."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (tag, series) in zip(axes[0], panels.items()):
        for label, s in series.items():
            (line,) = ax.plot(s["x"], s["y"], marker="o" if len(s["x"]) < 30 else None, markersize=3, label=label)
            if any(s["std"]):
                low = [y - d for y, d in zip(s["y"], s["std"])]
                high = [y + d for y, d in zip(s["y"], s["std"])]
                ax.fill_between(s["x"], low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(titles[tag][0])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(titles[tag][1])
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no run logged this", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_versus(path: Path, panels: dict, ylabel: str, title: str, logy: bool) -> None:
    """The metric against N_t (log2 axis) and, for adaptive solvers, against rtol (log axis)."""
    plt = _pyplot()
    names = list(panels) or ["N_t"]
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        series = panels.get(name, {})
        for label, s in series.items():
            if any(s["std"]):
                ax.errorbar(s["x"], s["y"], yerr=s["std"], marker="o", capsize=3, label=label)
            else:
                ax.plot(s["x"], s["y"], marker="o", label=label)
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
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no run measured this", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- writing


def write_layout(root: Path) -> None:
    """The custom-scalars layout, in an event file of its own in root (an earlier one is replaced)."""
    from torch.utils.tensorboard import SummaryWriter

    for old in root.glob(f"events.out.tfevents.*{LAYOUT_SUFFIX}"):
        old.unlink()
    writer = SummaryWriter(str(root), filename_suffix=LAYOUT_SUFFIX)
    writer.add_custom_scalars(LAYOUT)
    writer.close()


CURVES = {"test/acc": ("test accuracy", "accuracy"), "train/epoch_loss": ("training loss", "cross-entropy")}


def report(root: Path) -> dict:
    """Read every run under root, write report.md, report.json, the plots and the layout; return report.json's content."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run under {root}: a run directory holds metrics.json (or .hydra/config.yaml and events)")
    keys = swept_keys(runs)
    groups = group_by_seed(runs)
    rows, config_rows = run_rows(runs, keys), configuration_rows(groups, keys)

    curves = {}
    for tag in CURVES:
        curves[tag] = {}
        for group in groups:
            curve = epoch_curve(group, tag)
            if curve:
                curves[tag][series_label(group[0], runs, keys, with_discretization=True)] = curve
    memory = versus_discretization(groups, runs, keys, "memory/peak_mib")
    error = versus_discretization(groups, runs, keys, "grad_error/rel_l2_mean")
    plot_curves(root / "accuracy.png", curves, CURVES)
    plot_versus(root / "memory.png", memory, "peak memory (MiB)", "peak memory per training step", logy=False)
    plot_versus(root / "grad_error.png", error, "relative L2 gradient error (mean)", "gradient error vs float64 reference",
                logy=True)
    write_layout(root)

    devices = sorted({str(r.metrics.get("device")) for r in runs if r.metrics.get("device")})
    references = sorted({f"{r.get('grad_check.reference')}" for r in runs if r.get("grad_check.reference")})
    diverged = sum(r.metrics.get("status") == "diverged" for r in runs)
    text = [
        f"# Report: {root.name or root}",
        "",
        f"{len(runs)} runs in {len(groups)} configurations ({diverged} diverged), device {', '.join(devices) or '?'}. "
        f"Regenerate with `anode-report {root}`; open the dashboards with `tensorboard --logdir {root}` "
        "(CUSTOM SCALARS: every run as a line in one chart per tag).",
        "",
        "Accuracy in %; grad error: mean relative L2 error of the gradient against float64 `direct` "
        f"(grad_check.reference = {', '.join(references) or '?'}) over the run's probes; peak MiB: the largest "
        "training-step peak (CUDA allocator, or on the CPU the profiler's allocations at probe steps plus "
        "parameters, gradients and optimizer state); step ms: mean over log windows; NFE: f evaluations of the "
        "last training step summed over ODE blocks. `direct (discrete ResNet)` is euler N_t = 1 with `direct`: "
        "exactly the discrete residual network." + (f" Other settings that differ between runs: {', '.join(keys)}." if keys else ""),
        "",
        "## Runs",
        "",
        markdown_table(rows),
        "## Per configuration (mean ± std over seeds)",
        "",
        "Runs whose resolved configs differ only in trainer.seed; ± is the sample standard deviation (n >= 2); "
        "diverged runs are left out of the accuracy means.",
        "",
        markdown_table(config_rows),
        "## Plots",
        "",
        "![test accuracy per epoch](accuracy.png)",
        "",
        "![peak memory vs N_t](memory.png)",
        "",
        "![gradient error vs N_t](grad_error.png)",
        "",
        "## Run directories",
        "",
        *[f"- {run.name}: `{run.path.relative_to(root)}`" for run in runs],
        "",
    ]
    (root / "report.md").write_text("\n".join(text))
    content = {
        "runs": rows,
        "configurations": config_rows,
        "plots": {"accuracy.png": curves, "memory.png": memory, "grad_error.png": error},
        "layout": LAYOUT,
    }
    (root / "report.json").write_text(json.dumps(content, indent=2, default=str))
    return content


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="anode-report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run directory or a multirun (sweep) directory")
    args = parser.parse_args(argv)
    try:
        content = report(args.dir)
    except FileNotFoundError as error:
        sys.exit(f"anode-report: {error}")
    print(f"anode-report: {len(content['runs'])} runs -> {args.dir / 'report.md'}, accuracy.png, memory.png, grad_error.png")


if __name__ == "__main__":
    main()
