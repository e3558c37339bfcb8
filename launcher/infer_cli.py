"""`demakeup predict`, `demakeup export`: use a trained network outside training."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from demakeup_dist.infer import OVERLAP, TILE
from launcher.errors import user_errors
from launcher.options import MODEL_CHECK_HELP, Model, plain

_WEIGHTS_HELP = "A run dir (uses its best weights) or a .safetensors file."


@contextlib.contextmanager
def _outputs_errors() -> Iterator[None]:
    """A write that fails (full disk, read-only or forbidden target) as one line naming the file, exit 2;
    other errors as `user_errors` prints them."""
    with user_errors():
        try:
            yield
        except ImportError as exc:
            raise ValueError(str(exc)) from exc
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, FileExistsError)) or exc.filename is None:
                raise
            typer.secho(f"error: cannot write {exc.filename}: {exc.strerror}; free some space, make it writable "
                        "or choose another --out", fg=typer.colors.RED, err=True)
            sys.exit(2)


def predict(
    paths: list[Path] = typer.Argument(..., metavar="RUN_OR_WEIGHTS PHOTO...",
                                       help=f"{_WEIGHTS_HELP} Then image files or folders (any size, any format "
                                            "Pillow reads). With --onnx, only the photos."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME_demakeup.png, NAME_sr4x.png (p4), NAME_faces.json."),
    whole_image: bool = typer.Option(False, "--whole-image", help="Run the network on the whole photo (in tiles) "
                                     "instead of on each detected face resized to the training size."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Name each unreadable file and go on with the others "
                                  "(default: stop before writing anything)."),
    batch_size: int = typer.Option(8, help="Face crops or tiles per forward pass."),
    tile: int = typer.Option(TILE, help="Whole-image mode: tile side in px (a multiple of 32); larger photos are "
                             "processed in overlapping tiles, so memory stays bounded."),
    overlap: int = typer.Option(OVERLAP, help="Whole-image mode: overlap of neighbouring tiles in px, blended."),
    onnx: Optional[Path] = typer.Option(None, help="Predict with an ONNX file made by `demakeup export` instead."),
    model: Optional[Model] = typer.Option(None, help=MODEL_CHECK_HELP),
) -> None:
    """De-make-up photos of any size. Each face the detector finds is cropped as the training images frame
    theirs, resized to the training size, de-made-up and blended back (pixels outside the blend regions stay
    the input's); photos without a face (or with --whole-image) are processed whole, in tiles. p4 also writes
    the 4x image. NAME_faces.json records the mode and each face's box and blend region."""
    from demakeup_dist.infer.export import onnx_runner
    from demakeup_dist.infer.predict import predict_files
    from demakeup_dist.infer.runner import torch_runner
    from demakeup_dist.machine import torch_device
    from demakeup_dist.weights import load_trained

    with _outputs_errors():
        if onnx is not None:
            runner, inputs = onnx_runner(onnx), paths
        elif len(paths) < 2:
            raise ValueError("predict needs RUN_OR_WEIGHTS and at least one photo (or --onnx FILE and photos)")
        else:
            device = torch_device()
            net, info = load_trained(paths[0], plain(model), device)
            runner = torch_runner(net, device=device, image_size=info.image_size, name=info.model)
            inputs = paths[1:]
        done = predict_files(runner, inputs, out, batch_size=batch_size, whole_image=whole_image,
                             skip_bad=skip_bad, tile=tile, overlap=overlap)
    skipped = f"; skipped {len(done.skipped)} unreadable file(s)" if done.skipped else ""
    typer.echo(f"wrote {len(done.written)} file(s) to {out}{skipped}")


def export(
    weights: Path = typer.Argument(..., help=_WEIGHTS_HELP),
    out: Path = typer.Option(..., "--out", help="The ONNX file to write, e.g. model.onnx."),
    model: Optional[Model] = typer.Option(None, help=MODEL_CHECK_HELP),
) -> None:
    """Write the network as ONNX (opset 18): input `image` float32 NCHW RGB in [0, 1], batch / height / width
    dynamic (sides multiples of 32), one output per task in [0, 1]; the metadata says so and names the network
    and its training size. Run it with `demakeup predict --onnx FILE PHOTO... --out DIR` or onnxruntime."""
    from demakeup_dist.infer.export import export_onnx
    from demakeup_dist.weights import load_trained

    with _outputs_errors():
        net, info = load_trained(weights, plain(model))
        export_onnx(net, info, out)
    typer.echo(f"wrote {out} ({info.model}, trained at {info.image_size or 'an unrecorded size'} px)")


def register(app: typer.Typer) -> None:
    app.command()(predict)
    app.command()(export)
