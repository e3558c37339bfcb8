"""wandb as its users expect: their credentials and WANDB_* variables, one line when online cannot work,
the `wandb sync` command for offline runs, one group for one experiment."""

import logging
import os
import subprocess
import sys

import pytest
import yaml

from demakeup_dist.train.config import TrainConfig
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.tracking import RunTracker, log


def _clean_env(home, **extra):
    """An environment whose only wandb credentials are what the test puts in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    return {**env, "HOME": str(home), "WANDB_BASE_URL": "https://api.wandb.ai", **extra}


def _mode_in(env, configured="auto"):
    code = f"from demakeup_dist.train.tracking import wandb_mode; print(wandb_mode({configured!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_auto_goes_online_with_wandb_login_credentials(tmp_path):
    """`wandb login` leaves a netrc and no WANDB_API_KEY: still online. Nothing at all: offline."""
    assert _mode_in(_clean_env(tmp_path)) == "offline"
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'a' * 40}\n")
    netrc.chmod(0o600)
    assert _mode_in(_clean_env(tmp_path)) == "online"
    assert _mode_in(_clean_env(tmp_path, WANDB_MODE="disabled")) == "disabled"
    assert _mode_in(_clean_env(tmp_path), "offline") == "offline"  # an explicit choice wins


def test_online_without_credentials_fails_before_training_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "launcher.main", "train", "p1", "--shards", str(tmp_path / "none"),
           "--run-dir", str(tmp_path / "run"), "--wandb", "online"]
    done = subprocess.run(cmd, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: wandb online: no W&B credentials; run `wandb login` or set WANDB_API_KEY, or use --wandb offline "
        "(then `wandb sync` the run dir later)"]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def records():
    """INFO lines of the `demakeup` logger (it does not propagate once a training has set it up)."""
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield lines
    log.removeHandler(handler)
    log.setLevel(level)


def test_env_project_and_entity_group_tags_and_the_sync_command(tmp_path, monkeypatch, records):
    monkeypatch.setenv("WANDB_PROJECT", "their-project")
    monkeypatch.setenv("WANDB_ENTITY", "their-team")
    config = TrainConfig(model="p1", wandb="offline", wandb_group="exp-1", wandb_tags=["p1", "brief"])
    tracker = RunTracker(RunDir(tmp_path), config, is_main=True, restarts=0)
    run = tracker.wandb_run
    assert (run.project, run.entity, run.group, tuple(run.tags)) == ("their-project", "their-team", "exp-1",
                                                                     ("p1", "brief"))
    sync_dir = run.sync_dir
    tracker.finish()
    assert f"wandb: offline run saved; upload it with: wandb sync {sync_dir}" in records
    config.wandb_project = "from-the-config"
    again = RunTracker(RunDir(tmp_path), config, is_main=True, restarts=1)
    assert again.wandb_run.project == "from-the-config"
    assert again.wandb_run.id == run.id  # a restart continues the same run
    again.finish()


def test_experiment_runs_share_a_group_and_are_tagged(tmp_path, monkeypatch):
    import demakeup_dist.experiment as experiment
    import demakeup_dist.report as report
    from demakeup_dist.data.shards import FORMAT, FORMAT_VERSION, MANIFEST

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / MANIFEST).write_text(f'{{"format": "{FORMAT}", "format_version": {FORMAT_VERSION}}}')
    monkeypatch.setattr(experiment, "_train_here", lambda *args: None)
    monkeypatch.setattr(experiment, "write_report", lambda *args, **kwargs: "")
    monkeypatch.setattr(report, "write_report", lambda *args, **kwargs: "")
    out = tmp_path / "exp"
    experiment.run_experiment(shards, out, models=("p1", "p3"), residual=True, sets={"weight_decay": 0.0})
    configs = {m: yaml.safe_load((out / "configs" / f"{m}.yaml").read_text()) for m in ("p1", "p3")}
    assert configs["p1"]["wandb_group"] == configs["p3"]["wandb_group"] is not None
    assert [configs[m]["wandb_tags"] for m in ("p1", "p3")] == [["p1", "residual"], ["p3", "residual"]]
    assert configs["p1"]["weight_decay"] == 0.0
    group = configs["p1"]["wandb_group"]
    experiment.run_experiment(shards, out, models=("p2",))  # a rerun adds to the same group
    assert yaml.safe_load((out / "configs" / "p2.yaml").read_text())["wandb_group"] == group
