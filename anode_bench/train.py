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
import fcntl
import json
import logging
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
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
from .config import CONFIG_DIR, CONFIG_EXIT, ConfigError, job_error_control, run_command, validate
from .data import DataError, channel_stats
from .distributed import Distributed, from_environment, shutdown, with_sync_batchnorm
from .metrics import set_tf32
from .ode import SCHEMES
from .results import describe, metrics_json, run_metrics, summary, write_results
from .run_state import (
    Progress,
    StopRequest,
    check_finished_config,
    invocation_record,
    read_state,
    remove_if_empty,
    restore_state,
    resume_command,
    save_record,
    save_state,
)
from .trainer import Stopped, Trainer

log = logging.getLogger(__name__)


class _NoWriter:
    """Stands in for the SummaryWriter on ranks other than 0, which log nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def run_seed(seed: int | None, context: Distributed) -> int:
    """The seed the run starts from: trainer.seed, or for trainer.seed=null one drawn from the OS's entropy
    (32 bits), which metrics.json records so that the run can be repeated and a copy of it known as one.
    Every rank must draw the same permutation and crops (each trains on its slice of every batch), so a
    drawn seed is rank 0's."""
    return seed if seed is not None else context.broadcast(secrets.randbits(32))


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
    resumed = (read_state(run_dir if trainer.resume is True else Path(trainer.resume), cfg, device, context.world_size)
               if trainer.resume else None)
    # the seed the run started from; a checkpoint from before it was recorded has trainer.seed (null: data from 0)
    recorded = resumed[0]["progress"].get("seed") if resumed else None
    seed = recorded if recorded is not None else trainer.seed if resumed else run_seed(trainer.seed, context)
    data_seed = 0 if seed is None else seed
    torch.manual_seed(data_seed)  # a resume restores this state and the generator's
    generator = torch.Generator(device).manual_seed(data_seed)  # the training loader's shuffles and crops

    train_split, test_split = load_data_once(cfg, context, data_seed)
    shard, stats = (context.rank, context.world_size), channel_stats(train_split)  # stats: one pass over the images
    train_loader = make_loader(train_split, stats, trainer.batch_size, device, precision, train=True,
                               generator=generator, shard=shard)
    test_loader = make_loader(test_split, stats, trainer.eval_batch_size, device, precision, train=False, shard=shard)
    steps_per_epoch = min(len(train_loader), trainer.max_steps_per_epoch or len(train_loader))
    if steps_per_epoch == 0:  # checked before anything is written into run_dir
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_split.labels)} training images; "
                          f"choose trainer.batch_size <= {len(train_split.labels)} or more images (dataset.train_size)")
    if cfg.probe.every and cfg.probe.batch_size > len(train_split.labels):  # the loader would cut the batch short
        raise ConfigError(f"probe.batch_size={cfg.probe.batch_size} exceeds the {len(train_split.labels)} training images; "
                          f"choose probe.batch_size <= {len(train_split.labels)} or more images (dataset.train_size)")
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
    progress = Progress(seed=seed, processes=[context.world_size])
    if resumed:
        state, path = resumed
        progress = restore_state(state, net, optimizer, scheduler, device)
        progress.seed = seed
        if progress.processes[-1:] != [context.world_size]:  # a first record, or a change under resume_override
            progress.processes.append(context.world_size)
        # at the end: a run killed between its last checkpoint and metrics.json finishes writing it; a finished
        # run, or another run's end copied into this dir, has nothing to train
        own = path.parent.parent.resolve() == run_dir.resolve()
        if progress.epoch >= trainer.epochs and ((run_dir / "metrics.json").exists() or not own):
            raise ConfigError(f"trainer.resume: {path} is the end of {'this finished run' if own else 'its run'} (epoch "
                              f"{progress.epoch} of trainer.epochs={trainer.epochs}); nothing is left to train, and nothing "
                              f"was written (to train on, raise trainer.epochs with trainer.resume_override=true)")
        log.info(f"resuming from {path}: epoch {progress.epoch + 1}, step {progress.step}")
    # purge_step drops events a killed run logged after its last checkpoint (or, restarted by resume=auto, at all)
    purge_step = progress.step if any(run_dir.glob("events.out.tfevents.*")) else None
    if record is not None and context.is_main:
        save_record(run_dir, record, fresh=not trainer.resume)
    writer = SummaryWriter(str(run_dir), purge_step=purge_step) if context.is_main else _NoWriter()
    if progress.last_logged.get("step") == progress.step:  # a log point at the checkpoint's step, which the purge drops
        for tag, value in progress.last_logged["scalars"].items():
            writer.add_scalar(tag, value, progress.step)
    wall_before = progress.wall_s
    if context.is_main:
        log.info(f"run dir {run_dir}: {describe(cfg)}, {trainer.epochs} epoch{'s' * (trainer.epochs != 1)} "
                 f"of {steps_per_epoch} steps on {device}")
        inert = [m for m in trainer.milestones if m >= trainer.epochs] if trainer.schedule == "step" else []
        if inert:
            log.info(f"trainer.milestones {inert}: at or past this run's {trainer.epochs} epoch{'s' * (trainer.epochs != 1)}, "
                     f"the learning rate does not drop there")
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


LOCK_NAME = ".anode-train.lock"  # in every run dir: one anode-train at a time writes there


class JobRefused(CompactHydraException):
    """A refusal inside one job of a sweep, after its one line is printed. Hydra records the job as failed,
    runs the others and exits 1 at the end with this line; a SystemExit would end the sweep there (and
    under the joblib launcher kill the jobs still running, without a checkpoint)."""


def main() -> None:
    """The console script (config.run_command: options checked before Hydra composes, every config error
    exit CONFIG_EXIT), then a sweep's summary, printed even when a job failed."""
    code = 0
    try:
        run_command("anode-train", hydra_main, "train")
    except SystemExit as exit:
        code = exit.code
        raise
    finally:
        from anode_bench.train import SweepNames as callback  # the class Hydra instantiated (this file may be __main__)

        callback.summarize(failed=code not in (0, None))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Validate, claim the run dir, refuse to overwrite, train. Every refusal is one line on stderr and
    leaves the run dir as it was (a run dir this refusal would leave empty is removed); it exits 2, or
    in a sweep fails this job alone (JobRefused)."""
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    record = invocation_record(cfg)  # before trainer.resume=auto is resolved below
    context = Distributed()
    held = None
    with contextlib.ExitStack() as stack:
        try:
            validate(cfg)
            job_error_control(list(hydra_cfg.overrides.task), cfg.solver.name)
            context, device = from_environment(pick_device(cfg.trainer.device))
            if context.active:
                check_distributed(cfg, run_dir, context)
            held = stack.enter_context(run_dir_lock(run_dir)) if context.is_main else RunDirLock(True, False)
            if context.any(not held.held):
                raise ConfigError(f"{run_dir} is in use: another anode-train holds its {LOCK_NAME}; nothing was written: "
                                  f"let that one finish, or choose another hydra.run.dir")
            auto = cfg.trainer.resume == "auto"
            if auto:
                finished = run_dir / "metrics.json"
                if finished.exists():  # a requeued job whose run had already ended: leave it as it is, train.log too
                    check_finished_config(cfg, run_dir)
                    if context.is_main:
                        print(f"anode-train: {run_dir} already holds a finished run of this config; trainer.resume=auto "
                              f"leaves it untouched", file=sys.stderr)
                    return json.loads(finished.read_text())["test/acc"]
                cfg.trainer.resume = any(checkpoint_dir(run_dir).glob("step_*.pt"))  # else start afresh, here
            check_nothing_overwritten(run_dir, cfg.trainer.resume, auto, context)
            if cfg.trainer.resume is True and not any(checkpoint_dir(run_dir).glob("step_*.pt")):
                where = ("hydra.sweep.dir=SWEEP_DIR (the sweep whose jobs to continue; trainer.resume=auto also starts "
                         "the ones without a checkpoint)" if hydra_cfg.mode == RunMode.MULTIRUN else
                         "hydra.run.dir=RUN_DIR (or trainer.resume=RUN_DIR to continue it in a new directory)")
                raise ConfigError(f"trainer.resume=true continues the run in its run dir, and {run_dir} holds no "
                                  f"checkpoint: name the run, {where}")
            context.barrier()  # every rank has looked before rank 0 writes
            metrics = train(cfg, run_dir, device, context, record)
        except (ConfigError, DataError, CheckpointError) as error:
            detach_log_file(run_dir)  # what logs after this (a launcher's lines) goes nowhere near run_dir
            if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
                print(f"anode-train: {error}", file=sys.stderr)
                if held is None or held.held:  # a dir another process holds is not this one's to tidy
                    if held is not None and held.created:
                        (run_dir / LOCK_NAME).unlink(missing_ok=True)
                    remove_if_empty(run_dir)
            if hydra_cfg.mode == RunMode.MULTIRUN:
                raise JobRefused(f"anode-train: job {hydra_cfg.job.num} of the sweep was refused: {error}") from None
            raise SystemExit(CONFIG_EXIT) from None
        finally:
            shutdown(context)
    return metrics["test/acc"]


@dataclass(frozen=True)
class RunDirLock:
    held: bool  # this process holds the flock
    created: bool  # and made the lock file (a refused run takes it away again)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path):
    """Yields a RunDirLock: whether this process holds an exclusive flock on run_dir/LOCK_NAME (kept until
    the block ends, or the process dies). Two runs started in the same second share Hydra's default run
    dir, and two resumes of one run would write over each other's checkpoints. The file stays."""
    created = not (run_dir / LOCK_NAME).exists()
    with open(run_dir / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield RunDirLock(False, False)
            return
        except OSError as error:  # a filesystem without flock (Lustre mounted without it): run unguarded, and say so
            log.warning(f"{run_dir / LOCK_NAME}: no lock on this filesystem ({error}); nothing stops a second run here")
        yield RunDirLock(True, created)


def detach_log_file(run_dir: Path) -> None:
    """Close the log file handler Hydra opened in run_dir (its file appears with the first line, so a refused
    run has none): a launcher logging after the refusal would otherwise write into a run dir this run was
    refused, another run's train.log, or recreate a dir already removed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename).parent == run_dir.resolve():
            root.removeHandler(handler)
            handler.close()


def check_nothing_overwritten(run_dir: Path, resume, auto: bool, context: Distributed) -> None:
    """ConfigError (on every rank) if run_dir holds a run (metrics, events or checkpoints) that this one would
    write over: anything but a resume of that very run."""
    earlier = [p.name for p in run_dir.iterdir() if p.name == "metrics.json" or p.name.startswith("events.out.tfevents")]
    earlier += [f"checkpoints/{p.name}" for p in sorted(checkpoint_dir(run_dir).glob("step_*.pt"))][:1]
    elsewhere = resume not in (True, False) and not Path(str(resume)).resolve().is_relative_to(run_dir.resolve())
    if context.any(bool(earlier) and ((not resume and not auto) or elsewhere)):
        continue_it = "" if elsewhere else ", or continue it with trainer.resume=true"
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(sorted(earlier))}); nothing was overwritten: "
                          f"choose another hydra.run.dir{continue_it}")


class SweepNames(Callback):
    """Hydra callback (configs/train.yaml, hydra.callbacks) for sweeps. At the start it names the
    jobs by what the sweep varies: every task override that takes one value (`experiment=smoke`,
    `trainer.epochs=1`) joins hydra.job.config.override_dirname.exclude_keys, so job folders read
    `0_grad=direct`. (The jobs' configs are composed from the sweep's hydra overrides, so one
    more override there reaches every job, under any launcher.) At the end it prints the sweep dir
    and the anode-report command for it."""

    sweep_dir: Path | None = None  # set in the process that runs the sweep, which prints the summary

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        fixed = [o.key_or_group for o in overrides if not o.is_sweep_override()]
        excluded = list(dict.fromkeys([*config.hydra.job.config.override_dirname.exclude_keys, *fixed]))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]")
        SweepNames.sweep_dir = Path(config.hydra.sweep.dir).absolute()

    @classmethod
    def summarize(cls, failed: bool = False) -> None:
        """The sweep's last lines, whether or not every job succeeded (a failed job ends Hydra's multirun before
        its on_multirun_end): what the job dirs hold, and the anode-report command. A job refused before its
        run began leaves no dir, so `failed` (the sweep's exit) adds that the count leaves such jobs out."""
        if cls.sweep_dir is None or not cls.sweep_dir.is_dir():
            return
        sweep_dir, cls.sweep_dir = cls.sweep_dir, None
        jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
        statuses = [json.loads((j / "metrics.json").read_text()).get("status") if (j / "metrics.json").exists()
                    else "without metrics.json (failed, refused or stopped: see above)" for j in jobs]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) or "no job got under way"
        missing = "; a job refused before its run began left no directory (its line is above)" if failed else ""
        compare = f"\ncompare them with: anode-report {shlex.quote(str(sweep_dir))}" if jobs else ""
        print(f"anode-train: sweep of {len(statuses)} run{'s' * (len(statuses) != 1)} ({counts}) in {sweep_dir}{missing}"
              f"{compare}", file=sys.stderr)


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
