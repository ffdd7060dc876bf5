"""Start-up validation of an anode-train config, before any data is touched.

Each plain group has a dataclass schema: OmegaConf merges the group into it, which rejects
unknown keys and wrong types, and `OmegaConf.to_object` runs the range checks in
`__post_init__`. The `solver` and `grad` groups are checked by the ODE core itself (building an
ODEBlock validates names, N_t, tolerances and their combinations), so a new solver or method
needs no second list here. Every failure is one ConfigError line naming the key and what is allowed;
a misspelt key or option also gets difflib's closest matches ("did you mean").

`check_options` runs on the command line before Hydra composes anything: an option that no
`configs/<group>/` file holds (`grad=ACA`, `model=resnet18`) is refused in one line there, instead
of Hydra's multi-line "Could not find" report.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .data import NUM_CLASSES

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")  # the repository's configs/ (editable install)


class ConfigError(ValueError):
    """A config value that anode-train refuses; the message is one line."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def did_you_mean(value: str, allowed, prefix: str = "") -> str:
    """' did you mean X?' for the closest of `allowed` to `value` (case-insensitive), else ''."""
    by_lower = {str(a).lower(): str(a) for a in allowed}
    close = difflib.get_close_matches(str(value).lower(), by_lower, n=2, cutoff=0.6)
    return f" did you mean {' or '.join(prefix + by_lower[c] for c in close)}?" if close else ""


def unknown_keys(where: str, keys, allowed) -> None:
    """ConfigError for the first of `keys` not in `allowed`, listing what is."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            raise ConfigError(f"{where}.{key} is not a key of {where};{did_you_mean(key, allowed, where + '.')} "
                              f"its keys: {', '.join(allowed)}")


@dataclass
class DatasetConfig:
    name: str = "cifar10"
    num_classes: int = 10
    root: str = "data"
    download: bool = True
    path: Optional[str] = None
    train_size: Optional[int] = None
    test_size: Optional[int] = None

    def __post_init__(self):
        _require(self.name in (*NUM_CLASSES, "synthetic"), f"dataset.name {self.name!r} unknown; choose from cifar10, cifar100, synthetic")
        _require(self.num_classes >= 2, f"dataset.num_classes must be >= 2, got {self.num_classes}")
        if self.name in NUM_CLASSES:
            _require(self.num_classes == NUM_CLASSES[self.name],
                     f"dataset.num_classes={self.num_classes} does not fit {self.name}, which has {NUM_CLASSES[self.name]} classes")
        _require(self.path is None or self.name != "synthetic",
                 f"dataset.path={self.path} does not apply to dataset=synthetic; use dataset=cifar10 (or cifar100) with it")
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"dataset.{key} must be >= 1 or null, got {value}")


@dataclass
class ModelConfig:
    name: str = "resnet"
    arch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from .models import FAMILIES, PRESETS

        _require(self.name in PRESETS or self.name in FAMILIES,
                 f"model.name {self.name!r} unknown; choose from {', '.join([*FAMILIES, *PRESETS])}")
        model = PRESETS[FAMILIES.get(self.name, self.name)].model  # the settings build_model accepts
        unknown_keys("model.arch", self.arch, [p for p in inspect.signature(model).parameters if p not in ("num_classes", "ode")])


@dataclass
class TrainerConfig:
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    gamma: float = 0.1
    seed: Optional[int] = 0
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = False
    channels_last: bool = False
    compile: bool = False
    threads: Optional[int] = None
    sync_bn: bool = False
    log_every: int = 50
    max_steps_per_epoch: Optional[int] = None
    eval_batch_size: int = 500
    resume: Any = False  # false, true (this run dir's newest checkpoint), auto, or a checkpoint file / run dir
    resume_override: bool = False  # resume though the config differs from the checkpoint's
    keep_checkpoints: int = 2

    def __post_init__(self):
        _require(self.epochs >= 1, f"trainer.epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1 and self.eval_batch_size >= 1,
                 f"trainer.batch_size and eval_batch_size must be >= 1, got {self.batch_size}, {self.eval_batch_size}")
        _require(0 < self.lr < float("inf"), f"trainer.lr must be > 0, got {self.lr}")
        _require(0 <= self.momentum < 1, f"trainer.momentum must lie in [0, 1), got {self.momentum}")
        _require(self.weight_decay >= 0, f"trainer.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.schedule in ("step", "cosine", "constant"),
                 f"trainer.schedule {self.schedule!r} unknown; choose from step, cosine, constant")
        _require(all(m >= 1 for m in self.milestones) and all(a < b for a, b in zip(self.milestones, self.milestones[1:])),
                 f"trainer.milestones must be strictly increasing epochs >= 1, got {list(self.milestones)}")
        _require(0 < self.gamma <= 1, f"trainer.gamma must lie in (0, 1], got {self.gamma}")
        _require(self.seed is None or self.seed >= 0, f"trainer.seed must be >= 0 or null (a random seed), got {self.seed}")
        _require(self.device in ("auto", "cpu", "cuda"), f"trainer.device {self.device!r} unknown; choose from auto, cpu, cuda")
        import torch

        _require(self.device != "cuda" or torch.cuda.is_available(),
                 "trainer.device=cuda but CUDA is not available; use trainer.device=cpu or auto")
        _require(self.precision in ("fp32", "bf16", "fp64"), f"trainer.precision {self.precision!r} unknown; choose from fp32, bf16, fp64")
        _require(not self.channels_last or (self.device != "cpu" and torch.cuda.is_available()),
                 "trainer.channels_last=true is a CUDA option (on the CPU torch 2.14.1's channels-last backward of a "
                 "stride-2 1x1 convolution crashes); set trainer.channels_last=false")
        _require(self.threads is None or self.threads >= 1, f"trainer.threads must be >= 1 or null, got {self.threads}")
        _require(self.log_every >= 1, f"trainer.log_every must be >= 1, got {self.log_every}")
        _require(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
                 f"trainer.max_steps_per_epoch must be >= 1 or null, got {self.max_steps_per_epoch}")
        _require(isinstance(self.resume, (bool, str)), f"trainer.resume must be true, false, auto or a path, got {self.resume!r}")
        _require(not isinstance(self.resume, str) or self.resume == "auto" or Path(self.resume).exists(),
                 f"trainer.resume={self.resume}: no such file or directory; trainer.resume takes true (this run dir's "
                 f"newest checkpoint), auto (that, or a fresh start), false, or a run dir or checkpoint file")
        _require(self.keep_checkpoints >= 2,
                 f"trainer.keep_checkpoints must be >= 2 (one may be cut by a kill), got {self.keep_checkpoints}")


@dataclass
class ProbeConfig:
    every: int = 100
    reference: str = "discrete"
    fine_factor: int = 8
    batch_size: int = 32

    def __post_init__(self):
        _require(self.every >= 0, f"probe.every must be >= 0 (0: never), got {self.every}")
        _require(self.reference in ("discrete", "fine"), f"probe.reference {self.reference!r} unknown; choose from discrete, fine")
        _require(self.fine_factor >= 2, f"probe.fine_factor must be >= 2, got {self.fine_factor}")
        _require(self.batch_size >= 2, f"probe.batch_size must be >= 2 (BatchNorm in train mode), got {self.batch_size}")


@dataclass
class GradcheckConfig:
    """anode-gradcheck's own section: what to measure. A list left null takes the composed group's one value."""

    grads: Optional[list[str]] = None
    solvers: Optional[list[str]] = None
    steps: Optional[list[int]] = None
    rtols: Optional[list[float]] = None
    references: list[str] = field(default_factory=lambda: ["discrete", "fine"])
    batch_size: int = 32
    split: str = "train"
    repeats: int = 3

    def __post_init__(self):
        from .ode import GRAD_METHODS, SCHEMES

        unknown = [g for g in self.grads or [] if g not in GRAD_METHODS]
        _require(not unknown, f"gradcheck.grads {unknown} unknown; choose from {', '.join(GRAD_METHODS)}")
        unknown = [s for s in self.solvers or [] if s not in SCHEMES]
        _require(not unknown, f"gradcheck.solvers {unknown} unknown; choose from {', '.join(SCHEMES)}")
        _require(all(n >= 1 for n in self.steps or []), f"gradcheck.steps must be N_t values >= 1, got {self.steps}")
        _require(all(r > 0 for r in self.rtols or []), f"gradcheck.rtols must be > 0, got {self.rtols}")
        bad = [r for r in self.references if r not in ("discrete", "fine")]
        _require(not bad, f"gradcheck.references {bad} unknown; choose from discrete, fine")
        _require(self.batch_size >= 2, f"gradcheck.batch_size must be >= 2 (BatchNorm in train mode), got {self.batch_size}")
        _require(self.split in ("train", "test"), f"gradcheck.split {self.split!r} unknown; choose from train, test")
        _require(self.repeats >= 1, f"gradcheck.repeats must be >= 1, got {self.repeats}")


# One schema per config section; `gradcheck` exists in anode-gradcheck's config only.
SCHEMAS = {"dataset": DatasetConfig, "model": ModelConfig, "trainer": TrainerConfig, "probe": ProbeConfig,
           "gradcheck": GradcheckConfig}
# the solver group's keys: ODEBlock's solve settings (grad and grad_options come from the grad group)
SOLVER_KEYS = ("name", "steps", "rtol", "atol", "max_steps", "t0", "t1", "eta")
ADAPTIVE_ONLY_KEYS = ("rtol", "atol", "max_steps")  # error control: only the adaptive solvers' yamls hold them


def fixed_step_refusal(key: str, value, solver: str) -> ConfigError:
    from .ode import SCHEMES

    adaptive = ", ".join(name for name, scheme in SCHEMES.items() if scheme.adaptive)
    return ConfigError(f"solver.{key}={value} makes no sense for the fixed-step solver {solver}: set solver.steps (N_t), "
                       f"or pick an adaptive solver ({adaptive})")


def check_typed_error_control(overrides: list[str], solver: str, held: DictConfig) -> None:
    """ConfigError for error control (`solver.rtol`, `atol`, `max_steps`; plain, `+` or `++`) among
    `overrides` (as the user typed them) on the fixed-step `solver`, unless `held` (the composed
    solver group without these overrides) already holds the key. The ODE core ignores error control
    on a fixed grid, so an appended value would be a silent no-op; a value an experiment pins for
    its adaptive runs (aca_cifar10's rtol) may stay, and be changed, when its discrete baseline
    switches to `solver=euler` in the same sweep."""
    from .ode import SCHEMES

    scheme = SCHEMES.get(solver)
    if scheme is None or scheme.adaptive:
        return
    for override in overrides:
        name = error_control_key(override)
        if name is not None and name not in held:
            raise fixed_step_refusal(name, override.partition("=")[2], solver)


def error_control_key(override: str) -> str | None:
    """rtol, atol or max_steps for an override of `solver.<that key>` (plain, `+` or `++`), else None."""
    group, _, name = override.lstrip("+").partition("=")[0].partition(".")
    return name if group == "solver" and name in ADAPTIVE_ONLY_KEYS else None


def job_error_control(task_overrides: list[str], solver: str) -> None:
    """`check_typed_error_control` for one job of anode-train, on its own overrides (a sweep's values
    included), from inside the running Hydra app: the solver group is composed again without the
    error-control overrides to learn which keys it held."""
    from hydra import compose
    from hydra.errors import HydraException

    typed = [o for o in task_overrides if error_control_key(o) is not None]
    if not typed:
        return
    try:
        held = compose(config_name="train", overrides=[o for o in task_overrides if o not in typed]).solver
    except (HydraException, OmegaConfBaseException, ValueError, AssertionError):  # a launcher without Hydra's state
        return  # the command-line check has seen every line whose solver is not swept
    check_typed_error_control(typed, solver, held)


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad group."""
    for group, schema in SCHEMAS.items():
        if group not in cfg:
            continue
        try:
            OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg[group]))
        except ConfigError:
            raise
        except ConfigKeyError:  # a key the schema lacks (e.g. +trainer.epoch=3)
            unknown_keys(group, cfg[group], [f.name for f in dataclasses.fields(schema)])
            raise
        except OmegaConfBaseException as error:
            key = getattr(error, "full_key", None) or ""
            raise ConfigError(f"{group}{'.' + key if key and not key.startswith(group) else ''}: {_one_line(error)}") from None
    import torch

    from .build import ode_settings
    from .ode import SCHEMES, ODEBlock, get_scheme

    unknown_keys("solver", cfg.solver, SOLVER_KEYS)
    try:
        settings = ode_settings(cfg)
        solver = get_scheme(settings["solver"])
        fixed = ", ".join(name for name, scheme in SCHEMES.items() if not scheme.adaptive)
        if solver.adaptive and settings.get("steps") is not None:
            raise ConfigError(f"solver.steps={settings['steps']} makes no sense for the adaptive solver {solver.name}: "
                              f"set solver.rtol/atol, or pick a fixed-step solver ({fixed})")
        if solver.adaptive:  # null or deleted would leave the ODE core's default in force, unrecorded
            for key in (k for k in ADAPTIVE_ONLY_KEYS if cfg.solver.get(k) is None):
                raise ConfigError(f"solver.{key}={'null' if key in cfg.solver else '(deleted)'}: the adaptive solver {solver.name} "
                                  f"needs a value (rtol, atol > 0; max_steps >= 1)")
        ODEBlock(torch.nn.Identity(), **settings)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"solver/grad: {_one_line(error)}") from None
    from .models import build_model

    try:  # on the meta device: no memory, no data; the model's own checks of its architecture run now
        with torch.device("meta"):
            build_model(cfg.model.name, cfg.dataset.num_classes, settings, **cfg.model.get("arch", {}))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.arch: {_one_line(error)}") from None


CONFIG_EXIT = 2  # every config error: a bad option, key or value, Hydra's own composition errors included


def run_command(prog: str, hydra_main, config_name: str) -> None:
    """A console script around a @hydra.main function: options no configs/<group>/ holds are refused in
    one line (with a "did you mean") before Hydra composes anything; then Hydra runs the job(s). Any
    config error exits CONFIG_EXIT, Hydra's own (which it reports with exit 1) too; after composition
    (ConfigComposed) an exit 1 is a job's crash or a launcher's error and stays 1."""
    import sys

    try:
        check_options(sys.argv[1:], CONFIG_DIR, config_name)
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        raise SystemExit(CONFIG_EXIT) from None
    try:
        hydra_main()
    except SystemExit as exit:
        raise SystemExit(CONFIG_EXIT if exit.code == 1 and not ConfigComposed.composed else exit.code) from None
    except Exception as error:  # HYDRA_FULL_ERROR=1: Hydra re-raises instead of exiting 1; and its flag checks
        if ConfigComposed.composed:
            raise
        import os
        import traceback

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        else:  # e.g. -m with --cfg: Hydra raises "Only one of --run, --multirun, --cfg, ..." before its own handler
            print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        raise SystemExit(CONFIG_EXIT) from None


class ConfigComposed(Callback):
    """Hydra callback (configs/train.yaml) that marks the config composed. Hydra reports any error
    with exit 1: before this mark it was a config error (anode-train exits 2 for it), after it a
    job's crash or a launcher's error (the jobs may run in other processes), which keeps 1. The mark
    lives here, in a module imported once, not in anode_bench.train (also run as __main__)."""

    composed = False

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        ConfigComposed.composed = True

    on_multirun_start = on_run_start


def config_options(config_dir: str | Path) -> dict[str, list[str]]:
    """Every config group under config_dir (hydra's own excepted) with its options, the yaml stems."""
    root = Path(config_dir)
    return {str(d.relative_to(root)): sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(root.rglob("*")) if d.is_dir() and not d.relative_to(root).parts[0] == "hydra"
            and any(d.glob("*.yaml"))}


def group_keys() -> dict[str, list[str]]:
    """The keys of every group whose keys are fixed (grad's depend on the method)."""
    return {"solver": list(SOLVER_KEYS), **{group: [f.name for f in dataclasses.fields(schema)] for group, schema in SCHEMAS.items()}}


def owners_of(name: str, config_name: str = "train") -> list[str]:
    """'group.name' for each group of the tool's config (anode-train has no gradcheck group) that has the key."""
    return [f"{group}.{name}" for group, keys in group_keys().items()
            if name in keys and not (group == "gradcheck" and config_name == "train")]


def did_you_mean_key(name: str, tops, config_name: str = "train") -> str:
    """' did you mean trainer.epochs?' for a group's key typed without its group (epochs=3), else the closest
    group or top-level name to the first part (trainr.lr=1: ' did you mean trainer?')."""
    owners = owners_of(name, config_name)
    return f" did you mean {' or '.join(owners)}?" if owners else did_you_mean(name.split(".")[0], tops)


def parsed_overrides(arguments: list[str]):
    """(argument, Hydra's Override) for each `key=value` or `~key` argument Hydra's grammar accepts; flags
    and what the grammar rejects are skipped (Hydra reports those itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for i, argument in enumerate(arguments):
        if argument.startswith("-") or "=" not in argument and not argument.startswith("~"):
            continue
        if i and is_hydra_flag(arguments[i - 1], "--shell-completion"):  # -sc install=bash: the flag's own argument
            continue
        try:
            [override] = parser.parse_overrides([argument])
        except HydraException:
            continue
        yield argument, override


def set_on_line(arguments: list[str]) -> set[str]:
    """Every key (or group) a `key=value`, `+key=value` or `++key=value` of the line sets: a later `~key`, or
    `~key.sub` under it, deletes what the line itself put there, which Hydra accepts."""
    return {override.key_or_group for _, override in parsed_overrides(arguments) if not override.is_delete()}


def deletes_own(override, keys: set[str]) -> bool:
    key = override.key_or_group
    return override.is_delete() and any(key == k or key.startswith(k + ".") for k in keys)


NEEDED_GROUPS = ("dataset", "model", "solver", "grad", "trainer", "probe")


def check_deletions(arguments: list[str], config_dir: str | Path) -> None:
    """ConfigError for `~group` or `~group.key` (any value) of a group every run needs: a deleted
    group fails deep inside the run, and a deleted key leaves a default in force that the run's
    record does not show. `~model.arch.KEY` (back to the preset's value), `~solver.rtol` (atol,
    max_steps: an adaptive solver without them is refused by `validate`) and `~experiment` stay."""
    groups = config_options(config_dir)
    for argument in arguments:
        if not argument.startswith("~"):
            continue
        key = argument[1:].partition("=")[0]
        group = key.split(".")[0]
        if group not in NEEDED_GROUPS or key.startswith("model.arch.") or error_control_key(key + "=") is not None:
            continue  # an architecture override or error control (a discrete baseline may drop a pinned rtol)
        if key == group:
            raise ConfigError(f"{argument} deletes the {group} group, which every run needs; choose an option instead: "
                              f"{group}={'|'.join(groups.get(group, []))}")
        raise ConfigError(f"{argument} deletes {key}, which every run needs; set it instead: {key}=VALUE")


# hydra/launcher options -> the Hydra plugin package each needs (the `cluster` extra installs both)
LAUNCHER_PLUGINS = {"slurm": "hydra_plugins.hydra_submitit_launcher", "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "local_parallel": "hydra_plugins.hydra_joblib_launcher", "joblib": "hydra_plugins.hydra_joblib_launcher"}


# Hydra's own command-line flags (hydra/_internal/utils.py get_args_parser), long -> short, which take no key=value form
HYDRA_FLAGS = {"--help": "-h", "--hydra-help": "-hh", "--version": None, "--cfg": "-c", "--resolve": None,
               "--package": "-p", "--run": "-r", "--multirun": "-m", "--shell-completion": "-sc", "--config-path": "-cp",
               "--config-name": "-cn", "--config-dir": "-cd", "--experimental-rerun": None, "--info": "-i"}


def is_hydra_flag(argument: str, flag: str | None = None) -> bool:
    """Whether `argument` (up to any '=') is one of Hydra's flags, or the long `flag` when given, in its long or
    short form or (as argparse takes it) as the unambiguous start of the long one: --multi for --multirun."""
    name = argument.partition("=")[0]
    longs = list(HYDRA_FLAGS) if flag is None else [flag]
    return any(name in (long, HYDRA_FLAGS[long]) or (len(name) > 2 and name.startswith("--") and long.startswith(name))
               for long in longs)


def check_flags(arguments: list[str], config_name: str = "train") -> None:
    """ConfigError for a --flag Hydra does not know (`--epochs 3`): argparse's answer is an eight-line usage
    block with no hint; say that settings are key=value overrides and name the key that was meant."""
    for i, argument in enumerate(arguments):
        flag, equals, value = argument.partition("=")
        if not argument.startswith("-") or is_hydra_flag(argument):
            continue
        following = arguments[i + 1] if i + 1 < len(arguments) else ""
        if not equals and following and not following.startswith("-") and "=" not in following:
            value = following
        name = flag.lstrip("-").replace("-", "_")
        owners = owners_of(name, config_name)
        meant = " or ".join(f"{owner}={value or 'VALUE'}" for owner in owners)
        hint = f" did you mean {meant}?" if owners else ""
        raise ConfigError(f"{flag}: settings are key=value overrides, not --options;{hint} --help lists them")


# Hydra's flags that take a value (--info's is optional); the others stand alone
VALUE_FLAGS = ("--cfg", "--package", "--config-path", "--config-name", "--config-dir", "--experimental-rerun", "--info")


def flag_span(arguments: list[str], i: int) -> int:
    """How many arguments the Hydra flag at `i` takes: itself, and its value where it has one."""
    argument, following = arguments[i], arguments[i + 1] if i + 1 < len(arguments) else None
    takes_value = ("=" not in argument and any(is_hydra_flag(argument, flag) for flag in VALUE_FLAGS)
                   and following is not None and not following.startswith("-") and "=" not in following)
    return 1 + takes_value


def check_flag_order(arguments: list[str]) -> None:
    """ConfigError for a Hydra flag between overrides (`experiment=smoke -m grad=direct,aca`): argparse
    takes the overrides as one positional list, so it rejects those after the flag with its usage block."""
    flags, overrides, after_override, misplaced, i = [], [], None, None, 0
    while i < len(arguments):
        if arguments[i].startswith("-") and is_hydra_flag(arguments[i]):
            span = flag_span(arguments, i)
            if overrides and after_override is None:
                after_override = arguments[i]
            flags += arguments[i:i + span]
            i += span
        else:
            misplaced = misplaced or after_override  # an override after a flag that followed one
            overrides.append(arguments[i])
            i += 1
    if misplaced:
        raise ConfigError(f"{misplaced} stands between overrides, where Hydra cannot take it; put the overrides "
                          f"first and the flags after them: {' '.join([*overrides, *flags])}")


def check_sweeps(arguments: list[str], config_name: str = "train") -> None:
    """ConfigError for `key=a,b` (or choice/range/glob) on a line without -m: Hydra's report is six lines
    ("Ambiguous value for argument"). anode-gradcheck has no sweep: its gradcheck.* lists are its grid."""
    parsed = list(parsed_overrides(arguments))
    if any(is_hydra_flag(a, "--multirun") for a in arguments) or any(
            o.key_or_group == "hydra.mode" and str(o.value()).strip("'\"").upper() == "MULTIRUN" for _, o in parsed):
        return
    lists = {"grad": "gradcheck.grads", "solver": "gradcheck.solvers", "solver.steps": "gradcheck.steps",
             "solver.rtol": "gradcheck.rtols"}
    for argument, override in parsed:
        if not override.is_sweep_override():
            continue
        key = override.key_or_group
        if config_name == "train":
            raise ConfigError(f"{argument} is a sweep (one job per value): add -m")
        values = ",".join(override.sweep_string_iterator()) if override.value_type.name == "SIMPLE_CHOICE_SWEEP" else "..."
        what = (f"{lists[key]}=[{values}]" if key in lists
                else "gradcheck.grads, gradcheck.solvers, gradcheck.steps and gradcheck.rtols")
        raise ConfigError(f"{argument} is a sweep; anode-gradcheck measures one config, and its lists set what it "
                          f"compares: {what}")


# of trainer.*, what anode-gradcheck reads; the rest is composed only so that experiment= configs apply
GRADCHECK_TRAINER_KEYS = ("seed", "device", "precision", "tf32", "threads")


def check_gradcheck_trainer_keys(arguments: list[str]) -> None:
    """ConfigError for a `trainer.K=` on anode-gradcheck's line that it does not read (`trainer.epochs=3`):
    it trains nothing, so the value would be silently ignored."""
    known = {f.name for f in dataclasses.fields(TrainerConfig)}  # a misspelt key gets its did-you-mean elsewhere
    unread = [o.key_or_group for _, o in parsed_overrides(arguments) if o.key_or_group.startswith("trainer.")
              and o.key_or_group.split(".")[1] in known - set(GRADCHECK_TRAINER_KEYS)]
    if unread:
        ignored = "this setting would be" if len(unread) == 1 else "these settings would be"
        raise ConfigError(f"{', '.join(unread)}: anode-gradcheck trains nothing, so {ignored} ignored; of trainer.* it "
                          f"reads {', '.join(GRADCHECK_TRAINER_KEYS)}")


def other_launcher_plugins() -> list[str]:
    """Installed Hydra launcher plugins besides those LAUNCHER_PLUGINS knows (ray, rq, ...): their launcher
    names are theirs to define, so an unknown name is left to Hydra where one is installed."""
    import importlib.util
    import pkgutil

    if importlib.util.find_spec("hydra_plugins") is None:
        return []
    import hydra_plugins

    known = {plugin.split(".")[1] for plugin in LAUNCHER_PLUGINS.values()}
    return [m.name for m in pkgutil.iter_modules(hydra_plugins.__path__) if m.name.endswith("_launcher") and m.name not in known]


def check_launcher(arguments: list[str]) -> None:
    """ConfigError for a hydra/launcher= that no config names (Hydra: a dozen lines listing its own
    options), or whose plugin is not installed (Hydra's report names a config it could not load, not
    the package that provides it)."""
    import importlib.util

    launchers = sorted({"basic", *LAUNCHER_PLUGINS, *(f.stem for f in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml"))})
    for argument in arguments:
        key, _, value = argument.lstrip("+").partition("=")
        value = value.strip("'\"")
        if key == "hydra/launcher" and value not in launchers and not other_launcher_plugins():
            raise ConfigError(f"hydra/launcher={value} is not a launcher;{did_you_mean(value, launchers, 'hydra/launcher=')} "
                              f"choose from {', '.join(launchers)}")
        plugin = LAUNCHER_PLUGINS.get(value) if key == "hydra/launcher" else None
        if plugin and importlib.util.find_spec(plugin) is None:
            raise ConfigError(f"hydra/launcher={value} needs the {plugin.split('.')[1].replace('_', '-')} plugin, which is "
                              f"not installed: pip install -e '.[cluster]'")


def check_options(arguments: list[str], config_dir: str | Path, config_name: str = "train") -> None:
    """ConfigError for the first `group=option` on the command line (sweeps `group=a,b` included)
    whose option config_dir/<group>/ lacks, or the first `group.key=value` whose group has no such
    key, or a deletion check_deletions refuses. Flags and whatever Hydra's grammar rejects are left
    to Hydra."""
    check_flags(arguments, config_name)
    check_flag_order(arguments)
    check_deletions(arguments, config_dir)
    check_launcher(arguments)
    check_sweeps(arguments, config_name)
    if config_name == "gradcheck":
        check_gradcheck_trainer_keys(arguments)
    groups = config_options(config_dir)
    tops = {*groups, *group_keys(), *{key.split(".")[0] for key in groups}} - ({"gradcheck"} if config_name == "train" else set())
    own = set_on_line(arguments)
    for argument, override in parsed_overrides(arguments):
        group = override.key_or_group
        top = group.split("/")[0].split(".")[0]
        if deletes_own(override, own):
            continue
        plain = not (override.is_add() or override.is_force_add())  # +note=x adds a key of the user's own
        if plain and top not in tops and top != "hydra":  # foo=1: Hydra would say "Key 'foo' is not in struct"
            raise ConfigError(f"{group} is neither a config group nor a key;{did_you_mean_key(group, tops, config_name)} "
                              f"the groups: {', '.join(sorted(tops))}")
        known = group_keys().get(group.split(".")[0])
        if known is not None and group.count(".") == 1:  # trainer.lrr=3: Hydra would say "Could not override"
            unknown_keys(group.split(".")[0], [group.split(".")[1]], known)
            if override.is_add() and group.split(".")[0] != "solver":  # solver's keys depend on the solver
                raise ConfigError(f"{argument}: {group} is there already; set it without the +: {argument[1:]}")
        if group not in groups or override.is_delete() or override.value_type.name == "GLOB_CHOICE_SWEEP":
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for value in values:
            if group == "experiment" and value == "null":  # Hydra 1.3 fails on a null group override with a traceback
                raise ConfigError("experiment=null: Hydra cannot take null for a config group on the command line; "
                                  "leave experiment= out to run without one")
            if value not in groups[group]:
                raise ConfigError(f"{group}={value} is not an option of {group};{did_you_mean(value, groups[group], group + '=')} "
                                  f"choose from {', '.join(groups[group])}")
    check_chosen_keys(arguments, config_dir, config_name)


def check_chosen_keys(arguments: list[str], config_dir: str | Path, config_name: str = "train") -> None:
    """ConfigError for a `solver.` or `grad.` key on the command line that the chosen option does
    not take. Which keys a solver or method has depends on the option the line composes, so the
    line's `experiment=`, `model=`, `solver=` and `grad=` are composed alone (a key whose option is swept, by
    `experiment=` or its own group, is left to Hydra and `validate`, job by job):

    - error control on a fixed-step solver that the composed group does not already hold
      (`check_typed_error_control`; a typed `solver.name` counts). Where the solver or experiment
      is swept, `job_error_control` makes the same check in each job, on the job's own overrides;
    - any other plain `solver.K=` or `grad.K=` that the option's yaml lacks (`grad.checkpoints=3`
      with aca): Hydra's multi-line report would point at `+grad.checkpoints`, which `validate`
      then refuses; say so at once, with the option's keys;
    - `~model.arch.K` or a plain `model.arch.K=V` of a key the chosen model's config does not set (Hydra:
      "Could not delete", or seven lines of "Key 'K' is not in struct").
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    typed, choosers, deleted, plain_arch, line_arch = [], [], [], [], set()
    for argument, override in parsed_overrides(arguments):
        group, _, key = override.key_or_group.partition(".")
        if group in ("solver", "grad") and key and "." not in key and not override.is_delete():
            typed.append((group, key, argument, "++" if override.is_force_add() else "+" if override.is_add() else ""))
        elif override.key_or_group in ("experiment", "solver", "grad", "model"):
            choosers.append(override)
        elif override.key_or_group == "model.arch" and not override.is_delete() and isinstance(override.value(), dict):
            line_arch |= set(override.value())  # ++model.arch={widths: [...]}: keys a later model.arch.K may use
        elif override.key_or_group.startswith("model.arch.") and override.key_or_group.count(".") == 2:
            if override.is_delete():
                deleted.append(argument)
            elif override.is_add() or override.is_force_add():
                line_arch.add(override.key_or_group.removeprefix("model.arch."))
            else:
                plain_arch.append(argument)
    unsure = {o.key_or_group for o in choosers if o.is_sweep_override() or o.is_delete()}  # the option varies by job
    typed = [t for t in typed if not unsure & {"experiment", t[0]}]
    deleted, plain_arch = ([], []) if unsure & {"experiment", "model"} else (deleted, plain_arch)
    if not typed and not deleted and not plain_arch:
        return
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[o.input_line for o in choosers if o.key_or_group not in unsure])
    except (HydraException, OmegaConfBaseException, ValueError):  # Hydra reports a bad line itself
        return
    named = [argument.partition("=")[2] for group, key, argument, _ in typed if (group, key) == ("solver", "name")]
    check_typed_error_control([argument.lstrip("+") for _, _, argument, _ in typed],
                              named[-1] if named else cfg.solver.name, cfg.solver)
    for group, key, argument, prefix in typed:
        keys = list(cfg[group])
        if not prefix and key not in keys:
            raise ConfigError(f"{group}.{key} is not a key of {group}={cfg[group].name};"
                              f"{did_you_mean(key, keys, group + '.')} its keys: {', '.join(keys)}")
        if prefix == "+" and cfg[group].get(key) is not None:  # Hydra: "Could not append to config", three lines
            raise ConfigError(f"{argument}: {group}={cfg[group].name} has {group}.{key} already; set it without the +: "
                              f"{argument[1:]}")
    arch = list(cfg.model.get("arch") or {})
    arch_on_line = [*arch, *sorted(line_arch - set(arch))]
    for argument in deleted:  # ~model.arch.KEY of a key the preset's config does not set: Hydra's two-line report
        key = argument[1:].partition("=")[0].removeprefix("model.arch.")
        if key not in arch_on_line:
            raise ConfigError(f"{argument}: model={cfg.model.name}'s config sets no arch.{key} (~model.arch.KEY puts back "
                              f"the preset's value of a key the config sets);{did_you_mean(key, arch, '~model.arch.')} "
                              f"it sets: {', '.join(arch) or 'none'}")
    for argument in plain_arch:  # model.arch.KEY=V of a key the config does not set: Hydra's "not in struct", 7 lines
        key = argument.partition("=")[0].removeprefix("model.arch.")
        if key not in arch_on_line:
            raise ConfigError(f"{argument}: model={cfg.model.name}'s config sets no arch.{key}; add it with a +: +{argument}")
