"""How much of the accelerator the training uses: MFU (model FLOPs utilisation) and a profiler trace.

MFU = train FLOPs per image (forward + backward of the network, from models/profile.py's meta-device
count, recomputation not included) x images/s over (processes x the device's dense peak). The peak
comes from the table below: NVIDIA datasheet dense (no sparsity) bf16/fp16 tensor-core TFLOPS, so MFU
is reported for bf16/fp16 runs on a GPU the table knows, and said to be unknown otherwise.

`--profile-steps A:B` records global optimizer steps A..B (1-based, inclusive) with torch.profiler
into RUN_DIR/profile/ as a Chrome trace per rank (open it in https://ui.perfetto.dev or
chrome://tracing).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from demakeup_dist import atomic

if TYPE_CHECKING:
    import torch

log = logging.getLogger("demakeup")

PEAK_TFLOPS = (
    # First match wins, so the longer names come first ("A100" before "A10", "L40S" before "L4").
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2),
)
"""Dense bf16 tensor-core peak TFLOPS per GPU, by a part of torch.cuda.get_device_name()."""
# torch is imported where it is used: the config (which parses --profile-steps here) stays light.


def dense_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(the peak FLOP/s the device's MFU is measured against, or None; a line saying which)."""
    import torch

    if device.type != "cuda":
        return None, f"MFU: not reported on {device.type} (the peak table holds NVIDIA GPUs)"
    name = torch.cuda.get_device_name(device)
    if precision not in ("bf16", "fp16"):
        return None, f"MFU: not reported for {precision} (the peak table holds bf16/fp16 tensor-core peaks)"
    for part, tflops in PEAK_TFLOPS:
        if part in name:
            return tflops * 1e12, f"MFU against {name}'s dense bf16 peak of {tflops:g} TFLOPS (datasheet table)"
    return None, f"MFU: no peak known for {name} (add it to PEAK_TFLOPS in demakeup_dist/train/utilisation.py)"


def train_flops_per_image(model: str, size: int, model_args: dict) -> float:
    """Forward + backward FLOPs of one `size` x `size` image through network `model` (meta device: instant)."""
    import torch

    from demakeup_dist.models.profile import profile_model

    return profile_model(model, size=size, batch=1, dtype=torch.float32, **model_args).gflops_train * 1e9


def mfu(img_per_s: float, flops_per_image: float, processes: int, peak: float) -> float:
    """The fraction of `processes` devices' peak that `img_per_s` images per second (all of them) use."""
    return img_per_s * flops_per_image / (processes * peak)


def parse_steps(text: str) -> tuple[int, int] | None:
    """`A:B` (1 <= A <= B) -> (A, B); "" -> None; ValueError otherwise."""
    if not text:
        return None
    first, sep, last = text.partition(":")
    if not (sep and first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last)):
        raise ValueError(f"profile_steps {text!r}: use A:B with 1 <= A <= B, e.g. 20:25 (global steps)")
    return int(first), int(last)


class StepProfiler:
    """torch.profiler around global steps `steps` (A, B); `before(step)` / `after(step)` bracket each step."""

    def __init__(self, steps: tuple[int, int] | None, trace: Path, cuda: bool):
        self.steps, self.trace, self.cuda = steps, trace, cuda
        self._profiler = None

    def before(self, step: int) -> None:
        if self.steps is not None and step == self.steps[0]:
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities, record_shapes=True)
            self._profiler.start()

    def after(self, step: int, last: bool = False) -> None:
        """`last`: the run's final step, which ends a window reaching past it."""
        if self._profiler is not None and (step == self.steps[1] or last):
            self._profiler.stop()
            self.trace.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(self.trace) as tmp:
                self._profiler.export_chrome_trace(str(tmp))
            self._profiler = None
            log.info("profile of steps %d..%d: %s (open it in https://ui.perfetto.dev)", self.steps[0], step,
                     self.trace)
