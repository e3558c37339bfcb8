"""The four networks of the brief, by name: ``build_model("p1" | "p2" | "p3" | "p4", **overrides)``.

Every model's ``forward(x)`` takes float (B, 3, H, W) in [0, 1] with H, W multiples of 32 and
returns a dict of float32 images in [0, 1]: ``{"demakeup": (B, 3, H, W)}``, for p4 also
``"sr": (B, 3, 4H, 4W)``. ``model.tasks`` names the dict's keys.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from demakeup_dist.choices import MODEL_NAMES, TASKS
from demakeup_dist.models.res34unet_arch import Res34UNet
from demakeup_dist.models.unet_arch import UNet


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its class, the constructor arguments its name fixes, a summary."""

    cls: type[nn.Module]
    summary: str
    fixed: dict[str, Any] = field(default_factory=dict)
    not_applicable: tuple[str, ...] = ()


MODELS: dict[str, ModelSpec] = {
    "p1": ModelSpec(UNet, "classic U-Net, GELU + InstanceNorm"),
    "p2": ModelSpec(
        Res34UNet,
        "ResNet34 U-Net, no skip connections",
        fixed={"skips": False, "sr_head": False},
        not_applicable=("input_skip_channels", "head_channels", "checkpoint_decoder"),
    ),
    "p3": ModelSpec(
        Res34UNet,
        "ResNet34 U-Net with skip connections",
        fixed={"skips": True, "sr_head": False},
        not_applicable=("head_channels", "checkpoint_decoder"),
    ),
    "p4": ModelSpec(
        Res34UNet, "p3 + de-makeup head + 4x SR head (multi-task)", fixed={"skips": True, "sr_head": True}
    ),
}
"""Keyed by `choices.MODEL_NAMES`, the names every command accepts (tests/test_models.py checks they agree)."""


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return MODELS[name]


def model_options(name: str) -> dict[str, Any]:
    """The overrides ``build_model(name, ...)`` accepts, with their defaults."""
    spec = _spec(name)
    excluded = set(spec.fixed) | set(spec.not_applicable)
    params = inspect.signature(spec.cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name != "self" and p.name not in excluded}


def model_tasks(name: str) -> tuple[str, ...]:
    """The keys of network ``name``'s output dict, without building it."""
    return TASKS if _spec(name).fixed.get("sr_head") else TASKS[:1]


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build network ``name`` ("p1" ... "p4") with constructor ``overrides`` (e.g. from configs/p*.yaml).

    Raises ValueError for an unknown name or override, listing the valid ones.
    """
    spec = _spec(name)
    options = model_options(name)
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in options.items())
        message = f"model {name} has no option(s) {', '.join(unknown)}; valid options (defaults): {valid}"
        if set(unknown) & set(spec.fixed):
            message += ". skips / sr_head are set by the model name: p2 no skips, p3 skips, p4 skips + SR head"
        raise ValueError(message)
    return spec.cls(**spec.fixed, **overrides)


__all__ = ["MODEL_NAMES", "MODELS", "ModelSpec", "Res34UNet", "UNet", "build_model", "model_options", "model_tasks"]
