"""One way to run a trained network on float images, whatever holds it (a PyTorch module, an ONNX file).

``Runner(x)`` takes float32 ``(B, 3, H, W)`` in [0, 1] with any H, W, pads bottom/right to a multiple
of 32 (the networks halve the size five times), runs the network and crops every output back to
``(B, 3, k*H, k*W)`` (k = 1 for de-makeup, 4 for SR). It knows the tasks and the training image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from demakeup_dist.choices import SIZE_MULTIPLE, TASKS


def pad_to_multiple(x: Tensor, m: int = SIZE_MULTIPLE) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` at the bottom and right to sides divisible by ``m``; returns the padded
    tensor and the original ``(H, W)`` for ``crop_back``. Reflection keeps the border statistics
    natural for the network; images too small to reflect (pad >= side) are padded by replication."""
    if m < 1:
        raise ValueError(f"pad_to_multiple: m must be >= 1, got {m}")
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % m, -w % m
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_back(y: Tensor, size: tuple[int, int], scale: int = 1) -> Tensor:
    """Undo ``pad_to_multiple`` on an output ``scale`` times the input size."""
    h, w = size
    return y[..., : h * scale, : w * scale]


def output_scale(task: str, out: Tensor, x: Tensor) -> int:
    """Integer upscaling factor of ``out`` over ``x``; a wrong output shape is a model bug."""
    scale = out.shape[-1] // x.shape[-1]
    expected = (x.shape[0], 3, x.shape[-2] * scale, x.shape[-1] * scale)
    if scale < 1 or tuple(out.shape) != expected:
        raise ValueError(
            f"model output {task!r} has shape {tuple(out.shape)}; expected (B, 3, k*H, k*W) for input {tuple(x.shape)}"
        )
    return scale


def suffix(task: str, scale: int) -> str:
    """The output file name's suffix of `task`: NAME_demakeup.png, NAME_sr4x.png."""
    return "demakeup" if task == "demakeup" else f"sr{scale}x"


@dataclass
class Runner:
    """A network as predict uses it. `forward` maps a padded float32 batch to the output dict on the
    host; `image_size` is the side of the training images (None when the weights do not say)."""

    forward: Callable[[Tensor], dict[str, Tensor]]
    tasks: tuple[str, ...]
    image_size: int | None
    name: str = "network"

    def __post_init__(self) -> None:
        if unknown := [t for t in self.tasks if t not in TASKS]:
            raise ValueError(f"predict: unknown task(s) {unknown}; choose among {TASKS}")

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """float32 ``(B, 3, H, W)`` -> {task: float32 ``(B, 3, k*H, k*W)``} on the CPU, cropped back."""
        padded, size = pad_to_multiple(x)
        outputs = self.forward(padded)
        result = {}
        for task in self.tasks:
            if task not in outputs:
                raise ValueError(f"model returned {sorted(outputs)}, not the requested task {task!r}")
            scale = output_scale(task, outputs[task], padded)
            result[task] = crop_back(outputs[task], size, scale).float().cpu()
        return result


def torch_runner(model: nn.Module, *, device: str | torch.device = "cpu", tasks: Sequence[str] | None = None,
                 image_size: int | None = None, name: str = "network") -> Runner:
    """A Runner of a PyTorch module, moved to `device` in eval mode, run without autograd in the dtype
    of its parameters."""
    model.to(device).eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)

    @torch.inference_mode()
    def forward(x: Tensor) -> dict[str, Tensor]:
        return model(x.to(device=device, dtype=dtype))

    return Runner(forward, tuple(tasks or getattr(model, "tasks", ("demakeup",))), image_size, name)
