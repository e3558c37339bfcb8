"""Building blocks shared by the four networks: instance norm, conv blocks, upsampling blocks, SR head.

Conventions of every block here: NCHW float tensors (any memory format, channels_last included),
shapes in comments are at a 224x224 network input.

Two blocks have several formulations of the same function, for speed (docs/performance.md has
the numbers):

    block        class           choices (the first is the default)
    norm         InstanceNorm2d  auto, native, reductions
    sr_head      SRHead          composed, layered

A module takes its formulation when it is built: its ``impl`` argument, else the defaults that
``implementation(...)`` sets (the benchmark's way of comparing them), else the first choice. Nothing
outside the code chooses one: no environment variable changes a run's numerics without a record.
Parameters and state dicts are the same whatever the formulation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from demakeup_dist.choices import SIZE_MULTIPLE

OUT_ACTIVATIONS = ("sigmoid", "identity")
NORM_IMPLS = ("auto", "native", "reductions")
SR_HEAD_IMPLS = ("composed", "layered")
_CHOICES = {"norm": NORM_IMPLS, "sr_head": SR_HEAD_IMPLS}
_overrides: dict[str, str] = {}


def default_impl(block: str) -> str:
    """The formulation a new ``block`` ("norm" or "sr_head") takes: see the module docstring."""
    return _overrides.get(block, _CHOICES[block][0])


@contextlib.contextmanager
def implementation(*, norm: str | None = None, sr_head: str | None = None) -> Iterator[None]:
    """Modules built inside the ``with`` take these formulations (None: keep the current default)."""
    chosen = {k: v for k, v in (("norm", norm), ("sr_head", sr_head)) if v is not None}
    for block, value in chosen.items():
        if value not in _CHOICES[block]:
            raise ValueError(f"{block}={value!r}: choose one of {', '.join(_CHOICES[block])}")
    saved = dict(_overrides)
    _overrides.update(chosen)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


class InstanceNorm2d(nn.Module):
    """Instance normalisation with a learned per-channel scale and offset.

    The same function as ``torch.nn.InstanceNorm2d(C, affine=True, eps=1e-5)`` (biased variance
    over H and W of each image and channel). eps is PyTorch's 1e-5; tfa's
    ``InstanceNormalization`` of the brief uses 1e-3, which only matters for near-constant
    feature maps. The output has the input's dtype (bf16 under autocast) and memory format.

    Formulations (``impl``, default from ``default_impl("norm")``):

    - "reductions": ``var_mean`` over (H, W) in float32 and one multiply-add. Under torch.compile,
      Inductor fuses it with the following GELU / residual add and keeps channels_last;
      ``F.instance_norm`` instead reshapes to ``batch_norm``, which drops channels_last and
      blocks that fusion. In eager mode it is several separate kernels and autograd keeps a
      float32 copy of a bf16 input.
    - "native": ``F.instance_norm`` (ATen / cuDNN batch-norm kernels), the fastest in eager mode,
      saving only the input in its own dtype; the result is put back in channels_last.
    - "auto": "reductions" while torch.compile traces, "native" in eager mode.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, impl: str | None = None) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.impl = impl or default_impl("norm")
        if self.impl not in NORM_IMPLS:
            raise ValueError(f"InstanceNorm2d impl={self.impl!r}: choose one of {', '.join(NORM_IMPLS)}")
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        native = self.impl == "native" or (self.impl == "auto" and not torch.compiler.is_compiling())
        # F.instance_norm refuses a single pixel (the 1/32 bridge of a 32 px input); the
        # reductions give the same answer there: the offset.
        return self._native(x) if native and x.shape[-1] * x.shape[-2] > 1 else self._reductions(x)

    def _reductions(self, x: Tensor) -> Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)  # (B, C, 1, 1)
        # One fused multiply-add on the full tensor; autograd then keeps a single full-size
        # tensor (xf) for backward instead of the normalised intermediate as well.
        scale = torch.rsqrt(var + self.eps) * self.weight.float().view(1, -1, 1, 1)
        shift = self.bias.float().view(1, -1, 1, 1) - mean * scale
        return (xf * scale + shift).to(x.dtype)

    def _native(self, x: Tensor) -> Tensor:
        y = F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # instance_norm returns NCHW; the next conv would convert back anyway, but here the
            # GELU in between runs channels_last too and callers see the layout they passed in.
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, impl={self.impl}"


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


class SRHead(nn.Sequential):
    """The 4x SR head: ConvTranspose 2x2 s2 (c1) -> ConvTranspose 2x2 s2 (c2) -> Conv 1x1 (out), as listed.

    ``forward(y)``: (B, in, H, W) -> (B, out, 4H, 4W) logits. There is no nonlinearity between the
    layers, so the head is one linear map from each input pixel to a 4x4 output patch. With
    ``impl="composed"`` that map's weights are computed from the three layers' parameters at every
    call (a few thousand numbers, autograd passes gradients back to the three layers) and applied
    as Conv 1x1 (in -> 16 * out) + ``pixel_shuffle(4)``: the same function, parameters, state
    dict and gradients as ``impl="layered"`` (the three layers one after the other), without the
    (B, c1, 2H, 2W) and (B, c2, 4H, 4W) intermediates (2.5 GB at batch 64, 224 px, bf16) and
    with ~14x fewer FLOPs.
    """

    def __init__(self, in_channels: int, head_channels: Sequence[int] = (32, 16), out_channels: int = 3,
                 impl: str | None = None) -> None:
        c1, c2 = head_channels
        super().__init__(
            nn.ConvTranspose2d(in_channels, c1, 2, stride=2),  # (B, 32, 448, 448)
            nn.ConvTranspose2d(c1, c2, 2, stride=2),  # (B, 16, 896, 896)
            nn.Conv2d(c2, out_channels, 1),  # (B, 3, 896, 896)
        )
        self.impl = impl or default_impl("sr_head")
        if self.impl not in SR_HEAD_IMPLS:
            raise ValueError(f"SRHead impl={self.impl!r}: choose one of {', '.join(SR_HEAD_IMPLS)}")

    def forward(self, y: Tensor) -> Tensor:
        if self.impl == "layered":
            return super().forward(y)
        weight, bias = self.composed()
        # y's dtype, as the layered head's weights would be: bf16 under autocast or for a bf16 model.
        return F.pixel_shuffle(F.conv2d(y, weight.to(y.dtype), bias.to(y.dtype)), 4)  # (B, out, 4H, 4W)

    def composed(self) -> tuple[Tensor, Tensor]:
        """(weight (16 * out, in, 1, 1), bias (16 * out,)) of the Conv 1x1 that ``pixel_shuffle(4)`` unfolds.

        Output channel q * 16 + 4 r + s is output pixel (r, s) of channel q's 4x4 patch, with
        r = 2a + x: a is the first transposed conv's kernel row, x the second's (same for columns).
        """
        up1, up2, proj = self
        w1, w2, w3 = up1.weight, up2.weight, proj.weight[:, :, 0, 0]  # (in, c1, 2, 2), (c1, c2, 2, 2), (out, c2)
        # float32 whatever autocast says: these are weights, rounded to bf16 once by the conv.
        with _autocast_off(w1.device.type):
            w1, w2, w3 = w1.float(), w2.float(), w3.float()
            kernel = torch.einsum("koac,opxz,qp->qaxczk", w1, w2, w3)  # (out, 2, 2, 2, 2, in)
            # A patch pixel's bias depends only on the second layer's kernel position (x, z).
            inner = up2.bias.float().view(-1, 1, 1) + torch.einsum("o,opxz->pxz", up1.bias.float(), w2)
            bias = proj.bias.float().view(-1, 1, 1) + torch.einsum("qp,pxz->qxz", w3, inner)  # (out, 2, 2)
        weight = kernel.reshape(-1, kernel.shape[-1], 1, 1)
        return weight, bias.repeat(1, 2, 2).reshape(-1)  # (out, 4, 4): row r uses x = r % 2


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()  # e.g. the meta device of `demakeup models`: no autocast there


# Inputs are clamped to [eps, 1 - eps] before the logit: 0 and 255 pixels would otherwise be +-inf.
RESIDUAL_EPS = 1e-3


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

    def forward(self, x: Tensor, base: Tensor | None = None) -> Tensor:
        """``base`` (B, 3, H, W) in [0, 1], when given, is added in logit space: the network then
        predicts a correction of ``base`` (the global residual of ``residual=True`` networks)."""
        x = x.float()
        if base is not None:
            base = base.float()
            x = x + (torch.logit(base, eps=RESIDUAL_EPS) if self.name == "sigmoid" else base)
        return torch.sigmoid(x) if self.name == "sigmoid" else x

    def extra_repr(self) -> str:
        return self.name


def zero_last_conv(head: nn.Module) -> None:
    """Start a residual head at "no correction", so the untrained network outputs its input."""
    last = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


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

