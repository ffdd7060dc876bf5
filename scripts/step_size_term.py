"""How much of `direct`'s gradient on an adaptive solver is the step-size controller's, and whether that part
keeps one direction from batch to batch.

On an adaptive grid `direct` differentiates everything the solve did, the step sizes included (each accepted
dt is a function of θ through the error estimates before it); `aca` differentiates the accepted grid with its
step sizes held fixed, the exact gradient of the network that ran. Their difference d = g_direct − g_aca is
the step-size term. Per training batch (train mode, float32, the model's own loss) this prints |d| / |g_aca|
and cos(d, g_aca), beside the rounding it is read against: |g_const − g_aca| / |g_aca| with g_const `direct`
under grad.step_sizes=constant, the same accepted grid's gradient by autograd. Over the batches: the cosines
between their d's and |mean d| / mean |d| (about 1/√B for B directions that share nothing, 1 for one
direction every time). A term that kept its direction would add up over SGD steps however small it is; one
that does not is noise far below the minibatch's. What adds up is read against what the gradient itself keeps:
|mean d| / |mean g_aca| and cos(mean d, mean g_aca), the batches' means standing for the full-batch gradient,
whose length is a fraction of one batch's where batches disagree. A term small over all of θ can still be large for a few
parameter tensors whose own gradient is small, so the last table lists the tensors where it is largest:
sqrt(Σ_b |d_p|²) / sqrt(Σ_b |g_p|²) over the batches b, |Σ_b d_p| / Σ_b |d_p| (1: the same direction in
every batch), and |mean d_p| / |mean g_p|.

    python scripts/step_size_term.py experiment=aca_resnet18_narrow_cifar10 dataset.path=FILE.npz \
        --checkpoint RUN_DIR/checkpoints/step_00001170.pt --batches 8

Overrides are anode-train's (the solver must be adaptive); without --checkpoint the weights are
trainer.seed's initial ones. Batches are the training loader's first ones (crops and flips from
trainer.seed). BatchNorm's running statistics are put back after each gradient.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from anode_bench.build import PRECISIONS, load_data, make_loader, make_model
from anode_bench.config import CONFIG_DIR, ConfigError, validate
from anode_bench.data import channel_stats
from anode_bench.ode import SCHEMES


def gradient(model, grad: str, images, labels, **options) -> dict[str, torch.Tensor]:
    """dL/dθ by parameter name, with every ODE block on `grad` (and its options); the buffers as they were."""
    for block in model.ode_blocks:
        block.configure(grad=grad, grad_options=options)
    model.zero_grad()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    F.cross_entropy(model(images), labels).backward()
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def per_tensor(g_acas: list[dict], diffs: list[dict], top: int) -> list[str]:
    """Table rows of the `top` parameter tensors with the largest step-size term relative to their gradient."""
    rows = []
    for name in g_acas[0]:
        d = torch.stack([diff[name].flatten() for diff in diffs])
        g = torch.stack([g_aca[name].flatten() for g_aca in g_acas])
        size = (d.norm() / g.norm()).item() if g.norm() > 0 else float("inf")
        kept = (d.sum(0).norm() / d.norm(dim=1).sum()).item() if d.norm() > 0 else 0.0
        of_mean = (d.mean(0).norm() / g.mean(0).norm()).item() if g.mean(0).norm() > 0 else float("inf")
        rows.append((size, kept, of_mean, name, d.shape[1]))
    rows.sort(reverse=True)
    return [f"| {name} | {n} | {size:.2e} | {kept:.3f} | {of_mean:.2e} |" for size, kept, of_mean, name, n in rows[:top]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="anode-train overrides, e.g. experiment=aca_resnet18_narrow_cifar10")
    parser.add_argument("--checkpoint", type=Path, help="an anode-train checkpoint whose weights to use")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--top", type=int, default=8, help="parameter tensors to list (largest term first)")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    try:
        validate(cfg)
        if not SCHEMES[cfg.solver.name].adaptive:
            raise ConfigError(f"solver={cfg.solver.name} is fixed-step: there direct and aca agree to the bit; "
                              f"choose an adaptive solver (heun_euler, bosh3, dopri5)")
    except ConfigError as error:
        sys.exit(f"step_size_term.py: {error}")
    torch.manual_seed(cfg.trainer.seed or 0)
    train_split, _ = load_data(cfg)
    device = torch.device("cpu")
    loader = make_loader(train_split, channel_stats(train_split), cfg.trainer.batch_size, device, PRECISIONS["fp32"],
                         train=True, generator=torch.Generator().manual_seed(cfg.trainer.seed or 0))
    batches = [batch for _, batch in zip(range(args.batches), loader)]
    model = make_model(cfg, device).train()
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"])
    weights = f"{args.checkpoint}" if args.checkpoint else f"trainer.seed={cfg.trainer.seed}'s initial weights"
    print(f"{cfg.model.name}, {cfg.solver.name} rtol={cfg.solver.rtol} atol={cfg.solver.atol}, {weights}, "
          f"{len(batches)} batches of {cfg.trainer.batch_size}")
    print("| batch | abs(d) / abs(g_aca) | cos(d, g_aca) | rounding: abs(g_const - g_aca) / abs(g_aca) |\n|---|---|---|---|")
    g_acas, tensor_diffs, diffs = [], [], []
    for i, (images, labels) in enumerate(batches):
        g_aca = gradient(model, "aca", images, labels)
        g_direct = gradient(model, "direct", images, labels)
        g_const = flat(gradient(model, "direct", images, labels, step_sizes="constant"))
        g_acas.append(g_aca)
        tensor_diffs.append({name: g_direct[name] - g_aca[name] for name in g_aca})
        g_aca = flat(g_aca)
        d = flat(g_direct) - g_aca
        diffs.append(d)
        print(f"| {i} | {d.norm() / g_aca.norm():.2e} | {F.cosine_similarity(d, g_aca, 0):+.3f} | "
              f"{(g_const - g_aca).norm() / g_aca.norm():.2e} |", flush=True)
    between = [F.cosine_similarity(a, b, 0).item() for i, a in enumerate(diffs) for b in diffs[i + 1:]]
    mean_d, mean_g = torch.stack(diffs).mean(0), torch.stack([flat(g) for g in g_acas]).mean(0)
    kept = mean_d.norm() / torch.stack([d.norm() for d in diffs]).mean()
    if between:
        print(f"cos between batches' d: min {min(between):+.3f}, median {statistics.median(between):+.3f}, "
              f"max {max(between):+.3f}; abs(mean d) / mean abs(d) {kept:.3f} (1/sqrt({len(diffs)}) = {len(diffs) ** -0.5:.3f})")
        print(f"over the batches: abs(mean d) / abs(mean g_aca) {mean_d.norm() / mean_g.norm():.2e}, "
              f"cos(mean d, mean g_aca) {F.cosine_similarity(mean_d, mean_g, 0):+.3f}; "
              f"abs(mean g_aca) / mean abs(g_aca) {mean_g.norm() / torch.stack([flat(g).norm() for g in g_acas]).mean():.3f}")
    print(f"\nparameter tensors with the largest term, over the {len(diffs)} batches:\n"
          "| tensor | entries | abs(d_p) / abs(g_p) | abs(sum d_p) / sum abs(d_p) | abs(mean d_p) / abs(mean g_p) |\n"
          "|---|---|---|---|---|")
    print("\n".join(per_tensor(g_acas, tensor_diffs, args.top)))


if __name__ == "__main__":
    main()
