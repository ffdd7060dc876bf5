"""Test accuracy of finished runs with BatchNorm as anode-train evaluates it (eval mode: the running
statistics) and with each test batch's own statistics (train mode, no weight changes, running
statistics restored), from each run's newest checkpoint.

Inside an ODE block, f's BatchNorm layers see every stage of every step (N_t = 2: z and
z + h·f(z) ...), and their running statistics average over all of them; in eval mode each
evaluation is normalized with that average. The discrete network (N_t = 1) evaluates f once, so
the two modes agree there up to batch noise. A large gap between the modes says the running
statistics, not the weights, cost the accuracy.

    python scripts/eval_bn_modes.py RUN_DIR [RUN_DIR ...]      # a markdown table on stdout
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from anode_bench.build import PRECISIONS, load_data, make_loader, make_model
from anode_bench.checkpoint import CheckpointError, load_checkpoint
from anode_bench.data import channel_stats


def accuracy(net, loader, batch_statistics: bool) -> float:
    net = copy.deepcopy(net).train(batch_statistics)  # a copy: batch statistics would move the running ones
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((net(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=500, help="test batch (the batch statistics' sample)")
    args = parser.parse_args()
    print("| run | grad | solver | N_t | test acc % (running statistics) | test acc % (batch statistics) |")
    print("|---|---|---|---|---|---|")
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
        train_split, test_split = load_data(cfg)
        loader = make_loader(test_split, channel_stats(train_split), args.batch, torch.device("cpu"), precision, train=False)
        print(f"| {run.name} | {cfg.grad.name} | {cfg.solver.name} | {cfg.solver.get('steps')} | "
              f"{100 * accuracy(net, loader, False):.2f} | {100 * accuracy(net, loader, True):.2f} |", flush=True)


if __name__ == "__main__":
    main()
