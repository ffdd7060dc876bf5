"""The training loop: `Trainer.step` (one SGD step, its memory), `Trainer.epoch` (the steps of one
epoch with logging, the gradient probe and the stop-on-signal checkpoint) and `Trainer.evaluate`.

Nothing on the hot path reads a value back to the host: the loss and accuracy sums stay on the
device and are read at logging points (every trainer.log_every steps), which also synchronize the
timing. The probe and a profiled CPU step are left out of the timing by pausing the StepTimer.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import tags
from .distributed import Distributed, local_copy
from .metrics import MIB, gradient_error, peak_memory_mib
from .ode import MaxStepsError, NonFiniteStateError
from .run_state import Progress, StopRequest

log = logging.getLogger(__name__)

SOLVE_FAILURES = (NonFiniteStateError, MaxStepsError)


class StepFailure(RuntimeError):
    """A training step's ODE solve failed (on this rank or, under torchrun, on another): the run diverged."""


class Stopped(Exception):
    """A signal arrived; the run checkpointed (`path`) and exits with 128 + signum."""

    def __init__(self, signum: int, path: Path | None):
        super().__init__(f"signal {signum}")
        self.signum, self.path = signum, path


def nfe_counts(model) -> dict[str, int]:
    """f evaluations (and host read-backs inside the solves) of the last training step, summed over ODE blocks."""
    nfe = model.nfe()
    return {tags.NFE_FORWARD: nfe["forward"], tags.NFE_BACKWARD: nfe["backward"], tags.NFE_REJECTED: nfe["rejected"],
            tags.HOST_SYNCS: nfe["host_syncs"]}


def resident_mib(model, optimizer) -> float:
    """What lives on the device before a step: parameters, their gradients and optimizer state."""
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


class StepTimer:
    """Wall time of the training steps of a log window and of an epoch, with whatever runs inside
    `paused()` (the probe, a profiled CPU step) left out of both. On CUDA it synchronizes where it
    reads the clock, so queued kernels count where they ran."""

    def __init__(self, device: torch.device):
        self.device = device
        self.epoch_start = self.window_start = self._now()
        self.epoch_paused = self.window_paused = 0.0
        self.window_steps = 0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        start = self._now()
        try:
            yield
        finally:
            excluded = self._now() - start
            self.epoch_paused += excluded
            self.window_paused += excluded

    def window_ms(self) -> float | None:
        """ms per timed step of the window so far (None if every step of it was profiled or probed);
        starts the next window."""
        now = self._now()
        ms = (now - self.window_start - self.window_paused) * 1e3 / self.window_steps if self.window_steps else None
        self.window_start, self.window_paused, self.window_steps = now, 0.0, 0
        return ms

    def epoch_seconds(self) -> float:
        return self._now() - self.epoch_start - self.epoch_paused


@dataclass
class EpochSums:
    """This process's training loss sum, correct count and images of the epoch so far (on the
    device until read), and how many of the images were trained untimed (profiled CPU steps)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int
    untimed: int = 0
    carried: int = 0  # of `seen`, the images a resumed checkpoint's sums hold (trained by an earlier invocation)

    def timed(self, context: Distributed) -> int:
        """Images this invocation trained in timed steps, over all ranks (profiled CPU steps, rank 0's,
        which every rank waits for, are not timed)."""
        return (self.seen - self.carried - self.untimed) * context.world_size

    def pooled(self, context: Distributed) -> tuple[float, int, int]:
        """The sums over all ranks, read back to the host."""
        if not context.active:
            return float(self.loss_sum), int(self.correct), self.seen
        local = torch.stack([self.loss_sum.double(), self.correct.double(),
                             torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss_sum.device)])
        loss, correct, seen = context.sum(local).tolist()
        return loss, int(correct), int(seen)


class Trainer:
    """Trains `net` (through `model`: under torchrun its DDP wrapper) with `optimizer`, writing to
    `writer` and recording into `progress`; `checkpoint()` saves the run's state (rank 0).

    probe: (images, labels) of the fixed gradient-probe batch and the probe config; the probe
    runs every probe.every steps on rank 0, on copies of the model, before that step trains.
    """

    def __init__(self, net, model, optimizer, scheduler, train_loader, test_loader, *, steps_per_epoch: int,
                 epochs: int, log_every: int, precision, memory_format, probe, probe_config, writer, progress: Progress,
                 checkpoint, context: Distributed, device: torch.device, generator: torch.Generator):
        self.net, self.model, self.optimizer, self.scheduler = net, model, optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.steps_per_epoch, self.epochs, self.log_every = steps_per_epoch, epochs, log_every
        self.precision, self.memory_format = precision, memory_format
        self.probe_images, self.probe_labels = probe
        # in the layout training steps use, so that the probe's floor has the run's convolution algorithms
        self.probe_images = self.probe_images.contiguous(memory_format=memory_format)
        self.probe_config, self.writer, self.progress, self.checkpoint = probe_config, writer, progress, checkpoint
        self.context, self.device, self.generator = context, device, generator
        # adaptive solves can fail on one rank only (MaxStepsError and the like): exchange failures
        self.may_fail = any(block.plan.grid is None for block in net.ode_blocks)
        self._state, self._state_mib = None, 0.0  # state_mib's: the optimizer's entries when counted, and the count

    def forward_context(self):
        return self.precision.autocast(self.device)

    def state_mib(self) -> float:
        """Parameters and optimizer state in MiB, gradients cleared (resident_mib): fixed once the optimizer
        holds its state, so walked again only while its entries change, not at every measured CUDA step."""
        entries = len(self.optimizer.state)
        if self._state != entries:
            self._state, self._state_mib = entries, resident_mib(self.net, self.optimizer)
        return self._state_mib

    # ------------------------------------------------------------------------------------ one step

    def step(self, images, labels, profile_cpu: bool, probe_failure: Exception | None = None):
        """One SGD step, its forward and loss under the run's precision. Returns (logits, loss, peak
        MiB or None, activation MiB or None).

        A solver failure in the forward (or `probe_failure`, from this step's probe) raises
        StepFailure before backward, under torchrun once every rank knows. Memory, on CUDA at every
        step (the allocator's peak) and on the CPU only when `profile_cpu` (the profiler's), by one
        definition: peak = parameters and optimizer state + the most the step allocated on top of them
        (its activations, graph and new gradients); activation = peak minus what was resident before
        the step (the last step's gradients too). Neither counts what else lives on the device, such
        as the batches a GPU-resident loader keeps there, so the figures compare across devices.
        """

        def sgd_step():
            failure = logits = loss = None
            try:
                with self.forward_context():
                    logits = self.model(images)
                    loss = torch.nn.functional.cross_entropy(logits, labels)
            except SOLVE_FAILURES as error:
                failure = error
            self.raise_failure(failure or probe_failure)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return logits, loss

        cuda = images.device.type == "cuda"
        if not (cuda or profile_cpu):
            return *sgd_step(), None, None
        grads = sum(p.grad.numel() * p.grad.element_size() for p in self.net.parameters() if p.grad is not None) / MIB
        self.optimizer.zero_grad(set_to_none=True)  # before the window: the CPU profile cannot see a free of what it did not see allocated
        state = self.state_mib()
        resident = state + grads
        if cuda:  # no synchronize: the allocator counts on the host, as the kernels are queued
            start = torch.cuda.memory_allocated(images.device)
            torch.cuda.reset_peak_memory_stats(images.device)
            logits, loss = sgd_step()
            peak = state + (torch.cuda.max_memory_allocated(images.device) - start) / MIB
        else:
            outputs = []
            peak = state + peak_memory_mib(lambda: outputs.extend(sgd_step()))
            logits, loss = outputs
        return logits, loss, peak, peak - resident

    def raise_failure(self, failure: Exception | None) -> None:
        """Every rank learns of a failure before DDP's backward collectives (fixed grids in training
        cannot fail, so they skip the exchange)."""
        message = f"step {self.progress.step}: {failure}" if failure is not None else None
        if self.context.active and self.may_fail:
            message = self.context.first_message(message)
        if message is not None:
            raise StepFailure(message)

    def probe(self, step: int) -> Exception | None:
        """The gradient error of the model as it trains against the float64 reference, logged at `step`
        (on a copy with plain BatchNorm under torchrun, so rank 0 probes without the others). A solve
        failure is returned: it ends the run at this step's training."""
        try:
            with self.forward_context():  # the reference is float64 regardless
                errors = gradient_error(local_copy(self.net) if self.context.active else self.net, self.probe_images,
                                        self.probe_labels, reference=self.probe_config.reference,
                                        fine_factor=self.probe_config.fine_factor)
        except SOLVE_FAILURES as error:
            return error
        for tag, value in errors.items():
            self.writer.add_scalar(tag, value, step)
        for tag in (tags.GRAD_REL_L2, tags.GRAD_FLOOR, tags.GRAD_FLOOR_RATIO):
            self.progress.history.setdefault(tag, []).append(errors[tag])  # setdefault: a checkpoint from before the floor
        return None

    # ------------------------------------------------------------------------------------ one epoch

    def epoch(self, epoch: int, stop: StopRequest) -> str | None:
        """Train epoch `epoch` (0-based) from progress.step_in_epoch on, then evaluate and checkpoint.
        Returns the failure (`step N: reason`) if the run diverged, else None. Raises Stopped after
        checkpointing when a signal has arrived."""
        progress, context, writer = self.progress, self.context, self.writer
        if progress.epoch_rng is None:  # a fresh run; later epochs' states come from end_epoch
            progress.epoch_rng = self.generator.get_state()
        self.generator.set_state(progress.epoch_rng)
        batches = iter(self.train_loader)
        for _ in range(progress.step_in_epoch):  # a resumed epoch replays the loader's draws of the steps done
            next(batches)
        # this process's epoch sums; rank 0 carries a resumed checkpoint's (all ranks' sums before it)
        carried = progress if context.is_main else Progress()
        sums = EpochSums(torch.tensor(carried.loss_sum, device=self.device), torch.tensor(carried.correct, device=self.device),
                         carried.seen, carried=carried.seen)
        # a log window cut by a stop keeps the peak of its steps before the checkpoint
        timer, window_peak, failure = StepTimer(self.device), progress.window_peak, None
        progress.window_peak = 0.0
        # a bar on a terminal only (disable=None: tqdm's own isatty check); else plain lines at log steps
        bar = tqdm(range(progress.step_in_epoch, self.steps_per_epoch), desc=f"epoch {epoch + 1}/{self.epochs}",
                   leave=False, disable=None if context.is_main else True)
        for _ in bar:
            images, labels = next(batches)
            images = images.contiguous(memory_format=self.memory_format)
            step = progress.step
            measure = bool(self.probe_config.every) and step % self.probe_config.every == 0 and context.is_main
            profiled = measure and self.device.type == "cpu"
            with timer.paused() if measure else contextlib.nullcontext():
                probe_failure = self.probe(step) if measure else None
            try:
                with timer.paused() if profiled else contextlib.nullcontext():
                    logits, loss, peak, activation = self.step(images, labels, measure, probe_failure)
            except (StepFailure, *SOLVE_FAILURES) as error:  # the latter two: from backward
                if context.active and not isinstance(error, StepFailure):
                    raise  # one rank's backward failed amid DDP's collectives: end the process group (torchrun)
                failure = str(error) if isinstance(error, StepFailure) else f"step {step}: {error}"
                break
            if peak is not None:
                writer.add_scalar(tags.ACTIVATION_MIB, activation, step)
                window_peak = max(window_peak, peak)
            sums.loss_sum += loss.detach() * len(labels)
            sums.correct += (logits.argmax(1) == labels).sum()
            sums.seen += len(labels)
            sums.untimed += len(labels) if profiled else 0
            timer.window_steps += not profiled
            progress.step += 1
            progress.step_in_epoch += 1
            progress.last_nfe = nfe_counts(self.net)  # before evaluation overwrites the blocks' last solve
            log_step = progress.step % self.log_every == 0 or progress.step_in_epoch == self.steps_per_epoch
            if log_step:
                failure = self.log_window(epoch, loss, timer, window_peak, sums, bar)
                window_peak = 0.0
                if failure is not None:
                    break
            # ranks stop together: under torchrun they agree at log steps, where they synchronize anyway
            if context.any(stop.signum is not None) if log_step else stop.signum is not None and not context.active:
                self.stop(sums, timer, window_peak, stop.signum)
        bar.close()
        self.end_epoch(epoch, sums, timer, diverged=failure is not None)
        return failure

    def log_window(self, epoch: int, loss, timer: StepTimer, window_peak: float, sums: EpochSums, bar) -> str | None:
        """The log point: one read-back per window (the loss is the global batch's), which also
        synchronizes the timing. Returns a failure if the training loss is not finite."""
        step, writer, history = self.progress.step, self.writer, self.progress.history
        step_loss = float(self.context.sum(loss.detach().clone())) / self.context.world_size
        step_ms = timer.window_ms()
        scalars = {tags.TRAIN_LOSS: step_loss, **self.progress.last_nfe}
        if step_ms is not None:  # a window of profiled steps only has no step time
            scalars[tags.STEP_MS] = step_ms
            history[tags.STEP_MS].append(step_ms)
        if window_peak:
            scalars[tags.PEAK_MIB] = window_peak
            history[tags.PEAK_MIB].append(window_peak)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        self.progress.last_logged = {"step": step, "scalars": scalars}
        train_acc = float(sums.correct) / max(sums.seen, 1)
        bar.set_postfix(loss=f"{step_loss:.3f}", acc=f"{train_acc:.3f}")
        if bar.disable and self.context.is_main:
            log.info(f"epoch {epoch + 1}/{self.epochs} step {self.progress.step_in_epoch}/{self.steps_per_epoch}: "
                     f"loss {step_loss:.4f}, train acc {train_acc:.4f}, "
                     + ("no timed step" if step_ms is None else f"{step_ms:.0f} ms/step"))
        return None if math.isfinite(step_loss) else f"step {step}: training loss {step_loss}"

    def stop(self, sums: EpochSums, timer: StepTimer, window_peak: float, signum: int | None) -> None:
        """Checkpoint mid-epoch and raise Stopped (a rank that got no signal stops with its peers)."""
        progress = self.progress
        progress.loss_sum, progress.correct, progress.seen = sums.pooled(self.context)
        progress.window_peak = window_peak
        progress.timed_s += timer.epoch_seconds()  # the epoch's time and images so far, for its epoch_s and img/s
        progress.timed_images += sums.timed(self.context)
        path = self.checkpoint()
        self.context.barrier()  # no rank exits (which makes torchrun stop the others) before rank 0 has written
        raise Stopped(signum or signal.SIGTERM, path)

    def end_epoch(self, epoch: int, sums: EpochSums, timer: StepTimer, diverged: bool) -> None:
        """Log the epoch's sums and timing; unless it diverged, evaluate, step the schedule and checkpoint."""
        progress, writer, context = self.progress, self.writer, self.context
        # a resumed epoch adds the time and images of the invocations before its checkpoint
        epoch_s = progress.timed_s + timer.epoch_seconds()
        images_timed = progress.timed_images + sums.timed(context)
        progress.timed_s, progress.timed_images = 0.0, 0
        loss_total, correct_total, seen = sums.pooled(context)
        train_loss, train_acc = loss_total / max(seen, 1), correct_total / max(seen, 1)
        writer.add_scalar(tags.TRAIN_ACC, train_acc, epoch + 1)
        throughput = images_timed / epoch_s if images_timed else None  # None: every step was profiled
        if throughput is not None:
            writer.add_scalar(tags.EPOCH_S, epoch_s, epoch + 1)
            writer.add_scalar(tags.IMG_S, throughput, epoch + 1)
        if diverged:
            return
        writer.add_scalar(tags.TRAIN_EPOCH_LOSS, train_loss, epoch + 1)
        context.broadcast_buffers(self.net)  # without sync BN each rank's running statistics saw only its shard
        test_loss, test_acc = self.evaluate()
        writer.add_scalar(tags.TEST_LOSS, test_loss, epoch + 1)
        writer.add_scalar(tags.TEST_ACC, test_acc, epoch + 1)
        progress.history[tags.TEST_ACC].append(test_acc)
        log.info(f"epoch {epoch + 1}/{self.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                 f"test loss {test_loss:.4f} acc {test_acc:.4f} | "
                 + ("no timed step" if throughput is None else f"{throughput:.0f} img/s"))
        self.scheduler.step()
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        # the next epoch's draws continue this one's: a resume from this checkpoint must not reseed them
        progress.epoch_rng = self.generator.get_state()
        progress.loss_sum, progress.correct, progress.seen = 0.0, 0, 0
        progress.test_loss, progress.test_acc = test_loss, test_acc
        self.checkpoint()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy; each rank evaluates its shard of every batch and the sums are pooled."""
        self.net.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        for images, labels in self.test_loader:
            if not len(labels):  # a last batch smaller than the number of ranks leaves some ranks nothing
                continue
            with self.forward_context():  # cross_entropy runs in float32 under autocast
                logits = self.net(images.contiguous(memory_format=self.memory_format))
                loss_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
            totals[0] += loss_sum
            totals[1] += (logits.argmax(1) == labels).sum()
            totals[2] += len(labels)
        self.net.train()
        loss_sum, correct, count = self.context.sum(totals).tolist()
        return loss_sum / count, correct / count

    def fit(self, stop: StopRequest) -> str | None:
        """Every epoch from progress.epoch on; returns the failure that ended the run, or None."""
        for epoch in range(self.progress.epoch, self.epochs):
            failure = self.epoch(epoch, stop)
            if failure is not None:
                log.warning(f"stopping: {failure}")
                return failure
        return None
