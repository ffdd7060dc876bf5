"""Print the model presets as a markdown table: what each reproduces, parameters (10 classes), ODE
blocks, and the forward NFE per image of every fixed-step solver at N_t = 1, 2, 4, 8.

The NFE is measured: one forward of a single random 32x32 image per (solver, N_t), then
model.nfe()["forward"], summed over the ODE blocks. A solve treats the batch as one state,
so the count per image is the same for any batch size.

    python scripts/model_table.py [--presets resnet18_aca sqnxt23_1x] [--steps 1 2 4 8]
"""
from __future__ import annotations

import argparse

import torch

from anode_bench.models import PRESETS, build_model
from anode_bench.ode import SOLVERS

FIXED_SOLVERS = [name for name, tableau in SOLVERS.items() if not tableau.adaptive]


def measured_nfe(model, solver: str, steps: int) -> int:
    model.configure_ode(solver=solver, steps=steps)
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    return model.nfe()["forward"]


def table(presets: list[str], steps: list[int]) -> str:
    n_t = ", ".join(map(str, steps))
    header = ["preset", "reproduces", "parameters (10 classes)", "ODE blocks", *(f"{s} NFE, N_t = {n_t}" for s in FIXED_SOLVERS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (2 + len(FIXED_SOLVERS))]
    for name in presets:
        model = build_model(name, 10, dict(grad="direct")).eval()
        n_parameters = sum(p.numel() for p in model.parameters())
        nfe = [" / ".join(str(measured_nfe(model, solver, s)) for s in steps) for solver in FIXED_SOLVERS]
        lines.append(f"| `{name}` | {PRESETS[name].source} | {n_parameters:,} | {len(model.ode_blocks)} | " + " | ".join(nfe) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4, 8])
    args = parser.parse_args()
    print(table(args.presets, args.steps))


if __name__ == "__main__":
    main()
