"""Named model presets and `build_model`, the one constructor the runner calls.

Parameter counts for 10 and 100 classes (counted by instantiating; the tests hold them):

| preset           | architecture                                    | ODE blocks | params (10) | params (100) |       paper's code (10) |
|------------------|-------------------------------------------------|-----------:|------------:|-------------:|------------------------:|
| `resnet18_aca`   | widths 64-128-256-512, blocks 2-2-2-2           |          4 |  11,173,962 |   11,220,132 |   11,173,962 (ResNet18) |
| `resnet_anode`   | the same network                                |          4 |  11,173,962 |   11,220,132 |   11,173,962 (ResNet18) |
| `sqnxt23_1x`     | width 1x, stages 32-64-128-256, blocks 2-2-2-2  |          4 |     461,466 |      473,076 |   461,466 (SqNxt_23_1x) |
| `sqnxt23_2x`     | width 2x, blocks 2-2-2-2                        |          4 |   1,819,946 |    1,843,076 | 1,819,946 (width_x=2.0) |
| `resnet4_anode`  | widths 16, 1 ODE block                          |          1 |       5,306 |        6,836 |       - (not published) |
| `resnet10_anode` | widths 16-32-64, 1 ODE block per stage          |          3 |     121,562 |      127,412 |       - (not published) |
| `alexnet_anode`  | 64-192-384-256-256, the fifth conv an ODE block |          1 |   2,454,986 |    2,478,116 |       - (not published) |
| `resnet_tiny`    | widths 4-8-16-32, blocks 2-2-2-2 (tests)        |          4 |      44,622 |       47,592 |                       - |
| `sqnxt_tiny`     | width 1/8, blocks 2-2-2-2 (tests)               |          4 |       8,636 |       10,166 |                       - |

`resnet18_aca` and `resnet_anode` are one network: ACA's `models/resnet.py` is ANODE's file (only
the learning-rate schedule differs). The papers differ in how they solve it, which is the `solver`
and `grad` config, not the model: ANODE, Euler (RK2, RK4) with N_t = 2 and the `anode` gradient;
ACA, HeunEuler (`heun_euler`) with rtol = atol = 1e-2 and the `aca` gradient.
Outputs and parameter shapes equal those of the papers' code with the same weights (checked in
float64 against a local copy of it; the reference code is not part of this repository). The one
departure: the papers' code always builds at least one ODE block per stage, even for blocks = 1;
here blocks = 1 means a stage without one.

ANODE's small networks (`resnet4_anode`, `resnet10_anode`, `alexnet_anode`). The authors' repository
(amirgholami/anode, README and misc/comparison.png) tabulates CIFAR-10 accuracy for "AlexNet",
"ResNet-4" and "ResNet-10" (baseline / Neural ODE adjoint / ANODE), but its code builds only ResNet-18
and SqNxt-23, and no source reachable here (the repository, the ANODE and ANODEV2 paper abstracts)
describes these three networks. So their layout is assumed, as follows:
- Depth counts weighted layers (convolutions and the linear head), as He et al. (2016) name ResNets.
- Every residual block whose input and output shapes agree is an ODE block, with the ODE function of
  the ResNet-18 presets (two conv3x3-BN-ReLU units); a change of width or resolution is a discrete
  strided conv3x3-BN-ReLU, so a stage has no discrete residual block. ResNet-(3S + 1) is then S
  stages of one ODE block: ResNet-4 one stage, ResNet-10 three.
- Stage widths 16-32-64, the CIFAR ResNets' of He et al. (2016) section 4.2 (ResNet-4: 16).
- AlexNet: Krizhevsky et al.'s five convolutions with their channels 64-192-384-256-256, kernels
  5-5-3-3-3 and stride 1 (11x11 stride 4 suits 224x224 images, not 32x32), BatchNorm after each
  convolution (as every other preset), max-pool 2 after the first, second and fifth; the fifth
  (256 -> 256, the only one that keeps its shape) is the ODE block; a global-average-pool linear
  head replaces the 4096-wide fully connected layers (as in every other preset).
- Solver: the authors' train.py defaults, Euler with N_t = 2 on [0, 1] (its RK2 is the midpoint
  rule, k2 = f(t + h/2, z + h/2 k1): solver=midpoint); the baseline column is the same network with
  euler, N_t = 1, direct: the discrete residual network.
Absolute accuracies therefore need not match the table; the comparison is between methods on one network.

Time is ignored by f in every preset (both papers' code); `time_channel=True` as an override
concatenates it as a channel.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .alexnet import AlexNet
from .odenet import ODENet
from .resnet import ODEResNet
from .small_resnet import SmallResNet
from .squeezenext import SqueezeNext


@dataclass(frozen=True)
class Preset:
    """A model class, its architecture keyword arguments, and what it reproduces."""

    model: type[ODENet]
    kwargs: Mapping
    source: str


def _preset(model, source, **kwargs) -> Preset:
    return Preset(model, MappingProxyType(kwargs), source)


PRESETS: dict[str, Preset] = {
    "resnet18_aca": _preset(
        ODEResNet, "ACA (Zhuang et al. 2020): juntang-zhuang/torch_ACA ResNet18(ODEBlock)",
        widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem_width=64,
    ),
    "resnet_anode": _preset(
        ODEResNet, "ANODE (Gholami et al. 2019): amirgholami/anode ResNet18(ODEBlock), the same network as resnet18_aca",
        widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem_width=64,
    ),
    "sqnxt23_1x": _preset(
        SqueezeNext, "ANODE (Gholami et al. 2019): amirgholami/anode SqNxt_23_1x", width=1.0, blocks=(2, 2, 2, 2),
    ),
    "sqnxt23_2x": _preset(
        SqueezeNext, "ANODE's SqueezeNext class at width_x = 2.0", width=2.0, blocks=(2, 2, 2, 2),
    ),
    "resnet4_anode": _preset(
        SmallResNet, "ANODE's ResNet-4 (Gholami et al. 2019, table of the authors' repository); layout assumed, see above",
        widths=(16,), blocks=(1,),
    ),
    "resnet10_anode": _preset(
        SmallResNet, "ANODE's ResNet-10 (Gholami et al. 2019, table of the authors' repository); layout assumed, see above",
        widths=(16, 32, 64), blocks=(1, 1, 1),
    ),
    "alexnet_anode": _preset(
        AlexNet, "ANODE's AlexNet (Gholami et al. 2019, table of the authors' repository); layout assumed, see above", width=1.0,
    ),
    "resnet_tiny": _preset(
        ODEResNet, "resnet18_aca at 1/16 width, for tests and smoke runs", widths=(4, 8, 16, 32), blocks=(2, 2, 2, 2), stem_width=4,
    ),
    "sqnxt_tiny": _preset(
        SqueezeNext, "sqnxt23_1x at 1/8 width, for tests and smoke runs", width=0.125, blocks=(2, 2, 2, 2),
    ),
}

FAMILIES: dict[str, str] = {
    "resnet": "resnet18_aca",  # the network of ACA's CIFAR results (and ANODE's ResNet)
    "sqnxt": "sqnxt23_1x",  # the SqueezeNext ANODE trained
}


def build_model(name: str, num_classes: int, ode: Mapping | None = None, **overrides) -> ODENet:
    """A preset (or a family's default preset) with `overrides` replacing architecture kwargs.

    ode: ODEBlock.configure keywords for every ODE block (solver, steps, grad, t0, t1, rtol, atol,
    max_steps, ...); settings not given keep ODEBlock's defaults. Output model: [B, 3, 32, 32] -> [B, num_classes].
    """
    preset_name = FAMILIES.get(name, name)
    if preset_name not in PRESETS:
        raise ValueError(f"model {name!r} unknown; choose from {', '.join([*PRESETS, *FAMILIES])}")
    preset = PRESETS[preset_name]
    allowed = [p for p in inspect.signature(preset.model).parameters if p not in ("num_classes", "ode")]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{preset.model.__name__} has no setting {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return preset.model(num_classes, ode, **{**preset.kwargs, **overrides})
