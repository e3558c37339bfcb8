"""Shared test fixtures (CPU only, tiny data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPLITS = ("train", "val", "test")


def write_image(path: Path, size: int, seed: int, mode: str = "RGB") -> None:
    """A smooth random RGB picture with grain, saved as `mode` in the format of `path`'s suffix."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def build_dataset(tmp_path: Path, n: int | dict[str, int] = 4, size: int = 16, *,
                  hr_folder: str | None = "high_r", names: list[str] | None = None) -> Path:
    """Write tmp_path/data/{train,val,test}/{makeup,non-makeup,HR}/NAME and return tmp_path/data.

    `n` triplets per split (or a dict split -> n); names 000.jpg, 001.png, ... alternate JPEG and PNG,
    or come from `names` (cycled, prefixed with the index so they stay unique). Inputs are size x size,
    HR 4*size (no HR folder when `hr_folder` is None). Content is deterministic.
    """
    root = tmp_path / "data"
    counts = n if isinstance(n, dict) else {split: n for split in SPLITS}
    folders = ["makeup", "non-makeup"] + ([hr_folder] if hr_folder else [])
    for s, split in enumerate(SPLITS):
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(counts.get(split, 0)):
            name = f"{i:03d}{names[i % len(names)]}" if names else f"{i:03d}.{'jpg' if i % 2 == 0 else 'png'}"
            seed = 1000 * s + 10 * i
            write_image(root / split / "makeup" / name, size, seed)
            write_image(root / split / "non-makeup" / name, size, seed + 1)
            if hr_folder:
                write_image(root / split / hr_folder / name, 4 * size, seed + 2)
    return root


def synth_shards(root: Path, *, train: int, seed: int, size: int = 32, per_shard: int = 8) -> Path:
    """Synthetic faces (`train` + 4 val + 4 test triplets at `size` px) packed as root/shards."""
    from demakeup_dist.data.shards import write_shards
    from demakeup_dist.data.synth import synth_dataset

    data = synth_dataset(root / "data", train=train, val=4, test=4, size=size, seed=seed, workers=1, progress=False)
    write_shards(data, root / "shards", samples_per_shard=per_shard, workers=1, progress=False)
    return root / "shards"


@pytest.fixture
def make_dataset():
    """Factory: make_dataset(tmp_path, n=4, size=16, hr_folder="high_r", names=None) -> dataset root."""
    return build_dataset


@pytest.fixture
def one_thread():
    """One intra-op torch thread: on a small shared CI machine, more threads only contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
