"""`demakeup models`: the four networks side by side (size, compute, activation memory)."""

from __future__ import annotations

from typing import Optional

import typer

from demakeup_dist.choices import SIZE_MULTIPLE
from launcher.errors import UserError, user_errors
from launcher.options import choice_enum, plain, renamed

Dtype = choice_enum("Dtype", ("bfloat16", "float32"))
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


def models(
    size: int = typer.Option(224, help=f"Input side in pixels (a multiple of {SIZE_MULTIPLE})."),
    batch_size: int = typer.Option(64, help="Batch size for the activation-memory columns."),
    dtype: Dtype = typer.Option("bfloat16", help="Activation dtype for the memory columns (bfloat16 = autocast)."),
    batch: Optional[int] = typer.Option(None, hidden=True),
) -> None:
    """Print each network's parameters, GFLOPs per image and activation memory (see HELP)."""
    with user_errors():
        batch_size, dtype = renamed("--batch", "--batch-size", batch, batch_size), plain(dtype)
        if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
            raise UserError(f"--size {size}: the networks take sides that are multiples of {SIZE_MULTIPLE} "
                            "(e.g. 224)")
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
        import torch

        from demakeup_dist.models import MODEL_NAMES, MODELS
        from demakeup_dist.text import table
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
    typer.echo(table(header, rows))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(name="models", help=HELP)(models)
