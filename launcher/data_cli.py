"""`demakeup shard` and `demakeup verify`: pack a dataset into webdataset shards and check a shard set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from launcher.errors import storage_errors, user_errors


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("shard")(shard)
    app.command("verify")(verify)


def shard(
    src: Path = typer.Argument(..., help="Dataset root in the course layout: SRC/{train,val,test}/"
                               "{makeup,non-makeup,high_r or hr_image}/NAME (HR optional)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: shards/NAME-OF-SRC)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Pack the good triplets and list every bad file "
                                  "(and its partners) in manifest.json, instead of refusing the dataset."),
    size: Optional[int] = typer.Option(None, "--size", help="Require SIZE x SIZE inputs (HR 4x that) "
                                       "(default: the most common size in the data)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes for validating and writing "
                                          "(default: all cores)."),
    samples_per_shard: int = typer.Option(64, "--samples-per-shard", help="Triplets per .tar shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing shard set in --out."),
) -> None:
    """Pack makeup / non-makeup / HR triplets into webdataset .tar shards plus manifest.json.

    Files are paired by exact name across the folders of a split. Every image is decoded and checked: it must convert to RGB, makeup and non-makeup must be S x S, HR 4S x 4S.

    Any bad file stops the run with a list of them (nothing is written), unless --skip-bad.

    RGB JPEG/PNG files are stored byte for byte, anything else (other modes, EXIF-rotated, transparent: read as `predict` reads them) as a lossless PNG. The set appears in --out only once complete.
    """
    from demakeup_dist.data.shards import default_out, write_shards

    out = out or default_out(src)
    retry = "Free space or fix the permissions (or choose another --out), then run the command again"
    with user_errors(), storage_errors(out, retry):
        manifest = write_shards(src, out, size=size, skip_bad=skip_bad, workers=workers,
                                samples_per_shard=samples_per_shard, overwrite=overwrite)
    s = manifest["image_size"]
    hr = f", HR {manifest['hr_size']}x{manifest['hr_size']}" if manifest["hr_size"] else ", no HR"
    typer.echo(f"wrote {out} ({s}x{s} inputs{hr}):")
    for split, info in manifest["splits"].items():
        hr_note = "" if info["has_hr"] or not manifest["hr_size"] else ", no HR"
        skipped = f", {len(info['skipped'])} file(s) skipped (see manifest.json)" if info["skipped"] else ""
        typer.echo(f"  {split}: {info['samples']} triplets in {len(info['shards'])} shard(s){hr_note}{skipped}")
    typer.echo(f"next: demakeup verify {out}   or   demakeup train p1 --shards {out}")


def verify(
    shards_dir: Path = typer.Argument(..., help="A folder written by `demakeup shard` (holds manifest.json)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: all cores)."),
) -> None:
    """Re-read a shard set and check it against its manifest.json.

    Checks every shard's size and sha256, its sample count, and decodes every image at the expected size. Exits non-zero naming each bad shard.
    """
    from demakeup_dist.data.verify import verify_shards

    with user_errors():
        summary = verify_shards(shards_dir, workers=workers)
    counts = ", ".join(f"{split} {n}" for split, n in summary["samples"].items())
    typer.echo(f"ok: {shards_dir}: {summary['shards']} shard(s), {summary['bytes'] / 1e6:.1f} MB, samples: {counts}")
