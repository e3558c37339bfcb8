"""Validation / test evaluation: PSNR and SSIM per output, baselines, and the sample panel.

Self-ensemble (config `flip_ensemble`, test only): the faces are trained with horizontal flips, so
the mirrored input is as familiar to the network as the input; averaging the two predictions (EDSR's
x8 self-ensemble restricted to the one transform the training data has) halves part of the noise.

Metrics are per image, then averaged over the whole split (like `tf.image.psnr` followed by a mean):
each rank sums its images' values and counts them, and the sums are added across ranks, so uneven
per-rank counts give the exact dataset mean.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from demakeup_dist.data.loader import to_float
from demakeup_dist.metrics import MetricAccumulator, bicubic_upsample, psnr, ssim
from demakeup_dist.train.recipe import TARGET_KEYS

# Metric-name suffix per head: "psnr" for the de-makeup head, "psnr_sr" for the 4x head.
_SUFFIX = {"demakeup": "", "sr": "_sr"}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict],
    tasks: tuple[str, ...],
    device: torch.device,
    reduce_fn: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    baselines: bool = False,
    input_dtype: torch.dtype | None = None,
    flip_ensemble: bool = False,
) -> tuple[dict[str, float], dict | None]:
    """Mean metrics over every sample of `batches` across all ranks.

    Returns ({"psnr", "ssim"[, "psnr_sr", "ssim_sr"][, "identity_psnr", ..., "bicubic_psnr_sr", ...]},
    the first batch with its predictions for a sample panel, or None if this rank saw no data).
    With `baselines`, also the identity baseline (input vs target) and, for SR, bicubic 4x upsampling.
    `flip_ensemble` averages each prediction with the mirrored prediction of the mirrored input.
    """
    names = []
    for task in tasks:
        suffix = _SUFFIX[task]
        names += [f"psnr{suffix}", f"ssim{suffix}"]
        if baselines:
            base = "identity" if task == "demakeup" else "bicubic"
            names += [f"{base}_psnr{suffix}", f"{base}_ssim{suffix}"]
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(names)
    first = None
    for batch in batches:
        batch = to_float(batch, device)
        x = batch["makeup"] if input_dtype is None else batch["makeup"].to(input_dtype)
        with autocast():
            outputs = model(x)
            if flip_ensemble:
                mirrored = model(x.flip(-1))
                outputs = {task: (out.float() + mirrored[task].float().flip(-1)) / 2 for task, out in outputs.items()}
        outputs = {task: out.float().clamp(0, 1) for task, out in outputs.items()}
        for task, out in outputs.items():
            suffix, target = _SUFFIX[task], batch[TARGET_KEYS[task]]
            acc.add(f"psnr{suffix}", psnr(out, target))
            acc.add(f"ssim{suffix}", ssim(out, target))
            if baselines:
                base = batch["makeup"] if task == "demakeup" else bicubic_upsample(batch["makeup"], scale=4)
                name = "identity" if task == "demakeup" else "bicubic"
                acc.add(f"{name}_psnr{suffix}", psnr(base, target))
                acc.add(f"{name}_ssim{suffix}", ssim(base, target))
        if first is None:
            first = {**{k: v for k, v in batch.items() if torch.is_tensor(v)}, **{f"pred_{k}": v for k, v in outputs.items()}}
    model.train(was_training)
    return acc.reduce(reduce_fn, device=device), first


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (image.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def sample_panel(first: dict, count: int = 1) -> Image.Image:
    """Rows of input | target | prediction [| HR centre crop | SR centre crop] at the input's size.

    For p4 the SR columns show the central SxS window of the 4S x 4S images, at full resolution,
    where detail (or its absence) is visible.
    """
    rows = []
    for i in range(min(count, first["makeup"].shape[0])):
        tiles = [first["makeup"][i], first["non_makeup"][i], first["pred_demakeup"][i]]
        if "pred_sr" in first:
            size = first["makeup"].shape[-1]
            start = (first["pred_sr"].shape[-1] - size) // 2
            window = (slice(None), slice(start, start + size), slice(start, start + size))
            tiles += [first["hr"][i][window], first["pred_sr"][i][window]]
        rows.append(np.concatenate([_to_uint8(t) for t in tiles], axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))
