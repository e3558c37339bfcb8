"""Image-quality metrics of the project: the one PSNR, the one SSIM, the SR baseline and their exact
cross-rank averaging.

Contract shared by every function here: images are ``(B, C, H, W)`` tensors with values in
``[0, max_val]`` (the project uses ``[0, 1]``); metrics are computed in float32 whatever the input
dtype (bf16 activations would otherwise cost ~0.1 dB of rounding) and returned per image, shape
``(B,)``, so a caller averages over images, never over pooled pixels (``tf.image.psnr`` semantics).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(pred: Tensor, target: Tensor, fn: str) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            f"{fn}: expected two (B, C, H, W) tensors of the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; add a batch dimension with x[None] for a single image"
        )


def psnr(pred: Tensor, target: Tensor, max_val: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, like ``tf.image.psnr``: ``10*log10(max_val^2 / mse)`` with the MSE over
    C, H, W of each image. Returns float32 ``(B,)``.

    Identical images give ``+inf``, as in TensorFlow. It is kept on purpose (a capped value would be
    an invented number): averaged with ``MetricAccumulator`` one identical pair makes the mean
    ``inf``, exactly what ``tf.reduce_mean(tf.image.psnr(...))`` reports, and is the visible sign that a
    prediction (or an identity baseline) copies its target.
    """
    _check_pair(pred, target, "psnr")
    mse = (pred.float() - target.float()).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(max_val**2 / mse)


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian; its outer product with itself is TF's ``_fspecial_gauss`` (a softmax
    over the summed squared offsets factorises into two normalised 1-D Gaussians)."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    return torch.softmax(-0.5 * coords.square() / sigma**2, dim=0)


def _gaussian_filter(x: Tensor, window: Tensor) -> Tensor:
    """Depthwise separable VALID filtering of ``(B, C, H, W)`` -> ``(B, C, H-k+1, W-k+1)``."""
    channels, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)


def ssim(pred: Tensor, target: Tensor, max_val: float = 1.0) -> Tensor:
    """Per-image SSIM with ``tf.image.ssim``'s defaults: 11x11 Gaussian window (sigma 1.5), k1 0.01,
    k2 0.03, VALID filtering (no padding), the SSIM map averaged over H, W, then over channels.
    Returns float32 ``(B,)``; 1.0 for identical images. H and W must be at least 11."""
    _check_pair(pred, target, "ssim")
    if min(pred.shape[-2:]) < SSIM_FILTER_SIZE:
        raise ValueError(
            f"ssim: images must be at least {SSIM_FILTER_SIZE}x{SSIM_FILTER_SIZE} (the Gaussian window), "
            f"got {pred.shape[-2]}x{pred.shape[-1]}"
        )
    x, y = pred.float(), target.float()
    window = _gaussian_1d(SSIM_FILTER_SIZE, SSIM_FILTER_SIGMA, x.device)
    c1 = (SSIM_K1 * max_val) ** 2
    c2 = (SSIM_K2 * max_val) ** 2
    # Same algebra as TF's _ssim_helper, so float32 rounding behaves alike.
    mu_x, mu_y = _gaussian_filter(x, window), _gaussian_filter(y, window)
    num0 = 2.0 * mu_x * mu_y
    den0 = mu_x.square() + mu_y.square()
    luminance = (num0 + c1) / (den0 + c1)
    num1 = 2.0 * _gaussian_filter(x * y, window)
    den1 = _gaussian_filter(x.square() + y.square(), window)
    contrast_structure = (num1 - num0 + c2) / (den1 - den0 + c2)
    return (luminance * contrast_structure).mean(dim=(2, 3)).mean(dim=1)


def bicubic_upsample(x: Tensor, scale: int = 4) -> Tensor:
    """The SR baseline: bicubic ``scale``-x upsampling of ``(B, C, H, W)`` images in ``[0, 1]``
    (PyTorch's kernel, a=-0.75, align_corners=False, no antialias), computed in float32 and clamped
    to ``[0, 1]`` because bicubic overshoots at edges. Returns float32 ``(B, C, scale*H, scale*W)``."""
    if x.dim() != 4:
        raise ValueError(f"bicubic_upsample: expected (B, C, H, W), got shape {tuple(x.shape)}")
    up = F.interpolate(x.float(), scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
    return up.clamp(0.0, 1.0)


ReduceFn = Callable[[Tensor], Tensor]


class MetricAccumulator:
    """Per-image metric sums and counts, averaged exactly across ranks.

    Every rank declares the same ``names`` (any hashable keys, e.g. ``("model", "sr", "psnr")``) up front,
    so all ranks send tensors of one length even when one evaluated no image at all (uneven shards); the
    mean is ``sum of sums / sum of counts``, never a mean of per-rank means. Sums are float64 so thousands
    of images add up without float32 drift.
    """

    def __init__(self, names: list[Hashable] | tuple[Hashable, ...]) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"MetricAccumulator: need distinct metric names, got {list(names)}")
        self._names = tuple(names)
        self._sums = dict.fromkeys(self._names, 0.0)
        self._counts = dict.fromkeys(self._names, 0)

    def add(self, name: Hashable, per_image_values: Tensor) -> None:
        """Add a 1-D tensor of per-image values (e.g. ``psnr(pred, target)``) to metric ``name``."""
        if name not in self._sums:
            raise KeyError(f"MetricAccumulator: unknown metric {name!r}; declared: {list(self._names)}")
        if per_image_values.dim() != 1:
            raise ValueError(
                f"MetricAccumulator.add({name!r}): expected per-image values of shape (B,), "
                f"got {tuple(per_image_values.shape)}"
            )
        self._sums[name] += per_image_values.detach().double().sum().item()
        self._counts[name] += per_image_values.numel()

    def reduce_with_counts(
        self, reduce_fn: ReduceFn = lambda t: t, device: torch.device | str = "cpu"
    ) -> tuple[dict[Hashable, float], dict[Hashable, int]]:
        """Sum over ranks with ONE collective, then divide. ``reduce_fn`` takes and returns a 1-D
        float64 tensor placed on ``device`` (NCCL needs CUDA tensors), e.g.
        ``lambda t: accelerator.reduce(t, "sum")``; the identity for a single process.
        Returns (means, image counts). Every rank must call it (it is a collective)."""
        local = [v for name in self._names for v in (self._sums[name], float(self._counts[name]))]
        totals = reduce_fn(torch.tensor(local, dtype=torch.float64, device=device)).cpu().tolist()
        means, counts = {}, {}
        for i, name in enumerate(self._names):
            total, count = totals[2 * i], int(totals[2 * i + 1])
            if count == 0:
                raise ValueError(f"metric {name!r}: no image was evaluated on any rank; is the split empty?")
            means[name], counts[name] = total / count, count
        return means, counts

    def reduce(self, reduce_fn: ReduceFn = lambda t: t, device: torch.device | str = "cpu") -> dict[Hashable, float]:
        """Means over all images of all ranks; see ``reduce_with_counts``."""
        return self.reduce_with_counts(reduce_fn, device)[0]

