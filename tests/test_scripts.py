"""The benchmark scripts run and print what the README quotes from them (the figures themselves
are measured by hand, on a quiet machine: tests never assert wall-clock times)."""
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent.parent / "scripts"


def test_bench_methods_prints_one_row_per_method_and_steps_with_the_first_as_baseline():
    args = ["--steps", "1,2", "--widths", "4,4,4,4", "--batch", "2", "--repeats", "1", "--grads", "direct,aca,adjoint",
            "--precision", "bf16", "--skip-torchdiffeq"]
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_methods.py"), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "### resnet_tiny, batch 2, solver rk4, cpu, precision bf16" in result.stdout
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    cells = {(int(r[0]), r[1].strip()): [c.strip() for c in r[2:]] for r in rows}
    assert sorted(cells) == [(1, "aca"), (1, "adjoint"), (1, "direct"), (2, "aca"), (2, "adjoint"), (2, "direct")]
    for steps in (1, 2):
        assert cells[steps, "direct"][1] == cells[steps, "direct"][3] == "1.00"  # time and memory ratios to itself
        nfe = 4 * steps * 4  # rk4: 4 stages per step, 4 ODE blocks
        assert [cells[steps, grad][4:] for grad in ("direct", "aca", "adjoint")] == [
            [str(nfe), "0"], [str(nfe), str(nfe)], [str(nfe), str(nfe)]]


def test_bench_methods_refuses_channels_last_on_the_cpu_in_one_line():
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_methods.py"), "--channels-last"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "--channels-last is a CUDA option (torch 2.14.1's CPU channels-last backward of a stride-2 1x1 convolution crashes)")
