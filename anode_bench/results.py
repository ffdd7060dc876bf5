"""What a finished (or diverged) run reports: metrics.json, its HPARAMS entry in TensorBoard, and
the one-paragraph summary it ends with. Every key is a name from anode_bench.tags.
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from . import tags
from .metrics import tf32_state
from .run_state import Progress, git_revision


def _mean(values):
    return sum(values) / len(values) if values else None


def run_settings(cfg: DictConfig) -> dict:
    """What a metrics.json reader needs to tell runs apart without the .hydra record: the model,
    gradient method, solver and its N_t (fixed grids) or rtol/atol (adaptive; null otherwise)."""
    solver = cfg.solver
    adaptive = solver.get("steps") is None
    return {"model": cfg.model.name, "grad": cfg.grad.name, "solver": solver.name, "solver.steps": solver.get("steps"),
            "solver.rtol": solver.get("rtol") if adaptive else None, "solver.atol": solver.get("atol") if adaptive else None,
            "dataset": cfg.dataset.name}


def describe(cfg: DictConfig) -> str:
    """e.g. `resnet_tiny, euler N_t=2, grad aca` or `resnet, dopri5 rtol=0.01 atol=0.01, grad adjoint`."""
    settings = run_settings(cfg)
    grid = (f"N_t={settings['solver.steps']}" if settings["solver.steps"] is not None
            else f"rtol={settings['solver.rtol']} atol={settings['solver.atol']}")
    return f"{settings['model']}, {settings['solver']} {grid}, grad {settings['grad']}"


def run_metrics(cfg: DictConfig, progress: Progress, failure: str | None, wall_s: float, device) -> dict:
    """metrics.json: how the run ended, its final and best accuracy (those of the last finished
    epoch), the means of the probe's series, peak memory, step time, NFE, wall time (every
    invocation of the run), what was run, and where."""
    history = progress.history
    finished = bool(history[tags.TEST_ACC])
    return {
        tags.STATUS: "completed" if failure is None else "diverged",
        tags.FAILURE: failure,
        tags.STEPS: progress.step,
        tags.EPOCHS: progress.epoch,  # completed
        tags.TEST_ACC: progress.test_acc if finished else None,
        tags.BEST_ACC: max(history[tags.TEST_ACC], default=None),
        tags.TEST_LOSS: progress.test_loss if finished else None,
        tags.mean_key(tags.GRAD_REL_L2): _mean(history[tags.GRAD_REL_L2]),
        # .get: a checkpoint from before the floor
        tags.mean_key(tags.GRAD_FLOOR): _mean(history.get(tags.GRAD_FLOOR, [])),
        tags.mean_key(tags.GRAD_FLOOR_RATIO): _defined_ratio_mean(history),
        # TF32 as set_tf32 applied it, where it can apply: CUDA float32 convolutions and matmuls
        tags.TF32: all(tf32_state()) and torch.device(device).type == "cuda" and cfg.trainer.precision != "fp64",
        tags.PEAK_MIB: max(history[tags.PEAK_MIB], default=None),
        tags.STEP_MS: _mean(history[tags.STEP_MS]),
        **progress.last_nfe,
        tags.WALL_S: wall_s,
        tags.SEED: progress.seed,
        # torchrun processes: one number, or the counts in order where a resume (resume_override) changed it
        tags.PROCESSES: progress.processes[0] if len(set(progress.processes)) == 1 else progress.processes,
        **run_settings(cfg),
        "device": str(device),
        "git": git_revision(),
    }


def _defined_ratio_mean(history: dict) -> float | None:
    """The mean of the probes' error / floor ratios where the ratio is defined: a float64 run's floor is 0
    and its ratio nan. A probe whose gradient was nan (a diverging model) keeps the mean nan, as the
    error's own mean is."""
    ratios, floors = history.get(tags.GRAD_FLOOR_RATIO, []), history.get(tags.GRAD_FLOOR, [])
    return _mean([ratio for ratio, floor in zip(ratios, floors) if floor != 0])


def metrics_json(metrics: dict) -> str:
    """metrics.json's text: strict JSON, so a value that is not finite (the mean of a nan probe) is null."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return json.dumps(clean, indent=2, allow_nan=False)


def hparam_values(cfg: DictConfig, metrics: dict, processes: int) -> dict:
    """The HPARAMS tab's columns: TensorBoard takes numbers, strings and bools, so a setting that
    does not apply (steps of an adaptive solver, rtol/atol of a fixed grid, a seed from before it was recorded) is -1."""
    trainer, settings = cfg.trainer, run_settings(cfg)
    unset = lambda value: -1 if value is None else value  # noqa: E731
    return {
        "dataset": settings["dataset"], "model": settings["model"], "solver": settings["solver"],
        "steps": unset(settings["solver.steps"]), "rtol": unset(settings["solver.rtol"]), "atol": unset(settings["solver.atol"]),
        "grad": settings["grad"], "lr": trainer.lr, "batch_size": trainer.batch_size, "seed": unset(metrics[tags.SEED]),
        "precision": trainer.precision, "tf32": metrics[tags.TF32], "processes": processes,
    }


def write_results(writer, cfg: DictConfig, metrics: dict, processes: int) -> None:
    """The run's status text, and its HPARAMS entry in the run's own event file
    (SummaryWriter.add_hparams would open a second one in a subdirectory, its metrics at step 0): the
    hparams summaries and the final/* scalars they point at, on the step the run ended at."""
    step = metrics[tags.STEPS]
    settings = run_settings(cfg)  # what was run, not what it measured
    final = {f"{tags.FINAL_PREFIX}{k}": v for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in settings}
    status = metrics[tags.STATUS] if metrics[tags.FAILURE] is None else f"{metrics[tags.STATUS]}: {metrics[tags.FAILURE]}"
    writer.add_text(tags.STATUS_TEXT, status, step)
    for summary_proto in hparams_summaries(hparam_values(cfg, metrics, processes), final):
        writer.file_writer.add_summary(summary_proto)
    for tag, value in final.items():
        writer.add_scalar(tag, value, step)


def summary(metrics: dict, run_dir: Path) -> str:
    """The paragraph a run ends with: status, accuracy, gradient error, memory, time, where it wrote."""
    fmt = lambda value, spec, unit="": "n/a" if value is None else f"{value:{spec}}{unit}"  # noqa: E731
    failure = f" ({metrics[tags.FAILURE]})" if metrics[tags.FAILURE] else ""
    count = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"  # noqa: E731
    ratio = metrics.get(tags.mean_key(tags.GRAD_FLOOR_RATIO))
    defined = ratio is not None and math.isfinite(ratio)  # None: no probe or float64; nan: a probe on a nan model
    floor = f"{ratio:.3g}x the precision floor" if defined else "no ratio to the precision floor"
    step_time = f"{metrics[tags.STEP_MS]:.1f} ms/step" if metrics[tags.STEP_MS] is not None else "step time n/a"
    return (f"{metrics[tags.STATUS]}{failure} after {count(metrics[tags.EPOCHS], 'epoch')}, {count(metrics[tags.STEPS], 'step')}: "
            f"test acc {fmt(metrics[tags.TEST_ACC], '.2%')} (best {fmt(metrics[tags.BEST_ACC], '.2%')}), "
            f"gradient error {fmt(metrics[tags.mean_key(tags.GRAD_REL_L2)], '.2e')} (relative L2, mean of the probes; {floor}), "
            f"peak memory {fmt(metrics[tags.PEAK_MIB], '.1f', ' MiB')}, {step_time}, "
            f"wall time {fmt(metrics[tags.WALL_S], '.1f', ' s')}. Written to {run_dir}: metrics.json, TensorBoard events "
            f"(tensorboard --logdir {shlex.quote(str(run_dir))}), checkpoints/, train.log")
