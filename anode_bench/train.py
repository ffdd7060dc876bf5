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

import json
import logging
import math
import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from . import tags
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
from .config import CONFIG_DIR, ConfigError, validate
from .data import DataError
from .distributed import Distributed, from_environment, shutdown, with_sync_batchnorm
from .metrics import set_tf32, tf32_state
from .ode import SCHEMES
from .run_state import Progress, StopRequest, git_revision, invocation_record, restore_state, save_record, save_state
from .trainer import Stopped, Trainer

log = logging.getLogger(__name__)


class _NoWriter:
    """Stands in for the SummaryWriter on ranks other than 0, which log nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def train(cfg: DictConfig, run_dir: Path, device: torch.device | None = None, context: Distributed = Distributed(),
          record: dict[str, str] | None = None) -> dict:
    """Train as configured, writing TensorBoard events and metrics.json into run_dir. Returns the metrics.
    `record` (invocation_record) goes to run_dir/.hydra once data and any checkpoint have loaded, so a
    run refused by a DataError or CheckpointError writes nothing.

    Under torchrun (`context` from distributed.from_environment) every rank trains on its slice of
    each batch and only rank 0 writes the record, events, checkpoints, metrics.json and the progress bar.
    """
    trainer = cfg.trainer
    device = device or pick_device(trainer.device)
    precision = PRECISIONS[trainer.precision]
    if trainer.threads is not None:
        torch.set_num_threads(trainer.threads)
    set_tf32(trainer.tf32)  # the run's float32 convolutions and matmuls, and the probe's copies of them
    if trainer.seed is not None:
        torch.manual_seed(trainer.seed)
    generator = torch.Generator(device).manual_seed(trainer.seed if trainer.seed is not None else torch.seed())

    train_split, test_split = load_data_once(cfg, context)
    shard = (context.rank, context.world_size)
    train_loader = make_loader(train_split, train_split, trainer.batch_size, device, precision, train=True,
                               generator=generator, shard=shard)
    test_loader = make_loader(test_split, train_split, trainer.eval_batch_size, device, precision, train=False, shard=shard)
    steps_per_epoch = min(len(train_loader), trainer.max_steps_per_epoch or len(train_loader))
    if steps_per_epoch == 0:  # checked before anything is written into run_dir
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_split.labels)} training images; "
                          f"choose trainer.batch_size <= {len(train_split.labels)} or more images (dataset.train_size)")
    probe = next(iter(make_loader(train_split, train_split, cfg.grad_check.batch_size, device, precision, train=False)))

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
        progress, path = restore_state(source, net, optimizer, scheduler, device)
        log.info(f"resuming from {path}: epoch {progress.epoch + 1}, step {progress.step}")
    # purge_step drops events a killed run logged after its last checkpoint (or, restarted by resume=auto, at all)
    purge_step = progress.step if any(run_dir.glob("events.out.tfevents.*")) else None
    if record is not None and context.is_main:
        save_record(run_dir, record)
    writer = SummaryWriter(str(run_dir), purge_step=purge_step) if context.is_main else _NoWriter()

    def checkpoint():
        if context.is_main:
            return save_state(run_dir, net, optimizer, scheduler, progress, device, trainer.keep_checkpoints)
        return None

    loop = Trainer(net, model, optimizer, scheduler, train_loader, test_loader, steps_per_epoch=steps_per_epoch,
                   epochs=trainer.epochs, log_every=trainer.log_every, precision=precision, memory_format=memory_format,
                   probe=probe, check=cfg.grad_check, writer=writer, progress=progress, checkpoint=checkpoint,
                   context=context, device=device, generator=generator)
    try:
        with StopRequest() as stop:
            failure = loop.fit(stop)
    except Stopped as stopped:
        writer.close()
        if context.is_main:
            log.warning(f"signal {stopped.signum}: checkpoint {stopped.path} written; continue with trainer.resume=true "
                        f"\"hydra.run.dir='{run_dir}'\"")
        raise SystemExit(128 + stopped.signum) from None
    metrics = run_metrics(cfg, progress, failure, device)
    write_results(cfg, writer, metrics, context)
    if context.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _mean(values):
    return sum(values) / len(values) if values else None


def run_metrics(cfg: DictConfig, progress: Progress, failure: str | None, device: torch.device) -> dict:
    """metrics.json: how the run ended, its final and best accuracy, and the run's summaries of the
    probe, memory, time and NFE series (test metrics: those of the last finished epoch)."""
    history = progress.history
    finished = bool(history[tags.TEST_ACC])
    return {
        tags.STATUS: "completed" if failure is None else "diverged",
        tags.FAILURE: failure,
        tags.STEPS: progress.step,
        tags.EPOCHS: progress.epoch,  # completed
        tags.TEST_ACC: progress.test_acc if finished else None,
        tags.BEST_ACC: max(history[tags.TEST_ACC], default=None),
        tags.TEST_LOSS: progress.test_loss if finished else None,
        tags.mean_key(tags.GRAD_REL_L2): _mean(history[tags.GRAD_REL_L2]),
        # .get: a checkpoint from before the floor; a float64 run's ratios are nan (its floor is 0)
        tags.mean_key(tags.GRAD_FLOOR): _mean(history.get(tags.GRAD_FLOOR, [])),
        tags.mean_key(tags.GRAD_FLOOR_RATIO): _mean([r for r in history.get(tags.GRAD_FLOOR_RATIO, []) if not math.isnan(r)]),
        tags.TF32: all(tf32_state()),  # what the run ran with: trainer.tf32, as set_tf32 applied it
        tags.PEAK_MIB: max(history[tags.PEAK_MIB], default=None),
        tags.STEP_MS: _mean(history[tags.STEP_MS]),
        **progress.last_nfe,
        "device": str(device),
        "git": git_revision(),
    }


def write_results(cfg: DictConfig, writer, metrics: dict, context: Distributed) -> None:
    """The run's status text and its hparams (TensorBoard's HPARAMS tab compares a sweep by them)."""
    trainer = cfg.trainer
    hparams = {
        "dataset": cfg.dataset.name, "model": cfg.model.name, "solver": cfg.solver.name,
        "steps": cfg.solver.steps if cfg.solver.steps is not None else -1, "grad": cfg.grad.name,
        "lr": trainer.lr, "batch_size": trainer.batch_size, "seed": trainer.seed if trainer.seed is not None else -1,
        "precision": trainer.precision, "tf32": metrics[tags.TF32], "processes": context.world_size,
    }
    final = {f"{tags.FINAL_PREFIX}{k}": v for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    status = metrics[tags.STATUS] if metrics[tags.FAILURE] is None else f"{metrics[tags.STATUS]}: {metrics[tags.FAILURE]}"
    writer.add_text(tags.STATUS_TEXT, status, metrics[tags.STEPS])
    writer.add_hparams(hparams, final, run_name=".")
    writer.close()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Validate, refuse to overwrite, train; every refusal is one line on stderr and exit code 2, and
    leaves the run dir as it was."""
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    record = invocation_record(cfg)  # before trainer.resume=auto is resolved below
    context = Distributed()
    try:
        validate(cfg)
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
        raise SystemExit(2) from None
    finally:
        shutdown(context)
    return metrics["test/acc"]


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
