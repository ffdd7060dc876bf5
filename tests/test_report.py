"""anode-report: a tiny real sweep (multirun over grad x N_t x seed, plus a diverged, an adaptive and an
incomplete run) becomes report.md, report.json, three PNG plots and a custom-scalars layout."""
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.utils.tensorboard import SummaryWriter

from anode_bench.report import LAYOUT, Run, group_by_seed, main, report, run_rows, swept_keys, versus_discretization

TINY = ["experiment=smoke", "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "trainer.log_every=1",
        "grad_check.every=2", "dataset.train_size=128", "dataset.test_size=64"]
PNG = b"\x89PNG\r\n\x1a\n"


def anode_train(args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """root/sweep: 8 jobs (direct, adjoint) x N_t (1, 2) x seed (0, 1); root/diverged; root/adaptive; root/crashed."""
    root = tmp_path_factory.mktemp("report")
    anode_train(["-m", *TINY, "grad=direct,adjoint", "solver.steps=1,2", "trainer.seed=0,1",
                 f"hydra.sweep.dir={root / 'sweep'}"], root)
    anode_train([*TINY, "trainer.lr=1e12", f"hydra.run.dir={root / 'diverged'}"], root)
    anode_train([*TINY, "solver=heun_euler", "grad=aca", f"hydra.run.dir={root / 'adaptive'}"], root)
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
        for seed in ("0", "1"))
    for i, row in enumerate(jobs):
        metrics = metrics_of(root, i)
        assert row["status"] == "completed" and row["dataset"] == "synthetic" and row["model"] == "resnet_tiny"
        assert row["final acc %"] == f"{100 * metrics['test/acc']:.2f}"
        assert row["best acc %"] == f"{100 * metrics['test/best_acc']:.2f}"
        assert row["grad error"] == f"{metrics['grad_error/rel_l2_mean']:.2e}"
        assert row["peak MiB"] == f"{metrics['memory/peak_mib']:.1f}" and row["step ms"] == f"{metrics['time/step_ms']:.1f}"
        assert row["NFE fwd"] == str(metrics["nfe/forward"]) and row["NFE bwd"] == str(metrics["nfe/backward"])
    assert rows["diverged"]["status"].startswith("diverged: step") and "training loss nan" in rows["diverged"]["status"]
    assert rows["diverged"]["final acc %"] == "—" and rows["diverged"]["other"] == "trainer.lr=1e+12"
    assert rows["sweep/0"]["other"] == "trainer.lr=0.1"  # the one setting besides the table's columns that differs
    assert rows["adaptive"]["solver"] == "heun_euler" and rows["adaptive"]["N_t / rtol"] == "rtol 0.01"
    assert rows["crashed"]["status"] == "incomplete" and rows["crashed"]["seed"] == "5"

    runs_table = (root / "report.md").read_text().split("## Runs")[1].split("##")[0]
    assert runs_table.count("\n| ") == 12  # header + 11 runs
    for name in rows:
        assert f"| {name} | synthetic | resnet_tiny |" in runs_table


def test_seeds_are_pooled_into_mean_and_std_per_configuration(sweep):
    root, content = sweep
    configs = {(c["grad"], c["N_t / rtol"], c["other"]): c for c in content["configurations"]}
    assert len(configs) == 6  # 4 of the sweep, the diverged run, the adaptive run with its crashed seed
    pooled = [c for c in configs.values() if c["seeds"] == "0, 1 (n=2)"]
    assert len(pooled) == 4
    adjoint_2 = configs["adjoint", "2", "trainer.lr=0.1"]
    jobs = [i for i in range(8) if content["runs"][3 + i]["grad"] == "adjoint" and content["runs"][3 + i]["N_t / rtol"] == "2"]
    errors = [metrics_of(root, i)["grad_error/rel_l2_mean"] for i in jobs]
    accuracies = [100 * metrics_of(root, i)["test/acc"] for i in jobs]
    assert len(jobs) == 2 and adjoint_2["grad error"] == f"{statistics.fmean(errors):.2e} ± {statistics.stdev(errors):.2e}"
    mean = f"{statistics.fmean(accuracies):.2f}"
    assert adjoint_2["final acc %"] == (mean if accuracies[0] == accuracies[1] else f"{mean} ± {statistics.stdev(accuracies):.2f}")
    assert adjoint_2["diverged"] == "0/2"
    assert configs["direct", "2", "trainer.lr=1e+12"]["diverged"] == "1/1"
    adaptive = configs["aca", "rtol 0.01", "trainer.lr=0.1"]
    assert adaptive["seeds"] == "0, 5 (n=2)" and adaptive["diverged"] == "0/2 (1 incomplete)"
    table = (root / "report.md").read_text().split("## Per configuration")[1].split("## Plots")[0]
    assert table.count("(n=2)") == 5 and table.count("\n| ") == 7


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
    assert all(0 <= y <= 1 for curve in curves.values() for y in curve["y"])
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
    assert len(charts) == sum(len(c) for c in LAYOUT.values())
    report(root)  # a rerun replaces the layout file rather than adding a second
    assert len(list(root.glob("events.out.tfevents.*.anode-report"))) == 1


def test_cli_reports_one_run_directory_and_refuses_an_empty_one(sweep, tmp_path, capsys):
    root, _ = sweep
    single = tmp_path / "single"
    shutil.copytree(root / "adaptive", single)
    main([str(single)])
    assert "1 runs" in capsys.readouterr().out
    assert "| . | synthetic | resnet_tiny | heun_euler | rtol 0.01 | aca |" in (single / "report.md").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no run under"):
        main([str(tmp_path / "empty")])


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
