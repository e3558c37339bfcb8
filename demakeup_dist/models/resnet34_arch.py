"""ResNet34 encoder with GELU + InstanceNorm, built from scratch (SPEC section 3, the brief's hint).

Contract of ``ResNet34Encoder.forward(x)``, x float (B, 3, H, W) with H, W multiples of 32; a list of
five feature maps, highest resolution first (shapes at 224x224):

    name      index  channels  size   shape at 224
    conv1       0       64     1/2    (B,  64, 112, 112)  stem conv 7x7 s2 -> IN -> GELU
    conv2_3     1       64     1/4    (B,  64,  56,  56)  after zero-pad 1 + max-pool 3x3 s2, 3 blocks
    conv3_4     2      128     1/8    (B, 128,  28,  28)  4 blocks
    conv4_6     3      256     1/16   (B, 256,  14,  14)  6 blocks
    conv5_3     4      512     1/32   (B, 512,   7,   7)  3 blocks (the U-Net bridge)

No classification head, no pretrained weights.
"""

from __future__ import annotations

from torch import Tensor, nn

from demakeup_dist.models.layers import InstanceNorm2d, conv_block

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_CHANNELS = (64, 128, 256, 512)


class ResidualBlock(nn.Module):
    """Conv3x3-IN-GELU-Conv3x3-IN, plus the shortcut, then GELU.

    ``stride=1``: the identity block (shortcut = input, channels unchanged).
    ``stride=2``: the projection block; the first conv has stride 2 and the shortcut is
    Conv1x1 stride 2 -> IN -> GELU. The hint puts a GELU on the projection shortcut too ("Conv2D
    that also uses InstanceNorm and Gelu"), unlike torchvision's ResNet; we follow the hint.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_block(in_channels, out_channels, stride=stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            InstanceNorm2d(out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                InstanceNorm2d(out_channels),
                nn.GELU(),
            )
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))  # (B, out, H/stride, W/stride)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [ResidualBlock(in_channels, out_channels, stride)]
    layers += [ResidualBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet34Encoder(nn.Module):
    """ResNet34 (3, 4, 6, 3 basic blocks; 64, 128, 256, 512 filters) returning 5 feature maps.

    See the module docstring for the exact output contract. Convolutions followed by an
    instance norm have no bias (the norm removes it).
    """

    out_channels: tuple[int, ...] = (64, *STAGE_CHANNELS)

    def __init__(self) -> None:
        super().__init__()
        # Conv padding=3 is the same function as the hint's ZeroPadding2D(3) + unpadded conv.
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            InstanceNorm2d(64),
            nn.GELU(),
        )
        # Zero padding (not MaxPool2d(padding=1), which pads with -inf): GELU outputs can be
        # negative, so padding with zeros changes border maxima, and the hint pads with zeros.
        self.pool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))
        widths = (64, *STAGE_CHANNELS)
        self.stages = nn.ModuleList(
            _stage(widths[i], widths[i + 1], STAGE_BLOCKS[i], stride=1 if i == 0 else 2)
            for i in range(len(STAGE_BLOCKS))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # conv1: (B, 64, 112, 112)
        features = [x]
        x = self.pool(x)  # (B, 64, 56, 56)
        for stage in self.stages:
            x = stage(x)  # conv2_3 (B, 64, 56, 56) ... conv5_3 (B, 512, 7, 7)
            features.append(x)
        return features
