"""The reader: a shard set (`demakeup shard`) -> batches for training and evaluation.

Data enters the model here, once. A batch is a dict:

    "makeup"      (B, 3, S, S)     the input
    "non_makeup"  (B, 3, S, S)     the de-makeup target
    "hr"          (B, 3, 4S, 4S)   the SR target (the input at 4x); only with with_hr=True
    "name"        list[str]        the original file names

Tensors are NCHW, RGB, contiguous, float32 in [0, 1] (pixel / 255) by default, or uint8 in [0, 255]
with uint8=True; `to_float` then moves them to the device and gives exactly the default path's values.
`batch_size` is per rank.

Training (`train_batches`): each epoch is a permutation of the train split that is a pure function of
(seed, epoch): shards in random order, samples shuffled within windows of SHUFFLE_WINDOW (the brief
shuffles in a buffer of 10 x batch), plus one horizontal flip (p = 0.5) per sample applied to all of
its images. Global batch t is positions [t*G, (t+1)*G) of that order (G = batch_size * world_size), and
rank r takes positions r, r+W, ...: ranks are disjoint, no sample appears twice in an epoch, every rank
runs exactly `steps_per_epoch` steps (the remainder, < G samples, is dropped), and with a fixed G the
global batches are the same for any world size. `start_step=k` yields batches k.. of that same epoch.

Evaluation (`eval_batches`): rank r reads samples r, r+W, ... of the split in stored order, each
exactly once across ranks, no padding; the last batch may be smaller and ranks may differ by a batch.

DataLoader worker w decodes batches w, w+n, ...; the DataLoader collects workers round-robin, so the
output order never depends on `num_workers`. Each worker reads (with webdataset) the shards behind
about READ_WINDOW positions at a time and keeps only its own samples' bytes, which bounds its memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shards import load_manifest

SHUFFLE_WINDOW = 1024  # samples shuffled together (16 shards of 64)
READ_WINDOW = 1024  # epoch positions whose shards a worker reads before decoding its batches among them

Item = tuple[int, bool]  # (sample index in the split, flip horizontally)


@dataclass(frozen=True)
class _Split:
    urls: tuple[str, ...]
    starts: np.ndarray  # starts[k]: index of shard k's first sample; starts[-1]: samples in the split
    size: int
    hr_size: int | None
    shards_dir: str


def steps_per_epoch(shards_dir: Path, *, global_batch: int, world_size: int) -> int:
    """Optimizer steps in one training epoch: train samples // global_batch (ValueError if 0)."""
    _check_batch(global_batch, world_size)
    return _steps(load_manifest(shards_dir)["splits"]["train"]["samples"], global_batch, shards_dir)


def train_batches(shards_dir: Path, *, batch_size: int, with_hr: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, num_workers: int = 2, start_step: int = 0,
                  uint8: bool = False) -> Iterator[dict]:
    """This rank's batches of one training epoch, from step `start_step` (see module doc)."""
    global_batch = batch_size * world_size
    _check_batch(global_batch, world_size)
    _check_rank(rank, world_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    split = _open_split(shards_dir, "train", with_hr)
    steps = _steps(int(split.starts[-1]), global_batch, shards_dir)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step {start_step} is outside the epoch's {steps} steps")
    order, flips = _epoch_order(split.starts, seed, epoch)
    positions = np.arange(rank, steps * global_batch, world_size).reshape(steps, batch_size)[start_step:]
    batches = [[(int(order[p]), bool(flips[p])) for p in row] for row in positions]
    return _load(split, batches, max(1, READ_WINDOW // global_batch), with_hr, num_workers, uint8)


def eval_batches(shards_dir: Path, split: str, *, batch_size: int, with_hr: bool, rank: int = 0,
                 world_size: int = 1, num_workers: int = 2, uint8: bool = False) -> Iterator[dict]:
    """This rank's share of `split` ("val", "test" or "train"), each sample once, no flip, stored order."""
    _check_batch(batch_size * world_size, world_size)
    _check_rank(rank, world_size)
    data = _open_split(shards_dir, split, with_hr)
    mine = np.arange(rank, int(data.starts[-1]), world_size)
    batches = [[(int(i), False) for i in mine[lo:lo + batch_size]] for lo in range(0, len(mine), batch_size)]
    return _load(data, batches, max(1, READ_WINDOW // (batch_size * world_size)), with_hr, num_workers, uint8)


def unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (pixel / 255): the one place pixels become the networks' floats."""
    return pixels.float().div_(255)


def to_float(batch: dict, device: torch.device | str) -> dict:
    """Move a batch to `device` (non-blocking) and turn uint8 [0, 255] into float32 [0, 1] there."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.dtype == torch.uint8:
                value = unit_float(value)
        out[key] = value
    return out


def _check_batch(global_batch: int, world_size: int) -> None:
    if world_size < 1 or global_batch < world_size or global_batch % world_size:
        raise ValueError(f"global batch {global_batch} must be a positive multiple of the {world_size} processes")


def _check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")


def _steps(samples: int, global_batch: int, shards_dir: Path) -> int:
    if samples < global_batch:
        raise ValueError(f"the train split of {shards_dir} has {samples} samples, fewer than one global batch "
                         f"of {global_batch}: lower the batch size or use more data")
    return samples // global_batch


def _open_split(shards_dir: Path, split: str, with_hr: bool) -> _Split:
    manifest = load_manifest(shards_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"no split {split!r} in {shards_dir}; it has {', '.join(manifest['splits'])}")
    info = manifest["splits"][split]
    if with_hr and not info["has_hr"]:
        raise ValueError(f"the {split} shards in {shards_dir} hold no HR images (the source had no high_r/ or "
                         "hr_image/ folder there): super-resolution (p4) needs them")
    counts = [shard["samples"] for shard in info["shards"]]
    return _Split(tuple(str(Path(shards_dir) / shard["name"]) for shard in info["shards"]),
                  np.cumsum([0, *counts]), manifest["image_size"], manifest["hr_size"], str(shards_dir))


def _epoch_order(starts: np.ndarray, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample index at each position of the epoch, flip at each position): a pure function of the inputs."""
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in rng.permutation(len(starts) - 1)])
    for lo in range(0, len(order), SHUFFLE_WINDOW):
        rng.shuffle(order[lo:lo + SHUFFLE_WINDOW])  # in place: a slice of an array is a view
    return order, rng.random(len(order)) < 0.5


def _load(split: _Split, batches: list[list[Item]], window: int, with_hr: bool, num_workers: int,
          uint8: bool) -> Iterator[dict]:
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if not batches:
        return iter(())
    stream = _BatchStream(split, batches, window, ROLES[:3 if with_hr else 2], uint8)
    # batch_size=None: the dataset yields whole batches. A worker without batches is never started
    # (min), so no worker can fail with "no samples" on a tiny split.
    return iter(DataLoader(stream, batch_size=None, num_workers=min(num_workers, len(batches)),
                           pin_memory=torch.cuda.is_available()))


class _BatchStream(IterableDataset):
    """Yields the given batches, in order, decoded; in worker w of n only batches w, w+n, ..."""

    def __init__(self, split: _Split, batches: list[list[Item]], window: int, roles: tuple[str, ...],
                 uint8: bool):
        self.split, self.batches, self.window, self.roles, self.uint8 = split, batches, window, roles, uint8

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = range(worker, len(self.batches), workers)
        for _, group in itertools.groupby(mine, key=lambda t: t // self.window):
            group = list(group)
            raw = self._read({index for t in group for index, _ in self.batches[t]})
            for t in group:
                yield self._collate(self.batches[t], raw)

    def _read(self, indices: set[int]) -> dict[int, dict]:
        """Raw members of the given samples, reading each shard that holds some of them once."""
        wanted_members = {*self.roles, "name"}
        ordered = sorted(indices)
        shard_of = np.searchsorted(self.split.starts, ordered, side="right") - 1
        raw: dict[int, dict] = {}
        for shard, members in itertools.groupby(zip(shard_of, ordered), key=lambda pair: pair[0]):
            keys = {f"{index:06d}" for _, index in members}

            def wanted(fname: str, keys: set[str] = keys) -> bool:
                key, member = (fname.split(".") + [""])[:2]
                return key in keys and member in wanted_members

            for sample in wds.tarfile_samples([{"url": self.split.urls[shard]}], select_files=wanted):
                raw[int(sample["__key__"])] = sample
        if indices - raw.keys():
            raise ValueError(f"sample {min(indices - raw.keys()):06d} is missing from the shards in "
                             f"{self.split.shards_dir}: run `demakeup verify {self.split.shards_dir}`")
        return raw

    def _collate(self, items: list[Item], raw: dict[int, dict]) -> dict:
        batch: dict = {}
        for role in self.roles:
            want = self.split.hr_size if role == "hr" else self.split.size
            images = torch.empty((len(items), 3, want, want), dtype=torch.uint8)
            for image, (index, flip) in zip(images, items):
                sample = raw[index]
                member = f"{role}.jpg" if f"{role}.jpg" in sample else f"{role}.png"
                pixels = decode_rgb(sample[member], member[-3:])
                if pixels.shape != (want, want, 3):
                    raise ValueError(f"{sample['__url__']}: sample {index:06d} {member} is {pixels.shape[1]}x"
                                     f"{pixels.shape[0]}, the manifest says {want}x{want}: run `demakeup verify`")
                # HWC -> CHW straight into the batch; torch's flip is ~4x faster than a numpy [:, ::-1] copy.
                image.copy_(torch.from_numpy(pixels).permute(2, 0, 1))
                if flip:
                    image.copy_(image.flip(-1))
            batch[role] = images if self.uint8 else images.float().div_(255)
        batch["name"] = [raw[index]["name.txt"].decode("utf-8") for index, _ in items]
        return batch
