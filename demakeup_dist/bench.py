"""`demakeup bench`: train-step throughput of the networks, timed against a straightforward reference.

A step is the training loop's own (train/step.py: network + loss in one module, uint8 batches turned
into floats inside it, backward, clip to norm 1, AdamW fused on CUDA, LR schedule, through an
accelerator with the run's precision; channels_last on CUDA). Batches are either synthetic uint8
tensors already on the device ("memory" feed) or real shards through the training loop's data feed
(data/feed.py, with `data_cache` as `demakeup train --data-cache`: "shards" feed), whose rate against
the memory feed shows what the input pipeline costs. Each (model, variant) is built, warmed up (that
is when torch.compile compiles) and timed over `steps` steps, wall clock between two device
synchronisations. The reference network (models/reference_arch.py) runs through the same step in the
same process, so "x ref" compares networks like with like.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import itertools
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from demakeup_dist.data.feed import DataFeed
from demakeup_dist.models import build_model
from demakeup_dist.models.layers import implementation
from demakeup_dist.models.reference_arch import build_reference
from demakeup_dist.train.config import TrainConfig
from demakeup_dist.train.distributed import make_accelerator
from demakeup_dist.train.recipe import TARGET_KEYS, make_optimizer, make_scheduler
from demakeup_dist.train.step import ModelLoss, TrainStep, compile_module

log = logging.getLogger(__name__)

FEEDS = ("memory", "shards")


@dataclass(frozen=True)
class Variant:
    """One way of building a network; every variant runs the training loop's step."""

    summary: str
    reference: bool = False
    norm: str | None = None  # layers.InstanceNorm2d formulation; None: the default
    sr_head: str | None = None  # layers.SRHead formulation; None: the default
    overrides: tuple[tuple[str, Any], ...] = ()


VARIANTS: dict[str, Variant] = {
    "reference": Variant("plain PyTorch p3/p4 (models/reference_arch.py) in the loop's step", reference=True),
    "ours": Variant("the project's network in the loop's step (what `demakeup train` runs)"),
    "ours-reductions": Variant("ours, InstanceNorm as var_mean reductions in eager mode too", norm="reductions"),
    "ours-native": Variant("ours, F.instance_norm under torch.compile too", norm="native"),
    "ours-layered": Variant("ours, the SR head run layer by layer", sr_head="layered"),
    "ours-ckpt-decoder": Variant("ours with checkpoint_decoder=True (p4 only): the decoder blocks recomputed",
                                 overrides=(("checkpoint_decoder", True),)),
}


@dataclass(frozen=True)
class BenchConfig:
    """What every timed case shares. `for_device` gives the defaults: tiny on CPU, the brief's on CUDA."""

    device: str = "cpu"
    batch: int = 2
    size: int = 64
    steps: int = 3
    warmup: int = 1
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"
    grad_checkpointing: bool = False
    cudnn_benchmark: bool = True
    num_workers: int = 2
    data_cache: str = "auto"

    @classmethod
    def for_device(cls, device: str, **changes: Any) -> BenchConfig:
        """Defaults for `device` ("cpu" or "cuda"), with every non-None entry of `changes` applied."""
        base = cls(device="cuda", batch=64, size=224, steps=20, warmup=5, precision="bf16") if device == "cuda" \
            else cls(device=device)
        return replace(base, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        """Raise ValueError naming the bad option."""
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {self.device}: choose cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: this machine has no CUDA GPU that PyTorch can use; use --device cpu")
        if self.size < 32 or self.size % 32:
            raise ValueError(f"--size {self.size}: the networks take sides that are multiples of 32 (e.g. 224)")
        for option, value, least in (("--batch", self.batch, 1), ("--steps", self.steps, 1),
                                     ("--warmup", self.warmup, 1), ("--num-workers", self.num_workers, 0)):
            if value < least:
                raise ValueError(f"{option} {value}: must be at least {least}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision {self.precision}: choose bf16 or fp32")
        # The run's own checks, so the bench refuses exactly what `demakeup train` refuses.
        TrainConfig(compile_mode=self.compile_mode, data_cache=self.data_cache)

    @property
    def mode(self) -> str:
        mode = f"compile({self.compile_mode})" if self.compile and self.compile_mode != "default" else \
            "compile" if self.compile else "eager"
        return mode + "+ckpt" if self.grad_checkpointing else mode


@dataclass
class Row:
    """One timed case. Rates are images per second; `error` is set (and numbers None) when it failed."""

    model: str
    variant: str
    mode: str
    feed: str
    img_per_s: float | None = None
    step_ms: float | None = None
    peak_mem_gb: float | None = None  # CUDA only: max allocated during the timed steps
    data_wait: float | None = None  # shards feed: fraction of the wall time spent waiting for batches
    ratio_reference: float | None = None  # img/s over the reference's, same model and mode, memory feed
    ratio_memory: float | None = None  # shards feed: img/s over the same case's memory feed
    error: str | None = None


class Gate:
    """Lets benchmark processes that share one GPU compile at the same time but time one at a time.

    Each compiling process prepares (builds, compiles, warms up) its first case while the others do
    theirs; then (at once, if it does not compile) `run_train` calls `enter()`: the process reports
    ready, waits until `parties` processes are ready (or until
    `timeout_s` after the gate was opened) and takes an exclusive lock on FOLDER/lock that it keeps
    until its `with` block ends, so timed steps never share the GPU. A process that fails before
    `enter()` is counted as ready when its `with` block ends, so the others do not wait for it.
    """

    def __init__(self, folder: Path, parties: int, timeout_s: float = 300.0) -> None:
        if parties < 1:
            raise ValueError(f"--gate-parties {parties}: must be at least 1")
        self.folder, self.parties, self.timeout_s = Path(folder), parties, timeout_s
        self.all_ready: bool | None = None  # set by enter(): False if it stopped waiting at the timeout
        self._deadline = 0.0
        self._marked = False
        self._lock: Any = None

    def __enter__(self) -> Gate:
        (self.folder / "ready").mkdir(parents=True, exist_ok=True)
        self._deadline = time.monotonic() + self.timeout_s
        return self

    def __exit__(self, *exc: object) -> None:
        self._mark_ready()
        if self._lock is not None:
            self._lock.close()  # releases the flock

    def enter(self) -> None:
        """Report ready, wait for the others, take the lock (no-op after the first call)."""
        if self._lock is not None:
            return
        self._mark_ready()
        ready = 0
        while (ready := len(list((self.folder / "ready").iterdir()))) < self.parties \
                and time.monotonic() < self._deadline:
            time.sleep(0.5)
        self.all_ready = ready >= self.parties
        if not self.all_ready:
            log.warning("gate: %d of %d processes ready at the %.0f s timeout; timing anyway",
                        ready, self.parties, self.timeout_s)
        self._lock = open(self.folder / "lock", "a")  # noqa: SIM115 -- held until __exit__
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def _mark_ready(self) -> None:
        if not self._marked:
            (self.folder / "ready" / f"{os.getpid()}-{id(self)}").touch()
            self._marked = True


class _Case:
    """A built network with the training loop's step (train/step.py) and its optimizer."""

    def __init__(self, name: str, variant: Variant, config: BenchConfig) -> None:
        overrides = dict(variant.overrides)
        if variant.reference:
            net: nn.Module = build_reference(name)
        else:
            overrides.update({"grad_checkpointing": True} if config.grad_checkpointing else {})
            with implementation(norm=variant.norm, sr_head=variant.sr_head):
                net = build_model(name, **overrides)
        train = TrainConfig(precision=config.precision)
        self.accelerator = make_accelerator(train, cpu=config.device == "cpu")
        self.device = self.accelerator.device
        net = net.to(self.device)
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        self.tasks: tuple[str, ...] = net.tasks  # type: ignore[assignment]
        weights = {"demakeup": train.demakeup_loss_weight, "sr": train.sr_loss_weight}
        module = ModelLoss(net, weights, train.loss_scale)
        if config.compile:
            compile_module(module, config.compile_mode)
        optimizer = make_optimizer(net, train, fused=self.device.type == "cuda")
        # Any horizon will do: the learning rate's value does not change the work of a step.
        scheduler = make_scheduler(optimizer, 10 * (config.warmup + config.steps), train.warmup_fraction)
        module, optimizer, scheduler = self.accelerator.prepare(module, optimizer, scheduler)
        self.step = TrainStep(self.accelerator, module, optimizer, scheduler, self.tasks, train.grad_clip_norm)

    def memory_batches(self, config: BenchConfig) -> Iterator[dict]:
        """The same synthetic uint8 batch every step, already on the device (the feed's contract)."""
        gen = torch.Generator().manual_seed(0)
        sides = {"makeup": config.size, **{TARGET_KEYS[t]: (4 if t == "sr" else 1) * config.size for t in self.tasks}}
        batch = {key: torch.randint(0, 256, (config.batch, 3, side, side), generator=gen, dtype=torch.uint8)
                 .to(self.device) for key, side in sides.items()}
        return itertools.repeat(batch)

    def shard_batches(self, shards: Path, config: BenchConfig) -> Iterator[dict]:
        """Training batches of `shards` through the training loop's data feed, epoch after epoch."""
        feed = DataFeed(shards, with_hr="sr" in self.tasks, batch_size=config.batch, device=self.device,
                        cache=config.data_cache, num_workers=config.num_workers, progress=False)
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

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_train(models: Sequence[str], variants: Sequence[str], config: BenchConfig, *,
              feeds: Sequence[str] = ("memory",), shards: Path | None = None, gate: Gate | None = None,
              on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Time every (model, variant) on every feed and return the rows, ratios filled in.

    Bad names or options raise ValueError before anything runs. A case that fails while running
    (out of memory, a compile error) gives rows with `error` set and the other cases still run.
    `on_row` is called with each row as soon as it is timed (ratios are added at the end).
    """
    config.check()
    unknown = [v for v in variants if v not in VARIANTS] + [f for f in feeds if f not in FEEDS]
    if unknown:
        raise ValueError(f"unknown variant or feed {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
                         f"feeds: {', '.join(FEEDS)}")
    if "shards" in feeds and shards is None:
        raise ValueError("the shards feed needs a shard folder (make_shards makes a synthetic one)")
    others = [m for m in models if m not in ("p3", "p4")]
    if others and any(VARIANTS[v].reference for v in variants):
        raise ValueError(f"the reference implementation exists for p3 and p4 only, not {', '.join(others)}: "
                         "drop `reference` from the variants or bench p3 / p4")
    rows: list[Row] = []
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = config.cudnn_benchmark  # fixed shapes: let cuDNN pick its fastest kernels
    try:
        for name, variant in itertools.product(models, variants):
            for row in _bench_case(name, variant, config, feeds, shards, gate):
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    finally:
        torch.backends.cudnn.benchmark = previous
    add_ratios(rows)
    return rows


def _bench_case(name: str, variant_name: str, config: BenchConfig, feeds: Sequence[str], shards: Path | None,
                gate: Gate | None) -> list[Row]:
    variant = VARIANTS[variant_name]
    mode = config.mode.removesuffix("+ckpt") if variant.reference else config.mode  # no checkpointing there
    rows = [Row(name, variant_name, mode, feed) for feed in feeds]
    if gate is not None and not config.compile:
        # Nothing slow to overlap with the others, and cuDNN's algorithm timing (first steps)
        # should not see their GPU work either.
        gate.enter()
    case = None
    try:
        log.info("%s %s %s: building, warming up for %d steps%s", name, variant_name, mode, config.warmup,
                 " (compiling)" if config.compile else "")
        case = _Case(name, variant, config)
        case.run(case.memory_batches(config), config.warmup)
    except Exception as exc:  # one broken case must not cost the others' numbers
        log.exception("%s %s %s failed while warming up", name, variant_name, mode)
        for row in rows:
            row.error = _describe(exc)
        case = None
    finally:
        if gate is not None:
            if config.device == "cuda":
                torch.cuda.empty_cache()  # while waiting, hold no cached memory the timed process may need
            gate.enter()
    for row in rows if case is not None else ():
        try:
            _measure(case, row, config, shards)
        except Exception as exc:
            log.exception("%s %s %s (%s feed) failed", name, variant_name, mode, row.feed)
            row.error = _describe(exc)
    del case
    gc.collect()
    if config.compile:
        torch._dynamo.reset()  # drops the compiled graphs (and the memory they hold) of this case
    if config.device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _measure(case: _Case, row: Row, config: BenchConfig, shards: Path | None) -> None:
    batches = case.memory_batches(config) if row.feed == "memory" else case.shard_batches(shards, config)
    try:
        # Untimed first: the loader's workers starting and reading their first shards; for the
        # memory feed one step, which refills the allocator's cache (emptied at the gate).
        case.run(batches, config.warmup if row.feed == "shards" else 1)
        if config.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds, wait = case.run(batches, config.steps)
    finally:
        if hasattr(batches, "close"):
            batches.close()  # stops the loader's worker processes
    row.img_per_s = config.batch * config.steps / seconds
    row.step_ms = 1000 * seconds / config.steps
    if config.device == "cuda":
        row.peak_mem_gb = torch.cuda.max_memory_allocated() / 2**30
    if row.feed == "shards":
        row.data_wait = wait / seconds


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def add_ratios(rows: Sequence[Row]) -> None:
    """Fill `ratio_reference` and `ratio_memory` of rows measured with one BenchConfig (or merged runs of one)."""
    timed = {(r.model, r.variant, r.mode, r.feed): r.img_per_s for r in rows if r.img_per_s}
    for r in rows:
        if not r.img_per_s:
            continue
        reference = timed.get((r.model, "reference", r.mode.removesuffix("+ckpt"), "memory"))
        r.ratio_reference = r.img_per_s / reference if reference else None
        memory = timed.get((r.model, r.variant, r.mode, "memory")) if r.feed == "shards" else None
        r.ratio_memory = r.img_per_s / memory if memory else None


def make_shards(folder: Path, size: int, samples: int, workers: int | None = None) -> Path:
    """Render `samples` synthetic training triplets (plus 1 val, 1 test) into FOLDER/data, pack FOLDER/shards."""
    from demakeup_dist.data.shards import write_shards
    from demakeup_dist.data.synth import synth_dataset

    data = synth_dataset(Path(folder) / "data", train=samples, val=1, test=1, size=size, workers=workers,
                         progress=False)
    write_shards(data, Path(folder) / "shards", workers=workers, progress=False)
    return Path(folder) / "shards"


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
