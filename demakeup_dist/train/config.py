"""The training configuration: one typed dataclass, loaded from a flat YAML and overridden from the CLI.

Precedence: dataclass defaults < the shipped `configs/<model>.yaml` (or `--config FILE`) < `--set KEY=VALUE` <
command-line options. Unknown keys are errors, so a typo never silently falls back to a default, and
every value is converted to its field's type (YAML 1.1 reads `1e-3` as a string) or refused, naming
the key and the type it needs.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demakeup_dist.choices import (
    COMPILE_MODES, DATA_CACHES, LOSSES, LR_SCALINGS, PRECISIONS, STRATEGIES, WANDB_MODES, ZERO_STAGES, check_choice,
)
from demakeup_dist.machine import available_cores
from demakeup_dist.train.typed import convert, describe, like
from demakeup_dist.train.utilisation import parse_steps

BRIEF_LR = 1e-2  # the course brief's init_lr for official.nlp.optimization.create_optimizer


@dataclass
class TrainConfig:
    """Everything that decides what a run computes. Saved as `RUN_DIR/config.yaml`."""

    model: str = "p3"
    """Network: p1 (free U-Net), p2 (ResNet34, no skips), p3 (ResNet34 + skips), p4 (p3 + 4x SR head)."""
    model_args: dict[str, Any] = field(default_factory=dict)
    """Constructor overrides for the network, e.g. {decoder_channels: [256, 128, 64, 32, 16]}."""

    epochs: int = 300
    batch_size: int = 64
    """Global batch: split evenly across all processes and accumulation steps (must divide by their
    product). With batch_per_gpu set, the run records here the global batch that follows from it."""
    batch_per_gpu: int | None = None
    """Images per process and forward pass; the global batch is then batch_per_gpu x grad_accum x
    processes (None: batch_size decides). See train/batching.py."""
    grad_accum: int = 1
    """Forward passes whose gradients are summed per optimizer step (a global batch too big for one pass)."""
    lr: float = BRIEF_LR
    """Peak learning rate of the warm-up / linear-decay schedule at the reference batch of 64."""
    lr_scaling: str = "none"
    """How the peak lr follows the global batch G: none, linear (lr x G/64) or sqrt (lr x sqrt(G/64))."""
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_clip_norm: float = 1.0
    """Global gradient-norm clip, as in TF's AdamWeightDecay.apply_gradients (0 disables)."""
    loss: str = "mse"
    """Training loss: mse (the brief's), l1 or charbonnier (sqrt(d^2 + 1e-6)) per pixel, or psnr (minus each
    image's PSNR, averaged: the evaluation metric); see docs/results.md."""
    loss_scale: float = 100.0
    """Multiplies the per-pixel loss: the brief's loss is mean((pred - target)^2) * 100."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights, used for val, test and best.safetensors (0 = off).
    The decay ramps up as min(ema_decay, (1 + step) / (10 + step)) so that early weights fade fast."""
    flip_ensemble: bool = False
    """Test-time self-ensemble: average the prediction of the image and of its mirror image (test only)."""
    demakeup_loss_weight: float = 1.0
    sr_loss_weight: float = 1.0

    precision: str = "auto"
    """auto = bf16 on a GPU that supports it, else fp32 (CPU runs stay exact and reproducible)."""
    strategy: str = "ddp"
    zero: int = 2
    """DeepSpeed ZeRO stage when strategy = deepspeed."""
    grad_checkpointing: bool = False
    compile: bool = False
    """torch.compile the train step (network + loss in one graph)."""
    compile_mode: str = "default"
    """torch.compile mode when compile is on: default, reduce-overhead (CUDA graphs), max-autotune, ..."""
    channels_last: bool = True
    """Memory layout on GPU (ignored on CPU, where it is slower)."""

    seed: int = 25
    """The brief seeds numpy with 25."""
    data_cache: str = "auto"
    """Where decoded images live: device (GPU memory), host (shared host memory), off (decode from the
    shards every epoch), auto (device if the decoded set fits in half the GPU's free memory, else host
    if it fits in half the available host memory, else off)."""
    num_workers: int | None = None
    """Decoding processes per training process (None = this process's share of the cores, max 8)."""
    eval_every: int = 1
    """Evaluate on val every N epochs (and always after the last)."""
    save_every_steps: int = 0
    """Extra checkpoints every N optimizer steps (0 = only at epoch ends)."""
    keep_checkpoints: int = 2
    log_every: int = 10
    """Steps between progress lines / wandb step metrics."""
    stop_check_every: int = 1
    """Steps between the all-rank agreement on a stop request (signal or RUN_DIR/STOP)."""
    profile_steps: str = ""
    """A:B: record global optimizer steps A..B with torch.profiler into RUN_DIR/profile/ ("" = off)."""
    sample_panels: int = 1
    """Val images shown in the input | target | prediction panel at each improvement."""

    wandb: str = "auto"
    """auto = $WANDB_MODE if set, else online when wandb has credentials (WANDB_API_KEY or `wandb login`),
    else offline (files in RUN_DIR/wandb; the run's end prints the `wandb sync` command)."""
    wandb_project: str | None = None
    """None = $WANDB_PROJECT, else "demakeup"."""
    wandb_entity: str | None = None
    """None = $WANDB_ENTITY, else your wandb default entity."""
    wandb_group: str | None = None
    """Runs compared side by side, e.g. the models of one `demakeup experiment` (it sets this)."""
    wandb_tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, getattr(self, f.name)))
        self.model_args = model_args_for(self.model, self.model_args)
        for key, valid in _CHOICES.items():
            check_choice(key, getattr(self, key), valid)
        checks = [
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}"),
            (not (self.ema_decay and self.strategy == "deepspeed" and self.zero == 3),
             "ema_decay needs every parameter on every rank: not with DeepSpeed ZeRO-3 (use --zero 1 or 2)"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.batch_per_gpu is None or self.batch_per_gpu >= 1,
             f"batch_per_gpu must be >= 1 (or null), got {self.batch_per_gpu}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.grad_accum == 1 or self.strategy == "ddp",
             "grad_accum > 1 is built for --strategy ddp only: with deepspeed use more GPUs or a smaller batch"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.num_workers is None or self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.log_every >= 1, f"log_every must be >= 1 (steps between progress lines), got {self.log_every}"),
            (self.stop_check_every >= 1, f"stop_check_every must be >= 1 (steps between stop checks), "
                                         f"got {self.stop_check_every}"),
            *((math.isfinite(v), f"{k} must be a finite number, got {v}") for k, v in self._floats()),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_steps(self.profile_steps)

    def _floats(self):
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, float):
                    yield f.name, value

    def resolved_num_workers(self, local_processes: int) -> int:
        """JPEG decoding of the 896x896 targets needs several cores per GPU; leave one for the trainer."""
        if self.num_workers is not None:
            return self.num_workers
        return max(1, min(8, available_cores() // max(local_processes, 1) - 1))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


def coerce(key: str, value: Any) -> Any:
    """`value` converted to the type of TrainConfig field `key`; ValueError naming both otherwise."""
    kind = _FIELD_TYPES[key]
    try:
        return convert(value, kind)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected {describe(kind)}, got {value!r}") from None


def model_args_for(model: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` checked against network `model`'s constructor options, each converted to its default's type."""
    from demakeup_dist.models import model_options

    options = model_options(model)
    if unknown := sorted(set(args) - set(options)):
        valid = ", ".join(f"{k} (default {v!r})" for k, v in options.items())
        raise ValueError(f"model_args: {model} has no option(s) {', '.join(unknown)}; valid: {valid}")
    return {key: like(f"model_args.{key}", value, options[key]) for key, value in args.items()}


def _check_keys(data: dict[str, Any], source: str) -> None:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(known)}")


def _validated(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with known keys only, each converted to its field's type; errors name `source`."""
    _check_keys(data, source)
    try:
        return {key: coerce(key, value) for key, value in data.items()}
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options as a partial config: VALUE is read as YAML (`true`, `[1, 2]`, `null`),
    and `model_args.NAME=VALUE` sets one constructor option of the network, keeping the others."""
    data: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-3 or --set model_args.residual=true")
        if key == "model":
            raise ValueError("--set model=...: the network is the command's MODEL argument")
        value = yaml.safe_load(text) if text.strip() else ""
        head, dot, sub = key.partition(".")
        if dot:
            if _FIELD_TYPES.get(head) is None or typing.get_origin(_FIELD_TYPES[head]) is not dict:
                raise ValueError(f"--set {item!r}: only mapping keys take a sub-key ({head!r} is not one); "
                                 f"use --set {head}=VALUE")
            data.setdefault(head, {})[sub] = value
        else:
            data[key] = value
    return _validated(data, "--set")


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; mapping values (model_args) are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values at the top level")
    return _validated(data, str(path))


def load_config(model: str, config_file: Path | None = None, sets: dict[str, Any] | None = None,
                **overrides: Any) -> TrainConfig:
    """Defaults < YAML (`config_file`, else the shipped `configs/<model>.yaml`) < `sets` (from
    `parse_sets`) < non-None overrides."""
    from demakeup_dist.models import MODEL_NAMES
    from demakeup_dist.resources import model_config

    if not config_file and model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}")
    path = Path(config_file) if config_file else model_config(model)
    data = read_yaml(path)
    if data.get("model", model) != model:
        raise ValueError(f"{path} is for model {data['model']!r}, but model {model!r} was asked for")
    data["model"] = model
    cli = _validated({k: v for k, v in overrides.items() if v is not None}, "command-line options")
    return TrainConfig(**merge(data, sets or {}, cli))


def config_yaml(config: TrainConfig) -> str:
    """`config` as the flat YAML that `read_yaml` reads back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)
_CHOICES = {"precision": PRECISIONS, "strategy": STRATEGIES, "wandb": WANDB_MODES, "data_cache": DATA_CACHES,
            "compile_mode": COMPILE_MODES, "zero": ZERO_STAGES, "loss": LOSSES,
            "lr_scaling": LR_SCALINGS}
"""The fields whose value is one of a fixed set (demakeup_dist/choices.py)."""


def config_from_file(path: Path) -> TrainConfig:
    """Read a resolved config (a run dir's, `RunDir.read_config`) back."""
    return TrainConfig(**read_yaml(path))
