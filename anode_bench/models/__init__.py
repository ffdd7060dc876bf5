"""Image classifiers whose residual blocks are ODE blocks: ODE-ResNet and SqueezeNext, as the
ANODE and ACA papers built them. `build_model(name, num_classes, ode, **overrides)` is the entry
point; `registry.py` lists the presets and their parameter counts.

Every model maps [B, 3, 32, 32] to logits [B, num_classes] and exposes `ode_blocks` (forward
order), `configure_ode(**changes)` and `nfe()`. With `solver=euler, steps=1, grad=direct` each
ODE block is exactly the residual block z + f(z): the model is the discrete network.
"""
from .odenet import ODENet
from .registry import FAMILIES, PRESETS, Preset, build_model
from .resnet import ODEResNet
from .squeezenext import SqueezeNext

__all__ = ["FAMILIES", "ODENet", "ODEResNet", "PRESETS", "Preset", "SqueezeNext", "build_model"]
