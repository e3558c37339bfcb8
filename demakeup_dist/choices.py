"""Every closed set of values a user chooses from, defined once.

The config (train/config.py) validates against these, the CLI derives its options from them
(launcher/options.py), and the Slurm renderer, bench and predict check against the same tuples, so
adding a value here adds it everywhere. This module imports nothing heavy, so that `demakeup --help`
stays instant; which tasks a network has is its own (`demakeup_dist.models.model_tasks`).
"""

from __future__ import annotations

from typing import Iterable

MODEL_NAMES = ("p1", "p2", "p3", "p4")
"""The brief's four networks; the registry in demakeup_dist/models says what each is."""
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
"""auto = bf16 on a GPU that supports it, else fp32."""
MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
"""accelerate's --mixed_precision for each resolved precision."""
STRATEGIES = ("ddp", "deepspeed")
ZERO_STAGES = (1, 2, 3)
WANDB_MODES = ("auto", "online", "offline", "disabled")
DATA_CACHES = ("auto", "device", "host", "off")
"""Where decoded images live during training; data/feed.py explains each."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOSSES = ("mse", "l1", "charbonnier", "psnr")
"""train/recipe.py's pixel_loss."""
LR_SCALINGS = ("none", "linear", "sqrt")
"""How the peak learning rate follows the global batch from the recipe's 64 (train/batching.py)."""
RESUME_MODES = ("auto", "latest")
"""How `--resume` continues a run dir: auto = from its newest checkpoint if any, else from the start;
latest = from its newest checkpoint, which must exist. (`demakeup train` also takes a checkpoint dir.)"""
STOP_REASONS = ("stopped", "preempted")
"""How a clean stop ends (status.json): stopped on purpose (Ctrl-C, SIGTERM outside Slurm, `demakeup
cancel`), or preempted (USR1, Slurm's SIGTERM: a time limit or preemption; the job requeues and resumes)."""
SPLITS = ("train", "val", "test")
TASKS = ("demakeup", "sr")
"""The outputs a network can have: the de-made-up image, and (p4) the 4x super-resolved input."""
DEVICES = ("auto", "cpu", "cuda")
"""auto = cuda when available."""
SIZE_MULTIPLE = 32
"""Image sides must be multiples of this: the U-Nets halve the resolution five times."""


def check_choice(option: str, value: object, valid: Iterable[object]) -> None:
    """ValueError naming `option`, the value and the valid ones, unless `value` is among `valid`."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{option} {value!r}: choose one of {', '.join(map(str, valid))}")


def parse_list(option: str, text: str, valid: Iterable[str]) -> tuple[str, ...]:
    """A comma-separated option value ("p1,p3") as a tuple, each item checked against `valid`."""
    valid = tuple(valid)
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(f"{option} {text!r}: use a comma-separated list of {', '.join(valid)}")
    return names
