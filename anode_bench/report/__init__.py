"""anode-report DIR [DIR ...]: turn the runs under run or multirun directories into tables, plots,
a comparison of gradient methods against a baseline, the papers' claims with a verdict each, and a
TensorBoard dashboard layout.

    anode-report outputs/multirun/2026-01-01/12-00-00
    anode-report outputs/multirun/A outputs/multirun/B --out outputs/AB --baseline discrete
    tensorboard --logdir outputs/multirun/2026-01-01/12-00-00    # CUSTOM SCALARS: methods side by side

A run is any directory under a DIR (the DIR included) that holds metrics.json; its
.hydra/config.yaml says what it was and its TensorBoard events hold the curves. A directory with a
config and events but no metrics.json stopped without finishing (a crash, or still going): it is
listed as incomplete, with the epochs its events hold. Writes into --out (default: the one DIR, or the DIRs' common parent):

  report.md            one row per run; one row per configuration (runs whose configs differ only
                       in trainer.seed and in settings that do not change the result: trainer.resume,
                       trainer.resume_override, trainer.device, trainer.threads, trainer.log_every,
                       trainer.keep_checkpoints, trainer.eval_batch_size, dataset.root,
                       dataset.download, hydra.*, dataset.path's directory, and rtol/atol/max_steps
                       of a fixed-step solver, which ignores them) with mean ± std over
                       seeds, naming the configurations whose step times pool more than one device or
                       thread count (a run resumed on another counts); the comparison against each
                       --baseline; the claims; the plots
  report.csv           the per-run table; configurations.csv and comparison.csv the other two
  report.json          every table and plotted series, numbers as numbers
  accuracy.png         test accuracy (%) and training loss per epoch: mean over the completed seeds
                       (all seeds while none has completed), band min-max, a hollow marker where
                       fewer seeds gave the point
  memory.png           peak memory against N_t (and rtol for adaptive solvers), from 0; bars min-max
  grad_error.png       mean gradient error against N_t / rtol, with the precision floor where logged;
                       bars min-max; a log axis counts the zeros it cannot draw
  grad_quality.png     the probe's error, cosine, floor and error / floor over training, per method
                       (seeds as in accuracy.png)
  *.anode-report       a TensorBoard event file holding the custom-scalars layout (a rerun replaces it)

Comparison: for each configuration M with a comparable baseline configuration B, M - B in mean
final test accuracy (percentage points) with a 95% Welch interval over seeds, and beside it the paired
interval over the seeds both ran (a seed fixes the initial weights and the batch order). B matches --baseline
(KEY=VALUE[,KEY=VALUE...]; grad, solver, model, dataset mean grad.name etc.; `discrete` is
grad=direct,solver=euler,solver.steps=1, the discrete residual network). M and B are comparable
when their configs agree on every key except grad.*, the seed, the non-result settings above and
what the baseline names (solver.* when it names the solver). Default: --baseline grad=direct. A
configuration without a comparable baseline is listed under the table with the keys where it
differs from the nearest one (a method missing from the table has not silently failed to run).

Claims: each paper claim whose method and baseline configurations are both in the runs gets a
verdict from the 95% interval [lo, hi] of (method - baseline):
  claim "above" (method higher): reproduced if lo > 0, contradicted if hi < 0
  claim "below" (method lower):  reproduced if hi < 0, contradicted if lo > 0
  claim "equal" within ± m:      reproduced if -m <= lo and hi <= m, contradicted if lo > m or hi < -m
  otherwise "not reproduced at this budget" (the interval holds zero, or straddles the margin);
  fewer than 2 seeds on either side: no verdict ("needs >= 2 seeds").
No interval, and so no verdict, where a seed finished twice (a run passed twice would count twice),
where a side lost a seed to divergence (its survivors alone would flatter it), or where neither
side varies over seeds (agreeing numbers give a zero-width interval, not certainty); the row's note
says which. Runs still unfinished are left out of the means and named in the note. A run that a
resume under trainer.resume_override continued with another config (its .hydra.1, ... differ from
.hydra) trained under no single configuration and is left out as well, as is a run whose
metrics.json is from before a resume that raised trainer.epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from anode_bench import tags

from .claims import CLAIMS, CONTRADICTED, NEEDS_SEEDS, NOT_AT_BUDGET, REPRODUCED, Claim, claim_rows, verdict
from .comparison import GROUPS, SHORTHANDS, SelectorError, accuracy_by_seed, comparison_rows, parse_selector, unmatched
from .plots import epoch_curve, identical_series, plot_curves, plot_versus, unique_label, versus_discretization
from .runs import Run, common_root, find_runs
from .tables import (
    configuration_cells,
    configuration_rows,
    fmt,
    group_by_seed,
    markdown_table,
    mixed_timing,
    run_cells,
    run_rows,
    series_label,
    swept_keys,
    write_csv,
)

__all__ = ["CLAIMS", "CONTRADICTED", "LAYOUT", "NEEDS_SEEDS", "NOT_AT_BUDGET", "REPRODUCED", "Claim", "Run",
           "accuracy_by_seed", "claim_rows", "find_runs", "group_by_seed", "main", "report", "run_rows", "swept_keys",
           "verdict", "versus_discretization"]

LAYOUT_SUFFIX = ".anode-report"
# TensorBoard CUSTOM SCALARS: one multiline chart per tag (a regex over tags); every run is a line in it.
LAYOUT = tags.layout()


def write_layout(root: Path) -> None:
    """The custom-scalars layout, in an event file of its own in root (an earlier one is replaced). The file has a
    fixed name and wall time 0, not SummaryWriter's clock, host and pid, so that regenerating a report rewrites the
    same bytes: a committed report does not change when its runs have not."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter
    from torch.utils.tensorboard.summary import custom_scalars

    for old in root.glob(f"events.out.tfevents.*{LAYOUT_SUFFIX}"):
        old.unlink()
    # the name sorts after every training event file, so a report written into a run directory leaves the run's
    # start time (TensorBoard's first event) as it was
    with open(root / f"events.out.tfevents.9999999999.layout{LAYOUT_SUFFIX}", "wb") as file:
        records = RecordWriter(file)
        records.write(Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString())
        records.write(Event(wall_time=0.0, step=0, summary=custom_scalars(LAYOUT)).SerializeToString())


# tag -> (title, y label, log scale, scale): the per-epoch curves, and the probe's over training
CURVES = {tags.TEST_ACC: ("test accuracy", "accuracy (%)", False, 100.0),
          tags.TRAIN_EPOCH_LOSS: ("training loss", "cross-entropy", False, 1.0)}
QUALITY = {tags.GRAD_REL_L2: ("relative L2 error vs float64", "rel. L2 error", True, 1.0),
           tags.GRAD_COSINE: ("cosine vs float64", "cosine", False, 1.0),
           tags.GRAD_FLOOR: ("precision floor (same-precision direct)", "rel. L2 error", True, 1.0),
           tags.GRAD_FLOOR_RATIO: ("error / floor (1 = rounding)", "ratio", True, 1.0)}


def curves_of(groups, runs, keys, tags: dict) -> dict:
    """tag -> {label: epoch_curve}: each configuration's curve over its completed runs, the runs the tables' accuracy
    means count (over all of its runs while none has completed: a sweep in progress)."""
    curves = {}
    for tag, (*_, scale) in tags.items():
        curves[tag] = {}
        for group in groups:
            curve = epoch_curve([r for r in group if r.completed] or [r for r in group if not r.mixed], tag, scale)
            if curve:
                label = series_label(group[0], runs, keys, with_discretization=True)
                curves[tag][unique_label(curves[tag], label, group)] = curve
    return curves


def interval(row: dict, prefix: str = "") -> str:
    low, high = row[f"{prefix}CI low"], row[f"{prefix}CI high"]
    return "—" if low is None else f"[{low:+.2f}, {high:+.2f}]"


def section_comparison(baseline_text: str, rows: list[dict], without: list[str]) -> list[str]:
    cells = [{"method": r["method"], "baseline": r["baseline"], "n": f"{r['n method']} vs {r['n baseline']}",
              "method acc %": fmt(r["method acc %"], ".2f"), "baseline acc %": fmt(r["baseline acc %"], ".2f"),
              "difference (points)": fmt(r["difference"], "+.2f"),
              "95% CI": interval(r),
              "Welch df": fmt(r["df"], ".1f"), "same seeds: pairs": r["pairs"],
              "paired difference": fmt(r["paired difference"], "+.2f"), "paired 95% CI": interval(r, "paired "),
              "note": r["note"]} for r in rows]
    empty = (f"(no configuration is comparable with the `{baseline_text}` runs: they differ as listed below)\n" if without
             else f"(no configuration has a comparable `{baseline_text}` baseline: pass `--baseline KEY=VALUE` naming one "
             "the runs hold)\n")
    return [f"### Against `{baseline_text}`", "", markdown_table(cells) if rows else empty,
            *([f"Without a comparable `{baseline_text}` baseline:", "", *[f"- {line}" for line in without], ""] if without else [])]


def section_claims(rows: list[dict]) -> list[str]:
    cells = [{"paper": r["paper"], "network": r["network"], "claim": r["claim"], "paper's figure": r["paper's figure"],
              "paper diff": f"{r['paper diff']:+.2f}", "method": r["method"], "baseline": r["baseline"],
              "our epochs": fmt(r["epochs"], "d"),
              "n": f"{r['n method']} vs {r['n baseline']}", "ours (points)": fmt(r["difference"], "+.2f"),
              "95% CI": interval(r),
              "paper's diff in CI": fmt(r["paper diff in CI"], ""), "verdict": r["verdict"],
              "paired 95% CI (pairs)": interval(r, "paired ") + f" ({r['pairs']})"} for r in rows]
    return [markdown_table(cells) if rows else "(the runs test none of the claims: no matching method and baseline "
            "configurations)\n"]


def report(roots, out: Path | None = None, baselines=None) -> dict:
    """Read every run under roots (a directory or a list), write report.md, the CSVs, report.json, the plots and
    the layout into out (default: the one root, or the roots' common parent); return report.json's content.
    baselines: --baseline selectors (parse_selector); a key no run's config has is refused. None: grad=direct."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
    base = common_root(roots)
    out_given = out  # as the user wrote it, for the report's "Regenerate with" line
    out = Path(out).resolve() if out is not None else base
    given = tuple(baselines or ())
    baselines = given or ("grad=direct",)
    selectors = {text: parse_selector(text) for text in baselines}
    runs = find_runs(roots, base)
    if not runs:
        raise FileNotFoundError(f"no run under {', '.join(map(str, roots))}: a run directory holds metrics.json "
                                "(or .hydra/config.yaml and events)")
    known = {k for run in runs for k in run.config}
    grads = sorted({str(run.get("grad.name")) for run in runs if run.get("grad.name")})
    for text, selector in selectors.items() if given else ():
        if "=" not in text and text not in SHORTHANDS and selector["grad.name"] not in grads:
            raise SelectorError(f"--baseline {text}: no run has grad={text}; a bare name is a gradient method (the runs': "
                                f"{', '.join(grads)}), else give KEY=VALUE[,KEY=VALUE] or one of: {', '.join(SHORTHANDS)}")
        unknown = [k for k in selector if k not in known]
        if unknown:
            raise SelectorError(f"--baseline {text}: no run's config has {', '.join(unknown)} "
                                f"(groups: {', '.join(GROUPS)}; or a dotted key such as solver.steps)")
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(runs)
    groups = group_by_seed(runs)
    rows, config_rows = run_rows(runs, keys), configuration_rows(groups, keys)
    comparisons = {text: comparison_rows(groups, runs, keys, selector) for text, selector in selectors.items()}
    without = {text: unmatched(groups, selector, runs, keys, tuple(selectors.values())) for text, selector in selectors.items()}
    claims = claim_rows(groups, runs, keys)
    timing = mixed_timing(groups, runs, keys)

    curves = curves_of(groups, runs, keys, CURVES)
    quality = {tag: series for tag, series in curves_of(groups, runs, keys, QUALITY).items() if series}
    memory = versus_discretization(groups, runs, keys, tags.PEAK_MIB)
    error = versus_discretization(groups, runs, keys, tags.mean_key(tags.GRAD_REL_L2))
    floor = versus_discretization(groups, runs, keys, tags.mean_key(tags.GRAD_FLOOR))
    plot_curves(out / "accuracy.png", curves, CURVES)
    plot_versus(out / "memory.png", memory, "peak memory (MiB)", "peak memory per training step", logy=False)
    plot_versus(out / "grad_error.png", error, "relative L2 gradient error (mean)", "gradient error vs float64 reference",
                logy=True, dashed=floor)
    plots = ["accuracy.png", "memory.png", "grad_error.png"]
    if quality:
        plot_curves(out / "grad_quality.png", quality, QUALITY, xlabel="training step (as logged)")
        plots.append("grad_quality.png")
    write_layout(out)
    identical = identical_series({f"accuracy.png, {CURVES[t][0]}": s for t, s in curves.items()}
                                 | {f"grad_quality.png, {QUALITY[t][0]}": s for t, s in quality.items()}
                                 | {f"memory.png, against {p}": s for p, s in memory.items()}
                                 | {f"grad_error.png, against {p}": s for p, s in error.items()})

    devices = sorted({str(r.metrics.get("device")) for r in runs if r.metrics.get("device")})
    # grad_check: the probe group's name in runs from before it was called probe
    references = sorted({f"{r.get('probe.reference', r.get('grad_check.reference'))}" for r in runs
                         if r.get("probe.reference", r.get("grad_check.reference"))})
    diverged = sum(r.metrics.get("status") == "diverged" for r in runs)
    shown = out_given if out_given is not None else base  # the output directory as the command named it
    sources = " ".join(str(r) for r in roots) + (f" --out {shown}" if out != base else "")
    floors = any(tags.mean_key(tags.GRAD_FLOOR) in r.metrics for r in runs)
    text = [
        f"# Report: {out.name or out}",
        "",
        f"{len(runs)} runs in {len(groups)} configurations ({diverged} diverged), device {', '.join(devices) or '?'}. "
        f"Regenerate with `anode-report {sources}"
        + "".join(f" --baseline {b}" for b in given)
        + f"`; open the dashboards with `tensorboard --logdir {shown}` (CUSTOM SCALARS: every run as a line in one "
        "chart per tag).",
        "",
        "Accuracy in %; grad error: mean relative L2 error of the gradient against float64 `direct` "
        f"(probe.reference = {', '.join(references) or '?'}) over the run's probes; "
        + ("floor: the same measure for `direct` at the run's own precision on the same grid (what the arithmetic "
           "alone costs); error / floor: 1 means the method is at the rounding level; " if floors else "")
        + "peak MiB: the largest training-step peak, parameters and optimizer state plus the most the step allocated "
        "(the CUDA allocator at every step, or on the CPU the profiler at probe steps; not the data a GPU keeps); "
        "step ms: mean over log windows; NFE: f evaluations of the "
        "last training step summed over ODE blocks. `direct (discrete ResNet)` is euler N_t = 1 with `direct`: "
        "exactly the discrete residual network." + (f" Other settings that differ between runs: {', '.join(keys)}." if keys else ""),
        "",
        "## Runs",
        "",
        markdown_table([run_cells(r) for r in rows]),
        "## Per configuration (mean ± std over seeds)",
        "",
        "Runs whose resolved configs differ only in trainer.seed and in settings that cannot change a result "
        "(resume, device, threads, logging, dataset location); ± is the sample standard deviation (n >= 2); "
        "runs that diverged, did not finish or were resumed with another config are left out of the accuracy means.",
        "",
        markdown_table([configuration_cells(r) for r in config_rows]),
        *(["Step ms and wall s pool times measured under different devices or thread counts (`trainer.threads`, which "
           "changes no result) in:", "", *[f"- {line}" for line in timing], ""] if timing else []),
        "## Comparison with a baseline",
        "",
        "Mean final test accuracy of each configuration minus its baseline's, in percentage points, with the 95% Welch "
        "interval over seeds (df by Welch-Satterthwaite). A baseline is comparable when the two configs differ only "
        "in grad, the seed and what the baseline names. Paired: the same difference seed by seed over the seeds both "
        "ran, with its t interval (n - 1 df); a seed fixes the initial weights and the batch order, so this interval "
        "leaves out the seed-to-seed spread that the two sides share.",
        "",
        *[line for text_, rows_ in comparisons.items() for line in section_comparison(text_, rows_, without[text_])],
        "## Claims",
        "",
        "Each paper claim the runs test, at our runs' budget (`our epochs`; the papers trained 90 to 350): "
        "reproduced when the whole 95% interval lies on the paper's side (for 'equal', "
        "inside ± the margin), contradicted when it lies wholly on the other side (outside the margin), otherwise not "
        "reproduced at this budget; no verdict below 2 seeds on either side. Verdicts use the Welch interval; the "
        "paired one beside it leaves out the spread the seeds share: narrower where the per-seed differences agree, "
        "wider (n - 1 df) where they do not.",
        "",
        *section_claims(claims),
        "## Plots",
        "",
        "Accuracy and probe curves: each configuration's mean over its completed runs (over all of its runs while none "
        "has completed), the band from the lowest to the highest of them; a hollow marker is a point fewer of them "
        "gave (a run that stopped early, or a probe that read nan). Memory and gradient error: the mean over seeds of "
        "each run's number, the bar from the lowest to the highest seed; the floor is the mean over the seeds that "
        "logged one. A log axis cannot draw 0 (a float64 run's floor): a panel says how many points it left out.",
        *[f"- {note}" for note in identical],
        "",
        *[line for name in plots for line in (f"![{name[:-4]}]({name})", "")],
        "## Run directories",
        "",
        *[f"- {run.name}: `{os.path.relpath(run.path, out)}`" for run in runs],
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    write_csv(out / "report.csv", rows)
    write_csv(out / "configurations.csv", config_rows)
    write_csv(out / "comparison.csv", [{"baseline selector": t, **r} for t, rs in comparisons.items() for r in rs])
    content = {
        "runs": rows,
        "configurations": config_rows,
        "comparisons": comparisons,
        "without baseline": without,
        "mixed timing": timing,
        "claims": claims,
        "plots": {"accuracy.png": curves, "memory.png": memory, "grad_error.png": error, "grad_error.png floor": floor,
                  "grad_quality.png": quality},
        "identical": identical,
        "layout": LAYOUT,
    }
    (out / "report.json").write_text(json.dumps(content, indent=2))
    return content


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="anode-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="run directories or multirun (sweep) directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: the one DIR, or the DIRs' common parent)")
    parser.add_argument("--baseline", action="append", default=None, metavar="KEY=VALUE[,KEY=VALUE...]",
                        help="baseline configuration to compare every comparable configuration with; repeatable; "
                             "'discrete' = grad=direct,solver=euler,solver.steps=1 (default: grad=direct)")
    args = parser.parse_args(argv)
    try:
        content = report(args.dirs, args.out, args.baseline)
    except (FileNotFoundError, SelectorError) as error:  # bad input: exit 2, as argparse's and anode-train's
        print(f"anode-report: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    out = args.out or common_root(args.dirs)
    print(f"anode-report: {len(content['runs'])} runs -> {out / 'report.md'}, report.csv, report.json, plots")

