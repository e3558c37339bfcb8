"""Every stop a clean one: real signals to real process trees (`demakeup train`, 1 and 2 processes)
end at a step boundary with one checkpoint, status "stopped" / "preempted" (never "failed"), one line,
exit code 130, no traceback and no process left; a kill -9 of the `--nproc` launcher takes its
workers with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import synth_shards
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.distributed import StopRequest, signal_reason

DEMAKEUP = [sys.executable, "-m", "launcher.main"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """16 train / 4 val / 4 test triplets at 32 px."""
    return synth_shards(tmp_path_factory.mktemp("stops"), train=16, seed=5)


def _start(shards: Path, run_dir: Path, nproc: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = DEMAKEUP + ["train", "p1", "--shards", str(shards), "--run-dir", str(run_dir), "--epochs", "50",
                      "--batch-size", "4", "--wandb", "disabled", "--num-workers", "1", "--nproc", str(nproc)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _training(run_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until the trainer has run a few optimizer steps (it reports each epoch end)."""
    deadline = time.monotonic() + timeout
    while RunDir(run_dir).read_status().get("step", 0) < 4:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the training never reached step 4"
        time.sleep(0.1)


def _left(run_dir: Path) -> list[str]:
    """Processes whose command line names the run dir (the launcher, torch elastic, the workers)."""
    found = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if int(pid) != os.getpid()]


def _none_left(run_dir: Path, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _left(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


TWO = pytest.mark.slow  # 2 processes: ~20 s on an idle 2-core machine, more under load


@pytest.mark.parametrize("nproc, sig, status", [
    (1, signal.SIGINT, "stopped"),
    pytest.param(2, signal.SIGINT, "stopped", marks=TWO),
    pytest.param(2, signal.SIGTERM, "stopped", marks=TWO),
    (1, signal.SIGUSR1, "preempted"),
])
def test_signal_ends_in_one_checkpoint_at_a_step_and_one_line(shards, tmp_path, nproc, sig, status):
    run_dir = tmp_path / "run"
    proc = _start(shards, run_dir, nproc)
    _training(run_dir, proc)
    os.kill(proc.pid, sig)  # what the terminal's Ctrl-C sends the foreground process
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "SignalException" not in out, out
    final = RunDir(run_dir).read_status()
    assert final["status"] == status, final
    latest = RunDir(run_dir).latest_checkpoint()
    assert latest == RunDir(run_dir).checkpoint(final["step"])  # a checkpoint at the step it stopped at
    assert out.count(f"{status} at step {final['step']} (checkpoint {latest.name}); continue with:") == 1, out
    assert not RunDir(run_dir).stop_requested()  # the request ended with the run
    assert not _none_left(run_dir)


@TWO
def test_kill_9_of_the_launcher_takes_its_workers(shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(shards, run_dir, 2)
    _training(run_dir, proc)
    proc.kill()
    proc.wait()
    assert not _none_left(run_dir), "workers outlived their launcher"
    # Torch elastic, told by its parent-death signal, stopped the workers the clean way.
    assert RunDir(run_dir).read_status()["status"] == "stopped"


@TWO
def test_second_ctrl_c_kills_the_launch_at_once(shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(shards, run_dir, 2)
    _training(run_dir, proc)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.05)  # the first one asked for a stop; the ranks need a whole step to obey it
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert RunDir(run_dir).read_status()["status"] == "aborted"
    assert "aborted at step" in out and "nothing saved since" in out
    assert not _none_left(run_dir)


def test_second_ctrl_c_aborts_at_once(tmp_path):
    with StopRequest(RunDir(tmp_path)) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reason == "stopped" and stop.signalled == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # ours only while training


def test_stop_reasons_and_their_agreement(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert signal_reason(signal.SIGTERM) == "stopped" and signal_reason(signal.SIGUSR1) == "preempted"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert signal_reason(signal.SIGTERM) == "preempted"  # Slurm's preemption without a grace time
    monkeypatch.setenv("DEMAKEUP_LOCAL", "1")
    assert signal_reason(signal.SIGTERM) == "stopped"  # submit --local runs here

    class OneProcess:
        num_processes = 1

    run = RunDir(tmp_path)
    stop = StopRequest(run)
    assert stop.agreed(OneProcess(), torch.tensor(False)) == (None, False)
    run.request_stop("preempted")
    assert stop.agreed(OneProcess(), torch.tensor(True)) == ("preempted", True)
    run.stop_file.write_text("")  # an old-style STOP file (touch) asks for a plain stop
    assert stop.agreed(OneProcess(), torch.tensor(False)) == ("stopped", False)
