"""Building blocks shared by the four networks: instance norm, conv blocks, upsampling blocks.

Conventions of every block here: NCHW float tensors (any memory format, channels_last included),
shapes in comments are at a 224x224 network input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

SIZE_MULTIPLE = 32
"""Input sides must be multiples of this: the ResNet34 encoder halves the size five times."""

OUT_ACTIVATIONS = ("sigmoid", "identity")


class InstanceNorm2d(nn.Module):
    """Instance normalisation with a learned per-channel scale and offset.

    The same function as ``torch.nn.InstanceNorm2d(C, affine=True, eps=1e-5)`` (biased variance
    over H and W of each image and channel). eps is PyTorch's 1e-5; tfa's
    ``InstanceNormalization`` of the brief uses 1e-3, which only matters for near-constant
    feature maps.

    Written as plain reductions rather than ``F.instance_norm``: that one reshapes to
    ``batch_norm``, which drops channels_last and keeps Inductor from fusing the norm with the
    following GELU. Statistics and the affine map run in float32 (bf16 sums over 50k pixels lose
    digits); the result has the input's dtype, so under autocast it stays bf16.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)  # (B, C, 1, 1)
        # One fused multiply-add on the full tensor; autograd then keeps a single full-size
        # tensor (xf) for backward instead of the normalised intermediate as well.
        scale = torch.rsqrt(var + self.eps) * self.weight.float().view(1, -1, 1, 1)
        shift = self.bias.float().view(1, -1, 1, 1) - mean * scale
        return (xf * scale + shift).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Conv 3x3 (same padding) -> InstanceNorm -> GELU: the brief's ``conv_block(filters)``.

    The conv has no bias: the instance norm right after subtracts every per-channel constant.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        InstanceNorm2d(out_channels),
        nn.GELU(),
    )


class UpBlock(nn.Module):
    """ConvTranspose 2x2 stride 2 -> (concat skip) -> ``convs`` x conv_block, all ``out_channels`` wide.

    With ``skip_channels > 0`` this is the brief's ``upsample_concatenation_block(x, skip, f)``
    and ``forward(x, skip)`` requires a skip of twice x's size; with 0 it is p2's plain
    upsampling block and ``forward(x)`` takes no skip.
    """

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0, convs: int = 1) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        widths = [out_channels + skip_channels] + [out_channels] * convs
        self.convs = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths, widths[1:])))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        x = self.up(x)  # (B, out, 2H, 2W)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (B, out + skip, 2H, 2W)
        return self.convs(x)


class OutputActivation(nn.Module):
    """Maps a 3-channel logit image to the output image, always in float32.

    Computed in float32 even under bf16 autocast: it is only 3 channels, and bf16's 8-bit
    mantissa would quantise [0, 1] outputs more coarsely than 8-bit images, costing PSNR.
    """

    def __init__(self, name: str = "sigmoid") -> None:
        super().__init__()
        if name not in OUT_ACTIVATIONS:
            raise ValueError(f"out_activation={name!r} is not one of {OUT_ACTIVATIONS}")
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        return torch.sigmoid(x) if self.name == "sigmoid" else x

    def extra_repr(self) -> str:
        return self.name


def check_input_size(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is (B, 3, H, W) with H and W multiples of 32.

    Plain Python ints from ``x.shape``: under torch.compile this becomes a shape guard, not a
    graph break.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"input shape {tuple(x.shape)}: expected (B, 3, H, W) RGB images in [0, 1]")
    h, w = x.shape[-2], x.shape[-1]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(
            f"input H x W = {h} x {w}: sides must be multiples of {SIZE_MULTIPLE}; "
            "pad the image (demakeup predict does this)"
        )


def maybe_checkpoint(fn: Callable[..., Tensor], *args: Tensor | None, enabled: bool) -> Tensor:
    """``fn(*args)``, recomputed during backward instead of storing its activations when ``enabled``.

    Non-reentrant checkpointing: works with DDP, torch.compile and inputs that need no grad.
    Skipped when autograd is off (inference), where there is nothing to save.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)

