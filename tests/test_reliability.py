"""Reliability: preemption-safe resumable runs, divergence as a result, one clear line per bad input."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from anode_bench.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from anode_bench.config import CONFIG_DIR, ConfigError, validate
from anode_bench.run_state import remove_if_empty, resume_differences

RUN = ["experiment=smoke", "dataset.train_size=512", "dataset.test_size=64", "trainer.epochs=3",
       "trainer.log_every=3", "probe.every=5"]


def anode_train(args, cwd, **kwargs):
    """anode-train as a subprocess in cwd, one torch thread (the tiny runs gain nothing from more; on a busy
    machine extra OpenMP threads only spin)."""
    return subprocess.Popen([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"},
                            **kwargs)


def finished(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def files(run_dir):
    """Every file under run_dir (the .hydra record and train.log included) with its bytes."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def recorded_resume(record_dir):
    return OmegaConf.load(record_dir / "config.yaml").trainer.resume


def comparable(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.startswith("time/") and k != "git"}


def test_sigterm_checkpoints_and_the_printed_resume_command_ends_with_the_same_metrics(tmp_path):
    """The resume command the stopped run logs, pasted into a shell from another directory, continues
    it: it carries the run's own overrides (here a sweep-like dir name with `,` and `=`, and a list)."""
    interrupted, uninterrupted = tmp_path / "job=0,grad=direct", tmp_path / "uninterrupted"
    run = [*RUN, "+model.arch.widths=[4,8,16,32]", "trainer.threads=1"]  # one thread each: two runs at once
    process = anode_train([*run, f"hydra.run.dir='{interrupted}'"], tmp_path)
    reference = anode_train([*run, f"hydra.run.dir={uninterrupted}"], tmp_path)  # the uninterrupted run, meanwhile
    try:
        resume_from_the_printed_command(process, interrupted, tmp_path)
    except BaseException:
        reference.kill()
        raise
    code, stderr = finished(reference)
    assert code == 0, stderr[-2000:]
    assert comparable(interrupted) == comparable(uninterrupted)
    assert len(list((uninterrupted / "checkpoints").glob("*.pt"))) == 2  # the newest two are kept


def resume_from_the_printed_command(process, interrupted, tmp_path):
    """Stop `process` in its second epoch, then run the resume command it logged from another directory."""
    deadline = time.time() + 240
    while not (interrupted / "checkpoints").exists():  # the first epoch is done: stop during the second
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, stderr = finished(process)
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    [hint] = [line.split("continue with trainer.resume=true: ", 1)[1] for line in
              (interrupted / "train.log").read_text().splitlines() if "continue with trainer.resume=true: " in line]
    assert not (interrupted / "metrics.json").exists()

    bin_dir = tmp_path / "bin"  # `anode-train` as this Python runs it
    bin_dir.mkdir()
    (bin_dir / "anode-train").write_text(f'#!/bin/sh\nexec {sys.executable} -m anode_bench.train "$@"\n')
    (bin_dir / "anode-train").chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, stderr = finished(subprocess.Popen(["bash", "-c", hint], cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}))
    assert code == 0, (hint, stderr[-2000:])
    assert "resuming from" in (interrupted / "train.log").read_text()
    # each invocation's record is kept: the interrupted one's moved aside, the resume's in .hydra
    assert [recorded_resume(interrupted / d) for d in (".hydra.1", ".hydra")] == [False, True]


def test_resume_auto_lets_a_requeued_job_run_the_same_command_again(tmp_path):
    """trainer.resume=auto (for cluster requeues, which repeat the command): a fresh dir starts, a
    dir with a checkpoint continues (as resume=true, whose equivalence the test above shows), and
    a finished run is left untouched, every file of it, with exit 0."""
    run_dir = tmp_path / "run"
    no_probe = [arg for arg in RUN if not arg.startswith("probe.every=")] + ["probe.every=0"]  # not what this test is about
    command = [*no_probe, f"hydra.run.dir={run_dir}", "trainer.resume=auto"]
    process = anode_train(command, tmp_path)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert finished(process)[0] == 128 + signal.SIGTERM

    code, stderr = finished(anode_train(command, tmp_path))
    assert code == 0, stderr[-2000:]
    assert "resuming from" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3
    # both invocations recorded, as composed (resume=auto, not what it resolved to)
    assert [recorded_resume(run_dir / d) for d in (".hydra.1", ".hydra")] == ["auto", "auto"]
    written = files(run_dir)

    code, stderr = finished(anode_train(command, tmp_path))
    assert code == 0, stderr[-2000:]
    assert "already holds a finished run" in stderr
    assert files(run_dir) == written


def test_a_refused_run_leaves_every_file_of_the_run_dir_as_it_was(tmp_path):
    """A second run into a finished run's dir, with another learning rate and no resume, is refused in
    one line; the earlier run's record (.hydra/*.yaml, which Hydra itself would rewrite before the task
    starts) and its train.log stay byte for byte, as do its metrics, events and checkpoints."""
    run_dir = tmp_path / "run"
    tiny = ["experiment=smoke", "trainer.max_steps_per_epoch=2", "probe.every=0", "dataset.train_size=128",
            "dataset.test_size=32", f"hydra.run.dir={run_dir}"]
    code, stderr = finished(anode_train(tiny, tmp_path))
    assert code == 0, stderr[-2000:]
    written = files(run_dir)
    assert {".hydra/config.yaml", "train.log", "metrics.json"} <= {str(p) for p in written}

    code, stderr = finished(anode_train([*tiny, "trainer.lr=0.05"], tmp_path))
    assert code == 2
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"anode-train: {run_dir} already holds a run (checkpoints/step_00000002.pt, "
                           "events.out.tfevents.") and line.endswith(
        "metrics.json); nothing was overwritten: choose another hydra.run.dir, or continue it with trainer.resume=true")
    assert files(run_dir) == written


def test_no_other_run_writes_over_a_run_dir(tmp_path):
    """Everything a run dir holds stays byte for byte when another run is pointed at it: resume=auto on a finished
    run of another config (a sweep rerun into one dir with another fixed setting gets the same job names), a run
    while another process holds the dir's lock (two runs started in the same second share Hydra's default dir), a
    resume from another run's checkpoint, and a dir that holds checkpoints alone. Each is one line and exit 2."""
    import fcntl
    import shutil

    run_dir, other = tmp_path / "run", tmp_path / "other"
    tiny = ["experiment=smoke", "trainer.max_steps_per_epoch=2", "probe.every=0", "dataset.train_size=128",
            "dataset.test_size=32"]
    for directory in (run_dir, other):
        code, stderr = finished(anode_train([*tiny, f"hydra.run.dir={directory}"], tmp_path))
        assert code == 0, stderr[-2000:]
    shutil.copytree(run_dir / "checkpoints", tmp_path / "bare" / "checkpoints")
    written = files(run_dir)

    def refused(args, start):
        code, stderr = finished(anode_train([*tiny, *args], tmp_path))
        [line] = stderr.strip().splitlines()
        assert code == 2 and line.startswith(start), stderr[-2000:]
        return line

    line = refused(["trainer.lr=0.05", "trainer.resume=auto", f"hydra.run.dir={run_dir}"],
                   f"anode-train: trainer.resume=auto: {run_dir} already holds a finished run of another config, ")
    assert "differing in trainer.lr (0.1 -> 0.05)" in line
    with open(run_dir / ".anode-train.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
        refused([f"hydra.run.dir={run_dir}"], f"anode-train: {run_dir} is in use: another anode-train holds its ")
    refused([f"trainer.resume={other}", f"hydra.run.dir={run_dir}"], f"anode-train: {run_dir} already holds a run (")
    assert files(run_dir) == written
    bare = files(tmp_path / "bare")
    refused([f"hydra.run.dir={tmp_path / 'bare'}"],
            f"anode-train: {tmp_path / 'bare'} already holds a run (checkpoints/step_00000002.pt); nothing was overwritten")
    assert files(tmp_path / "bare") == bare
    code, stderr = finished(anode_train([*tiny, "trainer.resume=auto", f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0 and "already holds a finished run of this config" in stderr and files(run_dir) == written
    record = other / ".hydra" / "config.yaml"  # a run recorded before trainer.tf32 existed is still this config
    record.write_text("".join(line for line in record.read_text().splitlines(keepends=True) if "tf32:" not in line))
    code, stderr = finished(anode_train([*tiny, "trainer.resume=auto", f"hydra.run.dir={other}"], tmp_path))
    assert code == 0 and "already holds a finished run of this config" in stderr, stderr[-2000:]
    refused(["trainer.resume=true", f"hydra.run.dir={run_dir}"],  # the finished run itself: nothing left to train
            f"anode-train: trainer.resume: {run_dir / 'checkpoints' / 'step_00000002.pt'} is the end of this finished "
            "run (epoch 1 of trainer.epochs=1); nothing is left to train")
    assert files(run_dir) == written
    copy = tmp_path / "copy"  # the end of another run, into a new dir: it would write a second finished run
    refused([f"trainer.resume={run_dir}", f"hydra.run.dir={copy}"],
            f"anode-train: trainer.resume: {run_dir / 'checkpoints' / 'step_00000002.pt'} is the end of its run (epoch 1 "
            "of trainer.epochs=1); nothing is left to train")
    assert not copy.exists()


TINY = ["experiment=smoke", "trainer.max_steps_per_epoch=2", "probe.every=0", "dataset.train_size=128",
        "dataset.test_size=32", "solver=rk4", "grad=aca", "trainer.batch_size=32"]


def test_resume_auto_without_a_checkpoint_starts_afresh_and_sets_the_old_records_aside(tmp_path):
    """A job killed before its first checkpoint, requeued with resume=auto: it starts over, and what was
    recorded of the killed invocation (another config, here) is kept as .hydra.discarded.1, not as .hydra.1,
    the history anode-report reads: nothing of that invocation is in the new run."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("killed: before its first checkpoint\n")
    (run_dir / "events.out.tfevents.0.killed").write_bytes(b"")
    code, stderr = finished(anode_train([*TINY, "trainer.resume=auto", f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0, stderr[-2000:]
    assert sorted(p.name for p in run_dir.glob(".hydra*")) == [".hydra", ".hydra.discarded.1"]
    assert (run_dir / ".hydra.discarded.1" / "config.yaml").read_text() == "killed: before its first checkpoint\n"


def test_resume_refuses_a_changed_config_in_one_line_naming_the_keys(tmp_path):
    """A resume with only some of the run's overrides (rk4 + aca + batch 32 resumed as euler + direct
    + batch 64) is refused in one line that names each differing key, and leaves every file as it
    was; the run's own overrides plus keys that may change on resume (device, log_every, threads)
    are accepted, and trainer.resume_override=true continues a changed config on purpose."""
    run_dir = tmp_path / "run"
    code, stderr = finished(anode_train([*TINY, f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0, stderr[-2000:]
    written = files(run_dir)

    code, stderr = finished(anode_train(["experiment=smoke", "trainer.max_steps_per_epoch=2", "probe.every=0",
                                         "dataset.train_size=128", "dataset.test_size=32", "trainer.resume=true",
                                         f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 2
    [line] = stderr.strip().splitlines()
    assert line.startswith("anode-train: trainer.resume: the config differs from the one ")
    assert " was trained with in grad.name (aca -> direct), solver.name (rk4 -> euler), trainer.batch_size (32 -> 64); " in line
    assert line.endswith("or set trainer.resume_override=true to continue with this config")
    assert files(run_dir) == written

    # accepted: as a run killed after its last checkpoint, before metrics.json (a finished run has nothing to resume)
    (run_dir / "metrics.json").unlink()
    code, stderr = finished(anode_train([*TINY, "trainer.resume=true", "trainer.device=cpu", "trainer.log_every=1",
                                         "trainer.threads=1", f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0, stderr[-2000:]
    (run_dir / "metrics.json").unlink()
    code, stderr = finished(anode_train([*TINY[:-1], "trainer.resume=true", "trainer.resume_override=true",
                                         f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0, stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_an_old_checkpoint_without_a_config_is_compared_with_its_run_record(tmp_path):
    from anode_bench.checkpoint import changed_keys, checkpoint_config

    path = save_checkpoint(tmp_path, 3, {"step": 3})
    assert checkpoint_config(torch.load(path, weights_only=True), path) is None  # nothing to compare with
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("solver:\n  name: rk4\ntrainer:\n  resume: false\n")
    trained = checkpoint_config(torch.load(path, weights_only=True), path)
    assert trained == {"solver": {"name": "rk4"}, "trainer": {"resume": False}}
    now = {"solver": {"name": "euler"}, "trainer": {"resume": True, "tf32": True}}
    assert changed_keys(trained, now, ignored=("trainer.resume",)) == {
        "solver.name": ("rk4", "euler"), "trainer.tf32": ("<absent>", True)}
    own = save_checkpoint(tmp_path, 4, {"config": "solver:\n  name: heun\n"})  # its own config comes first
    assert checkpoint_config(torch.load(own, weights_only=True), own) == {"solver": {"name": "heun"}}


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    save_checkpoint(tmp_path, 4, {"step": 4})
    save_checkpoint(tmp_path, 8, {"step": 8})
    newest = tmp_path / "checkpoints" / "step_00000008.pt"
    newest.write_bytes(newest.read_bytes()[:50])
    state, path = load_checkpoint(tmp_path, map_location="cpu")
    assert state == {"step": 4} and path.name == "step_00000004.pt"
    (tmp_path / "checkpoints" / "step_00000004.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no readable checkpoint .*step_00000008.pt.*step_00000004.pt"):
        load_checkpoint(tmp_path, map_location="cpu")


def test_a_checkpoint_is_found_from_the_run_dir_its_checkpoints_folder_or_the_file(tmp_path):
    path = save_checkpoint(tmp_path, 4, {"step": 4})
    for source in (tmp_path, tmp_path / "checkpoints", path):
        assert load_checkpoint(source, map_location="cpu") == ({"step": 4}, path)
    with pytest.raises(CheckpointError, match=r"^no checkpoint to resume from in .*empty/checkpoints: give a run dir, its "
                                              r"checkpoints/ folder or one step_\*.pt file$"):
        load_checkpoint(tmp_path / "empty", map_location="cpu")


def test_a_resume_past_an_unreadable_checkpoint_keeps_its_own(tmp_path):
    """Resumed from step 4 past an unreadable step 8, the run checkpoints step 6 with keep=1: step 6 must stay
    (pruning counted step 8 as the one kept and deleted it), step 8 is left as it was, step 4 goes."""
    save_checkpoint(tmp_path, 4, {"step": 4}, keep=1)
    unreadable = tmp_path / "checkpoints" / "step_00000008.pt"
    unreadable.write_bytes(b"truncated")
    save_checkpoint(tmp_path, 6, {"step": 6}, keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000006.pt", "step_00000008.pt"]
    assert unreadable.read_bytes() == b"truncated"
    assert load_checkpoint(tmp_path, map_location="cpu")[0] == {"step": 6}


def test_checkpoints_are_written_atomically_and_pruned(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {"weights": torch.ones(3) * step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000003.pt", "step_00000004.pt"]


def test_a_multirun_with_one_diverging_job_finishes_both(tmp_path):
    sweep = tmp_path / "sweep"
    code, stderr = finished(anode_train(["-m", "experiment=smoke", "trainer.max_steps_per_epoch=3", "trainer.log_every=1",
                                         "probe.every=0", "dataset.test_size=32",  # neither is what the test is about
                                         "trainer.lr=0.05,1e12", f"hydra.sweep.dir={sweep}"], tmp_path))
    assert code == 0, stderr[-2000:]
    statuses = {float(dict(kv.split("=") for kv in job.name.split("_", 1)[1].split(","))["trainer.lr"]):
                json.loads((job / "metrics.json").read_text()) for job in sweep.iterdir() if job.is_dir()}
    assert statuses[0.05]["status"] == "completed"
    assert statuses[1e12]["status"] == "diverged" and "loss nan" in statuses[1e12]["failure"]


@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("trainer.lr=-0.1", "trainer.lr must be > 0"),
    ("trainer.lr=fast", "trainer.lr: Value 'fast' of type 'str' could not be converted to Float"),
    ("+trainer.epoch=3", "trainer.epoch is not a key of trainer; did you mean trainer.epochs?"),
    ("trainer.batch_size=0", "trainer.batch_size and eval_batch_size must be >= 1"),
    ("trainer.schedule=linear", "trainer.schedule 'linear' unknown; choose from step, cosine, constant"),
    ("trainer.device=tpu", "trainer.device 'tpu' unknown; choose from auto, cpu, cuda"),
    ("solver.steps=0", "steps must be an integer >= 1, got 0"),
    ("solver.steps=2.5", "steps must be an integer >= 1, got 2.5"),
    ("model.name=vgg", "model.name 'vgg' unknown; choose from resnet, sqnxt"),
    ("grad.name=naive", "grad 'naive' unknown; choose from direct, adjoint, anode, aca"),
    ("probe.reference=coarse", "probe.reference 'coarse' unknown; choose from discrete, fine"),
    ("dataset.num_classes=100", "dataset.num_classes=100 does not fit cifar10, which has 10 classes"),
    ("dataset.train_size=0", "dataset.train_size must be >= 1 or null"),
    ("dataset=synthetic dataset.path=x.npz", "dataset.path=x.npz does not apply to dataset=synthetic"),
    ("trainer.seed=-1", "trainer.seed must be >= 0 or null (a random seed), got -1"),
    ("trainer.milestones=[2,2]", "trainer.milestones must be strictly increasing epochs >= 1, got [2, 2]"),
    ("trainer.resume=yes", "trainer.resume=yes: no such file or directory; trainer.resume takes true (this run dir's "
                           "newest checkpoint), auto (that, or a fresh start), false, or a run dir or checkpoint file"),
    # a null the ODE core would replace by its default while the run's record says null
    ("solver.steps=null", "fixed-step solver 'euler' needs steps"),
    ("solver=dopri5 solver.name=euler", "fixed-step solver 'euler' needs steps"),
    ("solver=dopri5 solver.rtol=null", "solver.rtol=null: the adaptive solver dopri5 needs a value"),
    ("solver=heun_euler solver.max_steps=null", "solver.max_steps=null: the adaptive solver heun_euler needs a value"),
    ("solver=bosh3 ~solver.atol", "solver.atol=(deleted): the adaptive solver bosh3 needs a value"),
    # the model's own check, before any data loads
    ("model=resnet_tiny +model.arch.blocks=[1]", "model.arch: need one width per stage and one block count per stage"),
])
def test_bad_config_values_are_refused_in_one_line(override, message):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            cfg = compose(config_name="train", overrides=override.split())
        except Exception as error:  # Hydra itself refused the override (a type the yaml cannot hold)
            pytest.fail(f"compose refused {override}: {error}")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.device=cuda"])
    with pytest.raises(ConfigError, match="trainer.device=cuda but CUDA is not available"):
        validate(cfg)


def test_meaningless_combinations_are_refused():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["solver=dopri5", "solver.steps=4"])
    with pytest.raises(ConfigError, match="solver.steps=4 makes no sense for the adaptive solver dopri5"):
        validate(cfg)


def fixed_step_solvers() -> list[str]:
    from anode_bench.ode import SCHEMES

    return [name for name, scheme in SCHEMES.items() if not scheme.adaptive]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")))
def test_every_experiment_validates_on_every_fixed_step_solver(experiment):
    """Each experiment's discrete baseline is the experiment with grad=direct solver=euler (N_t = 1):
    what an experiment pins for its adaptive runs (aca_cifar10's rtol) stays in the config and must pass."""
    for solver in fixed_step_solvers():
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"experiment={experiment}", "grad=direct", f"solver={solver}",
                                                                  "solver.steps=1"])
        validate(cfg)


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    code, stderr = finished(anode_train(["experiment=smoke", "dataset.train_size=64", "trainer.batch_size=128",
                                         f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 2
    assert stderr.strip().splitlines() == ["anode-train: trainer.batch_size=128 exceeds the 64 training images; "
                                           "choose trainer.batch_size <= 64 or more images (dataset.train_size)"]
    assert not run_dir.exists()  # no record, events, checkpoints or empty train.log: free to rerun


def test_a_probe_batch_larger_than_the_training_set_is_refused_not_cut_short(tmp_path):
    """The probe's batch is the first probe.batch_size training images: with fewer, the loader would hand it a
    shorter batch and the run would measure on images it was not asked for. probe.every=0 takes no probe batch."""
    run_dir = tmp_path / "run"
    code, stderr = finished(anode_train(["experiment=smoke", "dataset.train_size=64", "trainer.batch_size=32",
                                         "probe.batch_size=100", f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 2
    assert stderr.strip().splitlines() == ["anode-train: probe.batch_size=100 exceeds the 64 training images; "
                                           "choose probe.batch_size <= 64 or more images (dataset.train_size)"]
    assert not run_dir.exists()
    code, stderr = finished(anode_train(["experiment=smoke", "dataset.train_size=64", "trainer.batch_size=32",
                                         "probe.batch_size=100", "probe.every=0", "trainer.max_steps_per_epoch=1",
                                         f"hydra.run.dir={run_dir}"], tmp_path))
    assert code == 0, stderr


def test_the_cli_answers_bad_input_with_one_line_and_exit_2_before_touching_data(tmp_path):
    code, stderr = finished(anode_train(["dataset=cifar100", "trainer.epochs=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path))
    assert code == 2
    assert stderr.strip().splitlines() == ["anode-train: trainer.epochs must be >= 1, got 0"]
    assert not (tmp_path / "data").exists()
    (tmp_path / "outputs" / "2026-01-01").mkdir(parents=True)  # another day's: not this refusal's to remove
    code, stderr = finished(anode_train(["experiment=smoke", "trainer.resume=true"], tmp_path))  # the default run dir
    assert code == 2 and sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["2026-01-01"]
    [line] = stderr.strip().splitlines()
    named = tmp_path / "named" / "2026-01-05" / "run"  # a date-named dir the user chose stays, though empty
    named.mkdir(parents=True)
    remove_if_empty(named)
    assert not named.exists() and (tmp_path / "named" / "2026-01-05").is_dir()
    code, swept = finished(anode_train(["-m", "experiment=smoke", "trainer.resume=true", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                                       tmp_path))
    assert code == 1 and "holds no checkpoint: name the run, hydra.sweep.dir=SWEEP_DIR" in swept, swept
    assert re.fullmatch(r"anode-train: trainer.resume=true continues the run in its run dir, and \S+/outputs/"
                        r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d holds no checkpoint: name the run, hydra.run.dir=RUN_DIR \(or "
                        r"trainer.resume=RUN_DIR to continue it in a new directory\)", line), line


def test_a_filesystem_without_flock_runs_unguarded_and_says_so(tmp_path, monkeypatch, caplog):
    """Lustre mounted without flock answers ENOSYS: the run goes on without the lock, with a warning, instead of
    crashing every run there."""
    import errno
    import fcntl

    from anode_bench import train as train_module

    def no_flock(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with train_module.run_dir_lock(tmp_path) as lock:
        assert lock.held
    assert any("no lock on this filesystem" in r.getMessage() for r in caplog.records)


def trained_with(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("trained, now, listed", [
    # another option: its own keys at their defaults go with its name; a value the user set is still named
    (["grad=aca"], ["grad=direct"], "grad.name (aca -> direct)"),
    (["solver=dopri5", "solver.rtol=1e-4", "solver.atol=1e-4"], ["solver=euler"],
     "solver.atol (0.0001 -> <absent>), solver.name (dopri5 -> euler), solver.rtol (0.0001 -> <absent>), "
     "solver.steps (None -> 2)"),  # max_steps: dopri5's default 1000
    (["grad=direct", "grad.step_sizes=constant"], ["grad=direct"], "grad.step_sizes (constant -> differentiated)"),
])
def test_resume_names_what_changed_but_not_what_comes_with_a_changed_option(trained, now, listed):
    old = OmegaConf.to_container(trained_with(trained), resolve=True)
    assert resume_differences(old, trained_with(now)) == listed


def test_a_direct_run_from_before_grad_step_sizes_resumes_as_differentiated_and_not_as_constant():
    """It differentiated its step sizes: resumable as today's default, and a finished one is no run of the
    constant option (trainer.resume=auto must not take it for one)."""
    old = OmegaConf.to_container(trained_with(["grad=direct"]), resolve=True)
    del old["grad"]["step_sizes"]
    assert resume_differences(old, trained_with(["grad=direct"])) == ""
    assert resume_differences(old, trained_with(["grad.step_sizes=constant"]), new_keys=False) == (
        "grad.step_sizes (differentiated -> constant)")
