"""`demakeup status` / `demakeup cancel`: a run's Slurm state and training progress; stopping it.

A target is a run dir, a Slurm job id, or nothing (the newest run under ./runs). The run dir links the
two: its record of submissions (written by `submit`) names the jobs, and a job's log file lies in its run
dir. Slurm is asked with scontrol/squeue (they know a job while it is pending, running or recently
ended) and sacct (when the cluster keeps accounting); without Slurm only the run dir is reported.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from demakeup_dist.rundir import RunDir, find_runs
from demakeup_dist.text import hms

# A running trainer rewrites status.json every `log_every` steps and after each evaluation; silence
# for this long means it most likely died without a chance to say so (kill -9, node failure).
STALE_AFTER_S = 15 * 60
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED",
                 "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}


@dataclass
class JobState:
    job_id: str
    state: str | None = None  # Slurm's JobState (RUNNING, PENDING, COMPLETED, ...); None: Slurm does not know it
    reason: str | None = None  # why it is pending, e.g. BeginTime after a requeue
    restarts: int | None = None  # Slurm's restart count (requeues)


@dataclass
class RunReport:
    run_dir: Path | None
    job: JobState | None
    status: dict = field(default_factory=dict)  # the run's status as the trainer wrote it
    checkpoints: list[str] = field(default_factory=list)
    log: Path | None = None
    epoch_seconds: list[float] = field(default_factory=list)  # wall seconds of each evaluated epoch
    epochs: int | None = None  # the epochs the run's config plans


def epoch_pace(seconds: list[float], epochs: int | None) -> str | None:
    """How long an epoch takes and what all `epochs` take at that pace, in words; None before the first.
    The first epoch also pays for start-up (decoding the data, torch.compile), so later ones set the pace."""
    if not seconds:
        return None
    later = seconds[1:] or seconds
    pace = sum(later) / len(later)
    text = (f"{pace:.1f} s per epoch (epochs 2..{len(seconds)}; epoch 1: {seconds[0]:.1f} s with start-up)"
            if len(seconds) > 1 else f"{pace:.1f} s (epoch 1, with start-up)")
    if epochs:
        text += f"; {epochs} epoch{'s' * (epochs > 1)} at this pace: {hms(round(pace * epochs))}"
    return text


def resolve_target(target: str | None, runs_root: Path = Path("runs")) -> tuple[Path | None, str | None]:
    """(run dir, last job id) for a run dir, a job id, or None = the newest run dir under `runs_root`."""
    if target is None:
        runs = find_runs(runs_root)
        if not runs:
            raise FileNotFoundError(f"no runs under {runs_root}/: pass a RUN_DIR or a JOB_ID")
        target = str(runs[-1])
    path = Path(target)
    if path.is_dir():
        records = RunDir(path).submissions()
        return path, (records[-1]["job_id"] if records else None)
    if not re.fullmatch(r"\d+", target):
        raise FileNotFoundError(f"{target}: neither a run dir nor a Slurm job id")
    for run in find_runs(runs_root):
        if any(r["job_id"] == target for r in run.submissions()):
            return run.path, target
    log = _squeue_stdout(target)
    run_dir = Path(log).parent if log else None
    return (run_dir if run_dir and RunDir(run_dir).submissions_file.is_file() else None), target


def job_state(job_id: str) -> JobState:
    """What Slurm knows about `job_id` (fields stay None when no Slurm command answers)."""
    job = JobState(job_id)
    out = _run(["scontrol", "show", "job", "-o", job_id]) if shutil.which("scontrol") else None
    if out:  # slurmctld keeps a job for MinJobAge (300 s by default) after it ended
        fields = dict(re.findall(r"\b(JobState|Reason|Restarts)=(\S+)", out))
        job.state, job.reason = fields.get("JobState"), fields.get("Reason")
        job.restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None
    elif shutil.which("sacct"):  # older jobs: only accounting remembers them
        out = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
        if out and out.split():
            job.state = out.split()[0]  # e.g. "CANCELLED by 1000"
    return job


def run_report(target: str | None, runs_root: Path = Path("runs")) -> RunReport:
    run_dir, job_id = resolve_target(target, runs_root)
    job = job_state(job_id) if job_id and not job_id.startswith("local-") else None
    if run_dir is None:
        if job is None or job.state is None:
            raise FileNotFoundError(f"job {job_id}: unknown to Slurm and to the runs under {runs_root}/: "
                                    "check the id (squeue --me), or pass the RUN_DIR")
        return RunReport(None, job)
    run = RunDir(run_dir)
    logs = run.slurm_logs()
    try:
        config = run.read_config()
    except ValueError:  # status reports what it can; training itself names a damaged config
        config = None
    return RunReport(run_dir, job, run.read_status(), [p.name for p in run.checkpoints()], logs[-1] if logs else None,
                     [r["epoch_s"] for r in run.read_metrics() if "epoch_s" in r], config and config.epochs)


def stale_heartbeat(status: dict, now: datetime | None = None) -> str | None:
    """Why a status that says "running" cannot be believed, in words; None when it can."""
    if status.get("status") != "running":
        return None
    pid, host = status.get("pid"), status.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
        return f"its trainer (pid {pid} on this host) is gone"
    try:
        updated = datetime.fromisoformat(status["updated"])
    except (KeyError, TypeError, ValueError):
        return None
    if updated.tzinfo is None:  # the trainer writes UTC
        updated = updated.replace(tzinfo=timezone.utc)
    age = ((now or datetime.now(timezone.utc)) - updated).total_seconds()
    if age > STALE_AFTER_S:
        return f"no heartbeat for {int(age // 60)} min (the trainer may have died; see train.log)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def cancel(target: str, now: bool = False, runs_root: Path = Path("runs")) -> str:
    """Stop a run, by default after a checkpoint: a running Slurm job gets TERM in its batch script only
    (which asks the training to checkpoint at the next step and ends the job without requeueing; the
    step's processes are not signalled, so torch elastic does not kill the workers mid-save); a run
    outside Slurm gets a stop request in its run dir (`RunDir.request_stop`); a pending job is cancelled
    at once, and so is any job with `now`. Returns what was done, in words; raises ValueError (and
    changes nothing) when there is nothing to stop."""
    run_dir, job_id = resolve_target(target, runs_root)
    job = job_state(job_id) if job_id and not job_id.startswith("local-") else None
    resume = f"; continue later with `demakeup submit MODEL --shards DIR --run-dir {run_dir} --resume latest`" \
        if run_dir else ""
    if job is not None and job.state in ACTIVE_STATES:
        graceful = job.state == "RUNNING" and not now
        _scancel(["--batch", "--signal=TERM"] if graceful else [], job_id)
        if graceful:
            return f"asked Slurm job {job_id} to checkpoint and stop{resume}"
        return f"cancelled Slurm job {job_id} ({job.state})"
    if job is not None and job.state is not None:
        raise ValueError(f"Slurm job {job_id} has already ended ({job.state}); nothing to stop")
    if run_dir is None:
        raise FileNotFoundError(f"job {job_id}: unknown to Slurm and no run dir found for it")
    # The trainer clears a stop request when it starts, so only a training running now can obey one.
    run = RunDir(run_dir)
    training = run.read_status().get("status")
    if training != "running":
        raise ValueError(f"the training in {run_dir} is not running ({training or 'not started'}); nothing to stop")
    run.request_stop()
    return f"asked the training in {run_dir} to checkpoint and stop ({run.stop_file}){resume}"


def _scancel(options: list[str], job_id: str) -> None:
    if shutil.which("scancel") is None:
        raise FileNotFoundError("scancel not found on PATH: run this where Slurm's commands are installed")
    result = subprocess.run(["scancel", *options, job_id], capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"scancel {job_id} failed: {result.stderr.strip()}")


def _squeue_stdout(job_id: str) -> str | None:
    """The job's log path (its run dir is the parent), while Slurm still knows the job."""
    if shutil.which("squeue") is None:
        return None
    out = _run(["squeue", "-h", "--states=all", "-j", job_id, "-O", "STDOUT:4096"])
    return out.strip().replace("%j", job_id) if out and out.strip() else None


def _run(cmd: list[str]) -> str | None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None
