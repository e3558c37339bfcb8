"""Data-engine benchmark: packing speed per core, read + decode + batch speed per loader worker, and
the HR JPEG decode rate on one CPU core against nvJPEG."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.gpu_decode import gpu_jpeg_decoder
from demakeup_dist.data.loader import train_batches
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shards import load_manifest, write_shards
from demakeup_dist.data.shardset import MEMBERS, ShardSet
from demakeup_dist.machine import available_cores, cpu_name


def bench_data(shards_dir: Path | None = None, *, triplets: int = 200, size: int = 224, batch_size: int = 8,
               world_size: int = 2, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Measure the data engine; returns the numbers with the machine they were measured on.

    Without `shards_dir`, writes `triplets` random JPEG triplets (size, HR 4x size) to a temporary
    folder and times `write_shards` on one core ("pack_triplets_per_s_per_core": validate + write).
    Then times one training epoch of the streaming reader with one DataLoader worker, uint8 batches of
    `batch_size`, without and with HR ("read_samples_per_s_per_worker"; worker start-up excluded).
    The last of those epochs is read as `world_size` ranks one after the other, each rank's shard
    bytes counted: "bytes_read_per_rank_per_epoch" gives the most any rank read over its share
    (the split's shard bytes / world_size). With HR images, "hr_decode" is `hr_decode_rates` on `device`.
    """
    with tempfile.TemporaryDirectory(prefix="demakeup-bench-") as tmp:
        pack_rate = None
        if shards_dir is None:
            src = _random_dataset(Path(tmp) / "data", triplets, size)
            shards_dir = Path(tmp) / "shards"
            start = time.perf_counter()
            write_shards(src, shards_dir, workers=1, progress=progress)
            pack_rate = triplets / (time.perf_counter() - start)
        manifest = load_manifest(shards_dir)
        train = manifest["splits"]["train"]
        world_size = max(1, min(world_size, train["samples"] // batch_size))
        read = {}
        for with_hr in (False, True) if train["has_hr"] else (False,):
            rate, per_rank = _read_rate(shards_dir, batch_size, with_hr, world_size)
            read["with_hr" if with_hr else "without_hr"] = rate
        share = sum(s["bytes"] for s in train["shards"]) / world_size
        ranks = {"world_size": world_size, "share": round(share), "bytes": per_rank,
                 "max_over_share": max(per_rank) / share}
        decode = hr_decode_rates(shards_dir, device) if train["has_hr"] else None
    return {
        "machine": f"{cpu_name()}, {available_cores()} cores usable",
        "image_size": manifest["image_size"],
        "train_samples": train["samples"],
        "bytes_per_triplet": round(sum(s["bytes"] for s in train["shards"]) / train["samples"]),
        "pack_triplets_per_s_per_core": pack_rate,
        "read_samples_per_s_per_worker": read,
        "bytes_read_per_rank_per_epoch": ranks,
        "hr_decode": decode,
    }


def hr_decode_rates(shards_dir: Path, device: str = "cpu", count: int = 16, gpu_batch: int = 64) -> dict[str, Any]:
    """Images per second decoding the first `count` HR JPEGs of the train split: on one CPU core (what a
    loader worker does) and, on CUDA where torchvision imports, with nvJPEG in batches of `gpu_batch`
    (data/gpu_decode.py), with its largest pixel difference from the CPU's; else why not."""
    jpegs = _hr_jpegs(ShardSet.open(shards_dir), count)
    result: dict[str, Any] = {"jpeg_kib_mean": sum(map(len, jpegs)) / len(jpegs) / 1024,
                              "cpu_per_s": _rate(lambda: [decode_rgb(b, "jpg") for b in jpegs], len(jpegs))}
    decoder, why_not = gpu_jpeg_decoder(torch.device(device))
    if decoder is None:
        return {**result, "nvjpeg_missing": why_not}
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    batch = (tensors * -(-gpu_batch // len(tensors)))[:gpu_batch]
    first = decoder(tensors[:1])[0].permute(1, 2, 0).cpu().numpy().astype(int)  # (H, W, 3) as the CPU's
    return {**result, "nvjpeg_per_s": _rate(lambda: decoder(batch), len(batch), sync=torch.cuda.synchronize),
            "nvjpeg_batch": len(batch),
            "nvjpeg_max_abs_diff": int(np.abs(first - decode_rgb(jpegs[0], "jpg").astype(int)).max())}


def _hr_jpegs(shards: ShardSet, count: int) -> list[bytes]:
    """The stored bytes of the first `count` HR images of the train split that are JPEGs."""
    split, index = shards.split("train", with_hr=True), shards.member_index("train")
    column = MEMBERS.index("hr")
    rows = np.flatnonzero(~index.png[:, ROLES.index("hr")])[:count]
    if not len(rows):
        raise ValueError(f"{shards.root}: the train split holds no HR JPEG to time")
    jpegs = []
    for i in rows:
        with open(split.paths[index.shard[i]], "rb") as f:
            f.seek(int(index.offsets[i, column]))
            jpegs.append(f.read(int(index.sizes[i, column])))
    return jpegs


def _rate(work: Callable[[], object], items: int, repeats: int = 3, sync: Callable[[], None] = lambda: None) -> float:
    """Items per second of `work`, after one untimed call (start-up, allocations)."""
    work()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return items * repeats / (time.perf_counter() - start)


def _read_rate(shards_dir: Path, batch_size: int, with_hr: bool, world_size: int) -> tuple[float, list[int]]:
    """(samples / s of one worker, shard bytes each rank read) over one epoch read as `world_size` ranks."""
    seconds, samples, per_rank = 0.0, 0, []
    for rank in range(world_size):
        batches = train_batches(shards_dir, batch_size=batch_size, with_hr=with_hr, seed=0, epoch=0,
                                rank=rank, world_size=world_size, num_workers=1, uint8=True)
        first = next(batches)  # the clock starts once the worker runs
        read = first["read_bytes"]
        start = time.perf_counter()
        for batch in batches:
            samples += len(batch["name"])
            read += batch["read_bytes"]
        seconds += time.perf_counter() - start
        per_rank.append(read)
    return samples / max(seconds, 1e-9), per_rank


def _random_dataset(root: Path, triplets: int, size: int) -> Path:
    """Smooth random pictures with grain (compress like photos, unlike white noise), JPEG quality 95."""
    rng = np.random.default_rng(0)
    for split, count in (("train", triplets), ("val", 1), ("test", 1)):
        for folder in ("makeup", "non-makeup", "high_r"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            hr = _picture(rng, 4 * size)
            for folder, image in (("makeup", hr.resize((size, size), Image.BOX)),
                                  ("non-makeup", _picture(rng, size)), ("high_r", hr)):
                image.save(root / split / folder / f"{i:05d}.jpg", quality=95)
    return root


def _picture(rng: np.random.Generator, size: int) -> Image.Image:
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    grain = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + grain, 0, 255).astype(np.uint8))
