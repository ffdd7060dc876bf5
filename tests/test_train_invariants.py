"""What a training run must get right that its accuracy does not show.

- the gradient error is relative: scaling every gradient (the loss) by 1000 leaves it unchanged;
- the inputs are normalized with the training split's statistics, never the test split's;
- memory/peak_mib is the peak of its own log window, not of the run so far;
- a run stopped by SIGTERM and resumed draws the same global random numbers (dropout) as one
  never stopped;
- a run resumed from an epoch's-end checkpoint trains on the same batches as one never stopped;
- a resumed run shows TensorBoard the events of one never stopped;
- a checkpoint from another kind of device is refused; on CUDA a run resumes (gpu-marked).

The training checks run `train(cfg, run_dir)` in this process on an instrumented resnet_tiny,
registered as a model preset for the test: it can drop out its input (drawing from the global
RNG, which no shipped model does), record what it is fed, allocate scratch memory in one
chosen training step, and send its own process SIGTERM in one chosen step.
"""
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anode_bench.config import ConfigError
from anode_bench.metrics import gradient_error
from anode_bench.models import build_model
from anode_bench.models.registry import PRESETS, Preset
from anode_bench.models.resnet import ODEResNet
from anode_bench.train import CONFIG_DIR, train

BATCH = 16
SEEN = []  # (training mode, input) of every forward of an instrumented model, copies included


class Instrumented(ODEResNet):
    """resnet_tiny plus test hooks. dropout: F.dropout on the input (global RNG); record: keep every
    input in SEEN; scratch_mib / sigterm_at: in the training forward (batch size BATCH) of step
    `scratch_step` allocate and free that many MiB / at step `sigterm_at` signal this process."""

    def __init__(self, num_classes=10, ode=None, *, dropout=0.0, record=False, scratch_mib=0, scratch_step=0,
                 sigterm_at=-1, **kwargs):
        super().__init__(num_classes, ode, **kwargs)
        self.dropout, self.record, self.sigterm_at = dropout, record, sigterm_at
        self.scratch_mib, self.scratch_step = scratch_mib, scratch_step
        self.training_forwards = 0  # the probe's copies see probe.batch_size images, not BATCH

    def forward(self, x):
        if self.record:
            SEEN.append((self.training, x.detach().clone()))
        if self.training and len(x) == BATCH and x.dtype == torch.float32 and torch.is_grad_enabled():
            step, self.training_forwards = self.training_forwards, self.training_forwards + 1
            if step == self.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)  # the run checkpoints after this step and exits 143
            if self.scratch_mib and step == self.scratch_step:
                scratch = torch.ones(self.scratch_mib * 2**18, device=x.device)  # float32: 4 bytes each
                del scratch
        return super().forward(F.dropout(x, self.dropout, self.training) if self.dropout else x)


@pytest.fixture
def instrumented(monkeypatch):
    SEEN.clear()
    tiny = PRESETS["resnet_tiny"]
    monkeypatch.setitem(PRESETS, "instrumented", Preset(Instrumented, tiny.kwargs, "resnet_tiny with test hooks"))
    yield
    SEEN.clear()


def config(*overrides, arch=None):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=smoke", f"trainer.batch_size={BATCH}", "probe.batch_size=8", *overrides])
    OmegaConf.set_struct(cfg, False)
    cfg.model.name = "instrumented"
    cfg.model.arch = dict(arch or {})
    return cfg


# the gradient error is relative


class ScaledGradient(torch.nn.Module):
    """The same logits as `inner`; every gradient through them times `scale` (in float32 only, when
    `float32_only`, so that the float64 reference keeps the true gradient)."""

    def __init__(self, inner, scale, float32_only=False):
        super().__init__()
        self.inner, self.scale, self.float32_only = inner, scale, float32_only

    @property
    def ode_blocks(self):
        return self.inner.ode_blocks

    def forward(self, x):
        logits = self.inner(x)
        if self.float32_only and logits.dtype != torch.float32:
            return logits
        return logits.detach() + self.scale * (logits - logits.detach())


def probe_problem(grad):
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="euler", steps=1, grad=grad))
    return model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))


@pytest.mark.parametrize("grad", ["adjoint", "aca"])
def test_the_gradient_error_does_not_change_when_the_loss_is_scaled_by_1000(grad):
    model, images, labels = probe_problem(grad)
    plain = gradient_error(ScaledGradient(model, 1.0), images, labels)
    scaled = gradient_error(ScaledGradient(model, 1000.0), images, labels)
    assert plain["grad_error/rel_l2"] > 1e-8  # float32 against float64: never exactly 0
    for tag, value in plain.items():
        if tag == "grad_error/floor_ratio":  # error / floor: the floor is float32 rounding, which scaling reshuffles
            assert 0.5 < scaled[tag] / value < 2, (scaled[tag], value)
        else:
            assert scaled[tag] == pytest.approx(value, rel=1e-3, abs=1e-6), tag


def test_the_gradient_error_of_a_gradient_one_and_a_half_times_too_large_is_one_half():
    """g = 1.5 g_ref (aca: exact up to float32 rounding, 1e-6 against 0.5): ||g - g_ref|| / ||g_ref|| =
    0.5 and cosine 1, per block too; without the denominator, or with ||g|| in it, this is not 0.5."""
    model, images, labels = probe_problem("aca")
    errors = gradient_error(ScaledGradient(model, 1.5, float32_only=True), images, labels)
    assert errors["grad_error/cosine"] == pytest.approx(1.0, abs=1e-5)
    # the floor is direct on a copy of this model, scaled alike: as far off as the method, so ratio 1
    assert errors["grad_error/floor_ratio"] == pytest.approx(1.0, abs=1e-4)
    for tag, value in errors.items():
        if tag not in ("grad_error/cosine", "grad_error/floor_ratio"):
            assert value == pytest.approx(0.5, abs=1e-4), tag


# normalization


def write_npz(path, train_range, test_range, n_train=64, n_test=32):
    rng = np.random.default_rng(0)
    splits = {}
    for part, (lo, hi), n in (("train", train_range, n_train), ("test", test_range, n_test)):
        splits[f"x_{part}"] = rng.integers(lo, hi, (n, 32, 32, 3), dtype=np.uint8)
        splits[f"y_{part}"] = rng.integers(0, 10, n)
    np.savez(path, **splits)
    return splits


def test_inputs_are_normalized_with_the_training_splits_statistics(tmp_path, instrumented):
    """Train pixels in 0..119, test pixels in 60..254: the splits' means and stds differ, so only the
    training split's statistics turn every input the model sees back into integers 0..255 (crops pad
    with 0, flips permute), and the test inputs back into the test images."""
    data = write_npz(tmp_path / "data.npz", (0, 120), (60, 255))
    pixels = data["x_train"].reshape(-1, 3).astype(np.float64) / 255
    mean, std = pixels.mean(0), pixels.std(0)
    test_pixels = data["x_test"].reshape(-1, 3).astype(np.float64) / 255
    assert np.all(np.abs(test_pixels.std(0) / std - 1) > 0.2) and np.all(np.abs(test_pixels.mean(0) - mean) > 0.1)
    cfg = config(f"dataset.path={tmp_path / 'data.npz'}", "dataset.train_size=null", "dataset.test_size=null",
                 "trainer.max_steps_per_epoch=2", "probe.every=1", "trainer.eval_batch_size=32", arch={"record": True})
    cfg.dataset.name = "cifar10"  # smoke's synthetic data would ignore dataset.path
    train(cfg, tmp_path / "run", torch.device("cpu"))
    assert {training for training, _ in SEEN} == {True, False}
    to_pixels = lambda x: x.double() * torch.tensor(255 * std).view(1, 3, 1, 1) + torch.tensor(255 * mean).view(1, 3, 1, 1)  # noqa: E731
    for _, x in SEEN:
        pixels_back = to_pixels(x)
        assert (pixels_back - pixels_back.round()).abs().max() < 1e-3
        assert pixels_back.min() > -1e-3 and pixels_back.max() < 255 + 1e-3
    evaluated = torch.cat([to_pixels(x) for training, x in SEEN if not training])
    expected = torch.from_numpy(data["x_test"]).permute(0, 3, 1, 2).double()
    torch.testing.assert_close(evaluated, expected, rtol=0, atol=1e-3)


# peak memory per log window


def scalars(run_dir, tag):
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu,  # in `pytest -m gpu`, the GPU figures' tests part
                                               pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_the_peak_memory_of_each_log_window_is_that_windows_own(tmp_path, instrumented, device):
    """Step 0 allocates 64 MiB of scratch, no later step does. Log windows of one step; on the CPU the
    peak is measured at the probe steps 0, 2 and 4 (probe.every=2) and logged at 1, 3 and 5, on
    CUDA at every step. The first window's peak holds the scratch, every later one must not: a peak
    that is never reset repeats the first window's."""
    cfg = config("dataset.train_size=128", "dataset.test_size=32", "trainer.max_steps_per_epoch=6",
                 "trainer.log_every=1", "probe.every=2", f"trainer.device={device}",
                 arch={"scratch_mib": 64, "scratch_step": 0})
    run_dir = tmp_path / "run"
    train(cfg, run_dir, torch.device(device))
    peaks = scalars(run_dir, "memory/peak_mib")
    if device == "cpu":
        assert sorted(peaks) == [1, 3, 5]  # only windows with a measured step log a peak
    first, *later = [peaks[step] for step in sorted(peaks)]
    assert later and all(first - peak > 48 for peak in later), peaks
    assert max(later) - min(later) < 16, peaks


@pytest.mark.parametrize("device", DEVICES)
def test_the_peak_counts_the_model_and_the_step_not_what_else_lives_on_the_device(tmp_path, instrumented, device):
    """peak = parameters and momentum + the step's allocations, activation = peak - what was resident
    before the step. What was resident is the parameters, their gradients and the momentum buffers, not all
    the device holds: on CUDA not the GPU-resident dataset nor a 256 MiB tensor the caller keeps there (the
    first assertion), and the step's own allocations do not count them either (the second)."""
    ballast = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    cfg = config("dataset.train_size=128", "dataset.test_size=32", "trainer.max_steps_per_epoch=6",
                 "trainer.log_every=1", "probe.every=2", f"trainer.device={device}")
    run_dir = tmp_path / "run"
    train(cfg, run_dir, torch.device(device))
    peaks, activations = scalars(run_dir, "memory/peak_mib"), scalars(run_dir, "memory/activation_mib")
    model = build_model("instrumented", 10)
    state_mib = 3 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20  # weights, gradients, momentum
    later = sorted(peaks)[1:]  # the first window's step starts with no gradients nor momentum yet
    # a window of one step logs its peak at the step after it, the activation at the step itself
    assert later and all(abs(peaks[s] - activations[s - 1] - state_mib) < 1e-3 for s in later), (peaks, activations)
    assert all(peaks[s] < 64 for s in later), peaks
    del ballast


# the global RNG on resume


def comparable(metrics):
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "memory/")) and k not in ("git",)}


def final_weights(run_dir):
    newest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    return torch.load(newest, weights_only=True)["model"]


def test_a_resumed_run_draws_the_global_random_numbers_of_one_never_stopped(tmp_path, instrumented):
    """Input dropout draws from the global RNG at every training step. SIGTERM in step 5 of 12 (in the
    second of three epochs), then a resume: the weights, metrics and gradient errors must equal an
    uninterrupted run's to the bit, which they do only if the checkpoint's global RNG state is restored
    (the loader's generator alone does not carry the dropout masks)."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=3", "trainer.max_steps_per_epoch=4",
           "trainer.log_every=2", "probe.every=3"]
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit) as exit_info:
        train(config(*run, arch={"dropout": 0.2, "sigterm_at": 5}), stopped, torch.device("cpu"))
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert not (stopped / "metrics.json").exists()
    # the test hook that sent the signal is the one setting that changes: a resume refuses that unless told
    resumed = train(config(*run, "trainer.resume=true", "trainer.resume_override=true", arch={"dropout": 0.2}), stopped,
                    torch.device("cpu"))

    never_stopped = tmp_path / "never_stopped"
    uninterrupted = train(config(*run, arch={"dropout": 0.2}), never_stopped, torch.device("cpu"))
    assert comparable(resumed) == comparable(uninterrupted)
    assert json.loads((stopped / "metrics.json").read_text())["steps"] == 12
    weights, reference = final_weights(stopped), final_weights(never_stopped)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)



def test_a_run_without_a_seed_records_the_one_it_drew_and_repeats_with_it(tmp_path, instrumented):
    """trainer.seed=null draws a seed, and metrics.json records it: a run given that seed repeats the
    seedless one to the bit (weights, metrics, dropout masks from the global RNG), through a SIGTERM and
    resume whose new process must keep the first draw, and another seedless run draws another seed."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=2", "trainer.max_steps_per_epoch=4",
           "trainer.log_every=2", "probe.every=3"]
    seedless = tmp_path / "seedless"
    with pytest.raises(SystemExit):
        train(config(*run, "trainer.seed=null", arch={"dropout": 0.2, "sigterm_at": 5}), seedless, torch.device("cpu"))
    drawn = train(config(*run, "trainer.seed=null", "trainer.resume=true", "trainer.resume_override=true",
                         arch={"dropout": 0.2}), seedless, torch.device("cpu"))
    assert isinstance(drawn["seed"], int)
    seeded = tmp_path / "seeded"
    repeat = train(config(*run, f"trainer.seed={drawn['seed']}", arch={"dropout": 0.2}), seeded, torch.device("cpu"))
    assert comparable(repeat) == comparable(drawn)
    weights, reference = final_weights(seedless), final_weights(seeded)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    other = train(config(*run, "trainer.seed=null", "trainer.epochs=1"), tmp_path / "other", torch.device("cpu"))
    assert other["seed"] != drawn["seed"]  # two 32-bit draws agree once in 4e9


def test_a_checkpoint_from_before_the_seed_record_resumes_on_its_own_images(tmp_path, instrumented):
    """A seedless run checkpointed before metrics.json recorded seeds drew its synthetic images from seed 0:
    resumed, it keeps them (and its RNG states) and records no seed rather than a draw it never ran with.
    Emulated by a seed-0 run whose checkpoints lose their seed and whose resume says trainer.seed=null;
    resumed as the seed-0 run it was, it records seed 0."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=2", "trainer.max_steps_per_epoch=4",
           "trainer.log_every=2", "probe.every=3"]
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(config(*run, "trainer.seed=0", arch={"dropout": 0.2, "sigterm_at": 5}), stopped, torch.device("cpu"))
    for path in (stopped / "checkpoints").glob("step_*.pt"):
        state = torch.load(path, weights_only=True)
        del state["progress"]["seed"]
        torch.save(state, path)
    shutil.copytree(stopped, tmp_path / "seeded")
    seeded = train(config(*run, "trainer.seed=0", "trainer.resume=true", "trainer.resume_override=true",
                          arch={"dropout": 0.2}), tmp_path / "seeded", torch.device("cpu"))
    resumed = train(config(*run, "trainer.seed=null", "trainer.resume=true", "trainer.resume_override=true",
                           arch={"dropout": 0.2}), stopped, torch.device("cpu"))
    uninterrupted = train(config(*run, "trainer.seed=0", arch={"dropout": 0.2}), tmp_path / "never", torch.device("cpu"))
    assert resumed["seed"] is None and uninterrupted["seed"] == 0
    assert comparable(resumed) | {"seed": 0} == comparable(uninterrupted) == comparable(seeded)


def test_a_run_resumed_from_an_epochs_end_trains_on_the_batches_of_one_never_stopped(tmp_path, instrumented):
    """A run killed outright (SIGKILL, a lost machine) resumes from its last epoch's-end checkpoint.
    That checkpoint must carry the loader generator's state for the epoch to come: reseeding it
    from trainer.seed would replay the first epoch's shuffle and crops, and the weights would part
    from an uninterrupted run's. Resumed here from the run's own checkpoint after epoch 1 of 3."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=3", "trainer.max_steps_per_epoch=4",
           "probe.every=0", "trainer.keep_checkpoints=3"]
    never_stopped = tmp_path / "never_stopped"
    uninterrupted = train(config(*run), never_stopped, torch.device("cpu"))
    after_epoch_1 = never_stopped / "checkpoints" / "step_00000004.pt"
    assert torch.load(after_epoch_1, weights_only=False)["progress"]["step_in_epoch"] == 0

    resumed_dir = tmp_path / "resumed"
    resumed = train(config(*run, f"trainer.resume={after_epoch_1}"), resumed_dir, torch.device("cpu"))
    assert comparable(resumed) == comparable(uninterrupted)
    weights, reference = final_weights(resumed_dir), final_weights(never_stopped)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def every_scalar_tag(run_dir) -> list[str]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator.Tags()["scalars"]


def every_scalar(run_dir) -> dict:
    """{tag: [(step, value), ...]} of the run's events as TensorBoard shows them (purges applied), less clock times."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
            if "time/" not in tag and not tag.startswith("throughput/")}


@pytest.mark.parametrize("log_every, probe_every", [(2, 3), (4, 4)])
def test_a_resumed_run_shows_the_events_of_one_never_stopped(tmp_path, instrumented, log_every, probe_every):
    """SIGTERM after step 6 of 12, then a resume: TensorBoard must show every scalar at the steps and with the
    values of an uninterrupted run. (2, 3): the checkpoint falls on a log point, whose loss, NFE and memory were
    written before it and are purged with what came after. (4, 4): it falls inside a log window whose profiled
    step 4 set the window's peak memory, which the resumed run must still log at step 8. The epoch's timed
    seconds and images so far go into the checkpoint, so the resumed epoch's epoch_s and img/s are whole."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=3", "trainer.max_steps_per_epoch=4",
           f"trainer.log_every={log_every}", f"probe.every={probe_every}"]
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(config(*run, arch={"sigterm_at": 5}), stopped, torch.device("cpu"))
    # the stopped epoch's time and images so far travel in the checkpoint, so epoch 2's epoch_s is the whole epoch's
    so_far = torch.load(stopped / "checkpoints" / "step_00000006.pt", weights_only=True)["progress"]
    untimed = sum(1 for step in (4, 5) if step % probe_every == 0)  # steps 4 and 5 of epoch 2, profiled where probed
    assert so_far["timed_images"] == (2 - untimed) * BATCH and so_far["timed_s"] > 0
    train(config(*run, "trainer.resume=true", "trainer.resume_override=true"), stopped, torch.device("cpu"))
    never_stopped = tmp_path / "never_stopped"
    train(config(*run), never_stopped, torch.device("cpu"))
    shown, expected = every_scalar(stopped), every_scalar(never_stopped)
    assert shown.keys() == expected.keys() and expected["memory/peak_mib"]
    for tag in expected:  # CPU memory peaks move by a few KiB from run to run: their steps must agree
        steps_only = "memory/" in tag
        assert [(step, None if steps_only else value) for step, value in shown[tag]] == [
            (step, None if steps_only else value) for step, value in expected[tag]], tag


def test_a_checkpoint_from_another_kind_of_device_is_refused_in_one_line(tmp_path, instrumented):
    """The loader's generator lives on the training device, and a CUDA generator's state does not fit a CPU
    one: a CUDA run's checkpoint (its saved CUDA RNG state is how one is told) resumed on the CPU is refused,
    naming the device to resume on, before anything is written."""
    run = ["dataset.train_size=32", "dataset.test_size=16", "trainer.max_steps_per_epoch=2", "probe.every=0"]
    trained = tmp_path / "trained"
    train(config(*run), trained, torch.device("cpu"))
    [path] = (trained / "checkpoints").glob("*.pt")
    state = torch.load(path, weights_only=True)
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)  # as torch.cuda.get_rng_state() returns
    as_if_cuda = tmp_path / "as_if_cuda.pt"
    torch.save(state, as_if_cuda)
    resumed = tmp_path / "resumed"
    with pytest.raises(ConfigError, match=rf"^trainer.resume: {as_if_cuda} was trained on cuda, this run is on cpu; "
                                          r".*resume with trainer.device=cuda$"):
        train(config(*run, f"trainer.resume={as_if_cuda}"), resumed, torch.device("cpu"))
    assert not resumed.exists()


def test_a_checkpoint_of_another_process_count_is_refused_unless_overridden(tmp_path, instrumented):
    """Under torchrun each process trains on its slice of every batch: a checkpoint written by 2 processes
    resumed by 1 would not go on as the run began. Refused in one line before anything is written; with
    trainer.resume_override it continues, and metrics.json records both counts in order (one count, 1, for a
    run that kept it)."""
    run = ["dataset.train_size=32", "dataset.test_size=16", "trainer.max_steps_per_epoch=2", "probe.every=0"]
    trained = tmp_path / "trained"
    assert train(config(*run), trained, torch.device("cpu"))["processes"] == 1
    [path] = (trained / "checkpoints").glob("*.pt")
    state = torch.load(path, weights_only=True)
    state["progress"]["processes"], state["progress"]["epoch"] = [2], 0  # as 2 torchrun processes wrote it mid-run
    as_if_two = tmp_path / "as_if_two.pt"
    torch.save(state, as_if_two)
    resumed = tmp_path / "resumed"
    with pytest.raises(ConfigError, match=rf"^trainer.resume: {as_if_two} was trained by 2 processes, this run has 1; .*"
                                          r"resume with 2 \(torchrun --nproc_per_node=2\), or set "
                                          r"trainer.resume_override=true to continue with 1$"):
        train(config(*run, f"trainer.resume={as_if_two}"), resumed, torch.device("cpu"))
    assert not resumed.exists()
    metrics = train(config(*run, f"trainer.resume={as_if_two}", "trainer.resume_override=true"), resumed, torch.device("cpu"))
    assert metrics["processes"] == [2, 1]
    del state["progress"]["processes"]  # a checkpoint from before the count was kept resumes as it did
    torch.save(state, as_if_two)
    assert train(config(*run, f"trainer.resume={as_if_two}"), tmp_path / "old", torch.device("cpu"))["processes"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_run_resumes_from_its_checkpoint(tmp_path, instrumented):
    """On CUDA the checkpoint's RNG states (CPU byte tensors, which torch's setters require) must load as
    they were saved, not moved to the GPU: a run resumed from its epoch-1 checkpoint finishes all epochs."""
    run = ["dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=2", "trainer.max_steps_per_epoch=4",
           "probe.every=3", "trainer.keep_checkpoints=2", "trainer.device=cuda"]
    first = tmp_path / "first"
    train(config(*run), first, torch.device("cuda"))
    resumed = train(config(*run, f"trainer.resume={first / 'checkpoints' / 'step_00000004.pt'}"), tmp_path / "resumed",
                    torch.device("cuda"))
    assert resumed["status"] == "completed" and resumed["steps"] == 8


def test_a_run_whose_every_step_is_profiled_counts_its_state_once_and_times_nothing(tmp_path, instrumented):
    """probe.every=1 on the CPU profiles every step, so none is timed: no step time, no throughput (a
    made-up one from loop overhead would enter metrics.json). Memory as on CUDA, above what was resident
    before the step: the first step creates the gradients (peak during backward) inside its profile, so its
    activation holds them and its peak does not hold them twice; later steps replace the last step's
    gradients, which were resident before, so their activation holds no gradients (the profiler cannot
    see the old ones freed, so they are freed before it starts)."""
    cfg = config("dataset.train_size=64", "dataset.test_size=16", "trainer.max_steps_per_epoch=3", "trainer.log_every=1",
                 "probe.every=1")
    run_dir = tmp_path / "run"
    metrics = train(cfg, run_dir, torch.device("cpu"))
    peaks = [value for _, value in sorted(scalars(run_dir, "memory/peak_mib").items())]
    activations = [value for _, value in sorted(scalars(run_dir, "memory/activation_mib").items())]
    gradients_mib = sum(p.numel() for p in build_model("resnet_tiny", 10).parameters()) * 4 / 2**20
    assert len(peaks) == len(activations) == 3
    assert activations[0] - activations[1] > 0.8 * gradients_mib, (activations, gradients_mib)  # measured: 1.0
    assert activations[1] == activations[2] and peaks[0] < peaks[1] + gradients_mib / 4, (peaks, gradients_mib)
    assert metrics["time/step_ms"] is None
    assert not {"time/step_ms", "time/epoch_s", "throughput/img_s"} & set(every_scalar_tag(run_dir))


def test_a_nan_probe_leaves_every_gradient_mean_undefined_in_strict_json(tmp_path, instrumented):
    """lr 1e12: the probe at step 1 meets a nan model. The error, the floor and their ratio all read nan there,
    so all three means are undefined (null, as strict JSON has no nan), not the ratio of the finite probes alone.
    trainer.tf32=true on the CPU: TF32 applies to CUDA only, so metrics.json says it did not apply."""
    cfg = config("dataset.train_size=64", "dataset.test_size=16", "trainer.max_steps_per_epoch=4", "trainer.log_every=2",
                 "probe.every=1", "trainer.lr=1e12", "trainer.tf32=true")
    run_dir = tmp_path / "run"
    train(cfg, run_dir, torch.device("cpu"))

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["status"] == "diverged"
    assert metrics["grad_error/rel_l2_mean"] is None and metrics["grad_error/floor_ratio_mean"] is None
    assert metrics["tf32"] is False
