"""How many epochs of the full training set fit in one GPU-hour, per run, from short timing runs.

    anode-train -m experiment=aca_cifar10 dataset=synthetic dataset.train_size=6400 trainer.epochs=2 \
        trainer.log_every=10 hydra.sweep.dir=DIR               # 100 steps of each swept method
    python scripts/gpu_hour.py DIR                             # CIFAR-10/100: 50,000 training images

For each run under DIR (anode_bench.report.find_runs): the median of its logged `time/step_ms`
windows after the first (the first holds cuDNN's autotuning and any compilation; probe steps are
excluded by the trainer already), the steps of one full epoch, train_images // batch_size (the
trainer drops the last partial batch),
and from those the training epochs per hour. Not included: evaluation (10,000 test images, forward
only: roughly a tenth of an epoch's training work) and the gradient probe. Adaptive solvers take
more steps as the network trains, so their figure is an upper bound; budget configs should keep a
margin below it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from anode_bench.report import find_runs


def epochs_per_hour(run, train_images: int) -> dict | None:
    windows = [value for _, value in run.scalars.get("time/step_ms", [])]
    if len(windows) < 2:
        return None
    step_ms = statistics.median(windows[1:])
    steps = train_images // run.get("trainer.batch_size")  # the trainer drops the last partial batch
    return {"step_ms": step_ms, "epoch_min": step_ms * steps / 6e4, "epochs_per_hour": 3.6e6 / (step_ms * steps)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run or multirun directory")
    parser.add_argument("--train-images", type=int, default=50_000, help="images in one full epoch (CIFAR: 50,000)")
    args = parser.parse_args(argv)
    runs = find_runs(args.dir)
    if not runs:
        sys.exit(f"gpu_hour: no runs under {args.dir} (a run dir holds metrics.json or .hydra/config.yaml)")
    print(f"| run | model | solver | grad | batch | device | step ms | NFE fwd / bwd | peak MiB "
          f"| min per epoch of {args.train_images:,} | epochs per hour |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        timing = epochs_per_hour(run, args.train_images)
        if timing is None:
            print(f"| {run.name} | too few logged windows (need 2: lower trainer.log_every) |" + " |" * 9)
            continue
        nfe = f"{run.metrics.get('nfe/forward', '?')} / {run.metrics.get('nfe/backward', '?')}"
        peak = run.metrics.get("memory/peak_mib")
        print(f"| {run.name} | {run.get('model.name')} | {run.get('solver.name')} {run.discretization} | {run.grad} "
              f"| {run.get('trainer.batch_size')} | {run.metrics.get('device', '?')} | {timing['step_ms']:.1f} | {nfe} "
              f"| {'?' if peak is None else f'{peak:.0f}'} | {timing['epoch_min']:.1f} | {timing['epochs_per_hour']:.1f} |")


if __name__ == "__main__":
    main()
