"""anode-gradcheck: the ANODE paper's central claim, measured without training. For one model (its
initial weights) and one batch of real or synthetic images, every gradient method x solver x N_t
(or rtol) listed under `gradcheck:` in configs/gradcheck.yaml gets:

- the relative L2 error and cosine of dL/dθ against float64 `direct` backprop on the grid each
  block accepted (`discrete`: is this the gradient of the network that ran?) and on a fine grid
  (`fine`: rk4 at probe.fine_factor x the accepted steps, the gradient of the continuous ODE),
  overall and per ODE block, beside the precision floor: `direct` on the same grid at the same
  dtype (and TF32 setting) against the same reference, and the error in units of it
  (floor_ratio ≈ 1: rounding; ≫ 1: the method's own error) (anode_bench.metrics.gradient_error);
- the peak memory of one forward+backward (CUDA allocator, or the CPU profiler's allocations) and
  its median time over gradcheck.repeats (anode_bench.metrics.peak_memory_mib, timed_ms);
- NFE forward, backward and rejected, summed over ODE blocks, and the accepted steps per block.

    anode-gradcheck                                    # resnet_tiny on synthetic images, about 2 min on 2 CPU cores
    anode-gradcheck dataset=cifar10 dataset.train_size=5000   # real images: the first 5,000 of torchvision's CIFAR-10
    anode-gradcheck trainer.precision=fp64              # exact methods then agree with the reference to ~1e-15

Writes gradcheck.md, gradcheck.csv and error.png, memory.png, time.png into its Hydra run dir
(outputs/gradcheck/<date>/<time>/). The config groups are anode-train's, and data and model are
built as anode-train builds them (same split, normalization, seed and ODE settings).
"""
from __future__ import annotations

import csv
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from .build import PRECISIONS, Precision, load_data, make_loader, make_model, ode_settings, pick_device
from .config import CONFIG_DIR, CONFIG_EXIT, ConfigError, run_command, validate
from .data import DataError, channel_stats
from .metrics import gradient_error, peak_memory_mib, set_tf32, timed_ms
from .ode import GRAD_METHODS, SCHEMES, MaxStepsError, NonFiniteStateError, ODEBlock
from .run_state import invocation_record, remove_if_empty, save_record
from .trainer import nfe_counts

log = logging.getLogger(__name__)



# ------------------------------------------------------------------ config -> data and model objects


def first_batch(cfg: DictConfig, device: torch.device, precision: Precision):
    """The first gradcheck.batch_size images of the split, normalized with the training split's statistics, not augmented."""
    train_split, test_split = load_data(cfg)
    split = {"train": train_split, "test": test_split}[cfg.gradcheck.split]
    if len(split.labels) < cfg.gradcheck.batch_size:
        raise ConfigError(f"gradcheck.batch_size={cfg.gradcheck.batch_size} exceeds the {len(split.labels)} "
                          f"{cfg.gradcheck.split} images")
    return next(iter(make_loader(split, channel_stats(train_split), cfg.gradcheck.batch_size, device, precision, train=False)))


# ------------------------------------------------------------------------------------- measuring


def combinations(cfg: DictConfig) -> list[dict]:
    """[{solver, steps | rtol, grad[, grad_options]}] for every grad x solver x (N_t or rtol) asked for. The
    configured grad (`grad=`) runs with its group's options (grad.norm, grad.nodes, grad.checkpoints); the
    other grads listed run with their defaults. Only options that differ from the method's defaults are kept,
    so a row's label names what is not the default."""
    check = cfg.gradcheck
    defaults = GRAD_METHODS[cfg.grad.name]
    options = {k: v for k, v in ode_settings(cfg)["grad_options"].items() if getattr(defaults, k, None) != v}

    def listed(value, default):
        return list(value) if value is not None else [default]

    grads = listed(check.grads, cfg.grad.name)  # names checked by config.GradcheckConfig
    solvers = listed(check.solvers, cfg.solver.name)
    steps = listed(check.steps, cfg.solver.get("steps"))
    rtols = listed(check.rtols, cfg.solver.get("rtol"))
    out = []
    for solver in solvers:
        if SCHEMES[solver].adaptive:
            if None in rtols or not rtols:  # an empty list would drop the solver without a word
                raise ConfigError(f"{solver} is adaptive: set gradcheck.rtols (e.g. [1e-2])")
            settings = [dict(rtol=float(r), atol=float(r)) for r in rtols]
        else:
            if None in steps or not steps:
                raise ConfigError(f"{solver} has a fixed step: set gradcheck.steps (e.g. [1,2,4,8])")
            settings = [dict(steps=int(n)) for n in steps]
        out += [dict(solver=solver, **setting, grad=grad, **({"grad_options": options} if grad == cfg.grad.name and options else {}))
                for setting in settings for grad in grads]
    runnable = []
    for combination in out:  # the grads a solver cannot run are left out (mali runs alf only, aca no alf)
        try:
            ODEBlock(torch.nn.Identity(), **combination)
        except ValueError as error:
            log.info(f"left out {combination}: {error}")
            continue
        runnable.append(combination)
    if not runnable:
        raise ConfigError(f"no gradcheck.grads {grads} runs on gradcheck.solvers {solvers} (mali needs solver alf, "
                          f"which aca, revolve, symplectic and interpolated do not run)")
    return runnable


def measure(model, images, labels, combination: dict, cfg: DictConfig, device, precision: Precision,
            references: dict) -> dict:
    """Gradient error (each reference), memory, time and NFE of the model with `combination`'s solve
    settings, every forward under the run's precision (bf16: autocast, as anode-train trains).

    `references`: gradient_error's cache, so that the methods sharing a grid share one float64 reference.
    """
    model.configure_ode(**combination)
    options = ", ".join(f"{k}={v}" for k, v in combination.get("grad_options", {}).items())
    row = {"solver": combination["solver"], "steps": combination.get("steps"), "rtol": combination.get("rtol"),
           "grad": combination["grad"] + (f" ({options})" if options else "")}

    def work():
        with precision.autocast(device):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()

    try:
        for reference in cfg.gradcheck.references:
            with precision.autocast(device):  # the reference is float64 regardless
                errors = gradient_error(model, images, labels, reference=reference,
                                        fine_factor=cfg.probe.fine_factor, cache=references)
            for tag, value in errors.items():
                row[f"{tag.split('/')[1]}_{reference}"] = value
        work()  # allocates the parameters' .grad, so memory counts the step itself
        row["peak_mib"] = peak_memory_mib(work, device)
        row["time_ms"] = statistics.median(timed_ms(work, device) for _ in range(cfg.gradcheck.repeats))
        nfe = nfe_counts(model)
        row.update(nfe_forward=nfe["nfe/forward"], nfe_backward=nfe["nfe/backward"], nfe_rejected=nfe["nfe/rejected"])
        row["accepted_steps"] = statistics.fmean(len(b.last_info.ts) - 1 for b in model.ode_blocks)
        row["status"] = "ok"
    except (NonFiniteStateError, MaxStepsError) as error:
        row["status"] = f"failed: {str(error).splitlines()[0]}"
        log.warning(f"{combination}: {row['status']}")
    finally:
        model.zero_grad(set_to_none=True)
    return row


# --------------------------------------------------------------------------------------- writing


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def setting(row: dict) -> str:
    return f"rtol {row['rtol']:g}" if row.get("rtol") is not None else str(row["steps"])


def markdown(rows: list[dict], cfg: DictConfig, header: dict) -> str:
    references = list(cfg.gradcheck.references)
    blocks = sorted({k.split("_")[1] for row in rows for k in row if k.startswith("block_")}, key=int)
    columns = ["solver", "N_t / rtol", "steps/block", "grad"]
    for ref in references:
        columns += [f"rel. error ({ref})", f"floor ({ref})", f"÷ floor ({ref})", f"cosine ({ref})"]
    columns += [f"block errors ({references[0]})"] if blocks and references else []
    columns += ["NFE fwd", "NFE bwd", "peak MiB", "time ms"]
    lines = [
        "# anode-gradcheck",
        "",
        f"{header['model']} ({header['parameters']:,} parameters, {header['blocks']} ODE blocks), "
        f"{header['images']}, {cfg.trainer.precision} on {header['device']}"
        f"{' (TF32 ' + ('on' if cfg.trainer.tf32 else 'off') + ')' if header['device'].startswith('cuda') else ''}. "
        "Reference: float64 `direct` backprop on the grid each block accepted (`discrete`) and rk4 at "
        f"{cfg.probe.fine_factor}x as many steps (`fine`). Rel. error = ‖g − g_ref‖ / ‖g_ref‖ over all "
        "parameters; floor: the same for `direct` on the same grid in the same dtype, the rounding error any "
        "exact method shares (with `fine` it adds the grid's discretization error); ÷ floor: rel. error / floor "
        "(≈ 1: indistinguishable from rounding, ≫ 1: the method's own error; — in float64, whose floor is the "
        "reference itself); block errors: the same over each ODE block's parameters; steps/block: accepted steps "
        "per ODE block (the mean over blocks); NFE summed over blocks; peak MiB: one forward+backward "
        f"({'CUDA allocator' if header['device'].startswith('cuda') else 'CPU profiler allocations'}) on top of "
        f"the weights, their gradients and the batch; time: median of {cfg.gradcheck.repeats}. "
        f"Run took {header['wall_s']:.0f} s.",
        "",
        f"Regenerate: `{header['command']}`",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [row["solver"], setting(row), fmt(row.get("accepted_steps"), "g"), row["grad"]]
        for ref in references:
            cells += [fmt(row.get(f"rel_l2_{ref}"), ".2e"), fmt(row.get(f"floor_rel_l2_{ref}"), ".2e"),
                      fmt(row.get(f"floor_ratio_{ref}"), ".3g"), fmt(row.get(f"cosine_{ref}"), ".6f")]
        if blocks and references:
            cells.append(" / ".join(fmt(row.get(f"block_{b}_{references[0]}"), ".1e") for b in blocks))
        cells += [fmt(row.get("nfe_forward"), "d"), fmt(row.get("nfe_backward"), "d"), fmt(row.get("peak_mib"), ".1f"),
                  fmt(row.get("time_ms"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        lines += ["", "Failed:", *[f"- {r['solver']} {setting(r)} {r['grad']}: {r['status']}" for r in failed]]
    lines += ["", "![gradient error vs N_t](error.png)", "", "![peak memory vs N_t](memory.png)", "",
              "![time vs N_t](time.png)", ""]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def series(rows: list[dict], key: str) -> dict:
    """{"grad, solver": {"x": accepted steps per block, "y": row[key]}}, x ascending, failed rows left out."""
    out: dict[str, dict] = {}
    for row in rows:
        if row.get(key) is None or row.get("accepted_steps") is None:
            continue
        label = f"{row['grad']}, {row['solver']}" + (" (adaptive)" if row.get("rtol") is not None else "")
        s = out.setdefault(label, {"x": [], "y": []})
        s["x"].append(row["accepted_steps"])
        s["y"].append(row[key])
    for s in out.values():
        order = sorted(range(len(s["x"])), key=s["x"].__getitem__)
        s["x"], s["y"] = [s["x"][i] for i in order], [s["y"][i] for i in order]
    return out


def plot(path: Path, panels: dict, ylabel: str, logy: bool) -> None:
    """One axis per panel {title: series}; x = accepted steps per block (N_t for fixed solvers), log2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    labels = list(dict.fromkeys(label for panel in panels.values() for label in panel))
    grads = list(dict.fromkeys(["direct", "adjoint", "anode", "aca", *(label.split(", ")[0] for label in labels)]))
    solvers = list(dict.fromkeys(label.split(", ")[1].split(" ")[0] for label in labels))
    lines = ["-", "--", ":", "-."]
    for ax, (title, panel) in zip(axes[0], panels.items()):
        for label, s in panel.items():  # colour: the grad method; line: the solver; squares: adaptive
            grad, solver = label.split(", ")[0], label.split(", ")[1].split(" ")[0]
            y = [max(v, 1e-17) for v in s["y"]] if logy else s["y"]  # float64 exact methods can hit 0
            ax.plot(s["x"], y, lines[solvers.index(solver) % len(lines)], color=f"C{grads.index(grad) % 10}",
                    marker="s" if "adaptive" in label else "o", markersize=5, label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for s in panel.values() for x in s["x"] if float(x).is_integer()})
        if ticks:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("N_t (adaptive: accepted steps per block)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if panel:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(out_dir: Path, rows: list[dict], references) -> dict:
    """error.png (one panel per reference), memory.png, time.png; returns what each holds."""
    drawn = {
        "error.png": {f"relative gradient error vs float64 ({ref})": series(rows, f"rel_l2_{ref}") for ref in references},
        "memory.png": {"peak memory of one forward+backward": series(rows, "peak_mib")},
        "time.png": {"time of one forward+backward": series(rows, "time_ms")},
    }
    plot(out_dir / "error.png", drawn["error.png"], "relative L2 error of dL/dθ", logy=True)
    plot(out_dir / "memory.png", drawn["memory.png"], "peak MiB", logy=False)
    plot(out_dir / "time.png", drawn["time.png"], "ms (median)", logy=True)
    return drawn


def gradcheck(cfg: DictConfig, out_dir: Path, command: str = "anode-gradcheck") -> list[dict]:
    """Measure every combination; write gradcheck.md, gradcheck.csv and the plots into out_dir; return the rows."""
    start = time.perf_counter()
    precision, device = PRECISIONS[cfg.trainer.precision], pick_device(cfg.trainer.device)
    set_tf32(cfg.trainer.tf32)  # float32 on CUDA as anode-train would run it; float64 never uses TF32
    if cfg.trainer.threads is not None:
        torch.set_num_threads(cfg.trainer.threads)
    todo = combinations(cfg)
    if cfg.trainer.seed is not None:
        torch.manual_seed(cfg.trainer.seed)
    images, labels = first_batch(cfg, device, precision)
    model = make_model(cfg, device).to(precision.dtype).train()
    rows, references = [], {}
    for i, combination in enumerate(todo):
        rows.append(measure(model, images, labels, combination, cfg, device, precision, references))
        row = rows[-1]
        log.info(f"[{i + 1}/{len(todo)}] {row['solver']} {setting(row)} {row['grad']}: "
                 f"error {fmt(row.get('rel_l2_' + cfg.gradcheck.references[0]) if cfg.gradcheck.references else None, '.2e')}, "
                 f"{fmt(row.get('peak_mib'), '.1f')} MiB, {fmt(row.get('time_ms'), '.1f')} ms, {row['status']}")
    header = {
        "model": cfg.model.name, "parameters": sum(p.numel() for p in model.parameters()), "blocks": len(model.ode_blocks),
        "images": f"{len(labels)} {cfg.gradcheck.split} images of {cfg.dataset.name}"
                  + (f" ({cfg.dataset.path})" if cfg.dataset.path else ""),
        "device": str(device), "wall_s": time.perf_counter() - start, "command": command,
    }
    write_csv(out_dir / "gradcheck.csv", rows)
    plots(out_dir, rows, list(cfg.gradcheck.references))
    header["wall_s"] = time.perf_counter() - start
    (out_dir / "gradcheck.md").write_text(markdown(rows, cfg, header))
    log.info(f"wrote {out_dir / 'gradcheck.md'} ({header['wall_s']:.0f} s)")
    return rows


OUTPUTS = ("gradcheck.md", "gradcheck.csv", "error.png", "memory.png", "time.png", ".hydra")  # what a run writes


def main() -> None:
    """The console script, as anode-train's (config.run_command): bad options refused in one line before
    Hydra composes, every config error exit 2."""
    run_command("anode-gradcheck", hydra_main, "gradcheck")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="gradcheck")
def hydra_main(cfg: DictConfig) -> None:
    """Refuse a directory that already holds results, validate the groups as anode-train does, measure,
    then write the Hydra record (last: a run that failed midway leaves none, so it can be rerun in place).
    A refusal is one line on stderr and exit code 2, and leaves the directory as it was."""
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    command = "anode-gradcheck" + "".join(f" {o}" for o in hydra_cfg.overrides.task)
    try:
        earlier = sorted(p.name for p in out_dir.iterdir() if p.name in OUTPUTS)
        if earlier:
            raise ConfigError(f"{out_dir} already holds a run ({', '.join(earlier)}); nothing was overwritten: "
                              f"choose another hydra.run.dir")
        validate(cfg)
        gradcheck(cfg, out_dir, command)
        save_record(out_dir, invocation_record(cfg))
    except (ConfigError, DataError) as error:
        print(f"anode-gradcheck: {error}", file=sys.stderr)
        remove_if_empty(out_dir)
        raise SystemExit(CONFIG_EXIT) from None


if __name__ == "__main__":
    main()
