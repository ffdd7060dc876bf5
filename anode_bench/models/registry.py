"""Named model presets and `build_model`, the one constructor the runner calls.

Parameter counts (counted by instantiating; the tests hold them), 4 ODE blocks in every preset:

| preset         | model        | architecture                                    | params, 10 classes | params, 100 classes | paper's code, 10 classes |
|----------------|--------------|-------------------------------------------------|-------------------:|--------------------:|-------------------------:|
| `resnet18_aca` | ODEResNet    | widths 64-128-256-512, blocks 2-2-2-2           |         11,173,962 |          11,220,132 |  11,173,962 (ResNet18)   |
| `resnet_anode` | ODEResNet    | the same network                                |         11,173,962 |          11,220,132 |  11,173,962 (ResNet18)   |
| `sqnxt23_1x`   | SqueezeNext  | width 1x, stages 32-64-128-256, blocks 2-2-2-2  |            461,466 |             473,076 |  461,466 (SqNxt_23_1x)   |
| `sqnxt23_2x`   | SqueezeNext  | width 2x, blocks 2-2-2-2                        |          1,819,946 |           1,843,076 |  1,819,946 (width_x=2.0) |
| `resnet_tiny`  | ODEResNet    | widths 4-8-16-32, blocks 2-2-2-2 (tests)        |             44,622 |              47,592 |  -                       |
| `sqnxt_tiny`   | SqueezeNext  | width 1/8, blocks 2-2-2-2 (tests)               |              8,636 |              10,166 |  -                       |

`resnet18_aca` and `resnet_anode` are one network: ACA's `models/resnet.py` is ANODE's file (only
the learning-rate schedule differs). The papers differ in how they solve it, which is the `solver`
and `grad` config, not the model: ANODE, Euler (RK2, RK4) with N_t = 2 and the `anode` gradient;
ACA, HeunEuler (`heun_euler`) with rtol = atol = 1e-2 and the `aca` gradient.
Outputs and parameter shapes equal those of the papers' code with the same weights (checked in
float64 against a local copy of it; the reference code is not part of this repository). The one
departure: the papers' code always builds at least one ODE block per stage, even for blocks = 1;
here blocks = 1 means a stage without one.

Time is ignored by f in every preset (both papers' code); `time_channel=True` as an override
concatenates it as a channel.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .odenet import ODENet
from .resnet import ODEResNet
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
