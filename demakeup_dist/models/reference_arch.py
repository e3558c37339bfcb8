"""The straightforward p3 / p4 the benchmark compares against: plain PyTorch modules, nothing tuned.

``nn.InstanceNorm2d(affine=True)`` + ``nn.GELU``, the SR head as its three listed layers, a bf16
sigmoid under autocast: what a user would write from the brief's hint. It is the same network as
``build_model("p3" | "p4")`` (SPEC 3): same layers, same parameter names and shapes, so
``reference.load_state_dict(ours.state_dict())`` works and both compute the same function (a test
checks it). ``forward(x)`` takes float (B, 3, H, W) in [0, 1], H and W multiples of 32, and returns
``{"demakeup": (B, 3, H, W)}`` plus, for p4, ``"sr": (B, 3, 4H, 4W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from demakeup_dist.choices import TASKS

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (filters, blocks) of ResNet34
DECODER = (256, 128, 64, 32, 16)
REFERENCE_MODELS = ("p3", "p4")


def conv_in_gelu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.InstanceNorm2d(cout, affine=True), nn.GELU())


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_in_gelu(cin, cout, stride=stride),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.InstanceNorm2d(cout, affine=True))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_in_gelu(cin, cout, 1, stride)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_in_gelu(3, 64, kernel=7, stride=2)
        self.pool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))
        stages, cin = [], 64
        for i, (cout, blocks) in enumerate(STAGES):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*(BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                                          for b in range(blocks))))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = [x]
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.convs = nn.Sequential(conv_in_gelu(cout + skip, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        widths = (512, *DECODER)
        skips = (256, 128, 64, 64, 64)  # conv4_6, conv3_4, conv2_3, conv1, the full-resolution input conv
        self.blocks = nn.ModuleList(UpBlock(widths[i], widths[i + 1], skips[i]) for i in range(len(DECODER)))

    def forward(self, x: Tensor, skips_low_first: list[Tensor]) -> Tensor:
        for block, skip in zip(self.blocks, skips_low_first):
            x = block(x, skip)
        return x


class ReferenceUNet(nn.Module):
    """p3 (``sr_head=False``) or p4 (``sr_head=True``), written the plain way."""

    def __init__(self, sr_head: bool) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.input_skip = nn.Conv2d(3, 64, 3, padding=1)
        self.decoder = Decoder()
        if sr_head:
            self.demakeup_head = nn.Sequential(conv_in_gelu(16, 32), conv_in_gelu(32, 16), nn.Conv2d(16, 3, 1))
            self.sr_head: nn.Sequential | None = nn.Sequential(
                nn.ConvTranspose2d(16, 32, 2, stride=2), nn.ConvTranspose2d(32, 16, 2, stride=2), nn.Conv2d(16, 3, 1))
        else:
            self.demakeup_head = nn.Sequential(nn.Conv2d(16, 3, 1))
            self.sr_head = None

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.sr_head is not None else TASKS[:1]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.encoder(x)
        skips = [self.input_skip(x), *features[:-1]]
        y = self.decoder(features[-1], skips[::-1])
        out = {"demakeup": torch.sigmoid(self.demakeup_head(y))}
        if self.sr_head is not None:
            out["sr"] = torch.sigmoid(self.sr_head(y))
        return out


def build_reference(name: str) -> ReferenceUNet:
    """The straightforward "p3" or "p4"; ValueError for any other name."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"the benchmark's reference implementation exists for {' and '.join(REFERENCE_MODELS)}, "
                         f"not {name!r}")
    return ReferenceUNet(sr_head=name == "p4")
