"""The brief's training recipe (SPEC 4), translated from TF's `official.nlp.optimization.create_optimizer`.

- AdamW, betas (0.9, 0.999), eps 1e-6, decoupled weight decay 0.01 scaled by the learning rate
  (TF's `var -= lr * wd * var`, which is what torch.optim.AdamW does).
- TF excludes variables whose name contains "bias" / "layer_norm": in these networks that is every
  convolution bias. InstanceNorm's scale and offset are called gamma / beta in TF, so they are decayed.
- Gradients clipped to a global norm of 1.0 (TF's `AdamWeightDecay.apply_gradients`).
- LR: `init_lr * step / warmup` while step < warmup, then `init_lr * (1 - step / total)`: TF's
  PolynomialDecay runs over the *whole* schedule, so after warm-up the LR resumes at
  `(1 - warmup_fraction) * init_lr`, not at `init_lr`.
- Loss: `mean((pred - target)^2) * 100` per head; the multi-task loss is the weighted sum.
  `loss: l1 | charbonnier` swaps the per-pixel error (not in the brief; restoration work since EDSR
  trains with L1, docs/results.md measures both here); `loss_scale` multiplies whichever is chosen.
"""

from __future__ import annotations

import torch
from torch import nn

from demakeup_dist.choices import LOSSES, check_choice
from demakeup_dist.train.config import TrainConfig

_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)

# Each model output (task) and the batch key of its target (data/loader.py's batch contract).
TARGET_KEYS = {"demakeup": "non_makeup", "sr": "hr"}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: convolution biases without weight decay, everything else with it."""
    no_decay: list[nn.Parameter] = []
    decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if isinstance(module, _CONV_TYPES) and name == "bias" else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with the recipe's settings; `lr`: the peak learning rate after lr_scaling (default config.lr).

    Fused (one pass over the weights: 122 -> 33 ms per step for p3's 23.6 M parameters on one CPU thread,
    docs/results.md section 6) except under DeepSpeed, whose engine brings its own optimizer step."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=config.lr if lr is None else lr,
        betas=config.betas,
        eps=config.eps,
        fused=config.strategy == "ddp" or None,
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of init_lr at optimizer step `step` (0-based), exactly TF's WarmUp + PolynomialDecay."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, 1.0 - min(step, total_steps) / total_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    warmup_steps = int(warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps)
    )


# Charbonnier's epsilon (Lai et al., LapSRN): sqrt(d^2 + eps^2) is L1 away from 0 but smooth at 0.
CHARBONNIER_EPS = 1e-3
# The psnr loss's MSE floor: 100 dB, far above any image here, so it only keeps log10 finite at 0.
PSNR_LOSS_FLOOR = 1e-10


def pixel_loss(kind: str, error: torch.Tensor) -> torch.Tensor:
    """Mean loss of `error` = pred - target (B, C, H, W): per pixel mse, l1 or charbonnier, or psnr: minus
    each image's PSNR, averaged, i.e. the evaluation metric itself (config `loss`)."""
    if kind == "mse":
        return torch.mean(error**2)
    if kind == "l1":
        return torch.mean(error.abs())
    if kind == "charbonnier":
        return torch.mean(torch.sqrt(error**2 + CHARBONNIER_EPS**2))
    if kind == "psnr":  # minus the metric itself: mean over images of -PSNR = 10 log10(MSE) (max value 1)
        per_image = error.flatten(1).pow(2).mean(1)  # (B,)
        return torch.mean(10 * torch.log10(per_image + PSNR_LOSS_FLOOR))
    check_choice("loss", kind, LOSSES)
    raise AssertionError(f"loss {kind!r} has no formula")


def restoration_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: dict[str, float], scale: float,
    kind: str = "mse",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum over heads of `pixel_loss(kind, pred - target) * scale`, computed in float32.

    Returns the total and each head's unweighted term (for logging).
    """
    terms = {
        task: pixel_loss(kind, outputs[task].float() - targets[task].float()) * scale for task in outputs
    }
    total = sum(weights[task] * term for task, term in terms.items())
    return total, terms
