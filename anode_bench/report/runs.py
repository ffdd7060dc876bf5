"""Reading runs: every run directory under the roots (metrics.json, or a config and events of an
unfinished run), its flattened config in today's key names, and its TensorBoard scalars."""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from anode_bench import tags

# Settings that change where or how a run is logged or resumed, never its numbers: ignored when grouping
# seeds into configurations and when matching a method with its baseline. dataset.path counts by its file name.
NOT_RESULT = {"trainer.resume", "trainer.resume_override", "trainer.device", "trainer.threads", "trainer.log_every",
              "trainer.keep_checkpoints", "trainer.eval_batch_size", "dataset.root", "dataset.download"}
NOT_RESULT_PREFIXES = ("hydra.",)
ADAPTIVE_ONLY = {"solver.rtol", "solver.atol", "solver.max_steps"}  # no effect on a fixed-step solve
# Schedules whose learning rate at an epoch does not depend on trainer.epochs: a run resumed with more epochs
# under one of them trains as a fresh run of the longer config would (the cosine schedule does not).
EPOCH_FREE_SCHEDULES = ("step", "constant")


@dataclass
class Run:
    """One run directory: its flattened resolved config, metrics.json and scalar curves."""

    path: Path
    name: str
    config: dict
    metrics: dict
    scalars: dict = field(default_factory=dict)  # tag -> [(step, value)]
    earlier: tuple = ()  # the flattened configs of the invocations a resume continued (.hydra.1, .hydra.2, ...)

    def get(self, key, default=None):
        return self.config.get(key, default)

    @property
    def seed(self):
        """trainer.seed, or for trainer.seed=null the seed the run drew (metrics.json's seed; None before it
        was recorded): two runs of one configuration with the same seed are one run counted twice."""
        configured = self.get("trainer.seed")
        return configured if configured is not None else self.metrics.get(tags.SEED)

    @cached_property
    def timed_under(self) -> str:
        """What the run's times (step ms, wall s) were measured under besides its config, which NOT_RESULT leaves out
        because the numbers do not depend on it: the device and each invocation's trainer.threads, e.g.
        'cpu, threads 1 then 2' for a run resumed on two threads."""
        threads = dict.fromkeys(str(c.get("trainer.threads", "default")).replace("None", "default")
                                for c in (*self.earlier, self.config))
        return f"{self.metrics.get('device', '?')}, threads {' then '.join(threads)}"

    @property
    def adaptive(self) -> bool:
        return self.get("solver.steps") is None and self.get("solver.rtol") is not None

    @property
    def discretization(self) -> str:
        """N_t for fixed-step solvers, rtol (and atol where it differs) for adaptive ones."""
        if self.adaptive:
            rtol, atol = self.get("solver.rtol"), self.get("solver.atol")
            return f"rtol {rtol:g}" + (f", atol {atol:g}" if atol is not None and atol != rtol else "")
        steps = self.get("solver.steps")
        return "?" if steps is None else str(steps)

    @property
    def grad(self) -> str:
        grad = self.get("grad.name", "?")
        baseline = grad == "direct" and self.get("solver.name") == "euler" and self.get("solver.steps") == 1
        return "direct (discrete ResNet)" if baseline else grad

    @property
    def epochs_logged(self) -> int | None:
        """The epochs whose test accuracy the events hold: how far a run without metrics.json got."""
        return max((step for step, _ in self.scalars.get("test/acc", [])), default=None)

    @cached_property  # read by status, completed, diverged and mixed for every table cell
    def resumed_with_changes(self) -> str:
        """'key (old -> new), ...' where an earlier invocation of this run (one that a resume under
        trainer.resume_override continued) trained with another setting that can change a result; '' if none.
        Such a run trained under no single configuration, so it pools with none. Compared as a finished run's
        trainer.resume=auto compares: a key the earlier record lacks is no difference (the code gained it since),
        one it holds and the latest lacks is. Raising trainer.epochs is none under a schedule that does not depend
        on it (EPOCH_FREE_SCHEDULES): the epochs before are what a fresh run of the longer config trains."""
        epoch_free = self.get("trainer.schedule", "step") in EPOCH_FREE_SCHEDULES
        shown = lambda value: value if isinstance(value, str) else json.dumps(value, default=str)  # noqa: E731
        changes = {}
        for earlier in self.earlier:
            for key in sorted(earlier):
                old, new = earlier[key], self.config.get(key, "absent")
                if key == "dataset.path" and isinstance(old, str) and isinstance(new, str):
                    old, new = Path(old).name, Path(new).name  # one file read from two places is one dataset
                if key == "trainer.epochs" and epoch_free and number(old) is not None and number(new) is not None and new >= old:
                    continue
                if old != new and not not_result(key) and key not in changes:
                    changes[key] = f"{key} ({shown(old)} -> {shown(new)})"
        processes = self.metrics.get(tags.PROCESSES)
        if isinstance(processes, list):  # a resume under trainer.resume_override changed the torchrun process count
            changes[tags.PROCESSES] = f"processes ({' -> '.join(map(str, processes))})"
        return ", ".join(changes.values())

    @property
    def stale(self) -> bool:
        """metrics.json says completed after fewer epochs than the config asks: the run was resumed to train on
        (trainer.epochs raised) and has not finished; the record is the earlier finish's."""
        epochs, configured = number(self.metrics.get("epochs")), number(self.get("trainer.epochs"))
        return self.metrics.get("status") == "completed" and None not in (epochs, configured) and epochs < configured

    @property
    def status(self) -> str:
        status = self.metrics.get("status", "incomplete")
        failure = self.metrics.get("failure")
        if self.stale:
            text = f"incomplete: resumed after {self.metrics['epochs']} of {self.get('trainer.epochs')} epochs"
        elif status == "incomplete" and self.epochs_logged:  # no metrics.json: stopped, or still running
            text = f"{status}: {self.epochs_logged} of {self.get('trainer.epochs', '?')} epochs"
        else:
            text = f"{status}: {failure}" if failure else status
        changes = self.resumed_with_changes
        return f"{text}; left out: resumed with another config: {changes}" if changes else text

    @property
    def mixed(self) -> bool:
        """Trained under more than one configuration (resumed_with_changes): it counts in none."""
        return bool(self.resumed_with_changes)

    @property
    def completed(self) -> bool:
        """Finished all its epochs under one configuration: the runs whose final accuracy the tables count."""
        return self.metrics.get("status") == "completed" and not self.stale and not self.mixed

    @property
    def diverged(self) -> bool:
        """Diverged under one configuration (a mixed run's divergence is no configuration's result)."""
        return self.metrics.get("status") == "diverged" and not self.mixed

    def result_key(self, free=lambda key: False) -> tuple:
        """The config as a hashable key, less the seed, the settings that cannot change a result (NOT_RESULT, and
        ADAPTIVE_ONLY on a fixed-step solver) and the keys `free` names; dataset.path by its file name, so one
        file read from two places is one dataset."""
        if not self.config:
            return ("path", str(self.path))  # no config: a configuration of its own
        items = []
        for key, value in self.config.items():
            if key == "trainer.seed" or not_result(key) or free(key):
                continue
            if key in ADAPTIVE_ONLY and self.get("solver.steps") is not None:
                continue  # a fixed-step solve ignores error control (a sweep may pass it to its discrete baseline)
            if key == "dataset.path" and isinstance(value, str):
                value = Path(value).name
            items.append((key, json.dumps(value, sort_keys=True, default=str)))
        return tuple(sorted(items))


def number(value) -> float | None:
    """A finite int or float as float; None for None, bools, strings, nan and inf."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def not_result(key: str) -> bool:
    return key in NOT_RESULT or key.startswith(NOT_RESULT_PREFIXES)


def flatten(tree, prefix="") -> dict:
    """{"a": {"b": 1}, "c": [1, 2], "d": {}} -> {"a.b": 1, "c": (1, 2)}: dotted keys, hashable leaves."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, (list, tuple)):
        return {prefix[:-1]: tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in tree)}
    return {prefix[:-1]: tree}


# Config groups renamed since a run may have been written: old prefix -> new prefix.
RENAMED_PREFIXES = {"grad_check.": "probe."}


def upgrade_config(config: dict, device: str | None) -> dict:
    """An older run's flattened config in today's names, so that it pools with today's runs of the
    same settings: renamed groups (RENAMED_PREFIXES) take their new names, and a run from before
    `trainer.tf32` existed that ran on the CPU (`device`: metrics.json's) gets tf32 = False (TF32 is
    a CUDA setting; on CUDA the old default was PyTorch's, so the key stays missing there and the
    run stays a configuration of its own). A `direct` run from before `grad.step_sizes` existed
    differentiated its step sizes, today's default."""
    upgraded = {}
    for key, value in config.items():
        for old, new in RENAMED_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        upgraded[key] = value
    if config and "trainer.tf32" not in upgraded and str(device).startswith("cpu"):
        upgraded["trainer.tf32"] = False
    if upgraded.get("grad.name") == "direct" and "grad.step_sizes" not in upgraded:
        upgraded["grad.step_sizes"] = "differentiated"
    return upgraded


def read_config(run_dir: Path, record: str = ".hydra") -> dict:
    path = run_dir / record / "config.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(path)
    try:
        tree = OmegaConf.to_container(loaded, resolve=True)
    except Exception:  # an interpolation that only resolves inside Hydra (${hydra:...}): keep it as written
        tree = OmegaConf.to_container(loaded, resolve=False)
    return flatten(tree)


def read_scalars(run_dir: Path) -> dict:
    """Every scalar series of the run's TensorBoard events in run_dir (not its subdirectories), by step; a step
    written twice keeps its latest value. TensorBoard's purge on resume covers the global-step axis only, so a run
    killed between logging an epoch's results and checkpointing it logs that epoch again when resumed."""
    if not any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    tensorboard_log = logging.getLogger("tensorboard")
    level = tensorboard_log.level
    tensorboard_log.setLevel(logging.ERROR)  # a resumed run's purge is expected, not "a TensorFlow restart" to warn of
    try:
        accumulator.Reload()
    finally:
        tensorboard_log.setLevel(level)
    return {tag: sorted({e.step: e.value for e in accumulator.Scalars(tag)}.items()) for tag in accumulator.Tags()["scalars"]}


def run_name(run_dir: Path, root: Path) -> str:
    """The path relative to root ('.' for root itself), each Hydra job dir '3_grad=aca,...' cut to its number '3'."""
    relative = run_dir.relative_to(root)
    if relative == Path("."):
        return "."
    parts = [match.group(1) if (match := re.match(r"^(\d+)_", part)) else part for part in relative.parts]
    return "/".join(parts)


def natural(name: str) -> list:
    """'sweep/10' after 'sweep/9'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def common_root(roots: list[Path]) -> Path:
    """The one root, or the deepest directory holding every root (the default output directory and the names' base)."""
    resolved = [Path(r).resolve() for r in roots]
    return Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0]


def find_runs(roots, base: Path | None = None) -> list[Run]:
    """Every run under the roots (a path or a list): dirs holding metrics.json, and incomplete ones (config + events,
    no metrics). A directory reached from two roots is one run; names are relative to base (default: common_root)."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    base = Path(base).resolve() if base is not None else common_root(roots)
    dirs = set()
    for root in roots:
        root = root.resolve()
        dirs |= {p.parent for p in root.rglob("metrics.json")}
        for config in root.rglob(".hydra/config.yaml"):
            run_dir = config.parent.parent
            if run_dir not in dirs and any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
                dirs.add(run_dir)
    runs = []
    for run_dir in dirs:
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"status": "incomplete"}
        name = run_name(run_dir, base) if run_dir.is_relative_to(base) else str(run_dir)
        config = upgrade_config(read_config(run_dir), metrics.get("device"))
        processes = metrics.get(tags.PROCESSES)
        if config and processes not in (None, 1):  # torchrun: each process normalizes its slice, another network
            config[tags.PROCESSES] = processes  # a setting of the run, so that it labels and groups as one
        earlier = tuple(upgrade_config(read_config(run_dir, record.name), metrics.get("device"))
                        for record in sorted(run_dir.glob(".hydra.*"), key=lambda p: natural(p.name))
                        if record.is_dir() and re.fullmatch(r"\.hydra\.\d+", record.name))
        runs.append(Run(run_dir, name, config, metrics, read_scalars(run_dir), earlier))
    # job numbers repeat when several sweeps share one directory: such runs keep their whole names
    cut = [run.name for run in runs]
    for run in runs:
        if cut.count(run.name) > 1:
            run.name = str(run.path.relative_to(base)) if run.path.is_relative_to(base) else str(run.path)
    return sorted(runs, key=lambda run: natural(run.name))
