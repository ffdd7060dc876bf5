"""anode-report: a tiny real sweep (multirun over grad x N_t x seed, plus a diverged, an adaptive and an
incomplete run) becomes report.md, report.json, three PNG plots and a custom-scalars layout."""
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.utils.tensorboard import SummaryWriter

from anode_bench import report as report_module
from anode_bench.report import (
    CONTRADICTED,
    LAYOUT,
    NEEDS_SEEDS,
    NOT_AT_BUDGET,
    REPRODUCED,
    Claim,
    Run,
    accuracy_by_seed,
    claim_rows,
    find_runs,
    group_by_seed,
    main,
    report,
    run_rows,
    swept_keys,
    verdict,
    versus_discretization,
)
from anode_bench.report import plots as report_plots
from anode_bench.report.comparison import repeated_seeds
from anode_bench.report.runs import read_scalars
from anode_bench.report.tables import mixed_timing
from anode_bench.stats import paired, regularized_beta, t_cdf, t_quantile, welch

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module-scoped fixtures once

TINY = ["experiment=smoke", "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "trainer.log_every=1", "trainer.batch_size=16",
        "probe.every=2", "probe.batch_size=16", "dataset.train_size=32", "dataset.test_size=32"]
PNG = b"\x89PNG\r\n\x1a\n"


def anode_train(*runs, cwd):
    """anode-train with each list of arguments, all at once (one thread each: their imports and Hydra
    startup, most of their time, then use every core)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in runs]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """root/sweep: 8 jobs (direct, adjoint) x N_t (1, 2) x seed (0, 1); root/diverged; root/adaptive; root/crashed."""
    root = tmp_path_factory.mktemp("report")
    anode_train(["-m", *TINY, "grad=direct,adjoint", "solver.steps=1,2", "trainer.seed=0,1", f"hydra.sweep.dir={root / 'sweep'}"],
                [*TINY, "trainer.lr=1e12", f"hydra.run.dir={root / 'diverged'}"],
                [*TINY, "solver=heun_euler", "grad=aca", f"hydra.run.dir={root / 'adaptive'}"], cwd=root)
    crashed = root / "crashed"  # another seed of the adaptive run that died before writing metrics.json
    shutil.copytree(root / "adaptive" / ".hydra", crashed / ".hydra")
    config = crashed / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("  seed: 0\n", "  seed: 5\n"))
    writer = SummaryWriter(str(crashed))
    writer.add_scalar("train/loss", 2.3, 1)
    writer.close()
    return root, report(root)


def by_run(content):
    return {row["run"]: row for row in content["runs"]}


def metrics_of(root, job):
    return json.loads(next((root / "sweep").glob(f"{job}_*/metrics.json")).read_text())


def test_one_row_per_run_with_its_configuration_results_and_status(sweep):
    root, content = sweep
    rows = by_run(content)
    assert len(rows) == 11 and {"diverged", "adaptive", "crashed"} <= set(rows)
    jobs = [rows[f"sweep/{i}"] for i in range(8)]
    assert sorted((r["grad"], r["N_t / rtol"], r["seed"]) for r in jobs) == sorted(
        (grad, steps, seed) for grad, steps in [("direct (discrete ResNet)", "1"), ("direct", "2"), ("adjoint", "1"), ("adjoint", "2")]
        for seed in (0, 1))
    for i, row in enumerate(jobs):
        metrics = metrics_of(root, i)
        assert row["status"] == "completed" and row["dataset"] == "synthetic" and row["model"] == "resnet_tiny"
        assert row["final acc %"] == pytest.approx(100 * metrics["test/acc"])  # numbers, in %
        assert row["best acc %"] == pytest.approx(100 * metrics["test/best_acc"])
        assert row["grad error"] == metrics["grad_error/rel_l2_mean"]
        assert row["peak MiB"] == metrics["memory/peak_mib"] and row["step ms"] == metrics["time/step_ms"]
        assert row["NFE fwd"] == metrics["nfe/forward"] and row["NFE bwd"] == metrics["nfe/backward"]
    assert rows["diverged"]["status"].startswith("diverged: step") and "training loss nan" in rows["diverged"]["status"]
    assert rows["diverged"]["final acc %"] is None and rows["diverged"]["other"] == "trainer.lr=1e+12"
    assert rows["sweep/0"]["other"] == "trainer.lr=0.1"  # the one setting besides the table's columns that differs
    assert rows["adaptive"]["solver"] == "heun_euler" and rows["adaptive"]["N_t / rtol"] == "rtol 0.01"
    assert rows["crashed"]["status"] == "incomplete" and rows["crashed"]["seed"] == 5

    runs_table = (root / "report.md").read_text().split("## Runs")[1].split("##")[0]
    assert runs_table.count("\n| ") == 12  # header + 11 runs
    for name in rows:
        assert f"| {name} | synthetic | resnet_tiny |" in runs_table


def test_seeds_are_pooled_into_mean_and_std_per_configuration(sweep):
    root, content = sweep
    configs = {(c["grad"], c["N_t / rtol"], c["other"]): c for c in content["configurations"]}
    assert len(configs) == 6  # 4 of the sweep, the diverged run, the adaptive run with its crashed seed
    pooled = [c for c in configs.values() if c["seeds"] == [0, 1] and c["n"] == 2]
    assert len(pooled) == 4
    adjoint_2 = configs["adjoint", "2", "trainer.lr=0.1"]
    jobs = [i for i in range(8) if content["runs"][3 + i]["grad"] == "adjoint" and content["runs"][3 + i]["N_t / rtol"] == "2"]
    errors = [metrics_of(root, i)["grad_error/rel_l2_mean"] for i in jobs]
    accuracies = [100 * metrics_of(root, i)["test/acc"] for i in jobs]
    assert len(jobs) == 2 and adjoint_2["grad error"] == pytest.approx(statistics.fmean(errors))
    assert adjoint_2["grad error std"] == pytest.approx(statistics.stdev(errors))
    assert adjoint_2["final acc %"] == pytest.approx(statistics.fmean(accuracies))
    assert adjoint_2["final acc % std"] == pytest.approx(statistics.stdev(accuracies))
    assert adjoint_2["diverged"] == 0 and adjoint_2["n"] == 2
    assert configs["direct", "2", "trainer.lr=1e+12"]["diverged"] == 1
    adaptive = configs["aca", "rtol 0.01", "trainer.lr=0.1"]
    assert adaptive["seeds"] == [0, 5] and adaptive["diverged"] == 0 and adaptive["incomplete"] == 1
    table = (root / "report.md").read_text().split("## Per configuration")[1].split("## Comparison")[0]
    assert table.count("(n=2)") == 5 and table.count("\n| ") == 7
    assert "| 0, 5 (n=2) |" in table and "| 0/2 (1 incomplete) |" in table


def test_plots_are_pngs_holding_the_expected_series(sweep):
    root, content = sweep
    for name in ("accuracy.png", "memory.png", "grad_error.png"):
        data = (root / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
        assert f"]({name})" in (root / "report.md").read_text()
    plots = content["plots"]
    lr = " (trainer.lr=0.1)"
    curves = plots["accuracy.png"]["test/acc"]  # one line per configuration, the diverged run has no test epoch
    assert set(curves) == {f"{label}{lr}" for label in (
        "direct (discrete ResNet), euler N_t=1", "direct, euler N_t=2", "adjoint, euler N_t=1", "adjoint, euler N_t=2",
        "aca, heun_euler rtol 0.01")}
    assert curves[f"adjoint, euler N_t=2{lr}"]["x"] == [1, 2] and curves[f"adjoint, euler N_t=2{lr}"]["n"] == [2, 2]
    assert curves[f"aca, heun_euler rtol 0.01{lr}"]["n"] == [1, 1]  # the crashed seed logged no test epoch
    assert all(0 <= y <= 100 for curve in curves.values() for y in curve["y"])  # in %
    assert max(y for curve in curves.values() for y in curve["y"]) > 1
    assert set(plots["accuracy.png"]["train/epoch_loss"]) == set(curves)
    memory, error = plots["memory.png"], plots["grad_error.png"]
    assert set(error) == set(memory) == {"N_t", "rtol"}  # fixed-step runs against N_t, the adaptive one against rtol
    # one series per configuration less its N_t (the solver is named: the sweep has two)
    assert set(error["N_t"]) == {f"direct, euler{lr}", f"adjoint, euler{lr}", "direct, euler (trainer.lr=1e+12)"}
    assert error["N_t"][f"adjoint, euler{lr}"]["x"] == [1, 2] and error["rtol"][f"aca, heun_euler{lr}"]["x"] == [0.01]
    assert memory["N_t"][f"direct, euler{lr}"]["x"] == [1, 2]
    direct, adjoint = error["N_t"][f"direct, euler{lr}"]["y"], error["N_t"][f"adjoint, euler{lr}"]["y"]
    assert max(direct) < 1e-2 < min(adjoint)  # exact vs approximate gradients, as the probes measured them
    direct_memory = memory["N_t"][f"direct, euler{lr}"]["y"]
    assert direct_memory[1] > direct_memory[0]  # direct keeps every step's graph: more memory at N_t = 2


def test_custom_scalars_layout_shows_every_tag_as_one_chart_across_runs(sweep):
    root, _ = sweep
    layout_files = list(root.glob("events.out.tfevents.*.anode-report"))
    assert len(layout_files) == 1
    accumulator = EventAccumulator(str(root))
    accumulator.Reload()
    tensor = accumulator.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["test accuracy"] == [r"^test/acc$"] and charts["relative L2 error vs float64 reference"]
    assert charts["precision floor: same-precision direct vs float64"] == [r"^grad_error/floor_rel_l2$"]
    assert charts["error / floor (1 = rounding level)"] == [r"^grad_error/floor_ratio$"]
    assert len(charts) == sum(len(c) for c in LAYOUT.values())
    before = layout_files[0].read_bytes()
    report(root)  # a rerun replaces the layout file rather than adding a second, with the same bytes
    assert list(root.glob("events.out.tfevents.*.anode-report")) == layout_files and layout_files[0].read_bytes() == before


def test_cli_reports_one_run_directory_and_refuses_an_empty_one(sweep, tmp_path, capsys):
    root, _ = sweep
    single = tmp_path / "single"
    shutil.copytree(root / "adaptive", single)
    main([str(single)])
    assert "1 runs" in capsys.readouterr().out
    assert "| . | synthetic | resnet_tiny | heun_euler | rtol 0.01 | aca |" in (single / "report.md").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path / "empty")])
    assert exit.value.code == 2 and "no run under" in capsys.readouterr().err


def test_architecture_overrides_and_the_data_file_name_the_model_and_dataset():
    base = {"dataset.name": "cifar10", "model.name": "resnet_tiny", "solver.name": "euler", "solver.steps": 2,
            "grad.name": "aca", "trainer.seed": 0, "trainer.lr": 0.1}
    runs = [Run(Path("a"), "a", dict(base), {"status": "completed", "memory/peak_mib": 1.0}),
            Run(Path("b"), "b", {**base, "model.arch.widths": (8, 16, 32, 64), "dataset.path": "../x/sample.npz"},
                {"status": "completed", "memory/peak_mib": 2.0})]
    assert swept_keys(runs) == []  # both differences are shown in the model and dataset columns
    rows = run_rows(runs, [])
    assert [r["model"] for r in rows] == ["resnet_tiny", "resnet_tiny (widths=[8,16,32,64])"]
    assert [r["dataset"] for r in rows] == ["cifar10", "cifar10 (sample.npz)"]
    assert len(group_by_seed(runs)) == 2
    memory = versus_discretization(group_by_seed(runs), runs, [], "memory/peak_mib")["N_t"]
    assert set(memory) == {"aca, resnet_tiny, cifar10", "aca, resnet_tiny (widths=[8,16,32,64]), cifar10 (sample.npz)"}


# ------------------------------------------------------------------ synthetic sweeps: comparison, claims, tables
# Fabricated run directories (config, metrics.json, events) with accuracies chosen so that every interval and
# verdict below was worked out by hand.

BASE_CONFIG = {
    "dataset": {"name": "cifar10", "num_classes": 10, "root": "data", "download": True, "path": "/a/full.npz",
                "train_size": None, "test_size": None},
    "model": {"name": "resnet4_anode"},
    "solver": {"name": "euler", "steps": 2, "t0": 0.0, "t1": 1.0},
    "grad": {"name": "direct"},
    "trainer": {"epochs": 3, "lr": 0.1, "seed": 0, "device": "auto", "resume": False, "threads": None, "log_every": 50},
    "probe": {"every": 10, "reference": "discrete"},
}


def fake_run(path: Path, overrides: dict, accuracy: float, status="completed", floor=True, curve=True):
    """A finished run dir: .hydra/config.yaml (BASE_CONFIG with dotted overrides), metrics.json, and events with
    test/acc per epoch ending at `accuracy` and the probe's scalars at steps 0, 10, 20."""
    config = json.loads(json.dumps(BASE_CONFIG))
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if value is None and leaf in node and dotted.startswith("solver."):
            node[leaf] = None
        else:
            node[leaf] = value
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"status": status, "failure": None, "epochs": 3, "test/acc": accuracy, "test/best_acc": accuracy,
               "grad_error/rel_l2_mean": 0.5 if config["grad"]["name"] == "adjoint" else 1e-6, "memory/peak_mib": 10.0,
               "time/step_ms": 5.0, "nfe/forward": 4, "nfe/backward": 0, "device": "cpu"}
    if floor:
        metrics |= {"grad_error/floor_rel_l2_mean": 1e-6, "grad_error/floor_ratio_mean": metrics["grad_error/rel_l2_mean"] / 1e-6,
                    "tf32": False, "time/wall_s": 120.0}
    (path / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        writer = SummaryWriter(str(path))
        for epoch in (1, 2, 3):
            writer.add_scalar("test/acc", accuracy * epoch / 3, epoch)
            writer.add_scalar("train/epoch_loss", 2.0 / epoch, epoch)
        for step in (0, 10, 20):
            writer.add_scalar("grad_error/rel_l2", metrics["grad_error/rel_l2_mean"], step)
            writer.add_scalar("grad_error/cosine", 0.9, step)
            if floor:
                writer.add_scalar("grad_error/floor_rel_l2", 1e-6, step)
                writer.add_scalar("grad_error/floor_ratio", metrics["grad_error/rel_l2_mean"] / 1e-6, step)
        writer.close()
    return path


DISCRETE = {"grad.name": "direct", "solver.steps": 1}
# accuracies (fractions) per configuration and seed; hand-computed in test_welch_interval_by_hand
ACCURACY = {"discrete": [0.70, 0.72, 0.74], "adjoint": [0.40, 0.44], "anode": [0.71, 0.73, 0.72]}


@pytest.fixture
def synthetic(tmp_path):
    """sweep_a: the discrete baseline (3 seeds; seed 1 resumed, on another device and thread count, reading the
    same file from another place) and adjoint (2 seeds); sweep_b: anode (3 seeds, no floor logged): the ANODE
    ResNet-4 claims, across two run dirs."""
    a, b = tmp_path / "sweep_a", tmp_path / "sweep_b"
    job = 0
    for name, overrides in (("discrete", DISCRETE), ("adjoint", {"grad.name": "adjoint"})):
        for seed, accuracy in enumerate(ACCURACY[name]):
            extra = {"trainer.resume": "auto", "trainer.device": "cpu", "trainer.threads": 1, "trainer.log_every": 7,
                     "dataset.path": "/mnt/elsewhere/full.npz", "dataset.root": "/mnt/data"} if seed == 1 else {}
            fake_run(a / f"{job}_grad={name},trainer.seed={seed}", {**overrides, "trainer.seed": seed, **extra}, accuracy)
            job += 1
    for seed, accuracy in enumerate(ACCURACY["anode"]):
        fake_run(b / f"{seed}_grad=anode", {"grad.name": "anode", "trainer.seed": seed}, accuracy, floor=False)
    return tmp_path, a, b


def test_t_quantile_matches_printed_tables():
    """Two-sided 95% (p = 0.975) and one-sided 95% (p = 0.95) critical values of Student's t, as printed in any
    statistics table to 3 decimals; df = inf is the normal's 1.960."""
    table = {(0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 3): 3.182, (0.975, 4): 2.776, (0.975, 5): 2.571,
             (0.975, 10): 2.228, (0.975, 20): 2.086, (0.975, 30): 2.042, (0.975, 120): 1.980,
             (0.975, math.inf): 1.960, (0.95, 1): 6.314, (0.95, 5): 2.015, (0.95, 10): 1.812, (0.995, 3): 5.841}
    for (p, df), value in table.items():
        assert t_quantile(p, df) == pytest.approx(value, abs=5e-4), (p, df)
        assert t_quantile(1 - p, df) == pytest.approx(-value, abs=5e-4)
    # closed forms hold for every p: df = 1 is Cauchy, df = 2 has t = (2p - 1) / sqrt(2 p (1 - p))
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    # the incomplete beta against closed forms: I_x(1, 1) = x, I_x(a, 1) = x^a, I_x(1/2, 1/2) = 2 asin(sqrt x) / pi
    for x in (0.1, 0.5, 0.93):
        assert regularized_beta(x, 1, 1) == pytest.approx(x, rel=1e-12)
        assert regularized_beta(x, 3.5, 1) == pytest.approx(x ** 3.5, rel=1e-12)
        assert regularized_beta(x, 0.5, 0.5) == pytest.approx(2 * math.asin(math.sqrt(x)) / math.pi, rel=1e-10)
    assert t_cdf(0.0, 7.3) == 0.5 and t_cdf(-2.0, 3) == pytest.approx(1 - t_cdf(2.0, 3), abs=1e-15)


def test_t_quantile_at_non_integer_df_agrees_with_scipy_where_installed():
    """Welch's df is not an integer; scipy (not a dependency) is the independent check where it happens to exist."""
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.25, 4.7, 17.9):
        assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)


def test_welch_interval_by_hand():
    """a = [1, 2, 3.5], b = [0.2, 0.1, 0.5, 0.9], worked by hand:
    means 2.1667 and 0.425, d = 1.741667; s_a^2 = 1.583333, s_b^2 = 0.129167;
    s_a^2/3 = 0.527778, s_b^2/4 = 0.032292, se^2 = 0.560069, se = 0.748378;
    df = 0.560069^2 / (0.527778^2 / 2 + 0.032292^2 / 3) = 0.313678 / (0.139275 + 0.000348) = 2.2466;
    t_0.975(2.2466) = 3.8809 (between the table's 4.303 at df 2 and 3.182 at df 3); half width 2.9044."""
    result = welch([1, 2, 3.5], [0.2, 0.1, 0.5, 0.9])
    assert result.diff == pytest.approx(1.741667, abs=1e-6)
    assert result.se == pytest.approx(0.748378, abs=1e-6)
    assert result.df == pytest.approx(2.2466, abs=1e-4)
    assert (result.low, result.high) == (pytest.approx(-1.16225, abs=1e-4), pytest.approx(4.64558, abs=1e-4))
    # one value on a side: the difference, no interval; equal variances and sizes: df = 2 (n - 1) exactly
    one = welch([1.0], [0.0, 2.0])
    assert one.diff == 0.0 and one.low is None and one.df is None
    assert welch([1, 2, 3], [4, 5, 6]).df == pytest.approx(4.0, rel=1e-12)
    same = welch([2.0, 2.0], [1.0, 1.0])
    assert (same.low, same.high, same.df) == (1.0, 1.0, 2.0)


def test_paired_interval_by_hand():
    """pairs (3, 1), (5, 2), (4, 4): differences 2, 3, 0, mean 5/3, s_d^2 = ((1/3)^2 + (4/3)^2 + (5/3)^2) / 2 = 7/3,
    se = sqrt(7/9) = 0.881917, t_0.975(2) = 4.302653, half width 3.794580."""
    result = paired([(3.0, 1.0), (5.0, 2.0), (4.0, 4.0)])
    assert result.diff == pytest.approx(5 / 3) and result.df == 2.0 and result.se == pytest.approx(0.881917, abs=1e-6)
    assert (result.low, result.high) == (pytest.approx(5 / 3 - 3.794580, abs=1e-5), pytest.approx(5 / 3 + 3.794580, abs=1e-5))
    # the pairs, not the two samples: a shift every seed shares leaves no spread, where Welch sees the seeds' own
    shifted = [(x + 1.0, x) for x in (60.0, 70.0, 65.0)]
    assert (paired(shifted).low, paired(shifted).high) == (1.0, 1.0)
    assert welch([a for a, _ in shifted], [b for _, b in shifted]).low < -5
    one = paired([(2.0, 1.0)])
    assert one.diff == 1.0 and one.low is None and one.df is None
    with pytest.raises(ValueError, match="at least one pair"):
        paired([])


def test_pairs_take_completed_runs_of_a_known_seed_once():
    """A seed that crashed and ran again elsewhere pairs by its completed run; a seed run twice to the end pairs by
    neither (which one?); a run without a seed (trainer.seed null: a random one) pairs with nothing."""
    def run(seed, accuracy, status="completed"):
        metrics = {"status": status, "test/acc": accuracy} if status == "completed" else {"status": status}
        return Run(Path(f"r{seed}{status}{accuracy}"), "r", {"trainer.seed": seed}, metrics)

    group = [run(0, 0.70), run(1, 0.0, "incomplete"), run(1, 0.72), run(2, 0.71), run(2, 0.69), run(None, 0.68),
             run(3, 0.0, "diverged")]
    assert accuracy_by_seed(group) == {0: pytest.approx(70.0), 1: pytest.approx(72.0)}


def test_a_seedless_run_counted_twice_is_known_by_the_seed_it_drew():
    """trainer.seed=null: metrics.json records the seed the run drew, so a copy of the run passed beside it is one
    seed finished twice (refused), and two seedless runs are two seeds; a run from before the record has none."""
    def run(name, drawn, accuracy=0.7):
        metrics = {"status": "completed", "test/acc": accuracy} | ({"seed": drawn} if drawn is not None else {})
        return Run(Path(name), name, {"trainer.seed": None}, metrics)

    original, copy, other = run("a/0", 3_141_592_653), run("copy/0", 3_141_592_653), run("b/0", 271_828, 0.72)
    assert [r.seed for r in (original, other, run("old", None))] == [3_141_592_653, 271_828, None]
    assert repeated_seeds([original, copy, other]) == [3_141_592_653]
    assert repeated_seeds([original, other]) == [] and accuracy_by_seed([original, other]) == {
        3_141_592_653: pytest.approx(70.0), 271_828: pytest.approx(72.0)}
    assert Run(Path("x"), "x", {"trainer.seed": 4}, {"seed": 4, "status": "completed"}).seed == 4


def test_verdict_logic():
    assert verdict("above", 0.1, 3.0) == REPRODUCED
    assert verdict("above", -0.5, 3.0) == NOT_AT_BUDGET  # the interval holds zero
    assert verdict("above", -3.0, -0.2) == CONTRADICTED  # wholly on the other side of zero
    assert verdict("above", -3.0, 0.5) == NOT_AT_BUDGET  # wrong-way estimate, but the interval reaches the paper's sign
    assert verdict("below", -30.0, -20.0) == REPRODUCED
    assert verdict("below", -1.0, 2.0) == NOT_AT_BUDGET
    assert verdict("below", 0.5, 2.0) == CONTRADICTED
    assert verdict("equal", -0.8, 0.9, margin=1.0) == REPRODUCED
    assert verdict("equal", -2.5, 0.5, margin=1.0) == NOT_AT_BUDGET  # too wide to tell
    assert verdict("equal", -4.0, -1.5, margin=1.0) == CONTRADICTED
    assert verdict("equal", 1.2, 3.0, margin=1.0) == CONTRADICTED
    assert verdict("above", None, None) == verdict("below", None, None) == NEEDS_SEEDS
    with pytest.raises(ValueError, match="one of above, below, equal"):
        verdict("better", 0.0, 1.0)


def test_synthetic_sweep_groups_across_resume_compares_and_judges_claims(synthetic):
    tmp_path, a, b = synthetic
    out = tmp_path / "report"
    main([str(a), str(b), "--out", str(out), "--baseline", "discrete", "--baseline", "grad=adjoint"])
    content = json.loads((out / "report.json").read_text())
    configs = {c["grad"]: c for c in content["configurations"]}
    # the resumed seed (trainer.resume=auto, device cpu, threads 1) joins its configuration
    assert set(configs) == {"direct (discrete ResNet)", "adjoint", "anode"}
    assert configs["direct (discrete ResNet)"]["seeds"] == [0, 1, 2] and configs["direct (discrete ResNet)"]["n"] == 3
    # numbers as numbers, accuracy in %
    discrete = configs["direct (discrete ResNet)"]
    assert discrete["final acc %"] == pytest.approx(72.0) and discrete["final acc % std"] == pytest.approx(2.0)
    assert isinstance(content["runs"][0]["final acc %"], float) and isinstance(content["runs"][0]["seed"], int)
    # floor columns where logged (sweep_a), None where a run predates them (sweep_b)
    runs = {r["run"]: r for r in content["runs"]}
    assert runs["sweep_a/0"]["floor"] == 1e-6 and runs["sweep_a/0"]["tf32"] is False
    assert runs["sweep_b/0"]["floor"] is None and runs["sweep_b/0"]["error / floor"] is None
    assert runs["sweep_a/0"]["wall s"] == 120.0 and runs["sweep_b/0"]["wall s"] is None
    assert runs["sweep_a/3"]["error / floor"] == pytest.approx(5e5)
    assert "sweep_a/0" in runs and all(len(name) < 12 for name in runs)  # short names, not the override strings

    comparison = {r["method"]: r for r in content["comparisons"]["discrete"]}
    adjoint = comparison["adjoint, euler N_t=2"]
    expected = welch([40.0, 44.0], [70.0, 72.0, 74.0])
    assert adjoint["baseline"] == "direct (discrete ResNet), euler N_t=1" and adjoint["n method"] == 2
    assert adjoint["difference"] == pytest.approx(-30.0) and adjoint["df"] == pytest.approx(expected.df)
    # by hand: se^2 = 8/2 + 4/3 = 5.3333, df = 5.3333^2 / (4^2/1 + 1.3333^2/2) = 28.444 / 16.889 = 1.6842
    assert adjoint["df"] == pytest.approx(1.6842, abs=1e-4)
    assert adjoint["CI low"] == pytest.approx(expected.low) and adjoint["CI high"] == pytest.approx(expected.high)
    assert {r["method"] for r in content["comparisons"]["grad=adjoint"]} == {"anode, euler N_t=2"}
    # paired over the seeds both ran: adjoint seeds 0, 1 against discrete's: -30, -28 (mean -29, se 1, t(1) 12.706);
    # anode 71, 73, 72 against 70, 72, 74: 1, 1, -2 (mean 0, se 1, t(2) 4.303)
    assert adjoint["pairs"] == 2 and adjoint["paired difference"] == pytest.approx(-29.0)
    assert (adjoint["paired CI low"], adjoint["paired CI high"]) == (pytest.approx(-41.706, abs=1e-3), pytest.approx(-16.294, abs=1e-3))
    anode = comparison["anode, euler N_t=2"]
    assert anode["pairs"] == 3 and (anode["paired CI low"], anode["paired CI high"]) == (
        pytest.approx(-4.303, abs=1e-3), pytest.approx(4.303, abs=1e-3))

    claims = {(c["network"], c["claim"]): c for c in content["claims"]}
    assert set(claims) == {("ResNet-4", "method < baseline"), ("ResNet-4", "|method - baseline| <= 1")}
    below = claims["ResNet-4", "method < baseline"]
    assert below["verdict"] == REPRODUCED and below["paper diff"] == pytest.approx(47.37 - 76.95) and below["epochs"] == 3
    assert below["paper diff in CI"] is True  # -29.58 inside [-30 ± t(1.68) · 2.31]
    equal = claims["ResNet-4", "|method - baseline| <= 1"]
    assert equal["difference"] == pytest.approx(0.0) and equal["verdict"] == NOT_AT_BUDGET  # ± 2.5 points: too wide

    with (out / "report.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and float(table[0]["final acc %"]) == pytest.approx(70.0)
    assert (out / "configurations.csv").read_text().count("\n") == 4
    assert "anode, euler N_t=2" in (out / "comparison.csv").read_text()
    md = (out / "report.md").read_text()
    assert "## Claims" in md and "| ANODE | ResNet-4 |" in md and REPRODUCED in md and NOT_AT_BUDGET in md
    assert "[-41.71, -16.29]" in md and "[-41.71, -16.29] (2)" in md  # the comparison's and the claim's paired interval
    assert "![grad_quality](grad_quality.png)" in md and (out / "grad_quality.png").read_bytes().startswith(PNG)
    quality = content["plots"]["grad_quality.png"]
    assert set(quality) == {"grad_error/rel_l2", "grad_error/cosine", "grad_error/floor_rel_l2", "grad_error/floor_ratio"}
    assert quality["grad_error/rel_l2"]["adjoint, euler N_t=2"]["x"] == [0, 10, 20]
    assert quality["grad_error/rel_l2"]["adjoint, euler N_t=2"]["y"] == pytest.approx([0.5] * 3)
    accuracy = content["plots"]["accuracy.png"]["test/acc"]["direct (discrete ResNet), euler N_t=1"]
    # anode's seeds average to the baseline's curve: the line hidden under another is named in report.md
    note = ("accuracy.png, test accuracy: the line of `anode, euler N_t=2` lies under `direct (discrete ResNet), "
            "euler N_t=1`'s (the same value at every point)")
    assert note in content["identical"] and note in md
    assert not any(n.startswith("accuracy.png, test accuracy: `adjoint") for n in content["identical"])
    assert accuracy["y"][-1] == pytest.approx(72.0) and (accuracy["min"][-1], accuracy["max"][-1]) == pytest.approx((70.0, 74.0))


def test_the_regenerate_line_repeats_the_command_as_written(synthetic, monkeypatch):
    tmp_path, _, _ = synthetic
    monkeypatch.chdir(tmp_path)
    main(["sweep_a", "sweep_b", "--out", "rep", "--baseline", "discrete"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Regenerate with `anode-report sweep_a sweep_b --out rep --baseline discrete`" in md
    assert "`tensorboard --logdir rep`" in md


def test_contradicted_and_seedless_claims(synthetic):
    _, a, b = synthetic
    groups = report_module.group_by_seed(report_module.find_runs([a, b]))
    runs = [r for g in groups for r in g]
    wrong_way = Claim("test", "ResNet-4", r"resnet4", "grad=anode", "discrete", "below", -5.0, "")
    assert claim_rows(groups, runs, [], [wrong_way])[0]["verdict"] == NOT_AT_BUDGET  # anode - discrete = 0 ± 2.5
    adjoint_above = Claim("test", "ResNet-4", r"resnet4", "grad=adjoint", "discrete", "above", 5.0, "")
    row = claim_rows(groups, runs, [], [adjoint_above])[0]
    assert row["CI high"] < 0 and row["verdict"] == CONTRADICTED
    one_seed = [g[:1] if g[0].get("grad.name") == "adjoint" else g for g in groups]
    row = claim_rows(one_seed, runs, [], [adjoint_above])[0]
    assert row["difference"] == pytest.approx(40.0 - 72.0) and row["CI low"] is None and row["verdict"] == NEEDS_SEEDS
    assert claim_rows(groups, runs, [], [Claim("t", "x", r"alexnet", "grad=adjoint", "discrete", "below", -1, "")]) == []


def test_a_claim_on_a_network_holds_for_the_model_family_that_builds_it():
    """model=resnet and model=sqnxt record the family's name, and build its default preset: every claim
    on that preset must reach those runs too (the default anode-train run is model=resnet)."""
    from anode_bench.models import FAMILIES

    for family, preset in FAMILIES.items():
        on_preset = [c for c in report_module.CLAIMS if re.search(c.model, preset, re.IGNORECASE)]
        assert on_preset and all(re.search(c.model, family, re.IGNORECASE) for c in on_preset), family
        assert not any(re.search(c.model, family + "_x", re.IGNORECASE) for c in on_preset)  # not every name it starts


@pytest.mark.parametrize("model", ["resnet18_aca", "resnet"])  # model=resnet, the default, builds resnet18_aca
def test_the_naive_backprop_claim_is_judged_against_direct_with_differentiated_step_sizes_only(tmp_path, model):
    """ACA's "naive backpropagation" differentiates the step sizes: direct with grad.step_sizes=constant computes
    aca's own gradient and is no baseline for that claim (a run from before the option was naive)."""
    adaptive = {"model.name": model, "solver.name": "heun_euler", "solver.steps": None, "solver.rtol": 0.01}
    for seed in (0, 1):
        fake_run(tmp_path / f"aca{seed}", {**adaptive, "grad.name": "aca", "trainer.seed": seed}, 0.70 + seed / 100)
        fake_run(tmp_path / f"old{seed}", {**adaptive, "grad.name": "direct", "trainer.seed": seed}, 0.60 + seed / 100)
        fake_run(tmp_path / f"constant{seed}", {**adaptive, "grad.name": "direct", "grad.step_sizes": "constant",
                                                "trainer.seed": seed}, 0.68 + seed / 100)
    groups = group_by_seed(find_runs([tmp_path]))
    runs = [r for g in groups for r in g]
    naive = [c for c in report_module.CLAIMS if "naive" in c.paper_text]
    [row] = claim_rows(groups, runs, [], naive)
    assert row["difference"] == pytest.approx(10.0)  # against the constant step sizes: 2.0


def test_a_seed_passed_twice_gets_no_interval_and_a_diverged_run_leaves_the_accuracy_mean(synthetic):
    """sweep_a passed again from a copy holds every baseline seed twice: Welch's interval would count them twice
    (n 6, and far too narrow), so there is none and the claim gets no verdict, saying why. A diverged run that
    logged the accuracy of its last epoch leaves its configuration's accuracy mean, as it leaves the comparison."""
    tmp_path, a, b = synthetic
    copy = tmp_path / "copy_of_a"
    shutil.copytree(a / "0_grad=discrete,trainer.seed=0", copy / "0_grad=discrete,trainer.seed=0")
    fake_run(tmp_path / "diverged" / "9", {"grad.name": "anode", "trainer.seed": 7}, 0.10, status="diverged")
    out = tmp_path / "report"
    main([str(a), str(b), str(copy), str(tmp_path / "diverged"), "--out", str(out), "--baseline", "discrete"])
    content = json.loads((out / "report.json").read_text())
    anode = {c["grad"]: c for c in content["configurations"]}["anode"]
    assert sorted(anode["seeds"]) == [0, 1, 2, 7] and anode["diverged"] == 1
    assert anode["final acc %"] == pytest.approx(72.0) and anode["final acc % std"] == pytest.approx(1.0)
    rows = {r["method"]: r for r in content["comparisons"]["discrete"]}
    adjoint = rows["adjoint, euler N_t=2"]
    assert adjoint["CI low"] is None and adjoint["CI high"] is None and adjoint["n baseline"] == 4
    assert adjoint["note"] == ("no interval: seed 0 of direct (discrete ResNet), euler N_t=1 finished twice "
                               "(a run passed twice?); pass each run once")
    assert adjoint["pairs"] == 1  # seed 1 alone: seed 0 pairs by neither copy
    [below] = [c for c in content["claims"] if c["claim"] == "method < baseline"]
    assert below["verdict"] == f"no verdict: {adjoint['note']}"
    assert "| 72.00 ± 1.00 (n=3) |" in (out / "report.md").read_text()  # 3 of the 4 runs counted


def test_a_lost_seed_withholds_the_verdict_and_unfinished_seeds_are_named(synthetic):
    """The adjoint's seed 2 diverged: its two survivors alone (40, 44) would make the "adjoint below" claim look
    settled, so there is no interval and no verdict, and the note says why. anode's seed 3 is still running (config
    and events, no metrics.json): anode's comparison keeps its interval over the seeds that finished and names it."""
    tmp_path, a, b = synthetic
    fake_run(a / "9_grad=adjoint,trainer.seed=2", {"grad.name": "adjoint", "trainer.seed": 2}, 0.10, status="diverged")
    running = fake_run(b / "3_grad=anode", {"grad.name": "anode", "trainer.seed": 3, "trainer.tf32": False}, 0.0)
    (running / "metrics.json").unlink()
    out = tmp_path / "report"
    content = report([a, b], out, ["discrete"])
    rows = {r["method"]: r for r in content["comparisons"]["discrete"]}
    adjoint, anode = rows["adjoint, euler N_t=2"], rows["anode, euler N_t=2"]
    assert adjoint["difference"] == pytest.approx(-30.0) and adjoint["CI low"] is None and adjoint["paired CI low"] is None
    assert adjoint["note"] == ("no interval: adjoint, euler N_t=2 lost seeds to divergence (adjoint, euler N_t=2: "
                               "seed 2 diverged); the rest alone would flatter it")
    assert anode["CI low"] == pytest.approx(welch([71.0, 73.0, 72.0], [70.0, 72.0, 74.0]).low)
    assert anode["note"] == "left out: anode, euler N_t=2: seed 3 unfinished"
    claims = {c["claim"]: c for c in content["claims"]}
    assert claims["method < baseline"]["verdict"] == f"no verdict: {adjoint['note']}"
    assert claims["|method - baseline| <= 1"]["verdict"] == NOT_AT_BUDGET


def test_seeds_without_spread_give_no_interval():
    """Two seeds per side that agree to the last digit: the sample variance is zero, and a zero-width interval would
    read as certainty; there is none, and no verdict."""
    def run(grad, seed, accuracy):
        config = {"grad.name": grad, "solver.name": "euler", "solver.steps": 1 if grad == "direct" else 2,
                  "model.name": "resnet4_anode", "trainer.seed": seed, "trainer.epochs": 3}
        return Run(Path(f"{grad}{seed}"), f"{grad}{seed}", config, {"status": "completed", "epochs": 3, "test/acc": accuracy})

    runs = [run("direct", 0, 0.5), run("direct", 1, 0.5), run("anode", 0, 0.495), run("anode", 1, 0.495)]
    [row] = claim_rows(group_by_seed(runs), runs, [], [Claim("t", "ResNet-4", "resnet4", "grad=anode", "discrete",
                                                              "equal", 0.0, "", margin=1.0)])
    assert row["difference"] == pytest.approx(-0.5) and row["CI low"] is None and row["paired CI low"] is None
    assert row["verdict"] == ("no verdict: no interval: every seed gave the same accuracy on each side: no spread to "
                              "size an interval with")
    # seeds that differ, each method run 1 point above its baseline (up to the rounding of the subtraction: an se of
    # 1e-14): Welch's interval, no paired one
    runs = [run("direct", 0, 0.59), run("direct", 1, 0.6064), run("anode", 0, 0.60), run("anode", 1, 0.6164)]
    [row] = claim_rows(group_by_seed(runs), runs, [], [Claim("t", "ResNet-4", "resnet4", "grad=anode", "discrete",
                                                              "above", 1.0, "")])
    assert row["CI low"] < 0 < row["CI high"] and row["paired difference"] == pytest.approx(1.0)
    assert row["paired CI low"] is None and row["verdict"] == NOT_AT_BUDGET


def test_times_measured_under_other_thread_counts_are_named_under_the_configurations(synthetic):
    """Seed 1 of the discrete baseline and of the adjoint ran on 1 thread, the other seeds on the default: each
    configuration's step ms pools the two, and the report says so. anode's seed 2 resumed on 2 threads after 1
    (trainer.threads changes no result, so it is still a completed run): its times mix the two. Without that
    resume anode's runs share one setting, and anode leaves the list."""
    tmp_path, a, b = synthetic
    resumed = b / "2_grad=anode"
    shutil.copytree(resumed / ".hydra", resumed / ".hydra.1")
    (resumed / ".hydra.1" / "config.yaml").write_text(
        (resumed / ".hydra" / "config.yaml").read_text().replace("threads: null", "threads: 1"))
    config = resumed / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("threads: null", "threads: 2"))
    run = {r.name: r for r in find_runs([a, b])}["sweep_b/2"]
    assert run.completed and run.timed_under == "cpu, threads 1 then 2"
    assert mixed_timing([[run]], [run], []) == ["anode, euler N_t=2: cpu, threads 1 then 2"]  # a run alone mixes them
    content = report([a, b], tmp_path / "report", ["discrete"])
    assert content["mixed timing"] == ["direct (discrete ResNet), euler N_t=1: cpu, threads default; cpu, threads 1",
                                       "adjoint, euler N_t=2: cpu, threads default; cpu, threads 1",
                                       "anode, euler N_t=2: cpu, threads default; cpu, threads 1 then 2"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "- anode, euler N_t=2: cpu, threads default; cpu, threads 1 then 2" in text
    shutil.rmtree(resumed / ".hydra.1")
    config.write_text(config.read_text().replace("threads: 2", "threads: null"))
    assert len(report([a, b], tmp_path / "report", ["discrete"])["mixed timing"]) == 2  # anode's runs: one setting


def test_runs_of_another_torchrun_process_count_pool_apart(tmp_path):
    """Each torchrun process normalizes its own slice of the batch, so 2 processes train another network than 1:
    such runs are a configuration of their own (metrics.json's processes; a run from before it counts as 1), and
    a run whose count a resume changed pools with none."""
    for seed in (0, 1):
        fake_run(tmp_path / f"one{seed}", {"trainer.seed": seed}, 0.70)
        two = fake_run(tmp_path / f"two{seed}", {"trainer.seed": seed}, 0.60)
        metrics = json.loads((two / "metrics.json").read_text())
        (two / "metrics.json").write_text(json.dumps({**metrics, "processes": 2 if seed == 0 else [2, 1]}))
    runs = {run.name: run for run in find_runs([tmp_path])}
    assert sorted(sorted(r.name for r in g) for g in group_by_seed(list(runs.values()))) == [
        ["one0", "one1"], ["two0"], ["two1"]]
    assert runs["two1"].status == "completed; left out: resumed with another config: processes (2 -> 1)"
    assert not runs["two1"].completed and runs["two0"].completed
    rows = report([tmp_path], tmp_path / "report", [])["configurations"]
    assert sorted(row["other"] for row in rows) == ["", "processes=2", "processes=[2, 1]"], rows  # each row says which


def test_a_run_resumed_with_another_config_pools_with_none(synthetic):
    """anode's seed 0 trained its first epochs as the adjoint (.hydra.1) and was resumed as anode under
    trainer.resume_override; seed 1 was finished, then resumed with trainer.epochs raised to 6 and is running on,
    its metrics.json the 3-epoch one. Neither is a completed run of the configuration its .hydra names. Once seed 1
    has finished, it is: under a step schedule more epochs change nothing before them; under cosine they do."""
    tmp_path, a, b = synthetic
    mixed, raised = b / "0_grad=anode", b / "1_grad=anode"
    shutil.copytree(a / "3_grad=adjoint,trainer.seed=0" / ".hydra", mixed / ".hydra.1")
    shutil.copytree(raised / ".hydra", raised / ".hydra.1")
    config = raised / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 3", "epochs: 6"))
    runs = {run.name: run for run in find_runs([a, b])}
    assert runs["sweep_b/0"].resumed_with_changes == "grad.name (adjoint -> anode)"
    assert not runs["sweep_b/0"].completed and runs["sweep_b/0"].status == (
        "completed; left out: resumed with another config: grad.name (adjoint -> anode)")
    assert runs["sweep_b/1"].stale and runs["sweep_b/1"].status == "incomplete: resumed after 3 of 6 epochs"
    assert not runs["sweep_b/1"].completed
    assert runs["sweep_a/1"].earlier == () and runs["sweep_a/1"].completed
    content = report([a, b], tmp_path / "report", ["discrete"])
    anode = {c["grad"]: c for c in content["configurations"] if c["grad"] == "anode" and c["n"] == 2}["anode"]
    assert anode["final acc %"] == pytest.approx(72.0) and anode["final acc % n"] == 1 and anode["incomplete"] == 1
    assert anode["grad error n"] == 1 and anode["peak MiB n"] == 1  # the mixed run counts in no column
    mixed_metrics = json.loads((mixed / "metrics.json").read_text())
    (mixed / "metrics.json").write_text(json.dumps({**mixed_metrics, "status": "diverged", "failure": "step 9: loss nan"}))
    content = report([a, b], tmp_path / "report", ["discrete"])
    [row] = [r for r in content["comparisons"]["discrete"] if r["method"].startswith("anode, euler N_t=2 (trainer.epochs=3)")]
    assert "seed 0 resumed with another config" in row["note"] and "diverged" not in row["note"]  # no config's divergence
    [anode] = [c for c in content["configurations"] if c["grad"] == "anode" and c["n"] == 2]
    assert anode["diverged"] == 0 and anode["incomplete"] == 1
    (mixed / "metrics.json").write_text(json.dumps(mixed_metrics))
    [row] = [r for r in content["comparisons"]["discrete"] if r["method"].startswith("anode, euler N_t=2 (trainer.epochs=3)")]
    assert row["n method"] == 1 and "seed 0 resumed with another config" in row["note"]
    assert "trainer.epochs" in " ".join(content["without baseline"]["discrete"])  # the 6-epoch anode seed
    metrics = raised / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"epochs": 3', '"epochs": 6'))
    finished = {run.name: run for run in find_runs([a, b])}["sweep_b/1"]
    assert finished.completed and finished.status == "completed"
    config.write_text(config.read_text().replace("epochs: 6", "epochs: 6\n  schedule: cosine"))
    shutil.rmtree(raised / ".hydra.1")
    shutil.copytree(raised / ".hydra", raised / ".hydra.1")
    (raised / ".hydra.1" / "config.yaml").write_text(config.read_text().replace("epochs: 6", "epochs: 3"))
    cosine = {run.name: run for run in find_runs([a, b])}["sweep_b/1"]
    assert cosine.resumed_with_changes == "trainer.epochs (3 -> 6)" and not cosine.completed


def test_what_an_ordinary_resume_changes_is_no_change_of_config(synthetic):
    """Resumed with another thread count, eval batch size, data directory (the same file), and by code that has
    a key the earlier record lacks: one configuration. A key the earlier record holds and the latest lacks is a
    change, so is a lowered trainer.epochs. Only .hydra.<number> dirs are earlier invocations, in their order
    (.hydra.10 after .hydra.2); one without config.yaml adds nothing, and a hand-made .hydra.bak is no record."""
    tmp_path, a, b = synthetic
    run_dir = b / "0_grad=anode"
    config = run_dir / ".hydra" / "config.yaml"
    latest = config.read_text()

    def earlier(name, text):
        (run_dir / name).mkdir()
        (run_dir / name / "config.yaml").write_text(text)

    earlier(".hydra.2", latest.replace("threads: null", "threads: 2").replace("/a/full.npz", "/b/elsewhere/full.npz")
            .replace("log_every: 50", "log_every: 50\n  eval_batch_size: 64"))
    config.write_text(latest.replace("log_every: 50", "log_every: 50\n  eval_batch_size: 256\n  compile: false"))
    earlier(".hydra.10", config.read_text().replace("lr: 0.1", "lr: 0.2"))
    (run_dir / ".hydra.3").mkdir()
    earlier(".hydra.bak", latest.replace("grad:\n  name: anode", "grad:\n  name: adjoint"))
    run = {r.name: r for r in find_runs([a, b])}["sweep_b/0"]
    assert [e.get("trainer.lr") for e in run.earlier] == [0.1, None, 0.2]  # .hydra.2, .hydra.3 (no config), .hydra.10
    assert run.resumed_with_changes == "trainer.lr (0.2 -> 0.1)"
    shutil.rmtree(run_dir / ".hydra.10")
    run = {r.name: r for r in find_runs([a, b])}["sweep_b/0"]
    assert run.resumed_with_changes == "" and run.completed
    config.write_text(latest.replace("probe:\n  every: 10\n  reference: discrete\n", ""))
    assert "probe.every (10 -> absent)" in {r.name: r for r in find_runs([a, b])}["sweep_b/0"].resumed_with_changes
    config.write_text(latest.replace("epochs: 3", "epochs: 2"))
    lowered = {r.name: r for r in find_runs([a, b])}["sweep_b/0"]
    assert lowered.resumed_with_changes == "trainer.epochs (3 -> 2)" and not lowered.stale


def test_a_restart_from_scratch_is_no_resume(tmp_path):
    """trainer.resume=auto in a dir whose run died before its first checkpoint starts afresh: the earlier records
    describe nothing the new run holds, so they move aside as .hydra.discarded.N and the run is one config's.
    A resume keeps them as .hydra.N, its history."""
    from anode_bench.run_state import save_record

    run_dir = fake_run(tmp_path / "sweep" / "0", {"grad.name": "anode", "trainer.lr": 0.1}, 0.7)
    shutil.copytree(run_dir / ".hydra", run_dir / ".hydra.1")
    record = {"config.yaml": (run_dir / ".hydra" / "config.yaml").read_text().replace("lr: 0.1", "lr: 0.05")}
    save_record(run_dir, record, fresh=True)
    assert sorted(p.name for p in run_dir.glob(".hydra*")) == [".hydra", ".hydra.discarded.1", ".hydra.discarded.2"]
    [run] = find_runs(tmp_path / "sweep")
    assert run.get("trainer.lr") == 0.05 and run.earlier == () and run.completed
    save_record(run_dir, {"config.yaml": record["config.yaml"].replace("lr: 0.05", "lr: 0.07")})
    assert sorted(p.name for p in run_dir.glob(".hydra*")) == [".hydra", ".hydra.1", ".hydra.discarded.1", ".hydra.discarded.2"]
    [run] = find_runs(tmp_path / "sweep")
    assert run.resumed_with_changes == "trainer.lr (0.05 -> 0.07)" and not run.completed


def test_a_configuration_without_a_comparable_baseline_is_named_with_its_differences(synthetic):
    tmp_path, a, b = synthetic
    for seed in (0, 1):
        fake_run(b / f"{seed + 5}_compiled", {"grad.name": "aca", "trainer.seed": seed, "trainer.compile": True}, 0.7)
    content = report([a, b], tmp_path / "report", ["discrete"])
    assert not any(r["method"].startswith("aca") for r in content["comparisons"]["discrete"])
    [line] = content["without baseline"]["discrete"]
    assert line.startswith("aca") and line.endswith("differs from the nearest baseline in trainer.compile")
    assert f"- {line}" in (tmp_path / "report" / "report.md").read_text()
    content = report([a, b], tmp_path / "report", ["grad=aca"])  # the compiled runs as the baseline: none comparable
    assert content["comparisons"]["grad=aca"] == [] and len(content["without baseline"]["grad=aca"]) == 3
    md = (tmp_path / "report" / "report.md").read_text()
    assert "(no configuration is comparable with the `grad=aca` runs: they differ as listed below)" in md
    assert "naming one the runs hold" not in md


def test_selectors_match_booleans_nulls_and_numbers():
    from anode_bench.report.comparison import same_value

    assert same_value(False, "false") and same_value(False, "0") and not same_value(False, "true")
    assert same_value(True, "True") and same_value(True, "1") and not same_value(True, "false")
    assert same_value(None, "null") and same_value(None, "none") and not same_value(None, "0")
    assert same_value(0.01, "1e-2") and same_value(1, "1") and same_value("aca", "aca") and not same_value(1, "true")


def test_several_dirs_default_output_and_bad_baselines(synthetic, capsys):
    tmp_path, a, b = synthetic
    main([str(a), str(b)])  # written into their common parent
    assert "8 runs" in capsys.readouterr().out and (tmp_path / "report.md").exists()
    for baseline, message in [
        ("grad.nam=direct", r"--baseline grad\.nam=direct: no run's config has grad\.nam \(groups: grad,"),
        ("grad=direct,solver", "each part must be KEY=VALUE"),
        ("anod", r"--baseline anod: no run has grad=anod; a bare name is a gradient method \(the runs': adjoint, direct\)"),
    ]:
        with pytest.raises(SystemExit) as exit:
            main([str(a), "--baseline", baseline])
        error = capsys.readouterr().err
        assert exit.value.code == 2 and re.search(message, error) and error.count("\n") == 1, error
    main([str(a), str(b), "--baseline", "adjoint", "--out", str(tmp_path / "adjoint")])  # a bare name: grad=adjoint
    [row] = json.loads((tmp_path / "adjoint" / "report.json").read_text())["comparisons"]["adjoint"]
    assert row["method"].startswith("anode") and row["baseline"].startswith("adjoint")


def test_a_step_written_twice_keeps_its_latest_value(tmp_path):
    """A run killed after logging epoch 2's accuracy but before checkpointing it logs epoch 2 again when
    resumed (TensorBoard's purge covers the step axis only): the report reads one value per epoch, the latest."""
    first = SummaryWriter(str(tmp_path), filename_suffix=".a")
    for epoch, value in ((1, 0.30), (2, 0.40)):
        first.add_scalar("test/acc", value, epoch)
    first.close()
    # event files are read in name order: time (s), host, pid, then the process's writer count, which is not
    # zero-padded (writer 10 sorts before writer 9), so the resumed run's file must open in a later second
    time.sleep(1.1)
    resumed = SummaryWriter(str(tmp_path), filename_suffix=".b")
    for epoch, value in ((2, 0.41), (3, 0.50)):
        resumed.add_scalar("test/acc", value, epoch)
    resumed.close()
    assert read_scalars(tmp_path)["test/acc"] == [(1, pytest.approx(0.30)), (2, pytest.approx(0.41)), (3, pytest.approx(0.50))]


def test_a_resumed_runs_purge_is_read_without_a_warning(tmp_path, caplog):
    """A resume's purge_step is how TensorBoard drops what a killed run logged after its checkpoint: expected, so
    anode-report reads it without tensorboard's "likely caused by a TensorFlow restart" warning per resume."""
    first = SummaryWriter(str(tmp_path))
    for step in (1, 2, 3):
        first.add_scalar("train/loss", 1.0 / step, step)
    first.close()
    time.sleep(1.1)  # event files are read in name order, and their names start with the second they were opened
    resumed = SummaryWriter(str(tmp_path), purge_step=2)
    resumed.add_scalar("train/loss", 0.45, 2)
    resumed.close()
    assert read_scalars(tmp_path)["train/loss"] == [(1, pytest.approx(1.0)), (2, pytest.approx(0.45))]
    assert not [r for r in caplog.records if "TensorFlow restart" in r.getMessage()]


def test_help_is_not_cut_short(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "not reproduced at this budget" in text and "needs >= 2 seeds" in text and "--baseline" in text


def test_plot_axes_integer_epochs_memory_from_zero_distinct_styles(tmp_path, monkeypatch):
    """What a reader sees, read off the axes before saving: a 1-epoch curve has the one tick 1 (not 0.945 ... 1.050),
    a memory axis starts at 0, two identical series get different line styles and markers, the legend is the
    figure's (outside the axes), and saving warns nothing (constrained layout, no tight_layout)."""
    seen = {}
    real_finish = report_plots.finish

    def capture(plt, fig, axes, path):
        seen[path.name] = [(list(ax.get_xticks()), ax.get_ylim(), [(line.get_linestyle(), line.get_marker()) for line in ax.lines])
                           for ax in axes]
        real_finish(plt, fig, axes, path)
        seen[path.name + " legends"] = (len(fig.legends), [ax.get_legend() for ax in axes])

    monkeypatch.setattr(report_plots, "finish", capture)
    one_epoch = {"x": [1], "y": [50.0], "std": [0.0], "min": [49.0], "max": [51.0], "n": [2]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_module.plot_curves(tmp_path / "acc.png", {"test/acc": {"a": one_epoch, "b": dict(one_epoch)}},
                                  report_module.CURVES)
        report_module.plot_versus(tmp_path / "mem.png", {"N_t": {"a": {"x": [1, 2], "y": [100.0, 101.0], "std": [0, 0],
                                                                       "min": [100.0, 101.0], "max": [100.0, 101.0]}}},
                                  "MiB", "memory", logy=False)
    (ticks, _, styles_), = seen["acc.png"]
    assert ticks == [1] and styles_[0] != styles_[1]
    assert seen["acc.png legends"] == (1, [None])
    (_, (bottom, top), _), = seen["mem.png"]
    assert bottom == 0 and top > 101


def test_runs_whose_job_numbers_repeat_keep_their_whole_names(tmp_path):
    """Several sweeps into one directory (a seed-by-seed sweep script) repeat Hydra's job numbers: cutting each
    job folder to its number would name different runs alike, so those keep the folder name."""
    root = tmp_path / "sweep"
    for seed in (0, 1):
        fake_run(root / f"0_grad=direct,trainer.seed={seed}", {"grad.name": "direct", "trainer.seed": seed}, 0.5)
    fake_run(root / "1_grad=adjoint,trainer.seed=0", {"grad.name": "adjoint", "trainer.seed": 0}, 0.3)
    names = sorted(run.name for run in find_runs(root))
    assert names == ["0_grad=direct,trainer.seed=0", "0_grad=direct,trainer.seed=1", "1"]


def test_a_run_from_before_the_probe_rename_and_tf32_pools_with_todays_on_the_cpu(tmp_path):
    """Runs written before `grad_check` became `probe` and before `trainer.tf32` existed: on the CPU they
    are today's runs of the same settings (TF32 is a CUDA switch); on CUDA the missing tf32 was PyTorch's
    default, so such a run stays a configuration of its own."""
    for device in ("cpu", "cuda"):
        old = fake_run(tmp_path / device / "0_old", {"trainer.device": device, "trainer.seed": 0}, 0.5)
        config = yaml.safe_load((old / ".hydra" / "config.yaml").read_text())
        config["grad_check"] = config.pop("probe")
        (old / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        fake_run(tmp_path / device / "1_new", {"trainer.device": device, "trainer.seed": 1, "trainer.tf32": False}, 0.6)
        for run in ("0_old", "1_new"):  # metrics.json's device: where the run ran
            metrics_path = tmp_path / device / run / "metrics.json"
            metrics_path.write_text(json.dumps({**json.loads(metrics_path.read_text()), "device": device}))
    cpu, cuda = (group_by_seed(find_runs([tmp_path / device])) for device in ("cpu", "cuda"))
    assert [[run.name for run in group] for group in cpu] == [["0", "1"]]
    assert cpu[0][0].get("probe.every") == 10 and cpu[0][0].get("trainer.tf32") is False
    assert len(cuda) == 2


def test_a_direct_run_from_before_grad_step_sizes_pools_with_todays_differentiated_one(tmp_path):
    """`direct` differentiated its step sizes before `grad.step_sizes` existed: such a run pools with today's
    `step_sizes=differentiated` runs, not with `constant` ones."""
    fake_run(tmp_path / "0_old", {"grad.name": "direct", "trainer.seed": 0}, 0.5)
    for seed, step_sizes in ((1, "differentiated"), (2, "constant")):
        fake_run(tmp_path / f"{seed}_new", {"grad.name": "direct", "grad.step_sizes": step_sizes, "trainer.seed": seed}, 0.6)
    groups = group_by_seed(find_runs([tmp_path]))
    assert sorted([run.name for run in group] for group in groups) == [["0", "1"], ["2"]]


def test_a_configurations_seeds_are_listed_in_order_whatever_the_folders_order(tmp_path):
    """Two sweeps of one configuration (seeds 0-1, then 2-3) number their jobs alike: path order interleaves them."""
    for job, seed in ((0, 0), (0, 2), (1, 1), (1, 3)):
        fake_run(tmp_path / f"{job}_trainer.seed={seed}", {"trainer.seed": seed}, 0.5)
    [row] = report_module.tables.configuration_rows(group_by_seed(find_runs([tmp_path])), [])
    assert report_module.tables.configuration_cells(row)["seeds"] == "0, 1, 2, 3 (n=4)"


def test_python_dash_m_runs_the_command(tmp_path):
    missing = tmp_path / "missing"
    result = subprocess.run([sys.executable, "-m", "anode_bench.report", str(missing)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"anode-report: {missing} is not a directory"]


def test_curves_average_the_runs_the_tables_count_and_flag_points_fewer_gave(tmp_path, monkeypatch):
    """A curve is the mean over a configuration's completed runs, as the tables' accuracy means are (over all of its
    runs while none has completed): a seed still running does not pull its early epochs in, and a point fewer of
    the counted seeds gave (one logged an epoch more) carries n < seeds instead of a silent jump in the mean."""
    root, today = tmp_path / "sweep", {"trainer.tf32": False}  # today's config (an unfinished run's is not upgraded)
    fake_run(root / "0", {"grad.name": "anode", "trainer.seed": 0, **today}, 0.6)  # test/acc 20, 40, 60 at epochs 1-3
    fake_run(root / "1", {"grad.name": "anode", "trainer.seed": 1, **today}, 0.3)  # 10, 20, 30
    writer = SummaryWriter(str(root / "1"))
    writer.add_scalar("test/acc", 0.5, 4)
    writer.close()
    for name, grad in (("2", "anode"), ("3", "adjoint")):  # still running: one epoch at 99%
        (fake_run(root / name, {"grad.name": grad, "trainer.seed": 2, **today}, 0.99, curve=False) / "metrics.json").unlink()
        writer = SummaryWriter(str(root / name))
        writer.add_scalar("test/acc", 0.99, 1)
        writer.close()
    hollow = {}
    real_finish = report_plots.finish

    def capture(plt, fig, axes, path):
        hollow[path.name] = [list(line.get_xdata()) for line in axes[0].lines if line.get_markerfacecolor() == "white"]
        real_finish(plt, fig, axes, path)

    monkeypatch.setattr(report_plots, "finish", capture)
    content = report(root, tmp_path / "out")
    curves = content["plots"]["accuracy.png"]["test/acc"]
    running = by_run(content)["2"]  # how far a run without metrics.json got, from its events
    assert (running["epochs"], running["status"], running["final acc %"]) == (1, "incomplete: 1 of 3 epochs", None)
    assert hollow["accuracy.png"] == [[4]]  # drawn as such: the one point a single seed gave
    anode, = [c for label, c in curves.items() if label.startswith("anode")]
    assert anode["x"] == [1, 2, 3, 4] and anode["seeds"] == 2 and anode["n"] == [2, 2, 2, 1]
    assert anode["y"] == pytest.approx([15.0, 30.0, 45.0, 50.0])
    adjoint, = [c for label, c in curves.items() if label.startswith("adjoint")]
    assert adjoint["y"] == pytest.approx([99.0]) and adjoint["seeds"] == 1  # nothing completed: the running run


def test_configurations_a_label_cannot_tell_apart_do_not_draw_over_each_other(tmp_path):
    """Two configurations whose labels coincide keep a curve and a point each (the second named by its run), and a
    fixed-step run's error control, which it ignores, does not make a configuration of its own."""
    root = tmp_path / "sweep"
    for seed, rtol in ((0, 0.01), (1, 0.001)):  # a sweep script passing its rtol to the discrete baseline too
        fake_run(root / f"euler{seed}", {"solver.steps": 1, "solver.rtol": rtol, "trainer.seed": seed}, 0.5 + seed / 10)
    for name, accuracy in (("a", 0.2), ("b", 0.4)):  # no .hydra: nothing to label them by
        shutil.rmtree(fake_run(root / f"bare_{name}", {}, accuracy) / ".hydra")
    content = report(root, tmp_path / "out")
    assert len(content["configurations"]) == 3
    euler, = [r for r in content["configurations"] if r["solver"] == "euler"]
    assert euler["n"] == 2
    curves = content["plots"]["accuracy.png"]["test/acc"]
    assert len(curves) == 3 and sorted(c["y"][-1] for c in curves.values()) == pytest.approx([20.0, 40.0, 55.0])
    # against N_t: two configurations that a label omits what tells them apart (here: no swept key given)
    runs = [Run(Path(f"r{lr}"), f"r{lr}", {"grad.name": "direct", "solver.name": "euler", "solver.steps": 2,
                                           "trainer.lr": lr}, {"memory/peak_mib": lr}) for lr in (1.0, 2.0)]
    panel = versus_discretization([[r] for r in runs], runs, [], "memory/peak_mib")["N_t"]
    assert sorted(s["y"] for s in panel.values()) == [[1.0], [2.0]]


def test_error_bars_span_the_seeds_and_a_log_axis_counts_the_zeros_it_cannot_draw(tmp_path, monkeypatch):
    """memory.png and grad_error.png bars run from the lowest seed to the highest (± std went below zero on a log
    axis), and a float64 run's floor of 0 is counted on the panel instead of vanishing."""
    root = tmp_path / "sweep"
    for seed, error in enumerate((3.8e-5, 1e-4, 6.8e-4)):
        run = fake_run(root / f"aca{seed}", {"grad.name": "aca", "trainer.seed": seed}, 0.5)
        metrics = json.loads((run / "metrics.json").read_text()) | {"grad_error/rel_l2_mean": error}
        (run / "metrics.json").write_text(json.dumps(metrics))
    run = fake_run(root / "fp64", {"grad.name": "direct", "trainer.precision": "fp64"}, 0.5)
    metrics = json.loads((run / "metrics.json").read_text()) | {"grad_error/rel_l2_mean": 0.0, "grad_error/floor_rel_l2_mean": 0.0}
    (run / "metrics.json").write_text(json.dumps(metrics))
    seen = {}
    real_finish = report_plots.finish

    def capture(plt, fig, axes, path):
        seen[path.name] = [([t.get_text() for t in ax.texts], [c for c in ax.containers]) for ax in axes]
        real_finish(plt, fig, axes, path)

    monkeypatch.setattr(report_plots, "finish", capture)
    error = report(root, tmp_path / "out")["plots"]["grad_error.png"]["N_t"]
    aca, = [s for label, s in error.items() if label.startswith("aca")]
    assert aca["min"] == [3.8e-5] and aca["max"] == [6.8e-4] and aca["y"][0] - aca["std"][0] < 0 < aca["min"][0]
    (texts, containers), = seen["grad_error.png"]
    assert "2 points at 0 not drawn (log axis)" in texts  # the fp64 run's error and its floor
    (_, caps, (bars,)), = [c for c in containers if c.has_yerr]
    (low, high), = [segment[:, 1] for segment in bars.get_segments()]
    assert (low, high) == pytest.approx((3.8e-5, 6.8e-4))
