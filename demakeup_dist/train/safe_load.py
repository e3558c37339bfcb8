"""Read checkpoints without running code from them, and tell a damaged checkpoint from a tampered one.

torch.load unpickles, and an unpickler can be made to call any function: whoever can write a run dir
(shared filesystems) could then run code as whoever resumes it. So every pickled file of a checkpoint
is read with torch's weights-only unpickler, which builds only tensors, plain containers and numbers
plus the few classes allowed below, and `weights_only_loads()` forces that unpickler even on the
libraries (accelerate's custom states, DeepSpeed) that ask torch for the unrestricted one.
"""

from __future__ import annotations

import contextlib
import enum
import os
import pickle
import sys
from pathlib import Path

import torch

PICKLED_SUFFIXES = (".bin", ".pkl", ".pt")
_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


class CorruptCheckpoint(ValueError):
    """A checkpoint file is missing, truncated or unreadable (e.g. the disk filled up while saving)."""


class UnsafeCheckpoint(ValueError):
    """A checkpoint file holds objects other than tensors and plain data: demakeup never writes those."""


def _allowed_globals(deepspeed: bool) -> list:
    """Classes a genuine checkpoint holds besides tensors: numpy RNG states (accelerate's own list)
    and, in DeepSpeed's files, DeepSpeed's data classes. Importing DeepSpeed takes seconds, and a DDP
    checkpoint holds none of its classes."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    return list(TORCH_SAFE_GLOBALS) + (_deepspeed_globals() if deepspeed else [])


def _deepspeed_globals() -> list:
    """DeepSpeed pickles its whole config (pydantic models, plain *Config classes, enums), its loss
    scaler and ZeRO's parameter-slice records into each checkpoint. They hold data only; they are
    collected from DeepSpeed's loaded modules because each DeepSpeed version adds config classes."""
    try:
        from deepspeed.runtime.config import DeepSpeedConfig
        from deepspeed.runtime.config_utils import DeepSpeedConfigModel, DeepSpeedConfigObject
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    data_classes = (DeepSpeedConfigModel, DeepSpeedConfigObject, enum.Enum)  # the loss scalers are config objects
    found = {DeepSpeedConfig, fragment_address, object}  # object: DeepSpeed's sentinel defaults
    for name, module in list(sys.modules.items()):
        if not name.startswith("deepspeed.") or module is None:
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == name
                    and (value.__name__.endswith("Config") or issubclass(value, data_classes))):
                found.add(value)
    return list(found)


@contextlib.contextmanager
def weights_only_loads(deepspeed: bool | None = None):
    """Inside the block every torch.load uses the weights-only unpickler with the allowed classes
    (DeepSpeed's when asked, or by default when DeepSpeed is in use in this process)."""
    old = os.environ.get(_FORCE)
    os.environ[_FORCE] = "1"
    try:
        with torch.serialization.safe_globals(_allowed_globals("deepspeed" in sys.modules if deepspeed is None
                                                               else deepspeed)):
            yield
    finally:
        if old is None:
            os.environ.pop(_FORCE, None)
        else:
            os.environ[_FORCE] = old


def safe_torch_load(path: Path):
    """torch.load of a checkpoint file through the weights-only unpickler; clear errors naming the file."""
    path = Path(path)
    try:
        with weights_only_loads(deepspeed=path.suffix == ".pt"):  # DeepSpeed writes .pt, accelerate .bin/.pkl
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            first = str(exc).split("\n\n")[-1].strip().splitlines()[0]
            raise UnsafeCheckpoint(
                f"{path} holds objects other than tensors and plain data ({first}); demakeup never writes "
                "such files, so it was altered by someone else. Nothing was loaded from it: delete that "
                "checkpoint folder and resume from an earlier one, or start a new --run-dir") from None
        raise CorruptCheckpoint(f"{path} is damaged ({exc})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{path} is damaged or truncated ({type(exc).__name__}: {exc})") from None


def check_files(checkpoint: Path) -> None:
    """Read every file of a checkpoint folder once, so a damaged or altered one is found before any
    state is changed. Safetensors files cannot hold code; they are only checked to be complete."""
    from safetensors.torch import load_file

    for path in sorted(Path(checkpoint).rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            try:
                load_file(str(path))
            except Exception as exc:  # SafetensorError, OSError: both mean the file is unusable
                raise CorruptCheckpoint(f"{path} is damaged or truncated ({exc})") from None
        elif path.suffix in PICKLED_SUFFIXES:
            safe_torch_load(path)
