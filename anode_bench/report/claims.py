"""The papers' accuracy claims and the verdict the runs give each (the rules are in the package
docstring)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .comparison import NO_INTERVAL, difference_row, pairs, parse_selector


@dataclass(frozen=True)
class Claim:
    """One accuracy claim of a paper: configurations whose model.name matches `model` (a regex) and `method`, against
    comparable ones matching `baseline`. kind: 'above' / 'below' (method higher / lower than the baseline) or
    'equal' (within ± margin points); paper_diff: the paper's method - baseline in points."""

    paper: str
    network: str
    model: str
    method: str
    baseline: str
    kind: str
    paper_diff: float
    paper_text: str
    margin: float = 0.0


# model.name of the networks: a preset, or the family (model=resnet, model=sqnxt) whose default it is
RESNET18, SQNXT23 = r"resnet18_aca|^resnet$", r"sqnxt23|^sqnxt$"

# ANODE: the authors' repository's table (average over runs), baseline = the same network as a discrete ResNet,
# trained 350 epochs. "Equal" claims use a 1-point margin: ANODE's table puts ANODE 0.35-0.99 points above its
# baseline, about the baseline's own min-max spread (0.3-0.9 points).
CLAIMS = [
    *[Claim("ANODE", net, pattern, "grad=adjoint", "discrete", "below", adjoint - base,
            f"adjoint {adjoint:.2f} vs baseline {base:.2f}")
      for net, pattern, base, adjoint, _ in (("AlexNet", r"alexnet", 87.03, 75.67, 88.02),
                                             ("ResNet-4", r"resnet_?4(?!\d)", 76.95, 47.37, 77.30),
                                             ("ResNet-10", r"resnet_?10(?!\d)", 88.10, 67.94, 88.60))],
    *[Claim("ANODE", net, pattern, "grad=anode", "discrete", "equal", anode - base,
            f"ANODE {anode:.2f} vs baseline {base:.2f}", margin=1.0)
      for net, pattern, base, _, anode in (("AlexNet", r"alexnet", 87.03, 75.67, 88.02),
                                           ("ResNet-4", r"resnet_?4(?!\d)", 76.95, 47.37, 77.30),
                                           ("ResNet-10", r"resnet_?10(?!\d)", 88.10, 67.94, 88.60))],
    Claim("ANODE", "SqNxt-23", SQNXT23, "grad=anode", "grad=adjoint", "above", 89.0 - 50.0,
          "ANODE ≈89 vs adjoint ≈50 after 350 epochs (≈75 vs 45-70 from epoch 30)"),
    Claim("ACA", "ODE-ResNet-18", RESNET18, "grad=aca", "grad=adjoint", "above", 93.0 - 90.0,
          "ACA ≈93 vs adjoint ≈90 after 90 epochs"),
    # naive backpropagation differentiates the step sizes; direct with grad.step_sizes=constant is aca's gradient
    Claim("ACA", "ODE-ResNet-18", RESNET18, "grad=aca", "grad=direct,grad.step_sizes=differentiated", "above",
          93.0 - 90.0, "ACA ≈93 vs naive backpropagation ≈90 after 90 epochs"),
    Claim("ACA", "ODE-ResNet-18", RESNET18, "grad=aca", "discrete", "above", 94.15 - 92.2,
          "ODE-ResNet-18 with ACA ≈94.15 vs discrete ResNet-18 ≈92.2 (median of 10 runs)"),
]

REPRODUCED, NOT_AT_BUDGET, CONTRADICTED, NEEDS_SEEDS = (
    "reproduced", "not reproduced at this budget", "contradicted", "no verdict: needs >= 2 seeds")


def verdict(kind: str, low: float | None, high: float | None, margin: float = 0.0) -> str:
    """The verdict on a claim from the interval [low, high] of method - baseline (the module docstring's rules):
    a claim is reproduced only when the whole interval lies on the paper's side, contradicted only when the whole
    interval lies on the other side, and anything in between is 'not reproduced at this budget'."""
    if low is None or high is None:
        return NEEDS_SEEDS
    if kind == "above":
        return REPRODUCED if low > 0 else CONTRADICTED if high < 0 else NOT_AT_BUDGET
    if kind == "below":
        return REPRODUCED if high < 0 else CONTRADICTED if low > 0 else NOT_AT_BUDGET
    if kind == "equal":
        return REPRODUCED if -margin <= low and high <= margin else CONTRADICTED if low > margin or high < -margin else NOT_AT_BUDGET
    raise ValueError(f"claim kind {kind!r}: one of above, below, equal")


def claim_rows(groups, runs, keys, claims=CLAIMS) -> list[dict]:
    """One row per claim and matching (method, baseline) pair in the runs; claims the runs do not test are left out."""
    rows = []
    for claim in claims:
        candidates = [g for g in groups if re.search(claim.model, str(g[0].get("model.name", "")), re.IGNORECASE)]
        for group, base in pairs(candidates, parse_selector(claim.baseline), parse_selector(claim.method)):
            row, _ = difference_row(group, base, runs, keys)
            expectation = {"above": "method > baseline", "below": "method < baseline",
                           "equal": f"|method - baseline| <= {claim.margin:g}"}[claim.kind]
            low, high = row["CI low"], row["CI high"]
            rows.append({"paper": claim.paper, "network": claim.network, "claim": expectation,
                         "epochs": group[0].get("trainer.epochs"),
                         "paper's figure": claim.paper_text, "paper diff": claim.paper_diff, **row,
                         "paper diff in CI": None if low is None else low <= claim.paper_diff <= high,
                         "verdict": f"no verdict: {row['note']}" if row["note"].startswith(NO_INTERVAL)
                         else verdict(claim.kind, low, high, claim.margin)})
    return rows
