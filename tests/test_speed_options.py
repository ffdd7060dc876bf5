"""The trainer's speed options change how a step runs, not what it computes:

- trainer.precision=bf16 trains under autocast; parameters stay float32 and the gradient probe's
  reference stays float64, so the probe reports bf16's own gradient error (far above float32's);
- trainer.compile=true (torch.compile of every ODE block's f) follows the eager loss curve;
- trainer.channels_last is refused on the CPU with one line (a CUDA option; see config.py).
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

RUN = ["experiment=smoke", "grad=aca", "solver=rk4", "dataset.train_size=256", "dataset.test_size=64",
       "trainer.max_steps_per_epoch=3", "trainer.log_every=1", "probe.every=1"]


def anode_train(args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def run(tmp_path, name, *overrides):
    result = anode_train([*RUN, *overrides, f"hydra.run.dir={tmp_path / name}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for limit in ("recompile_limit", "cache_size_limit"):  # dynamo's warning (torch >= 2.7, older): past it, f runs eager
        assert limit not in result.stderr, result.stderr[-3000:]
    accumulator = EventAccumulator(str(tmp_path / name))
    accumulator.Reload()
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    logged = accumulator.Tags()["scalars"]
    return metrics, {tag: [e.value for e in accumulator.Scalars(tag)] for tag in ("train/loss", "grad_error/rel_l2") if tag in logged}


def test_bf16_trains_under_autocast_and_the_probe_measures_against_float64(tmp_path):
    with ThreadPoolExecutor(2) as pool:  # both runs at once, one thread each: the CPU's cores share them
        fp32_run = pool.submit(run, tmp_path, "fp32", "trainer.threads=1")
        bf16_run = pool.submit(run, tmp_path, "bf16", "trainer.precision=bf16", "trainer.threads=1")
        (_, fp32), (bf16_metrics, bf16) = fp32_run.result(), bf16_run.result()
    assert bf16_metrics["status"] == "completed"
    # measured: float32 aca against the float64 reference 1.5e-6 to 8e-4 (this tiny network's BatchNorm
    # amplifies rounding), bf16 0.2 to 0.25; a reference computed in bf16 would hide the difference
    assert min(bf16["grad_error/rel_l2"]) > 30 * max(fp32["grad_error/rel_l2"])
    assert bf16["train/loss"] != fp32["train/loss"]
    state = torch.load(next((tmp_path / "bf16" / "checkpoints").glob("step_*.pt")), map_location="cpu")
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float32}  # autocast, not .bfloat16()


@pytest.mark.slow
def test_compiled_f_follows_the_eager_loss_curve(tmp_path):
    # one ODE block (a quarter of resnet_tiny's compiles), batch 16 (ResNet-4's float64 convolutions at 32x32
    # are slow on the CPU) and no probe (its model copies compile again): the loss curve is what compile
    # could change, and inductor's cold compile is most of this test's time
    one_block = ("model=resnet4_anode", "trainer.precision=fp64", "trainer.batch_size=16", "probe.every=0")
    _, eager = run(tmp_path, "eager", *one_block)
    _, compiled = run(tmp_path, "compiled", *one_block, "trainer.compile=true")
    assert compiled["train/loss"] == pytest.approx(eager["train/loss"], rel=1e-7)  # TensorBoard stores float32


def test_channels_last_on_the_cpu_is_refused_in_one_line(tmp_path):
    result = anode_train([*RUN, "trainer.device=cpu", "trainer.channels_last=true", f"hydra.run.dir={tmp_path / 'run'}"],
                         tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("anode-train: trainer.channels_last=true is a CUDA option")
    assert not (tmp_path / "run" / "metrics.json").exists()


def load_bench_methods():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "bench_methods.py"
    spec = importlib.util.spec_from_file_location("bench_methods", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (grad, solver, N_t or None for rtol 1e-2, bound on the solver's aten ops per f's). The op count does not
# depend on width or batch. Bounds just above what resnet_tiny reads (fixed grids to the count, adaptive
# solves with about 3% for a step more or less: another CPU's rounding may take one, and a step fewer
# raises the ratio), so a change that adds ops to the loop fails here.
# Seen: rk4 N_t = 2 direct 0.186, anode 0.201, aca 0.209, revolve 0.216, symplectic 0.197, adjoint 0.212,
# interpolated 0.552; alf mali 0.294, direct 0.227; heun_euler rtol 1e-2 anode 0.267, aca 0.299, revolve
# 0.276, symplectic 0.298, adjoint 0.478, interpolated 0.761, direct 1.858; bosh3 anode 0.293; dopri5 aca
# 0.446, adjoint 0.431 (before the adjoint's reverse evaluations and aca's rebuilt steps stopped detaching z, FSAL
# pairs summed z_next once and the starting step's difference became one addcdiv_: aca heun_euler 0.313,
# adjoint 0.514 and rk4 0.246, bosh3 anode 0.323, dopri5 aca 0.473 and adjoint 0.517). Above 0.3 still:
# the interpolated adjoint's Lagrange sum (K ops per evaluation), the adjoint's two adaptive solves,
# direct's differentiated controller, dopri5's 7-stage combinations (README, "Aten ops per training step").
OPS_BOUNDS = [
    ("direct", "rk4", 2, 0.19), ("anode", "rk4", 2, 0.21), ("aca", "rk4", 2, 0.21), ("revolve", "rk4", 2, 0.22),
    ("symplectic", "rk4", 2, 0.2), ("anode", "euler", 2, 0.17), ("direct", "euler", 1, 0.05),
    ("adjoint", "rk4", 2, 0.22), ("interpolated", "rk4", 2, 0.56), ("mali", "alf", 2, 0.3), ("direct", "alf", 2, 0.23),
    ("anode", "heun_euler", None, 0.28), ("aca", "heun_euler", None, 0.31), ("revolve", "heun_euler", None, 0.29),
    ("symplectic", "heun_euler", None, 0.31), ("adjoint", "heun_euler", None, 0.5),
    ("interpolated", "heun_euler", None, 0.79), ("direct", "heun_euler", None, 1.95),
    ("anode", "bosh3", None, 0.31), ("aca", "dopri5", None, 0.46), ("adjoint", "dopri5", None, 0.45),
]


@pytest.mark.parametrize("grad, solver, steps, bound", OPS_BOUNDS, ids=[f"{g}-{s}-{n}" for g, s, n, _ in OPS_BOUNDS])
def test_the_solver_adds_few_ops_to_fs_own_per_training_step(grad, solver, steps, bound):
    """Counted at the dispatcher (bench_methods.OpCounter), one training step of resnet_tiny: each op is
    at least one kernel launch on a GPU, so these counts bound the host time of a step there."""
    from anode_bench.models import build_model

    bench = load_bench_methods()
    torch.manual_seed(0)
    solve = {"steps": steps} if steps else {"rtol": 1e-2, "atol": 1e-2}
    model = build_model("resnet_tiny", 10, dict(solver=solver, grad=grad, check_finite=False, **solve))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = bench.step_fn(model, torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)), optimizer, "fp32")
    step()  # optimizer state exists from here on
    parts = bench.count_ops(step, model).totals()
    assert parts["total"] == parts["f"] + parts["solver"] + parts["rest"]
    assert parts["f"] > 0 and parts["rest"] > 0
    assert parts["solver"] <= bound * parts["f"], parts
