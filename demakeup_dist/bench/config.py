"""What every timed case of a `demakeup bench` run shares, its defaults per device and its checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from demakeup_dist.choices import COMPILE_MODES, DATA_CACHES, DEVICES, PRECISIONS, SIZE_MULTIPLE, check_choice
from demakeup_dist.machine import torch_device
from demakeup_dist.train.distributed import resolve_precision


@dataclass(frozen=True)
class BenchConfig:
    """Options of a run. `for_device` gives the defaults: tiny on CPU, the brief's on CUDA."""

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
    def for_device(cls, device: str = "auto", **changes: Any) -> BenchConfig:
        """Defaults for `device`, with every non-None entry of `changes` applied.

        device "auto" is cuda when available; precision "auto" (the default) is bf16 on CUDA (fp32 on a
        GPU without bf16), fp32 on CPU, so the record says what ran.
        """
        check_choice("--device", device, DEVICES)
        device = torch_device(device).type
        base = cls(device="cuda", batch=64, size=224, steps=20, warmup=5) if device == "cuda" else cls(device=device)
        config = replace(base, **{k: v for k, v in changes.items() if v is not None})
        if config.precision == "auto":
            config = replace(config, precision=resolve_precision("auto") if device == "cuda" else "fp32")
        return config

    def check(self) -> None:
        """Raise ValueError naming the bad option: what `demakeup train` refuses, and what a bench cannot time."""
        check_choice("--device", self.device, [d for d in DEVICES if d != "auto"])
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: this machine has no CUDA GPU that PyTorch can use; use --device cpu")
        if self.size < SIZE_MULTIPLE or self.size % SIZE_MULTIPLE:
            raise ValueError(f"--size {self.size}: the networks take sides that are multiples of {SIZE_MULTIPLE} "
                             "(e.g. 224)")
        for option, value, least in (("--batch-size", self.batch, 1), ("--steps", self.steps, 1),
                                     ("--warmup", self.warmup, 1), ("--num-workers", self.num_workers, 0)):
            if value < least:
                raise ValueError(f"{option} {value}: must be at least {least}")
        check_choice("--precision", self.precision, PRECISIONS)
        check_choice("--compile-mode", self.compile_mode, COMPILE_MODES)
        check_choice("--data-cache", self.data_cache, DATA_CACHES)

    @property
    def mode(self) -> str:
        """How the step runs, as the rows say: eager or compile(MODE), "+ckpt" with grad checkpointing."""
        mode = f"compile({self.compile_mode})" if self.compile and self.compile_mode != "default" else \
            "compile" if self.compile else "eager"
        return mode + "+ckpt" if self.grad_checkpointing else mode
