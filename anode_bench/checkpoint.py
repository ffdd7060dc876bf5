"""Training checkpoints: written atomically, the newest `keep` kept, read back newest-first.

A checkpoint is `run_dir/checkpoints/step_<step>.pt`, written to a temporary file in the same
directory and renamed over, so a kill mid-write leaves the previous checkpoints intact; the newest
`keep` up to the step just written are kept. On resume a
checkpoint that cannot be read is reported and the one before it is used.

A checkpoint also holds the composed config of the run that wrote it (`config`, YAML text), so a
resume can refuse a config that differs (`changed_keys`); for a checkpoint written before it held
one, the record of its run dir (`.hydra/config.yaml`) stands in.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint: the message names what was tried."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int = 2) -> Path:
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    # later steps are left alone: an unreadable newest checkpoint that a resume fell back past would
    # otherwise count as kept while the good ones went
    for old in sorted(p for p in directory.glob("step_*.pt") if p.name <= path.name)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(source: Path, map_location) -> tuple[dict, Path]:
    """The newest readable checkpoint in a run dir, or in its checkpoints/ folder named itself (or the file
    itself). Returns (state, path)."""
    source = Path(source)
    if source.is_file():
        candidates = [source]
    else:
        folder = source if source.name == "checkpoints" and not checkpoint_dir(source).is_dir() else checkpoint_dir(source)
        candidates = sorted(folder.glob("step_*.pt"), reverse=True)
        if not candidates:
            raise CheckpointError(f"no checkpoint to resume from in {folder}: give a run dir, its checkpoints/ folder "
                                  f"or one step_*.pt file")
    unreadable = []
    for path in candidates:
        try:
            return torch.load(path, map_location=map_location, weights_only=True), path
        except Exception as error:  # truncated, corrupt or not a checkpoint at all
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            unreadable.append(f"{path.name} ({reason})")
            log.warning(f"checkpoint {path} is unreadable ({reason}); trying the one before it")
    raise CheckpointError(f"no readable checkpoint in {source}: {'; '.join(unreadable)}")


def checkpoint_config(state: dict, path: Path) -> dict | None:
    """The config the checkpoint at `path` was trained with, as a plain dict: its own `config`, or
    for an older checkpoint without one its run dir's .hydra/config.yaml; None if neither exists."""
    text = state.get("config")
    if text is None:
        record = Path(path).parent.parent / ".hydra" / "config.yaml"
        if not record.is_file():
            return None
        text = record.read_text(encoding="utf-8")
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


ABSENT = "<absent>"


def changed_keys(before: dict, after: dict, ignored=()) -> dict[str, tuple]:
    """Dotted keys whose value differs between two config trees (a key missing on one side shows
    as ABSENT), less `ignored`: {key: (before, after)}, sorted by key."""
    a, b = _flat(before), _flat(after)
    return {k: (a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(a.keys() | b.keys())
            if k not in ignored and a.get(k, ABSENT) != b.get(k, ABSENT)}
