"""What a run keeps besides its weights: where it stands (Progress), its random number generators,
its checkpoints, the stop-on-signal flag, and the record of how it was invoked (<run dir>/.hydra).

A resumed run restores all of it, so that on the CPU it ends with the same metrics, to the bit,
as a run never stopped.
"""
from __future__ import annotations

import contextlib
import math
import re
import shlex
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import ABSENT, changed_keys, checkpoint_config, load_checkpoint, save_checkpoint
from .config import CONFIG_DIR, ConfigError
from .tags import HISTORY


@dataclass
class Progress:
    """Where a run stands: everything besides model, optimizer and scheduler that a resume needs."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # training steps done in all
    step_in_epoch: int = 0
    epoch_rng: torch.Tensor | None = None  # the loader generator's state when epoch `epoch` began (or begins)
    loss_sum: float = 0.0  # this epoch's sums so far (all ranks')
    correct: int = 0
    seen: int = 0
    test_loss: float = math.nan
    test_acc: float = math.nan
    last_nfe: dict = field(default_factory=dict)
    timed_s: float = 0.0  # this epoch's timed seconds and images before the checkpoint a stop wrote
    timed_images: int = 0
    window_peak: float = 0.0  # peak MiB of the log window a stop cut short, over its steps so far
    last_logged: dict = field(default_factory=dict)  # the latest log point: {"step": N, "scalars": {tag: value}}
    wall_s: float = 0.0  # wall time of the invocations before this one, to their last checkpoint
    history: dict = field(default_factory=lambda: {tag: [] for tag in HISTORY})  # per tag, every value logged
    seed: int | None = None  # the seed the run started from (train.run_seed); None in checkpoints from before it
    processes: list = field(default_factory=list)  # the process counts it trained with (torchrun), in order; [] before it


def rng_states(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if states["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def save_state(run_dir: Path, net, optimizer, scheduler, progress: Progress, device: torch.device, keep: int,
               config_text: str) -> Path:
    """A checkpoint of everything a resume needs, with the composed config it trained with (YAML), so
    a resume can refuse another (checkpoint.save_checkpoint: atomic, the newest `keep` kept)."""
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "progress": asdict(progress), "rng": rng_states(device), "config": config_text}
    return save_checkpoint(run_dir, progress.step, state, keep=keep)


def read_state(source: Path, cfg: DictConfig, device: torch.device, processes: int = 1) -> tuple[dict, Path]:
    """The newest readable checkpoint of `source` (a run dir or a file) and its path, after
    check_resume_config and the device and process-count checks: read before the run builds anything,
    since it holds the seed that the run's synthetic images come from. Another number of processes
    splits each batch another way (each normalizes its own slice, and the gradients are summed in
    another order), so the run would not go on as it began: refused unless trainer.resume_override.

    Loaded to the CPU: torch's RNG states and Generator.set_state take CPU byte tensors only, and
    load_state_dict copies weights and optimizer state to where the parameters are."""
    state, path = load_checkpoint(source, map_location="cpu")
    check_resume_config(cfg, checkpoint_config(state, path), path)
    trained_on = "cpu" if state["rng"]["cuda"] is None else "cuda"
    if trained_on != device.type:
        raise ConfigError(f"trainer.resume: {path} was trained on {trained_on}, this run is on {device.type}; the "
                          f"loader's random draws continue on one kind of device only: resume with "
                          f"trainer.device={trained_on}")
    trained_by = (state["progress"].get("processes") or [None])[-1]
    if trained_by not in (None, processes) and not cfg.trainer.resume_override:
        raise ConfigError(f"trainer.resume: {path} was trained by {trained_by} process{'es' * (trained_by != 1)}, this run "
                          f"has {processes}; each process trains on its own slice of every batch, so the run would not go "
                          f"on as it began: resume with {trained_by} (torchrun --nproc_per_node={trained_by}), or set "
                          f"trainer.resume_override=true to continue with {processes}")
    return state, path


def restore_state(state: dict, net, optimizer, scheduler, device: torch.device) -> Progress:
    """Load a checkpoint's state (read_state) into the objects and the RNGs; returns the progress it holds."""
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"], device)
    return Progress(**state["progress"])


# keys a resume may change: how to resume, where the data lies, where and how fast it runs, how
# often it logs and how many checkpoints it keeps. Any other difference is refused.
RESUME_FREE = ("trainer.resume", "trainer.resume_override", "trainer.device", "trainer.threads", "trainer.log_every",
               "trainer.keep_checkpoints", "dataset.root", "dataset.download")


def resume_differences(trained: dict, cfg: DictConfig, new_keys: bool = True) -> str:
    """'key (old -> new), ...' for every key besides RESUME_FREE where cfg differs from the config a run
    was trained with ('' if none); new_keys=False leaves out keys the run's config lacks (it predates them).
    A run from before a key existed is read as today's options spell it (as_today); where a group's
    option changed, a key only one of the two options has is left out when it holds that option's
    default (comes_with_its_option)."""
    changed = changed_keys(as_today(trained), OmegaConf.to_container(cfg, resolve=True), ignored=RESUME_FREE)
    changed = {key: values for key, values in changed.items() if new_keys or values[0] != ABSENT}
    return ", ".join(f"{key} ({old} -> {new})" for key, (old, new) in changed.items()
                     if not comes_with_its_option(key, old, new, changed))


def as_today(trained: dict) -> dict:
    """A run's config tree as today's options spell it: `direct` differentiated its step sizes before
    grad.step_sizes existed."""
    grad = trained.get("grad")
    if isinstance(grad, dict) and grad.get("name") == "direct" and "step_sizes" not in grad:
        return {**trained, "grad": {**grad, "step_sizes": "differentiated"}}
    return trained


def comes_with_its_option(key: str, old, new, changed: dict) -> bool:
    """Whether a key that only one side has is just its option's default where the option changed
    (grad=aca -> grad=direct brings grad.step_sizes=differentiated): the name's change says it all. A value
    of the old option that was not its default (dopri5's rtol 1e-4 -> euler) is still listed."""
    group, _, name = key.rpartition(".")
    if ABSENT not in (old, new) or f"{group}.name" not in changed:
        return False
    side = 0 if new == ABSENT else 1
    option = Path(CONFIG_DIR) / group.replace(".", "/") / f"{changed[f'{group}.name'][side]}.yaml"
    return option.is_file() and OmegaConf.load(option).get(name, ABSENT) == (old, new)[side]


def check_resume_config(cfg: DictConfig, trained: dict | None, path: Path) -> None:
    """ConfigError naming every key (besides RESUME_FREE) where cfg differs from the config the
    checkpoint at `path` was trained with, unless trainer.resume_override; a checkpoint with no
    known config (neither its own nor a run record) is not checked."""
    if trained is None:
        return
    listed = resume_differences(trained, cfg)
    if listed and not cfg.trainer.resume_override:
        raise ConfigError(f"trainer.resume: the config differs from the one {path} was trained with in {listed}; "
                          f"resume with the run's own overrides (its .hydra/overrides.yaml), or set "
                          f"trainer.resume_override=true to continue with this config")


def check_finished_config(cfg: DictConfig, run_dir: Path) -> None:
    """ConfigError if the finished run in run_dir was trained with another config than cfg (besides
    RESUME_FREE): trainer.resume=auto leaves a finished run as it is, which is right only when it is
    the run asked for (a sweep rerun into one dir with another fixed setting gets the same job names).
    A key the record lacks (the run predates it) is not a difference; trainer.resume_override skips the check."""
    record = run_dir / ".hydra" / "config.yaml"
    if not record.is_file() or cfg.trainer.resume_override:
        return
    trained = OmegaConf.to_container(OmegaConf.load(record), resolve=True)
    listed = resume_differences(trained, cfg, new_keys=False)
    if listed:
        raise ConfigError(f"trainer.resume=auto: {run_dir} already holds a finished run of another config, differing in "
                          f"{listed}; nothing was overwritten: give this run a directory of its own (hydra.run.dir, or "
                          f"hydra.sweep.dir for a sweep)")


def hydra_quoted(value: str) -> str:
    """value as a Hydra override value: bare if Hydra's grammar reads it as one plain string, else
    single-quoted with Hydra's escapes (a path holding `,` or `=`, as sweep job folders do)."""
    if re.fullmatch(r"[\w./@:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(run_dir: Path) -> str:
    """A shell command that continues this run: cd to where it was started, the run's own task
    overrides (as typed; trainer.resume's dropped), trainer.resume=true and the run dir. Outside a
    Hydra job (train() called directly) the overrides come from the run's record, .hydra/overrides.yaml."""
    if hydra.core.hydra_config.HydraConfig.initialized():
        hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
        task, cwd = list(hydra_cfg.overrides.task), hydra_cfg.runtime.cwd
    else:
        record = run_dir / ".hydra" / "overrides.yaml"
        task, cwd = (list(OmegaConf.load(record)) if record.is_file() else []), str(Path.cwd())
    own = [o for o in task if not re.match(r"^[+~]*trainer\.resume(_override)?=", o)]
    words = ["anode-train", *own, "trainer.resume=true", f"hydra.run.dir={hydra_quoted(str(run_dir))}"]
    return f"cd {shlex.quote(cwd)} && " + " ".join(shlex.quote(w) for w in words)


class StopRequest:
    """Within `with StopRequest() as stop:` SIGTERM and SIGINT only set stop.signum; the loop checks it
    after each step, checkpoints and exits 128 + signal. The previous handlers come back on leaving
    the block, whatever ends it."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self.request)
        return self

    def request(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def invocation_record(cfg: DictConfig) -> dict[str, str]:
    """The files Hydra would save into <run dir>/.hydra: config.yaml (the task config as composed: take
    it before anything changes cfg), hydra.yaml and overrides.yaml. Hydra saves them before the task
    starts, so a run dir the task then refuses would lose its record; the configs therefore set
    hydra.output_subdir: null, and save_record writes these once a run is under way."""
    hydra_cfg = hydra.core.hydra_config.HydraConfig.instance().cfg  # the node whose one key is `hydra`
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


def next_free(run_dir: Path, prefix: str) -> Path:
    """run_dir/<prefix>1, or the first of <prefix>2, <prefix>3, ... that does not exist."""
    k = 1
    while (run_dir / f"{prefix}{k}").exists():
        k += 1
    return run_dir / f"{prefix}{k}"


def save_record(run_dir: Path, record: dict[str, str], fresh: bool = False) -> None:
    """Write `record` (invocation_record) into run_dir/.hydra. An earlier invocation's .hydra (the run
    a resume continues) is renamed, not rewritten: .hydra.1, .hydra.2, ... in the order they ran, and
    .hydra is the latest, the one anode-report and the launchers read. `fresh`: this invocation starts
    the run over (trainer.resume=auto found no checkpoint), so nothing of the earlier ones is in it:
    their records move aside as .hydra.discarded.1, ... (kept, in order), and anode-report, which reads
    .hydra.N as the invocations a run's weights went through, does not take them for its history."""
    current = run_dir / ".hydra"
    if fresh:
        earlier = sorted((p for p in run_dir.glob(".hydra.*") if p.name[len(".hydra."):].isdigit()),
                         key=lambda p: int(p.name[len(".hydra."):]))
        for path in [*earlier, current] if current.exists() else earlier:
            path.rename(next_free(run_dir, ".hydra.discarded."))
    if current.exists():
        current.rename(next_free(run_dir, ".hydra."))
    current.mkdir(parents=True)
    for name, text in record.items():
        (current / name).write_text(text, encoding="utf-8")


def remove_if_empty(run_dir: Path) -> None:
    """Drop the run dir Hydra made for a run that was then refused, if nothing is in it (the
    configs delay train.log's creation to its first line, so a refused run leaves none), and the
    date directory of Hydra's default layout above it (outputs/2026-12-07/20-39-16) if that is then
    empty too; a directory the user named is never more than the run dir itself."""
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only an empty directory goes
        if re.fullmatch(r"\d\d-\d\d-\d\d", run_dir.name) and re.fullmatch(r"\d{4}-\d\d-\d\d", run_dir.parent.name):
            run_dir.parent.rmdir()


def git_revision() -> str | None:
    """The checkout's commit (with -dirty if it has uncommitted changes), for metrics.json."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], capture_output=True, text=True,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except OSError:
        return None
