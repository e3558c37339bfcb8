"""De-make-up real photos of any size and format with a trained model.

Pixel pipeline: decode to RGB uint8 exactly as `shard` does for training (`codec.to_rgb`: EXIF rotation
applied, transparency on white; at most `MAX_PIXELS`) -> float32 in [0, 1],
``(1, 3, H, W)`` -> pad bottom/right to a multiple of 32 (the networks halve the size five times) ->
model -> crop back to ``H x W`` (``4H x 4W`` for the SR head) -> uint8 PNG (`pictures.to_uint8_image`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from tqdm import tqdm

from demakeup_dist.atomic import atomic_path
from demakeup_dist.choices import TASKS
from demakeup_dist.data.codec import UnsupportedImage, to_rgb
from demakeup_dist.data.loader import unit_float
from demakeup_dist.pictures import to_uint8_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
_SHOW_PROGRESS_ABOVE = 3
# Largest photo predict takes: the full-resolution activations of a 4096 x 4096 input already need
# about 4 GB per feature map of 64 channels (float32), and p4's 4x output is 16384 x 16384.
MAX_PIXELS = 4096 * 4096


def _check_size(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than predict takes "
            f"({MAX_PIXELS / 1e6:.1f} MP, e.g. 4096x4096): downscale or crop it first"
        )


def load_photo(path: Path) -> np.ndarray:
    """Decode an image file to uint8 ``(H, W, 3)`` RGB exactly as `shard` reads it for training
    (``codec.to_rgb``: displayed orientation, transparency on white, 16-bit scaled). Raises
    ``ValueError`` naming the file when it is not a readable image or too large (``MAX_PIXELS``),
    ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            _check_size(path, img.size)
            img.load()  # the full decode, so that truncation shows here
            return np.array(to_rgb(img), dtype=np.uint8)  # a writable copy, unlike np.asarray
    except UnsupportedImage as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"{path}: not a readable image ({exc}); pass PNG, JPEG, WebP, BMP or TIFF photos"
        ) from exc


def photo_to_tensor(photo: np.ndarray) -> Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(1, 3, H, W)`` in [0, 1], the training data's convention."""
    return unit_float(torch.tensor(photo, dtype=torch.uint8).permute(2, 0, 1)[None])


def pad_to_multiple(x: Tensor, m: int = 32) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` at the bottom and right to sides divisible by ``m``; returns the padded
    tensor and the original ``(H, W)`` for ``crop_back``. Reflection keeps the border statistics
    natural for the network; images too small to reflect (pad >= side) are padded by replication."""
    if m < 1:
        raise ValueError(f"pad_to_multiple: m must be >= 1, got {m}")
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % m, -w % m
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_back(y: Tensor, size: tuple[int, int], scale: int = 1) -> Tensor:
    """Undo ``pad_to_multiple`` on an output ``scale`` times the input size."""
    h, w = size
    return y[..., : h * scale, : w * scale]


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Expand directories (not recursively) to their image files, sorted by name. Files in a
    directory whose suffix is not an image format are logged as skipped; named files are kept
    whatever their suffix, so a wrong one is reported by ``load_photo``."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            entries = sorted(p for p in item.iterdir() if p.is_file())
            images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped = [p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
            if skipped:
                log.warning("%s: skipping %d non-image file(s): %s", item, len(skipped), ", ".join(skipped))
            files += images
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    if not files:
        raise ValueError(f"no image files found in {', '.join(map(str, inputs)) or 'the (empty) input list'}")
    return files


def _validate(files: list[Path]) -> None:
    """Decode every file and check output names are unique, reporting ALL problems in one error."""
    problems = []
    for f in files:
        try:
            load_photo(f)
        except ValueError as exc:
            problems.append(str(exc))
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    problems += [
        f"{', '.join(map(str, same))}: same name stem {stem!r}, the outputs would overwrite each other"
        for stem, same in by_stem.items() if len(same) > 1
    ]
    if problems:
        raise ValueError("cannot predict; fix or remove these inputs first:\n  " + "\n  ".join(problems))


def _batches(files: list[Path], batch_size: int) -> Iterator[list[tuple[Path, Tensor, tuple[int, int]]]]:
    """Consecutive files whose padded shapes agree, at most ``batch_size`` at a time."""
    batch: list[tuple[Path, Tensor, tuple[int, int]]] = []
    for f in files:
        padded, size = pad_to_multiple(photo_to_tensor(load_photo(f)))
        if batch and (len(batch) == batch_size or batch[0][1].shape != padded.shape):
            yield batch
            batch = []
        batch.append((f, padded, size))
    if batch:
        yield batch


def _save_png(image: Tensor, path: Path) -> None:
    """Write float ``(3, H, W)`` in [0, 1] as an 8-bit PNG, atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8_image(image)).save(tmp, format="PNG")


def _output_scale(task: str, out: Tensor, x: Tensor) -> int:
    """Integer upscaling factor of ``out`` over ``x``; a wrong output shape is a model bug."""
    scale = out.shape[-1] // x.shape[-1]
    expected = (x.shape[0], 3, x.shape[-2] * scale, x.shape[-1] * scale)
    if scale < 1 or tuple(out.shape) != expected:
        raise ValueError(
            f"model output {task!r} has shape {tuple(out.shape)}; expected (B, 3, k*H, k*W) for input {tuple(x.shape)}"
        )
    return scale


@torch.inference_mode()
def predict_files(
    model: nn.Module,
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    tasks: Sequence[str] | None = None,
    batch_size: int = 1,
) -> list[Path]:
    """Run ``model`` on image files and/or directories; write ``OUT/<stem>_demakeup.png`` and, for the
    SR task, ``OUT/<stem>_sr4x.png`` (the factor is read from the output). Returns the written paths.

    ``model(x)`` takes float ``(B, 3, H, W)`` in [0, 1] with H, W multiples of 32 and returns a dict
    ``{"demakeup": (B, 3, H, W)[, "sr": (B, 3, 4H, 4W)]}`` in [0, 1]. ``tasks`` defaults to
    ``model.tasks`` (or ``("demakeup",)``). The model is moved to ``device`` and put in eval mode.
    Every input is decoded once before anything is written, so a bad file fails the whole call with
    one error listing every problem instead of leaving a partial output directory behind; the price
    is decoding each photo twice.
    """
    tasks = tuple(tasks or getattr(model, "tasks", ("demakeup",)))
    if unknown := [t for t in tasks if t not in TASKS]:
        raise ValueError(f"predict: unknown task(s) {unknown}; choose among {TASKS}")
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    files = collect_inputs(inputs)
    _validate(files)
    model.to(device).eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tqdm(total=len(files), unit="img", desc="predict", disable=len(files) <= _SHOW_PROGRESS_ABOVE) as bar:
        for batch in _batches(files, batch_size):
            x = torch.cat([padded for _, padded, _ in batch]).to(device=device, dtype=dtype)
            outputs = model(x)
            for task in tasks:
                if task not in outputs:
                    raise ValueError(f"model returned {sorted(outputs)}, not the requested task {task!r}")
                scale = _output_scale(task, outputs[task], x)
                suffix = "demakeup" if task == "demakeup" else f"sr{scale}x"
                for (f, _, size), y in zip(batch, outputs[task]):
                    path = out_dir / f"{f.stem}_{suffix}.png"
                    _save_png(crop_back(y, size, scale), path)
                    written.append(path)
            bar.update(len(batch))
    return written
