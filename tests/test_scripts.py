"""The benchmark scripts run and print what the README quotes from them (the figures themselves
are measured by hand, on a quiet machine: tests never assert wall-clock times)."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anode_bench.report import Run

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
        assert [cells[steps, grad][4:6] for grad in ("direct", "aca", "adjoint")] == [
            [str(nfe), "0"], [str(nfe), str(nfe)], [str(nfe), str(nfe)]]
        for grad in ("direct", "aca", "adjoint"):  # aten ops per step: total, f's, solver's, their ratio
            total, f, solver = (int(c.replace(",", "")) for c in cells[steps, grad][6:9])
            assert 0 < solver < total and 0 < f < total and cells[steps, grad][9] == f"{solver / f:.2f}"


@pytest.mark.parametrize("args, message", [
    (["--channels-last"], "--channels-last is a CUDA option (torch 2.14.1's CPU channels-last backward of a stride-2 1x1 "
                          "convolution crashes)"),
    (["--grads", "direct,acca"], "--grads acca unknown; choose from direct, adjoint, anode, aca, revolve, symplectic, "
                                 "mali, interpolated"),
    (["--steps", "0,8"], "--steps must be integers >= 1, got [0, 8]"),
], ids=["channels-last-on-cpu", "unknown-grad", "steps-0"])
def test_bench_methods_refuses_bad_options_in_one_line_before_measuring(args, message):
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_methods.py"), *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"bench_methods.py: error: {message}"
    assert result.stdout == ""


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_hour_drops_the_first_window_and_scales_the_median_step_to_a_full_epoch():
    gpu_hour = load_script("gpu_hour")
    run = Run(Path("run"), "run", {"trainer.batch_size": 128}, {}, {"time/step_ms": [(10, 900.0), (20, 10.0), (30, 12.0), (40, 11.0)]})
    timing = gpu_hour.epochs_per_hour(run, 50_000)  # median 11 ms x 50,000 // 128 = 390 steps (drop_last)
    assert timing["step_ms"] == 11.0
    assert timing["epoch_min"] == pytest.approx(11.0 * 390 / 60e3)
    assert timing["epochs_per_hour"] == pytest.approx(3600e3 / (11.0 * 390))
    assert gpu_hour.epochs_per_hour(Run(Path("r"), "r", {"trainer.batch_size": 128}, {}, {"time/step_ms": [(10, 9.0)]}), 50_000) is None


def test_gpu_hour_prints_a_row_per_run_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        ["anode-train", "-m", "experiment=smoke", "dataset.train_size=64", "trainer.batch_size=16", "trainer.epochs=1",
         "trainer.log_every=1", "probe.every=0", "grad=aca,direct", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = subprocess.run([sys.executable, str(SCRIPTS / "gpu_hour.py"), str(sweep), "--train-images", "1000"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()[2:]]
    assert [(r[1].strip(), r[3].strip(), r[4].strip()) for r in rows] == [("resnet_tiny", "aca", "16"), ("resnet_tiny", "direct", "16")]
    for row in rows:
        step_ms, epochs_per_hour = float(row[6]), float(row[10])
        assert epochs_per_hour == pytest.approx(3600e3 / (step_ms * 62), rel=0.01 + 0.05 / step_ms)  # 1000 // 16 steps;
        # step_ms is printed to 0.1 ms


def test_gpu_hour_refuses_a_directory_without_runs_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPTS / "gpu_hour.py"), str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == f"gpu_hour: no runs under {tmp_path} (a run dir holds metrics.json or .hydra/config.yaml)"


def gpu_figures(*parts, cwd, **env):
    return subprocess.run(["bash", str(SCRIPTS / "gpu_figures.sh"), *parts], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def test_gpu_figures_records_each_part_under_its_command_and_never_twice(tmp_path):
    """Run on the CPU with its cheapest part (the gpu-marked tests, which skip here)."""
    result = gpu_figures("tests", cwd=tmp_path, DEVICE="cpu", OUT_DIR="figs",  # relative to the caller's directory
                         GIT_REV="0123abc")  # the device's copy of the tree has no .git
    assert result.returncode == 0, result.stderr
    figures = (tmp_path / "figs" / "figures.md").read_text()
    assert "<!-- part tests -->" in figures.splitlines()
    assert re.search(r"^## tests, \S+ \S+, git 0123abc$", figures, re.MULTILINE), figures
    # every gpu-marked test skips on the CPU (pytest's summary starts with the skipped count: none passed,
    # failed or errored), and there are some; the rest of the suite is deselected
    summary = re.search(r"^(\d+) skipped, (\d+) deselected in ", figures, re.MULTILINE)
    assert summary and int(summary.group(1)) > 0 and int(summary.group(2)) > 0, figures
    assert "`python -m pytest -q -m gpu tests`" in figures and "(exit 0)" in figures
    again = gpu_figures("gradcheck", "tests", cwd=tmp_path, DEVICE="cpu", OUT_DIR="figs")
    assert again.returncode == 2
    assert again.stderr.strip() == (f"gpu_figures.sh: {tmp_path / 'figs' / 'figures.md'} already holds part 'tests'; "
                                    "give another OUT_DIR (nothing is overwritten)")
    assert (tmp_path / "figs" / "figures.md").read_text() == figures


def test_gpu_figures_refuses_an_unknown_part_in_one_line_before_running_anything(tmp_path):
    result = gpu_figures("tset", cwd=tmp_path, DEVICE="cpu", OUT_DIR="figs")
    assert result.returncode == 2
    assert result.stderr.strip() == ("gpu_figures.sh: unknown part 'tset'; choose from tests gradcheck bench compile "
                                     "profile loader budgets (the output directory is OUT_DIR=...)")
    assert not (tmp_path / "figs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_figures_refuses_to_record_gpu_figures_without_a_gpu(tmp_path):
    result = gpu_figures("tests", cwd=tmp_path, OUT_DIR="figs")
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_figures.sh: torch sees no CUDA device; run it on a GPU machine (or DEVICE=cpu)"
    assert not (tmp_path / "figs").exists()


def test_gpu_figures_dry_runs_the_prepared_device_call_on_the_cpu(tmp_path):
    """The prepared call's parts after the gpu-marked tests (run above), and the loader and budget parts, with
    DEVICE=cpu SIZE=tiny: every command they record still runs at a size of seconds and prints what the README
    reads from it, so the one device call cannot rot (compile is left out: minutes of compilation on a CPU)."""
    result = gpu_figures("gradcheck", "bench", "profile", "loader", "budgets", cwd=tmp_path, DEVICE="cpu", SIZE="tiny",
                         OUT_DIR="figs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = (tmp_path / "figs" / "figures.md").read_text()
    assert [line for line in figures.splitlines() if line.startswith("<!-- part")] == [
        "<!-- part gradcheck -->", "<!-- part bench -->", "<!-- part profile -->", "<!-- part loader -->",
        "<!-- part budgets -->"]
    assert figures.count("(exit 0)") == 11 and "(exit 1)" not in figures  # 2 records per part, loader 1, budgets 4
    assert "training step (resnet_tiny, euler N_t=2, aca)" in figures  # the loader part, at the tiny size
    for row in ("| resnet_tiny | heun_euler rtol 0.01 | adjoint | 4 | cpu |", "| sqnxt_tiny | euler 2 | anode | 4 | cpu |"):
        assert row in figures  # budgets: every method of both experiments, timed, at the tiny size
    table = (tmp_path / "figs" / "gradcheck" / "gradcheck.md").read_text()
    assert "| alf | 1 | 1 | mali |" in table and "| euler | 1 | 1 | aca |" in table and "| euler | 1 | 1 | mali |" not in table
    assert "### resnet_tiny, batch 2, solver rk4, cpu, precision bf16" in figures
    for header in ("### resnet_tiny, heun_euler rtol 0.01, grad aca, batch 2, fp32, cpu, 2 steps",
                   "### sqnxt_tiny, euler N_t 2, grad anode, batch 2, fp32, cpu, 2 steps"):
        profile = figures.split(header)[1].split("(exit 0)")[0]
        for line in ("- wall: ", "- GPU busy: ", "- host, in top-level aten ops: ", "- host syncs: ", "top ops over 2 steps",
                     "aten ops in one step (dispatch level): "):
            assert "\n" + line in profile, (header, line)
    assert "== profile, anode_cifar10: python scripts/profile_step.py --device cpu" in result.stdout  # printed as it goes


def test_gpu_figures_refuses_an_unknown_size_in_one_line(tmp_path):
    result = gpu_figures("tests", cwd=tmp_path, DEVICE="cpu", SIZE="small", OUT_DIR="figs")
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_figures.sh: SIZE=small unknown; choose full (the figures) or tiny (a dry run)"
    assert not (tmp_path / "figs").exists()


def test_eval_bn_modes_reads_a_finished_run_in_both_batchnorm_modes(tmp_path):
    """Running statistics (as anode-train evaluates) give the run's own test accuracy; batch statistics
    are a second reading from the same weights; a directory that is not a run is refused in one line."""
    run_dir = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "anode_bench.train", "experiment=smoke", "trainer.max_steps_per_epoch=2",
                            "dataset.train_size=128", "dataset.test_size=64", f"hydra.run.dir={run_dir}"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    result = subprocess.run([sys.executable, str(SCRIPTS / "eval_bn_modes.py"), str(run_dir), "--batch", "8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = [line for line in result.stdout.splitlines() if line.startswith("|")][2:]  # under the header
    running, batch = (float(cell) for cell in row.strip("|").split("|")[4:6])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert running == pytest.approx(100 * metrics["test/acc"], abs=0.01)  # the same weights, the same evaluation
    assert 0 <= batch <= 100 and batch == pytest.approx(round(batch * 64 / 100) * 100 / 64, abs=0.01)  # a count of 64
    refused = subprocess.run([sys.executable, str(SCRIPTS / "eval_bn_modes.py"), str(tmp_path)], capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stderr.strip().splitlines() == [
        f"eval_bn_modes.py: {tmp_path} has no .hydra/config.yaml; pass anode-train run directories"]


def test_eval_bn_modes_compares_each_configuration_with_the_baseline_in_both_intervals():
    spec = importlib.util.spec_from_file_location("eval_bn_modes", SCRIPTS / "eval_bn_modes.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from anode_bench.stats import paired, welch

    def run(config, seed, running, batch, group=None):
        return {"group": group or config, "config": config, "seed": seed, "running statistics": running, "batch statistics": batch}

    discrete, anode = ("direct", "euler", 1), ("anode", "euler", 2)
    rows = [run(discrete, 0, 46.7, 42.4), run(discrete, 1, 47.5, 44.5), run(discrete, 2, 46.0, 43.7),
            run(anode, 2, 26.5, 46.0), run(anode, 0, 20.3, 41.7), run(anode, 1, 18.7, 45.4), run(anode, 7, 30.0, 40.0)]
    lines = script.summary(rows)
    [line] = [line for line in lines if line.startswith("| anode |") and "| batch statistics |" in line]
    w = welch([46.0, 41.7, 45.4, 40.0], [42.4, 44.5, 43.7])
    pair = paired([(46.0, 43.7), (41.7, 42.4), (45.4, 44.5)])  # by seed; seed 7 has no discrete run to pair with
    assert f"{w.diff:+.2f} [{w.low:+.2f}, {w.high:+.2f}]" in line
    assert f"{pair.diff:+.2f} [{pair.low:+.2f}, {pair.high:+.2f}] (3)" in line
    assert "| 4 | batch statistics | 43.27 ± 2.90 | 43.53 |" in line
    assert sum("| running statistics |" in line for line in lines) == 1  # the baseline is not a row of its own
    [line] = [line for line in script.summary(rows, "anode") if line.startswith("| direct |") and "| running" in line]
    pair = paired([(46.7, 20.3), (47.5, 18.7), (46.0, 26.5)])
    assert f"{pair.diff:+.2f} [{pair.low:+.2f}, {pair.high:+.2f}] (3)" in line

    # the same (grad, solver, N_t) in two configurations (another width, say) is two groups, never pooled
    wider = [run(anode, seed, 60.0, 60.0, group="wider") for seed in (0, 1, 2)]
    assert "is more than one configuration" in script.summary([*rows, *wider], "anode")[-1]
    assert sum(line.startswith("| anode |") for line in script.summary([*rows, *wider])) == 4
    assert "no configuration" in script.summary(rows, "anodee")[-1] and "one of: anode, direct" in script.summary(rows, "anodee")[-1]
    assert "a seed appears twice" in script.summary([*rows, rows[0]])[-1]  # one run passed twice is not a second pair
    assert "no configuration" in script.summary([run(("direct", "dopri5", 1.0), 0, 1, 1), *rows[3:]])[-1]  # discrete is euler
    assert script.summary(rows[:3]) == []


def test_step_size_term_prints_the_difference_per_batch_and_refuses_a_fixed_grid():
    """direct − aca on an adaptive solver: one row per batch with a small relative size, and the between-batch
    summary; on a fixed grid the two agree to the bit, so the script says so instead of printing 0/0."""
    args = ["experiment=smoke", "solver=heun_euler", "solver.rtol=0.1", "solver.atol=0.1", "trainer.batch_size=16"]
    result = subprocess.run([sys.executable, str(SCRIPTS / "step_size_term.py"), *args, "--batches", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r[0]) for r in rows] == [0, 1] and all(0 < float(r[1]) < 0.1 and abs(float(r[2])) <= 1 for r in rows)
    assert all(float(r[3]) < 1e-5 < float(r[1]) for r in rows)  # direct with constant step sizes: aca's, to rounding
    assert re.search(r"cos between batches' d: min [+-]\d\.\d{3}, median .* \(1/sqrt\(2\) = 0\.707\)", result.stdout)
    assert re.search(r"over the batches: abs\(mean d\) / abs\(mean g_aca\) \d\.\d\de-\d\d, cos\(mean d, mean g_aca\) "
                     r"[+-]\d\.\d{3}; abs\(mean g_aca\) / mean abs\(g_aca\) \d\.\d{3}", result.stdout)
    tensors = [line.strip("|").split("|") for line in result.stdout.split("largest term")[1].splitlines()
               if line.startswith("| ") and not line.startswith("| tensor")]
    sizes = [float(t[2]) for t in tensors]
    assert len(tensors) == 8 and sizes == sorted(sizes, reverse=True) and all(0 <= float(t[3]) <= 1 for t in tensors)
    assert all(float(t[4]) > 0 for t in tensors)
    fixed = subprocess.run([sys.executable, str(SCRIPTS / "step_size_term.py"), "experiment=smoke"],
                           capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 1 and fixed.stderr.strip() == (
        "step_size_term.py: solver=euler is fixed-step: there direct and aca agree to the bit; choose an adaptive "
        "solver (heun_euler, bosh3, dopri5)")
