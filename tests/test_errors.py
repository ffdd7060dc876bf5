"""Bad input ends in one clear error that names what is allowed."""
import pytest
import torch
from problems import ConvBNReLU, random_linear_ode

from anode_bench.ode import MaxStepsError, NonFiniteStateError, ODEBlock, odeint

Y0 = torch.ones(2, 4, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(solver="rk5", steps=2), "solver 'rk5' unknown; choose from euler, midpoint, heun, rk4, heun_euler, bosh3, dopri5"),
        (dict(grad="acaa", steps=2), "grad 'acaa' unknown; choose from direct, adjoint, anode, aca"),
        (dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(steps=2.5), "steps must be an integer >= 1, got 2.5"),
        (dict(), "fixed-step solver 'rk4' needs steps"),
        (dict(solver="dopri5", steps=4), "solver 'dopri5' is adaptive: it takes rtol/atol, not steps=4"),
        (dict(solver="dopri5", rtol=0.0), "rtol and atol must be > 0"),
        (dict(solver="bosh3", atol=-1e-6), "rtol and atol must be > 0"),
        (dict(steps=2, t0=1.0, t1=1.0), "need finite t0 < t1"),
        (dict(grid=[0.0, 0.6, 0.4, 1.0]), "grid must be a strictly increasing sequence"),
        (dict(grid=[0.0, 0.5]), "grid must run from t0=0.0 to t1=1.0"),
        (dict(grid=[0.0, 1.0], steps=3), "give either steps or grid, not both"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    with pytest.raises(ValueError) as error:
        odeint(random_linear_ode(), Y0, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_adaptive_solve_past_max_steps_stops_with_a_clear_error():
    with pytest.raises(MaxStepsError, match="needed more than max_steps=3 attempted steps"):
        odeint(random_linear_ode(), Y0, solver="dopri5", rtol=1e-12, atol=1e-14, max_steps=3)


class Blowup(torch.nn.Module):
    def forward(self, t, y):
        return y**2


@pytest.mark.parametrize("solver, steps", [("euler", 4), ("dopri5", None)])
def test_non_finite_state_is_an_error_not_a_nan(solver, steps):
    with pytest.raises(NonFiniteStateError, match="non-finite"):
        odeint(Blowup(), torch.full((2,), 1e200, dtype=torch.float64), solver=solver, steps=steps)


def test_integer_state_is_refused():
    with pytest.raises(ValueError, match="y0 must be a floating-point tensor"):
        odeint(random_linear_ode(), torch.ones(2, 4, dtype=torch.long), steps=1)


def test_ode_block_checks_settings_at_construction():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ODEBlock(ConvBNReLU(), solver="rk4", steps=-1)
    block = ODEBlock(ConvBNReLU(), solver="rk4", steps=2)
    with pytest.raises(ValueError, match="grad 'naive' unknown"):
        block.configure(grad="naive")
    assert block.grad == "direct"  # a refused change leaves the block as it was


# --- anode-train's config: unknown keys and options name what is allowed --------------------------

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402

from anode_bench.config import (  # noqa: E402
    CONFIG_DIR,  # noqa: E402
    ConfigError,
    check_options,
    job_error_control,
    validate,
)


@pytest.mark.parametrize("override, message", [
    ("+solver.stepz=2", "solver.stepz is not a key of solver; did you mean solver.steps? its keys: name, steps, rtol, atol, "
                        "max_steps, t0, t1, eta"),
    ("+trainer.epoch=3", "trainer.epoch is not a key of trainer; did you mean trainer.epochs? its keys: epochs, batch_size,"),
    ("+dataset.trainsize=8", "dataset.trainsize is not a key of dataset; did you mean dataset.train_size? its keys: name,"),
    ("+probe.evry=8", "probe.evry is not a key of probe; did you mean probe.every? its keys: every,"),
    ("+model.arch.widthz=[4]", "model.arch.widthz is not a key of model.arch; did you mean model.arch.widths"),
    ("grad=revolve +grad.checkpoint=3", "grad 'revolve' has no option checkpoint; its options: checkpoints"),
])
def test_an_unknown_key_in_any_group_lists_the_groups_keys(override, message):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=override.split())
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("arguments, message", [
    (["~grad"], "~grad deletes the grad group, which every run needs; choose an option instead: grad=aca|adjoint|"),
    (["experiment=smoke", "~trainer.epochs"], "~trainer.epochs deletes trainer.epochs, which every run needs; set it "
                                              "instead: trainer.epochs=VALUE"),
    (["~probe.every"], "~probe.every deletes probe.every, which every run needs; set it instead: probe.every=VALUE"),
    (["foo=1"], "foo is neither a config group nor a key; the groups: dataset, experiment, grad, model, probe, solver, "
                "trainer"),
    (["trainr.lr=1"], "trainr.lr is neither a config group nor a key; did you mean trainer? the groups:"),
    (["+trainer.epochs=3"], "+trainer.epochs=3: trainer.epochs is there already; set it without the +: trainer.epochs=3"),
    # argparse takes the overrides as one list: after a flag between them, it prints its usage block
    (["experiment=smoke", "-m", "grad=direct,aca"], "-m stands between overrides, where Hydra cannot take it; put the "
                                                    "overrides first and the flags after them: experiment=smoke "
                                                    "grad=direct,aca -m"),
    (["-m", "experiment=smoke", "-c", "job", "trainer.epochs=2", "--info", "grad=aca"],
     "-c stands between overrides, where Hydra cannot take it; put the overrides first and the flags after them: "
     "experiment=smoke trainer.epochs=2 grad=aca -m -c job --info"),
    (["-m", "hydra/launcher='slrum'"], "hydra/launcher=slrum is not a launcher; did you mean hydra/launcher=slurm? choose "
                                     "from basic, joblib, local_parallel, slurm, submitit_local, submitit_slurm"),
    (["grad=revolve", "+grad.checkpoints=3"], "+grad.checkpoints=3: grad=revolve has grad.checkpoints already; set it "
                                              "without the +: grad.checkpoints=3"),
    (["solver=dopri5", "+solver.rtol=0.1"], "+solver.rtol=0.1: solver=dopri5 has solver.rtol already; set it without the "
                                            "+: solver.rtol=0.1"),
    (["solver.name=rk4", "+solver.rtol=0.1"], "solver.rtol=0.1 makes no sense for the fixed-step solver rk4"),  # a typed name counts
    (["grad=ACA"], "grad=ACA is not an option of grad; did you mean grad=aca? choose from aca, adjoint, anode, direct,"),
    (["model=resnet18"], "model=resnet18 is not an option of model; did you mean model=resnet or model=resnet18_aca? choose from"),
    (["-m", "grad=direct,acaa"], "grad=acaa is not an option of grad; did you mean grad=aca?"),
    (["experiment=cpu_budget"], "experiment=cpu_budget is not an option of experiment; did you mean experiment=aca_cifar10_cpu_budget?"),
    (["solver=rk5"], "solver=rk5 is not an option of solver; did you mean solver=rk4?"),
    (["-m", "experiment=null,smoke"], "experiment=null: Hydra cannot take null for a config group on the command line; "
                                      "leave experiment= out to run without one"),
    (["trainer.lrr=3"], "trainer.lrr is not a key of trainer; did you mean trainer.lr? its keys: epochs,"),
    (["dataset.paht=x.npz"], "dataset.paht is not a key of dataset; did you mean dataset.path? its keys: name,"),
    (["experiment=aca_resnet18_narrow_cifar10", "~model.arch.stem_widht"],
     "~model.arch.stem_widht: model=resnet18_aca's config sets no arch.stem_widht (~model.arch.KEY puts back the preset's "
     "value of a key the config sets); did you mean ~model.arch.stem_width? it sets: widths, stem_width"),
    (["~model.arch.widths"], "~model.arch.widths: model=resnet's config sets no arch.widths"),
    (["+note=x", "~nota"], "nota is neither a config group nor a key"),
    (["experiment=smoke", "model.arch.widths=[8,16]"],
     "model.arch.widths=[8,16]: model=resnet_tiny's config sets no arch.widths; add it with a +: +model.arch.widths=[8,16]"),
    (["++model.arch={widths:[4,8,16,32]}", "model.arch.stem_width=4"], "model.arch.stem_width=4: model=resnet's config"),
    (["experiment=smoke", "grad=direct,aca"], "grad=direct,aca is a sweep (one job per value): add -m"),
    (["trainer.seed=choice(1)"], "trainer.seed=choice(1) is a sweep (one job per value): add -m"),
    (["--epochs", "3"], "--epochs: settings are key=value overrides, not --options; did you mean trainer.epochs=3? --help"),
    (["--batch-size=64"], "--batch-size: settings are key=value overrides, not --options; did you mean "
                          "trainer.batch_size=64 or probe.batch_size=64? --help lists them"),
    (["-x"], "-x: settings are key=value overrides, not --options; --help lists them"),
    (["epochs=3"], "epochs is neither a config group nor a key; did you mean trainer.epochs? the groups:"),
])
def test_an_unknown_option_gets_a_did_you_mean(arguments, message):
    with pytest.raises(ConfigError) as error:
        check_options(arguments, CONFIG_DIR)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    if "put the overrides first" in message:  # what it suggests, Hydra's parser takes
        from hydra._internal.utils import get_args_parser

        suggested = str(error.value).split(": ", 1)[1].split()
        get_args_parser().parse_args(suggested)  # argparse exits 2 on a line it cannot take


@pytest.mark.parametrize("arguments, solver", [
    (["solver.rtol=1e-3"], "euler"),  # the default solver; Hydra alone would point at +solver.rtol
    (["+solver.rtol=1e-3"], "euler"),  # composes, and the ODE core would ignore it
    (["-m", "++solver.atol=1e-2,1e-3"], "euler"),
    (["experiment=anode_sqnxt23_rk2_cifar10", "solver.atol=0.1"], "midpoint"),  # an experiment's
    (["-m", "solver=rk4", "grad=aca,adjoint", "solver.max_steps=5"], "rk4"),
])
def test_error_control_on_a_fixed_step_solver_is_refused_before_hydra(arguments, solver):
    with pytest.raises(ConfigError) as error:
        check_options(arguments, CONFIG_DIR)
    key, value = arguments[-1].lstrip("+").split("=", 1)
    assert str(error.value) == (f"{key}={value} makes no sense for the fixed-step solver {solver}: set solver.steps (N_t), "
                                "or pick an adaptive solver (heun_euler, bosh3, dopri5)")


@pytest.mark.parametrize("arguments", [
    ["solver=dopri5", "solver.rtol=1e-3"], ["experiment=aca_cifar10", "solver.rtol=1e-3"],
    ["-m", "solver=euler,dopri5", "solver.rtol=1e-3"],  # swept: left to Hydra and validate, job by job
    ["experiment=aca_cifar10", "solver=euler"],  # the discrete baseline keeps the experiment's rtol: not typed
    ["experiment=aca_cifar10", "solver=euler", "solver.rtol=0.1"],  # the experiment's pinned key, set for the sweep's ODE runs
    ["~solver.rtol"],
])
def test_error_control_on_an_adaptive_solver_passes_the_check(arguments):
    check_options(arguments, CONFIG_DIR)


@pytest.mark.parametrize("arguments, message", [
    (["grad.checkpoints=3"], "grad.checkpoints is not a key of grad=direct; its keys: name, step_sizes"),
    (["grad=aca", "solver.eta=0.5"], "solver.eta is not a key of solver=euler; its keys: name, steps, t0, t1"),
    (["grad=revolve", "grad.checkpoint=3"], "grad.checkpoint is not a key of grad=revolve; did you mean grad.checkpoints? "
                                            "its keys: name, checkpoints"),
    (["experiment=aca_cifar10", "solver.eta=0.1"], "solver.eta is not a key of solver=heun_euler; its keys: name, steps, rtol,"),
])
def test_a_key_the_chosen_option_lacks_is_refused_in_one_line_before_hydra(arguments, message):
    with pytest.raises(ConfigError) as error:
        check_options(arguments, CONFIG_DIR)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("arguments", [
    ["grad=revolve", "grad.checkpoints=3"], ["solver=alf", "solver.eta=0.5"], ["-m", "grad=aca,revolve", "grad.checkpoints=3"],
    ["grad=revolve", "+grad.checkpoint=3"],  # appended: validate names the method's options after composing
    ["grad=revolve", "++grad.checkpoints=3"], ["solver=euler", "+solver.eta=0.5"],
    ["solver=dopri5", "+solver.steps=null"],  # Hydra appends onto a null value
])
def test_keys_the_chosen_option_has_pass_the_check(arguments):
    check_options(arguments, CONFIG_DIR)


@pytest.mark.parametrize("task, solver, refused", [
    (["solver=euler", "++solver.rtol=1e-3"], "euler", True),  # appended to a solver that ignores it
    (["solver=rk4", "+solver.max_steps=5"], "rk4", True),
    (["experiment=aca_cifar10", "solver=euler", "solver.rtol=0.05"], "euler", False),  # the experiment's own key
    (["solver=dopri5", "solver.rtol=1e-3"], "dopri5", False),
])
def test_each_job_refuses_error_control_that_its_fixed_step_solver_would_ignore(task, solver, refused):
    """A sweep over solvers leaves the check to each job, on the job's own overrides."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        if refused:
            key, value = task[-1].lstrip("+").split("=")
            with pytest.raises(ConfigError, match=f"^{re.escape(key)}={value} makes no sense for the fixed-step solver {solver}"):
                job_error_control(task, solver)
        else:
            job_error_control(task, solver)


def test_known_options_sweeps_and_plain_keys_pass_the_option_check():
    check_options(["-m", "--cfg", "job", "grad=direct,aca", "solver=glob(*)", "experiment=smoke", "solver.steps=1,2",
                   "+model.arch.widths=[4,8]", "~model.arch.widths", "~experiment", "+note=baseline", "++tag=x",
                   "hydra/launcher=joblib"], CONFIG_DIR)
    check_options(["experiment=smoke", "grad=direct,aca", "-m", "--info", "config"], CONFIG_DIR)  # flags after them all
    check_options(["-m", "hydra/launcher='local_parallel'", "grad=direct,aca"], CONFIG_DIR)  # quoted, as Hydra takes it
    check_options(["model=resnet", "+model.arch.widths=[4]", "~model.arch.widths"], CONFIG_DIR)  # added, then deleted
    check_options(["++model.arch={widths:[4,8,16,32]}", "~model.arch.widths", "+note=baseline", "~note"], CONFIG_DIR)
    check_options(["++model.arch={widths:[4,8,16,32]}", "model.arch.widths=[2,4,8,16]"], CONFIG_DIR)
    for multirun in (["hydra.mode=MULTIRUN"], ["++hydra.mode=MULTIRUN"], ["hydra.mode='MULTIRUN'"], ["--multi"]):
        check_options([*multirun, "grad=direct,aca"], CONFIG_DIR)  # argparse takes --multi for --multirun
    check_options(["-sc", "install=bash"], CONFIG_DIR)  # the flag's argument, not an override
    check_options(["-cn", "train", "--config-dir", "configs", "-c", "job", "--resolve", "-p", "trainer"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"^grad=direct,aca is a sweep; anode-gradcheck measures one config, and its "
                                          r"lists set what it compares: gradcheck.grads=\[direct,aca\]$"):
        check_options(["grad=direct,aca"], CONFIG_DIR, "gradcheck")
    with pytest.raises(ConfigError, match=r"gradcheck.rtols=\[0.1,0.01\]$"):
        check_options(["solver=dopri5", "solver.rtol=0.1,0.01"], CONFIG_DIR, "gradcheck")
    # anode-gradcheck trains nothing: a trainer key it does not read is refused, not silently ignored
    with pytest.raises(ConfigError, match=r"^trainer.epochs, trainer.lr: anode-gradcheck trains nothing, so these settings "
                                          r"would be ignored; of trainer.\* it reads seed, device, precision, tf32, threads$"):
        check_options(["trainer.epochs=3", "trainer.seed=1", "+trainer.lr=0.1"], CONFIG_DIR, "gradcheck")
    check_options(["trainer.epochs=3", "trainer.lr=0.1"], CONFIG_DIR)  # anode-train reads them
    with pytest.raises(ConfigError, match=r"did you mean trainer.device\?"):  # a misspelt key is a typo first
        check_options(["trainer.devcie=cpu"], CONFIG_DIR, "gradcheck")
    check_options(["trainer.seed=1", "trainer.device=cpu", "trainer.precision=bf16", "trainer.tf32=true",
                   "trainer.threads=1", "trainer=cosine"], CONFIG_DIR, "gradcheck")
    check_options(["-m", "model=resnet,resnet18_aca", "~model.arch.stem_width"], CONFIG_DIR)  # each job's own, in the job


def anode_train_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "anode_bench.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})


@pytest.mark.parametrize("override, first_line", [
    ("grad=ACA", "anode-train: grad=ACA is not an option of grad; did you mean grad=aca?"),
    ("+solver.stepz=2", "anode-train: solver.stepz is not a key of solver; did you mean solver.steps?"),
    ("trainer.lrr=3", "anode-train: trainer.lrr is not a key of trainer; did you mean trainer.lr?"),
    ("solver.rtol=0.1", "anode-train: solver.rtol=0.1 makes no sense for the fixed-step solver euler"),
    ("solver.eta=0.5", "anode-train: solver.eta is not a key of solver=euler; its keys: name, steps, t0, t1"),
    ("solver.rtol=[0.1", "no viable alternative at input '[0.1'"),  # malformed: Hydra's report, the config exit code
    ("trainer.epochs=0", "anode-train: trainer.epochs must be >= 1, got 0"),  # refused by the job, in the dir Hydra made
])
def test_every_config_error_exits_2_and_leaves_no_run_dir(tmp_path, override, first_line):
    run_dir = tmp_path / "run"
    result = anode_train_cli(["experiment=smoke", override, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(first_line), result.stderr
    assert not run_dir.exists() and not (tmp_path / "outputs").exists()


def test_hydras_own_flag_conflict_is_one_line_and_a_traceback_only_when_asked(tmp_path):
    """-m with --cfg: Hydra raises a ValueError before its own error handling; one line, exit 2, unless
    HYDRA_FULL_ERROR=1 asks for the traceback."""
    result = anode_train_cli(["-m", "experiment=smoke", "--cfg", "job"], tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "anode-train: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"], result.stderr
    full = subprocess.run([sys.executable, "-m", "anode_bench.train", "-m", "experiment=smoke", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 2 and full.stderr.startswith("Traceback"), full.stderr


def test_a_solver_sweep_refuses_appended_error_control_in_its_fixed_step_job(tmp_path):
    """Each job refuses its own bad config in one line and fails alone; the sweep runs the rest and exits 1."""
    result = anode_train_cli(["-m", "experiment=smoke", "solver=euler,rk4", "++solver.rtol=1e-3",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 1, result.stderr
    assert "anode-train: solver.rtol=0.001 makes no sense for the fixed-step solver euler" in result.stderr
    assert "anode-train: solver.rtol=0.001 makes no sense for the fixed-step solver rk4" in result.stderr  # job 1 ran
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))


def test_help_introduces_anode_train_and_the_configs_suggest_only_real_options(tmp_path):
    result = anode_train_cli(["--help"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("anode-train: train a neural-ODE classifier") and "powered by Hydra" not in result.stdout
    assert "exit 2" in result.stdout
    options = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    for config in Path(CONFIG_DIR).rglob("*.yaml"):
        suggested = set(re.findall(r"experiment=(\w+)", config.read_text()))
        assert suggested <= options, (config, suggested - options)


def test_a_launcher_whose_plugin_is_missing_names_the_install(monkeypatch):
    """Without the cluster extra, Hydra would report a config it could not load; say which package is missing."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("hydra_plugins.") else real(name, *a))
    with pytest.raises(ConfigError) as error:
        check_options(["-m", "hydra/launcher=slurm", "grad=direct,aca"], CONFIG_DIR)
    assert str(error.value) == ("hydra/launcher=slurm needs the hydra-submitit-launcher plugin, which is not installed: "
                                "pip install -e '.[cluster]'")
    check_options(["-m", "hydra/launcher=basic", "grad=direct,aca"], CONFIG_DIR)  # Hydra's own, always there


def test_a_launcher_name_no_config_holds_is_left_to_an_installed_plugin_that_may_define_it(monkeypatch):
    """hydra/launcher=ray_aws is the ray plugin's: where a launcher plugin beyond joblib and submitit is
    installed, an unknown name is Hydra's to resolve; where none is, it is a typo."""
    from anode_bench import config

    with pytest.raises(ConfigError, match=r"^hydra/launcher=ray_aws is not a launcher; choose from basic, joblib"):
        check_options(["-m", "hydra/launcher=ray_aws", "grad=direct,aca"], CONFIG_DIR)
    monkeypatch.setattr(config, "other_launcher_plugins", lambda: ["hydra_ray_launcher"])
    check_options(["-m", "hydra/launcher=ray_aws", "grad=direct,aca"], CONFIG_DIR)
