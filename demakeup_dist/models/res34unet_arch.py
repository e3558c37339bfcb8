"""U-Nets on the ResNet34 encoder: p2 (no skips), p3 (skips), p4 (skips + SR head). SPEC section 3.

One class; the problems differ only by the constructor flags ``skips`` and ``sr_head``
(``build_model("p2" | "p3" | "p4")`` fixes them). Shapes in comments are at a 224x224 input with
the default ``decoder_channels=(256, 128, 64, 32, 16)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from demakeup_dist.choices import TASKS
from demakeup_dist.metrics import bicubic_upsample

from demakeup_dist.models.layers import (
    OutputActivation, SRHead, UpBlock, check_input_size, conv_block, maybe_checkpoint, zero_last_conv,
)
from demakeup_dist.models.resnet34_arch import ResNet34Encoder

DECODER_STAGES = 5
"""Upsampling stages from the 1/32 bridge back to full resolution."""


class UNetDecoder(nn.Module):
    """Five UpBlocks from the 1/32 bridge to full resolution.

    ``forward(bridge, skips)``: ``skips`` highest resolution first (full-res input conv, conv1,
    conv2_3, conv3_4, conv4_6), consumed lowest resolution first; an empty list for p2, whose
    blocks then see only the upsampled bridge. ``checkpointed``: recompute each block in backward.
    """

    def __init__(
        self,
        bridge_channels: int,
        decoder_channels: Sequence[int],
        skip_channels: Sequence[int],
        checkpointed: bool = False,
    ) -> None:
        super().__init__()
        widths = (bridge_channels, *decoder_channels)
        skip_low_first = tuple(reversed(skip_channels)) or (0,) * len(decoder_channels)
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i + 1], skip_low_first[i]) for i in range(len(decoder_channels))
        )
        self.checkpointed = checkpointed

    def forward(self, bridge: Tensor, skips: Sequence[Tensor]) -> Tensor:
        x = bridge  # (B, 512, 7, 7)
        skip_low_first = list(reversed(skips)) or [None] * len(self.blocks)
        for block, skip in zip(self.blocks, skip_low_first):
            x = maybe_checkpoint(block, x, skip, enabled=self.checkpointed)  # (B, 256, 14, 14) ... (B, 16, 224, 224)
        return x  # (B, 16, 224, 224)


class Res34UNet(nn.Module):
    """ResNet34-encoder U-Net (p2, p3, p4 of SPEC 3).

    forward(x): x float (B, 3, H, W) in [0, 1], H and W multiples of 32 (else ValueError). Returns
    ``{"demakeup": (B, 3, H, W)}`` and, with ``sr_head``, ``"sr": (B, 3, 4H, 4W)``; float32 in
    [0, 1] (sigmoid) even under bf16 autocast.

    Args:
        skips: concatenate encoder features into the decoder (p3, p4) or not (p2).
        sr_head: p4's split after the last upsampling block into a de-makeup head
            (conv_block(32) -> conv_block(16) -> Conv1x1(3)) and a 4x SR head.
        decoder_channels: width of each of the 5 upsampling stages (1/16 ... 1/1). SPEC: halve at
            each upsampling, 256, 128, 64, 32, 16.
        input_skip_channels: width of the full-resolution skip, Conv3x3 on the input image (skips only).
        head_channels: widths of both p4 heads' two layers (sr_head only).
        out_activation: "sigmoid" (outputs in [0, 1]) or "identity" (raw values).
        residual: not in the brief. Add the input (in logit space; for SR its bicubic 4x) to each head's
            output, heads starting at zero. InstanceNorm removes every feature map's per-image mean and
            scale, so the brief's networks can only recover the input's absolute colour through the
            zero padding at the borders; measured at demo scale this left p1-p4 below the identity
            baseline, while a residual network starts at it (docs/results.md).
        grad_checkpointing: recompute in backward instead of storing: the decoder blocks, and the
            SR head when there is one (its 896x896 output).
        checkpoint_decoder: recompute the decoder blocks (implied by grad_checkpointing).
    """

    def __init__(
        self,
        *,
        skips: bool = True,
        sr_head: bool = False,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        input_skip_channels: int = 64,
        head_channels: Sequence[int] = (32, 16),
        out_activation: str = "sigmoid",
        residual: bool = False,
        grad_checkpointing: bool = False,
        checkpoint_decoder: bool = False,
    ) -> None:
        super().__init__()
        decoder_channels = _positive_ints("decoder_channels", decoder_channels, DECODER_STAGES)
        head_channels = _positive_ints("head_channels", head_channels, 2)
        if not (isinstance(input_skip_channels, int) and input_skip_channels > 0):
            raise ValueError(f"input_skip_channels={input_skip_channels!r}: expected a positive integer")
        self.encoder = ResNet34Encoder()
        self.input_skip = nn.Conv2d(3, input_skip_channels, 3, padding=1) if skips else None
        skip_channels = (input_skip_channels, *self.encoder.out_channels[:-1]) if skips else ()
        self.decoder = UNetDecoder(
            self.encoder.out_channels[-1],
            decoder_channels,
            skip_channels,
            checkpointed=checkpoint_decoder or grad_checkpointing,
        )
        last = decoder_channels[-1]
        if sr_head:
            self.demakeup_head = nn.Sequential(
                conv_block(last, head_channels[0]),  # (B, 32, 224, 224)
                conv_block(head_channels[0], head_channels[1]),  # (B, 16, 224, 224)
                nn.Conv2d(head_channels[1], 3, 1),  # (B, 3, 224, 224)
            )
            # Two ConvTranspose 2x2 s2 then Conv1x1 to 3 channels, exactly as the hint lists; the
            # head is linear, which SRHead uses to skip its 448 / 896 px intermediates (layers.py).
            self.sr_head: nn.Sequential | None = SRHead(last, head_channels)
        else:
            self.demakeup_head = nn.Sequential(nn.Conv2d(last, 3, 1))  # (B, 3, 224, 224)
            self.sr_head = None
        self.out_activation = OutputActivation(out_activation)
        self.checkpoint_sr = grad_checkpointing and sr_head
        self.residual = residual
        if residual:
            for head in (self.demakeup_head, self.sr_head):
                if head is not None:
                    zero_last_conv(head)

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.sr_head is not None else TASKS[:1]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_input_size(x)
        features = self.encoder(x)  # conv1 ... conv5_3, see resnet34_arch
        skips = []
        if self.input_skip is not None:
            skips = [self.input_skip(x), *features[:-1]]  # (B, 64, 224, 224), conv1 ... conv4_6
        y = self.decoder(features[-1], skips)  # (B, 16, 224, 224)
        base = x if self.residual else None
        out = {"demakeup": self.out_activation(self.demakeup_head(y), base)}  # (B, 3, 224, 224)
        if self.sr_head is not None:
            sr = maybe_checkpoint(self._sr_forward, y, x, enabled=self.checkpoint_sr)
            out["sr"] = sr  # (B, 3, 896, 896)
        return out

    def _sr_forward(self, y: Tensor, x: Tensor) -> Tensor:
        # The output activation is part of the recomputed region: with checkpointing the head
        # keeps no 896x896 tensor of its own for backward.
        base = bicubic_upsample(x, scale=4) if self.residual else None  # (B, 3, 896, 896)
        return self.out_activation(self.sr_head(y), base)


def _positive_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    """``values`` as a tuple (YAML gives lists), checked: ``length`` positive ints."""
    values = tuple(values)
    if len(values) != length or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name}={values}: expected {length} positive integers")
    return values
