"""Photo files in and out: decode exactly as `shard` does for training, find the inputs of a call,
write PNG / JSON outputs whole or not at all, with write failures naming the file.

Decoding: ``codec.to_rgb`` (EXIF rotation applied, transparency on white, 16-bit scaled) -> uint8
``(H, W, 3)``. Size is bounded only by Pillow's decompression-bomb guard (about 179 MP): whole-image
inference runs in tiles, so memory no longer grows with the network's activations at full size.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from demakeup_dist.atomic import atomic_path
from demakeup_dist.data.codec import UnsupportedImage, to_rgb
from demakeup_dist.data.loader import unit_float

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def load_photo(path: Path) -> np.ndarray:
    """Decode an image file to uint8 ``(H, W, 3)`` RGB exactly as `shard` reads it for training.
    Raises ``ValueError`` naming the file when it is not a readable image, ``FileNotFoundError`` when
    it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
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
    return unit_float(torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None])  # a copy: inputs may be read-only


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


@dataclass(frozen=True)
class Checked:
    """The inputs of a call: the files to process, and the unreadable ones skipped (with `skip_bad`)."""

    files: list[Path]
    skipped: list[str]


def check_inputs(files: list[Path], skip_bad: bool = False) -> Checked:
    """Decode every file and check output names are unique. Same-stem clashes always stop the call;
    unreadable files stop it too (one error listing ALL problems, before anything is written) unless
    `skip_bad`, which logs each by name and keeps the rest. Costs one extra decode per photo."""
    bad: dict[Path, str] = {}
    for f in files:
        try:
            load_photo(f)
        except ValueError as exc:
            bad[f] = str(exc)
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    clashes = [f"{', '.join(map(str, same))}: same name stem {stem!r}, the outputs would overwrite each other"
               for stem, same in by_stem.items() if len(same) > 1]
    problems = clashes + ([] if skip_bad else list(bad.values()))
    if problems:
        raise ValueError("cannot predict; fix or remove these inputs first"
                         + ("" if skip_bad else " (or pass --skip-bad to go on without the unreadable ones)")
                         + ":\n  " + "\n  ".join(problems))
    for reason in bad.values():
        log.warning("skipped: %s", reason)
    return Checked([f for f in files if f not in bad], list(bad.values()))


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Context for writing `path`: an OSError (full disk, read-only filesystem, no permission) comes out
    as an OSError whose filename is `path`, also when the failing call (a write()) named none."""
    try:
        yield path
    except OSError as exc:
        if exc.filename == str(path):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write uint8 ``(H, W, 3)`` as a PNG, atomically (temporary name, then rename)."""
    with writing(path), atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def save_json(record: dict[str, Any], path: Path) -> None:
    """Write `record` as indented JSON, atomically."""
    with writing(path), atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
