"""p1: a classic U-Net (Ronneberger et al. 2015) with GELU + InstanceNorm. SPEC section 3.

Shapes in comments are at a 224x224 input with the defaults (base_channels=32, depth=4).
"""

from __future__ import annotations

from torch import Tensor, nn

from demakeup_dist.models.layers import (
    OutputActivation, UpBlock, check_input_size, conv_block, maybe_checkpoint, zero_last_conv,
)

MAX_DEPTH = 5
"""Inputs are only required to be multiples of 32, so at most 5 halvings."""


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv_blocks (Conv3x3-IN-GELU), the U-Net's unit at every level."""
    return nn.Sequential(conv_block(in_channels, out_channels), conv_block(out_channels, out_channels))


class UNet(nn.Module):
    """Encoder of ``depth`` max-pool + double-conv levels, mirrored decoder with concat skips.

    Widths double at each level: base_channels * (1, 2, 4, ..., 2**depth) (32 ... 512 by default).
    The decoder upsamples with ConvTranspose 2x2 stride 2, like the ResNet34 U-Nets.

    forward(x): x float (B, 3, H, W) in [0, 1], H and W multiples of 32 (else ValueError). Returns
    ``{"demakeup": (B, 3, H, W)}``, float32 in [0, 1] (sigmoid) even under bf16 autocast.

    Args:
        base_channels: width of the full-resolution level.
        depth: number of 2x downsamplings (1 ... 5); depth + 1 levels.
        out_activation: "sigmoid" (outputs in [0, 1]) or "identity" (raw values).
        residual: not in the brief; add the input to the output in logit space, head starting at zero
            (see Res34UNet: InstanceNorm alone loses the input's absolute colour).
        grad_checkpointing: recompute the decoder blocks in backward instead of storing their
            activations.
    """

    tasks: tuple[str, ...] = ("demakeup",)

    def __init__(
        self,
        *,
        base_channels: int = 32,
        depth: int = 4,
        out_activation: str = "sigmoid",
        residual: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth={depth}: expected 1 ... {MAX_DEPTH} downsamplings")
        if base_channels < 1:
            raise ValueError(f"base_channels={base_channels}: expected a positive width")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = double_conv(3, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), double_conv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], skip_channels=widths[i], convs=2) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], 3, 1)
        self.out_activation = OutputActivation(out_activation)
        self.grad_checkpointing = grad_checkpointing
        self.residual = residual
        if residual:
            zero_last_conv(self.head)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_input_size(x)
        base = x if self.residual else None
        x = self.stem(x)  # (B, 32, 224, 224)
        skips = [x]
        for down in self.downs:
            x = down(x)  # (B, 64, 112, 112) ... (B, 512, 14, 14)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself, not a skip
        for up, skip in zip(self.ups, reversed(skips)):
            # (B, 256, 28, 28), (B, 128, 56, 56), ... (B, 32, 224, 224)
            x = maybe_checkpoint(up, x, skip, enabled=self.grad_checkpointing)
        return {"demakeup": self.out_activation(self.head(x), base)}  # (B, 3, 224, 224)
