"""Data-parallel training (torchrun + DDP), shown on the CPU with the gloo backend and 2 processes:

- with trainer.sync_bn=true two processes each training on half of every batch follow the same
  loss curve as one process on the whole batch: in float64 (trainer.precision=fp64), equal to
  rounding, since only summation orders differ. (In float32 the tiny smoke network amplifies
  rounding ~1e3-fold per step at lr 0.1: changing the thread count alone moves its third loss
  by 5e-5, so float32 curves could only be compared loosely.)
- without it each rank normalizes by its own half's statistics, which is measurably another curve;
- only rank 0 writes events, checkpoints, metrics.json and the log; a SIGTERM stops both ranks
  at one step, and the resumed run ends as one never stopped;
- SyncBatchNorm2d is BatchNorm2d over the global batch, to float64 rounding, forward and backward;
- without a seed every rank takes rank 0's for the loader, so all draw the same batches.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anode_bench.distributed import Distributed, SyncBatchNorm2d
from anode_bench.train import run_seed

TORCHRUN = shutil.which("torchrun")
RUN = ["experiment=smoke", "grad=aca", "solver=rk4", "trainer.precision=fp64", "dataset.train_size=256", "dataset.test_size=100",
       "trainer.batch_size=16", "trainer.max_steps_per_epoch=4", "trainer.log_every=1", "trainer.threads=1", "probe.every=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def started(command, cwd):
    return subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def single_process_started(args, cwd):
    return started([sys.executable, "-m", "anode_bench.train", *args], cwd)


def two_processes_started(args, cwd):
    return started([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "anode_bench.train", *args], cwd)


def two_processes(args, cwd):
    return finished(two_processes_started(args, cwd))


def scalars(run_dir, tag):
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process on batch 16; two processes on 8 each, with and without sync BN. The three runs
    are independent single-threaded processes, so they run at once."""
    root = tmp_path_factory.mktemp("ddp")
    processes = {
        "single": single_process_started([*RUN, f"hydra.run.dir={root / 'single'}"], root),
        "sync_bn": two_processes_started([*RUN, "trainer.sync_bn=true", f"hydra.run.dir={root / 'sync_bn'}"], root),
        "local_bn": two_processes_started([*RUN, f"hydra.run.dir={root / 'local_bn'}"], root),
    }
    results = {name: finished(process) for name, process in processes.items()}
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    return {name: root / name for name in results}


pytestmark = [pytest.mark.slow, pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not on PATH"),
              pytest.mark.xdist_group(__name__)]  # one worker builds the module-scoped fixtures once


def test_two_processes_with_sync_bn_follow_the_single_process_loss_curve(runs):
    single, ddp = scalars(runs["single"], "train/loss"), scalars(runs["sync_bn"], "train/loss")
    assert len(single) == len(ddp) == 4
    assert ddp == pytest.approx(single, rel=1e-7)  # TensorBoard stores float32
    for tag in ("train/epoch_loss", "train/acc", "test/loss", "test/acc"):
        assert scalars(runs["sync_bn"], tag) == pytest.approx(scalars(runs["single"], tag), rel=1e-7), tag
    single_metrics, ddp_metrics = (json.loads((runs[name] / "metrics.json").read_text()) for name in ("single", "sync_bn"))
    assert ddp_metrics["test/loss"] == pytest.approx(single_metrics["test/loss"], rel=1e-10)
    # the gradient probe (rank 0, on a plain-BatchNorm copy) sees the same model: aca equals its
    # float64 reference to rounding in both
    assert max(scalars(runs["sync_bn"], "grad_error/rel_l2")) < 1e-13


def test_without_sync_bn_each_rank_normalizes_by_its_own_half(runs):
    single, local = scalars(runs["single"], "train/loss"), scalars(runs["local_bn"], "train/loss")
    assert max(abs(a - b) for a, b in zip(single, local)) > 1e-3


def test_only_rank_zero_writes(runs):
    for name in ("sync_bn", "local_bn"):
        run_dir = runs[name]
        events = sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))
        assert len({name.split(".")[-2] for name in events}) == 1, events  # one writing process (pid in the name)
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
        assert len(list((run_dir / "checkpoints").glob("step_*.pt"))) == 1
        log = (run_dir / "train.log").read_text()
        assert log.count("epoch 1/1: train loss") == 1, log


REFUSED = {
    "uneven-batch": (["trainer.batch_size=63"], "trainer.batch_size=63 must be divisible by the 2 torchrun processes "
                                                "(each trains on batch_size / processes images)"),
    "sync-bn-adaptive": (["trainer.sync_bn=true", "solver=bosh3"], "trainer.sync_bn=true cannot run the adaptive solver bosh3: "
                         "each rank picks its own steps, so their BatchNorm all_reduces would not pair up; use a fixed-step solver "
                         "or sync_bn=false"),
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Each case of REFUSED under torchrun, all launched at once (each is mostly imports): name -> (result, run dir)."""
    root = tmp_path_factory.mktemp("refused")
    processes = {}
    for name, (overrides, _) in REFUSED.items():
        (root / name).mkdir()
        processes[name] = two_processes_started([*RUN, *overrides, f"hydra.run.dir={root / name / 'run'}"], root / name)
    return {name: (finished(process), root / name / "run") for name, process in processes.items()}


@pytest.mark.parametrize("case", REFUSED)
def test_what_torchrun_cannot_run_is_refused_in_one_line(refused, case):
    result, run_dir = refused[case]
    message = REFUSED[case][1]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("anode-train:")]
    assert lines == [f"anode-train: {message}"]
    assert not (run_dir / "metrics.json").exists()


def _sync_bn_rank(rank, world_size, init_file, x, grad_out, state, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    bn = SyncBatchNorm2d(x.shape[1]).double()
    bn.load_state_dict(state)
    part = x.tensor_split(world_size)[rank].clone().requires_grad_()
    out = bn(part)
    out.backward(grad_out.tensor_split(world_size)[rank])
    results[rank] = (out.detach(), part.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)
    dist.destroy_process_group()


def test_sync_batchnorm_is_batchnorm_over_the_global_batch(tmp_path):
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64) * 3 + 1
    grad_out = torch.randn_like(x)
    reference = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    results = mp.Manager().dict()
    mp.spawn(_sync_bn_rank, args=(2, tmp_path / "init", x, grad_out, state, results), nprocs=2)
    whole = x.clone().requires_grad_()
    expected_out = reference(whole)
    expected_out.backward(grad_out)
    out = torch.cat([results[r][0] for r in range(2)])
    x_grad = torch.cat([results[r][1] for r in range(2)])
    torch.testing.assert_close(out, expected_out.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(x_grad, whole.grad, rtol=0, atol=1e-12)
    for rank in range(2):  # every rank's running statistics are the global batch's
        running_mean, running_var = results[rank][4:]
        torch.testing.assert_close(running_mean, reference.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(running_var, reference.running_var, rtol=0, atol=1e-12)
    # each rank holds its part of dL/dweight and dL/dbias; DDP's all_reduce sums them
    torch.testing.assert_close(results[0][2] + results[1][2], reference.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(results[0][3] + results[1][3], reference.bias.grad, rtol=0, atol=1e-12)


def _run_seed_rank(rank, world_size, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    results[rank] = run_seed(None, Distributed(rank, world_size))  # each process draws from the OS's entropy
    dist.destroy_process_group()


def test_ranks_without_a_seed_draw_the_same_batches(tmp_path):
    """trainer.seed=null under torchrun: each rank would seed its loader from its own draw, shuffle
    differently, and the ranks' slices would overlap and miss images; rank 0's seed goes to all."""
    results = mp.Manager().dict()
    mp.spawn(_run_seed_rank, args=(2, tmp_path / "init", results), nprocs=2)
    assert results[0] == results[1]


def test_sigterm_to_torchrun_checkpoints_once_and_resume_ends_as_an_uninterrupted_run(tmp_path):
    """torchrun forwards SIGTERM to both ranks; they agree at the next log step, rank 0 writes the
    checkpoint, and a resumed run ends with the same metrics (every one but the times) as a
    2-process run never stopped."""
    args = ["experiment=smoke", "dataset.train_size=512", "dataset.test_size=64", "trainer.epochs=3",
            "trainer.log_every=2", "probe.every=5", "trainer.threads=1", "trainer.sync_bn=true",
            "trainer.precision=fp64"]
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "anode_bench.train", *args]
    process = subprocess.Popen([*command, f"hydra.run.dir={interrupted}"], cwd=tmp_path, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole = two_processes_started([*args, f"hydra.run.dir={uninterrupted}"], tmp_path)  # the reference, meanwhile
    try:
        deadline = time.time() + 240
        while not (interrupted / "checkpoints").exists():  # the first epoch is done: stop during the second
            assert process.poll() is None and time.time() < deadline, "no checkpoint after the first epoch"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        assert (interrupted / "train.log").read_text().count("continue with trainer.resume=true") == 1
        assert not (interrupted / "metrics.json").exists()
        assert len(list((interrupted / "checkpoints").glob("step_*.pt"))) == 2  # epoch 1's and the signal's
        resumed = two_processes([*args, f"hydra.run.dir={interrupted}", "trainer.resume=true"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    except BaseException:
        whole.terminate()  # torchrun forwards it to its ranks
        raise
    whole = finished(whole)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # memory/peak_mib is left out too: a new process's first DDP backward allocates its gradient
    # buckets (measured: 1.5 KB more in the profiled step after the resume)
    metrics = [{k: v for k, v in json.loads((d / "metrics.json").read_text()).items()
                if not k.startswith(("time/", "memory/"))} for d in (interrupted, uninterrupted)]
    assert metrics[0] == metrics[1]


def test_an_adaptive_solve_that_fails_ends_both_ranks_as_diverged(tmp_path):
    """An adaptive solve past max_steps is a result, not a crash, under torchrun too: the ranks
    exchange failures between forward and backward, so none waits in DDP's backward for the others."""
    run_dir = tmp_path / "run"
    result = two_processes([*RUN, "solver=heun_euler", "solver.max_steps=3", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "needed more than max_steps=3" in metrics["failure"]


def _first_message_rank(rank, world_size, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    context = Distributed(rank, world_size)
    results[rank] = (context.first_message("solve failed on rank 1" if rank == 1 else None), context.first_message(None))
    dist.destroy_process_group()


def test_a_failure_on_one_rank_reaches_every_rank(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_first_message_rank, args=(2, tmp_path / "init", results), nprocs=2)
    assert dict(results) == {0: ("solve failed on rank 1", None), 1: ("solve failed on rank 1", None)}
