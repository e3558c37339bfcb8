"""Config values take their field's type or fail naming the key; `--set` reaches every key, model_args too."""

import os
import subprocess
import sys

import pytest
import yaml

from demakeup_dist.rundir import RunDir
from demakeup_dist.train.config import TrainConfig, load_config, parse_sets
from demakeup_dist.weights import read_info


def _load(tmp_path, text, model="p1", **kwargs):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(model, path, **kwargs)


def test_yaml_strings_become_the_fields_types(tmp_path):
    cfg = _load(tmp_path, 'lr: 1e-3\nepochs: "2"\nbetas: [0.8, "0.95"]\ncompile: "yes"\nnum_workers: null\n'
                          'wandb_entity: team\nmodel_args: {residual: "true", base_channels: "8"}\n')
    assert (cfg.lr, cfg.epochs, cfg.betas, cfg.compile, cfg.num_workers) == (1e-3, 2, (0.8, 0.95), True, None)
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)
    assert cfg.model_args == {"residual": True, "base_channels": 8}


@pytest.mark.parametrize("text, message", [
    ("epochs: 2.5", "epochs: expected an integer, got 2.5"),
    ("lr: fast", "lr: expected a number, got 'fast'"),
    ("compile: maybe", "compile: expected true or false, got 'maybe'"),
    ("betas: [0.9]", "betas: expected a list of 2 values, each a number"),
    ("wandb_entity: 3", "wandb_entity: expected a string or null, got 3"),
    ("model_args: {residual: maybe}", "model_args.residual: expected true or false"),
    ("model_args: {skips: true}", "model_args: p1 has no option.s. skips; valid: base_channels"),
])
def test_bad_values_name_the_key_and_the_type(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, text)


def test_bad_value_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: epochs: expected an integer"):
        _load(tmp_path, "epochs: two")


def test_set_overrides_file_merges_model_args_and_yields_to_options(tmp_path):
    sets = parse_sets(["model_args.residual=true", "lr=1e-3", "weight_decay=0", "epochs=5", "wandb_entity=null"])
    cfg = _load(tmp_path, "model_args: {decoder_channels: [64, 32, 16, 8, 4]}\nwandb_entity: me\n", "p3",
                sets=sets, epochs=3)
    assert cfg.model_args == {"decoder_channels": [64, 32, 16, 8, 4], "residual": True}
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.wandb_entity) == (1e-3, 0.0, 3, None)


@pytest.mark.parametrize("item, message", [
    ("lr", "expected KEY=VALUE"),
    ("epochs.x=1", "only mapping keys take a sub-key"),
    ("eopchs=5", r"unknown key\(s\) \['eopchs'\]"),
    ("epochs=two", "--set: epochs: expected an integer"),
    ("model=p2", "the network is the command's MODEL argument"),
])
def test_bad_set_items(item, message):
    with pytest.raises(ValueError, match=message):
        parse_sets([item])


def test_direct_construction_is_checked_too():
    assert TrainConfig(epochs="4").epochs == 4
    with pytest.raises(ValueError, match="batch_size: expected an integer"):
        TrainConfig(batch_size="big")


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    from demakeup_dist.data.shards import write_shards
    from demakeup_dist.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("cfg_data")
    data = synth_dataset(root / "data", train=4, val=2, test=2, size=32, seed=3, workers=1, progress=False)
    write_shards(data, root / "shards", samples_per_shard=4, workers=1, progress=False)
    return root / "shards"


def test_train_cli_set_is_recorded_and_builds_that_network(tiny_shards, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "launcher.main", "train", "p1", "--shards", str(tiny_shards), "--run-dir", str(run),
           "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--wandb", "disabled",
           "--set", "model_args.residual=true", "--set", "model_args.base_channels=4", "--set", "weight_decay=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Setting accelerator to CPU" not in done.stdout + done.stderr  # DeepSpeed is imported for --strategy deepspeed only
    recorded = yaml.safe_load(RunDir(run).config_file.read_text())
    assert recorded["model_args"] == {"base_channels": 4, "residual": True} and recorded["weight_decay"] == 0.0
    assert read_info(RunDir(run).best_weights).model_args["residual"] is True
    bad = subprocess.run(cmd[:-2] + ["--set", "model_args.residul=true", "--run-dir", str(tmp_path / "r2")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "p1 has no option(s) residul" in bad.stderr
    assert not (tmp_path / "r2").exists()
