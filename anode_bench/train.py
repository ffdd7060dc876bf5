"""anode-train: train an ODE network on CIFAR with one gradient method; log what it costs and how
right its gradient is (DESIGN.md section 6 tags) to TensorBoard in the Hydra run directory.

    anode-train model=resnet grad=aca
    anode-train -m grad=direct,adjoint,anode,aca solver.steps=1,2,4
    anode-train experiment=smoke                     # offline, synthetic data, 2-core CPU
    torchrun --standalone --nproc_per_node=4 -m anode_bench.train hydra.run.dir=outputs/ddp/run1   # DDP

This is the one place where a config becomes objects; anode_bench.ode and .models never read cfg.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from tqdm import tqdm

from .checkpoint import CheckpointError, changed_keys, checkpoint_config, checkpoint_dir, load_checkpoint, save_checkpoint
from .config import ConfigComposed, ConfigError, check_options, validate
from .data import DataError, DeviceLoader, channel_stats, load_splits
from .distributed import Distributed, from_environment, local_copy, shutdown, with_sync_batchnorm
from .metrics import MIB, gradient_error, peak_memory_mib
from .models import build_model
from .ode import SOLVERS, MaxStepsError, NonFiniteStateError

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """trainer.device (auto, cpu or cuda; config.validate has checked it) as a torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ode_settings(cfg: DictConfig) -> dict:
    """The ODEBlock settings shared by every block: the solver group plus the grad group (its
    keys besides `name`, e.g. revolve's checkpoints or adjoint's norm, are the grad_options)."""
    settings = {k: v for k, v in OmegaConf.to_container(cfg.solver).items() if k != "name" and v is not None}
    grad_options = {k: v for k, v in OmegaConf.to_container(cfg.grad).items() if k != "name" and v is not None}
    return {**settings, "solver": cfg.solver.name, "grad": cfg.grad.name, "grad_options": grad_options, "check_finite": False}


def load_data(cfg: DictConfig):
    """The configured train and test splits (host arrays)."""
    data = cfg.dataset
    return load_splits(
        data.name, num_classes=data.num_classes, root=data.root, path=data.path, download=data.download,
        train_size=data.train_size, test_size=data.test_size, seed=cfg.trainer.seed or 0,
    )


def load_data_once(cfg: DictConfig, context: Distributed):
    """load_data, rank 0 first under torchrun: a download lands once, and the other ranks read it."""
    if not context.active:
        return load_data(cfg)
    splits = failure = None
    if context.is_main:
        try:
            splits = load_data(cfg)
        except DataError as error:
            failure = str(error)
    failure = context.first_message(failure)
    if failure is not None:
        raise DataError(failure)
    return splits or load_data(cfg)


def make_model(cfg: DictConfig, device: torch.device):
    """The configured model, every ODE block set from the solver and grad groups."""
    return build_model(cfg.model.name, cfg.dataset.num_classes, ode_settings(cfg), **cfg.model.get("arch", {})).to(device)


DTYPES = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}  # parameters and data


def autocast(precision: str, device: torch.device):
    """The context of a forward pass: bf16 autocast (parameters, gradients and optimizer state stay
    float32; the checkpointing methods recompute under the same autocast), else none."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


RECOMPILES_PER_BLOCK = 8  # twice what a training run was seen to need (see with_layout_and_compile)


def with_layout_and_compile(net, memory_format: torch.memory_format, compile: bool):
    """The speed options that change the network itself: its weights' memory format
    (torch.channels_last: NHWC, CUDA only) and `torch.compile` of every ODE block's f (the solver
    loop and the gradient methods stay Python)."""
    net = net.to(memory_format=memory_format)
    if compile:
        # The blocks' f share one code object, so one recompile budget: a block of another shape, a
        # no-grad forward (the checkpointing methods), a recompute with z requiring grad, an evaluation
        # batch: about 4 graphs a block, 16 for a 4-stage ResNet with aca. At dynamo's default of 8 the
        # rest would silently run eager. (cache_size_limit: the name torch < 2.7 knows; later
        # versions keep it as an alias of recompile_limit.)
        limit = RECOMPILES_PER_BLOCK * len(net.ode_blocks)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
        for block in net.ode_blocks:
            block.func.compile()
    return net


def make_scheduler(optimizer, trainer: DictConfig):
    if trainer.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(trainer.milestones), trainer.gamma)
    if trainer.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, trainer.epochs)
    if trainer.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"trainer.schedule {trainer.schedule!r} unknown; choose from step, cosine, constant")


def resident_mib(model, optimizer) -> float:
    """What lives on the device before a step: parameters, their gradients and optimizer state."""
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


@torch.no_grad()
def evaluate(model, loader, context: Distributed, forward_context=contextlib.nullcontext) -> tuple[float, float]:
    """Test loss and accuracy; each rank evaluates its shard of every batch and the sums are pooled."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=loader.device)  # loss sum, correct, count
    for images, labels in loader:
        if not len(labels):  # a last batch smaller than the number of ranks leaves some ranks nothing
            continue
        with forward_context():  # cross_entropy runs in float32 under autocast
            logits = model(images)
            loss_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[0] += loss_sum
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
    model.train()
    loss_sum, correct, count = context.sum(totals).tolist()
    return loss_sum / count, correct / count


def nfe_counts(model) -> dict[str, int]:
    """f evaluations of the last training step, summed over ODE blocks."""
    infos = [block.last_info for block in model.ode_blocks]
    return {
        "nfe/forward": sum(i.nfe_forward for i in infos),
        "nfe/backward": sum(i.nfe_backward for i in infos),
        "nfe/rejected": sum(i.n_rejected + i.n_rejected_backward for i in infos),
        "nfe/host_syncs": sum(i.host_syncs + i.host_syncs_backward for i in infos),  # 0 on fixed grids
    }


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except OSError:
        return None


class StepFailure(RuntimeError):
    """A training step's ODE solve failed (on this rank or, under torchrun, on another): the run diverged."""


def raise_failure(failure: Exception | None) -> None:
    if failure is not None:
        raise failure


def training_step(model, optimizer, images, labels, profile_cpu: bool, forward_context=contextlib.nullcontext,
                  before_backward=raise_failure):
    """One SGD step, its forward and loss under `forward_context()` (autocast for bf16).
    A solver failure in the forward (NonFiniteStateError, MaxStepsError) goes to
    `before_backward(failure or None)`, which raises (under torchrun once every rank knows).
    Returns (logits, loss, peak MiB or None, activation MiB or None).

    CUDA: the allocator's peak over the step, every step; activation = peak minus what was
    resident before it (parameters, gradients, optimizer state, data). CPU: only when
    `profile_cpu`, the profiler's allocation peak is the activation memory, and peak adds the
    parameters, gradients and optimizer state.
    """

    def step():
        failure = logits = loss = None
        try:
            with forward_context():
                logits = model(images)
                loss = torch.nn.functional.cross_entropy(logits, labels)
        except (NonFiniteStateError, MaxStepsError) as error:
            failure = error
        before_backward(failure)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return logits, loss

    if images.device.type == "cuda":
        resident = torch.cuda.memory_allocated(images.device) / MIB
        torch.cuda.reset_peak_memory_stats(images.device)
        logits, loss = step()
        peak = torch.cuda.max_memory_allocated(images.device) / MIB
        return logits, loss, peak, peak - resident
    if profile_cpu:
        outputs = []
        activation = peak_memory_mib(lambda: outputs.extend(step()))
        return *outputs, resident_mib(model, optimizer) + activation, activation
    return *step(), None, None


@dataclass
class Progress:
    """Where a run stands: everything besides model, optimizer and scheduler that a resume needs."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # training steps done in all
    step_in_epoch: int = 0
    epoch_rng: torch.Tensor | None = None  # the loader generator's state when this epoch began
    loss_sum: float = 0.0  # this epoch's sums so far
    correct: int = 0
    seen: int = 0
    test_loss: float = math.nan
    test_acc: float = math.nan
    last_nfe: dict = field(default_factory=dict)
    wall_s: float = 0.0  # wall time of the invocations before this one, to their last checkpoint
    history: dict = field(default_factory=lambda: {"test/acc": [], "grad_error/rel_l2": [], "memory/peak_mib": [], "time/step_ms": []})


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop checkpoints after the current step and exits 128 + signal."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self.request)
        return self

    def request(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def rng_states(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if states["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def invocation_record(cfg: DictConfig) -> dict[str, str]:
    """The files Hydra would save into <run dir>/.hydra: config.yaml (the task config as composed: take
    it before anything changes cfg), hydra.yaml and overrides.yaml. Hydra saves them before the task
    starts, so a run dir the task then refuses would lose its record; the configs therefore set
    hydra.output_subdir: null, and save_record writes these once a run is under way."""
    hydra_cfg = hydra.core.hydra_config.HydraConfig.instance().cfg  # the node whose one key is `hydra`
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


def save_record(run_dir: Path, record: dict[str, str]) -> None:
    """Write `record` (invocation_record) into run_dir/.hydra. An earlier invocation's .hydra (the run
    a resume continues) is renamed, not rewritten: .hydra.1, .hydra.2, ... in the order they ran, and
    .hydra is the latest, the one anode-report and the launchers read."""
    current = run_dir / ".hydra"
    if current.exists():
        k = 1
        while (run_dir / f".hydra.{k}").exists():
            k += 1
        current.rename(run_dir / f".hydra.{k}")
    current.mkdir(parents=True)
    for name, text in record.items():
        (current / name).write_text(text, encoding="utf-8")


# keys a resume may change: how to resume, where the data lies, where and how fast it runs, how
# often it logs and how many checkpoints it keeps. Any other difference is refused.
RESUME_FREE = ("trainer.resume", "trainer.resume_override", "trainer.device", "trainer.threads", "trainer.log_every",
               "trainer.keep_checkpoints", "dataset.root", "dataset.download")


def check_resume_config(cfg: DictConfig, trained: dict | None, path: Path) -> None:
    """ConfigError naming every key (besides RESUME_FREE) where cfg differs from the config the
    checkpoint at `path` was trained with, unless trainer.resume_override; a checkpoint with no
    known config (neither its own nor a run record) is not checked."""
    if trained is None:
        return
    changed = changed_keys(trained, OmegaConf.to_container(cfg, resolve=True), ignored=RESUME_FREE)
    if changed and not cfg.trainer.resume_override:
        listed = ", ".join(f"{key} ({old} -> {new})" for key, (old, new) in changed.items())
        raise ConfigError(f"trainer.resume: the config differs from the one {path} was trained with in {listed}; "
                          f"resume with the run's own overrides (its .hydra/overrides.yaml), or set "
                          f"trainer.resume_override=true to continue with this config")


def hydra_quoted(value: str) -> str:
    """value as a Hydra override value: bare if Hydra's grammar reads it as one plain string, else
    single-quoted with Hydra's escapes (a path holding `,` or `=`, as sweep job folders do)."""
    if re.fullmatch(r"[\w./@:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(run_dir: Path) -> str:
    """A shell command that continues this run: cd to where it was started, the run's own task
    overrides (as typed; trainer.resume's dropped), trainer.resume=true and the run dir."""
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    own = [o for o in hydra_cfg.overrides.task if not re.match(r"^[+~]*trainer\.resume(_override)?=", o)]
    words = ["anode-train", *own, "trainer.resume=true", f"hydra.run.dir={hydra_quoted(str(run_dir))}"]
    return f"cd {shlex.quote(hydra_cfg.runtime.cwd)} && " + " ".join(shlex.quote(w) for w in words)


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
    trainer, check = cfg.trainer, cfg.grad_check
    wall_start = time.perf_counter()
    device = device or pick_device(trainer.device)
    if trainer.threads is not None:
        torch.set_num_threads(trainer.threads)
    if trainer.seed is not None:
        torch.manual_seed(trainer.seed)
    generator = torch.Generator(device).manual_seed(trainer.seed if trainer.seed is not None else torch.seed())

    data = cfg.dataset
    train_split, test_split = load_data_once(cfg, context)
    mean, std = channel_stats(train_split)
    loader_args = dict(device=device, mean=mean, std=std, generator=generator, dtype=DTYPES[trainer.precision])
    shard = (context.rank, context.world_size)
    train_loader = DeviceLoader(train_split, trainer.batch_size, augment=True, shuffle=True, drop_last=True, shard=shard,
                                **loader_args)
    test_loader = DeviceLoader(test_split, trainer.eval_batch_size, augment=False, shuffle=False, drop_last=False,
                               shard=shard, **loader_args)
    steps_per_epoch = len(train_loader) if trainer.max_steps_per_epoch is None else min(len(train_loader), trainer.max_steps_per_epoch)
    if steps_per_epoch == 0:  # checked before anything is written into run_dir
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} exceeds the {len(train_split.labels)} training images; "
                          f"choose trainer.batch_size <= {len(train_split.labels)} or more images (dataset.train_size)")
    probe_images, probe_labels = next(iter(DeviceLoader(
        train_split, check.batch_size, augment=False, shuffle=False, drop_last=False, **loader_args)))

    net = make_model(cfg, device).to(DTYPES[trainer.precision])  # what evaluation, the probe and checkpoints use
    if context.active and trainer.sync_bn:
        net = with_sync_batchnorm(net, device)
    forward_context = lambda: autocast(trainer.precision, device)  # noqa: E731
    memory_format = torch.channels_last if trainer.channels_last else torch.contiguous_format  # weights and batches
    net = with_layout_and_compile(net, memory_format, trainer.compile)
    model = net  # what a training step runs: under torchrun the DDP wrapper, which averages gradients
    if context.active:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(net.parameters(), lr=trainer.lr, momentum=trainer.momentum, weight_decay=trainer.weight_decay)
    scheduler = make_scheduler(optimizer, trainer)
    progress = Progress()
    if trainer.resume:
        state, path = load_checkpoint(run_dir if trainer.resume is True else Path(trainer.resume), map_location=device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        check_resume_config(cfg, checkpoint_config(state, path), path)
        progress = Progress(**state["progress"])
        set_rng_states(state["rng"], device)
        log.info(f"resuming from {path}: epoch {progress.epoch + 1}, step {progress.step}")
    # purge_step drops events a killed run logged after its last checkpoint (or, restarted by resume=auto, at all)
    purge_step = progress.step if any(run_dir.glob("events.out.tfevents.*")) else None
    if record is not None and context.is_main:
        save_record(run_dir, record)
    writer = SummaryWriter(str(run_dir), purge_step=purge_step) if context.is_main else _NoWriter()
    wall_before = progress.wall_s
    if context.is_main:
        log.info(f"run dir {run_dir}: {describe(cfg)}, {trainer.epochs} epoch{'s' * (trainer.epochs != 1)} "
                 f"of {steps_per_epoch} steps on {device}")
    config_text = record["config.yaml"] if record is not None else OmegaConf.to_yaml(cfg)  # as composed

    def checkpoint():
        if not context.is_main:
            return None
        progress.wall_s = wall_before + time.perf_counter() - wall_start
        state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "progress": asdict(progress), "rng": rng_states(device), "config": config_text}
        return save_checkpoint(run_dir, progress.step, state, keep=trainer.keep_checkpoints)

    history, status, failure, step = progress.history, "completed", None, progress.step
    may_fail = any(block.plan.grid is None for block in net.ode_blocks)  # adaptive solves: MaxStepsError and the like
    stop = StopRequest().__enter__()
    for epoch in range(progress.epoch, trainer.epochs):
        if progress.step_in_epoch == 0:
            progress.epoch_rng = generator.get_state()
        generator.set_state(progress.epoch_rng)
        batches = iter(train_loader)
        for _ in range(progress.step_in_epoch):  # a resumed epoch replays the loader's draws of the steps done
            next(batches)
        epoch_start = time.perf_counter()
        # this process's epoch sums; rank 0 carries a resumed checkpoint's (all ranks' sums before it)
        carried = progress if context.is_main else Progress()
        loss_sum = torch.tensor(carried.loss_sum, device=device)
        correct = torch.tensor(carried.correct, device=device)
        seen, step = carried.seen, progress.step
        window_start, window_steps, window_peak, untimed_images = time.perf_counter(), 0, 0.0, 0
        # a bar on a terminal only (disable=None: tqdm's own isatty check); else plain lines at log steps
        bar = tqdm(range(progress.step_in_epoch, steps_per_epoch), desc=f"epoch {epoch + 1}/{trainer.epochs}", leave=False,
                   disable=None if context.is_main else True)
        for _ in bar:
            images, labels = next(batches)
            images = images.contiguous(memory_format=memory_format)
            check_start = time.perf_counter()
            measure_step = check.every and step % check.every == 0 and context.is_main
            probe_failure = None
            try:  # a solver failure (NonFiniteStateError, MaxStepsError) is a result: the run diverged
                if measure_step:  # on copies with plain BatchNorm, so rank 0 probes without the others
                    with forward_context():  # the model's gradient as it trains; the reference is float64 regardless
                        errors = gradient_error(local_copy(net) if context.active else net, probe_images, probe_labels,
                                                reference=check.reference, fine_factor=check.fine_factor)
                    for tag, value in errors.items():
                        writer.add_scalar(tag, value, step)
                    history["grad_error/rel_l2"].append(errors["grad_error/rel_l2"])
            except (NonFiniteStateError, MaxStepsError) as error:
                probe_failure = error
            probe_end = time.perf_counter()

            def before_backward(failure):  # called within this step's training_step
                """Every rank learns of a failure before DDP's backward collectives (adaptive solves can
                fail on one rank only; fixed grids in training cannot fail, so they skip the exchange)."""
                failure = failure or probe_failure
                message = f"step {step}: {failure}" if failure is not None else None
                if context.active and may_fail:
                    message = context.first_message(message)
                if message is not None:
                    raise StepFailure(message)

            try:
                logits, loss, peak, activation = training_step(model, optimizer, images, labels, measure_step,
                                                               forward_context, before_backward)
            except (StepFailure, NonFiniteStateError, MaxStepsError) as error:  # the latter two: from backward
                if context.active and not isinstance(error, StepFailure):
                    raise  # one rank's backward failed amid DDP's collectives: end the process group (torchrun)
                status, failure = "diverged", str(error) if isinstance(error, StepFailure) else f"step {step}: {error}"
                log.warning(f"stopping: {failure}")
                break
            if peak is not None:
                writer.add_scalar("memory/activation_mib", activation, step)
                window_peak = max(window_peak, peak)
            if measure_step:  # the probe (and a profiled CPU step) is not training time
                profiled = device.type == "cpu"
                excluded = (time.perf_counter() if profiled else probe_end) - check_start
                window_start += excluded
                epoch_start += excluded
                window_steps -= profiled
                untimed_images += len(labels) if profiled else 0
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            step += 1
            window_steps += 1
            progress.last_nfe = nfe_counts(net)  # before evaluation overwrites the blocks' last solve
            log_step = step % trainer.log_every == 0 or step % steps_per_epoch == 0
            if log_step:
                # one read-back per log window, which also synchronizes timing; the loss is the global batch's
                step_loss = float(context.sum(loss.detach().clone())) / context.world_size
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                step_ms = (time.perf_counter() - window_start) * 1e3 / max(window_steps, 1)
                writer.add_scalar("train/loss", step_loss, step)
                for tag, count in progress.last_nfe.items():
                    writer.add_scalar(tag, count, step)
                writer.add_scalar("time/step_ms", step_ms, step)
                if window_peak:
                    writer.add_scalar("memory/peak_mib", window_peak, step)
                    history["memory/peak_mib"].append(window_peak)
                history["time/step_ms"].append(step_ms)
                bar.set_postfix(loss=f"{step_loss:.3f}", acc=f"{float(correct) / max(seen, 1):.3f}")
                if bar.disable and context.is_main:
                    log.info(f"epoch {epoch + 1}/{trainer.epochs} step {step - epoch * steps_per_epoch}/{steps_per_epoch}: "
                             f"loss {step_loss:.4f}, train acc {float(correct) / max(seen, 1):.4f}, {step_ms:.0f} ms/step")
                window_start, window_steps, window_peak = time.perf_counter(), 0, 0.0
                if not math.isfinite(step_loss):
                    status, failure = "diverged", f"step {step}: training loss {step_loss}"
                    log.warning(f"stopping: {failure}")
                    break
            # ranks stop together: under torchrun they agree at log steps, where they synchronize anyway
            if (context.any(stop.signum is not None) if log_step else stop.signum is not None and not context.active):
                progress.step, progress.step_in_epoch = step, progress.step_in_epoch + (step - progress.step)
                progress.loss_sum, progress.correct, progress.seen = epoch_sums(context, loss_sum, correct, seen)
                path = checkpoint()
                context.barrier()  # no rank exits (which makes torchrun stop the others) before rank 0 has written
                writer.close()
                stop.__exit__()
                signum = stop.signum or signal.SIGTERM  # a rank that got no signal stops with its peers
                if context.is_main:
                    log.warning(f"signal {signum}: checkpoint {path} written; continue with trainer.resume=true: {resume_command(run_dir)}")
                raise SystemExit(128 + signum)
        bar.close()
        epoch_s = time.perf_counter() - epoch_start
        # a resumed epoch times only the images after its checkpoint; profiled CPU steps (rank 0's, which
        # every rank waits for) are not timed
        images_timed = (seen - carried.seen - untimed_images) * context.world_size
        loss_total, correct_total, seen = epoch_sums(context, loss_sum, correct, seen)
        train_loss, train_acc = loss_total / max(seen, 1), correct_total / max(seen, 1)
        writer.add_scalar("train/acc", train_acc, epoch + 1)
        writer.add_scalar("time/epoch_s", epoch_s, epoch + 1)
        writer.add_scalar("throughput/img_s", images_timed / epoch_s, epoch + 1)
        if status == "diverged":
            break
        writer.add_scalar("train/epoch_loss", train_loss, epoch + 1)
        context.broadcast_buffers(net)  # without sync BN each rank's running statistics saw only its shard
        test_loss, test_acc = evaluate(net, test_loader, context, forward_context)
        writer.add_scalar("test/loss", test_loss, epoch + 1)
        writer.add_scalar("test/acc", test_acc, epoch + 1)
        history["test/acc"].append(test_acc)
        log.info(f"epoch {epoch + 1}/{trainer.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                 f"test loss {test_loss:.4f} acc {test_acc:.4f} | {images_timed / epoch_s:.0f} img/s")
        scheduler.step()
        progress.epoch, progress.step, progress.step_in_epoch = epoch + 1, step, 0
        progress.loss_sum, progress.correct, progress.seen = 0.0, 0, 0
        progress.test_loss, progress.test_acc = test_loss, test_acc
        checkpoint()
    stop.__exit__()
    test_loss, test_acc, last_nfe = progress.test_loss, progress.test_acc, progress.last_nfe

    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    metrics = {
        "status": status,
        "failure": failure,
        "steps": step,
        "epochs": progress.epoch,  # completed
        "test/acc": test_acc if history["test/acc"] else None,
        "test/best_acc": max(history["test/acc"], default=None),
        "test/loss": test_loss if history["test/acc"] else None,
        "grad_error/rel_l2_mean": mean(history["grad_error/rel_l2"]),
        "memory/peak_mib": max(history["memory/peak_mib"], default=None),
        "time/step_ms": mean(history["time/step_ms"]),
        **last_nfe,
        "time/wall_s": wall_before + time.perf_counter() - wall_start,  # every invocation of this run, to here
    }
    final = {f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
    metrics.update(run_settings(cfg), device=str(device), git=git_revision())
    writer.add_text("run/status", status if failure is None else f"{status}: {failure}", step)
    write_hparams(writer, hparam_values(cfg, context.world_size), final, step)
    writer.close()
    if context.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info(summary(metrics, run_dir))
    return metrics


def run_settings(cfg: DictConfig) -> dict:
    """What a metrics.json reader needs to tell runs apart without the .hydra record: the model,
    gradient method, solver and its N_t (fixed grids) or rtol/atol (adaptive; null otherwise)."""
    solver = cfg.solver
    adaptive = solver.get("steps") is None
    return {"model": cfg.model.name, "grad": cfg.grad.name, "solver": solver.name, "solver.steps": solver.get("steps"),
            "solver.rtol": solver.get("rtol") if adaptive else None, "solver.atol": solver.get("atol") if adaptive else None,
            "dataset": cfg.dataset.name}


def describe(cfg: DictConfig) -> str:
    """e.g. `resnet_tiny, euler N_t=2, grad aca` or `resnet, dopri5 rtol=0.01 atol=0.01, grad adjoint`."""
    settings = run_settings(cfg)
    grid = (f"N_t={settings['solver.steps']}" if settings["solver.steps"] is not None
            else f"rtol={settings['solver.rtol']} atol={settings['solver.atol']}")
    return f"{settings['model']}, {settings['solver']} {grid}, grad {settings['grad']}"


def hparam_values(cfg: DictConfig, processes: int) -> dict:
    """The HPARAMS tab's columns: TensorBoard takes numbers, strings and bools, so a setting that
    does not apply (steps of an adaptive solver, rtol/atol of a fixed grid, no seed) is -1."""
    trainer, settings = cfg.trainer, run_settings(cfg)
    unset = lambda value: -1 if value is None else value  # noqa: E731
    return {
        "dataset": settings["dataset"], "model": settings["model"], "solver": settings["solver"],
        "steps": unset(settings["solver.steps"]), "rtol": unset(settings["solver.rtol"]), "atol": unset(settings["solver.atol"]),
        "grad": settings["grad"], "lr": trainer.lr, "batch_size": trainer.batch_size, "seed": unset(trainer.seed),
        "precision": trainer.precision, "processes": processes,
    }


def write_hparams(writer, hparams: dict, final: dict, step: int) -> None:
    """The run's HPARAMS entry in its own event file (SummaryWriter.add_hparams would open a second
    one in a subdirectory, its metrics at step 0): the hparams summaries, and the final/* scalars
    they point at, on the global step the run ended at."""
    for summary_proto in hparams_summaries(hparams, final):
        writer.file_writer.add_summary(summary_proto)
    for tag, value in final.items():
        writer.add_scalar(tag, value, step)


def summary(metrics: dict, run_dir: Path) -> str:
    """The paragraph a run ends with: status, accuracy, gradient error, memory, time, where it wrote."""
    fmt = lambda value, spec, unit="": "n/a" if value is None else f"{value:{spec}}{unit}"  # noqa: E731
    failure = f" ({metrics['failure']})" if metrics["failure"] else ""
    epochs = f"{metrics['epochs']} epoch{'' if metrics['epochs'] == 1 else 's'}"
    return (f"{metrics['status']}{failure} after {epochs}, {metrics['steps']} steps: "
            f"test acc {fmt(metrics['test/acc'], '.2%')} (best {fmt(metrics['test/best_acc'], '.2%')}), "
            f"gradient error {fmt(metrics['grad_error/rel_l2_mean'], '.2e')} (relative L2, mean of the probes), "
            f"peak memory {fmt(metrics['memory/peak_mib'], '.1f', ' MiB')}, {fmt(metrics['time/step_ms'], '.1f', ' ms')}/step, "
            f"wall time {fmt(metrics['time/wall_s'], '.1f', ' s')}. Written to {run_dir}: metrics.json, TensorBoard events "
            f"(tensorboard --logdir {shlex.quote(str(run_dir))}), checkpoints/, train.log")


def epoch_sums(context: Distributed, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, int, int]:
    """The epoch's training loss sum, correct count and images so far, pooled over all ranks."""
    if not context.active:
        return float(loss_sum), int(correct), seen
    local = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
    total_loss, total_correct, total_seen = context.sum(local).tolist()
    return total_loss, int(total_correct), int(total_seen)


CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")  # the repository's configs/ (editable install)


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
        validate(cfg, ode_settings)
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
    solver = SOLVERS.get(cfg.solver.name)  # None for alf, which steps a fixed grid
    if trainer.sync_bn and solver is not None and solver.adaptive:
        raise ConfigError(f"trainer.sync_bn=true cannot run the adaptive solver {cfg.solver.name}: each rank picks its "
                          f"own steps, so their BatchNorm all_reduces would not pair up; use a fixed-step solver or sync_bn=false")
    if not context.is_main:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
