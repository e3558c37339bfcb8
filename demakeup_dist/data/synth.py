"""Synthetic de-makeup dataset in the course layout (`demakeup synth`).

Writes ``OUT/{train,val,test}/{makeup,non-makeup,high_r}/NAME.jpg`` (NAME = ``000123.jpg``,
the same in the three folders): makeup and non-makeup are S x S, high_r is 4S x 4S. Each
triplet is one procedural face (see `synth_face`, `synth_makeup`) rendered at 4S:
high_r = the made-up face, makeup = its 4x4 area-average, non-makeup = the same face without
makeup, area-averaged the same way. Fine skin texture exists only at 4S, so high_r holds detail
that upsampling the makeup image cannot recover.

Sample ``i`` of split ``s`` depends only on (seed, s, i): the files are byte-identical for a
seed whatever the number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from demakeup_dist.choices import SIZE_MULTIPLE, SPLITS
from demakeup_dist.data.synth_face import F32, Canvas, Face, face_distance, paint_face, sample_face
from demakeup_dist.data.synth_makeup import apply_makeup
from demakeup_dist.atomic import atomic_path, read_json, write_json
from demakeup_dist.data.pool import worker_count

log = logging.getLogger(__name__)

FOLDERS = {"makeup": "makeup", "non_makeup": "non-makeup", "hr": "high_r"}  # sample key -> folder
SR_FACTOR = 4
# JPEG like the course data, but its loss (~43 dB PSNR at 224 px) stays far below the makeup
# signal (~29 dB), and 4:4:4 chroma keeps thin coloured strokes (eyeliner, lip edges) that
# 4:2:0 smears (~40 dB) for ~25% bigger files. Changing either changes every file of a seed.
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = 0  # Pillow's code for 4:4:4
# Where the makeup went, for the report's per-region error (never used in training). Codes are indices;
# where products overlap, the later region wins (lipstick over foundation, eyeshadow over foundation).
REGIONS = ("background", "face", "cheeks", "eyes", "lips")
# Beside the splits: what made the dataset, so a sample (and its region map) can be rendered again.
SYNTH_FILE = "synth.json"
# Bumped whenever a seed's files change; 2: tidy foundation is a matched shade (docs/results.md, "ceiling").
SYNTH_VERSION = 2
REGION_ALPHA = 0.1  # a pixel belongs to a product's region where that product's opacity is at least this


def check_size(size: int) -> None:
    """Raise ValueError unless `size` is a positive multiple of 32 (what the U-Nets accept)."""
    if size <= 0 or size % SIZE_MULTIPLE:
        raise ValueError(f"--size {size}: the image size must be a positive multiple of {SIZE_MULTIPLE} "
                         f"(the U-Nets halve it 5 times); try 224 (the course size), 64 or 32")


def area_downsample(img: np.ndarray, factor: int = SR_FACTOR) -> np.ndarray:
    """Average `factor` x `factor` blocks of a uint8 (H, W, C) image, rounding to nearest (uint8)."""
    h, w, c = img.shape
    blocks = img.reshape(h // factor, factor, w // factor, factor, c).astype(np.uint32).sum(axis=(1, 3))
    n = factor * factor
    return ((blocks + n // 2) // n).astype(np.uint8)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.rint(img * F32(255)).astype(np.uint8)


def render_sample(rng: np.random.Generator, size: int, *, regions: bool = False) -> dict[str, np.ndarray]:
    """One random triplet as uint8 RGB (H, W, 3) arrays.

    Returns ``makeup`` (size x size), ``non_makeup`` (size x size) and ``hr`` (4size x 4size);
    ``makeup == area_downsample(hr)`` exactly. ``regions``: also ``regions``, the (size, size) uint8 map
    of `region_labels` (what the pixels are equal to does not depend on it: the same draws of `rng`).
    """
    check_size(size)
    face = sample_face(rng)
    cv = Canvas(SR_FACTOR * size, face)
    paint_face(rng, cv, face)
    grain = rng.standard_normal((cv.hr, cv.hr), dtype=F32) * F32(rng.uniform(0.004, 0.012))
    bare = _to_uint8(cv.finish(grain))
    apply_makeup(rng, cv, face)
    hr = _to_uint8(cv.finish(grain))
    sample = {"makeup": area_downsample(hr), "non_makeup": area_downsample(bare), "hr": hr}
    if regions:
        sample["regions"] = region_labels(cv, face)
    return sample


def region_labels(cv: Canvas, face: Face) -> np.ndarray:
    """(S, S) uint8 codes into `REGIONS` of a made-up canvas: where each region's products painted at least
    `REGION_ALPHA` (4x4 HR average), the later region of `REGIONS` winning; "face" also covers the bare
    face outline; "background" is the rest (hair, neck, backdrop: no product there)."""

    def coverage(hr_mask: np.ndarray) -> np.ndarray:
        n = cv.hr // SR_FACTOR
        return hr_mask.reshape(n, SR_FACTOR, n, SR_FACTOR).mean(axis=(1, 3))

    labels = (coverage((face_distance(face, cv.X, cv.Y) < 0).astype(F32)) >= 0.5).astype(np.uint8)
    for code, name in enumerate(REGIONS[1:], start=1):
        if name in cv.painted:
            labels[coverage(cv.painted[name]) >= REGION_ALPHA] = code
    return labels


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample `index` of `split`: independent of every other sample."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _write_sample(job: tuple[Path, str, int, int, int]) -> None:
    root, split, index, size, seed = job
    sample = render_sample(sample_rng(seed, split, index), size)
    for key, folder in FOLDERS.items():
        Image.fromarray(sample[key]).save(root / split / folder / f"{index:06d}.jpg", quality=JPEG_QUALITY,
                                            subsampling=JPEG_SUBSAMPLING)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it "
                              f"or choose another output path")


def synth_dataset(out: Path, *, train: int, val: int, test: int, size: int = 224, seed: int = 25,
                  workers: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Write a synthetic dataset to `out` (layout in the module docstring) and return `out`.

    The files are written under a temporary name beside `out` and renamed to `out` only when complete.
    `workers` (default: all CPU cores) > 1 renders in spawned processes, so a calling script
    needs the usual ``if __name__ == "__main__":`` guard. Raises ValueError for bad sizes /
    counts and FileExistsError for a non-empty `out` (unless `overwrite`, which replaces it).
    """
    out = Path(out)
    check_size(size)
    counts = {"train": train, "val": val, "test": test}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise ValueError(f"sample counts {counts}: each must be >= 0 and their total > 0")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    workers = worker_count(workers)
    _check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        for split in SPLITS:
            for folder in FOLDERS.values():
                (tmp / split / folder).mkdir(parents=True)
        jobs = [(tmp, split, i, size, seed) for split in SPLITS for i in range(counts[split])]
        with tqdm(total=len(jobs), unit="sample", desc=f"synth {size}px", disable=not progress) as bar:
            if workers == 1:
                for job in jobs:
                    _write_sample(job)
                    bar.update()
            else:
                # spawn, not fork: the caller (demo, training) may hold torch / CUDA threads.
                with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                    for _ in pool.imap_unordered(_write_sample, jobs, chunksize=4):
                        bar.update()
        write_json(tmp / SYNTH_FILE, {"generator": "demakeup synth", "version": SYNTH_VERSION, "seed": seed,
                                      "size": size, "counts": counts})
    log.info("wrote %d synthetic triplets (%dpx) to %s", len(jobs), size, out)
    return out


def read_synth_info(data_dir: Path) -> dict | None:
    """The SYNTH_FILE of a dataset `synth_dataset` wrote (its seed, size, counts, version), None for other data."""
    path = Path(data_dir) / SYNTH_FILE
    return read_json(path) if path.is_file() else None
