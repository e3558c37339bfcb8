"""The resident data path: a split decoded once into uint8 tensors, batches gathered by index.

For sets that fit in memory, decoding every epoch is wasted work: 5000 course triplets decoded are
13.5 GB of uint8, which fit beside p4's training memory on a 40 GB+ GPU. `decode_split` decodes each
shard once (all cores, progress bar) straight into a file-backed store: one uint8 array per role,
(N, 3, S, S) for makeup / non_makeup and (N, 3, 4S, 4S) for hr, back to back. The file lives in
/dev/shm when it has room, so the processes of one node map the same pages (one copy per node), and
is removed as soon as every process has mapped it (the mappings outlive the name).

`Resident.batch(indices, flips)` yields exactly what `loader.stream` yields for the same plan
(uint8 NCHW, the same flips, the same names), but on whatever device the tensors live on: a batch
is an index_select and a flip, no decode.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demakeup_dist import atomic
from demakeup_dist.atomic import atomic_path
from demakeup_dist.data.loader import decode_member
from demakeup_dist.data.pool import parallel_map
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shardset import MEMBERS, ShardSet


def layout(shards: ShardSet, split: str, with_hr: bool) -> dict[str, tuple[int, tuple[int, ...]]]:
    """role -> (byte offset in the store, array shape); roles in ROLES order, HR only `with_hr`."""
    n = shards.split(split, with_hr).samples
    sides = {"makeup": shards.image_size, "non_makeup": shards.image_size, "hr": shards.hr_size}
    out, offset = {}, 0
    for role in ROLES[:3 if with_hr else 2]:
        shape = (n, 3, sides[role], sides[role])
        out[role] = (offset, shape)
        offset += int(np.prod(shape))
    return out


def store_bytes(regions: dict[str, tuple[int, tuple[int, ...]]]) -> int:
    return sum(int(np.prod(shape)) for _, shape in regions.values())


def store_dir(need: int) -> Path:
    """/dev/shm (RAM, shared by the node's processes) when it has room for `need` bytes, else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need * 1.05:
        return shm
    return Path(tempfile.gettempdir())


@dataclass(frozen=True)
class _ShardJob:
    store: Path
    regions: dict[str, tuple[int, tuple[int, ...]]]
    shard: Path
    first: int  # split index of the shard's first sample
    offsets: np.ndarray  # (samples in shard, len(MEMBERS)) byte offsets in the shard
    sizes: np.ndarray
    png: np.ndarray


def decode_split(shards: ShardSet, split: str, regions: dict[str, tuple[int, tuple[int, ...]]], path: Path, *,
                 workers: int | None, progress: bool) -> None:
    """Decode `split` into the store file `path` (+ `path`.names.json); atomic: written under a temporary
    name, renamed at the end, so a store that exists is complete."""
    info, index = shards.split(split, "hr" in regions), shards.member_index(split)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.truncate(store_bytes(regions))
        jobs = [_ShardJob(tmp, regions, p, int(lo), index.offsets[lo:hi], index.sizes[lo:hi], index.png[lo:hi])
                for p, lo, hi in zip(info.paths, info.starts[:-1], info.starts[1:])]
        names = parallel_map(_decode_shard, jobs, workers=workers, desc=f"decode {split}", progress=progress,
                             weights=[len(job.offsets) for job in jobs], unit="sample")
        atomic.write_json(Path(f"{path}.names.json"), [n for shard in names for n in shard])


def _decode_shard(job: _ShardJob) -> list[str]:
    """Decode one shard's samples into their rows of the store (runs in a worker process); their names."""
    data = job.shard.read_bytes()  # one sequential read of the whole shard
    views = {role: np.memmap(job.store, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
             for role, (offset, shape) in job.regions.items()}
    for row, (offsets, sizes, png) in enumerate(zip(job.offsets, job.sizes, job.png)):
        index = job.first + row
        for m, (role, view) in enumerate(views.items()):  # ROLES order: column of MEMBERS and png
            member = data[offsets[m]:offsets[m] + sizes[m]]
            view[index] = decode_member(member, bool(png[m]), view.shape[-1],
                                        lambda: f"{job.shard}: sample {index:06d} {role}").numpy()
    for view in views.values():
        view.flush()
    m = MEMBERS.index("name")
    return [data[o:o + s].decode("utf-8") for o, s in zip(job.offsets[:, m], job.sizes[:, m])]


class Resident:
    """A decoded split: `tensors[role]` uint8 (N, 3, side, side), `names[i]` the file name of sample i."""

    def __init__(self, tensors: dict[str, torch.Tensor], names: list[str]):
        self.tensors, self.names = tensors, names

    @classmethod
    def map(cls, path: Path, regions: dict[str, tuple[int, tuple[int, ...]]]) -> Resident:
        """Map a store written by `decode_split` (read-only pages, shared with every process mapping it)."""
        flat = torch.from_file(str(path), shared=False, size=store_bytes(regions), dtype=torch.uint8)
        tensors = {role: flat[offset:offset + int(np.prod(shape))].view(shape)
                   for role, (offset, shape) in regions.items()}
        return cls(tensors, json.loads(Path(f"{path}.names.json").read_text(encoding="utf-8")))

    def to(self, device: torch.device) -> Resident:
        return Resident({role: t.to(device) for role, t in self.tensors.items()}, self.names)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def batch(self, indices: np.ndarray, flips: np.ndarray, device: torch.device) -> dict:
        """The planned batch, on `device` (gathered where the tensors live, then moved if they differ)."""
        where = next(iter(self.tensors.values())).device
        rows = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64)).to(where, non_blocking=True)
        flip = torch.from_numpy(np.ascontiguousarray(flips, dtype=bool)).to(device, non_blocking=True)
        batch: dict = {}
        pin = where.type == "cpu" and device.type == "cuda"
        for role, images in self.tensors.items():
            if where.type == "cpu":  # into pinned memory when it goes to a GPU, so the copy is asynchronous
                picked = torch.empty((len(indices), *images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
                torch.index_select(images, 0, rows, out=picked)
            else:
                picked = images.index_select(0, rows)
            picked = picked.to(device, non_blocking=True)
            batch[role] = torch.where(flip.view(-1, 1, 1, 1), picked.flip(-1), picked)
        batch["name"] = [self.names[i] for i in indices.tolist()]
        return batch
