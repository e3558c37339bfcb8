"""Run-dir checkpoints: full resumable state (accelerate `save_state`) and plain weight files.

Layout under RUN_DIR:
  checkpoints/step-00001234/   one complete accelerate state (model, optimizer, scheduler, RNG of every
                               rank), train_state.json (`TrainState`: where the run is, as plain JSON)
                               and, with ema_decay, ema.safetensors (the weight average, train/ema.py)
  checkpoints/.step-*.tmp-save/  a save in progress; never read, removed by the next save
  best.safetensors, model.safetensors   weights only, self-describing: see demakeup_dist.weights

A checkpoint directory appears under its final name only after every rank finished writing it (rename
of a temporary directory), so a run killed at any moment leaves either the old or the new checkpoint,
never a partial one that looks complete. Checkpoints are read back only through `safe_load`, which
runs no code from them; a damaged latest one is passed over for the previous one (train/resume.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path


from demakeup_dist import atomic
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.safe_load import CorruptCheckpoint, check_files, safe_torch_load, weights_only_loads

STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
_LEGACY_STATE_FILE = "custom_checkpoint_0.pkl"  # checkpoints written before train_state.json


@dataclass
class TrainState:
    """Where the run is, saved as plain JSON inside every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_psnr: float = float("-inf")
    best_epoch: int = -1
    # The epoch's train-loss sum over all ranks and its step count so far, so that the epoch's mean
    # still covers every step when the run resumes mid-epoch.
    loss_sum: float = 0.0
    loss_steps: int = 0
    shards_id: str = ""
    """`shards.shard_set_id` of the data the run trains on; a resume onto other data is refused."""
    world_size: int = 0
    """Processes (data-parallel ranks) that wrote the checkpoint; 0: not recorded (older checkpoints)."""

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        known = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in known:
                setattr(self, key, value)


def read_train_state(checkpoint: Path) -> TrainState:
    """The TrainState stored in a checkpoint folder; CorruptCheckpoint when it is missing or damaged."""
    checkpoint = Path(checkpoint)
    state = TrainState()
    path = checkpoint / STATE_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptCheckpoint(f"{path} is damaged ({exc})") from None
    elif (checkpoint / _LEGACY_STATE_FILE).is_file():
        data = safe_torch_load(checkpoint / _LEGACY_STATE_FILE)
    else:
        raise CorruptCheckpoint(f"{checkpoint} has no {STATE_FILE}: not a complete demakeup checkpoint")
    if not isinstance(data, dict):
        raise CorruptCheckpoint(f"{path} does not hold a training state")
    state.load_state_dict(data)
    return state


def check_checkpoint(checkpoint: Path) -> TrainState:
    """Read a whole checkpoint folder without loading it anywhere: its TrainState, or CorruptCheckpoint /
    UnsafeCheckpoint naming the bad file."""
    state = read_train_state(checkpoint)
    check_files(checkpoint)
    return state


def load_checkpoint(accelerator, checkpoint: Path, state: TrainState, ema=None) -> None:
    """Restore model, optimizer, scheduler, RNG, `state` (and `ema`) from a folder `check_checkpoint` accepted."""
    with weights_only_loads():
        accelerator.load_state(str(checkpoint))
    state.load_state_dict(read_train_state(checkpoint).state_dict())
    if ema is not None:
        path = Path(checkpoint) / EMA_FILE
        if not path.is_file():
            raise CorruptCheckpoint(f"{checkpoint} holds no weight average ({EMA_FILE}): it was saved without "
                                    "ema_decay; resume with the run's own config")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # plain tensors: nothing in it can run
            ema.load_state_dict({"updates": int(f.metadata()["updates"]),
                                 "shadow": {k: f.get_tensor(k) for k in f.keys()}})


def save_checkpoint(accelerator, run: RunDir, state: TrainState, keep: int, ema=None) -> Path:
    """Collective: every rank must call it. Returns the final directory."""
    final = run.checkpoint(state.global_step)
    # Every rank writes into the same folder, so its temporary name cannot be per process.
    tmp = final.with_name(f".{final.name}{atomic.TMP_MARK}save")
    if accelerator.is_main_process:
        run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        for stale in run.checkpoints_dir.glob(f".*{atomic.TMP_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state.state_dict()), encoding="utf-8")
        if ema is not None:  # the same on every rank: DDP keeps the weights it averages identical
            from safetensors.torch import save_file

            ema_state = ema.state_dict()
            save_file({k: v.contiguous() for k, v in ema_state["shadow"].items()}, str(tmp / EMA_FILE),
                      metadata={"updates": str(ema_state["updates"])})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic.replace(tmp, final)
        for old in run.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
