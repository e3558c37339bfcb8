"""An exponential moving average (EMA) of the network's weights, for val, test and best.safetensors.

BasicSR evaluates its restoration models with an EMA of the weights (decay 0.999): the average
smooths the last steps' noise, which at the brief's lr of 1e-2 is large. The decay ramps up as
`min(decay, (1 + n) / (10 + n))` after n updates (TF's ExponentialMovingAverage with num_updates), so
a short run is not dominated by the random initial weights.

The shadow copy lives in float32 beside the network on its device, is updated after every optimizer
step, and is saved in every checkpoint (checkpoint.EMA_FILE, plain safetensors), so a resumed run
continues the same average bit for bit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightEMA:
    """`update()` after each optimizer step; `with ema.swapped():` the network holds the averaged weights."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.net, self.decay, self.updates = net, decay, 0
        # Parameters and floating buffers alike (InstanceNorm keeps none by default, but a variant might).
        self.shadow = {k: v.detach().float().clone() for k, v in self._tensors().items()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.net.state_dict(keep_vars=True).items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in self._tensors().items():
            self.shadow[key].lerp_(value.detach().float(), 1 - decay)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The network holds the EMA weights inside the block and its own weights again after it."""
        tensors = self._tensors()
        own = {k: v.detach().clone() for k, v in tensors.items()}
        for key, value in tensors.items():
            value.data.copy_(self.shadow[key])
        try:
            yield
        finally:
            for key, value in tensors.items():
                value.data.copy_(own[key])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"the checkpoint's weight EMA does not match this network (keys {sorted(missing)[:3]})")
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
