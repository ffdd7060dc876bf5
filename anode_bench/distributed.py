"""Data-parallel training with torch DDP, launched by torchrun (one process per GPU, or per CPU
group with the gloo backend):

    torchrun --standalone --nproc_per_node=4 -m anode_bench.train hydra.run.dir=outputs/ddp/run1 grad=aca

Every rank holds the whole dataset and draws the same permutation and augmentation from the same
seed; rank r trains on its slice [r·B/W, (r+1)·B/W) of each global batch of B images (W ranks), and
DDP averages the gradients, so one step equals a single-process step on the global batch, except
for BatchNorm, whose batch statistics are per rank unless `trainer.sync_bn=true`.

torch.nn.SyncBatchNorm runs on CUDA only; on the CPU (gloo) `SyncBatchNorm2d` here computes the
same global statistics with one differentiable all_reduce per call.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import _functional_collectives as funcol  # torch's differentiable collectives


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks; world_size 1 is the ordinary single-process run."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs, checkpoints, metrics and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over ranks (in place)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on one (a stop request that all ranks must obey)."""
        if not self.active:
            return flag
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        return bool(self.sum(torch.tensor([float(flag)], device=device)) > 0)

    def first_message(self, message: str | None) -> str | None:
        """The first rank's non-None `message`, on every rank (None if no rank has one)."""
        if not self.active:
            return message
        messages = [None] * self.world_size
        dist.all_gather_object(messages, message)
        return next((m for m in messages if m is not None), None)

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def broadcast(self, value):
        """Rank 0's `value` (a picklable object) on every rank."""
        if not self.active:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def from_environment(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK); without torchrun,
    the single-process Distributed(). On CUDA each rank takes the GPU of its LOCAL_RANK (nccl);
    on the CPU the ranks talk through gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def shutdown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks.

    Rank r holds x_r [B_r, C, H, W]: per channel n_r = B_r·H·W values with mean m_r and sum of
    squared deviations M_r (two-pass, as BatchNorm itself computes them). One all_reduce of a
    [W, 3, C] tensor that holds (n_r, m_r, M_r) in row r gives every rank all of them, and Chan et
    al.'s combination the global statistics:
        N = Σ n_r,   mean = Σ n_r m_r / N,   var = (Σ M_r + Σ n_r (m_r - mean)²) / N.
    (Statistics of float32 activations are taken in float32, where the one-pass Σx²/N - mean²
    would cancel badly.) The
    all_reduce is differentiable, its backward an all_reduce of the gradients, so dL/dx_r is that
    of BatchNorm over the global batch. Running statistics get the unbiased variance, as in
    nn.BatchNorm2d. Outside training, or in a single process, this is nn.BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        work = x if x.dtype == torch.float64 else x.float()  # statistics in at least float32 (bf16 under autocast)
        values = work.transpose(0, 1).flatten(1)  # [C, n_r]
        local_mean = values.mean(1)
        local = torch.stack([torch.full_like(local_mean, values.shape[1]), local_mean,
                             (values - local_mean[:, None]).pow(2).sum(1)])
        rows = torch.zeros(dist.get_world_size(), *local.shape, dtype=local.dtype, device=local.device)
        rows = rows.index_copy(0, torch.tensor([dist.get_rank()], device=local.device), local[None])
        counts, means, m2s = funcol.wait_tensor(funcol.all_reduce(rows, "sum", dist.group.WORLD)).unbind(1)  # [W, C] each
        total = counts.sum(0)
        mean = (counts * means).sum(0) / total
        var = (m2s.sum(0) + (counts * (means - mean).pow(2)).sum(0)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = (1, -1, 1, 1)
        out = ((work - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _swap_batchnorm(module: nn.Module, make) -> nn.Module:
    """`module` with every BatchNorm2d-like child replaced by make(child), its state carried over."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            like = next(child.buffers())  # running_mean: the dtype and device to build in
            replacement = make(child).to(device=like.device, dtype=like.dtype)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            _swap_batchnorm(child, make)
    return module


def _batchnorm_like(kind, child: nn.Module) -> nn.Module:
    return kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)


def with_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with global-batch BatchNorm: torch.nn.SyncBatchNorm on CUDA, SyncBatchNorm2d on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_batchnorm(model, lambda child: _batchnorm_like(SyncBatchNorm2d, child))


def local_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose BatchNorms are plain nn.BatchNorm2d (rank 0 alone can run it, e.g. the
    gradient-error probe, without waiting on the other ranks)."""
    return _swap_batchnorm(copy.deepcopy(model), lambda child: _batchnorm_like(nn.BatchNorm2d, child))
