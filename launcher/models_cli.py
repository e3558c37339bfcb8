"""`demakeup models`: the four networks side by side (size, compute, activation memory)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from demakeup_dist.choices import SIZE_MULTIPLE
from launcher.deprecated import renamed
from launcher.errors import UserError, user_errors

DTYPES = ("bfloat16", "float32")
GIB = 1024**3
HELP = (
    "Print each network's parameters, GFLOPs per image and activation memory.\n\n"
    "GFLOPs: convolution FLOPs per image (2 per multiply-add; InstanceNorm and GELU not counted) "
    "of a forward pass and of a train step (forward + backward), also with gradient checkpointing, "
    "which recomputes part of the forward.\n\n"
    "Activation memory: what autograd keeps for backward at the given batch (weights, gradients, "
    "optimizer state and kernel workspace excluded, so a GPU's peak is higher); 'ckpt' is with "
    "grad_checkpointing=True (p4: the SR head; p1-p3: the decoder blocks).\n\n"
    "Nothing is computed: shapes are traced on PyTorch's meta device, so this takes seconds anywhere."
)


def _format_bytes(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def models(
    size: Annotated[int, typer.Option(help=f"Input side in pixels (a multiple of {SIZE_MULTIPLE}).")] = 224,
    batch_size: Annotated[int, typer.Option(help="Batch size for the activation-memory columns.")] = 64,
    dtype: Annotated[
        str, typer.Option(help=f"Activation dtype for the memory columns: {' or '.join(DTYPES)} (bf16 = autocast).")
    ] = "bfloat16",
    batch: Annotated[Optional[int], typer.Option(hidden=True)] = None,
) -> None:
    """Print each network's parameters, GFLOPs per image and activation memory (see HELP)."""
    with user_errors():
        batch_size = renamed("--batch", "--batch-size", batch, batch_size)
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
        if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
            raise UserError(f"--size {size}: the networks take sides that are multiples of {SIZE_MULTIPLE} "
                            "(e.g. 224)")
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
        import torch

        from demakeup_dist.models import MODEL_NAMES, MODELS
        from demakeup_dist.models.profile import profile_model

        rows = []
        for name in MODEL_NAMES:
            p = profile_model(name, size=size, batch=batch_size, dtype=getattr(torch, dtype))
            rows.append([
                name,
                MODELS[name].summary,
                f"{p.parameters / 1e6:.2f} M",
                f"{p.gflops_forward:.1f}",
                f"{p.gflops_train:.1f}",
                f"{p.gflops_train_checkpointed:.1f}",
                ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in p.outputs.items()),
                _format_bytes(p.activation_bytes),
                _format_bytes(p.activation_bytes_checkpointed),
            ])
    header = [
        "model", "network", "params", "GFLOPs fwd", "train", "train ckpt", "outputs (C x H x W)",
        f"act. mem @{batch_size}", "ckpt",
    ]
    typer.echo(f"input {size}x{size}; GFLOPs per image; activation memory at batch {batch_size}, {dtype}\n")
    typer.echo(_format_table(rows, header))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(name="models", help=HELP)(models)
