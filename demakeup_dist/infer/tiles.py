"""Whole-image inference of a photo of any size in bounded memory: overlapping tiles, blended seams.

A side longer than `tile` is covered by tiles of `tile` px whose neighbours overlap by at least
`overlap` px (the last tile is moved back to end at the border, so it may overlap more). Across an
overlap the two tiles' outputs are mixed with linear ramps that sum to 1 (a partition of unity: no
weight image to divide by), so a seam has no step. The photo is swept one row of tiles at a time: a
band of the output, ``tile x W`` (times the task's scale), is accumulated in float32 and turned into
uint8 as soon as the next row of tiles cannot reach it.

Memory, beside the uint8 input (3 B/px) and outputs (3 B per output px): per task one float32 band
``3 x tile*k x W*k`` (12 * tile * W * k^2 bytes), plus the network's activations for `batch_size` tiles
of ``tile x tile``. A photo no longer than `tile` on either side runs in one piece, exactly as
untiled inference. InstanceNorm makes a tile's output depend on the tile's content, so tiled and
untiled outputs differ a little (measured in README.md, "Real photos").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from demakeup_dist.choices import SIZE_MULTIPLE
from demakeup_dist.data.loader import unit_float
from demakeup_dist.infer import OVERLAP, TILE
from demakeup_dist.infer.runner import Runner
from demakeup_dist.pictures import to_uint8_image

_SHOW_PROGRESS_ABOVE = 8  # tiles


def check_tiling(tile: int, overlap: int) -> None:
    """ValueError naming the option unless `tile` is a positive multiple of 32 and 0 <= overlap <= tile / 2
    (more overlap would let three tiles share a pixel, which the ramps do not blend)."""
    if tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE:
        raise ValueError(f"--tile {tile}: must be a positive multiple of {SIZE_MULTIPLE}, e.g. {TILE}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"--overlap {overlap}: must be between 0 and half the tile ({tile // 2})")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles covering ``[0, length)``: one tile (the whole side) when it fits."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1  # ceil division
    return [i * stride for i in range(count - 1)] + [length - tile]


def tile_weights(starts: list[int], tile: int, scale: int) -> list[Tensor]:
    """For each tile, its 1-D blend weights over ``tile * scale`` output px: ramps up across the
    overlap with the previous tile and down across the next, so that neighbours sum to 1."""
    weights = []
    n = tile * scale
    for i, start in enumerate(starts):
        w = torch.ones(n)
        if i > 0:
            left = (starts[i - 1] + tile - start) * scale
            w[:left] = (torch.arange(left) + 0.5) / left
        if i + 1 < len(starts):
            right = (start + tile - starts[i + 1]) * scale
            w[n - right:] = 1 - (torch.arange(right) + 0.5) / right
        weights.append(w)
    return weights


def _tile(photo: np.ndarray, y: int, x: int, h: int, w: int) -> Tensor:
    """uint8 ``(H, W, 3)`` photo -> float32 ``(3, h, w)`` window at (y, x)."""
    return unit_float(torch.from_numpy(photo[y:y + h, x:x + w].copy()).permute(2, 0, 1))


class _Band:
    """One task's output, and the float32 band of it that the current row of tiles is adding to."""

    def __init__(self, scale: int, photo_hw: tuple[int, int], tile_hw: tuple[int, int],
                 starts: tuple[list[int], list[int]]) -> None:
        (height, width), (th, tw) = photo_hw, tile_hw
        self.scale = scale
        self.pixels = np.empty((height * scale, width * scale, 3), np.uint8)
        self.wy, self.wx = tile_weights(starts[0], th, scale), tile_weights(starts[1], tw, scale)
        self.band = torch.zeros(3, th * scale, width * scale)

    def add(self, r: int, c: int, x: int, image: Tensor) -> None:
        """Tile (r, c) at column x: its ``(3, k*th, k*tw)`` output, weighted, into the band."""
        k = self.scale
        weight = self.wy[r][:, None] * self.wx[c][None, :]  # (k*th, k*tw)
        self.band[:, :, x * k:x * k + image.shape[-1]] += image * weight

    def flush(self, y: int, next_y: int | None) -> None:
        """The band's rows that the next row of tiles (at `next_y`) cannot reach become uint8 output."""
        k = self.scale
        done = self.band.shape[1] if next_y is None else (next_y - y) * k
        self.pixels[y * k:y * k + done] = to_uint8_image(self.band[:, :done])
        rest = self.band.shape[1] - done
        self.band[:, :rest] = self.band[:, done:].clone()
        self.band[:, rest:] = 0


def predict_tiled(runner: Runner, photo: np.ndarray, *, tile: int = TILE, overlap: int = OVERLAP,
                  batch_size: int = 1) -> dict[str, np.ndarray]:
    """Every task's output of `runner` on uint8 ``(H, W, 3)`` `photo`, as uint8 ``(k*H, k*W, 3)``."""
    check_tiling(tile, overlap)
    height, width = photo.shape[:2]
    th, tw = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    bands: dict[str, _Band] = {}
    with tqdm(total=len(ys) * len(xs), unit="tile", desc="tiles", leave=False,
              disable=len(ys) * len(xs) <= _SHOW_PROGRESS_ABOVE) as bar:
        for r, y in enumerate(ys):
            for first in range(0, len(xs), batch_size):
                cols = range(first, min(first + batch_size, len(xs)))
                out = runner(torch.stack([_tile(photo, y, xs[c], th, tw) for c in cols]))  # (B, 3, k*th, k*tw)
                for task, images in out.items():
                    if task not in bands:
                        bands[task] = _Band(images.shape[-1] // tw, (height, width), (th, tw), (ys, xs))
                    for c, image in zip(cols, images):
                        bands[task].add(r, c, xs[c], image)
                bar.update(len(cols))
            for band in bands.values():
                band.flush(y, ys[r + 1] if r + 1 < len(ys) else None)
    return {task: band.pixels for task, band in bands.items()}
