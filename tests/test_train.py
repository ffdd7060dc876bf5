"""anode-train: every config option composes, a run leaves the promised artefacts, sweeps run every job."""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anode_bench import tags
from anode_bench.build import ode_settings
from anode_bench.config import CONFIG_DIR
from anode_bench.metrics import gradient_error
from anode_bench.models import build_model
from anode_bench.ode import ODEBlock
from anode_bench.report import LAYOUT

GROUPS = {group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
          for group in ("dataset", "model", "solver", "grad", "trainer", "probe", "experiment")}
TAGS = {
    "train/loss", "train/acc", "test/loss", "test/acc", "grad_error/rel_l2", "grad_error/cosine", "grad_error/block_0",
    "memory/peak_mib", "memory/activation_mib", "nfe/forward", "nfe/backward", "nfe/rejected", "nfe/host_syncs",
    "time/step_ms", "time/epoch_s", "throughput/img_s",
}
SMOKE = ["experiment=smoke", "trainer.max_steps_per_epoch=3", "trainer.log_every=2", "probe.every=2",
         "dataset.train_size=256", "dataset.test_size=64"]


def composed(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("group, option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_option_composes_into_objects(group, option):
    cfg = composed([f"{group}={option}"])
    ODEBlock(torch.nn.Identity(), **ode_settings(cfg))
    if group == "model":
        model = build_model(cfg.model.name, cfg.dataset.num_classes, ode_settings(cfg), **cfg.model.arch)
        assert len(model.ode_blocks) > 0
    assert cfg.dataset.num_classes in (10, 100)


def run_cli(args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def scalars(run_dir, tag):
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def scalar_tags(run_dir):
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def test_a_run_writes_config_every_tensorboard_tag_and_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*SMOKE, "grad=aca", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert TAGS <= scalar_tags(run_dir), TAGS - scalar_tags(run_dir)
    charts = [re.compile(regex) for section in LAYOUT.values() for _, regexes in section.values() for regex in regexes]
    uncharted = [tag for tag in scalar_tags(run_dir)  # final/*: metrics.json's numbers, for the HPARAMS tab
                 if not tag.startswith(tags.FINAL_PREFIX) and not any(chart.match(tag) for chart in charts)]
    assert not uncharted, f"logged but missing from anode-report's custom-scalars layout: {uncharted}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    assert metrics["nfe/forward"] == metrics["nfe/backward"] > 0  # aca: one recompute per forward evaluation
    accuracy = scalars(run_dir, "test/acc")
    assert list(accuracy) == [1] and metrics["test/acc"] == pytest.approx(accuracy[1], abs=1e-7)
    assert (metrics["test/acc"] * 64) == round(metrics["test/acc"] * 64)  # a count of the 64 test images
    # aca in float32 against float64 on the same grid: rounding only, so at the precision floor (direct in
    # float32 on that grid). The floor itself depends on the arithmetic: 2.0e-6 at both probes with two
    # torch threads, 2.0e-6 and 2.7e-3 with one (a ReLU or BatchNorm near a kink in blocks 0-2), so only
    # the ratio is fixed: aca and direct do the same float32 operations (1.0 measured); a real error, the
    # adjoint's, reads 1e2-1e5 times the floor.
    errors, floors = scalars(run_dir, tags.GRAD_REL_L2), scalars(run_dir, tags.GRAD_FLOOR)
    ratios = scalars(run_dir, tags.GRAD_FLOOR_RATIO)
    assert list(errors) == list(floors) == list(ratios) == [0, 2]
    assert all(0 < e < 1e-2 for e in errors.values()) and all(0.8 <= r <= 1.5 for r in ratios.values()), (errors, ratios)
    assert all(ratios[s] == pytest.approx(errors[s] / floors[s], rel=1e-5) for s in ratios)
    assert metrics["grad_error/rel_l2_mean"] == pytest.approx(sum(errors.values()) / 2, rel=1e-6)


def test_a_multirun_gives_every_job_its_own_run_dir(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", *SMOKE, "grad=direct,adjoint", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(jobs) == 2
    grads = {job.name.split("grad=")[1].split(",")[0] for job in jobs}
    assert grads == {"direct", "adjoint"}
    errors = {job.name: json.loads((job / "metrics.json").read_text())["grad_error/rel_l2_mean"] for job in jobs}
    assert all(e is not None for e in errors.values())


def test_gradient_probe_leaves_training_state_untouched():
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="rk4", steps=2, grad="adjoint"))
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    errors = gradient_error(model, images, labels)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # two-sided: the value is ||g - g_ref|| / ||g_ref|| of the adjoint's float32 gradient against float64
    # direct on the same grid, computed here by hand (and visibly wrong: the adjoint on conv-BN-ReLU)
    g, g_ref = (flat_gradient(m, x, labels) for m, x in (
        (copy.deepcopy(model), images), (copy.deepcopy(model).double().configure_ode(grad="direct"), images.double())))
    expected = float((g - g_ref).norm() / g_ref.norm())
    assert errors["grad_error/rel_l2"] == pytest.approx(expected, rel=1e-6) and expected > 1e-3
    assert errors["grad_error/cosine"] == pytest.approx(float(torch.nn.functional.cosine_similarity(g, g_ref, dim=0)), abs=1e-9)
    assert {f"grad_error/block_{i}" for i in range(len(model.ode_blocks))} <= set(errors)


def flat_gradient(model, images, labels):
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    return torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(loss, list(model.parameters()))])


@pytest.mark.parametrize("reference", ["discrete", "fine"])
def test_exact_methods_match_the_discrete_reference_but_not_the_fine_one(reference):
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="euler", steps=2, grad="aca")).double()
    images, labels = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    error = gradient_error(model, images, labels, reference=reference)["grad_error/rel_l2"]
    assert (error < 1e-10) if reference == "discrete" else (error > 1e-4)


def test_a_diverging_run_records_it_and_exits_zero_so_sweeps_go_on(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*SMOKE, "trainer.lr=1e12", "trainer.log_every=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "training loss nan" in metrics["failure"]


def test_a_run_refuses_a_directory_that_already_holds_results(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "completed"}')
    result = run_cli([*SMOKE, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode != 0 and "already holds a run" in result.stderr
    assert (run_dir / "metrics.json").read_text() == '{"status": "completed"}'


PROFILED = """
import os, sys, warnings
import torch
from anode_bench.metrics import peak_memory_mib
x = torch.randn(256, 256)
def work():
    global x
    x = x @ x  # frees a block made before the profiler started: c10's "unknown size" line
    os.write(2, b"native: a real warning\\n")
    warnings.warn("python: a real warning")
for _ in range(2):
    print(peak_memory_mib(work))
"""


def test_cpu_memory_probe_drops_the_profilers_chatter_and_nothing_else(tmp_path):
    """A healthy CPU probe prints no `USDT ... profiler_start`, `gpuGetDeviceCount failed` or
    `Memory block of unknown size`; what else reaches fd 2 in the window still arrives, in order."""
    result = subprocess.run([sys.executable, "-c", PROFILED], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "a real warning" not in line and not line.startswith("  ")] == []
    assert sum("native: a real warning" in line for line in lines) == 2
    assert any("UserWarning: python: a real warning" in line for line in lines)
    assert all(float(peak) > 0.2 for peak in result.stdout.split())  # the 256x256 float32 product: 0.25 MiB


def test_a_sweep_names_jobs_by_what_it_swept_and_ends_with_the_report_command(tmp_path):
    """An absolute dataset.path in a sweep made nested folders (its / in the job name); now paths and
    the overrides a sweep does not vary stay out of the names."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    data = tmp_path / "data" / "cifar10_tiny.npz"
    data.parent.mkdir()
    np.savez(data, x_train=images(64), y_train=rng.integers(0, 10, 64), x_test=images(16), y_test=rng.integers(0, 10, 16))
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "dataset=cifar10", f"dataset.path={data}", "model=resnet_tiny", "trainer.device=cpu",
                      "trainer.epochs=1", "trainer.batch_size=32", "trainer.max_steps_per_epoch=1", "probe.every=0",
                      "grad=direct,aca", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir()) == ["0_grad=direct", "1_grad=aca", "multirun.yaml"]
    assert all((sweep / job / "metrics.json").exists() for job in ("0_grad=direct", "1_grad=aca"))
    assert result.stderr.strip().splitlines()[-2:] == [f"anode-train: sweep of 2 runs (2 completed) in {sweep}",
                                                       f"compare them with: anode-report {sweep}"]


def test_a_job_refused_in_a_sweep_fails_alone_and_the_sweep_still_ends_with_its_summary(tmp_path):
    """Job 0 asks for more images per batch than it has: its one line, then job 1 trains; the sweep exits 1 (a
    failed job) and still prints what its job dirs hold and the anode-report command."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "anode_bench.train", "-m", "experiment=smoke", "trainer.threads=1",
                             "trainer.max_steps_per_epoch=1", "probe.every=0", "dataset.train_size=16,64",
                             "dataset.test_size=16", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert "anode-train: trainer.batch_size=64 exceeds the 16 training images; choose trainer.batch_size <= 16 or more "\
           "images (dataset.train_size)" in lines
    assert (sweep / "1_dataset.train_size=64" / "metrics.json").exists() and not (sweep / "0_dataset.train_size=16").exists()
    assert lines[-2:] == [f"anode-train: sweep of 1 run (1 completed) in {sweep}; a job refused before its run began left "
                          "no directory (its line is above)", f"compare them with: anode-report {sweep}"]


def test_a_sweep_whose_every_job_was_refused_names_no_report_to_run(tmp_path):
    """Nothing ran, so there is nothing for anode-report to compare: the summary says so and stops there."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "anode_bench.train", "-m", "experiment=smoke", "trainer.threads=1",
                             "dataset.train_size=16,17", "dataset.test_size=16", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"anode-train: sweep of 0 runs (no job got under way) in {sweep}; a job refused before its run "
                         "began left no directory (its line is above)")
    assert "anode-report" not in result.stderr


def test_a_run_off_a_terminal_prints_where_it_writes_plain_progress_lines_and_a_summary(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*SMOKE, "trainer.milestones=[30,60]", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "\r" not in console  # no progress bar redraws in a log file
    lines = [line.split("] - ", 1)[1] for line in console.splitlines() if "] - " in line]
    assert lines[0] == f"run dir {run_dir}: resnet_tiny, euler N_t=2, grad direct, 1 epoch of 3 steps on cpu"
    # the default schedule's milestones (smoke has none) lie past this one-epoch run: said once, so a short run's
    # constant rate is no surprise
    assert lines[1] == "trainer.milestones [30, 60]: at or past this run's 1 epoch, the learning rate does not drop there"
    assert "epoch 1/1 step 2/3: loss " in lines[2]
    assert lines[-1].startswith("completed after 1 epoch, 3 steps: test acc ")
    assert f"Written to {run_dir}: metrics.json" in lines[-1] and "peak memory" in lines[-1]
    assert [line for line in console.splitlines() if "] - " not in line and line.strip()] == []  # nothing else


def hparams_of(run_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}, accumulator


def test_metrics_and_hparams_name_the_run_and_each_tag_family_has_one_x_axis(tmp_path):
    """metrics.json says which model, grad and solver (N_t, or rtol/atol when adaptive) it measured
    and the wall time; HParams carries rtol/atol; one event file, per-step tags on the global step,
    per-epoch tags on the epoch, final/* on the last step (never a second file at step 0)."""
    run_dir = tmp_path / "run"
    result = run_cli([*SMOKE, "trainer.epochs=2", "solver=heun_euler", "solver.rtol=0.05", "solver.atol=0.02",
                      "trainer.batch_size=16", "probe.batch_size=16", f"hydra.run.dir={run_dir}"], tmp_path)  # small: tags, not numbers
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {k: metrics[k] for k in ("model", "grad", "solver", "solver.steps", "solver.rtol", "solver.atol")} == {
        "model": "resnet_tiny", "grad": "direct", "solver": "heun_euler", "solver.steps": None, "solver.rtol": 0.05,
        "solver.atol": 0.02}
    assert 0 < metrics["time/wall_s"] < 300
    assert [p.name for p in run_dir.rglob("events.out.tfevents.*")] == [p.name for p in run_dir.glob("events.out.tfevents.*")]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    hparams, accumulator = hparams_of(run_dir)
    assert (hparams["rtol"], hparams["atol"], hparams["steps"], hparams["solver"]) == (0.05, 0.02, -1, "heun_euler")
    steps = {tag: [e.step for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    for tag in ("train/acc", "train/epoch_loss", "test/acc", "test/loss", "time/epoch_s", "throughput/img_s"):
        assert steps[tag] == [1, 2], (tag, steps[tag])
    for tag in ("train/loss", "nfe/forward"):
        assert steps[tag] == [2, 3, 4, 6], (tag, steps[tag])  # every log_every=2nd step, and each epoch's last (3, 6)
    assert steps["time/step_ms"] == [2, 4, 6]  # the window ending at 3 holds only step 2, profiled (CPU): no time
    assert steps["grad_error/rel_l2"] == [0, 2, 4]
    finals = [tag for tag in steps if tag.startswith("final/")]
    assert "final/test/acc" in finals and all(steps[tag] == [6] for tag in finals)


def test_a_run_on_a_terminal_shows_the_progress_bar_instead_of_step_lines(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()  # stdout (Hydra's log lines) and stderr (tqdm) are a terminal
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns (a new pty has 0)
    process = subprocess.Popen([sys.executable, "-m", "anode_bench.train", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}"],
                               cwd=tmp_path, stdout=terminal, stderr=terminal, env=os.environ.copy())
    os.close(terminal)
    console = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the run closed its end
            break
        if not chunk:
            break
        console += chunk
    assert process.wait(timeout=300) == 0, console[-3000:]
    text = console.decode(errors="replace")
    assert "epoch 1/1: " in text and "\r" in text and "it/s" in text  # tqdm's bar
    assert "epoch 1/1 step " not in text  # no plain step lines beside it
