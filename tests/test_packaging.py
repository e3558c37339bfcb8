"""What an installed (non-editable) demakeup needs from its package: configs, templates, Python version.

The wheel itself is built, installed outside the checkout and run by .ci/wheel-check.sh."""

import fnmatch
import sys
import tomllib
from pathlib import Path

import pytest

import demakeup_dist
from demakeup_dist import resources
from demakeup_dist.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = Path(demakeup_dist.__file__).parent


def test_every_shipped_file_is_package_data():
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["demakeup_dist"]
    shipped = [p.relative_to(PACKAGE).as_posix() for d in ("configs", "slurm") for p in (PACKAGE / d).rglob("*")
               if p.is_file()]
    assert len(shipped) == 12  # p1..p4.yaml, recommended/p1..p4.yaml, zero1..3.json, train.sbatch
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_checkout_folders_are_the_packaged_files():
    assert (ROOT / "configs" / "p2.yaml").resolve() == resources.model_config("p2")
    assert (ROOT / "slurm" / "train.sbatch").resolve() == resources.sbatch_template()
    assert resources.deepspeed_config(3).parent == PACKAGE / "configs" / "deepspeed"


def test_missing_shipped_config_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match="configs/p2.yaml is missing from the installed demakeup package"):
        load_config("p2")
    with pytest.raises(FileNotFoundError, match="slurm/train.sbatch is missing"):
        resources.sbatch_template()


def test_unknown_model_and_zero_stage():
    with pytest.raises(ValueError, match="unknown model 'p9'"):
        load_config("p9")
    with pytest.raises(FileNotFoundError, match="--zero 4: .*choose 1, 2 or 3"):
        resources.deepspeed_config(4)


def test_python_floor_is_what_the_code_needs():
    # hashlib.file_digest (data/shards.py) and tomllib came in 3.11.
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)


def test_one_version():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "demakeup_dist.__version__"}
