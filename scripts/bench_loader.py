"""Images/s of the device-resident loader alone beside one training step's, so the loader is never
the bottleneck.

    python scripts/bench_loader.py                                # CPU, synthetic CIFAR-shaped data
    python scripts/bench_loader.py --device cuda --model resnet18_aca --batch 128
"""
from __future__ import annotations

import argparse
import statistics

import torch

from anode_bench.data import DeviceLoader, channel_stats, make_synthetic
from anode_bench.metrics import set_tf32, timed_ms
from anode_bench.models import build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet_tiny")
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--grad", default="aca")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=10000, help="size of the synthetic training split")
    parser.add_argument("--train-steps", type=int, default=5, help="training steps timed (median)")
    args = parser.parse_args()

    device = torch.device(args.device)
    set_tf32(False)
    train, _ = make_synthetic(10, args.images, 1)
    mean, std = channel_stats(train)
    loader = DeviceLoader(train, args.batch, device, mean=mean, std=std, augment=True, shuffle=True, drop_last=True,
                          generator=torch.Generator(device).manual_seed(0))

    def one_epoch():
        for images, _ in loader:  # noqa: B007 (the last batch is returned, so the work is not optimized away)
            pass
        return images

    one_epoch()  # warm-up
    epoch_ms = timed_ms(one_epoch, device)
    loader_rate = len(loader) * args.batch / (epoch_ms / 1e3)

    # the trainer's settings: no finiteness read-back in the solves, weight decay, TF32 off
    ode = dict(solver=args.solver, steps=args.steps, grad=args.grad, check_finite=False)
    model = build_model(args.model, 10, ode).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, labels = next(iter(loader))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    step_ms = statistics.median(timed_ms(step, device) for _ in range(args.train_steps))
    step_rate = args.batch / (step_ms / 1e3)
    print(f"device {device}, batch {args.batch}: loader (crop+flip+normalize) {loader_rate:,.0f} img/s; "
          f"training step ({args.model}, {args.solver} N_t={args.steps}, {args.grad}) {step_rate:,.0f} img/s; "
          f"loader/step = {loader_rate / step_rate:,.0f}x")


if __name__ == "__main__":
    main()
