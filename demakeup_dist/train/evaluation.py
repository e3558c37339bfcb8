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

import torch
from PIL import Image

from demakeup_dist.data.loader import to_float
from demakeup_dist.metrics import MetricAccumulator, bicubic_upsample, psnr, ssim
from demakeup_dist.pictures import centre_crop, tiles
from demakeup_dist.results import BASELINES, MEASURES, Evaluation, Quality
from demakeup_dist.train.recipe import TARGET_KEYS

_MEASURE = {"psnr": psnr, "ssim": ssim}
# Each task's baseline (results.BASELINES names them) from the input image.
_BASELINE = {"identity": lambda x: x, "bicubic": lambda x: bicubic_upsample(x, scale=4)}


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
) -> tuple[Evaluation, dict | None]:
    """Mean metrics over every sample of `batches` across all ranks.

    Returns (the Evaluation of `tasks`, the first batch with its predictions for a sample panel, or None
    if this rank saw no data). With `baselines`, each task's baseline too (results.BASELINES: the input
    itself against the target, bicubic 4x upsampling for SR). `flip_ensemble` averages each prediction
    with the mirrored prediction of the mirrored input.
    """
    sources = ("model", "baseline") if baselines else ("model",)
    was_training = model.training
    model.eval()
    acc = MetricAccumulator([(source, task, m) for source in sources for task in tasks for m in MEASURES])
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
            target, compared = batch[TARGET_KEYS[task]], {"model": out}
            if baselines:
                compared["baseline"] = _BASELINE[BASELINES[task]](batch["makeup"])
            for source, image in compared.items():
                for m in MEASURES:
                    acc.add((source, task, m), _MEASURE[m](image, target))
        if first is None:
            first = {**{k: v for k, v in batch.items() if torch.is_tensor(v)}, **{f"pred_{k}": v for k, v in outputs.items()}}
    model.train(was_training)
    means = acc.reduce(reduce_fn, device=device)

    def quality(source: str, task: str) -> Quality:
        return Quality(**{m: means[source, task, m] for m in MEASURES})

    return Evaluation({task: quality("model", task) for task in tasks},
                      {task: quality("baseline", task) for task in tasks} if baselines else {}), first


def sample_panel(first: dict, count: int = 1) -> Image.Image:
    """Rows of input | target | prediction [| HR centre crop | SR centre crop] at the input's size.

    With an SR head the last columns show the central SxS window of the 4S x 4S images (`centre_crop`).
    """
    columns = [first["makeup"], first["non_makeup"], first["pred_demakeup"]]
    if "pred_sr" in first:
        size = first["makeup"].shape[-1]
        columns += [centre_crop(first["hr"], size), centre_crop(first["pred_sr"], size)]
    return Image.fromarray(tiles(columns, count))
