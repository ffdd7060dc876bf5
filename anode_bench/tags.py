"""Every TensorBoard tag and metrics.json key that anode-bench writes, in one place.

The trainer and the gradient probe log under these names; anode-report reads them and builds its
custom-scalars layout from TAGS; anode-gradcheck names its columns after them. A tag's x-axis is
part of the contract: `step` tags are logged at the global training step (steps done so far),
`epoch` tags at the number of epochs done (1, 2, ...).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tag:
    """A scalar series: its name as logged (a regex for the per-block family), where anode-report's
    custom-scalars layout shows it, and its x-axis."""

    name: str
    section: str
    title: str
    x: str  # "step" or "epoch"
    pattern: str | None = None  # a regex over tag names when the tag is a family (grad_error/block_<i>)

    @property
    def regex(self) -> str:
        return self.pattern or f"^{self.name}$"


TRAIN_LOSS, TRAIN_ACC, TRAIN_EPOCH_LOSS = "train/loss", "train/acc", "train/epoch_loss"
TEST_LOSS, TEST_ACC = "test/loss", "test/acc"
GRAD_REL_L2, GRAD_COSINE = "grad_error/rel_l2", "grad_error/cosine"
GRAD_FLOOR, GRAD_FLOOR_RATIO = "grad_error/floor_rel_l2", "grad_error/floor_ratio"
PEAK_MIB, ACTIVATION_MIB = "memory/peak_mib", "memory/activation_mib"
NFE_FORWARD, NFE_BACKWARD, NFE_REJECTED, HOST_SYNCS = "nfe/forward", "nfe/backward", "nfe/rejected", "nfe/host_syncs"
STEP_MS, EPOCH_S, IMG_S = "time/step_ms", "time/epoch_s", "throughput/img_s"
STATUS_TEXT = "run/status"  # a text summary, not a scalar


def block_tag(i: int) -> str:
    """The gradient error restricted to ODE block i's parameters."""
    return f"grad_error/block_{i}"


TAGS: tuple[Tag, ...] = (
    Tag(TEST_ACC, "accuracy", "test accuracy", "epoch"),
    Tag(TEST_LOSS, "accuracy", "test loss", "epoch"),
    Tag(TRAIN_ACC, "accuracy", "train accuracy", "epoch"),
    Tag(TRAIN_EPOCH_LOSS, "accuracy", "train loss (per epoch)", "epoch"),
    Tag(TRAIN_LOSS, "accuracy", "train loss (per log window)", "step"),
    Tag(GRAD_REL_L2, "gradient error", "relative L2 error vs float64 reference", "step"),
    Tag(GRAD_FLOOR, "gradient error", "precision floor: same-precision direct vs float64", "step"),
    Tag(GRAD_FLOOR_RATIO, "gradient error", "error / floor (1 = rounding level)", "step"),
    Tag(GRAD_COSINE, "gradient error", "cosine vs float64 reference", "step"),
    Tag("grad_error/block_<i>", "gradient error", "per ODE block", "step", pattern=r"^grad_error/block_\d+$"),
    Tag(PEAK_MIB, "memory", "peak MiB", "step"),
    Tag(ACTIVATION_MIB, "memory", "activation MiB", "step"),
    Tag(STEP_MS, "cost", "step ms", "step"),
    Tag(EPOCH_S, "cost", "epoch s", "epoch"),
    Tag(IMG_S, "cost", "images per s", "epoch"),
    Tag(NFE_FORWARD, "cost", "NFE forward", "step"),
    Tag(NFE_BACKWARD, "cost", "NFE backward", "step"),
    Tag(NFE_REJECTED, "cost", "NFE rejected", "step"),
    Tag(HOST_SYNCS, "cost", "host syncs in solves", "step"),
)

# Series the trainer keeps every value of, for metrics.json's summaries (and the resume checkpoint).
HISTORY = (TEST_ACC, GRAD_REL_L2, GRAD_FLOOR, GRAD_FLOOR_RATIO, PEAK_MIB, STEP_MS)


def mean_key(tag: str) -> str:
    """metrics.json's key for the mean over a run of a probe series: grad_error/rel_l2 -> grad_error/rel_l2_mean."""
    return f"{tag}_mean"


# metrics.json keys besides the tags above (which appear as the run's final, best, mean or max value).
STATUS, FAILURE, STEPS, EPOCHS = "status", "failure", "steps", "epochs"
BEST_ACC = "test/best_acc"
TF32 = "tf32"  # whether float32 convolutions and matmuls ran in TF32 (CUDA)
PROCESSES = "processes"  # torchrun processes the run trained with (a list where a resume changed the count)
SEED = "seed"  # the seed the run started from: trainer.seed, or the one drawn for trainer.seed=null
WALL_S = "time/wall_s"  # the whole run, start to metrics.json, in seconds


FINAL_PREFIX = "final/"  # the run's metrics.json numbers as HPARAMS-tab metrics: final/test/acc, ...


def layout() -> dict:
    """TensorBoard's custom-scalars layout: {section: {title: ["Multiline", [regex]]}} for every tag."""
    sections: dict[str, dict] = {}
    for tag in TAGS:
        sections.setdefault(tag.section, {})[tag.title] = ["Multiline", [tag.regex]]
    return sections
