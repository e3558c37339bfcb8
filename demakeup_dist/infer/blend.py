"""Face mode's pixels: cut a framed face out of a photo at the network's size, and paste the network's
output back with a feathered edge.

A crop is the square `Framing.crop` gives (reflected past the photo's border), resized to S x S (the
training size) with antialiased bicubic. What the network changes there (`change`: its output minus
its input; for SR minus the bicubic 4x of its input) is resized to the crop's size (times the task's
scale) and added to the photo (for SR: to the photo's bicubic 4x) under a mask that is 0 on the crop's
border and rises to 1 over `FEATHER` of its side (smoothstep: no kink either). Adding the change
rather than pasting the output keeps the photo's own detail finer than S px, which the network never
saw; for a face already at the training size the two are the same. The blend region is the crop
clipped to the photo: outside it the output is the input (or its bicubic 4x), bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from demakeup_dist.infer.faces import Face, Framing
from demakeup_dist.infer.photos import photo_to_tensor
from demakeup_dist.pictures import to_uint8_image

FEATHER = 0.15  # of the crop's side; the face box starts 0.22 of it in (FRAMING), so it is never faded


@dataclass(frozen=True)
class FaceCrop:
    """A face, the square around it that matches the training framing, and the part of that square
    inside the photo (the blend region). All (x0, y0, x1, y1) in photo pixels, x1, y1 exclusive."""

    face: Face
    crop: tuple[int, int, int, int]
    blend: tuple[int, int, int, int]

    @classmethod
    def frame(cls, face: Face, framing: Framing, photo_hw: tuple[int, int]) -> FaceCrop:
        x0, y0, x1, y1 = crop = framing.crop(face.box)
        height, width = photo_hw
        return cls(face, crop, (max(0, x0), max(0, y0), min(width, x1), min(height, y1)))

    def record(self) -> dict:
        return {"box": list(self.face.box), "blend": list(self.blend), "crop": list(self.crop),
                "score": self.face.score}


def cut(photo: np.ndarray, crop: tuple[int, int, int, int], size: int) -> Tensor:
    """The `crop` of uint8 ``(H, W, 3)`` `photo`, reflected where it leaves the photo, as float32
    ``(3, size, size)`` in [0, 1]."""
    height, width = photo.shape[:2]
    x0, y0, x1, y1 = crop
    inside = photo[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    return resize(photo_to_tensor(np.pad(inside, pad, mode="symmetric"))[0], size)


def resize(image: Tensor, side: int) -> Tensor:
    """float ``(3, h, w)`` -> ``(3, side, side)``, antialiased bicubic, clamped to [0, 1]."""
    out = F.interpolate(image[None], size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def change(inputs: Tensor, outputs: Tensor) -> Tensor:
    """What a network did to ``(B, 3, S, S)`` `inputs`: ``(B, 3, k*S, k*S)`` `outputs` minus the
    inputs themselves (k = 1) or their bicubic k-fold upscaling (the SR baseline)."""
    scale = outputs.shape[-1] // inputs.shape[-1]
    baseline = inputs if scale == 1 else F.interpolate(inputs, scale_factor=scale, mode="bicubic",
                                                       align_corners=False)
    return outputs - baseline


def feather_mask(side: int) -> Tensor:
    """``(side, side)`` weights: 0 at the border, 1 inside, a smoothstep ramp over FEATHER * side px."""
    ramp_px = max(1.0, FEATHER * side)
    u = torch.arange(side, dtype=torch.float32) + 0.5
    t = (torch.minimum(u, side - u) / ramp_px).clamp(0, 1)
    ramp = t * t * (3 - 2 * t)
    return ramp[:, None] * ramp[None, :]


def paste(canvas: np.ndarray, delta: Tensor, crop: FaceCrop, scale: int) -> None:
    """Add float ``(3, s, s)`` `delta` (a `change` of `crop`) to uint8 ``(k*H, k*W, 3)`` `canvas` in
    place, resized to the crop and feathered, inside the blend region only (scaled by k = `scale`)."""
    x0, y0, x1, y1 = (v * scale for v in crop.crop)
    bx0, by0, bx1, by1 = (v * scale for v in crop.blend)
    side = x1 - x0
    inside = (slice(None), slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
    grown = F.interpolate(delta[None], size=(side, side), mode="bicubic", antialias=True, align_corners=False)[0]
    base = photo_to_tensor(canvas[by0:by1, bx0:bx1])[0]  # (3, bh, bw)
    canvas[by0:by1, bx0:bx1] = to_uint8_image(base + feather_mask(side)[inside[1:]] * grown[inside])
