"""Resume rules: which checkpoint to resume from, and which config and data changes a resume may make."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demakeup_dist.choices import RESUME_MODES
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.checkpoint import TrainState, check_checkpoint
from demakeup_dist.train.config import TrainConfig, load_config, merge
from demakeup_dist.train.safe_load import CorruptCheckpoint

# Fields that only change how a run is executed or reported, not what it computes.
RESUME_MAY_CHANGE = {
    "num_workers", "data_cache", "eval_every", "save_every_steps", "keep_checkpoints", "log_every",
    "stop_check_every", "sample_panels", "wandb", "wandb_project", "wandb_entity", "wandb_group", "wandb_tags",
    "compile", "compile_mode", "precision", "strategy", "zero", "grad_checkpointing", "channels_last",
    "profile_steps",
}


@dataclass
class ResumePoint:
    checkpoint: Path
    state: TrainState
    passed_over: list[str] = field(default_factory=list)
    """Why each newer checkpoint was unusable: the run should warn about them."""


def resolve_resume(run: RunDir, resume: str | None) -> ResumePoint | None:
    """The checkpoint to start from, or None for a fresh start (`auto` with no checkpoint).

    Every file of the chosen checkpoint has been read (`check_checkpoint`). With auto / latest, a
    damaged newest checkpoint (a crash or a full disk while saving) is passed over for the newest
    complete one; a tampered one (UnsafeCheckpoint) stops the resume.
    """
    latest = run.latest_checkpoint()
    if resume is None:
        if latest is not None:
            raise ValueError(
                f"run dir {run} already holds checkpoints (latest {latest.name}): pass --resume latest "
                "to continue it, or choose a new --run-dir"
            )
        if run.read_status().get("status") == "finished":
            raise ValueError(f"run dir {run} holds a finished run: choose a new --run-dir")
        return None
    if resume == "auto" and latest is None:
        return None
    if resume in RESUME_MODES:
        if latest is None:
            raise FileNotFoundError(
                f"--resume latest: no checkpoint in {run.checkpoints_dir}; start without --resume "
                "(or with --resume auto, which starts fresh when there is none)"
            )
        return _newest_complete(run)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint directory (expected RUN_DIR/checkpoints/step-*)")
    if not run.is_checkpoint(path):
        raise ValueError(
            f"--resume {resume} is a checkpoint of run dir {path.resolve().parent.parent}, not of --run-dir "
            f"{run}: to continue that run, pass --run-dir {path.resolve().parent.parent}"
        )
    return ResumePoint(path, check_checkpoint(path))


def _newest_complete(run: RunDir) -> ResumePoint:
    damaged: list[str] = []
    for path in reversed(run.checkpoints()):
        try:
            return ResumePoint(path, check_checkpoint(path), damaged)
        except CorruptCheckpoint as exc:
            damaged.append(f"checkpoint {path.name} is unusable, so the previous one is used: {exc}")
    raise ValueError(
        f"every checkpoint in {run.checkpoints_dir} is damaged:\n  " + "\n  ".join(damaged)
        + "\nstart a new --run-dir"
    )


def resolve_config(model: str, config_file: Path | None, run_dir: Path | None, resume: str | None,
                   sets: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """The config a `demakeup train` command line means. On a resume the run's own config is the base, so
    an unchanged command line resumes as is; otherwise `load_config`'s layers (defaults < YAML < sets <
    overrides)."""
    if overrides.get("batch_size") is not None and overrides.get("batch_per_gpu") is not None:
        raise ValueError("--batch-size (global) and --batch-per-gpu exclude each other: give one")
    saved = RunDir(run_dir).read_config() if (resume and run_dir and not config_file) else None
    if saved is None:
        config = load_config(model, config_file, sets, **overrides)
    elif saved.model != model:
        raise ValueError(f"run dir {run_dir} belongs to model {saved.model!r}, not {model!r}")
    else:
        config = TrainConfig(**merge(saved.to_dict(), sets, {k: v for k, v in overrides.items() if v is not None}))
    if overrides.get("batch_size") is not None:  # a global batch asked for on the command line decides
        config = dataclasses.replace(config, batch_per_gpu=None)
    return config


def check_same_model(run: RunDir, model: str) -> None:
    saved = run.read_config()
    if saved is not None and saved.model != model:
        raise ValueError(
            f"run dir {run} belongs to model {saved.model!r}, not {model!r}: choose another --run-dir"
        )


def check_resume_compatible(run: RunDir, new: TrainConfig) -> None:
    """Refuse a resume that would silently train a different thing than the checkpoint holds."""
    saved = run.read_config()
    if saved is None:
        raise FileNotFoundError(
            f"{run.config_file} is missing, so the settings its checkpoints were trained "
            "with are unknown: put it back (e.g. from a copy or the wandb run), or start a new --run-dir"
        )
    check_same_model(run, new.model)
    old, cur = dataclasses.asdict(saved), dataclasses.asdict(new)
    changed = {k: (old[k], cur[k]) for k in old if k not in RESUME_MAY_CHANGE and old[k] != cur[k]}
    if changed:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        batch = (f" The global batch follows --batch-per-gpu x --grad-accum x processes: keep it on this process "
                 f"count with --batch-size {old['batch_size']} (and --grad-accum), or resume on the run's own "
                 "process count." if "batch_size" in changed else "")
        raise ValueError(
            f"cannot resume {run}: the config differs from the checkpoint's ({diff}).{batch} "
            "Resume without these options, or start a new --run-dir"
        )


def check_same_shards(state: TrainState, shards_id: str, shards: Path, allow_other: bool) -> None:
    """Refuse to continue a run on another shard set than it trained on, unless asked explicitly."""
    if state.shards_id and state.shards_id != shards_id and not allow_other:
        raise ValueError(
            f"the checkpoint was trained on another shard set (id {state.shards_id[:12]}) than --shards "
            f"{shards} (id {shards_id[:12]}): resume with the run's own shards, or pass --allow-other-shards "
            "to continue on these on purpose"
        )



def deepspeed_ranks(checkpoint: Path) -> int:
    """Data-parallel ranks whose ZeRO optimizer shards a DeepSpeed checkpoint holds (0: none, not DeepSpeed)."""
    return len(list(Path(checkpoint).glob("**/zero_pp_rank_*_mp_rank_00_optim_states.pt")))


def check_world_size(point: ResumePoint, world: int, strategy: str) -> str | None:
    """Before anything is loaded: a line for the log when the process count changed (DDP keeps the same
    global batches on any count, so the run continues as it would have); ValueError for a DeepSpeed
    checkpoint of another data-parallel size, whose ZeRO shards DeepSpeed cannot load."""
    saved = deepspeed_ranks(point.checkpoint) or point.state.world_size
    if not saved or saved == world:
        return None
    if strategy == "deepspeed" or deepspeed_ranks(point.checkpoint):
        raise ValueError(
            f"{point.checkpoint} holds DeepSpeed ZeRO state of {saved} data-parallel ranks, this run has {world}: "
            f"DeepSpeed cannot load it on another count. Resume on {saved} processes (GPUs), or convert it "
            f"with DeepSpeed's `python -m deepspeed.checkpoint.ds_to_universal --input_folder "
            f"{point.checkpoint}/pytorch_model --output_folder UNIVERSAL` (loading a universal checkpoint "
            f"is not built into demakeup yet)")
    return (f"world size changed: the checkpoint was written by {saved} process(es), this run has {world}; "
            f"the global batches are the same, so the run continues as it would have (up to float summation order)")
