"""`demakeup bench`: train-step throughput of the networks, timed against a straightforward reference.

A train step is what train/loop.py runs: forward, the brief's loss (`recipe.restoration_loss`),
backward, clip to norm 1, AdamW (`recipe.make_optimizer`, fused on CUDA), LR schedule; bf16
autocast and channels_last on CUDA. Batches are either synthetic tensors already on the device
("memory" feed) or real shards read by `loader.train_batches(uint8=True)` ("shards" feed), whose
rate against the memory feed shows what the input pipeline costs. Each (model, variant) is built,
warmed up (that is when torch.compile compiles) and timed over `steps` steps, wall clock between
two device synchronisations. The reference (models/reference_arch.py) runs the same way in the
same process, so "x ref" compares like with like.
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
from torch import Tensor, nn

from demakeup_dist.data import loader
from demakeup_dist.models import build_model
from demakeup_dist.models.layers import implementation
from demakeup_dist.models.reference_arch import build_reference
from demakeup_dist.train.config import TrainConfig
from demakeup_dist.train.recipe import TARGET_KEYS, make_optimizer, make_scheduler, restoration_loss

log = logging.getLogger(__name__)

FEEDS = ("memory", "shards")
Batch = tuple[Tensor, dict[str, Tensor]]


@dataclass(frozen=True)
class Variant:
    """One way of building and stepping a network; `fused_step`: model + loss in one module."""

    summary: str
    reference: bool = False
    norm: str | None = None  # layers.InstanceNorm2d formulation; None: the default
    sr_head: str | None = None  # layers.SRHead formulation; None: the default
    fused_step: bool = True
    overrides: tuple[tuple[str, Any], ...] = ()


VARIANTS: dict[str, Variant] = {
    "reference": Variant("plain PyTorch p3/p4 (models/reference_arch.py) in train/loop.py's step",
                         reference=True, fused_step=False),
    "ours": Variant("the project's model; model + loss one module (one graph), targets uint8 until the loss"),
    "ours-loopstep": Variant("the project's model in train/loop.py's step: loss outside, float targets",
                             fused_step=False),
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
    compile_mode: str | None = None
    grad_checkpointing: bool = False
    cudnn_benchmark: bool = True
    num_workers: int = 2

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

    @property
    def mode(self) -> str:
        mode = f"compile({self.compile_mode})" if self.compile and self.compile_mode else \
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


class ModelLoss(nn.Module):
    """`restoration_loss(model(x), targets)` as one module, so torch.compile fuses the loss into the model.

    forward(x, targets): x float (B, 3, H, W) in [0, 1]; targets per task, uint8 in [0, 255] (converted
    here by `loader.unit_float`, as `loader.to_float` does) or float in [0, 1]. Returns the scalar loss.
    Fusing matters for p4: its (B, 3, 4H, 4W) float32 prediction then never goes through memory.
    """

    def __init__(self, model: nn.Module, weights: dict[str, float], scale: float) -> None:
        super().__init__()
        self.model, self.weights, self.scale = model, weights, scale

    def forward(self, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        targets = {k: loader.unit_float(t) if t.dtype == torch.uint8 else t for k, t in targets.items()}
        return restoration_loss(self.model(x), targets, self.weights, self.scale)[0]


class _Case:
    """A built network with its optimizer and `step(x, targets)`: one optimizer step as the loop does it."""

    def __init__(self, name: str, variant: Variant, config: BenchConfig) -> None:
        self.device = torch.device(config.device)
        overrides = dict(variant.overrides)
        if variant.reference:
            model: nn.Module = build_reference(name)
        else:
            overrides.update({"grad_checkpointing": True} if config.grad_checkpointing else {})
            with implementation(norm=variant.norm, sr_head=variant.sr_head):
                model = build_model(name, **overrides)
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        train = TrainConfig()
        self.tasks: tuple[str, ...] = model.tasks  # type: ignore[assignment]
        self.params = list(model.parameters())
        self.clip = train.grad_clip_norm
        self.optimizer = make_optimizer(model, train, fused=self.device.type == "cuda")
        # Any horizon will do: the learning rate's value does not change the work of a step.
        self.scheduler = make_scheduler(self.optimizer, 10 * (config.warmup + config.steps), train.warmup_fraction)
        self.uint8_targets = variant.fused_step
        self.autocast = config.precision == "bf16"
        weights = {"demakeup": train.demakeup_loss_weight, "sr": train.sr_loss_weight}
        self.forward: Callable[[Tensor, dict[str, Tensor]], Tensor]
        if variant.fused_step:
            self.forward = _compiled(ModelLoss(model, weights, train.loss_scale), config)
        else:
            net = _compiled(model, config)
            self.forward = lambda x, t: restoration_loss(net(x), t, weights, train.loss_scale)[0]

    def step(self, x: Tensor, targets: dict[str, Tensor]) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.forward(x, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def memory_batches(self, config: BenchConfig) -> Iterator[Batch]:
        """The same synthetic batch every step, already on the device."""
        gen = torch.Generator().manual_seed(0)
        sizes = {"demakeup": config.size, "sr": 4 * config.size}
        x = torch.rand(config.batch, 3, config.size, config.size, generator=gen).to(self.device)
        targets = {t: torch.randint(0, 256, (config.batch, 3, sizes[t], sizes[t]), generator=gen, dtype=torch.uint8)
                   for t in self.tasks}
        targets = {t: v.to(self.device) if self.uint8_targets else loader.to_float({t: v}, self.device)[t]
                   for t, v in targets.items()}
        return itertools.repeat((x, targets))

    def shard_batches(self, shards: Path, config: BenchConfig) -> Iterator[Batch]:
        """Training batches of `shards`, epoch after epoch, moved to the device as train/loop.py does."""
        for epoch in itertools.count():
            for raw in loader.train_batches(shards, batch_size=config.batch, with_hr="sr" in self.tasks, seed=0,
                                            epoch=epoch, num_workers=config.num_workers, uint8=True):
                keys = [TARGET_KEYS[t] for t in self.tasks]
                if self.uint8_targets:
                    x = loader.to_float({"makeup": raw["makeup"]}, self.device)["makeup"]
                    moved = {k: raw[k].to(self.device, non_blocking=True) for k in keys}
                else:
                    batch = loader.to_float(raw, self.device)
                    x, moved = batch["makeup"], {k: batch[k] for k in keys}
                yield x, {t: moved[TARGET_KEYS[t]] for t in self.tasks}

    def run(self, batches: Iterator[Batch], steps: int) -> tuple[float, float]:
        """(wall seconds, seconds waiting for batches) of `steps` steps, between device synchronisations."""
        self._sync()
        start, wait = time.perf_counter(), 0.0
        for _ in range(steps):
            asked = time.perf_counter()
            x, targets = next(batches)
            wait += time.perf_counter() - asked
            self.step(x, targets)
        self._sync()
        return time.perf_counter() - start, wait

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _compiled(module: nn.Module, config: BenchConfig) -> Any:
    return torch.compile(module, mode=config.compile_mode) if config.compile else module


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
