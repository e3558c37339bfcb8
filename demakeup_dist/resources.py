"""Files shipped inside the package (the per-model configs, DeepSpeed's ZeRO JSONs, the sbatch template).

They live in `demakeup_dist/configs/` and `demakeup_dist/slurm/` and are installed as package data, so
a wheel or `pip install .` reads the same files as a checkout; the checkout's top-level `configs/` and
`slurm/` are links to them. Paths, not file objects: accelerate and sbatch are handed the file names,
which pip's unpacked installs provide.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from demakeup_dist.choices import ZERO_STAGES


def shipped(*parts: str) -> Path:
    """The installed file `demakeup_dist/<parts...>`; FileNotFoundError when the install lacks it."""
    path = Path(str(files("demakeup_dist").joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{'/'.join(parts)} is missing from the installed demakeup package ({path}): the install is "
            "incomplete; reinstall it (pip install --force-reinstall demakeup, or bash scripts/bootstrap.sh)"
        )
    return path


def model_config(model: str) -> Path:
    """The shipped recipe `configs/<model>.yaml`."""
    return shipped("configs", f"{model}.yaml")


def recommended_configs() -> Path:
    """The shipped folder `configs/recommended/` (<model>.yaml: the brief's recipe + the levers that won)."""
    return shipped("configs", "recommended", "p3.yaml").parent


def deepspeed_config(zero: int) -> Path:
    """The shipped DeepSpeed template for ZeRO stage `zero`."""
    if zero not in ZERO_STAGES:
        raise FileNotFoundError(f"--zero {zero}: no DeepSpeed config for that stage; choose 1, 2 or 3")
    return shipped("configs", "deepspeed", f"zero{zero}.json")


def sbatch_template() -> Path:
    """The shipped `slurm/train.sbatch` that `demakeup submit` renders."""
    return shipped("slurm", "train.sbatch")
