"""anode-gradcheck: one small run of the CLI writes the table, the CSV and the three plots with a row per
grad x solver x N_t; the numbers obey the identities of docs/methods.md (float64)."""
import csv
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from anode_bench.build import PRECISIONS
from anode_bench.config import CONFIG_DIR, ConfigError, validate
from anode_bench.gradcheck import combinations, measure, plots
from anode_bench.metrics import gradient_error
from anode_bench.models import build_model

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module-scoped fixtures once

GRADS, STEPS = ["direct", "adjoint", "aca"], [1, 2]
TINY = ["dataset.train_size=64", "dataset.test_size=16", "gradcheck.batch_size=8", "gradcheck.repeats=1",
        f"gradcheck.grads=[{','.join(GRADS)}]", "gradcheck.solvers=[euler,heun_euler]",
        f"gradcheck.steps=[{','.join(map(str, STEPS))}]", "gradcheck.rtols=[1e-2]", "trainer.precision=fp64",
        "trainer.device=cpu"]
PNG = b"\x89PNG\r\n\x1a\n"


def composed(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="gradcheck", overrides=overrides)


def anode_gradcheck(args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "anode_bench.gradcheck", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradcheck") / "run"
    result = anode_gradcheck([*TINY, f"hydra.run.dir={out}"], out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "gradcheck.csv").open() as file:
        rows = list(csv.DictReader(file))
    return out, rows


def test_one_row_per_grad_solver_and_n_t_in_csv_and_markdown(run):
    out, rows = run
    expected = [("euler", str(n), "", g) for n in STEPS for g in GRADS] + [("heun_euler", "", "0.01", g) for g in GRADS]
    assert [(r["solver"], r["steps"], r["rtol"], r["grad"]) for r in rows] == expected
    for column in ("rel_l2_discrete", "cosine_discrete", "rel_l2_fine", "cosine_fine", "floor_rel_l2_discrete",
                   "floor_ratio_discrete", "floor_rel_l2_fine", "floor_ratio_fine", "block_0_discrete",
                   "block_3_fine", "peak_mib", "time_ms", "nfe_forward", "nfe_backward", "nfe_rejected", "accepted_steps"):
        assert all(r[column] != "" for r in rows), column
    assert all(r["status"] == "ok" for r in rows)
    table = (out / "gradcheck.md").read_text()
    assert table.count("\n| euler |") == len(STEPS) * len(GRADS) and table.count("\n| heun_euler | rtol 0.01 |") == len(GRADS)
    assert "resnet_tiny (44,622 parameters, 4 ODE blocks), 8 train images of synthetic, fp64 on cpu" in table
    assert "Regenerate: `anode-gradcheck dataset.train_size=64" in table
    assert "| rel. error (discrete) | floor (discrete) | ÷ floor (discrete) | cosine (discrete) |" in table
    assert (out / ".hydra" / "config.yaml").exists()  # a Hydra run dir, like anode-train's


def test_a_rerun_into_a_directory_with_results_is_refused_and_changes_nothing(run):
    out, _ = run
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}  # the .hydra record and the log included
    result = anode_gradcheck([*TINY, "gradcheck.repeats=2", f"hydra.run.dir={out}"], out.parent)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"anode-gradcheck: {out} already holds a run (.hydra, error.png, gradcheck.csv, gradcheck.md, memory.png, "
        f"time.png); nothing was overwritten: choose another hydra.run.dir"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written


@pytest.mark.parametrize("override, line", [
    ("grad=ACA", "anode-gradcheck: grad=ACA is not an option of grad; did you mean grad=aca? choose from aca,"),
    ("gradcheck.stepz=[1]", "anode-gradcheck: gradcheck.stepz is not a key of gradcheck; did you mean gradcheck.steps?"),
    ("trainer.seed=-1", "anode-gradcheck: trainer.seed must be >= 0 or null (a random seed), got -1"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_directory(tmp_path, override, line):
    """As anode-train: an option or key checked before Hydra composes, a value by the job, which removes the
    directory Hydra made for it."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "anode_bench.gradcheck", override, f"hydra.run.dir={tmp_path / 'out'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[0].startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_numbers_obey_the_identities(run):
    _, rows = run
    by = {(r["solver"], r["steps"] or r["rtol"], r["grad"]): r for r in rows}
    for key, row in by.items():
        error, fine = float(row["rel_l2_discrete"]), float(row["rel_l2_fine"])
        if key[2] == "adjoint":  # the reverse solve of conv-BN-ReLU: visibly wrong (README: 0.87 at euler N_t = 1)
            assert error > 1e-3
        elif key[2] == "aca" or key[0] == "euler":  # the exact gradient of the discrete network, here in float64
            assert error < 1e-10 and float(row["cosine_discrete"]) > 1 - 1e-12
        else:  # direct on an adaptive solver also differentiates the step-size controller
            assert 1e-10 < error < 1e-1
        assert fine > 1e-4  # no discretization here is the continuous ODE
        # float64: the floor of `discrete` is the reference itself, so no ratio; `fine`'s floor is direct
        # on this grid against rk4's: the discretization error, which aca and direct on euler share
        assert float(row["floor_rel_l2_discrete"]) == 0.0 and row["floor_ratio_discrete"] == "nan"
        assert float(row["floor_rel_l2_fine"]) > 1e-4
        if key[2] == "aca" or key[0] == "euler" and key[2] == "direct":
            assert float(row["floor_ratio_fine"]) == pytest.approx(1, abs=1e-9)
    for n in STEPS:  # NFE: euler is one f-evaluation per step and block, recomputed once by aca and the adjoint
        assert [int(by["euler", str(n), g]["nfe_forward"]) for g in GRADS] == [4 * n] * 3
        assert [int(by["euler", str(n), g]["nfe_backward"]) for g in GRADS] == [0, 4 * n, 4 * n]
        assert float(by["euler", str(n), "direct"]["accepted_steps"]) == n
    # direct keeps every step's graph: its memory grows with N_t, and more than aca's
    direct = [float(by["euler", str(n), "direct"]["peak_mib"]) for n in STEPS]
    aca = [float(by["euler", str(n), "aca"]["peak_mib"]) for n in STEPS]
    assert direct[1] > direct[0] and direct[1] - direct[0] > aca[1] - aca[0]


def test_plots_are_pngs_with_one_series_per_grad_and_solver(run, tmp_path):
    out, rows = run
    for name in ("error.png", "memory.png", "time.png"):
        assert (out / name).read_bytes().startswith(PNG) and (out / name).stat().st_size > 10_000
        assert f"]({name})" in (out / "gradcheck.md").read_text()
    numeric = [{k: (float(v) if k not in ("solver", "grad", "status") and v != "" else (v or None)) for k, v in r.items()}
               for r in rows]
    drawn = plots(tmp_path, numeric, ["discrete", "fine"])
    assert list(drawn["error.png"]) == ["relative gradient error vs float64 (discrete)", "relative gradient error vs float64 (fine)"]
    labels = {f"{g}, euler" for g in GRADS} | {f"{g}, heun_euler (adaptive)" for g in GRADS}
    for name, panels in drawn.items():
        for panel in panels.values():
            assert set(panel) == labels, name
            assert panel["aca, euler"]["x"] == [float(n) for n in STEPS]
    assert drawn["memory.png"]["peak memory of one forward+backward"]["direct, euler"]["y"] == [
        float(r["peak_mib"]) for r in rows if r["solver"] == "euler" and r["grad"] == "direct"]


def test_lists_left_null_take_the_composed_groups_and_bad_names_fail():
    cfg = composed(["solver=rk4", "solver.steps=3", "grad=anode", "gradcheck.grads=null", "gradcheck.solvers=null",
                    "gradcheck.steps=null"])
    assert combinations(cfg) == [dict(solver="rk4", steps=3, grad="anode")]
    # an empty list would leave its solvers out without a word: heun_euler with no rtol, euler with no N_t
    for override, message in [("gradcheck.rtols=[]", r"^heun_euler is adaptive: set gradcheck.rtols \(e.g. \[1e-2\]\)$"),
                              ("gradcheck.steps=[]", r"^euler has a fixed step: set gradcheck.steps \(e.g. \[1,2,4,8\]\)$")]:
        with pytest.raises(ConfigError, match=message):
            combinations(composed([override]))
    # the gradcheck section has a schema like every group: names, ranges and unknown keys, one line each
    for override, message in [("gradcheck.solvers=[rk5]", "gradcheck.solvers \\['rk5'\\] unknown; choose from"),
                              ("gradcheck.references=[coarse]", "gradcheck.references \\['coarse'\\] unknown"),
                              ("gradcheck.grads=[acaa]", "gradcheck.grads \\['acaa'\\] unknown; choose from direct, adjoint"),
                              ("gradcheck.split=val", "gradcheck.split 'val' unknown; choose from train, test"),
                              ("+gradcheck.dtype=float64", "gradcheck.dtype is not a key of gradcheck; its keys: grads, solvers")]:
        with pytest.raises(ConfigError, match=message) as error:
            validate(composed([override]))
        assert "\n" not in str(error.value)


def test_the_configured_grad_runs_with_its_options_and_says_so():
    """grad=interpolated grad.nodes=3: its rows must run K = 3 nodes, not the method's default 8, and say so;
    another grad listed beside it runs with its own defaults."""
    cfg = composed(["solver=heun_euler", "solver.rtol=1e-2", "grad=interpolated", "grad.nodes=3", "grad.norm=seminorm",
                    "gradcheck.grads=[interpolated,adjoint]", "gradcheck.solvers=null", "gradcheck.rtols=null"])
    options = {"nodes": 3, "norm": "seminorm"}
    assert combinations(cfg) == [dict(solver="heun_euler", rtol=1e-2, atol=1e-2, grad="interpolated", grad_options=options),
                                 dict(solver="heun_euler", rtol=1e-2, atol=1e-2, grad="adjoint")]
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="euler", steps=1, grad="direct")).double()
    images, labels = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    row = measure(model, images, labels, combinations(cfg)[0], composed(["gradcheck.repeats=1", "trainer.precision=fp64"]),
                  torch.device("cpu"), PRECISIONS["fp64"], {})
    assert row["grad"] == "interpolated (nodes=3, norm=seminorm)"
    assert all(block.method.nodes == 3 for block in model.ode_blocks)


def test_a_cached_reference_is_the_one_the_same_solver_and_grid_would_compute():
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="euler", steps=1, grad="aca")).double()
    images, labels = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    cache = {}
    for solver in ("euler", "rk4", "euler"):  # rk4 at N_t = 1 has euler's grid [0, 1] but another reference
        model.configure_ode(solver=solver)
        for reference in ("discrete", "fine"):
            cached = gradient_error(model, images, labels, reference=reference, cache=cache)
            assert cached == gradient_error(model, images, labels, reference=reference)
    assert len(cache) == 4 + 2  # and one floor per grid: float64 direct on it (each reference's floor)


def test_gradcheck_measures_mali_on_solver_alf_like_any_other_method(tmp_path):
    """alf is a scheme like the tableaus: anode-gradcheck runs it, and mali (exact for the ALF solve
    up to the inverse steps' rounding) reads at direct's float32 error, far below 1e-4 (seen: 1.5e-6)."""
    out = tmp_path / "run"
    args = [*TINY[:4], "gradcheck.grads=[mali,direct]", "gradcheck.solvers=[alf]", "gradcheck.steps=[2]",
            "gradcheck.references=[discrete]", "trainer.device=cpu", f"hydra.run.dir={out}"]
    result = anode_gradcheck(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "gradcheck.csv").open() as file:
        rows = {r["grad"]: r for r in csv.DictReader(file)}
    assert sorted(rows) == ["direct", "mali"] and all(r["solver"] == "alf" and r["status"] == "ok" for r in rows.values())
    assert rows["mali"]["nfe_forward"] == rows["direct"]["nfe_forward"] == str(4 * 3)  # N_t + 1 per block, 4 blocks
    assert rows["mali"]["nfe_backward"] == str(4 * 2 * 2)  # 2 N_t per block
    errors = {grad: float(row["rel_l2_discrete"]) for grad, row in rows.items()}
    assert errors["mali"] < 1e-4 and abs(errors["mali"] - errors["direct"]) < 1e-5, errors
