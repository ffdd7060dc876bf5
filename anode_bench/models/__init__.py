"""Image classifiers whose residual blocks are ODE blocks: ODE-ResNet and SqueezeNext, as the
ANODE and ACA papers built them, and ANODE's small networks (ResNet-4, ResNet-10, AlexNet).
`build_model(name, num_classes, ode, **overrides)` is the entry point; `registry.py` lists the presets and their parameter counts.

Every model maps [B, 3, 32, 32] to logits [B, num_classes] and exposes `ode_blocks` (forward
order), `configure_ode(**changes)` and `nfe()`. With `solver=euler, steps=1, grad=direct` each
ODE block is exactly the residual block z + f(z): the model is the discrete network.
"""
from .alexnet import AlexNet
from .odenet import ODENet
from .registry import FAMILIES, PRESETS, Preset, build_model
from .resnet import ODEResNet
from .small_resnet import SmallResNet
from .squeezenext import SqueezeNext

__all__ = ["AlexNet", "FAMILIES", "ODENet", "ODEResNet", "PRESETS", "Preset", "SmallResNet", "SqueezeNext", "build_model"]
