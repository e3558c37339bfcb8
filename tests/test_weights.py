"""Weights files describe the network they hold; loading never rebuilds a different network."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from demakeup_dist import __version__
from demakeup_dist.models import build_model
from demakeup_dist.rundir import RunDir
from demakeup_dist.weights import describe, load_trained, read_info, save_weights

SMALL_P1 = {"base_channels": 4, "depth": 2, "residual": True}


def _trained_p1(tmp_path):
    torch.manual_seed(0)
    net = build_model("p1", **SMALL_P1).eval()
    path = RunDir(tmp_path).best_weights
    save_weights(net.state_dict(), path, describe("p1", SMALL_P1, image_size=64, epoch=3))
    return net, path


def test_metadata_names_network_every_option_size_and_version(tmp_path):
    _, path = _trained_p1(tmp_path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["model"] == "p1" and meta["version"] == __version__
    assert json.loads(meta["model_args"]) == {"base_channels": 4, "depth": 2, "residual": True,
                                              "out_activation": "sigmoid", "grad_checkpointing": False}
    assert (meta["size_multiple"], meta["image_size"], meta["epoch"]) == ("32", "64", "3")


def test_load_trained_rebuilds_the_residual_network(tmp_path):
    net, path = _trained_p1(tmp_path)
    loaded, info = load_trained(path)
    x = torch.rand(1, 3, 32, 32)
    assert info.model_args["residual"] is True
    assert torch.equal(loaded(x)["demakeup"], net(x)["demakeup"])


def test_weights_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _, path = _trained_p1(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temporary file left


def test_file_without_metadata_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file(build_model("p1", **SMALL_P1).state_dict(), str(path), metadata={"model": "p1"})
    with pytest.raises(ValueError, match="does not record which network.*run dir"):
        load_trained(path)


def test_explicit_model_must_match(tmp_path):
    _, path = _trained_p1(tmp_path)
    with pytest.raises(ValueError, match="holds a p1 network, not p3: drop --model or pass p1"):
        load_trained(path, "p3")
    assert load_trained(path, "p1")[1].model == "p1"


def test_run_dir_with_old_weights_uses_its_config(tmp_path):
    """A run dir written before the metadata existed still loads right: its config.yaml says how."""
    net = build_model("p1", **SMALL_P1)
    save_file(net.state_dict(), str(RunDir(tmp_path).best_weights), metadata={"model": "p1"})
    RunDir(tmp_path).config_file.write_text(yaml.safe_dump({"model": "p1", "model_args": SMALL_P1}))
    loaded, info = load_trained(tmp_path)
    assert info.model_args["residual"] is True and info.model == "p1"
    with pytest.raises(ValueError, match="does not record"):
        read_info(RunDir(tmp_path).best_weights)


def test_describe_rejects_unknown_options():
    with pytest.raises(ValueError, match="model p1 has no option.*skips"):
        describe("p1", {"skips": True})


def test_predict_cli_from_file_checks_model(tmp_path):
    _, path = _trained_p1(tmp_path)
    Image.new("RGB", (40, 36), (200, 120, 90)).save(tmp_path / "face.png")
    cmd = [sys.executable, "-m", "launcher.main", "predict", str(path), str(tmp_path / "face.png"),
           "--out", str(tmp_path / "out")]
    wrong = subprocess.run(cmd + ["--model", "p2"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "holds a p1 network, not p2" in wrong.stderr
    assert not (tmp_path / "out").exists()
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert Image.open(tmp_path / "out" / "face_demakeup.png").size == (40, 36)


def test_size_warning_only_when_the_data_size_differs_from_training(tmp_path):
    from demakeup_dist.weights import size_warning

    _, path = _trained_p1(tmp_path)
    info = read_info(path)
    assert size_warning(info, 64, "shards/x") is None
    warning = size_warning(info, 224, "shards/x")
    assert "trained on 64 px images, shards/x has 224 px ones" in warning and "3.5x" in warning
    assert size_warning(describe("p1", SMALL_P1), 224, "shards/x") is None  # size unknown: nothing to compare
