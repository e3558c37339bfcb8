"""GPU decoding of the streamed HR JPEGs (nvJPEG through torchvision), where it imports.

On the streaming path the CPU cost is the 896-px HR targets: ~8.6 ms each on the H200 host's cores,
so p4 at 2500 img/s would need ~22 cores for them alone. nvJPEG decodes ~6400 of them a second on an
H200, with pixels identical to libjpeg-turbo's (measured, docs/performance.md). With a decoder here
the loader workers pass the HR JPEG bytes on undecoded (`loader.stream(defer=...)`) and the training
process decodes each batch's in one call with `finish`. torchvision is optional: without it (or
without CUDA) the workers decode on the CPU, and the feed's log line says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Decoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]  # 1-D uint8 JPEG bytes -> (3, H, W) uint8


def gpu_jpeg_decoder(device: torch.device) -> tuple[Decoder | None, str]:
    """(nvJPEG decoder on `device`, "") or (None, why not)."""
    if device.type != "cuda":
        return None, "no CUDA device"
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:  # any import failure (missing, or built for another torch) means: CPU decode
        return None, f"torchvision does not import ({type(exc).__name__}: {str(exc)[:120]})"

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode, ""


def finish(batch: dict, decoder: Decoder) -> dict:
    """Decode a streamed batch's deferred JPEGs into their rows (flipped where planned), on the batch's device.

    `batch["deferred"]` maps a role to (rows, flips, JPEG byte tensors); the role's tensor holds the
    other rows (PNG members, decoded by the worker) already.
    """
    for role, (rows, flips, data) in batch.pop("deferred", {}).items():
        images = batch[role]
        decoded = torch.stack(decoder(data)).to(images.device)
        if decoded.shape[1:] != images.shape[1:]:
            raise ValueError(f"a {role} JPEG decoded to {tuple(decoded.shape[1:])}, the manifest says "
                             f"{tuple(images.shape[1:])}: run `demakeup verify`")
        flip = flips.to(images.device).view(-1, 1, 1, 1)
        images.index_copy_(0, rows.to(images.device), torch.where(flip, decoded.flip(-1), decoded))
    return batch
