"""Run-dir rules: which checkpoint to resume from, and which config changes a resume may make."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from demakeup_dist.train.checkpoint import latest_checkpoint
from demakeup_dist.train.config import TrainConfig, config_from_file
from demakeup_dist.train.tracking import read_status

RESUME_MODES = ("auto", "latest")

# Fields that only change how a run is executed or reported, not what it computes.
RESUME_MAY_CHANGE = {
    "num_workers", "eval_every", "save_every_steps", "keep_checkpoints", "log_every", "stop_check_every",
    "sample_panels", "wandb", "wandb_project", "wandb_entity", "wandb_group", "wandb_tags", "compile", "precision", "strategy", "zero",
    "grad_checkpointing", "channels_last",
}


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint directory to start from, or None for a fresh start (`auto` with no checkpoint)."""
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir)
    if resume is None:
        if latest is not None:
            raise ValueError(
                f"run dir {run_dir} already holds checkpoints (latest {latest.name}): pass --resume latest "
                "to continue it, or choose a new --run-dir"
            )
        if read_status(run_dir).get("status") == "finished":
            raise ValueError(f"run dir {run_dir} holds a finished run: choose a new --run-dir")
        return None
    if resume == "auto":
        return latest
    if resume == "latest":
        if latest is None:
            raise FileNotFoundError(
                f"--resume latest: no checkpoint in {run_dir / 'checkpoints'}; start without --resume "
                "(or with --resume auto, which starts fresh when there is none)"
            )
        return latest
    path = Path(resume)
    if not (path / "custom_checkpoint_0.pkl").is_file() and not any(path.glob("custom_checkpoint_0.*")):
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint directory (expected RUN_DIR/checkpoints/step-*)")
    return path


def saved_config(run_dir: Path) -> TrainConfig | None:
    path = Path(run_dir) / "config.yaml"
    return config_from_file(path) if path.is_file() else None


def check_same_model(run_dir: Path, model: str) -> None:
    saved = saved_config(run_dir)
    if saved is not None and saved.model != model:
        raise ValueError(
            f"run dir {run_dir} belongs to model {saved.model!r}, not {model!r}: choose another --run-dir"
        )


def check_resume_compatible(saved: TrainConfig, new: TrainConfig, run_dir: Path) -> None:
    """Refuse a resume that would silently train a different thing than the checkpoint holds."""
    check_same_model(run_dir, new.model)
    old, cur = dataclasses.asdict(saved), dataclasses.asdict(new)
    changed = {k: (old[k], cur[k]) for k in old if k not in RESUME_MAY_CHANGE and old[k] != cur[k]}
    if changed:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ValueError(
            f"cannot resume {run_dir}: the config differs from the checkpoint's ({diff}). "
            "Resume without these options, or start a new --run-dir"
        )


def truncate_metrics(run_dir: Path, global_step: int) -> None:
    """Drop evaluation records written after the checkpoint we resume from (they will be recomputed)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= global_step]
    tmp = Path(f"{path}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(path)
