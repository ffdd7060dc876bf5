"""The report's figures (matplotlib, imported only when plotting): accuracy and loss per epoch with
a seed band, memory and gradient error against N_t or rtol, and the probe's readings over training."""
from __future__ import annotations

import math
from pathlib import Path

from .runs import Run
from .tables import mean_std, number, series_label


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
