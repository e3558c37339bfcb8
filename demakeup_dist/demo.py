"""`demakeup demo`: the whole experiment on a synthetic dataset sized for this machine.

It synthesises faces into OUT/data/, shards them into OUT/shards/ and hands them to
`demakeup_dist.experiment.run_experiment`, which trains and reports into the same OUT (its module doc
describes the rest of the layout).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from demakeup_dist.experiment import RECOMMENDED_DIR, PhaseClock, describe_hardware, run_experiment
from demakeup_dist.machine import available_cores
from demakeup_dist.models import MODEL_NAMES
from demakeup_dist.report import EXPERIMENT_FILE
from demakeup_dist.train.config import BRIEF_LR
from demakeup_dist.train.tracking import log, setup_logging


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is. Every model gets the same data, epochs, batch and the brief's recipe."""

    size: int  # image side in px (multiple of 32); HR targets are 4x
    train: int  # training triplets (a multiple of batch_size wastes nothing)
    val: int
    test: int
    epochs: int
    batch_size: int
    lr: float | None = None  # peak learning rate (None: the config's)
    # The brief's networks stay below the identity baseline at demo scale (InstanceNorm loses the input's
    # absolute colour; docs/results.md). The recommended configuration (configs/recommended/) trains their
    # `residual` variant, which starts at identity and learns the correction, with the levers that won there.
    recommended: bool = True
    num_workers: int = 1  # data-loader processes beside the training process
    log_every: int = 16  # steps between progress lines (and img/s windows)
    # Train the networks side by side, one process per core (fewer threads each): on a small CPU the
    # convolutions of one small batch do not keep several cores busy, so lanes do more steps per second.
    side_by_side: bool = False

    def parallel(self, runs: int) -> int:
        """How many trainings run at once for `runs` trainings."""
        return max(1, min(runs, available_cores())) if self.side_by_side else 1

    def overrides(self) -> dict[str, Any]:
        """TrainConfig overrides for every model (wandb off: the demo must not need an account or network)."""
        # One checkpoint kept: enough to resume an interrupted demo, and 270 MB per ResNet34 network less.
        return dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, num_workers=self.num_workers,
                    log_every=self.log_every, wandb="disabled", keep_checkpoints=1)

    def config_dir(self) -> Path | None:
        return RECOMMENDED_DIR if self.recommended else None

    def describe(self, hardware: str) -> str:
        return (f"demo scale for {hardware}: {self.size}x{self.size} images (course: 224), {self.train} training "
                f"triplets (course: 5000), {self.epochs} epochs (brief: 300), batch {self.batch_size} (brief: 64)"
                + ("" if self.lr is None else f", peak lr {self.lr:g} (brief: {BRIEF_LR:g})")
                + (", the recommended configuration of configs/recommended/ (not the brief's: networks with "
                   "`residual: true`, the input added to the output; its other levers are listed under training)"
                   if self.recommended else ""))


# A fixed step budget (256 steps of batch 8 per network), not one sized from this machine's speed: the
# same seed then gives the same report on every machine. Measured 4.4-6 min on 2-core VMs, an estimated
# 9-10 min on the slowest of the class (docs/results.md section 6). 64 px is the smallest size at which the ResNet34 bridge is more than 1x1
# (32 px would leave p2 a single normalised pixel).
CPU_SCALE = DemoScale(size=64, train=512, val=32, test=64, epochs=4, batch_size=8, num_workers=0, side_by_side=True)
# One GPU: the course image size, 1280 updates per model (not yet timed on a GPU).
GPU_SCALE = DemoScale(size=224, train=2048, val=128, test=128, epochs=20, batch_size=32, num_workers=6)


def pick_scale() -> DemoScale:
    """GPU_SCALE when CUDA is available, else CPU_SCALE."""
    return GPU_SCALE if torch.cuda.is_available() else CPU_SCALE


def run_demo(out: Path, scale: DemoScale | None = None, *, models: tuple[str, ...] = MODEL_NAMES,
             overwrite: bool = False, workers: int | None = None, progress: bool = True, seeds: int = 1,
             seed: int | None = None) -> str:
    """Synthesise a dataset, shard it, train `models` on it and write OUT/report.md; return the table.

    `scale` defaults to `pick_scale()`. OUT must be new or empty; `overwrite` replaces an earlier demo's OUT.
    `seeds` trains every network that many times (the time grows in proportion), from `seed` (default: the
    configs' 25) up.
    """
    from demakeup_dist.data.shards import write_shards
    from demakeup_dist.data.synth import synth_dataset

    out, scale = Path(out), scale or pick_scale()
    _prepare_out(out, overwrite)
    setup_logging(None, True)
    clock = PhaseClock()
    log.info("demo at %dpx: %d train / %d val / %d test triplets, %d epochs, batch %d, %d seed(s) on %s", scale.size,
             scale.train, scale.val, scale.test, scale.epochs, scale.batch_size, seeds, describe_hardware())
    with clock.phase("synthesise"):
        synth_dataset(out / "data", train=scale.train, val=scale.val, test=scale.test, size=scale.size,
                      workers=workers, progress=progress)
    with clock.phase("shard"):
        write_shards(out / "data", out / "shards", workers=workers, progress=progress)
    notes = [scale.describe("a GPU" if torch.cuda.is_available() else "a CPU, reduced size")]
    overrides = {**scale.overrides(), **({} if seed is None else {"seed": seed})}
    return run_experiment(out / "shards", out, models=models, overrides=overrides, notes=notes, clock=clock,
                          seeds=seeds, config_dir=scale.config_dir(), parallel=scale.parallel(len(models) * seeds))


def _prepare_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(f"--out {out} already exists and is not empty: pass --overwrite to replace it, "
                              "or choose another --out")
    if not (out / EXPERIMENT_FILE).is_file() and not (out / "runs").is_dir():
        raise FileExistsError(f"--out {out} does not look like a demo output (no {EXPERIMENT_FILE}, no runs/); "
                              "refusing to delete it: choose another --out")
    shutil.rmtree(out)
