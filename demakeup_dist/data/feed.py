"""The data feed of a training process: one object that gives the loop (and `demakeup bench`) its batches.

It opens the shard set once, checks it (empty splits, every shard's sha256, shared across ranks), and
picks the data path:

- resident ("device" or "host"): every split decoded once (data/resident.py), batches gathered by
  index; on the GPU itself ("device") or in node-shared host memory ("host", copied per batch);
- streaming ("off"): each epoch read by byte range and decoded by DataLoader workers (data/loader.py);
  the HR JPEGs on the GPU with nvJPEG where torchvision imports (data/gpu_decode.py).

`auto` takes "device" when the decoded train + val + test fit in DEVICE_SHARE of the GPU's free memory,
else "host" when they fit in HOST_SHARE of the node's available memory, else "off"; the log line says
which and why. Both paths follow the same plan (loader.train_plan / eval_plan), so they give the same
batches: same order, flips, resume position and rank split (tested). Batches come as uint8 tensors on
the training device; the train step turns them into floats.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from demakeup_dist.choices import DATA_CACHES, SPLITS, check_choice
from demakeup_dist.data import loader
from demakeup_dist.data.gpu_decode import Decoder, finish, gpu_jpeg_decoder
from demakeup_dist.data.resident import Resident, decode_split, layout, store_bytes, store_dir
from demakeup_dist.data.shardset import ShardSet

log = logging.getLogger(__name__)

# The decoded set may take this share of the GPU's free memory: the rest is for training (p4 at batch
# 64 in bf16 peaks at ~5-8 GB) and the allocator's slack.
DEVICE_SHARE = 0.5
HOST_SHARE = 0.5  # of MemAvailable: the loader workers, the page cache and the other jobs keep the rest


def host_available() -> int:
    """Bytes of memory the kernel says can be allocated without swapping (MemAvailable)."""
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def choose_cache(mode: str, need: int, device: torch.device) -> tuple[str, str]:
    """(placement, why) for `need` decoded bytes: placement "device", "host" or "off"."""
    check_choice("--data-cache", mode, DATA_CACHES)
    gib = need / 2**30
    if mode == "device" and device.type != "cuda":
        mode = "host"  # on a CPU the host memory is the device's memory
    if mode != "auto":
        return mode, f"asked for (--data-cache {mode}; decoded set {gib:.2f} GiB)"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need <= DEVICE_SHARE * free:
            return "device", f"the decoded set ({gib:.2f} GiB) fits in {DEVICE_SHARE:.0%} of the GPU's free " \
                             f"{free / 2**30:.1f} GiB"
    available = host_available()
    if need <= HOST_SHARE * available:
        return "host", f"the decoded set ({gib:.2f} GiB) fits in {HOST_SHARE:.0%} of the {available / 2**30:.1f} " \
                       "GiB of available host memory" + (" but not on the GPU" if device.type == "cuda" else "")
    return "off", f"the decoded set ({gib:.2f} GiB) fits neither on the device nor in host memory " \
                  f"({available / 2**30:.1f} GiB available): streaming from the shards"


class DataFeed:
    """Batches of this process (`batch_size` per rank) for training and evaluation, uint8 on `device`.

    `barrier()` synchronises the processes (accelerate's wait_for_everyone); `agree(bad)` returns
    whether any process passed True (a collective). `token` names this run's store in /dev/shm, so
    two runs on one node never share one. `hr_decoder` decodes the streamed HR JPEGs in this process
    (default: nvJPEG on a CUDA device when torchvision imports, else the workers decode them).
    Use as a context manager, or call `close()`.
    """

    def __init__(self, shards: Path | ShardSet, *, with_hr: bool, batch_size: int, device: torch.device | str,
                 cache: str = "auto", rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 num_workers: int = 2, barrier: Callable[[], None] = lambda: None,
                 agree: Callable[[bool], bool] = bool, token: str | None = None, progress: bool = True,
                 hr_decoder: Decoder | None = None):
        self.shards = ShardSet.open(shards)
        self.with_hr, self.batch_size, self.device = with_hr, batch_size, torch.device(device)
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.shards.check_trainable(with_hr)
        self.steps_per_epoch = loader.steps_per_epoch(self.shards, global_batch=batch_size * world_size,
                                                      world_size=world_size)
        self.shards.verify_checksums(list(SPLITS), rank, world_size, agree)
        regions = {split: layout(self.shards, split, with_hr) for split in SPLITS}
        self.placement, self.why = choose_cache(cache, sum(store_bytes(r) for r in regions.values()), self.device)
        self.resident: dict[str, Resident] = {}
        self.hr_decoder, self.no_gpu_decode = None, "HR not read"
        if self.placement != "off":
            # One store per node (named by its first rank): nodes that share a /dev/shm never collide.
            self._load_resident(regions, local_rank, barrier, agree, f"{token or os.getpid()}-n{rank - local_rank}",
                                progress)
        elif with_hr:
            self.hr_decoder, self.no_gpu_decode = (hr_decoder, "") if hr_decoder else gpu_jpeg_decoder(self.device)

    def _load_resident(self, regions: dict[str, dict], local_rank: int, barrier: Callable[[], None],
                       agree: Callable[[bool], bool], token: str, progress: bool) -> None:
        """The node's first process decodes every split into a shared store; each process maps it."""
        folder = store_dir(sum(store_bytes(r) for r in regions.values()))
        paths = {split: folder / f"demakeup-{self.shards.identity[:12]}-{token}-{split}-"
                                 f"{'hr' if self.with_hr else 'lr'}.u8" for split in SPLITS}
        failed: BaseException | None = None
        if local_rank == 0:
            # What a killed earlier attempt of this run left (a store, or a half-written one) is RAM in /dev/shm.
            for stale in folder.glob(f"*demakeup-*-{token}-*"):
                stale.unlink(missing_ok=True)
            try:
                for split in SPLITS:
                    # Every core of the node: its other processes only wait for this store.
                    decode_split(self.shards, split, regions[split], paths[split],
                                 workers=None if self.num_workers else 1, progress=progress)
            except Exception as exc:  # the other processes must not wait for a store that never comes
                failed = exc
        barrier()
        if agree(failed is not None):
            self._remove(paths, local_rank)
            raise failed or RuntimeError("another process failed to decode the shard set (see its log)")
        try:
            for split in SPLITS:
                mapped = Resident.map(paths[split], regions[split])
                self.resident[split] = mapped.to(self.device) if self.placement == "device" else mapped
        finally:
            barrier()  # every process has mapped (or copied) the store: its name can go
            self._remove(paths, local_rank)

    @staticmethod
    def _remove(paths: dict[str, Path], local_rank: int) -> None:
        if local_rank == 0:
            for path in paths.values():
                path.unlink(missing_ok=True)
                Path(f"{path}.names.json").unlink(missing_ok=True)

    def describe(self) -> str:
        if self.placement == "off":
            hr = "HR JPEGs decoded on the GPU (nvJPEG)" if self.hr_decoder else \
                f"HR decoded by the CPU workers ({self.no_gpu_decode})"
            return (f"data: streaming from {self.shards.root} with {self.num_workers} worker(s) per process, {hr}: "
                    f"{self.why}")
        where = "on the GPU" if self.placement == "device" else "in shared host memory"
        return f"data: decoded once and resident {where}: {self.why}"

    def train(self, *, seed: int, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """This process's batches of a training epoch, from `start_step`."""
        plan = loader.train_plan(self.shards, batch_size=self.batch_size, seed=seed, epoch=epoch, rank=self.rank,
                                 world_size=self.world_size, start_step=start_step)
        return self._batches("train", plan)

    def eval(self, split: str) -> Iterator[dict]:
        """This process's share of `split`, each sample once across processes."""
        plan = loader.eval_plan(self.shards, split, batch_size=self.batch_size, rank=self.rank,
                                world_size=self.world_size)
        return self._batches(split, plan)

    def _batches(self, split: str, plan: list[loader.Batch]) -> Iterator[dict]:
        if split in self.resident:
            batches = (self.resident[split].batch(indices, flips, self.device) for indices, flips in plan)
            # From host memory to a GPU, gather the next batches while the GPU runs this step.
            return _prefetch(batches) if self.placement == "host" and self.device.type == "cuda" else batches
        streamed = loader.stream(self.shards, split, plan, with_hr=self.with_hr, num_workers=self.num_workers,
                                 uint8=True, defer=("hr",) if self.hr_decoder else ())
        moved = ({k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
                 for b in streamed)
        return (finish(b, self.hr_decoder) for b in moved) if self.hr_decoder else moved

    def close(self) -> None:
        self.resident.clear()

    def __enter__(self) -> DataFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prefetch(batches: Iterator[dict], depth: int = 2) -> Iterator[dict]:
    """Run `batches` in a thread, `depth` ahead (index_select and pinned copies release the GIL)."""
    ready: queue.Queue = queue.Queue(depth)
    done = object()

    def work() -> None:
        try:
            for batch in batches:
                ready.put(batch)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)
        ready.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := ready.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
