"""Training on real CIFAR-10 images (../shared/data/cifar10_sample.npz: 5,000 train, 1,000 test)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_sample.npz"
THRESHOLD = 0.30  # chance is 0.10


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real-image sample not found at {SAMPLE}")
def test_small_ode_resnet_trained_with_aca_learns_real_cifar10(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "dataset=cifar10", f"dataset.path={SAMPLE}", "model=resnet_tiny", "+model.arch.widths=[8,16,32,64]",
        "+model.arch.stem_width=8", "grad=aca", "solver=midpoint", "solver.steps=1", "trainer.epochs=4",
        "trainer.batch_size=64", "trainer.schedule=cosine", "trainer.lr=0.1", "trainer.device=cpu",
        "trainer.log_every=25", "probe.every=0", f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run([sys.executable, "-m", "anode_bench.train", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"test accuracy after 4 epochs on 5,000 real images: {metrics['test/acc']:.3f}")
    assert metrics["test/acc"] > THRESHOLD
