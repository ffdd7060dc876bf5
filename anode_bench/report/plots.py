"""The report's figures (matplotlib, imported only when plotting): accuracy and loss per epoch with
a seed band, memory and gradient error against N_t or rtol, and the probe's readings over training."""
from __future__ import annotations

import math
from pathlib import Path

from .runs import Run
from .tables import finite, mean_std, number, series_label


def epoch_curve(group: list[Run], tag: str, scale: float = 1.0) -> dict | None:
    """Per step of a tag across a group's seeds: mean, sample std (0 below 2 seeds), min, max and how many seeds
    gave the point (`n`, out of `seeds` = len(group): fewer where a run stopped early or read nan there).
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
            "n": [len(by_step[s]) for s in steps], "seeds": len(group)}


def unique_label(taken, label: str, group: list[Run]) -> str:
    """label, or label with the group's first run name where another configuration already has it (two groups
    that differ only in something the label leaves out must not draw over each other)."""
    return label if label not in taken else f"{label} [{group[0].name}]"


def versus_discretization(groups: list[list[Run]], runs: list[Run], keys: list[str], metric: str) -> dict:
    """{"N_t": {label: {x, y, std, min, max, n}}, "rtol": {...}}: the metric's mean over seeds against N_t or rtol,
    with the sample std, the lowest and highest seed, and how many seeds gave it; a run that trained under more
    than one configuration (Run.mixed) counts in none."""
    panels: dict[str, dict] = {"N_t": {}, "rtol": {}}
    for group in groups:
        first = group[0]
        values = finite(r.metrics.get(metric) for r in group if not r.mixed)
        mean, std = mean_std(values)
        x = first.get("solver.rtol") if first.adaptive else first.get("solver.steps")
        if mean is None or x is None:
            continue
        panel = panels["rtol" if first.adaptive else "N_t"]
        label = series_label(first, runs, keys, with_discretization=False)
        if label in panel and x in panel[label]["x"]:  # a second configuration with this label at this x
            label = unique_label(panel, label, group)
        series = panel.setdefault(label, {"x": [], "y": [], "std": [], "min": [], "max": [], "n": []})
        for key, value in (("x", x), ("y", mean), ("std", std or 0.0), ("min", min(values)), ("max", max(values)),
                           ("n", len(values))):
            series[key].append(value)
    for panel in panels.values():
        for series in panel.values():
            order = sorted(range(len(series["x"])), key=series["x"].__getitem__)
            for k in series:
                series[k] = [series[k][i] for i in order]
    return {name: panel for name, panel in panels.items() if panel}


def identical_series(panels: dict) -> list[str]:
    """'<panel>: the line of A lies under B's (the same value at every point)' for every series whose points
    equal an earlier one's, which a plot cannot show."""
    notes = []
    for panel, series in panels.items():
        seen: dict[tuple, str] = {}
        for label, s in series.items():
            points = (tuple(s["x"]), tuple(s["y"]))
            if points in seen:
                notes.append(f"{panel}: the line of `{label}` lies under `{seen[points]}`'s (the same value at every point)")
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


def drawable(values, log: bool) -> list[float]:
    """The values, with nan for those a log axis cannot draw (<= 0: a float64 run's floor, an exact 0 error)."""
    return [v if not log or v > 0 else math.nan for v in values]


def note_undrawn(ax, count: int) -> None:
    """Say on the panel how many points a log axis left out, instead of letting them vanish."""
    if count:
        ax.text(0.01, 0.01, f"{count} point{'s' if count > 1 else ''} at 0 not drawn (log axis)", transform=ax.transAxes,
                fontsize=7, ha="left", va="bottom")


def plot_curves(path: Path, panels: dict, titles: dict, xlabel: str = "epoch") -> None:
    """One axis per panel; each series its mean over seeds with a min-max band, and a hollow marker on every point
    fewer seeds gave than the series has (`n` < `seeds`: a run stopped early there, or read nan); titles: tag ->
    (title, ylabel, log, scale). A log axis leaves out values <= 0 and says how many on the panel."""
    labels = [label for series in panels.values() for label in series]
    plt, fig, axes = figure(len(panels), len(set(labels)))
    style = styles(labels)
    for ax, (tag, series) in zip(axes, panels.items()):
        title, ylabel, log, _ = titles[tag]
        log = log and any(y > 0 for s in series.values() for y in s["y"])
        undrawn = 0
        for label, s in series.items():
            look = style[label]
            y = drawable(s["y"], log)
            undrawn += sum(math.isnan(v) for v in y)
            ax.plot(s["x"], y, markersize=4, markevery=max(1, len(s["x"]) // 15), label=label, **look)
            partial = [i for i, n in enumerate(s["n"]) if n < s.get("seeds", n)]
            if partial:
                ax.plot([s["x"][i] for i in partial], [y[i] for i in partial], linestyle="none", marker=look["marker"],
                        markersize=5, markerfacecolor="white", markeredgecolor=look["color"])
            if any(lo != hi for lo, hi in zip(s["min"], s["max"])):
                ax.fill_between(s["x"], drawable(s["min"], log), drawable(s["max"], log), color=look["color"],
                                alpha=0.15, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if xlabel == "epoch":
            integer_epochs(ax, [x for s in series.values() for x in s["x"]])
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        note_undrawn(ax, undrawn)
        ax.grid(alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no run logged this", ha="center", va="center", transform=ax.transAxes)
    finish(plt, fig, axes, path)


def plot_versus(path: Path, panels: dict, ylabel: str, title: str, logy: bool, dashed: dict | None = None) -> None:
    """The metric against N_t (log2 axis) and, for adaptive solvers, against rtol (log axis): each series' mean over
    seeds, its bar from the lowest to the highest seed; a linear y axis starts at 0, a log one leaves out values
    <= 0 and says how many. dashed: a second metric per panel and label (the precision floor beside the error)."""
    names = list(panels) or ["N_t"]
    labels = [label for series in panels.values() for label in series]
    plt, fig, axes = figure(len(names), 2 * len(set(labels)) if dashed else len(set(labels)))
    style = styles(labels)
    for ax, name in zip(axes, names):
        series = panels.get(name, {})
        undrawn = 0
        for label, s in series.items():
            look = dict(style[label])
            y = drawable(s["y"], logy)
            undrawn += sum(math.isnan(v) for v in y)
            if any(lo != hi for lo, hi in zip(s["min"], s["max"])):
                spread = [[m - lo for m, lo in zip(s["y"], s["min"])], [hi - m for m, hi in zip(s["y"], s["max"])]]
                ax.errorbar(s["x"], y, yerr=spread, capsize=3, label=label, **look)
            else:
                ax.plot(s["x"], y, label=label, **look)
            extra = (dashed or {}).get(name, {}).get(label)
            if extra:
                floor = drawable(extra["y"], logy)
                undrawn += sum(math.isnan(v) for v in floor)
                ax.plot(extra["x"], floor, label=f"{label}: floor", color=look["color"], linestyle=(0, (1, 1)),
                        marker="x", linewidth=1)
        note_undrawn(ax, undrawn)
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
