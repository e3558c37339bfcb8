"""Pictures of images: the one float -> uint8 rule, the tile layout of the sample panels and the report's
test-image grid (labelled columns), and the report's val-PSNR-per-epoch plot.

Drawn with PIL (already a dependency): a line plot with axes and a legend is ~60 lines, not worth
matplotlib's install size on the cluster images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from demakeup_dist.models import model_tasks

LABEL_HEIGHT = 14  # px of the grid's header row holding the column names
# One colour per network (p1..p4) and for the identity line; readable on white.
COLOURS = {"p1": (31, 119, 180), "p2": (255, 127, 14), "p3": (44, 160, 44), "p4": (214, 39, 40),
           "identity": (90, 90, 90)}
PLOT_SIZE = (640, 400)
MARGIN = (56, 24, 16, 36)  # left, top, right, bottom (room for the tick labels)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) or (B, 3, H, W) in [0, 1] -> uint8 (H, W, 3) or (B, H, W, 3), clamped to [0, 1] and
    rounded half up: the one rule for every image written (predictions, sample panels, the grid)."""
    pixels = (image.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)  # the cast truncates
    return pixels.movedim(-3, -1).cpu().numpy()


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of (..., H, W) images: a 4x SR image shown at full resolution
    beside tiles of the input's size, where detail (or its absence) is visible."""
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top:top + size, left:left + size]


def tiles(columns: list[torch.Tensor], rows: int | None = None) -> np.ndarray:
    """One uint8 (rows*S, len(columns)*S, 3) picture from columns of (B, 3, S, S) images: row i holds
    image i of every column (all B rows unless `rows`)."""
    body = torch.cat([torch.cat(list(column[:rows].float()), dim=1) for column in columns], dim=2)
    return to_uint8_image(body)


def sr_models(models) -> list[str]:
    """The networks among `models` that have a 4x SR head."""
    return [name for name in models if "sr" in model_tasks(name)]


def grid_columns(models) -> list[str]:
    sr = [f"{name} SR crop" for name in sr_models(models)]
    return ["input", "target", *models, *sr, *(["HR crop"] if sr else [])]


@torch.inference_mode()
def picture_grid(run_dirs: dict[str, Path], shards: Path, rows: int = 4,
                 device: str | torch.device = "cpu") -> Image.Image:
    """The first `rows` test images: input | target | each model | [each SR model's crop | HR crop], S px tiles.

    `run_dirs`: model -> a finished run dir. Returns an RGB image of width S * columns and height
    LABEL_HEIGHT + S * rows (S: the image size), the column names in the header row.
    """
    from demakeup_dist.data.loader import eval_batches, to_float
    from demakeup_dist.weights import load_trained

    batches = eval_batches(shards, "test", batch_size=rows, with_hr=bool(sr_models(run_dirs)), num_workers=0,
                           uint8=True)
    batch = to_float(next(iter(batches)), device)
    size = batch["makeup"].shape[-1]
    columns, sr_columns = [batch["makeup"], batch["non_makeup"]], []
    for name, run_dir in run_dirs.items():
        model, _ = load_trained(run_dir, name, device)
        outputs = model(batch["makeup"])
        columns.append(outputs["demakeup"])
        if "sr" in outputs:
            sr_columns.append(centre_crop(outputs["sr"], size))
    columns += [*sr_columns, centre_crop(batch["hr"], size)] if sr_columns else []
    pixels = tiles(columns)
    grid = Image.new("RGB", (pixels.shape[1], LABEL_HEIGHT + pixels.shape[0]), "white")
    grid.paste(Image.fromarray(pixels), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(grid)
    for i, name in enumerate(grid_columns(run_dirs)):
        draw.text((i * size + 2, 1), name, fill="black")
    return grid


def psnr_plot(curves: dict[str, list[list[tuple[int, float]]]], identity: float) -> Image.Image:
    """Val PSNR (dB) against epoch: one line per run (every seed of a network in its colour), and a
    dashed horizontal line at the identity baseline. `curves`: model -> one [(epoch, psnr)] per seed."""
    points = [p for runs in curves.values() for run in runs for p in run]
    if not points:
        raise ValueError("no val PSNR recorded in any run's metrics.jsonl: nothing to plot")
    epochs = [e for e, _ in points]
    values = [v for _, v in points] + [identity]
    x0, x1 = min(epochs), max(max(epochs), min(epochs) + 1)
    y0, y1 = min(values) - 0.2, max(values) + 0.2
    (w, h), (left, top, right, bottom) = PLOT_SIZE, MARGIN

    def xy(epoch: float, psnr: float) -> tuple[float, float]:
        return (left + (epoch - x0) / (x1 - x0) * (w - left - right),
                top + (y1 - psnr) / (y1 - y0) * (h - top - bottom))

    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(5):  # y ticks
        psnr = y0 + (y1 - y0) * i / 4
        draw.text((4, xy(x0, psnr)[1] - 6), f"{psnr:.1f}", fill="black")
    for epoch in sorted(set(epochs)):
        draw.text((xy(epoch, y0)[0] - 3, h - bottom + 4), str(epoch), fill="black")
    draw.text((w // 2 - 40, h - 16), "epoch", fill="black")
    draw.text((4, 2), "val PSNR (dB)", fill="black")
    y = xy(x0, identity)[1]
    for x in range(left, w - right, 12):  # dashed identity line
        draw.line([(x, y), (min(x + 6, w - right), y)], fill=COLOURS["identity"], width=2)
    for model, runs in curves.items():
        for run in runs:
            line = [xy(e, v) for e, v in sorted(run)]
            if len(line) > 1:
                draw.line(line, fill=COLOURS.get(model, "black"), width=2)
            for px, py in line:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=COLOURS.get(model, "black"))
    for i, name in enumerate([*curves, "identity"]):  # legend, top left inside the axes
        draw.line([(left + 8, top + 10 + 14 * i), (left + 28, top + 10 + 14 * i)], fill=COLOURS.get(name, "black"),
                  width=3)
        draw.text((left + 32, top + 4 + 14 * i), name, fill="black")
    return image
