"""`demakeup synth`: write a synthetic de-makeup dataset in the course layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.errors import user_errors

HELP = (
    "Render procedural faces with and without makeup into OUT, in the course layout: "
    "OUT/{train,val,test}/{makeup,non-makeup,high_r}/000000.jpg ... holding the made-up face "
    "(input), the same face without makeup (de-makeup target) and the made-up face at 4x "
    "resolution (super-resolution target), with the same file name in the three folders.\n\n"
    "The defaults (280 triplets at 224 px) take a minute or two on a laptop; "
    "--train 5000 --val 500 --test 500 matches the size of the course dataset."
)


def synth(
    out: Path = typer.Argument(..., help="Folder to create, e.g. data/ (must not exist, or be empty)."),
    train: int = typer.Option(200, help="Number of training triplets (the course set has 5000)."),
    val: int = typer.Option(40, help="Number of validation triplets (course: 500)."),
    test: int = typer.Option(40, help="Number of test triplets (course: 500)."),
    size: int = typer.Option(224, help="Side of the makeup / non-makeup images in pixels, a multiple of "
                                       "32; high_r images are 4x that. 224 is the course size."),
    seed: int = typer.Option(25, help="Random seed: the same seed writes byte-identical files."),
    workers: Optional[int] = typer.Option(None, show_default="all CPU cores", help="Processes rendering in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists and is not empty."),
) -> None:
    """Write a synthetic de-makeup dataset (help text above)."""
    from demakeup_dist.data.synth import synth_dataset

    with user_errors():
        path = synth_dataset(out, train=train, val=val, test=test, size=size, seed=seed,
                             workers=workers, overwrite=overwrite)
    typer.echo(f"wrote {train + val + test} triplets ({size}px, high_r {4 * size}px) to {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("synth", help=HELP)(synth)
