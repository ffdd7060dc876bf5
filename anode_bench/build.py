"""The one place where a config becomes objects: device, precision, data, model, optimizer and
schedule. anode-train, anode-gradcheck and the scripts all build through these functions, so a
run, its gradient check and a benchmark of the same config are the same network on the same data.

anode_bench.ode and anode_bench.models never read a config; config.py checks one; this module
turns a checked one into objects.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from .data import DataError, DeviceLoader, Split, load_splits
from .distributed import Distributed
from .models import build_model
from .models.odenet import ODENet


def pick_device(name: str) -> torch.device:
    """trainer.device (auto, cpu or cuda; config.validate has checked it) as a torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Precision:
    """What a precision name means: the dtype of parameters and data, and whether forward and loss
    run under bf16 autocast (parameters, gradients and optimizer state then stay float32; the
    checkpointing methods recompute under the same autocast)."""

    name: str
    dtype: torch.dtype
    bf16_autocast: bool = False

    def autocast(self, device: torch.device):
        """The context of a forward pass at this precision."""
        if self.bf16_autocast:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


PRECISIONS = {
    "fp32": Precision("fp32", torch.float32),
    "bf16": Precision("bf16", torch.float32, bf16_autocast=True),
    "fp64": Precision("fp64", torch.float64),
}


def ode_settings(cfg: DictConfig) -> dict:
    """The ODEBlock settings shared by every block: the solver group plus the grad group (its keys
    besides `name`, e.g. revolve's checkpoints or the adjoint's norm, are the grad_options)."""
    # steps stays when null (an adaptive solver's; a fixed-step one refuses it), the other nulls take the core's defaults
    solver = {k: v for k, v in OmegaConf.to_container(cfg.solver).items() if k != "name" and (v is not None or k == "steps")}
    grad_options = {k: v for k, v in OmegaConf.to_container(cfg.grad).items() if k != "name" and v is not None}
    return {**solver, "solver": cfg.solver.name, "grad": cfg.grad.name, "grad_options": grad_options,
            "check_finite": False}


def load_data(cfg: DictConfig, seed: int | None = None) -> tuple[Split, Split]:
    """The configured train and test splits (host arrays). `seed` (default trainer.seed, 0 when null) is
    what synthetic images are generated from; a subset of real images is the leading one whatever it is."""
    data = cfg.dataset
    return load_splits(
        data.name, num_classes=data.num_classes, root=data.root, path=data.path, download=data.download,
        train_size=data.train_size, test_size=data.test_size, seed=seed if seed is not None else cfg.trainer.seed or 0,
    )


def load_data_once(cfg: DictConfig, context: Distributed, seed: int | None = None) -> tuple[Split, Split]:
    """load_data, rank 0 first under torchrun: a download lands once, and the other ranks read it."""
    if not context.active:
        return load_data(cfg, seed)
    splits = failure = None
    if context.is_main:
        try:
            splits = load_data(cfg, seed)
        except DataError as error:
            failure = str(error)
    failure = context.first_message(failure)
    if failure is not None:
        raise DataError(failure)
    return splits or load_data(cfg, seed)


def make_loader(split: Split, stats: tuple[list[float], list[float]], batch_size: int, device: torch.device,
                precision: Precision, *, train: bool, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1)) -> DeviceLoader:
    """Batches of `split` on `device`, normalized with `stats` = data.channel_stats(training split) (never
    the test split's); `train`: shuffled, cropped and flipped, the last partial batch dropped."""
    mean, std = stats
    return DeviceLoader(split, batch_size, device, mean=mean, std=std, augment=train, shuffle=train, drop_last=train,
                        generator=generator, dtype=precision.dtype, shard=shard)


def make_model(cfg: DictConfig, device: torch.device) -> ODENet:
    """The configured model, every ODE block set from the solver and grad groups."""
    return build_model(cfg.model.name, cfg.dataset.num_classes, ode_settings(cfg), **cfg.model.get("arch", {})).to(device)


RECOMPILES_PER_BLOCK = 8  # twice what a training run was seen to need (see with_layout_and_compile)


def with_layout_and_compile(net: ODENet, memory_format: torch.memory_format, compile: bool) -> ODENet:
    """The speed options that change the network itself: its weights' memory format
    (torch.channels_last: NHWC, CUDA only) and `torch.compile` of every ODE block's f (the solver
    loop and the gradient methods stay Python)."""
    net = net.to(memory_format=memory_format)
    if compile:
        # The blocks' f share one code object, so one recompile budget: a block of another shape, a
        # no-grad forward (the checkpointing methods), a recompute with z requiring grad, an evaluation
        # batch: about 4 graphs a block, 16 for a 4-stage ResNet with aca. At dynamo's default of 8 the
        # rest would silently run eager. (cache_size_limit: the name torch < 2.7 knows; later
        # versions keep it as an alias of recompile_limit.)
        limit = RECOMPILES_PER_BLOCK * len(net.ode_blocks)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
        for block in net.ode_blocks:
            block.func.compile()
    return net


def make_optimizer(net: torch.nn.Module, trainer: DictConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=trainer.lr, momentum=trainer.momentum, weight_decay=trainer.weight_decay)


SCHEDULES: dict[str, Callable] = {
    "step": lambda optimizer, trainer: torch.optim.lr_scheduler.MultiStepLR(optimizer, list(trainer.milestones), trainer.gamma),
    "cosine": lambda optimizer, trainer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, trainer.epochs),
    "constant": lambda optimizer, trainer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0),
}


def make_scheduler(optimizer: torch.optim.Optimizer, trainer: DictConfig):
    """The learning-rate schedule, stepped once per epoch (config.TrainerConfig has checked the name)."""
    return SCHEDULES[trainer.schedule](optimizer, trainer)
