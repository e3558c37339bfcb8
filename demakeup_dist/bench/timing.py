"""One timed case: a network in the training loop's own step (train/step.py), fed and timed."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from demakeup_dist.bench.config import BenchConfig
from demakeup_dist.bench.results import Row
from demakeup_dist.bench.variants import Variant
from demakeup_dist.data.feed import DataFeed
from demakeup_dist.train.config import TrainConfig
from demakeup_dist.train.distributed import make_accelerator
from demakeup_dist.train.recipe import TARGET_KEYS, make_optimizer, make_scheduler
from demakeup_dist.train.step import ModelLoss, TrainStep

log = logging.getLogger(__name__)


class Case:
    """A built network with the training loop's step and its optimizer, ready to be fed and timed."""

    def __init__(self, model: str, variant: Variant, config: BenchConfig) -> None:
        self.config = config
        net = variant.build(model, grad_checkpointing=config.grad_checkpointing)
        train = TrainConfig(precision=config.precision, compile=config.compile, compile_mode=config.compile_mode)
        self.accelerator = make_accelerator(train, cpu=config.device == "cpu")
        self.device = self.accelerator.device
        net = net.to(self.device)
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        self.tasks: tuple[str, ...] = net.tasks  # type: ignore[assignment]
        module = ModelLoss.for_config(net, train)
        optimizer = make_optimizer(net, train)  # as the training loop
        # Any horizon will do: the learning rate's value does not change the work of a step.
        scheduler = make_scheduler(optimizer, 10 * (config.warmup + config.steps), train.warmup_fraction)
        module, optimizer, scheduler = self.accelerator.prepare(module, optimizer, scheduler)
        self.step = TrainStep(self.accelerator, module, optimizer, scheduler, self.tasks, train.grad_clip_norm)

    def memory_batches(self) -> Iterator[dict]:
        """The same synthetic uint8 batch every step, already on the device (the feed's contract)."""
        gen = torch.Generator().manual_seed(0)
        size, batch = self.config.size, self.config.batch
        sides = {"makeup": size, **{TARGET_KEYS[t]: (4 if t == "sr" else 1) * size for t in self.tasks}}
        images = {key: torch.randint(0, 256, (batch, 3, side, side), generator=gen, dtype=torch.uint8)
                  .to(self.device) for key, side in sides.items()}  # (B, 3, side, side) uint8
        return itertools.repeat(images)

    def shard_batches(self, shards: Path) -> Iterator[dict]:
        """Training batches of `shards` through the training loop's data feed, epoch after epoch."""
        feed = DataFeed(shards, with_hr="sr" in self.tasks, batch_size=self.config.batch, device=self.device,
                        cache=self.config.data_cache, num_workers=self.config.num_workers, progress=False)
        log.info(feed.describe())
        for epoch in itertools.count():
            yield from feed.train(seed=0, epoch=epoch)

    def run(self, batches: Iterator[dict], steps: int) -> tuple[float, float]:
        """(wall seconds, seconds waiting for batches) of `steps` steps, between device synchronisations."""
        self._sync()
        start, wait = time.perf_counter(), 0.0
        for _ in range(steps):
            asked = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - asked
            self.step(batch)
        self._sync()
        return time.perf_counter() - start, wait

    def measure(self, row: Row, shards: Path | None) -> None:
        """Time `config.steps` steps on `row.feed` and fill the row's numbers."""
        config = self.config
        batches = self.memory_batches() if row.feed == "memory" else self.shard_batches(shards)
        try:
            # Untimed first: the loader's workers starting and reading their first shards; for the
            # memory feed one step, which refills the allocator's cache (emptied at the gate).
            self.run(batches, config.warmup if row.feed == "shards" else 1)
            if config.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds, wait = self.run(batches, config.steps)
        finally:
            if hasattr(batches, "close"):
                batches.close()  # stops the loader's worker processes
        row.img_per_s = config.batch * config.steps / seconds
        row.step_ms = 1000 * seconds / config.steps
        if config.device == "cuda":
            row.peak_mem_gb = torch.cuda.max_memory_allocated() / 2**30
        if row.feed == "shards":
            row.data_wait = wait / seconds

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
