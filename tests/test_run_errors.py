"""Errors a user can act on, and a run state that tells the truth: bad settings refused up front, a full
or read-only run dir as one line (and status "failed"), a dead trainer's "running" shown as stale."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import synth_dataset
from demakeup_dist.launch.status import stale_heartbeat
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.config import TrainConfig
from launcher.main import app
from launcher.errors import storage_problem
from launcher.train_cli import RETRY_TRAIN


@pytest.mark.parametrize("key, value, message", [
    ("log_every", 0, "log_every must be >= 1"),
    ("stop_check_every", 0, "stop_check_every must be >= 1"),
    ("lr", float("inf"), "lr must be a finite number"),
    ("weight_decay", float("nan"), "weight_decay must be a finite number"),
    ("betas", (0.9, float("inf")), "betas must be a finite number"),
    ("profile_steps", "5:2", "profile_steps '5:2': use A:B with 1 <= A <= B"),
    ("profile_steps", "10", "profile_steps '10': use A:B"),
    ("batch_per_gpu", 0, "batch_per_gpu must be >= 1"),
    ("grad_accum", 0, "grad_accum must be >= 1"),
])
def test_settings_that_would_crash_later_are_refused_up_front(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value})


@pytest.mark.parametrize("exc, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/best.safetensors"),
     "cannot write to runs/x/best.safetensors: the disk is full"),
    (OSError(errno.EROFS, "Read-only file system", "runs/x/trainer.lock"),
     "cannot write to runs/x/trainer.lock: the filesystem is read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "runs/x/trainer.lock"), "permission denied"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                  "data/3: file write failed, No space left on device"), "cannot write to runs/x: the disk is full"),
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                  "left on device\" })"), "the disk is full"),
])
def test_storage_problems_are_explained_in_one_line(exc, expected):
    message = storage_problem(exc, Path("runs/x"), RETRY_TRAIN)
    assert expected in message and "--resume latest" in message and "\n" not in message


def test_storage_problem_leaves_other_errors_alone():
    assert storage_problem(RuntimeError("shape mismatch"), Path("runs/x"), RETRY_TRAIN) is None
    assert storage_problem(OSError(errno.EIO, "I/O error"), Path("runs/x"), RETRY_TRAIN) is None


def test_full_disk_during_training_is_one_line_and_status_failed(tmp_path, monkeypatch):
    data = synth_dataset(tmp_path / "data", train=4, val=2, test=2, size=32, seed=3, workers=1, progress=False)
    write_shards(data, tmp_path / "shards", samples_per_shard=4, workers=1, progress=False)

    def full(state_dict, path, metadata):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("demakeup_dist.train.loop.save_weights", full)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "p1", "--shards", str(tmp_path / "shards"), "--run-dir", str(run_dir),
                                      "--epochs", "1", "--batch-size", "4", "--wandb", "disabled",
                                      "--num-workers", "0"])
    assert result.exit_code == 2, result.output
    assert f"error: cannot write to {run_dir / 'best.safetensors'}: the disk is full" in result.output
    assert "Traceback" not in result.output
    status = json.loads(RunDir(run_dir).status_file.read_text())
    assert status["status"] == "failed" and "No space left" in status["error"]


def test_read_only_run_dir_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    """As root, chmod cannot make a folder read-only: the filesystem's answer is simulated."""
    import demakeup_dist.train.runlock as runlock

    run_dir = tmp_path / "run"
    real_open = os.open

    def read_only(path, *args, **kwargs):  # only the run dir is read-only (os.open is every module's)
        if str(path).startswith(str(run_dir)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(runlock.os, "open", read_only)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text("{}")
    result = CliRunner().invoke(app, ["train", "p1", "--shards", str(tmp_path / "shards"), "--run-dir", str(run_dir),
                                      "--wandb", "disabled"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: cannot write to {run_dir / 'trainer.lock'}: the filesystem is read-only. "
                                     "Free space or fix the permissions (or choose another --run-dir), then run the "
                                     "command again (with --resume latest once the run has checkpoints)")


def _status(**fields) -> dict:
    return {"status": "running", "host": "elsewhere", "pid": 1,
            "updated": datetime.now(timezone.utc).isoformat(), **fields}


def test_stale_heartbeat_is_shown_as_such():
    now = datetime.now(timezone.utc)
    assert stale_heartbeat(_status()) is None
    old = (now - timedelta(hours=2)).isoformat()
    assert "no heartbeat for 120 min" in stale_heartbeat(_status(updated=old), now)
    assert stale_heartbeat(_status(updated=old, status="finished"), now) is None


def test_status_of_a_killed_local_trainer_is_stale(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    RunDir(tmp_path).status_file.write_text(json.dumps(_status(host=socket.gethostname(), pid=dead.pid)))
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"running (STALE: its trainer (pid {dead.pid} on this host) is gone)" in result.output
    assert stale_heartbeat(_status(host=socket.gethostname(), pid=os.getpid())) is None


@pytest.mark.parametrize("code, why", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the filesystem is read-only")])
def test_shard_onto_a_full_or_read_only_disk_is_one_line_naming_the_target(make_dataset, tmp_path, monkeypatch,
                                                                           code, why):
    import demakeup_dist.data.shards as shards

    root, out = make_dataset(tmp_path, n=2, size=16), tmp_path / "out"

    def refused(job):  # what the filesystem answers a shard write (the temporary set's file)
        raise OSError(code, os.strerror(code), str(job.path))

    monkeypatch.setattr(shards, "_write_shard", refused)
    result = CliRunner().invoke(app, ["shard", str(root), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: cannot write to {out}: {why}. Free space or fix the permissions (or choose another --out), "
        "then run the command again")  # after the progress bars
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written is left
