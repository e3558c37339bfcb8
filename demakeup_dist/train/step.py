"""The train step: one definition, run by the training loop and timed by `demakeup bench`.

forward + the brief's loss as ONE module (`ModelLoss`), so torch.compile fuses the loss and the
uint8 -> float conversion of the inputs and targets into the network's graph: p4's (B, 3, 4H, 4W)
float prediction and float targets then never go through memory (measured fastest on the H200,
docs/performance.md). Then backward, clip to the global norm, AdamW (fused), LR schedule,
all through the accelerator (DDP gradient sync, DeepSpeed, mixed precision).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from demakeup_dist.choices import COMPILE_MODES, check_choice
from demakeup_dist.data.loader import unit_float
from demakeup_dist.train.recipe import TARGET_KEYS, restoration_loss

if TYPE_CHECKING:
    from demakeup_dist.train.config import TrainConfig


class ModelLoss(nn.Module):
    """forward(x, targets) -> the scalar loss; forward(x) -> the network's outputs (for evaluation).

    x: (B, 3, H, W) and targets {task: (B, 3, h, w)}, uint8 in [0, 255] (made float here by
    `loader.unit_float`, the one conversion) or float in [0, 1]. `input_dtype` casts the input
    (DeepSpeed's bf16 engine wants bf16 inputs).
    """

    def __init__(self, net: nn.Module, weights: dict[str, float], scale: float,
                 input_dtype: torch.dtype | None = None, loss: str = "mse") -> None:
        super().__init__()
        self.net, self.weights, self.scale, self.input_dtype = net, weights, scale, input_dtype
        self.loss = loss  # recipe.pixel_loss's kind: config `loss`

    @classmethod
    def for_config(cls, net: nn.Module, config: TrainConfig, input_dtype: torch.dtype | None = None) -> ModelLoss:
        """The run's module: `config`'s loss, scale and per-task weights; compiled when `config.compile`."""
        weights = {"demakeup": config.demakeup_loss_weight, "sr": config.sr_loss_weight}
        module = cls(net, weights, config.loss_scale, input_dtype, loss=config.loss)
        if config.compile:
            compile_module(module, config.compile_mode)
        return module

    def forward(self, x: Tensor, targets: dict[str, Tensor] | None = None) -> Any:
        x = unit_float(x) if x.dtype == torch.uint8 else x
        outputs = self.net(x if self.input_dtype is None else x.to(self.input_dtype))
        if targets is None:
            return outputs
        targets = {k: unit_float(t) if t.dtype == torch.uint8 else t for k, t in targets.items()}
        return restoration_loss(outputs, targets, self.weights, self.scale, self.loss)[0]


def plain_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ModelLoss (compiled or not) state dict -> the network's own keys."""
    return {k.replace("_orig_mod.", "").removeprefix("net."): v for k, v in state.items()}


class TrainStep:
    """`step(batch) -> loss`: one optimizer step on a batch dict (data/loader.py's contract, any dtype).

    `module` is the accelerator-prepared ModelLoss; `clip_norm` 0 disables clipping (DeepSpeed clips
    itself: pass 0 there). `grad_accum` K splits the batch into K equal forward passes whose gradients
    add up to the whole batch's (each loss / K; DDP all-reduces after the last only), so the step and
    its returned loss are the batch's mean as without accumulation, up to float summation order.
    """

    def __init__(self, accelerator, module: nn.Module, optimizer, scheduler, tasks: tuple[str, ...],
                 clip_norm: float, grad_accum: int = 1) -> None:
        self.accelerator, self.module, self.optimizer, self.scheduler = accelerator, module, optimizer, scheduler
        self.keys = {task: TARGET_KEYS[task] for task in tasks}
        self.clip_norm, self.grad_accum = clip_norm, grad_accum
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __call__(self, batch: dict) -> Tensor:
        inputs, targets = batch["makeup"], {task: batch[key] for task, key in self.keys.items()}
        if self.grad_accum == 1:
            loss = self.module(inputs, targets)
            self.accelerator.backward(loss)
        else:
            loss = self._accumulate(inputs, targets)
        if self.clip_norm > 0:
            self.accelerator.clip_grad_norm_(self.params, self.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _accumulate(self, inputs: Tensor, targets: dict[str, Tensor]) -> Tensor:
        k = self.grad_accum
        micro = inputs.shape[0] // k
        total = torch.zeros((), device=inputs.device)
        for i in range(k):
            part = slice(i * micro, (i + 1) * micro)  # (B, ...) -> (B / K, ...)
            syncing = contextlib.nullcontext() if i == k - 1 else self.accelerator.no_sync(self.module)
            with syncing:
                loss = self.module(inputs[part], {task: t[part] for task, t in targets.items()}) / k
                self.accelerator.backward(loss)
            total = total + loss.detach()
        return total


def compile_module(module: nn.Module, mode: str) -> None:
    """torch.compile `module` in place (`mode` one of COMPILE_MODES)."""
    check_choice("compile_mode", mode, COMPILE_MODES)
    module.compile(mode=None if mode == "default" else mode)
