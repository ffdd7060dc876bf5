"""The paper experiments (configs/experiment/) hold the papers' setups, sweep their comparisons, and the
sweep scripts run a multirun and report it."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from anode_bench.config import CONFIG_DIR

ROOT = Path(CONFIG_DIR).parent
SAMPLE = ROOT.parent / "shared" / "data" / "cifar10_sample.npz"
# a run of one step of 16 images, tested on 16 and probed on 8, of the real-image sample (the configs'
# torchvision CIFAR-10 is not downloaded in tests; the configs' batch of 256 would cost seconds per step)
TINY_RUN = ["trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.batch_size=16", "trainer.eval_batch_size=16",
            "dataset.train_size=16", "dataset.test_size=16", "probe.every=1", "probe.batch_size=8", f"dataset.path={SAMPLE}"]
# ANODE's small-network table: network -> (preset, ODE width override); the paper's mean test accuracy
SMALL = {"resnet4": ("resnet4_anode", {}), "resnet10": ("resnet10_anode", {}), "alexnet": ("alexnet_anode", {"width": 0.5})}


def composed(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("variant", ["", "_cpu_budget"])
def test_aca_cifar10_is_the_aca_papers_setup(variant):
    cfg = composed([f"experiment=aca_cifar10{variant}"])
    assert (cfg.model.name, cfg.solver.name, cfg.solver.rtol, cfg.solver.atol, cfg.grad.name) == (
        "resnet18_aca", "heun_euler", 1e-2, 1e-2, "aca")
    trainer = cfg.trainer
    assert (trainer.lr, trainer.momentum, trainer.weight_decay, trainer.batch_size, trainer.schedule) == (0.1, 0.9, 5e-4, 128, "step")
    assert cfg.hydra.sweeper.params == {"grad": "aca,adjoint,direct"}
    if variant:
        assert (cfg.dataset.name, cfg.dataset.path, cfg.dataset.train_size, cfg.dataset.test_size) == ("cifar10", None, 5000, 1000)
        assert cfg.trainer.device == "cpu"
        assert list(cfg.model.arch.widths) == [8, 16, 32, 64] and trainer.epochs == 4
    else:
        assert (cfg.dataset.name, cfg.dataset.path, trainer.epochs, list(trainer.milestones)) == ("cifar10", None, 90, [30, 60])


@pytest.mark.parametrize("variant", ["", "_cpu_budget"])
def test_anode_cifar10_is_the_anode_papers_setup(variant):
    cfg = composed([f"experiment=anode_cifar10{variant}"])
    assert (cfg.model.name, cfg.solver.name, cfg.solver.steps, cfg.grad.name) == ("sqnxt23_1x", "euler", 2, "anode")
    trainer = cfg.trainer
    assert (trainer.lr, trainer.momentum, trainer.weight_decay, trainer.batch_size) == (0.1, 0.9, 5e-4, 256)
    assert cfg.hydra.sweeper.params == {"grad": "anode,adjoint"}
    if variant:
        assert (cfg.dataset.name, cfg.dataset.path, cfg.dataset.train_size, cfg.dataset.test_size) == ("cifar10", None, 5000, 1000)
        assert cfg.model.arch.width == 0.5
    else:
        assert (cfg.dataset.name, cfg.dataset.path, trainer.epochs, list(trainer.milestones)) == ("cifar10", None, 350, [150, 250])


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real-image sample not found at {SAMPLE}")
def test_sweep_script_runs_the_experiments_comparison_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_DIR": str(sweep), "SEEDS": "0"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "sweep_anode.sh"), "cpu_budget", *TINY_RUN], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((sweep / "report.json").read_text())["runs"]
    assert [(r["grad"], r["model"], r["solver"], r["N_t / rtol"], r["status"]) for r in rows] == [
        ("anode", "sqnxt23_1x (width=0.5)", "euler", "2", "completed"),
        ("adjoint", "sqnxt23_1x (width=0.5)", "euler", "2", "completed")]
    assert "anode-report: 2 runs" in result.stdout


@pytest.mark.parametrize("net", list(SMALL))
def test_anode_small_network_configs_are_the_authors_setup_scaled_to_the_cpu(net):
    preset, arch = SMALL[net]
    cfg = composed([f"experiment=anode_{net}_cifar10"])
    assert (cfg.model.name, dict(cfg.model.arch), cfg.solver.name, cfg.solver.steps, cfg.grad.name) == (preset, arch, "euler", 2, "anode")
    assert cfg.hydra.sweeper.params == {"grad": "anode,adjoint"}
    trainer = cfg.trainer
    assert (trainer.lr, trainer.momentum, trainer.weight_decay, trainer.batch_size, trainer.schedule) == (0.1, 0.9, 5e-4, 256, "step")
    # the authors' lr / 10 at 150 and 250 of 350 epochs, scaled: 3/7 and 5/7 of the run, rounded
    assert list(trainer.milestones) == [round(trainer.epochs * 3 / 7), round(trainer.epochs * 5 / 7)]
    assert (cfg.dataset.name, cfg.dataset.path, cfg.dataset.train_size, cfg.dataset.test_size, trainer.device) == (
        "cifar10", None, None, None, "cpu")  # all 50,000 + 10,000 images
    baseline = composed([f"experiment=anode_{net}_cifar10", "grad=direct", "solver.steps=1"])
    assert (baseline.solver.name, baseline.solver.steps, baseline.grad.name) == ("euler", 1, "direct")


def test_sweep_anode_small_refuses_an_unknown_network_in_one_line():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "sweep_anode_small.sh"), "vgg16"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["usage: " + str(ROOT / "scripts" / "sweep_anode_small.sh")
                                                  + " resnet4|resnet10|alexnet [anode-train overrides...]; got 'vgg16'"]


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real-image sample not found at {SAMPLE}")
def test_sweep_anode_small_runs_baseline_adjoint_and_anode_per_seed_into_one_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_DIR": str(sweep), "SEEDS": "0"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "sweep_anode_small.sh"), "resnet4", *TINY_RUN], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((sweep / "report.json").read_text())["runs"]
    # the report labels euler N_t = 1 direct "direct (discrete ResNet)"
    assert sorted((r["grad"].split()[0], r["model"], r["solver"], r["N_t / rtol"], r["status"]) for r in rows) == [
        ("adjoint", "resnet4_anode", "euler", "2", "completed"),
        ("anode", "resnet4_anode", "euler", "2", "completed"),
        ("direct", "resnet4_anode", "euler", "1", "completed")]
    # every job folder names its grad and seed, so that the next seed's runs get folders of their own
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == [
        "0_grad=anode,trainer.seed=0", "0_grad=direct,solver.steps=1,trainer.seed=0", "1_grad=adjoint,trainer.seed=0"]


def test_anode_sqnxt23_rk2_is_the_authors_rk2_figure_setup():
    cfg = composed(["experiment=anode_sqnxt23_rk2_cifar10"])
    # the authors' RK2 (anode/scheme.py) evaluates f at the midpoint and steps with it alone: the midpoint rule
    assert (cfg.model.name, cfg.model.arch.width, cfg.solver.name, cfg.solver.steps, cfg.grad.name) == (
        "sqnxt23_1x", 0.5, "midpoint", 2, "anode")
    assert cfg.hydra.sweeper.params == {"grad": "anode,adjoint"}
    trainer = cfg.trainer
    assert trainer.epochs >= 30 and list(trainer.milestones) == [round(trainer.epochs * 3 / 7), round(trainer.epochs * 5 / 7)]
    assert (trainer.lr, trainer.batch_size, cfg.dataset.path, cfg.dataset.train_size, trainer.device) == (0.1, 256, None, None, "cpu")


def test_aca_resnet18_narrow_is_acas_setup_at_quarter_width():
    cfg = composed(["experiment=aca_resnet18_narrow_cifar10"])
    assert (cfg.model.name, list(cfg.model.arch.widths), cfg.model.arch.stem_width) == ("resnet18_aca", [16, 32, 64, 128], 16)
    assert (cfg.solver.name, cfg.solver.rtol, cfg.solver.atol, cfg.grad.name) == ("heun_euler", 1e-2, 1e-2, "aca")
    assert cfg.hydra.sweeper.params == {"grad": "aca,adjoint,direct"}
    trainer = cfg.trainer
    assert list(trainer.milestones) == [round(trainer.epochs / 3), round(trainer.epochs * 2 / 3)]
    assert (trainer.lr, trainer.batch_size, cfg.dataset.path, cfg.dataset.train_size, trainer.device) == (0.1, 128, None, None, "cpu")
    baseline = composed(["experiment=aca_resnet18_narrow_cifar10", "grad=direct", "solver=euler", "solver.steps=1"])
    assert (baseline.solver.name, baseline.solver.steps, baseline.grad.name) == ("euler", 1, "direct")
