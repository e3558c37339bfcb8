"""Submit a rendered training job to Slurm (`sbatch --parsable`) or run the same script here (`--local`).

Every submission leaves in the run dir the exact script (`job.sbatch`) and a record of how it was made
(`submissions.json`: job id, time, the `demakeup` command line, log path). The environment is never
recorded: secrets such as WANDB_API_KEY reach the job through it, not through files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from demakeup_dist import atomic
from demakeup_dist.launch.render import JobOptions, render, validate
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.supervise import die_with_parent


@dataclass(frozen=True)
class Submission:
    job_id: str  # Slurm job id, or `local-PID` for --local
    run_dir: Path
    log: Path
    script: Path
    wandb_id: str | None  # known once the run has started once


def check_inputs(opts: JobOptions, resume: str | None) -> None:
    """Refuse what would fail only once the job starts: missing shards, a run dir of another model or
    one that already holds a run (unless resuming it: `resume` auto or latest, as `demakeup train`'s)."""
    from demakeup_dist.data.shards import load_manifest
    from demakeup_dist.train.resume import check_same_model

    if not opts.shards.is_dir():
        raise FileNotFoundError(f"--shards {opts.shards}: no such folder; make one with `demakeup shard DATA`")
    load_manifest(opts.shards)
    if opts.config is not None and not opts.config.is_file():
        raise FileNotFoundError(f"--config {opts.config}: no such file")
    run = RunDir(opts.run_dir)
    if resume == "latest":
        if not run.path.is_dir():
            raise FileNotFoundError(f"--resume latest: no such run dir {run}; check --run-dir")
        if run.latest_checkpoint() is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {run.checkpoints_dir}; use --resume auto "
                                    "to start the run dir from the beginning")
    if resume is not None:
        if run.path.is_dir():
            check_same_model(run, opts.model)
        return
    if opts.run_dir.exists():
        check_same_model(run, opts.model)
        latest = run.latest_checkpoint()
        if latest is not None:
            raise ValueError(
                f"--run-dir {opts.run_dir} already holds a run (checkpoint {latest.name}): continue it with "
                "--resume latest, or choose a new --run-dir"
            )


def submit(opts: JobOptions, *, template: Path | None = None, command: list[str] | None = None,
           resume: str | None = None) -> Submission:
    """Render, save and `sbatch --parsable` the job; return its id and where to look."""
    script_text = _prepare(opts, template, resume)
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise FileNotFoundError(
            "sbatch not found on PATH: submit from a Slurm login node, or run here with --local "
            "(or see the script with --dry-run)"
        )
    created = not opts.run_dir.exists()
    run = RunDir(opts.run_dir)
    script = _save_script(run, script_text)
    result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        if created:
            shutil.rmtree(opts.run_dir, ignore_errors=True)
        raise ValueError(f"sbatch refused the job (exit {result.returncode}): {result.stderr.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    return _record(run, job_id, script, command)


def run_local(opts: JobOptions, *, template: Path | None = None, command: list[str] | None = None,
              resume: str | None = None, out: TextIO = sys.stdout) -> tuple[Submission, int]:
    """Run the job script on this machine as a one-node job; its output goes to `out` and to the log.
    Returns the submission record and the script's exit code."""
    if validate(opts).nodes != 1:
        raise ValueError("--local runs on this machine only: use --nodes 1 (or fewer --gpus)")
    run = RunDir(opts.run_dir)
    script = _save_script(run, _prepare(opts, template, resume))
    submission = _record(run, f"local-{os.getpid()}", script, command)
    env = {**os.environ, "DEMAKEUP_LOCAL": "1", "SLURM_JOB_ID": str(os.getpid()), "SLURM_JOB_NODELIST":
           socket.gethostname(), "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_RESTART_COUNT": "0"}
    # The script runs in a session of its own and gets Ctrl-C, TERM and USR1 from here, once: it traps
    # them into a checkpoint and a stop, as under Slurm; a second Ctrl-C kills it at once.
    with open(submission.log, "a", encoding="utf-8") as log, subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGTERM),
    ) as proc, _forwarding_signals(proc):
        assert proc.stdout is not None
        for line in proc.stdout:  # tee: the terminal and the log
            out.write(line)
            log.write(line)
            log.flush()
    return submission, proc.returncode


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen):
    forwarded: list[int] = []

    def forward(signum, frame) -> None:
        if signum == signal.SIGINT and signal.SIGINT in forwarded:
            os.killpg(proc.pid, signal.SIGKILL)  # the training follows by its parent-death signal
        elif signum not in forwarded:
            forwarded.append(signum)
            proc.send_signal(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare(opts: JobOptions, template: Path | None, resume: str | None) -> str:
    text = render(opts, template)
    check_inputs(opts, resume)
    return text


def _save_script(run: RunDir, text: str) -> Path:
    run.path.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run.job_script, text)
    run.job_script.chmod(0o755)
    return run.job_script


def _record(run: RunDir, job_id: str, script: Path, command: list[str] | None) -> Submission:
    """Add this submission to the run's record of its jobs."""
    log = run.slurm_log(job_id)
    run.record_submission({"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "command": command or [], "log": str(log), "script": str(script)})
    return Submission(job_id, run.path, log, script, run.wandb_id())

