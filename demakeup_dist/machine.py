"""What this process runs on: the cores it may use, and a description for benchmark records."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def available_cores() -> int:
    """CPU cores this process may use: the affinity mask, which Slurm and taskset set (not os.cpu_count())."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def torch_device(name: str = "auto"):
    """The torch device for a `--device` choice (demakeup_dist/choices.py DEVICES): auto = cuda when available."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What a measurement was taken on, for the records benchmarks write."""
    import torch

    return {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
