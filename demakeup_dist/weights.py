"""Self-describing weights files: one way to save a trained network and one way to load it back.

A weights file (`best.safetensors`, `model.safetensors`) holds the state dict and, in its safetensors
metadata (strings only), everything needed to rebuild the network that owns it:

    format        "demakeup-weights/1"
    model         p1 .. p4
    model_args    JSON of EVERY constructor option of that network (defaults included), so a later change
                  of a default cannot silently rebuild a different network
    size_multiple input sides must be multiples of this
    image_size    the side of the training images (absent when unknown)
    version       the demakeup version that wrote it
    epoch         the epoch the weights come from (absent when unknown)

`load_trained(path)` accepts such a file or a run dir (its best.safetensors) and refuses files without
this metadata: rebuilding a network from its name alone is how a `residual` p1 silently became a plain one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from demakeup_dist import __version__
from demakeup_dist.atomic import atomic_path
from demakeup_dist.choices import SIZE_MULTIPLE
from demakeup_dist.rundir import RunDir

FORMAT = "demakeup-weights/1"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about the network it holds."""

    model: str
    model_args: dict[str, Any]
    size_multiple: int
    image_size: int | None
    version: str
    epoch: int | None

    def to_metadata(self) -> dict[str, str]:
        meta = {"format": FORMAT, "model": self.model, "model_args": json.dumps(self.model_args, sort_keys=True),
                "size_multiple": str(self.size_multiple), "version": self.version}
        if self.image_size is not None:
            meta["image_size"] = str(self.image_size)
        if self.epoch is not None:
            meta["epoch"] = str(self.epoch)
        return meta


def describe(model: str, model_args: dict[str, Any], *, image_size: int | None = None,
             epoch: int | None = None) -> WeightsInfo:
    """The metadata of network `model` built with `model_args`: every constructor option, resolved."""
    from demakeup_dist.models import model_options

    options = model_options(model)
    if unknown := sorted(set(model_args) - set(options)):
        raise ValueError(f"model {model} has no option(s) {', '.join(unknown)}; valid options: {', '.join(options)}")
    resolved = {**options, **model_args}
    # JSON has no tuples: store lists, the constructors accept any sequence.
    resolved = json.loads(json.dumps(resolved, default=list))
    return WeightsInfo(model, resolved, SIZE_MULTIPLE, image_size, __version__, epoch)


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, info: WeightsInfo) -> None:
    """Atomic write of CPU, contiguous copies of the weights with `info` as metadata.

    The file gets the mode the umask gives any new file (safetensors' own writer makes it 0600, which
    hides shared run dirs' weights from the rest of a team)."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors_bytes(tensors, metadata=info.to_metadata()))


def weights_path(path: Path) -> Path:
    """A weights file, or the best weights of a run dir."""
    path = Path(path)
    if path.is_dir():
        weights = RunDir(path).best_weights
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {weights.name}: is it a finished (or evaluated) run dir?")
        return weights
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run dir or weights file")
    return path


def read_info(path: Path) -> WeightsInfo:
    """The metadata of a weights file; ValueError saying what to do when it has none."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} does not record which network it holds and how that network was built (no "
            f"{FORMAT!r} metadata; written by an older demakeup or another tool). Load it from the run dir "
            "that made it (`demakeup predict RUN_DIR ...`, whose config says how), or re-save it with "
            "demakeup_dist.weights.save_weights(state_dict, path, describe(model, model_args))"
        )
    try:
        return WeightsInfo(
            model=meta["model"], model_args=json.loads(meta["model_args"]), size_multiple=int(meta["size_multiple"]),
            image_size=int(meta["image_size"]) if "image_size" in meta else None, version=meta["version"],
            epoch=int(meta["epoch"]) if "epoch" in meta else None,
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: damaged {FORMAT} metadata ({exc!r}); load it from its run dir") from exc


def _run_dir_info(run: RunDir) -> WeightsInfo:
    """A run dir's weights file, or its config when the file predates the metadata."""
    try:
        return read_info(run.best_weights)
    except ValueError:
        config = run.read_config()
        if config is None:
            raise
        return describe(config.model, config.model_args)


def load_trained(path: Path, model: str | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.nn.Module, WeightsInfo]:
    """The trained network in `path` (a weights file or a run dir), in eval mode on `device`.

    `model`, when given, must be the network the file holds: a mismatch is an error, never a rebuild.
    """
    from demakeup_dist.models import build_model

    weights = weights_path(path)
    info = _run_dir_info(RunDir(path)) if Path(path).is_dir() else read_info(weights)
    if model is not None and model != info.model:
        raise ValueError(f"{weights} holds a {info.model} network, not {model}: drop --model or pass {info.model}")
    net = build_model(info.model, **info.model_args)
    net.load_state_dict(load_file(str(weights)))
    return net.to(device).eval(), info


def size_warning(info: WeightsInfo, size: int, what: str) -> str | None:
    """One line when `what` has images of side `size` but the weights learned another size, else None.
    The networks run at any multiple of 32, but what they learned (a lip's width in pixels) does not scale."""
    if info.image_size is None or info.image_size == size:
        return None
    return (f"warning: these {info.model} weights were trained on {info.image_size} px images, {what} has "
            f"{size} px ones: the features are {size / info.image_size:.2g}x the size the network learned")
