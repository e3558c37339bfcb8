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
GRID_MIN_TILE = 128  # px: a face smaller than this is zoomed until lips and eyes can be judged
CHANGE_GAIN = 4  # the difference columns: 1/4 of full scale shows as full white
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
    changes = [column for name in models for column in (name, f"{name} change x{CHANGE_GAIN}")]
    sr = [f"{name} SR crop" for name in sr_models(models)]
    return ["input", "target", f"makeup x{CHANGE_GAIN}", *changes, *sr, *(["HR crop"] if sr else [])]


def tile_scale(size: int) -> int:
    """Whole-number zoom that shows an S px face at least GRID_MIN_TILE px wide (nearest neighbour: no
    interpolation invents or hides detail)."""
    return max(1, -(-GRID_MIN_TILE // size))


def change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| amplified CHANGE_GAIN times (float in [0, 1]): where and how strongly one image differs from
    another, e.g. what a network changed in its input."""
    return ((a - b).abs() * CHANGE_GAIN).clamp(0, 1)


@torch.inference_mode()
def picture_grid(run_dirs: dict[str, Path], shards: Path, rows: int = 4, device: str | torch.device = "cpu",
                 names: list[str] | None = None, row_labels: list[str] | None = None) -> Image.Image:
    """Test images as rows, `grid_columns` as labelled columns, each tile zoomed to >= GRID_MIN_TILE px.

    Rows: the test images called `names` (in that order), else the first `rows`; `row_labels` are written
    on their input tiles (e.g. why a row was chosen). Columns: input | target | the makeup (|input -
    target|, amplified) | per network its output and what it changed (|output - input|, amplified) |
    [each SR network's centre crop | the HR crop]. `run_dirs`: model -> a finished run dir.
    """
    from demakeup_dist.data.loader import eval_batches, to_float
    from demakeup_dist.weights import load_trained

    with_hr = bool(sr_models(run_dirs))
    batch = _rows(eval_batches(shards, "test", batch_size=max(rows, 16), with_hr=with_hr, num_workers=0,
                               uint8=True), names, rows)
    batch = to_float(batch, device)
    x, size = batch["makeup"], batch["makeup"].shape[-1]
    columns, sr_columns = [x, batch["non_makeup"], change(x, batch["non_makeup"])], []
    for name, run_dir in run_dirs.items():
        model, _ = load_trained(run_dir, name, device)
        outputs = model(x)
        columns += [outputs["demakeup"], change(outputs["demakeup"].clamp(0, 1), x)]
        if "sr" in outputs:
            sr_columns.append(centre_crop(outputs["sr"], size))
    columns += [*sr_columns, centre_crop(batch["hr"], size)] if sr_columns else []
    zoom = tile_scale(size)
    pixels = tiles([column.repeat_interleave(zoom, -1).repeat_interleave(zoom, -2) for column in columns])
    tile = size * zoom
    grid = Image.new("RGB", (pixels.shape[1], LABEL_HEIGHT + pixels.shape[0]), "white")
    grid.paste(Image.fromarray(pixels), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(grid)
    for i, name in enumerate(grid_columns(run_dirs)):
        draw.text((i * tile + 2, 1), name, fill="black")
    for i, label in enumerate(row_labels or []):
        top = LABEL_HEIGHT + i * tile + tile - LABEL_HEIGHT
        draw.rectangle([0, top, tile - 1, top + LABEL_HEIGHT - 1], fill="black")
        draw.text((2, top + 1), label, fill="white")
    return grid


def _rows(batches, names: list[str] | None, rows: int) -> dict:
    """One uint8 batch of the first `rows` samples, or of the samples `names` in that order (KeyError naming a
    missing one); other samples are read and dropped, so memory holds only the chosen rows."""
    wanted, kept = (None if names is None else set(names)), []
    for batch in batches:
        for i, name in enumerate(batch["name"]):
            if wanted is None or name in wanted:
                kept.append((name, {k: v[i] for k, v in batch.items() if torch.is_tensor(v) and v.dim() == 4}))
        if wanted is None and len(kept) >= rows:
            break
    if wanted is None:
        kept = kept[:rows]
    else:
        found = dict(kept)
        missing = [n for n in names if n not in found]
        if missing:
            raise KeyError(f"test images {missing} are not in the shards")
        kept = [(n, found[n]) for n in names]
    return {key: torch.stack([sample[key] for _, sample in kept]) for key in kept[0][1]}


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
