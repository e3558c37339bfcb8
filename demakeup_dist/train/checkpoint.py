"""Run-dir checkpoints: full resumable state (accelerate `save_state`) and plain weight files.

Layout under RUN_DIR:
  checkpoints/step-00001234/   one complete accelerate state (model, optimizer, scheduler, RNG of every
                               rank, and `TrainState`: epoch, step in epoch, global step, best PSNR)
  checkpoints/step-*.tmp/      a save in progress; never read, removed by the next save
  best.safetensors, model.safetensors   weights only, self-describing: see demakeup_dist.weights

A checkpoint directory appears under its final name only after every rank finished writing it (rename
of a temporary directory), so a run killed at any moment leaves either the old or the new checkpoint,
never a partial one that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path


_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    """Where the run is, saved inside every checkpoint (accelerate `register_for_checkpointing`)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_psnr: float = float("-inf")
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: Path, global_step: int, keep: int) -> Path:
    """Collective: every rank must call it. Returns the final directory."""
    root = checkpoint_dir(run_dir)
    final = root / f"step-{global_step:08d}"
    tmp = root / f"step-{global_step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
