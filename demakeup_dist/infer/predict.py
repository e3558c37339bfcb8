"""`demakeup predict`: de-make-up photo files with a trained network, face by face or whole.

Per photo, written to OUT (each file whole or not at all):

- ``NAME_demakeup.png`` (H x W) and, for a network with an SR head, ``NAME_sr4x.png`` (4H x 4W);
- ``NAME_faces.json``: the mode, the detector, and per face its box, blend region, crop and score,
  in the photo's pixels (x1, y1 exclusive).

Face mode (the default when the detector finds a face): every face is framed as in the training
images, resized to the training size, de-made-up, and the network's change resized back and blended
in (`blend`); outside the blend regions the output is the input, bit for bit. SR output in face mode
is the whole photo at 4x: PIL bicubic outside the faces, the network's SR change added inside,
blended the same way, so it has the shape and name of the whole-image SR output. Crops run
`batch_size` at a time, across consecutive photos (which are held in memory until their batch ran).

Whole-image mode (``whole_image=True``, no face found, or no detector installed): the network runs
on the photo at its own resolution, in tiles (`tiles`), with a warning when the photo's size is far
from the training size (the faces are then probably not as large as the network learned them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from demakeup_dist.infer import OVERLAP, TILE
from demakeup_dist.infer.blend import FaceCrop, change, cut, paste
from demakeup_dist.infer.faces import FRAMING, FaceDetector, detector
from demakeup_dist.infer.photos import check_inputs, collect_inputs, load_photo, save_json, save_png, writing
from demakeup_dist.infer.runner import Runner, suffix, torch_runner
from demakeup_dist.infer.tiles import check_tiling, predict_tiled

log = logging.getLogger(__name__)

FAR_FROM_TRAINING = 2.0  # a photo this many times larger (or smaller) than the training images gets a warning


@dataclass
class Prediction:
    """What a predict call did: the files written, and the unreadable inputs it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def scale_warning(path: Path, photo_hw: tuple[int, int], image_size: int | None) -> str | None:
    """A warning when a whole photo is far from the size of the training images, else None."""
    if image_size is None:
        return None
    ratio = max(photo_hw) / image_size
    if 1 / FAR_FROM_TRAINING <= ratio <= FAR_FROM_TRAINING:
        return None
    height, width = photo_hw
    return (f"{path}: {width}x{height} processed whole, but the network learned {image_size}x{image_size} faces "
            f"filling ~{FRAMING.box_side:.0%} of the frame: a face framed like that here is {ratio:.1f}x the "
            "size it saw; face mode resizes each face it finds to the training size instead")


@dataclass
class _Job:
    """One photo on its way: its pixels, the faces to process (none in whole-image mode), its record."""

    path: Path
    photo: np.ndarray
    crops: list[FaceCrop]
    record: dict


def _prepare(runner: Runner, path: Path, find: FaceDetector | None, tile: int, overlap: int) -> _Job:
    photo = load_photo(path)
    height, width = photo.shape[:2]
    record: dict = {"photo": str(path), "size": [width, height], "network": runner.name,
                    "image_size": runner.image_size, "detector": None if find is None else find.name}
    crops = [] if find is None else [FaceCrop.frame(face, FRAMING, (height, width)) for face in find.detect(photo)]
    if crops:
        record.update(mode="faces", framing=vars(FRAMING), faces=[c.record() for c in crops])
    else:
        record.update(mode="whole-image", faces=[], tile=tile, overlap=overlap)
        if warning := scale_warning(path, (height, width), runner.image_size):
            log.warning("%s", warning)
            record["warning"] = warning
    return _Job(path, photo, crops, record)


def _base(photo: np.ndarray, scale: int) -> np.ndarray:
    """What a task's output is outside the faces: the photo itself, or its bicubic `scale`-fold upscaling."""
    if scale == 1:
        return photo.copy()
    height, width = photo.shape[:2]
    return np.array(Image.fromarray(photo).resize((width * scale, height * scale), Image.BICUBIC))


def _face_mode(runner: Runner, jobs: list[_Job], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Every face of `jobs` through the network, `batch_size` crops per pass across photos; each job's outputs."""
    size = runner.image_size
    assert size is not None
    items = [(i, crop) for i, job in enumerate(jobs) for crop in job.crops]
    outputs: list[dict[str, np.ndarray]] = [{} for _ in jobs]
    for first in range(0, len(items), batch_size):
        group = items[first:first + batch_size]
        inputs = torch.stack([cut(jobs[i].photo, crop.crop, size) for i, crop in group])  # (B, 3, S, S)
        for task, images in runner(inputs).items():  # (B, 3, k*S, k*S)
            scale = images.shape[-1] // size
            for (i, crop), delta in zip(group, change(inputs, images)):
                if task not in outputs[i]:
                    outputs[i][task] = _base(jobs[i].photo, scale)
                paste(outputs[i][task], delta, crop, scale)
    return outputs


def _write(job: _Job, images: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
    """The job's PNGs, then its NAME_faces.json (which lists them)."""
    names = []
    for task, pixels in images.items():
        name = out_dir / f"{job.path.stem}_{suffix(task, pixels.shape[1] // job.photo.shape[1])}.png"
        save_png(pixels, name)
        names.append(name)
    job.record["outputs"] = [n.name for n in names]
    save_json(job.record, out_dir / f"{job.path.stem}_faces.json")
    return [*names, out_dir / f"{job.path.stem}_faces.json"]


def _face_detector(runner: Runner, given: FaceDetector | None) -> FaceDetector | None:
    if runner.image_size is None:
        log.warning("%s does not record its training image size, which face mode resizes faces to: predicting "
                    "whole images (re-save the weights with demakeup_dist.weights.save_weights to record it)",
                    runner.name)
        return None
    return given or detector()


def predict_files(
    model: nn.Module | Runner,
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    tasks: Sequence[str] | None = None,
    batch_size: int = 8,
    whole_image: bool = False,
    skip_bad: bool = False,
    tile: int = TILE,
    overlap: int = OVERLAP,
    face_detector: FaceDetector | None = None,
) -> Prediction:
    """Run `model` (a module, or a `Runner` such as an ONNX one) on image files and/or folders, writing
    into `out_dir` the files the module docstring lists.

    A module's ``model(x)`` takes float ``(B, 3, H, W)`` in [0, 1] with H, W multiples of 32 and returns
    ``{"demakeup": (B, 3, H, W)[, "sr": (B, 3, 4H, 4W)]}`` in [0, 1]; `tasks` defaults to its ``tasks``.
    Face mode needs the training image size (the Runner's `image_size`). `batch_size`: crops or tiles
    per forward pass. Every input is decoded once before anything is written: an unreadable file stops
    the call with one error listing every problem, unless `skip_bad` (then each is named in a warning
    and in ``Prediction.skipped``). `face_detector` defaults to OpenCV's (None without OpenCV).
    """
    runner = model if isinstance(model, Runner) else torch_runner(model, device=device, tasks=tasks)
    if batch_size < 1:
        raise ValueError(f"predict: --batch-size must be >= 1, got {batch_size}")
    check_tiling(tile, overlap)
    checked = check_inputs(collect_inputs(inputs), skip_bad)
    find = None if whole_image else _face_detector(runner, face_detector)
    out_dir = Path(out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    result = Prediction(skipped=checked.skipped)
    waiting: list[_Job] = []  # photos with faces, held until their crops fill a batch
    with tqdm(total=len(checked.files), unit="img", desc="predict", disable=len(checked.files) < 2) as bar:
        for k, path in enumerate(checked.files):
            job = _prepare(runner, path, find, tile, overlap)
            if job.crops:
                waiting.append(job)
            else:
                result.written += _write(job, predict_tiled(runner, job.photo, tile=tile, overlap=overlap,
                                                            batch_size=batch_size), out_dir)
                bar.update()
            if waiting and (sum(len(j.crops) for j in waiting) >= batch_size or k == len(checked.files) - 1):
                for done, images in zip(waiting, _face_mode(runner, waiting, batch_size)):
                    result.written += _write(done, images, out_dir)
                bar.update(len(waiting))
                waiting = []
    return result
