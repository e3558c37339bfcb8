"""The reader: a shard set (`demakeup shard`) -> batches for training and evaluation.

Data enters the model here, once. A batch is a dict:

    "makeup"      (B, 3, S, S)     the input
    "non_makeup"  (B, 3, S, S)     the de-makeup target
    "hr"          (B, 3, 4S, 4S)   the SR target (the input at 4x); only with with_hr=True
    "name"        list[str]        the original file names
    "read_bytes"  int              shard bytes read for this batch (streaming path only)

Tensors are NCHW, RGB, contiguous, float32 in [0, 1] (pixel / 255) by default, or uint8 in [0, 255]
with uint8=True; `to_float` then moves them to the device and gives exactly the default path's values.
`batch_size` is per rank.

Which samples form each batch is decided by a plan, shared by this streaming reader and the resident
cache (data/resident.py), so both paths yield the same batches:

Training (`train_plan`): each epoch is a permutation of the train split that is a pure function of
(seed, epoch): shards in random order, samples shuffled within windows of SHUFFLE_WINDOW (the brief
shuffles in a buffer of 10 x batch), plus one horizontal flip (p = 0.5) per sample applied to all of
its images. Global batch t is positions [t*G, (t+1)*G) of that order (G = batch_size * world_size), and
rank r takes positions r, r+W, ...: ranks are disjoint, no sample appears twice in an epoch, every rank
runs exactly `steps_per_epoch` steps (the remainder, < G samples, is dropped), and with a fixed G the
global batches are the same for any world size. `start_step=k` yields batches k.. of that same epoch.

Evaluation (`eval_plan`): rank r reads samples r, r+W, ... of the split in stored order, each
exactly once across ranks, no padding; the last batch may be smaller and ranks may differ by a batch.

Streaming: DataLoader worker w decodes batches w, w+n, ...; the DataLoader collects workers
round-robin, so the output order never depends on `num_workers`. A worker reads exactly its samples'
members by byte range (`ShardSet.member_index`, os.pread), so a rank reads its own share of the bytes,
not every shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.pool import ignore_sigint
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shardset import MEMBERS, MemberIndex, ShardSet, Split

SHUFFLE_WINDOW = 1024  # samples shuffled together (16 shards of 64)

Batch = tuple[np.ndarray, np.ndarray]  # (sample indices in the split, flip horizontally), one per image
Shards = Path | str | ShardSet


def steps_per_epoch(shards: Shards, *, global_batch: int, world_size: int) -> int:
    """Optimizer steps in one training epoch: train samples // global_batch (ValueError if 0)."""
    _check_batch(global_batch, world_size)
    shards = ShardSet.open(shards)
    return _steps(shards.split("train").samples, global_batch, shards)


def train_plan(shards: Shards, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
               start_step: int = 0) -> list[Batch]:
    """This rank's batches of one training epoch, from step `start_step` (see module doc)."""
    global_batch = batch_size * world_size
    _check_batch(global_batch, world_size)
    _check_rank(rank, world_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    shards = ShardSet.open(shards)
    split = shards.split("train")
    steps = _steps(split.samples, global_batch, shards)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step {start_step} is outside the epoch's {steps} steps")
    order, flips = _epoch_order(split.starts, seed, epoch)
    positions = np.arange(rank, steps * global_batch, world_size).reshape(steps, batch_size)[start_step:]
    return [(order[row], flips[row]) for row in positions]


def eval_plan(shards: Shards, split: str, *, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """This rank's share of `split` ("val", "test" or "train"), each sample once, no flip, stored order."""
    _check_batch(batch_size * world_size, world_size)
    _check_rank(rank, world_size)
    mine = np.arange(rank, ShardSet.open(shards).split(split).samples, world_size)
    return [(mine[lo:lo + batch_size], np.zeros(len(mine[lo:lo + batch_size]), dtype=bool))
            for lo in range(0, len(mine), batch_size)]


def train_batches(shards: Shards, *, batch_size: int, with_hr: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, num_workers: int = 2, start_step: int = 0,
                  uint8: bool = False) -> Iterator[dict]:
    """This rank's batches of one training epoch, streamed from the shards (see module doc)."""
    shards = ShardSet.open(shards)
    plan = train_plan(shards, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                      start_step=start_step)
    return stream(shards, "train", plan, with_hr=with_hr, num_workers=num_workers, uint8=uint8)


def eval_batches(shards: Shards, split: str, *, batch_size: int, with_hr: bool, rank: int = 0,
                 world_size: int = 1, num_workers: int = 2, uint8: bool = False) -> Iterator[dict]:
    """This rank's share of `split`, streamed from the shards (see `eval_plan`)."""
    shards = ShardSet.open(shards)
    plan = eval_plan(shards, split, batch_size=batch_size, rank=rank, world_size=world_size)
    return stream(shards, split, plan, with_hr=with_hr, num_workers=num_workers, uint8=uint8)


def stream(shards: ShardSet, split: str, plan: list[Batch], *, with_hr: bool, num_workers: int,
           uint8: bool = False, defer: tuple[str, ...] = ()) -> Iterator[dict]:
    """The batches of `plan`, read by byte range and decoded by `num_workers` DataLoader workers.

    JPEG members of the roles in `defer` (uint8 only) are left undecoded for the GPU: their rows stay
    zero and `batch["deferred"][role]` = (rows, flips, 1-D uint8 JPEG bytes); `gpu_decode.finish`
    fills them in.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    data = shards.split(split, with_hr)
    if not plan:
        return iter(())
    sizes = {"makeup": shards.image_size, "non_makeup": shards.image_size, "hr": shards.hr_size}
    roles = ROLES[:3 if with_hr else 2]
    if defer and not uint8:
        raise ValueError("deferred (GPU) decoding needs uint8 batches")
    source = _BatchStream(data, shards.member_index(split), plan, {r: sizes[r] for r in roles}, uint8, defer)
    # batch_size=None: the dataset yields whole batches. A worker without batches is never started
    # (min), so no worker can fail with "no samples" on a tiny split.
    # Workers ignore Ctrl-C: the trainer turns it into a clean stop and still needs their batches.
    return iter(DataLoader(source, batch_size=None, num_workers=min(num_workers, len(plan)),
                           pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init))


def _worker_init(worker_id: int) -> None:
    ignore_sigint()


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


def _steps(samples: int, global_batch: int, shards: ShardSet) -> int:
    if samples < global_batch:
        raise ValueError(f"the train split of {shards.root} has {samples} samples, fewer than one global batch "
                         f"of {global_batch}: lower the batch size or use more data")
    return samples // global_batch


def _epoch_order(starts: np.ndarray, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample index at each position of the epoch, flip at each position): a pure function of the inputs."""
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in rng.permutation(len(starts) - 1)])
    for lo in range(0, len(order), SHUFFLE_WINDOW):
        rng.shuffle(order[lo:lo + SHUFFLE_WINDOW])  # in place: a slice of an array is a view
    return order, rng.random(len(order)) < 0.5


def decode_member(data: bytes, png: bool, want: int, where: Callable[[], str]) -> torch.Tensor:
    """Stored image bytes -> (3, want, want) uint8 CHW; ValueError naming `where()` on a size mismatch."""
    pixels = decode_rgb(data, "png" if png else "jpg")
    if pixels.shape != (want, want, 3):
        raise ValueError(f"{where()} is {pixels.shape[1]}x{pixels.shape[0]}, the manifest says {want}x{want}: "
                         "run `demakeup verify`")
    return torch.from_numpy(pixels).permute(2, 0, 1)


class _BatchStream(IterableDataset):
    """Yields the planned batches, in order, decoded; in worker w of n only batches w, w+n, ..."""

    def __init__(self, split: Split, index: MemberIndex, plan: list[Batch], sizes: dict[str, int], uint8: bool,
                 defer: tuple[str, ...]):
        self.split, self.index, self.plan, self.sizes, self.uint8 = split, index, plan, sizes, uint8
        self.defer = defer

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        files: dict[int, int] = {}
        try:
            for t in range(worker, len(self.plan), workers):
                yield self._batch(*self.plan[t], files)
        finally:
            for fd in files.values():
                os.close(fd)

    def _read(self, index: int, column: int, files: dict[int, int]) -> bytes:
        shard = int(self.index.shard[index])
        if shard not in files:
            files[shard] = os.open(self.split.paths[shard], os.O_RDONLY)
        size, offset = int(self.index.sizes[index, column]), int(self.index.offsets[index, column])
        data = os.pread(files[shard], size, offset)
        if len(data) != size:
            raise ValueError(f"{self.split.paths[shard]} ends inside sample {index:06d} (truncated?): "
                             f"run `demakeup verify {self.split.paths[shard].parent}`")
        return data

    def _batch(self, indices: np.ndarray, flips: np.ndarray, files: dict[int, int]) -> dict:
        batch: dict = {"read_bytes": 0}
        for column, (role, want) in enumerate(self.sizes.items()):  # ROLES order: column of MEMBERS and png
            images = torch.zeros((len(indices), 3, want, want), dtype=torch.uint8)
            deferred: tuple[list, list, list] = ([], [], [])
            for row, (image, index, flip) in enumerate(zip(images, indices.tolist(), flips.tolist())):
                data = self._read(index, column, files)
                batch["read_bytes"] += len(data)
                png = bool(self.index.png[index, column])
                if role in self.defer and not png:
                    for values, value in zip(deferred, (row, flip, torch.frombuffer(bytearray(data), dtype=torch.uint8))):
                        values.append(value)
                    continue
                pixels = decode_member(data, png, want,
                                       lambda: f"{self.split.paths[self.index.shard[index]]}: sample {index:06d} {role}")
                # torch's flip is ~4x faster than a numpy [:, ::-1] copy.
                image.copy_(pixels.flip(-1) if flip else pixels)
            batch[role] = images if self.uint8 else unit_float(images)
            if deferred[0]:
                rows, row_flips, jpegs = deferred
                batch.setdefault("deferred", {})[role] = (torch.tensor(rows), torch.tensor(row_flips), jpegs)
        names = [self._read(index, MEMBERS.index("name"), files) for index in indices.tolist()]
        batch["read_bytes"] += sum(map(len, names))
        batch["name"] = [name.decode("utf-8") for name in names]
        return batch
