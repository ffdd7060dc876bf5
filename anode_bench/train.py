"""anode-train: train an ODE network on CIFAR with one gradient method; log what it costs and how
right its gradient is (the tags of anode_bench.tags) to TensorBoard in the Hydra run directory.

    anode-train model=resnet grad=aca
    anode-train -m grad=direct,adjoint,anode,aca solver.steps=1,2,4
    anode-train experiment=smoke                     # offline, synthetic data, 2-core CPU
    torchrun --standalone --nproc_per_node=4 -m anode_bench.train hydra.run.dir=outputs/ddp/run1   # DDP

`main` is the command line (validation and refusals); `train` assembles the run from the config
(anode_bench.build), restores or starts its state (anode_bench.run_state) and hands it to the
Trainer (anode_bench.trainer).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch.utils.tensorboard import SummaryWriter

from .build import (
    PRECISIONS,
    load_data_once,
    make_loader,
    make_model,
    make_optimizer,
    make_scheduler,
    pick_device,
    with_layout_and_compile,
)
from .checkpoint import CheckpointError, checkpoint_dir
from .config import CONFIG_DIR, ConfigComposed, ConfigError, check_options, job_error_control, validate
from .data import DataError, channel_stats
from .distributed import Distributed, from_environment, shutdown, with_sync_batchnorm
from .metrics import set_tf32
from .ode import SCHEMES
from .results import describe, metrics_json, run_metrics, summary, write_results
from .run_state import Progress, StopRequest, invocation_record, restore_state, resume_command, save_record, save_state
from .trainer import Stopped, Trainer

log = logging.getLogger(__name__)


class _NoWriter:
    """Stands in for the SummaryWriter on ranks other than 0, which log nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def loader_generator(seed: int | None, device: torch.device, context: Distributed) -> torch.Generator:
    """The training loader's generator, seeded with `seed`. Every rank must draw the same permutation
    and crops (each trains on its slice of every batch), so a random seed (None) is rank 0's."""
    return torch.Generator(device).manual_seed(seed if seed is not None else context.broadcast(torch.seed()))


def train(cfg: DictConfig, run_dir: Path, device: torch.device | None = None, context: Distributed = Distributed(),  # noqa: B008 (frozen)
          record: dict[str, str] | None = None) -> dict:
    """Train as configured, writing TensorBoard events and metrics.json into run_dir. Returns the metrics.
    `record` (invocation_record) goes to run_dir/.hydra once data and any checkpoint have loaded, so a
    run refused by a DataError or CheckpointError writes nothing.

    Under torchrun (`context` from distributed.from_environment) every rank trains on its slice of
    each batch and only rank 0 writes the record, events, checkpoints, metrics.json and the progress bar.
    """
    trainer = cfg.trainer
    wall_start = time.perf_counter()
    device = device or pick_device(trainer.device)
    precision = PRECISIONS[trainer.precision]
    if trainer.threads is not None:
        torch.set_num_threads(trainer.threads)
    set_tf32(trainer.tf32)  # the run's float32 convolutions and matmuls, and the probe's copies of them
    if trainer.seed is not None:
        torch.manual_seed(trainer.seed)
    generator = loader_generator(trainer.seed, device, context)

    train_split, test_split = load_data_once(cfg, context)
    shard, stats = (context.rank, context.world_size), channel_stats(train_split)  # stats: one pass over the images
    train_loader = make_loader(train_split, stats, trainer.batch_size, device, precision, train=True,
                               generator=generator, shard=shard)
    test_loader = make_loader(test_split, stats, trainer.eval_batch_size, device, precision, train=False, shard=shard)
    steps_per_epoch = min(len(train_loader), trainer.max_steps_per_epoch or len(train_loader))
    if steps_per_epoch == 0:  # checked before anything is written into run_dir
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_split.labels)} training images; "
                          f"choose trainer.batch_size <= {len(train_split.labels)} or more images (dataset.train_size)")
    probe = next(iter(make_loader(train_split, stats, cfg.probe.batch_size, device, precision, train=False)))

    net = make_model(cfg, device).to(precision.dtype)  # what evaluation, the probe and checkpoints use
    if context.active and trainer.sync_bn:
        net = with_sync_batchnorm(net, device)
    memory_format = torch.channels_last if trainer.channels_last else torch.contiguous_format  # weights and batches
    net = with_layout_and_compile(net, memory_format, trainer.compile)
    model = net  # what a training step runs: under torchrun the DDP wrapper, which averages gradients
    if context.active:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(net, trainer)
    scheduler = make_scheduler(optimizer, trainer)
    progress = Progress()
    if trainer.resume:
        source = run_dir if trainer.resume is True else Path(trainer.resume)
        progress, path = restore_state(source, cfg, net, optimizer, scheduler, device)
        log.info(f"resuming from {path}: epoch {progress.epoch + 1}, step {progress.step}")
    # purge_step drops events a killed run logged after its last checkpoint (or, restarted by resume=auto, at all)
    purge_step = progress.step if any(run_dir.glob("events.out.tfevents.*")) else None
    if record is not None and context.is_main:
        save_record(run_dir, record)
    writer = SummaryWriter(str(run_dir), purge_step=purge_step) if context.is_main else _NoWriter()
    if progress.last_logged.get("step") == progress.step:  # a log point at the checkpoint's step, which the purge drops
        for tag, value in progress.last_logged["scalars"].items():
            writer.add_scalar(tag, value, progress.step)
    wall_before = progress.wall_s
    if context.is_main:
        log.info(f"run dir {run_dir}: {describe(cfg)}, {trainer.epochs} epoch{'s' * (trainer.epochs != 1)} "
                 f"of {steps_per_epoch} steps on {device}")
    config_text = record["config.yaml"] if record is not None else OmegaConf.to_yaml(cfg)  # as composed

    def checkpoint():
        if not context.is_main:
            return None
        progress.wall_s = wall_before + time.perf_counter() - wall_start
        return save_state(run_dir, net, optimizer, scheduler, progress, device, trainer.keep_checkpoints, config_text)

    loop = Trainer(net, model, optimizer, scheduler, train_loader, test_loader, steps_per_epoch=steps_per_epoch,
                   epochs=trainer.epochs, log_every=trainer.log_every, precision=precision, memory_format=memory_format,
                   probe=probe, probe_config=cfg.probe, writer=writer, progress=progress, checkpoint=checkpoint,
                   context=context, device=device, generator=generator)
    try:
        with StopRequest() as stop:
            failure = loop.fit(stop)
    except Stopped as stopped:
        writer.close()
        if context.is_main:
            log.warning(f"signal {stopped.signum}: checkpoint {stopped.path} written; continue with trainer.resume=true: "
                        f"{resume_command(run_dir)}")
        raise SystemExit(128 + stopped.signum) from None
    metrics = run_metrics(cfg, progress, failure, wall_before + time.perf_counter() - wall_start, device)
    if context.is_main:  # the other ranks have no event file to write into
        write_results(writer, cfg, metrics, context.world_size)
        (run_dir / "metrics.json").write_text(metrics_json(metrics))
        log.info(summary(metrics, run_dir))
    writer.close()
    return metrics


CONFIG_EXIT = 2  # every config error: a bad option, key or value, Hydra's own composition errors included


def main() -> None:
    """The console script: options no configs/<group>/ holds are refused in one line (with a "did
    you mean") before Hydra composes anything; then Hydra runs the job(s). Any config error exits
    CONFIG_EXIT, Hydra's own (which it reports with exit 1) too."""
    try:
        check_options(sys.argv[1:], CONFIG_DIR)
    except ConfigError as error:
        print(f"anode-train: {error}", file=sys.stderr)
        raise SystemExit(CONFIG_EXIT) from None
    try:
        hydra_main()
    except SystemExit as exit:
        raise SystemExit(CONFIG_EXIT if exit.code == 1 and not ConfigComposed.composed else exit.code) from None
    except Exception:  # HYDRA_FULL_ERROR=1: Hydra re-raises instead of exiting 1
        if ConfigComposed.composed:
            raise
        import traceback

        traceback.print_exc()
        raise SystemExit(CONFIG_EXIT) from None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Validate, refuse to overwrite, train; every refusal is one line on stderr and exit code 2, and
    leaves the run dir as it was (a run dir this refusal would leave empty is removed)."""
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    record = invocation_record(cfg)  # before trainer.resume=auto is resolved below
    context = Distributed()
    try:
        validate(cfg)
        job_error_control(list(hydra.core.hydra_config.HydraConfig.get().overrides.task), cfg.solver.name)
        context, device = from_environment(pick_device(cfg.trainer.device))
        if context.active:
            check_distributed(cfg, run_dir, context)
        auto = cfg.trainer.resume == "auto"
        if auto:
            finished = run_dir / "metrics.json"
            if finished.exists():  # a requeued job whose run had already ended: leave it as it is, train.log too
                if context.is_main:
                    print(f"anode-train: {run_dir} already holds a finished run; trainer.resume=auto leaves it untouched",
                          file=sys.stderr)
                return json.loads(finished.read_text())["test/acc"]
            cfg.trainer.resume = any(checkpoint_dir(run_dir).glob("step_*.pt"))  # else start afresh, here
        earlier = [p.name for p in run_dir.iterdir() if p.name == "metrics.json" or p.name.startswith("events.out.tfevents")]
        if context.any(bool(earlier) and not cfg.trainer.resume and not auto):
            raise ConfigError(f"{run_dir} already holds a run ({', '.join(sorted(earlier))}); nothing was overwritten: "
                              f"choose another hydra.run.dir, or continue it with trainer.resume=true")
        context.barrier()  # every rank has looked before rank 0 writes
        metrics = train(cfg, run_dir, device, context, record)
    except (ConfigError, DataError, CheckpointError) as error:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
            print(f"anode-train: {error}", file=sys.stderr)
            remove_if_empty(run_dir)
        raise SystemExit(CONFIG_EXIT) from None
    finally:
        shutdown(context)
    return metrics["test/acc"]


class SweepNames(Callback):
    """Hydra callback (configs/train.yaml, hydra.callbacks) for sweeps. At the start it names the
    jobs by what the sweep varies: every task override that takes one value (`experiment=smoke`,
    `trainer.epochs=1`) joins hydra.job.config.override_dirname.exclude_keys, so job folders read
    `0_grad=direct`. (The jobs' configs are composed from the sweep's hydra overrides, so one
    more override there reaches every job, under any launcher.) At the end it prints the sweep dir
    and the anode-report command for it."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        fixed = [o.key_or_group for o in overrides if not o.is_sweep_override()]
        excluded = list(dict.fromkeys([*config.hydra.job.config.override_dirname.exclude_keys, *fixed]))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        statuses = [json.loads(p.read_text()).get("status") for p in sorted(sweep_dir.glob("*/metrics.json"))]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) or "no finished job"
        print(f"anode-train: sweep of {len(statuses)} runs ({counts}) in {sweep_dir}\n"
              f"compare them with: anode-report {shlex.quote(str(sweep_dir))}", file=sys.stderr)


def remove_if_empty(run_dir: Path) -> None:
    """Drop the run dir Hydra made for a run that was then refused, if nothing is in it (the
    configs delay train.log's creation to its first line, so a refused run leaves none)."""
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only an empty directory goes


def check_distributed(cfg: DictConfig, run_dir: Path, context: Distributed) -> None:
    """What torchrun needs beyond a single-process config; every rank raises the same ConfigError.
    Ranks other than 0 drop Hydra's log file handler (rank 0 alone writes <run dir>/train.log)."""
    trainer = cfg.trainer
    if trainer.batch_size % context.world_size:
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} must be divisible by the {context.world_size} "
                          f"torchrun processes (each trains on batch_size / processes images)")
    if context.any(str(run_dir) != context.broadcast(str(run_dir))):
        raise ConfigError("the torchrun processes got different run directories; pass one with hydra.run.dir=DIR")
    if trainer.sync_bn and SCHEMES[cfg.solver.name].adaptive:
        raise ConfigError(f"trainer.sync_bn=true cannot run the adaptive solver {cfg.solver.name}: each rank picks its "
                          f"own steps, so their BatchNorm all_reduces would not pair up; use a fixed-step solver or sync_bn=false")
    if not context.is_main:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
