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
        assert cfg.dataset.path == "../shared/data/cifar10_sample.npz" and cfg.trainer.device == "cpu"
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
        assert cfg.dataset.path == "../shared/data/cifar10_sample.npz" and cfg.model.arch.width == 0.5
    else:
        assert (cfg.dataset.name, cfg.dataset.path, trainer.epochs, list(trainer.milestones)) == ("cifar10", None, 350, [150, 250])


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real-image sample not found at {SAMPLE}")
def test_sweep_script_runs_the_experiments_comparison_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_DIR": str(sweep), "SEEDS": "0"}
    tiny = ["trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.eval_batch_size=100", "dataset.train_size=256",
            "dataset.test_size=100", "grad_check.every=1"]
    result = subprocess.run(["bash", str(ROOT / "scripts" / "sweep_anode.sh"), "cpu_budget", *tiny], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((sweep / "report.json").read_text())["runs"]
    assert [(r["grad"], r["model"], r["solver"], r["N_t / rtol"], r["status"]) for r in rows] == [
        ("anode", "sqnxt23_1x (width=0.5)", "euler", "2", "completed"),
        ("adjoint", "sqnxt23_1x (width=0.5)", "euler", "2", "completed")]
    assert "anode-report: 2 runs" in result.stdout
