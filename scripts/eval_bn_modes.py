"""Test accuracy of finished runs with BatchNorm as anode-train evaluates it (eval mode: the running
statistics) and with each test batch's own statistics (train mode, no weight changes, running
statistics restored), from each run's newest checkpoint.

Inside an ODE block, f's BatchNorm layers see every stage of every step (N_t = 2: z and
z + h·f(z) ...), and their running statistics average over all of them; in eval mode each
evaluation is normalized with that average. The discrete network (N_t = 1) evaluates f once, so
the two modes agree there up to batch noise. A large gap between the modes says the running
statistics, not the weights, cost the accuracy.

    python scripts/eval_bn_modes.py RUN_DIR [RUN_DIR ...]      # markdown tables on stdout

The first table has a row per run. Where the runs hold the baseline (`--baseline`: the discrete
network, grad direct with N_t = 1, or the configuration of a named grad) and other configurations,
a second gives each configuration's mean ± std over seeds in both modes and its difference from the
baseline with anode-report's two 95% intervals: Welch's over seeds, and the paired one over the
seeds both ran (a seed fixes initial weights and batch order).

    python scripts/eval_bn_modes.py --baseline anode RUN_DIR ...  # differences from ANODE's runs
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from anode_bench.build import PRECISIONS, load_data, make_loader, make_model
from anode_bench.checkpoint import CheckpointError, load_checkpoint
from anode_bench.data import channel_stats
from anode_bench.report import find_runs
from anode_bench.stats import Difference, paired, welch

MODES = ("running statistics", "batch statistics")


def accuracy(net, loader, batch_statistics: bool) -> float:
    net = copy.deepcopy(net).train(batch_statistics)  # a copy: batch statistics would move the running ones
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((net(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def interval(difference: Difference) -> str:
    if difference.low is None:
        return f"{difference.diff:+.2f} (needs 2 seeds for an interval)"
    return f"{difference.diff:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]"


def summary(rows: list[dict], baseline: str = "discrete") -> list[str]:
    """Markdown lines comparing each configuration with the baseline, mode by mode (module
    docstring; baseline: "discrete" or a grad name). rows, one per run: {"group": the run's
    configuration as anode-report groups seeds (resolved config less the seed and the settings that
    cannot change a result), "config": (grad, solver, N_t or rtol) to show, "seed", "running
    statistics", "batch statistics"}, accuracies in %. No lines for a single configuration."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    if len(groups) < 2:
        return []
    for group in groups.values():
        seeds = [r["seed"] for r in group if r["seed"] is not None]
        if len(seeds) != len(set(seeds)):
            return ["", f"(a seed appears twice in {group[0]['config']}: pass each run once; no comparison)"]
    discrete = baseline == "discrete"
    named = "the discrete network (grad direct, euler N_t = 1)" if discrete else f"grad {baseline}"
    chosen = [key for key, group in groups.items()
              if (group[0]["config"] == ("direct", "euler", 1) if discrete else group[0]["config"][0] == baseline)]
    if len(chosen) != 1:
        grads = sorted({group[0]["config"][0] for group in groups.values()})
        return ["", f"({named} is {'more than one configuration' if chosen else 'no configuration'} of these runs; "
                    f"--baseline is discrete or one of: {', '.join(grads)}; no comparison)"]
    base = groups[chosen[0]]
    lines = ["", f"Against {named}, in points: the difference of the means with",
             "its 95% Welch interval over seeds, and the paired one over the seeds both ran.", "",
             "| grad | solver | N_t / rtol | seeds | mode | mean ± std % | baseline mean % | difference [Welch 95%] | "
             "paired [95%] (pairs) |", "|---|---|---|---|---|---|---|---|---|"]
    for key, group in groups.items():
        if key == chosen[0]:
            continue
        for mode in MODES:
            values, base_values = [r[mode] for r in group], [r[mode] for r in base]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            by_seed = {r["seed"]: r[mode] for r in base if r["seed"] is not None}
            pairs = [(r[mode], by_seed[r["seed"]]) for r in group if r["seed"] in by_seed]
            same = f"{interval(paired(pairs))} ({len(pairs)})" if pairs else "—"
            lines.append(f"| {' | '.join(map(str, group[0]['config']))} | {len(values)} | {mode} | "
                         f"{statistics.fmean(values):.2f}{spread} | {statistics.fmean(base_values):.2f} | "
                         f"{interval(welch(values, base_values))} | {same} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=500, help="test batch (the batch statistics' sample)")
    parser.add_argument("--baseline", default="discrete", help="discrete (grad direct, euler N_t = 1) or a grad name")
    args = parser.parse_args()
    print("| run | grad | solver | N_t / rtol | test acc % (running statistics) | test acc % (batch statistics) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for run in args.runs:
        record = run / ".hydra" / "config.yaml"
        if not record.is_file():
            sys.exit(f"eval_bn_modes.py: {run} has no .hydra/config.yaml; pass anode-train run directories")
        cfg = OmegaConf.load(record)
        if "grad_check" in cfg:  # a run from before the probe group's rename
            cfg.probe = cfg.pop("grad_check")
        try:
            state, _ = load_checkpoint(run, map_location="cpu")
        except CheckpointError as error:
            sys.exit(f"eval_bn_modes.py: {error}")
        precision = PRECISIONS[cfg.trainer.precision]
        net = make_model(cfg, torch.device("cpu")).to(precision.dtype)
        net.load_state_dict(state["model"])
        [recorded] = find_runs(run)  # the run as anode-report reads it: its configuration key, and the seed it ran with
        train_split, test_split = load_data(cfg, recorded.seed)  # synthetic images come from it
        loader = make_loader(test_split, channel_stats(train_split), args.batch, torch.device("cpu"), precision, train=False)
        discretization = cfg.solver.get("steps") or cfg.solver.get("rtol")
        row = {"group": recorded.result_key(), "config": (cfg.grad.name, cfg.solver.name, discretization),
               "seed": recorded.seed, MODES[0]: 100 * accuracy(net, loader, False),
               MODES[1]: 100 * accuracy(net, loader, True)}
        rows.append(row)
        print(f"| {run.name} | {' | '.join(map(str, row['config']))} | {row[MODES[0]]:.2f} | {row[MODES[1]]:.2f} |", flush=True)
    for line in summary(rows, args.baseline):
        print(line)


if __name__ == "__main__":
    main()
